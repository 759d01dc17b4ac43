use std::sync::Arc;

use http::HeaderName;
use tower_layer::Layer;

use super::clients::WaitingPage;
use super::pacing::{PacedRelease, Pacers};
use super::service::{ScaleFromZero, Shared};
use crate::extract::OpenFaasPath;
use crate::{DefaultResponder, FunctionScaler};

/// Applies [`ScaleFromZero`] to a service.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use tower::{service_fn, ServiceBuilder};
/// use tower_scale_from_zero::{FunctionScaler, ScaleFromZeroLayer, ScalingConfig};
/// use tower_scale_from_zero::extract::OpenFaasPath;
/// use tower_scale_from_zero::testing::InMemoryProvider;
///
/// let scaler = FunctionScaler::new(InMemoryProvider::new(), ScalingConfig::default());
/// let service = ServiceBuilder::new()
///     .layer(
///         ScaleFromZeroLayer::new(scaler)
///             .extractor(OpenFaasPath::new().default_namespace("fn")),
///     )
///     .service(service_fn(|_: Request<String>| async {
///         Ok::<_, Infallible>(Response::new(String::from("hello")))
///     }));
/// # let _ = service;
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct ScaleFromZeroLayer<E = OpenFaasPath, R = DefaultResponder> {
    scaler: FunctionScaler,
    extractor: E,
    responder: R,
    mark_cold_starts: bool,
    cold_start_header: Option<HeaderName>,
    pacing: Option<Arc<Pacers>>,
    waiting_page: Option<WaitingPage>,
    grpc_statuses: bool,
    grpc_provider_errors: bool,
}

impl ScaleFromZeroLayer {
    /// A layer that scales through `scaler`, finds functions with [`OpenFaasPath`] and answers
    /// failures with [`DefaultResponder`].
    pub fn new(scaler: FunctionScaler) -> Self {
        Self {
            scaler,
            extractor: OpenFaasPath::new(),
            responder: DefaultResponder::new(),
            mark_cold_starts: false,
            cold_start_header: None,
            pacing: None,
            waiting_page: None,
            grpc_statuses: false,
            grpc_provider_errors: false,
        }
    }
}

impl<E, R> ScaleFromZeroLayer<E, R> {
    /// Finds the function a request is for with `extractor` (see [`crate::extract`]).
    pub fn extractor<E2>(self, extractor: E2) -> ScaleFromZeroLayer<E2, R> {
        ScaleFromZeroLayer {
            scaler: self.scaler,
            extractor,
            responder: self.responder,
            mark_cold_starts: self.mark_cold_starts,
            cold_start_header: self.cold_start_header,
            pacing: self.pacing,
            waiting_page: self.waiting_page,
            grpc_statuses: self.grpc_statuses,
            grpc_provider_errors: self.grpc_provider_errors,
        }
    }

    /// Builds error responses with `responder` (see [`crate::ErrorResponder`]).
    pub fn responder<R2>(self, responder: R2) -> ScaleFromZeroLayer<E, R2> {
        ScaleFromZeroLayer {
            scaler: self.scaler,
            extractor: self.extractor,
            responder,
            mark_cold_starts: self.mark_cold_starts,
            cold_start_header: self.cold_start_header,
            pacing: self.pacing,
            waiting_page: self.waiting_page,
            grpc_statuses: self.grpc_statuses,
            grpc_provider_errors: self.grpc_provider_errors,
        }
    }

    /// Whether requests that waited for a cold start reach the inner service with a
    /// [`ColdStart`](crate::middleware::ColdStart) extension (off by default: it costs an allocation and
    /// a clock read per such request). A forwarding service uses it to retry the first
    /// forward after a cold start; see [the module docs](crate::middleware).
    pub fn mark_cold_starts(mut self, mark: bool) -> Self {
        self.mark_cold_starts = mark;
        self
    }

