//! Why a request could not be forwarded ([`ScaleError`]) and how that becomes a response
//! ([`ErrorResponder`], [`DefaultResponder`]).
//!
//! | situation | status |
//! |---|---|
//! | invalid name or namespace | 400 |
//! | provider says the function does not exist | 404 |
//! | provider unreachable, erroring, unauthorised, or every scale attempt failed | 502 |
//! | hold queue full | 503 + `Retry-After` |
//! | not ready within the deadline | 504 |
//! | provider code panicked | 500 |
//! | cold start interrupted (its runtime shut down twice in a row) | 503 + `Retry-After` |
//!
//! Every error response carries the [`ScaleError`] as a response extension, whichever
//! responder built it, so outer layers (metrics, logging) can read it.
//!
//! The [`Display`](fmt::Display) text of a [`ScaleError`] is for logs: it includes the
//! provider's own error text. Clients get [`ScaleError::public_message`], which names the
//! function and the kind of failure only, unless the responder opts in with
//! [`DefaultResponder::expose_provider_errors`]. The scaler's own log lines carry the whole
//! cause chain.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::function::InvalidFunction;
use crate::util::Millis;
use crate::{FunctionId, QueryError};

/// Why the middleware answered a request itself instead of forwarding it. Cloning is a
/// reference-count bump: one error is shared by every request waiting on the same cold start.
#[derive(Clone)]
pub struct ScaleError {
    repr: Arc<Repr>,
}

#[derive(Debug, thiserror::Error)]
enum Repr {
    #[error("{0}")]
    Invalid(InvalidFunction),
    #[error("function {0} not found")]
    NotFound(FunctionId),
    #[error("provider error for function {function}: {source}")]
    Provider {
        function: FunctionId,
        source: QueryError,
    },
    #[error("could not scale function {function} after {attempts} attempts: {source}")]
    ScaleFailed {
        function: FunctionId,
        attempts: u32,
        source: QueryError,
    },
    #[error("too many requests waiting for function {function} ({scope} limit {limit})")]
    Overloaded {
        function: FunctionId,
        scope: &'static str,
        limit: usize,
        retry_after: Duration,
    },
    #[error("function {function} not ready after {}{}", Millis(*waited), LastError(last_error.as_ref()))]
    NotReady {
        function: FunctionId,
        waited: Duration,
        last_error: Option<QueryError>,
    },
    #[error("provider code panicked while starting function {0}")]
    Panicked(FunctionId),
    #[error("the cold start of function {function} was interrupted (its runtime shut down)")]
    Interrupted {
        function: FunctionId,
        retry_after: Duration,
    },
    #[error("the gateway is shutting down: no cold start of function {function}")]
    ShuttingDown {
        function: FunctionId,
        retry_after: Duration,
    },
}

/// The class of a [`ScaleError`], one per response status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request named an invalid function (400).
    InvalidFunction,
    /// The provider does not know the function (404).
    NotFound,
    /// A provider call failed and could not be retried (502).
    Provider,
    /// Every scale attempt failed (502).
    ScaleFailed,
    /// The hold queue is full (503).
    Overloaded,
    /// The function was not ready within the readiness deadline (504).
    NotReady,
    /// Provider code panicked (500).
    Panicked,
    /// The task running the cold start was cancelled, twice in a row: its runtime is
    /// shutting down (503).
    Interrupted,
    /// The gateway is draining: it starts no cold start, and a request still waiting when the
    /// drain's budget ran out is answered with this (503).
    ShuttingDown,
}

impl ScaleError {
    fn new(repr: Repr) -> Self {
        Self {
            repr: Arc::new(repr),
        }
    }

    pub(crate) fn not_found(function: FunctionId) -> Self {
        Self::new(Repr::NotFound(function))
    }

    pub(crate) fn provider(function: FunctionId, source: QueryError) -> Self {
        Self::new(Repr::Provider { function, source })
    }

    pub(crate) fn scale_failed(function: FunctionId, attempts: u32, source: QueryError) -> Self {
        Self::new(Repr::ScaleFailed {
            function,
            attempts,
            source,
        })
    }

    pub(crate) fn overloaded(
        function: FunctionId,
        scope: &'static str,
        limit: usize,
        retry_after: Duration,
    ) -> Self {
        Self::new(Repr::Overloaded {
            function,
            scope,
            limit,
            retry_after,
        })
    }

    pub(crate) fn not_ready(
        function: FunctionId,
        waited: Duration,
        last_error: Option<QueryError>,
    ) -> Self {
        Self::new(Repr::NotReady {
            function,
            waited,
            last_error,
        })
    }

