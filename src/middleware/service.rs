use std::fmt;
use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower::ServiceExt;
use tower_service::Service;

use super::clients::{self, WaitingPage};
use super::future::{Cold, ResponseFuture};
use super::pacing::{Outcome, Pacers};
use super::ColdStart;
use crate::activity::UpgradeActivity;
use crate::body::ResponseBody;
use crate::extract::{ExtractFunction, OpenFaasPath};
use crate::function::InvalidFunction;
use crate::scaler::Warm;
use crate::{DefaultResponder, ErrorResponder, FunctionId, FunctionScaler, ScaleError};

/// Holds requests for cold functions until a replica is ready; see [the module
/// docs](crate::middleware). Cloning clones the inner service and bumps one reference count.
pub struct ScaleFromZero<S, E = OpenFaasPath, R = DefaultResponder> {
    inner: S,
    shared: Arc<Shared<E, R>>,
}

pub(super) struct Shared<E, R> {
    pub(super) scaler: FunctionScaler,
    pub(super) extractor: E,
    pub(super) responder: R,
    pub(super) mark_cold_starts: bool,
    pub(super) cold_start_header: Option<http::HeaderName>,
    pub(super) pacing: Option<Arc<Pacers>>,
    pub(super) waiting_page: Option<WaitingPage>,
    pub(super) grpc_statuses: bool,
}

impl<S> ScaleFromZero<S> {
    /// Wraps `inner`, scaling through `scaler`, with the default extractor and responder.
    pub fn new(inner: S, scaler: FunctionScaler) -> Self {
        Self::from_shared(
            inner,
            Arc::new(Shared {
                scaler,
                extractor: OpenFaasPath::new(),
                responder: DefaultResponder::new(),
                mark_cold_starts: false,
                cold_start_header: None,
                pacing: None,
                waiting_page: None,
                grpc_statuses: false,
            }),
        )
    }
}

impl<S, E, R> ScaleFromZero<S, E, R> {
    pub(super) fn from_shared(inner: S, shared: Arc<Shared<E, R>>) -> Self {
        Self { inner, shared }
    }

    /// The scaler this service uses.
    pub fn scaler(&self) -> &FunctionScaler {
        &self.shared.scaler
    }

    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, E, R> Clone for ScaleFromZero<S, E, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, E: fmt::Debug, R: fmt::Debug> fmt::Debug for ScaleFromZero<S, E, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScaleFromZero")
            .field("inner", &self.inner)
            .field("scaler", &self.shared.scaler)
            .field("extractor", &self.shared.extractor)
            .field("responder", &self.shared.responder)
            .finish()
    }
}

impl<S, E, R, ReqBody, ResBody> Service<Request<ReqBody>> for ScaleFromZero<S, E, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    E: ExtractFunction<ReqBody>,
    R: ErrorResponder,
    ReqBody: Send + 'static,
    ResBody: Send,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    // Only the warm path is inlined; rejections and cold starts live in cold functions.
    #[inline]
    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let shared = &*self.shared;
        let warm = match shared.extractor.extract(&req) {
            None => Warm::Untracked,
            // The warm path asks first and validates only on a miss: only valid names get into
            // the scaler's maps, and no invalid name has the key of a valid one.
            Some(target) => match shared.scaler.warm(target.as_function_ref()) {
                Warm::No => match target.validate() {
                    Ok(function) => {
                        let function = shared.scaler.id_of(function);
                        return self.cold(function, req);
                    }
                    Err(invalid) => {
                        let grpc = shared.grpc_statuses && clients::is_grpc(&req);
                        return reject(&shared.responder, invalid, grpc);
                    }
                },
                warm => warm,
            },
        };
        let guard = match warm {
            Warm::Tracked(guard) => {
                UpgradeActivity::attach(&mut req, &guard);
                Some(guard)
            }
            _ => None,
        };
        ResponseFuture::call(self.inner.call(req), guard)
    }
}

