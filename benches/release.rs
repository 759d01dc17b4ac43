//! Release: 10 000 requests held for one cold function; the provider pushes readiness; time
//! from the push until the last held request has its response. Requests go through the
//! `ScaleFromZero` service on a 2-worker runtime; polling is set to an hour so only the push
//! can release them.
//!
//! `cargo bench --all-features --bench release`

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use http::Request;
use support::HeldFunction;
use tower::ServiceExt;
use tower_scale_from_zero::ServiceQueryResponse;

const HELD: usize = 10_000;

/// Holds `HELD` requests, pushes readiness, and returns push → last response.
async fn one_release() -> Duration {
    let HeldFunction {
        id,
        provider,
        scaler,
        service,
    } = HeldFunction::new();

    let base = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let held: Vec<_> = (0..HELD)
        .map(|_| {
            let service = service.clone();
            let last = Arc::clone(&last);
            tokio::spawn(async move {
                let req = Request::get("/function/echo").body(()).unwrap();
                let response = service.oneshot(req).await.unwrap();
                assert_eq!(response.status(), 200);
                last.fetch_max(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
            })
        })
        .collect();
    while scaler.stats().held < HELD {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(provider.successful_sets(), 1);

    let pushed = base.elapsed();
    scaler
        .readiness_notifier()
        .notify(&id, ServiceQueryResponse::new(1, 1));
    for request in held {
        request.await.unwrap();
    }
    assert_eq!(scaler.stats().flights, 0);
    Duration::from_nanos(last.load(Ordering::Relaxed)) - pushed
}

fn release(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("release");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("10000 held, push to last response", |b| {
        b.to_async(&runtime).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += one_release().await;
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, release);
criterion_main!(benches);
