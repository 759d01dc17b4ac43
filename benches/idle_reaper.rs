//! What the idle reaper costs: one look for idle functions among 10 000 tracked (none due),
//! as it makes every `idle_check_interval` (10 s by default).
//!
//! `cargo bench --all-features --bench idle_reaper`

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::Request;
use support::Trivial;
use tower::{Layer, ServiceExt};
use tower_scale_from_zero::testing::{FakeFunction, InMemoryProvider};
use tower_scale_from_zero::{
    FunctionId, FunctionScaler, IdlePolicy, ScaleFromZeroLayer, ScalingConfig,
};

fn tracked(functions: usize) -> (tokio::runtime::Runtime, FunctionScaler) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let provider = Arc::new(InMemoryProvider::new());
    let config = ScalingConfig::builder()
        .scale_to_zero(true)
        .cache_ttl(Duration::from_secs(3_600))
        .build();
    let scaler = FunctionScaler::new(provider.clone(), config);
    let service = ScaleFromZeroLayer::new(scaler.clone()).layer(Trivial);
    runtime.block_on(async {
        for i in 0..functions {
            let id = FunctionId::new(&format!("fn-{i}"), "openfaas-fn").unwrap();
            let spec = FakeFunction::new()
                .running(1)
                .scale_to_zero(IdlePolicy::AfterDefault);
            provider.add_function(&id, spec);
            let mut req = Request::new(());
            *req.uri_mut() = format!("/function/fn-{i}").parse().unwrap();
            service.clone().oneshot(req).await.unwrap();
        }
    });
    (runtime, scaler)
}

fn idle_reaper(c: &mut Criterion) {
    let mut group = c.benchmark_group("idle_reaper");
    for functions in [1_000, 10_000] {
        let (runtime, scaler) = tracked(functions);
        let _guard = runtime.enter();
        assert_eq!(scaler.idle_scan(), 0, "nothing is due");
        group.bench_function(format!("one look, {functions} functions tracked"), |b| {
            b.iter(|| scaler.idle_scan())
        });
    }
    group.finish();
}

criterion_group!(benches, idle_reaper);
criterion_main!(benches);
