//! Every held request gets the full readiness deadline from its own arrival, and its 504 says
//! how long it waited.

use crate::support::harness as common;

use std::time::Duration;

use common::{ms, Harness};
use http::StatusCode;
use tokio::time::Instant;
use tower_scale_from_zero::testing::FakeFunction;
use tower_scale_from_zero::ScalingConfig;

fn two_second_deadline() -> ScalingConfig {
    ScalingConfig::builder()
        .readiness_deadline(Duration::from_secs(2))
        .build()
}

#[tokio::test(start_paused = true)]
async fn a_late_joiner_gets_its_full_deadline_from_its_own_arrival() {
    // Ready 3 s after the scale-up: too late for the first request (2 s), in time for the one
    // that joined at 1.5 s (deadline 3.5 s).
    let h = Harness::new(two_second_deadline()).with_function(
        "slow",
        FakeFunction::new().startup_delay(Duration::from_secs(3)),
    );
    let started = Instant::now();
    let first = tokio::spawn(h.get("/function/slow"));
    tokio::time::sleep(ms(1_500)).await;
    let late = tokio::spawn(h.get("/function/slow"));

    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        first.body,
        "function slow.openfaas-fn not ready after 2000 ms\n"
    );

    let late = late.await.unwrap();
    assert_eq!(late.status, StatusCode::OK, "{}", late.body);
    assert_eq!(started.elapsed(), ms(3_000), "released at the poll at 3 s");
    assert_eq!(h.inner_calls(), 1, "the first request was never forwarded");
    assert_eq!(h.provider.set_calls(), 1);
    assert_eq!(h.scaler.stats().flights, 0);
    assert_eq!(h.scaler.stats().held, 0);
}

#[tokio::test(start_paused = true)]
async fn each_504_body_says_how_long_that_request_waited() {
    let h = Harness::new(two_second_deadline())
        .with_function("stuck", FakeFunction::new().never_ready());
    let started = Instant::now();
    let first = tokio::spawn(h.get("/function/stuck"));
    tokio::time::sleep(ms(1_500)).await;
    let late = tokio::spawn(h.get("/function/stuck"));

    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::GATEWAY_TIMEOUT);
    let late = late.await.unwrap();
    assert_eq!(late.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        started.elapsed(),
        ms(3_500),
        "the late request waited its own 2 s, not what was left of the first one's"
    );
    for reply in [&first, &late] {
        assert_eq!(
            reply.body,
            "function stuck.openfaas-fn not ready after 2000 ms\n"
        );
        assert_eq!(reply.error.as_ref().unwrap().waited(), Some(ms(2_000)));
    }
    assert_eq!(h.provider.set_calls(), 1, "one flight served both");
    assert_eq!(h.inner_calls(), 0);
    // The cold start ends with the deadline of its last request (its task runs once more).
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        h.scaler.stats().flights,
        0,
        "the flight ended with its last waiter's deadline"
    );
}
