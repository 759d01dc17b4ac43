//! Shared by the benches: the cheapest possible inner service, and a gateway whose only
//! function stays cold until readiness is pushed.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tower::{Layer, Service};
use tower_scale_from_zero::testing::{FakeFunction, InMemoryProvider};
use tower_scale_from_zero::{
    FunctionId, FunctionScaler, ScaleFromZero, ScaleFromZeroLayer, ScalingConfig,
};

/// Answers every request at once with an empty 200.
#[derive(Clone, Copy, Debug)]
pub struct Trivial;

impl Service<Request<()>> for Trivial {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        ready(Ok(Response::new(())))
    }
}

/// A cold function (`/function/echo`) behind `ScaleFromZero<Trivial>`: it starts only after an
/// hour and is polled hourly, so held requests are released only by a pushed readiness.
pub struct HeldFunction {
    pub id: FunctionId,
    pub provider: Arc<InMemoryProvider>,
    pub scaler: FunctionScaler,
    pub service: ScaleFromZero<Trivial>,
}

impl HeldFunction {
    pub fn new() -> Self {
        let hour = Duration::from_secs(3_600);
        let id = FunctionId::new("echo", "openfaas-fn").unwrap();
        let provider = Arc::new(InMemoryProvider::new());
        provider.add_function(&id, FakeFunction::new().startup_delay(hour));
        let config = ScalingConfig::builder()
            .poll_interval(hour)
            .readiness_deadline(hour)
            .build();
        let scaler = FunctionScaler::new(provider.clone(), config);
        let service = ScaleFromZeroLayer::new(scaler.clone()).layer(Trivial);
        Self {
            id,
            provider,
            scaler,
            service,
        }
    }
}
