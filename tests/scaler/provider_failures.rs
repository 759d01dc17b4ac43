//! Providers that hang, error, lie or panic: the client gets a distinct status, in time, and
//! the request is never forwarded after giving up.

use crate::support::harness as common;

use std::time::Duration;

use common::{id, ms, Harness};
use http::StatusCode;
use tokio::time::Instant;
use tower_scale_from_zero::testing::{FakeFunction, Fault};
use tower_scale_from_zero::{ErrorKind, QueryError, ScalingConfig};

fn harness() -> Harness {
    Harness::new(ScalingConfig::default())
        .with_function("echo", FakeFunction::new().startup_delay(ms(200)))
}

#[tokio::test(start_paused = true)]
async fn a_provider_that_hangs_ends_the_request_with_504_at_the_deadline() {
    let h = harness();
    h.provider.fail_get(Fault::Hang, usize::MAX);
    let started = Instant::now();
    let reply = h.get("/function/echo").await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(60),
        "the readiness deadline"
    );
    assert!(
        reply.body.contains("echo.openfaas-fn") && reply.body.contains("60000 ms"),
        "{}",
        reply.body
    );
    // The provider's last error is in the logs and the typed error, not in the body.
    assert!(!reply.body.contains("no answer"), "{}", reply.body);
    let error = reply.error.unwrap().to_string();
    assert!(error.contains("no answer within 5000 ms"), "{error}");
    assert_eq!(h.inner_calls(), 0);
    // The cold start ends with the deadline of its last request (its task runs once more).
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    assert_eq!(h.scaler.stats().flights, 0);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_provider_with_short_call_timeouts_gives_502_before_the_deadline() {
    let config = ScalingConfig::builder()
        .call_timeout(Duration::from_secs(1))
        .build();
    let h = Harness::new(config).with_function("echo", FakeFunction::new());
    h.provider.fail_get(Fault::Hang, usize::MAX);
    let started = Instant::now();
    let reply = h.get("/function/echo").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    // 20 attempts of 1 s, with 19 pauses backing off from 100 ms to at most 2 s.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(20 * 1_000 + 19 * 100),
        "{took:?}"
    );
    assert!(
        took <= Duration::from_millis(20 * 1_000 + 19 * 2_000),
        "{took:?}"
    );
    assert_eq!(h.provider.get_calls(), 20);
}

#[tokio::test(start_paused = true)]
async fn a_function_that_never_becomes_ready_gets_504_and_is_never_forwarded() {
    let h = Harness::new(
        ScalingConfig::builder()
            .readiness_deadline(Duration::from_secs(5))
            .build(),
    )
    .with_function("stuck", FakeFunction::new().never_ready());
    let started = Instant::now();
    let reply = h.get("/function/stuck").await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(reply.error.unwrap().kind(), ErrorKind::NotReady);
    assert_eq!(h.inner_calls(), 0, "never forwarded after giving up");
    assert_eq!(h.provider.successful_sets(), 1);
    // One poll per interval while waiting: a query, a look after scaling, 50 polls at most.
    assert!(h.provider.get_calls() <= 52, "{}", h.provider.get_calls());
}

#[tokio::test(start_paused = true)]
async fn set_replicas_failing_a_few_times_then_succeeding_gives_200() {
    let h = harness();
    h.provider
        .fail_set(Fault::Error(QueryError::provider("conflict")), 3);
    let reply = h.get("/function/echo").await;
    assert_eq!(reply.status, 200);
    assert_eq!(h.provider.set_calls(), 4);
    assert_eq!(h.provider.successful_sets(), 1);
}

