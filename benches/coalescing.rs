//! Coalescing: N concurrent callers ask for one cold function whose provider answers at once
//! (one `yield` inside, as any real call has). Compared in one group and run: our
//! `SingleFlight`, no coalescing (every caller queries the provider), `async_singleflight`,
//! and moka's `get_with`. Reported time is per caller (total / N). Provider calls are counted
//! and asserted in every iteration: 1 for the coalescers, N for no coalescing.
//!
//! `cargo bench --bench coalescing`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use futures::future::join_all;
use tower_scale_from_zero::{FunctionId, ServiceQueryResponse, SingleFlight};

/// An instant provider: one yield, then an answer; counts its calls.
#[derive(Clone, Default)]
struct Provider {
    calls: Arc<AtomicUsize>,
}

impl Provider {
    async fn get_replicas(&self) -> ServiceQueryResponse {
        tokio::task::yield_now().await;
        self.calls.fetch_add(1, Ordering::Relaxed);
        ServiceQueryResponse::new(1, 1)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

const CALLERS: [usize; 5] = [1, 10, 100, 1_000, 10_000];

fn id() -> FunctionId {
    FunctionId::new("echo", "openfaas-fn").unwrap()
}

/// Runs `iters` rounds of `round(n)`; returns the time per caller summed over rounds.
async fn per_caller<F, Fut>(iters: u64, n: usize, mut round: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        round().await;
        total += start.elapsed();
    }
    total / n as u32
}

fn coalescing(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("coalescing (per caller)");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    for n in CALLERS {
        group.bench_with_input(BenchmarkId::new("ours: SingleFlight", n), &n, |b, &n| {
            b.to_async(&runtime).iter_custom(|iters| {
                per_caller(iters, n, move || async move {
                    let provider = Provider::default();
                    let flights = SingleFlight::<FunctionId, ServiceQueryResponse>::new();
                    let callers = (0..n).map(|_| {
                        let provider = provider.clone();
                        flights.join(id(), move || async move { provider.get_replicas().await })
                    });
                    for out in join_all(callers.collect::<Vec<_>>()).await {
                        assert!(out.unwrap().is_ready());
                    }
                    assert_eq!(provider.calls(), 1);
                    assert!(flights.is_empty());
                })
            })
        });
        group.bench_with_input(BenchmarkId::new("no coalescing", n), &n, |b, &n| {
            b.to_async(&runtime).iter_custom(|iters| {
                per_caller(iters, n, move || async move {
                    let provider = Provider::default();
                    let callers = (0..n).map(|_| provider.get_replicas());
                    for out in join_all(callers).await {
                        assert!(out.is_ready());
                    }
                    assert_eq!(provider.calls(), n);
                })
            })
        });
        group.bench_with_input(BenchmarkId::new("async_singleflight", n), &n, |b, &n| {
            b.to_async(&runtime).iter_custom(|iters| {
                per_caller(iters, n, move || async move {
                    let provider = Provider::default();
                    let group = async_singleflight::DefaultGroup::<ServiceQueryResponse>::new();
                    let callers = (0..n).map(|_| {
                        group.work("echo.openfaas-fn", async {
                            Ok::<_, ()>(provider.get_replicas().await)
                        })
                    });
                    for out in join_all(callers).await {
                        assert!(out.unwrap().is_ready());
                    }
                    assert_eq!(provider.calls(), 1);
                })
            })
        });
        group.bench_with_input(BenchmarkId::new("moka get_with", n), &n, |b, &n| {
            b.to_async(&runtime).iter_custom(|iters| {
                per_caller(iters, n, move || async move {
                    let provider = Provider::default();
                    let cache =
                        moka::future::Cache::<FunctionId, ServiceQueryResponse>::new(10_000);
                    let callers = (0..n).map(|_| cache.get_with(id(), provider.get_replicas()));
                    for out in join_all(callers).await {
                        assert!(out.is_ready());
                    }
                    assert_eq!(provider.calls(), 1);
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, coalescing);
criterion_main!(benches);
