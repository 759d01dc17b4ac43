//! Function identity: [`FunctionId`] (owned, validated), [`FunctionRef`] (borrowed view) and
//! the validation rule they share.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The longest name or namespace accepted: the DNS-1123 label limit.
pub const MAX_LABEL_LEN: usize = 63;

/// A validated function identity: a name and the namespace it lives in.
///
/// Both parts are DNS-1123 labels (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 bytes), the rule
/// Kubernetes and OpenFaaS apply to function and namespace names. A `FunctionId` that exists is
/// valid; build one with [`FunctionId::new`]. It is one shared string (`name.namespace`):
/// cloning is one reference-count bump.
///
/// ```
/// use tower_scale_from_zero::FunctionId;
///
/// let id = FunctionId::new("figlet", "openfaas-fn").unwrap();
/// assert_eq!(id.to_string(), "figlet.openfaas-fn");
/// assert!(FunctionId::new("Figlet", "openfaas-fn").is_err());
/// ```
#[derive(Clone)]
pub struct FunctionId {
    /// `name.namespace`: labels hold no dot, so the first one splits them.
    full: Arc<str>,
    /// The name's length (at most 63).
    split: u8,
}

impl FunctionId {
    /// Validates `name` and `namespace` and builds the identity.
    pub fn new(name: &str, namespace: &str) -> Result<Self, InvalidFunction> {
        FunctionRef::new(name, namespace).validate()?;
        let mut full = String::with_capacity(name.len() + 1 + namespace.len());
        full.push_str(name);
        full.push('.');
        full.push_str(namespace);
        Ok(Self {
            full: full.into(),
            split: u8::try_from(name.len()).expect("a label is at most 63 bytes"),
        })
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.full[..usize::from(self.split)]
    }

    /// The function's namespace.
    pub fn namespace(&self) -> &str {
        &self.full[usize::from(self.split) + 1..]
    }

    /// A borrowed view of this identity.
    pub fn as_function_ref(&self) -> FunctionRef<'_> {
        let (name, dot_namespace) = self.full.split_at(usize::from(self.split));
        FunctionRef::new(name, &dot_namespace[1..])
    }
}

impl FunctionId {
    /// The key maps of functions are searched by: `name.namespace` as bytes.
    pub(crate) fn key(&self) -> &[u8] {
        self.full.as_bytes()
    }
}

impl PartialEq for FunctionId {
    fn eq(&self, other: &Self) -> bool {
        self.full == other.full
    }
}

impl Eq for FunctionId {}

impl Hash for FunctionId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Exactly as its key bytes hash: maps keyed by `FunctionId` are searched with them.
        self.key().hash(state);
    }
}

/// Maps keyed by `FunctionId` are searched with a request's `name.namespace` bytes, built on
/// the stack: no `FunctionId`, no allocation, one hash of one slice.
impl Borrow<[u8]> for FunctionId {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

impl fmt::Debug for FunctionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionId")
            .field("name", &self.name())
            .field("namespace", &self.namespace())
            .finish()
    }
}

impl fmt::Display for FunctionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// A borrowed function identity, as taken from a request. It may be invalid until
/// [`validate`](FunctionRef::validate)d.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FunctionRef<'a> {
    name: &'a str,
    namespace: &'a str,
}

impl<'a> FunctionRef<'a> {
    /// A view over a name and a namespace; nothing is checked or copied.
    pub const fn new(name: &'a str, namespace: &'a str) -> Self {
        Self { name, namespace }
    }

    /// The function's name.
    pub const fn name(&self) -> &'a str {
        self.name
    }

    /// The function's namespace.
    pub const fn namespace(&self) -> &'a str {
        self.namespace
    }

    /// Checks both parts against the DNS-1123 label rule.
    pub fn validate(&self) -> Result<(), InvalidFunction> {
        check_label(self.name).map_err(|reason| InvalidFunction {
            part: Part::Name,
            reason,
        })?;
        check_label(self.namespace).map_err(|reason| InvalidFunction {
            part: Part::Namespace,
            reason,
        })
    }

    /// Validates and copies into an owned [`FunctionId`].
    pub fn to_function_id(&self) -> Result<FunctionId, InvalidFunction> {
        FunctionId::new(self.name, self.namespace)
    }

    /// Calls `f` with the key a [`FunctionId`] of these parts would have (`name.namespace` as
    /// bytes, built on the stack); `None`, without calling it, when the parts are too long to
    /// be valid. The parts need not have been validated: a valid id's key holds exactly one
    /// dot, so no invalid pair of parts has the key of a valid id.
    #[inline]
    pub(crate) fn with_key<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let (name, namespace) = (self.name.as_bytes(), self.namespace.as_bytes());
        if name.len() > MAX_LABEL_LEN || namespace.len() > MAX_LABEL_LEN {
            return None;
        }
        let mut key = [0u8; 2 * MAX_LABEL_LEN + 1];
        key[..name.len()].copy_from_slice(name);
        key[name.len()] = b'.';
        let end = name.len() + 1 + namespace.len();
        key[name.len() + 1..end].copy_from_slice(namespace);
        Some(f(&key[..end]))
    }
}