impl<S, E, R> ScaleFromZero<S, E, R> {
    #[cold]
    #[inline(never)]
    fn cold<ReqBody, ResBody>(
        &mut self,
        function: FunctionId,
        req: Request<ReqBody>,
    ) -> ResponseFuture<S::Future>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: Send,
        E: Send + Sync + 'static,
        R: ErrorResponder,
        ReqBody: Send + 'static,
    {
        // Give back the readiness this call was made with (a permit, a buffer slot): the
        // request may wait for seconds. A clone is made ready again once the function is.
        let fresh = self.inner.clone();
        drop(mem::replace(&mut self.inner, fresh));
        let mut inner = self.inner.clone();
        let shared = Arc::clone(&self.shared);
        // What the kind of client asks for is read now: the request moves on when released.
        let grpc = shared.grpc_statuses && clients::is_grpc(&req);
        let page = shared
            .waiting_page
            .as_ref()
            .is_some_and(|page| page.wants(&req));
        ResponseFuture::cold(Box::pin(async move {
            let ready = match shared.waiting_page.as_ref().filter(|_| page) {
                None => shared.scaler.ready(&function).await,
                // A browser: held for a moment like any request, then shown the page while
                // the cold start goes on without it. Boxed, so that other held requests do
                // not carry the timer.
                Some(page) => {
                    let held = tokio::time::timeout(page.delay(), shared.scaler.ready(&function));
                    match Box::pin(held).await {
                        Ok(ready) => ready,
                        Err(_) => return Cold::Respond(page.render(&function)),
                    }
                }
            };
            match ready {
                Ok(released) => {
                    let mut req = req;
                    let guard = released.guard;
                    if let Some(guard) = &guard {
                        UpgradeActivity::attach(&mut req, guard);
                    }
                    // Held through a cold start, with pacing on: wait for room in the
                    // function's release window, within the request's own deadline.
                    let permit = match (&shared.pacing, released.cold_since) {
                        (Some(pacers), Some(arrived)) => {
                            let deadline = shared.scaler.config().readiness_deadline();
                            let replicas = released.state.available_replicas;
                            let at = arrived + deadline;
                            // Boxed: only paced requests carry the window's wait.
                            match Box::pin(pacers.admit(&function, replicas, at)).await {
                                Some(permit) => Some(permit),
                                None => {
                                    let waited = arrived.elapsed();
                                    let error = ScaleError::not_ready(function, waited, None);
                                    return Cold::Respond(respond(&shared.responder, error, grpc));
                                }
                            }
                        }
                        _ => None,
                    };
                    // Only what the wait below needs is kept across it.
                    let cold_since = released
                        .cold_since
                        .filter(|_| shared.mark_cold_starts || shared.cold_start_header.is_some());
                    let inner = match inner.ready().await {
                        Ok(inner) => inner,
                        Err(err) => return Cold::Fail(Err(err)),
                    };
                    // A clock read only when someone wants to know.
                    let waited = cold_since.map(|since| since.elapsed());
                    if let Some(waited) = waited.filter(|_| shared.mark_cold_starts) {
                        req.extensions_mut().insert(ColdStart::new(waited));
                    }
                    let header = shared.cold_start_header.as_ref().zip(waited);
                    if header.is_none() && permit.is_none() {
                        return Cold::Call(inner.call(req), guard);
                    }
                    // The rare cases: the call is wrapped (and boxed) to add the header or to
                    // tell the release window how it went, so that neither warm futures nor
                    // this one grow for them.
                    let header = header.map(|(name, waited)| (name.clone(), waited));
                    let call = inner.call(req);
                    Cold::Marked(
                        Box::pin(async move {
                            let started = tokio::time::Instant::now();
                            let mut out = call.await;
                            if let Some(permit) = permit {
                                permit.finish(match &out {
                                    Ok(response) if !response.status().is_server_error() => {
                                        Outcome::Answered(started.elapsed())
                                    }
                                    _ => Outcome::Failed,
                                });
                            }
                            if let (Ok(response), Some((name, waited))) = (&mut out, header) {
                                let ms = http::HeaderValue::from(waited.as_millis() as u64);
                                response.headers_mut().insert(name, ms);
                            }
                            out
                        }),
                        guard,
                    )
                }
                Err(err) => Cold::Respond(respond(&shared.responder, err, grpc)),
            }
        }))
    }
}

#[cold]
#[inline(never)]
fn reject<F: std::future::Future>(
    responder: &impl ErrorResponder,
    invalid: InvalidFunction,
    grpc: bool,
) -> ResponseFuture<F> {
    tracing::debug!(error = %invalid, "refused request for an invalid function");
    ResponseFuture::respond(respond(responder, invalid.into(), grpc))
}

/// The refusal of `error`: by the responder, or as a gRPC status to a gRPC call (with gRPC
/// statuses on).
fn respond(responder: &impl ErrorResponder, error: ScaleError, grpc: bool) -> Response<Bytes> {
    crate::telemetry::refusal(error.status());
    let mut response = if grpc {
        clients::grpc_response(&error)
    } else {
        responder.respond(&error)
    };
    response.extensions_mut().insert(error);
    response
}