    pub(crate) fn panicked(function: FunctionId) -> Self {
        Self::new(Repr::Panicked(function))
    }

    pub(crate) fn interrupted(function: FunctionId, retry_after: Duration) -> Self {
        Self::new(Repr::Interrupted {
            function,
            retry_after,
        })
    }

    pub(crate) fn shutting_down(function: FunctionId, retry_after: Duration) -> Self {
        Self::new(Repr::ShuttingDown {
            function,
            retry_after,
        })
    }

    /// The class of failure.
    pub fn kind(&self) -> ErrorKind {
        match &*self.repr {
            Repr::Invalid(_) => ErrorKind::InvalidFunction,
            Repr::NotFound(_) => ErrorKind::NotFound,
            Repr::Provider { .. } => ErrorKind::Provider,
            Repr::ScaleFailed { .. } => ErrorKind::ScaleFailed,
            Repr::Overloaded { .. } => ErrorKind::Overloaded,
            Repr::NotReady { .. } => ErrorKind::NotReady,
            Repr::Panicked(_) => ErrorKind::Panicked,
            Repr::Interrupted { .. } => ErrorKind::Interrupted,
            Repr::ShuttingDown { .. } => ErrorKind::ShuttingDown,
        }
    }

    /// The function concerned; `None` when the request named an invalid one.
    pub fn function(&self) -> Option<&FunctionId> {
        match &*self.repr {
            Repr::Invalid(_) => None,
            Repr::NotFound(function)
            | Repr::Panicked(function)
            | Repr::Provider { function, .. }
            | Repr::ScaleFailed { function, .. }
            | Repr::Overloaded { function, .. }
            | Repr::Interrupted { function, .. }
            | Repr::ShuttingDown { function, .. }
            | Repr::NotReady { function, .. } => Some(function),
        }
    }

    /// The provider error behind this one, if any.
    pub fn query_error(&self) -> Option<&QueryError> {
        match &*self.repr {
            Repr::Provider { source, .. } | Repr::ScaleFailed { source, .. } => Some(source),
            Repr::NotReady { last_error, .. } => last_error.as_ref(),
            _ => None,
        }
    }

    /// The status [`DefaultResponder`] answers with.
    pub fn status(&self) -> StatusCode {
        match self.kind() {
            ErrorKind::InvalidFunction => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Provider | ErrorKind::ScaleFailed => StatusCode::BAD_GATEWAY,
            ErrorKind::Overloaded | ErrorKind::Interrupted | ErrorKind::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorKind::NotReady => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Panicked => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// When the client may try again (503 answers).
    pub fn retry_after(&self) -> Option<Duration> {
        match &*self.repr {
            Repr::Overloaded { retry_after, .. }
            | Repr::Interrupted { retry_after, .. }
            | Repr::ShuttingDown { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// How long the request waited before this answer, for 504 (`None` otherwise).
    pub fn waited(&self) -> Option<Duration> {
        match &*self.repr {
            Repr::NotReady { waited, .. } => Some(*waited),
            _ => None,
        }
    }

    /// One line for a client: names the function and the kind of failure, without the
    /// provider's own error text (which may describe internals). The
    /// [`Display`](fmt::Display) text, for logs, has it.
    pub fn public_message(&self) -> String {
        match &*self.repr {
            Repr::Provider { function, source } => {
                format!(
                    "provider error for function {function}: {}",
                    source.summary()
                )
            }
            Repr::ScaleFailed {
                function,
                attempts,
                source,
            } => format!(
                "could not scale function {function} after {attempts} attempts: {}",
                source.summary()
            ),
            Repr::NotReady {
                function, waited, ..
            } => format!("function {function} not ready after {}", Millis(*waited)),
            _ => self.to_string(),
        }
    }
}

impl From<InvalidFunction> for ScaleError {
    fn from(invalid: InvalidFunction) -> Self {
        Self::new(Repr::Invalid(invalid))
    }
}

impl fmt::Debug for ScaleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.repr, f)
    }
}

impl fmt::Display for ScaleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.repr, f)
    }
}

impl StdError for ScaleError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &*self.repr {
            Repr::Invalid(invalid) => Some(invalid),
            _ => self.query_error().map(|e| e as _),
        }
    }
}