#[tokio::test(start_paused = true)]
async fn set_replicas_always_failing_gives_502_after_every_attempt() {
    let h = harness();
    h.provider.fail_set(
        Fault::Error(QueryError::provider("quota exceeded")),
        usize::MAX,
    );
    let reply = h.get("/function/echo").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(h.provider.set_calls(), 20, "max_scale_attempts");
    assert_eq!(
        reply.body,
        "could not scale function echo.openfaas-fn after 20 attempts: the provider call failed\n"
    );
    let error = reply.error.unwrap().to_string();
    assert!(
        error.contains("quota exceeded"),
        "logs keep the cause: {error}"
    );
    assert_eq!(h.inner_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn provider_errors_are_502_never_404() {
    for status in [
        StatusCode::UNAUTHORIZED,
        StatusCode::BAD_REQUEST,
        StatusCode::INTERNAL_SERVER_ERROR,
    ] {
        let h = harness();
        let err = QueryError::provider("denied").with_status(status);
        h.provider.fail_get(Fault::Error(err), usize::MAX);
        let reply = h.get("/function/echo").await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_GATEWAY,
            "provider said {status}"
        );
        assert!(reply.body.contains(status.as_str()), "{}", reply.body);
        assert!(reply.body.contains("echo.openfaas-fn"), "{}", reply.body);
        assert_eq!(
            reply.error.unwrap().query_error().unwrap().status(),
            Some(status)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_transient_provider_error_is_retried() {
    let h = harness();
    h.provider
        .fail_get(Fault::Error(QueryError::provider("connection reset")), 2);
    assert_eq!(h.get("/function/echo").await.status, 200);
    assert_eq!(h.provider.successful_sets(), 1);
}

#[tokio::test(start_paused = true)]
async fn not_found_is_404_and_is_remembered_briefly() {
    let h = harness();
    let reply = h.get("/function/nope").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body, "function nope.openfaas-fn not found\n");
    assert_eq!(h.provider.get_calls(), 1);

    tokio::time::advance(ms(999)).await;
    assert_eq!(h.get("/function/nope").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        h.provider.get_calls(),
        1,
        "answered from the not-found cache"
    );

    tokio::time::advance(ms(1)).await;
    h.provider.add_function(&id("nope"), FakeFunction::new());
    assert_eq!(h.get("/function/nope").await.status, 200, "deployed since");
    assert_eq!(
        h.provider.get_calls(),
        1 + 2,
        "then a query and one readiness poll"
    );
    assert_eq!(
        h.cache.len(),
        1,
        "not-found answers never enter the replica cache"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_provider_gives_500_to_every_waiter_then_a_fresh_flight_works() {
    let h = harness();
    h.provider.fail_get(Fault::Panic, 1);
    let waiters: Vec<_> = (0..20)
        .map(|_| tokio::spawn(h.get("/function/echo")))
        .collect();
    for waiter in waiters {
        let reply = waiter.await.unwrap();
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(reply.body.contains("echo.openfaas-fn"), "{}", reply.body);
    }
    assert_eq!(h.scaler.stats().flights, 0, "no poisoned state");
    assert_eq!(h.scaler.stats().held, 0);
    assert_eq!(h.get("/function/echo").await.status, 200);
    assert_eq!(
        h.provider.get_calls(),
        1 + 1 + 1 + 2,
        "panicked; then a query, a look after scaling, two polls"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_set_replicas_is_also_500() {
    let h = harness();
    h.provider.fail_set(Fault::Panic, 1);
    assert_eq!(
        h.get("/function/echo").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(h.get("/function/echo").await.status, 200);
}

#[tokio::test(start_paused = true)]
async fn read_after_write_lag_does_not_cause_a_second_scale_call() {
    let h = Harness::new(ScalingConfig::default()).with_function(
        "echo",
        FakeFunction::new()
            .startup_delay(ms(300))
            .read_after_write_lag(ms(1_000)),
    );
    let waiters: Vec<_> = (0..10)
        .map(|_| tokio::spawn(h.get("/function/echo")))
        .collect();
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().status, 200);
    }
    assert_eq!(h.provider.set_calls(), 1, "exactly one set_replicas");
}

#[tokio::test(start_paused = true)]
async fn the_scale_target_is_the_minimum_within_the_maximum() {
    let h = Harness::new(ScalingConfig::default())
        .with_function("three", FakeFunction::new().min_replicas(3))
        .with_function(
            "capped",
            FakeFunction::new().min_replicas(3).max_replicas(2),
        )
        .with_function("zero-min", FakeFunction::new().min_replicas(0));
    for name in ["three", "capped", "zero-min"] {
        assert_eq!(h.get(&format!("/function/{name}")).await.status, 200);
    }
    assert_eq!(h.provider.desired_replicas(&id("three")), Some(3));
    assert_eq!(h.provider.desired_replicas(&id("capped")), Some(2));
    assert_eq!(h.provider.desired_replicas(&id("zero-min")), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_permanent_provider_error_fails_at_once_without_retries() {
    let h = harness();
    let denied = QueryError::provider("bad credentials")
        .with_status(StatusCode::UNAUTHORIZED)
        .permanent();
    h.provider.fail_set(Fault::Error(denied), usize::MAX);
    let started = Instant::now();
    let reply = h.get("/function/echo").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(started.elapsed(), Duration::ZERO, "no retry, no wait");
    assert_eq!(h.provider.set_calls(), 1);
    assert!(
        reply.body.contains("after 1 attempts") && reply.body.contains("401"),
        "{}",
        reply.body
    );
}

#[tokio::test(start_paused = true)]
async fn an_unrepresentably_long_deadline_still_works() {
    let config = ScalingConfig::builder()
        .readiness_deadline(Duration::MAX)
        .build();
    let h = Harness::new(config).with_function("echo", FakeFunction::new().startup_delay(ms(200)));
    assert_eq!(h.get("/function/echo").await.status, 200);
}
