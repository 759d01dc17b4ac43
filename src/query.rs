//! The platform interface: [`ServiceQuery`], its answer [`ServiceQueryResponse`], and
//! [`QueryError`].

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::FunctionId;

/// Reads and sets a function's replica count on the platform (Kubernetes, faasd, a process
/// supervisor, ...).
///
/// Implementations need not time out, retry or coalesce: the scaler bounds every call by
/// [`ScalingConfig::call_timeout`](crate::ScalingConfig), retries failed calls, and makes at
/// most one call at a time per function. The trait is object safe; the scaler holds it as
/// `Arc<dyn ServiceQuery>`.
///
/// ```
/// use async_trait::async_trait;
/// use tower_scale_from_zero::{FunctionId, QueryError, ServiceQuery, ServiceQueryResponse};
///
/// struct AlwaysWarm;
///
/// #[async_trait]
/// impl ServiceQuery for AlwaysWarm {
///     async fn get_replicas(&self, _: &FunctionId) -> Result<ServiceQueryResponse, QueryError> {
///         Ok(ServiceQueryResponse::new(1, 1))
///     }
///     async fn set_replicas(&self, _: &FunctionId, _: u64) -> Result<(), QueryError> {
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait ServiceQuery: Send + Sync + 'static {
    /// The function's current replica state. A function the platform does not know must be
    /// answered with [`QueryError::not_found`]: that, and only that, becomes a 404.
    async fn get_replicas(&self, function: &FunctionId)
        -> Result<ServiceQueryResponse, QueryError>;

    /// Asks the platform to run `replicas` replicas of the function.
    async fn set_replicas(&self, function: &FunctionId, replicas: u64) -> Result<(), QueryError>;

    /// Scales an idle function to zero (scale to zero, when enabled), unless the platform
    /// knows that some gateway served it within the last `idle`: then it changes nothing and
    /// answers `Ok(false)`. A provider shared by several gateways uses this to let a
    /// concurrent scale-up or recent activity win (a precondition on the write, say). The
    /// default is `set_replicas(function, 0)`.
    async fn scale_to_zero(
        &self,
        function: &FunctionId,
        idle: Duration,
    ) -> Result<bool, QueryError> {
        let _ = idle;
        self.set_replicas(function, 0).await.map(|()| true)
    }
}

#[async_trait]
impl<T: ServiceQuery + ?Sized> ServiceQuery for Arc<T> {
    async fn get_replicas(
        &self,
        function: &FunctionId,
    ) -> Result<ServiceQueryResponse, QueryError> {
        (**self).get_replicas(function).await
    }

    async fn set_replicas(&self, function: &FunctionId, replicas: u64) -> Result<(), QueryError> {
        (**self).set_replicas(function, replicas).await
    }

    async fn scale_to_zero(
        &self,
        function: &FunctionId,
        idle: Duration,
    ) -> Result<bool, QueryError> {
        (**self).scale_to_zero(function, idle).await
    }
}

/// A function's replica state as the platform reports it.
///
/// ```
/// use tower_scale_from_zero::ServiceQueryResponse;
///
/// let cold = ServiceQueryResponse::new(0, 0).min_replicas(2).max_replicas(5);
/// assert!(!cold.is_ready());
/// assert_eq!(cold.scale_target(), 2);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceQueryResponse {
    /// Replicas the platform has been asked to run.
    pub desired_replicas: u64,
    /// Replicas running and ready to serve.
    pub available_replicas: u64,
    /// The function's minimum (e.g. the label `com.openfaas.scale.min`); default 1.
    pub min_replicas: u64,
    /// The function's maximum (e.g. the label `com.openfaas.scale.max`); default unbounded.
    pub max_replicas: u64,
    /// Whether the function opted in to scale to zero, and after how long idle; default
    /// [`IdlePolicy::Never`]. Report it in every state, pushed ones included: the scaler
    /// goes by the latest state it saw.
    pub scale_to_zero: IdlePolicy,
}

/// Whether (and when) an idle function is scaled to zero; see
/// [`ScalingConfig::scale_to_zero`](crate::ScalingConfig::scale_to_zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdlePolicy {
    /// Never: the function did not opt in.
    #[default]
    Never,
    /// After the scaler's idle period ([`ScalingConfig::idle_period`](crate::ScalingConfig::idle_period), 5 min by default).
    AfterDefault,
    /// After this long without a request in flight.
    After(Duration),
}

impl IdlePolicy {
    /// The idle period under this policy, given the scaler's default; `None` for `Never`.
    pub fn period(self, default: Duration) -> Option<Duration> {
        match self {
            Self::Never => None,
            Self::AfterDefault => Some(default),
            Self::After(period) => Some(period),
        }
    }
}