impl fmt::Display for FunctionRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

/// Bytes allowed in a DNS-1123 label.
static LABEL_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = matches!(b as u8, b'a'..=b'z' | b'0'..=b'9' | b'-');
        b += 1;
    }
    table
};

fn check_label(label: &str) -> Result<(), Reason> {
    let bytes = label.as_bytes();
    // The common case in one table-driven pass; the reason is worked out only on failure.
    if let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) {
        if bytes.len() <= MAX_LABEL_LEN
            && first != b'-'
            && last != b'-'
            && bytes.iter().all(|&b| LABEL_BYTE[usize::from(b)])
        {
            return Ok(());
        }
    }
    if bytes.is_empty() {
        return Err(Reason::Empty);
    }
    if bytes.len() > MAX_LABEL_LEN {
        return Err(Reason::TooLong(bytes.len()));
    }
    if let Some((index, ch)) = label
        .char_indices()
        .find(|&(_, c)| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
    {
        return Err(Reason::Char { ch, index });
    }
    if bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
        return Err(Reason::Hyphen);
    }
    Ok(())
}

/// Why a request's function name or namespace was refused (answered with 400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid function {part}: {reason}")]
pub struct InvalidFunction {
    part: Part,
    reason: Reason,
}

impl InvalidFunction {
    /// Which part was invalid.
    pub fn part(&self) -> Part {
        self.part
    }
}

/// The part of a function identity that failed validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Part {
    /// The function name.
    Name,
    /// The namespace.
    Namespace,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Name => "name",
            Part::Namespace => "namespace",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Empty,
    TooLong(usize),
    Char { ch: char, index: usize },
    Hyphen,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never echo the input itself: it is untrusted and may be huge.
        match *self {
            Reason::Empty => f.write_str("is empty"),
            Reason::TooLong(len) => {
                write!(f, "is {len} bytes long, the limit is {MAX_LABEL_LEN}")
            }
            Reason::Char { ch, index } => write!(
                f,
                "has {:?} at byte {index}; only a-z, 0-9 and '-' are allowed",
                ch
            ),
            Reason::Hyphen => f.write_str("must start and end with a letter or digit"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(map: &HashMap<FunctionId, i32>, name: &str, namespace: &str) -> Option<i32> {
        FunctionRef::new(name, namespace)
            .with_key(|key| map.get(key).copied())
            .flatten()
    }

    #[test]
    fn borrowed_lookup_finds_owned_key() {
        let mut map = HashMap::new();
        map.insert(FunctionId::new("echo", "fn").unwrap(), 7);
        assert_eq!(lookup(&map, "echo", "fn"), Some(7));
        assert_eq!(lookup(&map, "echo", "f"), None);
        // "ab"+"c" and "a"+"bc" must not collide into one key.
        map.insert(FunctionId::new("ab", "c").unwrap(), 1);
        assert_eq!(lookup(&map, "a", "bc"), None);
        // Nor may invalid parts find a valid id: "a.b" + "c" is not "a" + "b.c".
        map.insert(FunctionId::new("a", "b").unwrap(), 2);
        assert_eq!(lookup(&map, "a.b", ""), None);
        assert_eq!(lookup(&map, "a", "b.c"), None);
        assert_eq!(lookup(&map, &"a".repeat(64), "b"), None);
    }

    #[test]
    fn an_id_keeps_its_parts_apart() {
        let id = FunctionId::new("figlet", "openfaas-fn").unwrap();
        assert_eq!((id.name(), id.namespace()), ("figlet", "openfaas-fn"));
        assert_eq!(
            id.as_function_ref(),
            FunctionRef::new("figlet", "openfaas-fn")
        );
        assert_eq!(id.to_string(), "figlet.openfaas-fn");
        assert_eq!(std::mem::size_of::<FunctionId>(), 24);
    }

    #[test]
    fn labels_follow_dns_1123() {
        for ok in ["a", "0", "a-b", "echo2", &"a".repeat(63)] {
            assert!(check_label(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a.b",
            "a_b",
            "é",
            "a\0",
            &"a".repeat(64),
        ] {
            assert!(check_label(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn error_names_the_part_and_reason_without_echoing_input() {
        let long = "x".repeat(10_000);
        let err = FunctionRef::new("ok", &long).validate().unwrap_err();
        assert_eq!(err.part(), Part::Namespace);
        let text = err.to_string();
        assert!(
            text.contains("namespace") && text.contains("10000"),
            "{text}"
        );
        assert!(text.len() < 100);
    }
}
