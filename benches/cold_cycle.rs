//! Cold cycle: miss → flight → provider → cache → hit, with an instant in-memory provider.
//! Between iterations (untimed) the function is scaled back to zero and the cache cleared.
//!
//! `cargo bench --all-features --bench cold_cycle`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tower_scale_from_zero::cache::FunctionCacher;
use tower_scale_from_zero::cache::TtlCache;
use tower_scale_from_zero::testing::{FakeFunction, InMemoryProvider};
use tower_scale_from_zero::{FunctionId, FunctionScaler, ScalingConfig, ServiceQuery};

fn cold_cycle(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let id = FunctionId::new("echo", "openfaas-fn").unwrap();
    let provider = Arc::new(InMemoryProvider::new());
    provider.add_function(&id, FakeFunction::new());
    let config = ScalingConfig::default();
    let cache = Arc::new(TtlCache::new(config.cache_ttl(), config.cache_capacity()));
    let scaler = FunctionScaler::builder(provider.clone())
        .config(config)
        .cache(cache.clone())
        .build();

    let mut group = c.benchmark_group("cold_cycle");
    group.bench_function("miss, flight, provider, cache, hit", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let (provider, cache, scaler, id) =
                (provider.clone(), cache.clone(), scaler.clone(), id.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    provider.set_replicas(&id, 0).await.unwrap();
                    cache.invalidate(id.as_function_ref());
                    let sets = provider.successful_sets();

                    let start = Instant::now();
                    let cold = scaler.scale(&id).await.unwrap();
                    let warm = scaler.scale(&id).await.unwrap();
                    total += start.elapsed();

                    assert!(cold.is_ready() && warm.is_ready());
                    assert_eq!(
                        provider.successful_sets(),
                        sets + 1,
                        "one scale-up per cycle"
                    );
                }
                total
            }
        })
    });
    group.bench_function("hit only", |b| {
        b.to_async(&runtime).iter(|| {
            let (scaler, id) = (scaler.clone(), id.clone());
            async move { assert!(scaler.scale(&id).await.unwrap().is_ready()) }
        })
    });
    group.finish();
}

criterion_group!(benches, cold_cycle);
criterion_main!(benches);