impl ServiceQueryResponse {
    /// A state with the given desired and available replicas, min 1 and no max.
    pub const fn new(desired_replicas: u64, available_replicas: u64) -> Self {
        Self {
            desired_replicas,
            available_replicas,
            min_replicas: 1,
            max_replicas: u64::MAX,
            scale_to_zero: IdlePolicy::Never,
        }
    }

    /// Sets whether the function is scaled to zero when idle.
    #[must_use]
    pub const fn scale_to_zero(mut self, policy: IdlePolicy) -> Self {
        self.scale_to_zero = policy;
        self
    }

    /// Sets the minimum replica count.
    #[must_use]
    pub const fn min_replicas(mut self, min: u64) -> Self {
        self.min_replicas = min;
        self
    }

    /// Sets the maximum replica count.
    #[must_use]
    pub const fn max_replicas(mut self, max: u64) -> Self {
        self.max_replicas = max;
        self
    }

    /// Whether requests may be forwarded: the platform wants at least one replica
    /// (`desired_replicas > 0`) and at least one is available. A state with desired 0 and a
    /// replica still available is a scale-down in progress: not ready, and it leads to a
    /// scale-up.
    pub const fn is_ready(&self) -> bool {
        self.desired_replicas > 0 && self.available_replicas > 0
    }

    /// The replica count a cold start asks for: the minimum, at least 1, never above the
    /// maximum (a maximum of 0 is read as 1: scaling to zero cannot serve the request).
    pub fn scale_target(&self) -> u64 {
        let max = self.max_replicas.max(1);
        self.min_replicas.clamp(1, max)
    }
}

/// A failed [`ServiceQuery`] call.
///
/// "The function does not exist" ([`QueryError::not_found`]) is told apart from every other
/// failure: it is the only one that becomes a 404. Cloning is a reference-count bump.
#[derive(Clone)]
pub struct QueryError {
    inner: Arc<Inner>,
}

struct Inner {
    kind: QueryErrorKind,
    message: String,
    status: Option<http::StatusCode>,
    permanent: bool,
    // `from_source`: the message is the source's own text, so the chain skips one level.
    message_is_source: bool,
    // Shared, so that `with_status`/`permanent` on a shared error keep the cause.
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

/// The broad class of a [`QueryError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryErrorKind {
    /// The platform does not know the function.
    NotFound,
    /// The call did not finish within its time limit.
    Timeout,
    /// Anything else: unreachable, refused, unauthorised, a server error.
    Provider,
}

impl QueryError {
    fn build(kind: QueryErrorKind, message: String) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind,
                message,
                status: None,
                permanent: false,
                source: None,
                message_is_source: true,
            }),
        }
    }

    /// The function does not exist on the platform; `message` says how the provider knows
    /// (for logs, e.g. "no Deployment" or "not labelled as a function").
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::build(QueryErrorKind::NotFound, message.into())
    }

    /// A provider failure described by `message`.
    pub fn provider(message: impl Into<String>) -> Self {
        Self::build(QueryErrorKind::Provider, message.into())
    }

    /// A provider failure caused by `source` (a transport or decoding error). The error
    /// displays as `source` does, and its [`source`](StdError::source) chain continues with
    /// `source`'s own causes, so logs that walk the chain see each cause once (hyper's
    /// `client error (Connect)`, then `tcp connect error`, then `Connection refused`).
    pub fn from_source(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        let source: Arc<dyn StdError + Send + Sync> = Arc::from(source.into());
        let mut err = Self::build(QueryErrorKind::Provider, source.to_string());
        Arc::get_mut(&mut err.inner).expect("freshly built").source = Some(source);
        err
    }

    /// A provider failure described by `message` and caused by `source`.
    pub fn with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        let source: Arc<dyn StdError + Send + Sync> = Arc::from(source.into());
        let mut err = Self::build(QueryErrorKind::Provider, message.into());
        let inner = Arc::get_mut(&mut err.inner).expect("freshly built");
        inner.source = Some(source);
        inner.message_is_source = false;
        err
    }

    /// A call that took longer than `limit`.
    pub fn timeout(limit: Duration) -> Self {
        Self::build(
            QueryErrorKind::Timeout,
            format!("no answer within {}", crate::util::Millis(limit)),
        )
    }

    /// Attaches the HTTP status the provider answered with.
    #[must_use]
    pub fn with_status(self, status: http::StatusCode) -> Self {
        self.modify(|inner| inner.status = Some(status))
    }

    /// Marks the failure as one that retrying cannot fix (bad credentials, a process that
    /// exited at start-up): the cold start ends at once with 502 instead of retrying.
    #[must_use]
    pub fn permanent(self) -> Self {
        self.modify(|inner| inner.permanent = true)
    }

    fn modify(mut self, change: impl FnOnce(&mut Inner)) -> Self {
        if Arc::get_mut(&mut self.inner).is_none() {
            let inner = &self.inner;
            self.inner = Arc::new(Inner {
                kind: inner.kind,
                message: inner.message.clone(),
                status: inner.status,
                permanent: inner.permanent,
                source: inner.source.clone(),
                message_is_source: inner.message_is_source,
            });
        }
        change(Arc::get_mut(&mut self.inner).expect("unique"));
        self
    }

    /// Whether retrying the call may help: false for "not found" and permanent failures.
    pub fn is_retryable(&self) -> bool {
        !self.inner.permanent && self.inner.kind != QueryErrorKind::NotFound
    }

    /// The class of failure.
    pub fn kind(&self) -> QueryErrorKind {
        self.inner.kind
    }

    /// Whether the platform said the function does not exist.
    pub fn is_not_found(&self) -> bool {
        self.inner.kind == QueryErrorKind::NotFound
    }

    /// Whether the call timed out.
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == QueryErrorKind::Timeout
    }

    /// The provider's HTTP status, where it answered with one.
    pub fn status(&self) -> Option<http::StatusCode> {
        self.inner.status
    }

    /// Whether this failure was marked [`permanent`](Self::permanent).
    pub fn is_permanent(&self) -> bool {
        self.inner.permanent
    }

    /// The provider's own description of the failure (without the status).
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// What kind of failure this is, in words fit for a client: the provider's own text is
    /// left out (it may describe internals).
    pub fn summary(&self) -> String {
        match (self.inner.kind, self.inner.status) {
            (QueryErrorKind::NotFound, _) => "the function does not exist".into(),
            (QueryErrorKind::Timeout, _) => "the provider did not answer in time".into(),
            (_, Some(status)) => format!("the provider answered {status}"),
            (_, None) if self.inner.source.is_some() => "the provider could not be reached".into(),
            (_, None) => "the provider call failed".into(),
        }
    }
}

