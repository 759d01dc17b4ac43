//! Warm path: the same trivial inner service called bare and wrapped in `ScaleFromZero` with a
//! cache hit; single-threaded, and with 2 threads on one function or on 1 000 functions.
//!
//! `cargo bench --all-features --bench warm_path`

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use futures::FutureExt;
use http::{Request, Uri};
use support::Trivial;
use tower::{Layer, Service};
use tower_scale_from_zero::testing::{FakeFunction, InMemoryProvider};
use tower_scale_from_zero::{
    FunctionId, FunctionScaler, IdlePolicy, ScaleFromZeroLayer, ScalingConfig,
};

const FUNCTIONS: usize = 1_000;

fn uris(n: usize) -> Vec<Uri> {
    (0..n)
        .map(|i| format!("/function/fn-{i}/some/path").parse().unwrap())
        .collect()
}

/// A scaler whose cache holds every function warm for the whole run; with scale to zero on,
/// it also counts each function's requests in flight (every function opted in).
fn warm_scaler(scale_to_zero: bool) -> FunctionScaler {
    warm_scaler_with(scale_to_zero, false)
}

/// [`warm_scaler`], with activity shared through a store (as several gateways do) if `shared`.
fn warm_scaler_with(scale_to_zero: bool, shared: bool) -> FunctionScaler {
    let provider = Arc::new(InMemoryProvider::new());
    let config = ScalingConfig::builder()
        .cache_ttl(Duration::from_secs(3_600))
        .scale_to_zero(scale_to_zero)
        .build();
    let mut builder = FunctionScaler::builder(provider.clone()).config(config);
    if shared {
        builder = builder.activity_store(provider.clone());
    }
    let scaler = builder.build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for i in 0..FUNCTIONS {
            let id = FunctionId::new(&format!("fn-{i}"), "openfaas-fn").unwrap();
            let spec = FakeFunction::new()
                .running(1)
                .scale_to_zero(IdlePolicy::AfterDefault);
            provider.add_function(&id, spec);
            scaler.scale(&id).await.unwrap();
        }
    });
    assert_eq!(provider.set_calls(), 0);
    scaler
}

fn request(uri: &Uri) -> Request<()> {
    let mut req = Request::new(());
    *req.uri_mut() = uri.clone();
    req
}

fn call<S: Service<Request<()>>>(svc: &mut S, req: Request<()>) {
    let out = svc
        .call(req)
        .now_or_never()
        .expect("warm calls complete at once");
    assert!(out.is_ok());
}

