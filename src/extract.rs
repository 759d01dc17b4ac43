//! Which function a request is for: the [`ExtractFunction`] trait, the OpenFaaS path
//! convention ([`OpenFaasPath`], the default) and closures ([`from_fn`]).
//!
//! An extractor only finds the name and namespace; the middleware validates them (400 for an
//! invalid one) before anything else happens. A request an extractor maps to nothing passes
//! to the inner service untouched.

use std::borrow::Cow;
use std::fmt;

use http::Request;

use crate::function::FunctionRef;

/// Maps a request to the function it calls, or to `None` for requests that call no function
/// (health checks, UI, ...).
pub trait ExtractFunction<B>: Send + Sync + 'static {
    /// The function `request` is for. Borrowing from the request keeps the warm path free of
    /// allocations.
    fn extract<'a>(&'a self, request: &'a Request<B>) -> Option<Extracted<'a>>;
}

/// A function name and namespace as taken from a request, not yet validated.
#[derive(Clone, Debug)]
pub struct Extracted<'a> {
    name: Cow<'a, str>,
    namespace: Cow<'a, str>,
}

impl PartialEq for Extracted<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.namespace == other.namespace
    }
}

impl Eq for Extracted<'_> {}

impl<'a> Extracted<'a> {
    /// A target from borrowed or owned strings.
    pub fn new(name: impl Into<Cow<'a, str>>, namespace: impl Into<Cow<'a, str>>) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
        }
    }

    /// Checks both parts against the label rule.
    pub(crate) fn validate(&self) -> Result<FunctionRef<'_>, crate::function::InvalidFunction> {
        let function = self.as_function_ref();
        function.validate()?;
        Ok(function)
    }

    /// A borrowed view, for validation and cache look-ups.
    pub fn as_function_ref(&self) -> FunctionRef<'_> {
        FunctionRef::new(&self.name, &self.namespace)
    }
}

/// The OpenFaaS path convention: `{prefix}{name}`, `{prefix}{name}/` and
/// `{prefix}{name}/{rest...}`, where `{name}` may be `name.namespace` (split at the last dot).
/// An absent or empty namespace (`fn`, `fn.`) means the default namespace.
///
/// The raw path is read, never percent-decoded: an encoded name is invalid, not a different
/// name. Paths outside the prefix are not function calls.
///
/// ```
/// use http::Request;
/// use tower_scale_from_zero::extract::{ExtractFunction, OpenFaasPath, Extracted};
///
/// let extractor = OpenFaasPath::new().default_namespace("team-a");
/// let req = Request::get("/function/echo.team-b/v1/run?x=1").body(()).unwrap();
/// assert_eq!(extractor.extract(&req), Some(Extracted::new("echo", "team-b")));
/// let req = Request::get("/function/echo").body(()).unwrap();
/// assert_eq!(extractor.extract(&req), Some(Extracted::new("echo", "team-a")));
/// let req = Request::get("/healthz").body(()).unwrap();
/// assert_eq!(extractor.extract(&req), None);
/// ```
#[derive(Clone, Debug)]
pub struct OpenFaasPath {
    prefix: Cow<'static, str>,
    default_namespace: Cow<'static, str>,
}

impl OpenFaasPath {
    /// Prefix `/function/`, default namespace `openfaas-fn`.
    pub const fn new() -> Self {
        Self {
            prefix: Cow::Borrowed("/function/"),
            default_namespace: Cow::Borrowed("openfaas-fn"),
        }
    }

    /// Sets the path prefix that precedes the name, e.g. `/` under axum's `nest("/function",
    /// ..)`, which strips its own prefix. A missing trailing `/` is added.
    pub fn prefix(mut self, prefix: impl Into<Cow<'static, str>>) -> Self {
        let mut prefix = prefix.into();
        if !prefix.ends_with('/') {
            prefix.to_mut().push('/');
        }
        self.prefix = prefix;
        self
    }

    /// Sets the namespace used when a path names none.
    pub fn default_namespace(mut self, namespace: impl Into<Cow<'static, str>>) -> Self {
        self.default_namespace = namespace.into();
        self
    }
}

impl Default for OpenFaasPath {
    fn default() -> Self {
        Self::new()
    }
}

impl<B> ExtractFunction<B> for OpenFaasPath {
    #[inline]
    fn extract<'a>(&'a self, request: &'a Request<B>) -> Option<Extracted<'a>> {
        let rest = request.uri().path().strip_prefix(&*self.prefix)?;
        // The segment ends at the first '/'; the namespace starts after its last '.'. Nothing
        // is checked here: the warm path asks the cache first, and the middleware validates
        // only on a miss (a name with a byte outside the label rule is never in the cache).
        // Byte searches, not `split_once`: its generic pattern search costs ~60 instructions
        // more per request here. Both indices are at ASCII bytes, so the slices fall on
        // character boundaries.
        let end = rest.bytes().position(|b| b == b'/').unwrap_or(rest.len());
        let segment = &rest[..end];
        Some(match segment.bytes().rposition(|b| b == b'.') {
            Some(dot) if dot + 1 < segment.len() => {
                Extracted::new(&segment[..dot], &segment[dot + 1..])
            }
            Some(dot) => Extracted::new(&segment[..dot], &*self.default_namespace),
            None => Extracted::new(segment, &*self.default_namespace),
        })
    }
}

