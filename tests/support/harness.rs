//! Shared test harness: an in-memory platform, a counting inner service, and the gateway.
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::task::{Context, Poll};
use tower::{Layer, Service, ServiceExt};
use tower_scale_from_zero::body::ResponseBody;
use tower_scale_from_zero::cache::TtlCache;
use tower_scale_from_zero::testing::{FakeFunction, InMemoryProvider};
use tower_scale_from_zero::{
    FunctionId, FunctionScaler, ScaleFromZero, ScaleFromZeroLayer, ScalingConfig,
};

pub const NS: &str = "openfaas-fn";

pub fn id(name: &str) -> FunctionId {
    FunctionId::new(name, NS).unwrap()
}

/// The inner service: answers "hello from {path}" and counts its calls.
#[derive(Clone, Debug, Default)]
pub struct Echo {
    calls: Arc<AtomicUsize>,
}

impl Service<Request<String>> for Echo {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<String>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(Response::new(format!(
            "hello from {}",
            req.uri().path()
        ))))
    }
}

pub type Gateway = ScaleFromZero<Echo>;

/// Everything a behaviour test looks at.
pub struct Harness {
    pub provider: Arc<InMemoryProvider>,
    pub cache: Arc<TtlCache>,
    pub scaler: FunctionScaler,
    pub inner_calls: Arc<AtomicUsize>,
    pub gateway: Gateway,
}

impl Harness {
    pub fn new(config: ScalingConfig) -> Self {
        let provider = Arc::new(InMemoryProvider::new());
        let cache = Arc::new(TtlCache::new(config.cache_ttl(), config.cache_capacity()));
        let scaler = FunctionScaler::builder(provider.clone())
            .config(config)
            .cache(cache.clone())
            .build();
        let inner_calls = Arc::new(AtomicUsize::new(0));
        let echo = Echo {
            calls: inner_calls.clone(),
        };
        let gateway = ScaleFromZeroLayer::new(scaler.clone()).layer(echo);
        Self {
            provider,
            cache,
            scaler,
            inner_calls,
            gateway,
        }
    }

    pub fn with_function(self, name: &str, spec: FakeFunction) -> Self {
        self.provider.add_function(&id(name), spec);
        self
    }

    pub fn inner_calls(&self) -> usize {
        self.inner_calls.load(Ordering::SeqCst)
    }

    /// Sends `GET path` through a clone of the gateway.
    pub fn get(&self, path: &str) -> impl std::future::Future<Output = Reply> + Send + 'static {
        let gateway = self.gateway.clone();
        let req = Request::get(path).body(String::new()).unwrap();
        async move { Reply::from(gateway.oneshot(req).await.unwrap()).await }
    }
}

/// What a client sees.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
    pub error: Option<tower_scale_from_zero::ScaleError>,
}

impl Reply {
    pub async fn from(response: Response<ResponseBody<String>>) -> Self {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Self {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
            error: parts.extensions.get().cloned(),
        }
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Lets spawned tasks run without moving paused time.
pub async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// A runtime of its own, on paused time: for tests that run several, or shut one down.
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}
