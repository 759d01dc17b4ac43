//! A provider that pushes readiness releases held requests at once, not at the next poll.

mod common;

use std::time::Duration;

use common::{ms, Harness};
use tokio::time::Instant;
use tower_scale_from_zero::testing::FakeFunction;
use tower_scale_from_zero::ScalingConfig;

#[tokio::test(start_paused = true)]
async fn pushed_readiness_releases_every_held_request_without_waiting_for_a_poll() {
    // Polling alone would take 10 s; the push comes when the function is ready at 500 ms.
    let config = ScalingConfig::default().poll_interval(Duration::from_secs(10));
    let h = Harness::new(config).with_function("echo", FakeFunction::new().startup_delay(ms(500)));
    h.provider.push_readiness_to(h.scaler.readiness_notifier());

    let started = Instant::now();
    let held: Vec<_> = (0..1_000)
        .map(|_| tokio::spawn(h.get("/function/echo")))
        .collect();
    for request in held {
        assert_eq!(request.await.unwrap().status, 200);
    }
    assert_eq!(
        started.elapsed(),
        ms(500),
        "released at the push, not at a poll"
    );
    assert_eq!(
        h.provider.get_calls(),
        2,
        "the query and one look right after scaling; no poll was needed"
    );
    assert_eq!(h.provider.set_calls(), 1);
    assert_eq!(h.scaler.flights(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_push_that_is_not_ready_releases_nothing() {
    let config = ScalingConfig::default().poll_interval(Duration::from_secs(1));
    let h =
        Harness::new(config).with_function("echo", FakeFunction::new().startup_delay(ms(1_500)));
    let notifier = h.scaler.readiness_notifier();
    let held = tokio::spawn(h.get("/function/echo"));
    tokio::time::sleep(ms(100)).await;
    notifier.notify(
        &common::id("echo"),
        tower_scale_from_zero::ServiceQueryResponse::new(1, 0),
    );
    tokio::time::sleep(ms(100)).await;
    assert!(!held.is_finished());
    assert_eq!(held.await.unwrap().status, 200);
}