/// Turns a [`ScaleError`] into the response the client gets. Closures
/// `Fn(&ScaleError) -> Response<Bytes>` are responders.
///
/// ```
/// use bytes::Bytes;
/// use http::Response;
/// use tower_scale_from_zero::ScaleError;
///
/// // JSON bodies instead of plain text.
/// let responder = |err: &ScaleError| {
///     Response::builder()
///         .status(err.status())
///         .header("content-type", "application/json")
///         .body(Bytes::from(format!("{{\"error\":{:?}}}", err.to_string())))
///         .unwrap()
/// };
/// # let _: &dyn tower_scale_from_zero::ErrorResponder = &responder;
/// ```
pub trait ErrorResponder: Send + Sync + 'static {
    /// The response for `error`. The middleware adds `error` to its extensions.
    fn respond(&self, error: &ScaleError) -> Response<Bytes>;
}

impl<F> ErrorResponder for F
where
    F: Fn(&ScaleError) -> Response<Bytes> + Send + Sync + 'static,
{
    fn respond(&self, error: &ScaleError) -> Response<Bytes> {
        self(error)
    }
}

/// The default responder: [`ScaleError::status`], a one-line `text/plain` body that names the
/// function and the kind of failure ([`ScaleError::public_message`]), and `Retry-After`
/// (whole seconds, at least 1) on 503.
///
/// ```
/// use tower_scale_from_zero::DefaultResponder;
///
/// // Show the provider's own error text to clients (a trusted, internal gateway).
/// let responder = DefaultResponder::new().expose_provider_errors(true);
/// # let _ = responder;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultResponder {
    expose_provider_errors: bool,
}

impl DefaultResponder {
    /// Bodies without the provider's own error text.
    pub const fn new() -> Self {
        Self {
            expose_provider_errors: false,
        }
    }

    /// Whether 502 and 504 bodies include the provider's own error text (off by default:
    /// it may describe internals, and clients are untrusted).
    pub const fn expose_provider_errors(mut self, expose: bool) -> Self {
        self.expose_provider_errors = expose;
        self
    }
}

impl ErrorResponder for DefaultResponder {
    fn respond(&self, error: &ScaleError) -> Response<Bytes> {
        let text = if self.expose_provider_errors {
            error.to_string()
        } else {
            error.public_message()
        };
        let mut response = Response::new(Bytes::from(format!("{text}\n")));
        *response.status_mut() = error.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(after) = error.retry_after() {
            let secs = after
                .as_secs()
                .saturating_add(u64::from(after.subsec_nanos() > 0));
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

struct LastError<'a>(Option<&'a QueryError>);

impl fmt::Display for LastError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(err) => write!(f, " (last provider error: {err})"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> FunctionId {
        FunctionId::new("echo", "fn").unwrap()
    }

    #[test]
    fn default_responder_bodies_are_one_line_and_name_the_function() {
        let errors = [
            ScaleError::not_found(id()),
            ScaleError::provider(id(), QueryError::provider("down at 10.0.0.7")),
            ScaleError::scale_failed(id(), 20, QueryError::provider("quota")),
            ScaleError::overloaded(id(), "per-function", 10, Duration::from_millis(1500)),
            ScaleError::not_ready(id(), Duration::from_secs(60), None),
            ScaleError::panicked(id()),
            ScaleError::interrupted(id(), Duration::from_secs(1)),
        ];
        let statuses = [404, 502, 502, 503, 504, 500, 503];
        for (err, status) in errors.iter().zip(statuses) {
            let resp = DefaultResponder::new().respond(err);
            assert_eq!(resp.status().as_u16(), status);
            let body = std::str::from_utf8(resp.body()).unwrap();
            assert!(body.contains("echo.fn"), "{body}");
            assert_eq!(body.matches('\n').count(), 1, "{body:?}");
            assert_eq!(
                resp.headers()[header::CONTENT_TYPE],
                "text/plain; charset=utf-8"
            );
        }
        let busy = DefaultResponder::new().respond(&errors[3]);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn provider_text_reaches_clients_only_when_opted_in() {
        let err = ScaleError::provider(id(), QueryError::provider("down at 10.0.0.7"));
        let body = |r: Response<Bytes>| String::from_utf8(r.body().to_vec()).unwrap();
        let hidden = body(DefaultResponder::new().respond(&err));
        assert_eq!(
            hidden,
            "provider error for function echo.fn: the provider call failed\n"
        );
        let shown = body(
            DefaultResponder::new()
                .expose_provider_errors(true)
                .respond(&err),
        );
        assert!(shown.contains("down at 10.0.0.7"), "{shown}");
        assert!(err.to_string().contains("down at 10.0.0.7"), "logs keep it");
    }

    #[test]
    fn a_huge_retry_after_saturates() {
        let err = ScaleError::overloaded(id(), "total", 1, Duration::MAX);
        let resp = DefaultResponder::new().respond(&err);
        assert_eq!(resp.headers()[header::RETRY_AFTER], u64::MAX.to_string());
    }
}
