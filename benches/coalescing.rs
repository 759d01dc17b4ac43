//! Coalescing: N concurrent callers ask for one cold function whose provider answers at once
//! (one `yield` inside, as any real call has). Compared in one group and run: our
//! `SingleFlight`, no coalescing (every caller queries the provider), `async_singleflight`,
//! and moka's `get_with`. Reported time is per caller (total / N). Provider calls are counted
//! and asserted in every iteration: 1 for the coalescers, N for no coalescing.
//!
//! `cargo bench --all-features --bench coalescing`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use futures::future::join_all;
use tower_scale_from_zero::single_flight::SingleFlight;
use tower_scale_from_zero::{FunctionId, ServiceQueryResponse};

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

/// Runs `iters` timed rounds of `n` callers (after an untimed `reset` each); returns the time
/// per caller summed over rounds.
async fn per_caller<R, F, Fut>(iters: u64, n: usize, mut reset: R, mut round: F) -> Duration
where
    R: FnMut(),
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        reset();
        let start = Instant::now();
        round().await;
        total += start.elapsed();
    }
    total / n as u32
}

/// Peers are not asserted to coalesce perfectly: what they did is printed instead.
fn report(name: &str, n: usize, worst: &AtomicUsize) {
    let calls = worst.load(Ordering::Relaxed);
    if calls > 0 {
        println!("provider calls: {name} with {n} callers: at most {calls} per round");
    }
}

fn coalescing(c: &mut Criterion) {
    // One thread: all N callers have joined before the (instant) work can finish, for every
    // approach alike, so the provider-call counts are exact.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("coalescing (per caller)");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    for n in CALLERS {
        group.bench_with_input(BenchmarkId::new("ours: SingleFlight", n), &n, |b, &n| {
            let provider = Provider::default();
            let flights = SingleFlight::<FunctionId, ServiceQueryResponse>::new();
            let key = id();
            b.to_async(&runtime).iter_custom(|iters| {
                let (provider, flights, key) = (provider.clone(), flights.clone(), key.clone());
                async move {
                    let reset = || provider.calls.store(0, Ordering::Relaxed);
                    per_caller(iters, n, reset, || async {
                        let callers: Vec<_> = (0..n)
                            .map(|_| {
                                let provider = provider.clone();
                                flights.join(key.clone(), move || async move {
                                    provider.get_replicas().await
                                })
                            })
                            .collect();
                        for out in join_all(callers).await {
                            assert!(out.unwrap().is_ready());
                        }
                        assert_eq!(provider.calls(), 1);
                        assert!(flights.is_empty());
                    })
                    .await
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("no coalescing", n), &n, |b, &n| {
            let provider = Provider::default();
            b.to_async(&runtime).iter_custom(|iters| {
                let provider = provider.clone();
                async move {
                    let reset = || provider.calls.store(0, Ordering::Relaxed);
                    per_caller(iters, n, reset, || async {
                        let callers = (0..n).map(|_| provider.get_replicas());
                        for out in join_all(callers).await {
                            assert!(out.is_ready());
                        }
                        assert_eq!(provider.calls(), n);
                    })
                    .await
                }
            })
        });
        let worst = Arc::new(AtomicUsize::new(0));
        group.bench_with_input(BenchmarkId::new("async_singleflight", n), &n, |b, &n| {
            let provider = Provider::default();
            let worst = Arc::clone(&worst);
            let group = Arc::new(async_singleflight::DefaultGroup::<ServiceQueryResponse>::new());
            b.to_async(&runtime).iter_custom(|iters| {
                let (provider, group, worst) = (provider.clone(), group.clone(), worst.clone());
                async move {
                    let reset = || provider.calls.store(0, Ordering::Relaxed);
                    per_caller(iters, n, reset, || async {
                        let callers = (0..n).map(|_| {
                            group.work("echo.openfaas-fn", async {
                                Ok::<_, ()>(provider.get_replicas().await)
                            })
                        });
                        for out in join_all(callers).await {
                            assert!(out.unwrap().is_ready());
                        }
                        worst.fetch_max(provider.calls(), Ordering::Relaxed);
                    })
                    .await
                }
            })
        });
        report("async_singleflight", n, &worst);
        let worst = Arc::new(AtomicUsize::new(0));
        group.bench_with_input(BenchmarkId::new("moka get_with", n), &n, |b, &n| {
            let provider = Provider::default();
            let worst = Arc::clone(&worst);
            let cache = moka::future::Cache::<FunctionId, ServiceQueryResponse>::new(10_000);
            let key = id();
            b.to_async(&runtime).iter_custom(|iters| {
                let (provider, cache, key) = (provider.clone(), cache.clone(), key.clone());
                let worst = worst.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        // Untimed: forget the value so that every round is a cold miss.
                        cache.invalidate(&key).await;
                        provider.calls.store(0, Ordering::Relaxed);
                        total += per_caller(
                            1,
                            n,
                            || {},
                            || async {
                                let callers = (0..n)
                                    .map(|_| cache.get_with(key.clone(), provider.get_replicas()));
                                for out in join_all(callers).await {
                                    assert!(out.is_ready());
                                }
                                worst.fetch_max(provider.calls(), Ordering::Relaxed);
                            },
                        )
                        .await;
                    }
                    total
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, coalescing);
criterion_main!(benches);
