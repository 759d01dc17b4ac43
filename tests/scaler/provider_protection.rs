//! The provider is protected: a cap on calls under way for all functions together, a bounded
//! queue whose wait counts against the call timeout, and retries that back off exponentially
//! with jitter, so an outage does not turn into a storm of calls.

use crate::support::harness as common;

use std::time::Duration;

use common::{id, ms, Harness};
use http::StatusCode;
use tokio::time::Instant;
use tower_scale_from_zero::testing::{FakeFunction, Fault};
use tower_scale_from_zero::{QueryError, ScalingConfig};

#[tokio::test(start_paused = true)]
async fn an_outage_across_five_thousand_cold_functions_stays_under_the_call_cap_and_backs_off() {
    const FUNCTIONS: usize = 5_000;
    let mut h = Harness::new(ScalingConfig::default());
    for i in 0..FUNCTIONS {
        h = h.with_function(&format!("f{i}"), FakeFunction::new());
    }
    h.provider.call_latency(ms(1));
    h.provider.fail_get(
        Fault::Error(QueryError::provider("connection refused")),
        usize::MAX,
    );

    let started = Instant::now();
    let requests: Vec<_> = (0..FUNCTIONS)
        .flat_map(|i| [i, i])
        .map(|i| tokio::spawn(h.get(&format!("/function/f{i}"))))
        .collect();

    // Steady state, every flight at the backoff cap: count the calls over ten seconds.
    tokio::time::sleep_until(started + Duration::from_secs(5)).await;
    let before = h.provider.get_calls();
    tokio::time::sleep_until(started + Duration::from_secs(15)).await;
    let rate = (h.provider.get_calls() - before) as f64 / 10.0;
    println!(
        "{FUNCTIONS} failing cold functions: {rate:.0} provider calls/s at steady state \
         (without backoff: {} calls/s); at most {} calls under way",
        FUNCTIONS * 10,
        h.provider.max_calls_in_flight()
    );

    for request in requests {
        assert_eq!(request.await.unwrap().status, StatusCode::BAD_GATEWAY);
    }
    assert!(
        h.provider.max_calls_in_flight() <= 64,
        "{}",
        h.provider.max_calls_in_flight()
    );
    assert!(
        h.provider.max_calls_in_flight() >= 32,
        "the cap was reached"
    );
    // Mean pause at the 2 s cap is 1.05 s: about 4 800 calls/s for 5 000 flights, a tenth of
    // the 50 000/s that retrying every poll interval would make.
    assert!(rate < 6_000.0, "{rate}");
    assert_eq!(
        h.provider.get_calls(),
        FUNCTIONS * 20,
        "20 attempts per flight, whatever the number of requests"
    );
    assert_eq!(h.scaler.stats().flights, 0);
    assert_eq!(h.scaler.stats().provider_calls, 0);
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_from_the_poll_interval_to_the_cap_and_the_deadline_still_wins() {
    let config = ScalingConfig::builder()
        .readiness_deadline(Duration::from_secs(10))
        .build();
    let h = Harness::new(config).with_function("echo", FakeFunction::new());
    h.provider.fail_get(
        Fault::Error(QueryError::provider("503 from upstream")),
        usize::MAX,
    );
    let started = Instant::now();
    let reply = h.get("/function/echo").await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{}", reply.body);
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    // Pauses of at least 0.1, 0.1, 0.1, ... s and at most 0.1, 0.2, 0.4, 0.8, 1.6, 2, 2, ... s:
    // in 10 s, between 8 calls (every pause at its ceiling) and 100 (every pause at the floor).
    let calls = h.provider.get_calls();
    assert!((8..=100).contains(&calls), "{calls}");
    assert!(calls < 40, "backing off, not polling every 100 ms: {calls}");
}

#[tokio::test(start_paused = true)]
async fn a_call_that_waits_for_a_place_past_its_timeout_is_a_failed_attempt() {
    // One call at a time; the provider never answers; one attempt of at most 1 s.
    let config = ScalingConfig::builder()
        .max_provider_calls(1)
        .call_timeout(Duration::from_secs(1))
        .max_scale_attempts(1)
        .build();
    let h = Harness::new(config)
        .with_function("a", FakeFunction::new())
        .with_function("b", FakeFunction::new());
    h.provider.fail_get(Fault::Hang, usize::MAX);
    let started = Instant::now();
    let a = tokio::spawn(h.get("/function/a"));
    let b = tokio::spawn(h.get("/function/b"));
    for reply in [a.await.unwrap(), b.await.unwrap()] {
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
        let error = reply.error.unwrap().to_string();
        assert!(error.contains("no answer within 1000 ms"), "{error}");
    }
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "b's wait for a place counted against its timeout: not 1 s of queue, then 1 s of call"
    );
    assert_eq!(h.provider.max_calls_in_flight(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_full_call_queue_fails_the_call_at_once_and_it_is_retried() {
    let config = ScalingConfig::builder()
        .max_provider_calls(1)
        .max_queued_provider_calls(0)
        .build();
    let h = Harness::new(config)
        .with_function("a", FakeFunction::new())
        .with_function("b", FakeFunction::new());
    h.provider.call_latency(ms(50));
    let a = tokio::spawn(h.get("/function/a"));
    let b = tokio::spawn(h.get("/function/b"));
    assert_eq!(a.await.unwrap().status, 200);
    assert_eq!(b.await.unwrap().status, 200, "retried after backing off");
    assert_eq!(h.provider.max_calls_in_flight(), 1);
    assert_eq!(h.provider.successful_sets(), 2);
    assert_eq!(h.provider.desired_replicas(&id("b")), Some(1));
}
