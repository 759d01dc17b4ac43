//! Draining for a graceful shutdown: no new cold starts, held requests finish within the
//! budget, the rest are answered 503; nobody is left without a response.

use crate::support::harness as common;

use common::{ms, Harness};
use std::time::Duration;
use tokio::time::Instant;
use tower_scale_from_zero::testing::FakeFunction;
use tower_scale_from_zero::{ErrorKind, ScalingConfig};

#[tokio::test(start_paused = true)]
async fn held_requests_ready_within_the_budget_are_served_and_new_cold_starts_refused() {
    let h = Harness::new(ScalingConfig::default())
        .with_function("slow", FakeFunction::new().startup_delay(ms(800)))
        .with_function("warm", FakeFunction::new().running(1))
        .with_function("cold", FakeFunction::new());
    assert_eq!(h.get("/function/warm").await.status, 200);
    let held: Vec<_> = (0..100)
        .map(|_| tokio::spawn(h.get("/function/slow")))
        .collect();
    tokio::time::sleep(ms(10)).await;
    assert_eq!(h.scaler.stats().held, 100);

    let started = Instant::now();
    let drain = tokio::spawn({
        let scaler = h.scaler.clone();
        async move { scaler.drain(Duration::from_secs(5)).await }
    });
    tokio::time::sleep(ms(1)).await;
    // A new cold start: refused at once, with Retry-After. A warm function: served.
    let refused = h.get("/function/cold").await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.error.unwrap().kind(), ErrorKind::ShuttingDown);
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(h.get("/function/warm").await.status, 200);

    for request in held {
        assert_eq!(request.await.unwrap().status, 200);
    }
    let drained = drain.await.unwrap();
    assert_eq!(drained.cut_short, 0);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no need to wait the budget out"
    );
    assert_eq!(
        h.provider.set_calls(),
        1,
        "the refused function was never scaled"
    );
}

#[tokio::test(start_paused = true)]
async fn requests_still_held_when_the_budget_is_spent_get_503() {
    let h = Harness::new(ScalingConfig::default()).with_function(
        "slow",
        FakeFunction::new().startup_delay(Duration::from_secs(30)),
    );
    let held: Vec<_> = (0..100)
        .map(|_| tokio::spawn(h.get("/function/slow")))
        .collect();
    tokio::time::sleep(ms(10)).await;

    let started = Instant::now();
    let drained = h.scaler.drain(Duration::from_secs(2)).await;
    assert_eq!(drained.cut_short, 100);
    assert!(drained.took >= Duration::from_secs(2) && drained.took < Duration::from_secs(3));
    for request in held {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, 503);
        assert_eq!(reply.error.unwrap().kind(), ErrorKind::ShuttingDown);
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(h.scaler.stats().held, 0);
    assert_eq!(h.inner_calls(), 0, "none forwarded");
}
