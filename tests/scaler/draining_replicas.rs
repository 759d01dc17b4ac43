//! A scale-down in progress (desired 0, a replica still available) is not warm: requests are
//! never forwarded to the terminating replica; they wait for a fresh scale-up.

use crate::support::harness as common;

use common::{id, ms, Harness};
use tokio::time::Instant;
use tower_scale_from_zero::testing::FakeFunction;
use tower_scale_from_zero::ScalingConfig;

#[tokio::test(start_paused = true)]
async fn a_scale_down_in_progress_is_not_warm_and_leads_to_a_scale_up() {
    let h = Harness::new(ScalingConfig::default()).with_function(
        "echo",
        FakeFunction::new().draining(1).startup_delay(ms(400)),
    );
    let started = Instant::now();
    let reply = h.get("/function/echo").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        started.elapsed(),
        ms(400),
        "held for the new replica, not forwarded to the terminating one"
    );
    assert_eq!(h.provider.set_calls(), 1, "desired 0 means scale up");
    assert_eq!(h.provider.desired_replicas(&id("echo")), Some(1));
    assert_eq!(h.inner_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_draining_state_is_never_cached_as_warm() {
    let h = Harness::new(ScalingConfig::default())
        .with_function("echo", FakeFunction::new().draining(2).never_ready());
    let notifier = h.scaler.readiness_notifier();
    notifier.notify(
        &id("echo"),
        tower_scale_from_zero::ServiceQueryResponse::new(0, 2),
    );
    assert!(!h.scaler.stats().function(&common::id("echo")).warm);
}
