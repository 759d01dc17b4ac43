use std::fmt;
use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower::ServiceExt;
use tower_service::Service;

use super::clients::{GrpcCall, WaitingPage};
use super::future::{Resolved, ResponseFuture};
use super::pacing::{Outcome, Pacers, Permit};
use super::upgrade::UpgradeActivity;
use super::ColdStart;
use crate::body::ResponseBody;
use crate::extract::{ExtractFunction, OpenFaasPath};
use crate::function::InvalidFunction;
use crate::scaler::{ActivityGuard, Warm};
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
    pub(super) grpc_provider_errors: bool,
}

impl<S> ScaleFromZero<S> {
    /// Wraps `inner`, scaling through `scaler`, with the default extractor and responder.
    pub fn new(inner: S, scaler: FunctionScaler) -> Self {
        // One place holds the defaults: the layer's.
        tower_layer::Layer::layer(&super::ScaleFromZeroLayer::new(scaler), inner)
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
                        let grpc = shared.grpc_call(&req);
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
        let inner = self.inner.clone();
        let shared = Arc::clone(&self.shared);
        // What the kind of client asks for is read now: the request moves on when released.
        let grpc = shared.grpc_call(&req);
        let weight = super::held_bytes(&req);
        let page = shared
            .waiting_page
            .as_ref()
            .is_some_and(|page| page.wants(&req));
        // What happens once the wait is over, the same in both futures below (a macro: an
        // awaited helper would give the held future a second copy of the request's slots).
        macro_rules! released {
            ($ready:expr) => {{
                let ready = $ready;
                match ready {
                    Ok(released) => {
                        // Taken apart at once: nothing of it but what a branch moves on is
                        // kept across the waits below (the held future is as large as its
                        // largest state).
                        let crate::scaler::Released {
                            state,
                            cold_since,
                            guard,
                            // Its place under the hold limits, kept until it is forwarded.
                            place,
                        } = released;
                        let mut req = req;
                        if let Some(guard) = &guard {
                            UpgradeActivity::attach(&mut req, guard);
                        }
                        match (&shared.pacing, cold_since) {
                            // Held through a cold start, with pacing on: wait for room in the
                            // function's release window, within the request's own deadline. A
                            // future of its own, made at release: held requests do not carry it.
                            (Some(pacers), Some(arrived)) => {
                                let pacers = Arc::clone(pacers);
                                let replicas = state.available_replicas;
                                Resolved::Paced(Box::pin(async move {
                                    let deadline = shared.scaler.config().readiness_deadline();
                                    let Some(permit) =
                                        pacers.admit(&function, replicas, arrived + deadline).await
                                    else {
                                        let waited = arrived.elapsed();
                                        let error = ScaleError::not_ready(function, waited, None);
                                        return Resolved::Respond(respond(
                                            &shared.responder,
                                            error,
                                            grpc,
                                        ));
                                    };
                                    // Forwarded from here: its place goes back (the wait
                                    // for the inner service below has no deadline of ours).
                                    drop(place);
                                    let mut inner = inner;
                                    match inner.ready().await {
                                        Ok(inner) => call(
                                            &shared,
                                            inner,
                                            req,
                                            guard,
                                            Some(arrived),
                                            Some(permit),
                                        ),
                                        Err(err) => Resolved::Fail(Err(err)),
                                    }
                                }))
                            }
                            _ => {
                                // Only what the wait below needs is kept across it.
                                let cold_since = cold_since.filter(|_| {
                                    shared.mark_cold_starts || shared.cold_start_header.is_some()
                                });
                                // Forwarded without pacing: its place goes back now.
                                drop(place);
                                let mut inner = inner;
                                match inner.ready().await {
                                    Ok(inner) => call(&shared, inner, req, guard, cold_since, None),
                                    Err(err) => Resolved::Fail(Err(err)),
                                }
                            }
                        }
                    }
                    Err(err) => Resolved::Respond(respond(&shared.responder, err, grpc)),
                }
            }};
        }
        if let Some(page) = shared.waiting_page.clone().filter(|_| page) {
            // A browser: held for a moment like any request, then shown the page while the
            // cold start goes on without it (it belongs to the scaler). A future of its own:
            // other held requests do not carry its timer.
            return ResponseFuture::cold(Box::pin(async move {
                match hold_or_page(&shared.scaler, &function, weight, page.delay()).await {
                    Some(ready) => released!(ready),
                    None => Resolved::Respond(page.render(&function)),
                }
            }));
        }
        ResponseFuture::cold(Box::pin(async move {
            released!(shared.scaler.ready(&function, weight).await)
        }))
    }
}

