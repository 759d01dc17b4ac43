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

impl PartialEq for FunctionId {
    fn eq(&self, other: &Self) -> bool {
        self.as_function_ref() == other.as_function_ref()
    }
}

impl Eq for FunctionId {}

impl Hash for FunctionId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash exactly like `FunctionRef`: maps keyed by `FunctionId` are searched with one.
        self.as_function_ref().hash(state);
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

/// Whether `b` may appear in a DNS-1123 label.
pub(crate) fn is_label_byte(b: u8) -> bool {
    LABEL_BYTE[usize::from(b)]
}

/// Length and ends of a DNS-1123 label, assuming its bytes were checked.
pub(crate) fn is_label_shaped(label: &str) -> bool {
    let bytes = label.as_bytes();
    matches!((bytes.first(), bytes.last()), (Some(&first), Some(&last))
        if bytes.len() <= MAX_LABEL_LEN && first != b'-' && last != b'-')
}

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

/// A map key that can be looked up through a borrowed [`FunctionRef`] without building a
/// [`FunctionId`]: the warm path must not allocate.
pub(crate) trait Key {
    fn key(&self) -> FunctionRef<'_>;
}

impl Key for FunctionId {
    fn key(&self) -> FunctionRef<'_> {
        self.as_function_ref()
    }
}

impl Key for FunctionRef<'_> {
    fn key(&self) -> FunctionRef<'_> {
        *self
    }
}

impl Hash for dyn Key + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for dyn Key + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for dyn Key + '_ {}

impl<'a> Borrow<dyn Key + 'a> for FunctionId {
    fn borrow(&self) -> &(dyn Key + 'a) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn borrowed_lookup_finds_owned_key() {
        let mut map = HashMap::new();
        map.insert(FunctionId::new("echo", "fn").unwrap(), 7);
        let probe = FunctionRef::new("echo", "fn");
        assert_eq!(map.get(&probe as &dyn Key), Some(&7));
        assert_eq!(map.get(&FunctionRef::new("echo", "f") as &dyn Key), None);
        // "ab"+"c" and "a"+"bc" must not collide into one key.
        map.insert(FunctionId::new("ab", "c").unwrap(), 1);
        assert_eq!(map.get(&FunctionRef::new("a", "bc") as &dyn Key), None);
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