/// `threads` threads, each with its own clone of `svc`, make `iters` calls in all, cycling
/// through `uris`; returns the wall time.
fn hammer<S>(svc: &S, uris: &Arc<Vec<Uri>>, threads: usize, iters: u64) -> Duration
where
    S: Service<Request<()>> + Clone + Send + 'static,
{
    let per_thread = iters / threads as u64 + 1;
    let barrier = Arc::new(std::sync::Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let mut svc = svc.clone();
            let uris = Arc::clone(uris);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..per_thread as usize {
                    call(&mut svc, request(&uris[(i + t * 7) % uris.len()]));
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    start.elapsed()
}

fn warm_path(c: &mut Criterion) {
    let wrapped = ScaleFromZeroLayer::new(warm_scaler(false)).layer(Trivial);
    let tracked = ScaleFromZeroLayer::new(warm_scaler(true)).layer(Trivial);
    let one = uris(1);
    let many = Arc::new(uris(FUNCTIONS));
    let same = Arc::new(vec![one[0].clone()]);

    let mut group = c.benchmark_group("warm_path");
    group.bench_function("bare/1 thread", |b| {
        let mut svc = Trivial;
        b.iter_batched(
            || request(&one[0]),
            |req| call(&mut svc, req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("wrapped/1 thread", |b| {
        let mut svc = wrapped.clone();
        b.iter_batched(
            || request(&one[0]),
            |req| call(&mut svc, req),
            BatchSize::SmallInput,
        )
    });
    let healthz: Uri = "/healthz".parse().unwrap();
    group.bench_function("bare/1 thread, no function in path", |b| {
        let mut svc = Trivial;
        b.iter_batched(
            || request(&healthz),
            |req| call(&mut svc, req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("wrapped, scale to zero on/1 thread", |b| {
        let mut svc = tracked.clone();
        b.iter_batched(
            || request(&one[0]),
            |req| call(&mut svc, req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("wrapped/1 thread, no function in path", |b| {
        let mut svc = wrapped.clone();
        b.iter_batched(
            || request(&healthz),
            |req| call(&mut svc, req),
            BatchSize::SmallInput,
        )
    });
    // With 2 threads the figure is wall time per request: both threads' requests counted.
    for (name, uris) in [("same function", &same), ("1000 functions", &many)] {
        group.bench_function(format!("bare/2 threads, {name}"), |b| {
            b.iter_custom(|iters| hammer(&Trivial, uris, 2, iters))
        });
        group.bench_function(format!("wrapped/2 threads, {name}"), |b| {
            b.iter_custom(|iters| hammer(&wrapped, uris, 2, iters))
        });
        group.bench_function(
            format!("wrapped, scale to zero on/2 threads, {name}"),
            |b| b.iter_custom(|iters| hammer(&tracked, uris, 2, iters)),
        );
    }
    group.finish();
}

/// The warm path as servers drive it: a fresh clone of the service for every request (axum's
/// `route_layer` and hyper-util's `TowerToHyperService` clone per request), called inside a
/// runtime (so that background work, such as recording shared activity, can be spawned).
mod served {
    use super::*;

    /// One request through a fresh clone of `svc` (not inlined: its instructions are what
    /// `benches/instructions.sh` counts).
    #[inline(never)]
    pub(super) fn call<S: Service<Request<()>> + Clone>(svc: &S, req: Request<()>) {
        let mut svc = svc.clone();
        super::call(&mut svc, req);
    }
}

fn warm_path_served(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let wrapped = ScaleFromZeroLayer::new(warm_scaler(false)).layer(Trivial);
    let tracked = ScaleFromZeroLayer::new(warm_scaler(true)).layer(Trivial);
    let shared = ScaleFromZeroLayer::new(warm_scaler_with(true, true)).layer(Trivial);
    let one = uris(1);
    let mut group = c.benchmark_group("warm_path_served");
    for (name, svc) in [
        ("wrapped", &wrapped),
        ("wrapped, scale to zero on", &tracked),
        ("wrapped, scale to zero on, activity store", &shared),
    ] {
        group.bench_function(format!("{name}/1 thread"), |b| {
            b.iter_batched(
                || request(&one[0]),
                |req| served::call(svc, req),
                BatchSize::SmallInput,
            )
        });
    }
    group.bench_function("bare/1 thread", |b| {
        b.iter_batched(
            || request(&one[0]),
            |req| served::call(&Trivial, req),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// What one warm request pays for, step by step: to see what dominates.
fn warm_path_parts(c: &mut Criterion) {
    use tower_scale_from_zero::cache::FunctionCacher;
    use tower_scale_from_zero::cache::TtlCache;
    use tower_scale_from_zero::extract::{ExtractFunction, OpenFaasPath};
    use tower_scale_from_zero::function::FunctionRef;
    use tower_scale_from_zero::ServiceQueryResponse;

    let mut group = c.benchmark_group("warm_path_parts");
    let req = request(&uris(1)[0]);
    let extractor = OpenFaasPath::new();
    group.bench_function("extract", |b| {
        b.iter(|| std::hint::black_box(extractor.extract(std::hint::black_box(&req))).is_some())
    });
    let function = FunctionRef::new("fn-0", "openfaas-fn");
    group.bench_function("validate", |b| {
        b.iter(|| std::hint::black_box(function).validate().is_ok())
    });
    let cache = TtlCache::new(Duration::from_secs(3_600), 10_000);
    for i in 0..FUNCTIONS {
        let id = FunctionId::new(&format!("fn-{i}"), "openfaas-fn").unwrap();
        cache.set(&id, ServiceQueryResponse::new(1, 1));
    }
    group.bench_function("cache get (TtlCache)", |b| {
        b.iter(|| cache.get(std::hint::black_box(function)).is_some())
    });
    group.bench_function("clock: std Instant::now", |b| {
        b.iter(std::time::Instant::now)
    });
    group.bench_function("clock: tokio Instant::now", |b| {
        b.iter(tokio::time::Instant::now)
    });
    group.finish();
}

criterion_group!(benches, warm_path, warm_path_served, warm_path_parts);
criterion_main!(benches);