/// A browser's wait: the function's readiness, or `None` once the page should be shown
/// instead: `after` has passed and the function is known to be starting. The refresh of a
/// warm function, or a cold start whose reads fail, keeps the browser held (it gets the
/// function's answer, or the error).
async fn hold_or_page(
    scaler: &crate::FunctionScaler,
    function: &FunctionId,
    weight: usize,
    after: std::time::Duration,
) -> Option<Result<crate::scaler::Released, ScaleError>> {
    // How often a browser held past `after` looks whether its function is starting yet.
    const LOOK_EVERY: std::time::Duration = std::time::Duration::from_millis(20);
    let ready = scaler.ready(function, weight);
    tokio::pin!(ready);
    let mut look_at = tokio::time::Instant::now() + after;
    loop {
        tokio::select! {
            biased;
            out = &mut ready => return Some(out),
            () = tokio::time::sleep_until(look_at) => {
                if scaler.is_starting(function) {
                    return None;
                }
                look_at = tokio::time::Instant::now() + LOOK_EVERY;
            }
        }
    }
}

/// Calls the inner service (ready) with a released request: the cold-start mark and header,
/// and the call, wrapped (and boxed) only to add the header or to tell the release window how
/// it went, so that neither warm futures nor plain cold ones grow for them.
fn call<S, E, R, ReqBody, ResBody>(
    shared: &Shared<E, R>,
    inner: &mut S,
    mut req: Request<ReqBody>,
    guard: Option<ActivityGuard>,
    cold_since: Option<tokio::time::Instant>,
    permit: Option<Permit>,
) -> Resolved<S::Future>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send,
{
    // A clock read only when someone wants to know.
    let waited = cold_since
        .filter(|_| shared.mark_cold_starts || shared.cold_start_header.is_some())
        .map(|since| since.elapsed());
    if let Some(waited) = waited.filter(|_| shared.mark_cold_starts) {
        req.extensions_mut().insert(ColdStart::new(waited));
    }
    let header = shared.cold_start_header.as_ref().zip(waited);
    if header.is_none() && permit.is_none() {
        return Resolved::Call(inner.call(req), guard);
    }
    let header = header.map(|(name, waited)| (name.clone(), waited));
    let call = inner.call(req);
    Resolved::Marked(
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

impl<E, R> Shared<E, R> {
    /// How a refusal of `req` is answered as gRPC, if it is a gRPC call and gRPC statuses
    /// are on.
    fn grpc_call<B>(&self, req: &Request<B>) -> Option<GrpcCall> {
        if !self.grpc_statuses {
            return None;
        }
        GrpcCall::of(req, self.grpc_provider_errors)
    }
}

#[cold]
#[inline(never)]
fn reject<F: std::future::Future>(
    responder: &impl ErrorResponder,
    invalid: InvalidFunction,
    grpc: Option<GrpcCall>,
) -> ResponseFuture<F> {
    tracing::debug!(error = %invalid, "refused request for an invalid function");
    ResponseFuture::respond(respond(responder, invalid.into(), grpc))
}

/// The refusal of `error`: by the responder, or as a gRPC status to a gRPC call (with gRPC
/// statuses on).
fn respond(
    responder: &impl ErrorResponder,
    error: ScaleError,
    grpc: Option<GrpcCall>,
) -> Response<Bytes> {
    crate::telemetry::refusal(error.status());
    let mut response = match grpc {
        Some(call) => call.response(&error),
        None => responder.respond(&error),
    };
    response.extensions_mut().insert(error);
    response
}
