//! A `set_replicas` that has been sent runs to its own end even when every waiter has left, and
//! a later request does not send a second one.

use crate::support::harness as common;

use std::time::Duration;

use common::{id, ms, Harness};
use tokio::time::{timeout, Instant};
use tower_scale_from_zero::testing::FakeFunction;
use tower_scale_from_zero::ScalingConfig;

/// A client that asks for `echo` and gives up, unanswered, after `patience`.
async fn client_gives_up_after(h: &Harness, patience: Duration) {
    let answered = timeout(patience, h.get("/function/echo")).await;
    assert!(
        answered.is_err(),
        "the client was answered before giving up"
    );
}

/// A client that gives up after 2 s, against a provider whose scale call takes 3 s.
fn harness(spec: FakeFunction) -> Harness {
    let h = Harness::new(ScalingConfig::default()).with_function("echo", spec);
    h.provider.set_latency(Duration::from_secs(3));
    h
}

#[tokio::test(start_paused = true)]
async fn a_scale_call_in_flight_completes_after_every_waiter_left() {
    let h = harness(FakeFunction::new().startup_delay(ms(500)));
    let started = Instant::now();
    client_gives_up_after(&h, Duration::from_secs(2)).await;
    assert_eq!(
        h.scaler.stats().held,
        0,
        "the client's place is freed at once"
    );
    assert_eq!(
        h.scaler.stats().flights,
        1,
        "the cold start belongs to the scaler: it goes on without its waiter"
    );

    tokio::time::sleep_until(started + ms(3_000)).await;
    tokio::task::yield_now().await;
    assert_eq!(h.provider.successful_sets(), 1, "the write completed");
    assert_eq!(h.provider.desired_replicas(&id("echo")), Some(1));
    tokio::time::sleep(ms(1_000)).await;
    assert_eq!(
        h.scaler.stats().flights,
        0,
        "and the flight ended once the function was ready"
    );
    assert_eq!(h.inner_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_retry_during_the_write_joins_it() {
    let h = harness(FakeFunction::new().startup_delay(ms(500)));
    let started = Instant::now();
    client_gives_up_after(&h, Duration::from_secs(2)).await;
    tokio::time::sleep(ms(100)).await;
    let retry = h.get("/function/echo").await;
    assert_eq!(retry.status, 200);
    assert_eq!(
        started.elapsed(),
        ms(3_500),
        "write done at 3 s, ready at 3.5 s"
    );
    assert_eq!(h.provider.set_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_after_the_abandoned_write_does_not_scale_again() {
    // Reads lag 1 s behind writes: right after the write, the platform still says desired 0.
    let h = harness(
        FakeFunction::new()
            .startup_delay(ms(500))
            .read_after_write_lag(Duration::from_secs(1)),
    );
    let started = Instant::now();
    client_gives_up_after(&h, Duration::from_secs(2)).await;
    tokio::time::sleep_until(started + ms(3_100)).await;

    let reply = h.get("/function/echo").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        h.provider.set_calls(),
        1,
        "within the cache TTL of the write, a lagging read is not a reason to scale again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_after_the_abandoned_write_does_not_scale_again_even_without_a_cache() {
    let config = ScalingConfig::builder().cache_ttl(Duration::ZERO).build();
    let h = Harness::new(config).with_function(
        "echo",
        FakeFunction::new()
            .startup_delay(ms(500))
            .read_after_write_lag(Duration::from_secs(1)),
    );
    h.provider.set_latency(Duration::from_secs(3));
    client_gives_up_after(&h, Duration::from_secs(2)).await;
    tokio::time::sleep(ms(1_100)).await;
    assert_eq!(h.get("/function/echo").await.status, 200);
    assert_eq!(h.provider.set_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_scale_request_the_platform_lost_is_sent_again_after_a_deadline() {
    // The first request leaves during the write; the write succeeds, then the platform loses
    // it (back at desired 0) before any read showed it. Steady traffic keeps one flight going:
    // it trusts the earlier request for one deadline, then asks again.
    let config = ScalingConfig::builder()
        .readiness_deadline(Duration::from_secs(2))
        .build();
    let lagging = FakeFunction::new().read_after_write_lag(Duration::from_secs(2));
    let h = Harness::new(config).with_function("echo", lagging);
    h.provider.set_latency(Duration::from_secs(1));
    client_gives_up_after(&h, ms(500)).await;
    tokio::time::sleep(ms(600)).await;
    assert_eq!(h.provider.successful_sets(), 1);
    h.provider.add_function(&id("echo"), FakeFunction::new());

    let mut requests = Vec::new();
    for _ in 0..10 {
        requests.push(tokio::spawn(h.get("/function/echo")));
        tokio::time::sleep(ms(500)).await;
    }
    let statuses: Vec<u16> = futures::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap().status.as_u16())
        .collect();
    assert_eq!(
        statuses[0], 504,
        "trusted the earlier request for a deadline"
    );
    assert!(statuses[6..].iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(h.provider.set_calls(), 2, "the lost one, and one more");
}