impl fmt::Debug for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryError")
            .field("kind", &self.inner.kind)
            .field("message", &self.inner.message)
            .field("status", &self.inner.status)
            .field("permanent", &self.inner.permanent)
            .finish()
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(status) = self.inner.status {
            write!(f, "provider answered {status}: ")?;
        }
        f.write_str(&self.inner.message)
    }
}

impl StdError for QueryError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        let source = self.inner.source.as_deref()?;
        if self.inner.message_is_source {
            source.source()
        } else {
            Some(source as &(dyn StdError + 'static))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_target_is_min_within_max() {
        assert_eq!(ServiceQueryResponse::new(0, 0).scale_target(), 1);
        assert_eq!(
            ServiceQueryResponse::new(0, 0)
                .min_replicas(0)
                .scale_target(),
            1
        );
        let r = ServiceQueryResponse::new(0, 0).min_replicas(3);
        assert_eq!(r.scale_target(), 3);
        assert_eq!(r.clone().max_replicas(2).scale_target(), 2);
        assert_eq!(r.max_replicas(0).scale_target(), 1);
    }

    #[test]
    fn status_is_shown_and_kept() {
        let err =
            QueryError::provider("bad credentials").with_status(http::StatusCode::UNAUTHORIZED);
        assert_eq!(err.status(), Some(http::StatusCode::UNAUTHORIZED));
        assert_eq!(
            err.to_string(),
            "provider answered 401 Unauthorized: bad credentials"
        );
        assert!(!err.is_not_found());
    }

    #[test]
    fn a_scale_down_in_progress_is_not_ready() {
        assert!(!ServiceQueryResponse::new(0, 1).is_ready());
        assert!(!ServiceQueryResponse::new(1, 0).is_ready());
        assert!(ServiceQueryResponse::new(1, 1).is_ready());
    }

    #[derive(Debug)]
    struct Leaf;
    impl fmt::Display for Leaf {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Connection refused")
        }
    }
    impl StdError for Leaf {}

    #[derive(Debug)]
    struct Top(Leaf);
    impl fmt::Display for Top {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("client error (Connect)")
        }
    }
    impl StdError for Top {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_cause_survives_sharing_and_changes() {
        let err = QueryError::from_source(Top(Leaf));
        let shared = err.clone();
        let changed = shared
            .with_status(http::StatusCode::BAD_GATEWAY)
            .permanent();
        for e in [&err, &changed] {
            assert_eq!(e.message(), "client error (Connect)");
            assert_eq!(e.source().unwrap().to_string(), "Connection refused");
        }
        assert!(changed.is_permanent() && !err.is_permanent());
        assert_eq!(
            crate::util::ErrorChain(&changed).to_string(),
            "provider answered 502 Bad Gateway: client error (Connect): Connection refused"
        );
    }
}