    /// Tells clients that their request waited for a cold start: its response carries the
    /// header `name` with the wait in whole milliseconds (as KEDA's
    /// `X-KEDA-HTTP-Cold-Start` does). Off by default. Responses of requests that did not
    /// wait carry no such header.
    ///
    /// ```
    /// # use tower_scale_from_zero::{FunctionScaler, ScaleFromZeroLayer, ScalingConfig};
    /// # use tower_scale_from_zero::testing::InMemoryProvider;
    /// # let scaler = FunctionScaler::new(InMemoryProvider::new(), ScalingConfig::default());
    /// let layer = ScaleFromZeroLayer::new(scaler)
    ///     .cold_start_header(http::HeaderName::from_static("x-cold-start-ms"));
    /// # let _ = layer;
    /// ```
    pub fn cold_start_header(mut self, name: HeaderName) -> Self {
        self.cold_start_header = Some(name);
        self
    }

    /// Lets the requests held through a cold start reach the fresh replicas in a slow start
    /// instead of all at once (see [`crate::middleware::pacing`]). Off by default. The
    /// services of this layer (and their clones) share the windows.
    ///
    /// ```
    /// # use tower_scale_from_zero::{FunctionScaler, ScaleFromZeroLayer, ScalingConfig};
    /// # use tower_scale_from_zero::testing::InMemoryProvider;
    /// use tower_scale_from_zero::middleware::PacedRelease;
    /// # let scaler = FunctionScaler::new(InMemoryProvider::new(), ScalingConfig::default());
    /// let layer = ScaleFromZeroLayer::new(scaler).paced_release(PacedRelease::new());
    /// # let _ = layer;
    /// ```
    pub fn paced_release(mut self, pacing: PacedRelease) -> Self {
        self.pacing = Some(Arc::new(Pacers::new(pacing)));
        self
    }

    /// Shows browsers a page that reloads itself while their function starts, instead of a
    /// blank tab (see [`WaitingPage`]). Off by default: every request is held.
    ///
    /// ```
    /// # use tower_scale_from_zero::{FunctionScaler, ScaleFromZeroLayer, ScalingConfig};
    /// # use tower_scale_from_zero::testing::InMemoryProvider;
    /// use tower_scale_from_zero::middleware::WaitingPage;
    /// # let scaler = FunctionScaler::new(InMemoryProvider::new(), ScalingConfig::default());
    /// let layer = ScaleFromZeroLayer::new(scaler).waiting_page(WaitingPage::new());
    /// # let _ = layer;
    /// ```
    pub fn waiting_page(mut self, page: WaitingPage) -> Self {
        self.waiting_page = Some(page);
        self
    }

    /// Answers refused gRPC calls (`content-type: application/grpc*`) as gRPC does: HTTP 200
    /// with `grpc-status` (`INVALID_ARGUMENT` for a bad name, `NOT_FOUND` for an unknown
    /// function, `DEADLINE_EXCEEDED` past the readiness deadline, `UNAVAILABLE` otherwise)
    /// and `grpc-message`, so gRPC clients see real codes instead of a transport error. Off
    /// by default. The [`ScaleError`](crate::ScaleError) is still in the response's
    /// extensions.
    pub fn grpc_statuses(mut self, on: bool) -> Self {
        self.grpc_statuses = on;
        self
    }

    /// Whether the `grpc-message` of a refused gRPC call carries the provider's own error text
    /// (off by default: it may describe internals, and clients are untrusted), as
    /// [`DefaultResponder::expose_provider_errors`] does for HTTP bodies.
    pub fn grpc_provider_errors(mut self, expose: bool) -> Self {
        self.grpc_provider_errors = expose;
        self
    }

    /// The scaler the services of this layer share.
    pub fn scaler(&self) -> &FunctionScaler {
        &self.scaler
    }
}

impl<S, E: Clone, R: Clone> Layer<S> for ScaleFromZeroLayer<E, R> {
    type Service = ScaleFromZero<S, E, R>;

    fn layer(&self, inner: S) -> Self::Service {
        ScaleFromZero::from_shared(
            inner,
            Arc::new(Shared {
                scaler: self.scaler.clone(),
                extractor: self.extractor.clone(),
                responder: self.responder.clone(),
                mark_cold_starts: self.mark_cold_starts,
                cold_start_header: self.cold_start_header.clone(),
                pacing: self.pacing.clone(),
                waiting_page: self.waiting_page.clone(),
                grpc_statuses: self.grpc_statuses,
                grpc_provider_errors: self.grpc_provider_errors,
            }),
        )
    }
}