/// An extractor from a closure: `from_fn(|req| ...)`. The closure may borrow from the request
/// (`Extracted::new(&str, &str)`) or return owned strings.
///
/// ```
/// use http::{header::HOST, Request};
/// use tower_scale_from_zero::extract::{from_fn, ExtractFunction, Extracted};
///
/// // `echo.fn.example.com` → function `echo` in namespace `fn`.
/// let by_host = from_fn(|req: &Request<()>| {
///     let host = req.headers().get(HOST)?.to_str().ok()?;
///     let mut labels = host.split('.');
///     Some(Extracted::new(labels.next()?, labels.next()?))
/// });
/// let req = Request::get("/").header(HOST, "echo.fn.example.com").body(()).unwrap();
/// assert_eq!(by_host.extract(&req), Some(Extracted::new("echo", "fn")));
/// ```
pub fn from_fn<F, B>(f: F) -> FromFn<F>
where
    F: for<'a> Fn(&'a Request<B>) -> Option<Extracted<'a>>,
{
    FromFn { f }
}

/// The extractor [`from_fn`] returns.
#[derive(Clone, Copy)]
pub struct FromFn<F> {
    f: F,
}

impl<F> fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromFn").finish_non_exhaustive()
    }
}

impl<F, B> ExtractFunction<B> for FromFn<F>
where
    F: for<'a> Fn(&'a Request<B>) -> Option<Extracted<'a>> + Send + Sync + 'static,
{
    fn extract<'a>(&'a self, request: &'a Request<B>) -> Option<Extracted<'a>> {
        (self.f)(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extract(extractor: &OpenFaasPath, path: &str) -> Option<(String, String)> {
        let req = Request::get(path).body(()).unwrap();
        extractor
            .extract(&req)
            .map(|t| (t.name.into_owned(), t.namespace.into_owned()))
    }

    fn pair(name: &str, ns: &str) -> Option<(String, String)> {
        Some((name.into(), ns.into()))
    }

    #[test]
    fn follows_the_openfaas_path_convention() {
        let e = OpenFaasPath::new();
        assert_eq!(extract(&e, "/function/echo"), pair("echo", "openfaas-fn"));
        assert_eq!(extract(&e, "/function/echo/"), pair("echo", "openfaas-fn"));
        assert_eq!(
            extract(&e, "/function/echo/a/b?q=1"),
            pair("echo", "openfaas-fn")
        );
        assert_eq!(extract(&e, "/function/echo.dev/a"), pair("echo", "dev"));
        assert_eq!(extract(&e, "/function/a.b.c"), pair("a.b", "c"));
        assert_eq!(extract(&e, "/function/echo."), pair("echo", "openfaas-fn"));
        assert_eq!(extract(&e, "/function/"), pair("", "openfaas-fn"));
        assert_eq!(extract(&e, "/functions/echo"), None);
        assert_eq!(extract(&e, "/function"), None);
        assert_eq!(extract(&e, "/"), None);
    }

    #[test]
    fn an_invalid_default_namespace_or_name_fails_validation() {
        let req = Request::get("/function/echo").body(()).unwrap();
        let bad = OpenFaasPath::new().default_namespace("Not_Valid");
        assert!(bad.extract(&req).unwrap().validate().is_err());
        let good = OpenFaasPath::new().default_namespace("team-a");
        assert!(good.extract(&req).unwrap().validate().is_ok());
        let from_path = Request::get("/function/echo.dev").body(()).unwrap();
        assert!(good.extract(&from_path).unwrap().validate().is_ok());
        for path in [
            "/function/Echo",
            "/function/a.b.c",
            "/function/-a",
            "/function/a%2e",
        ] {
            let req = Request::get(path).body(()).unwrap();
            assert!(good.extract(&req).unwrap().validate().is_err(), "{path}");
        }
    }

    #[test]
    fn prefix_is_configurable() {
        let e = OpenFaasPath::new().prefix("/").default_namespace("x");
        assert_eq!(extract(&e, "/echo/rest"), pair("echo", "x"));
        let e = OpenFaasPath::new().prefix("/fn");
        assert_eq!(extract(&e, "/fn/echo"), pair("echo", "openfaas-fn"));
        assert_eq!(extract(&e, "/fnecho"), None);
    }
}
