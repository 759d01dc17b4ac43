//! However many requests arrive for a cold function, the provider sees one cold start.

use crate::support::harness as common;

use common::{id, ms, Harness};
use tower_scale_from_zero::testing::FakeFunction;
use tower_scale_from_zero::ScalingConfig;

#[tokio::test(start_paused = true)]
async fn ten_thousand_concurrent_requests_share_one_cold_start() {
    const N: usize = 10_000;
    let startup = ms(500);
    let config = ScalingConfig::default();
    let poll = config.poll_interval();
    let h = Harness::new(config).with_function("echo", FakeFunction::new().startup_delay(startup));

    let started = tokio::time::Instant::now();
    let requests: Vec<_> = (0..N)
        .map(|_| tokio::spawn(h.get("/function/echo")))
        .collect();
    for request in requests {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, "hello from /function/echo");
    }
    let waited = started.elapsed();

    let max_gets = 2 + (startup.as_millis() / poll.as_millis()) as usize;
    println!(
        "{N} requests: get_replicas={} set_replicas={} waited={waited:?}",
        h.provider.get_calls(),
        h.provider.set_calls()
    );
    assert_eq!(h.provider.set_calls(), 1, "exactly one set_replicas");
    assert!(
        h.provider.get_calls() <= max_gets,
        "{} > {max_gets}",
        h.provider.get_calls()
    );
    assert_eq!(h.inner_calls(), N);
    assert!(waited >= startup && waited <= startup + poll, "{waited:?}");
    assert_eq!(h.scaler.stats().flights, 0, "no flight entry is left");
    assert_eq!(h.scaler.stats().held, 0);
    assert_eq!(h.scaler.stats().function(&id("echo")).held, 0);
}

#[tokio::test(start_paused = true)]
async fn a_function_already_scaling_is_waited_for_not_scaled_again() {
    let h = Harness::new(ScalingConfig::default())
        .with_function("echo", FakeFunction::new().startup_delay(ms(300)));
    // Someone else asked for a replica already: desired 1, available 0.
    use tower_scale_from_zero::ServiceQuery;
    h.provider.set_replicas(&id("echo"), 1).await.unwrap();
    assert_eq!(h.get("/function/echo").await.status, 200);
    assert_eq!(h.provider.set_calls(), 1, "only the outside call");
}

#[tokio::test(start_paused = true)]
async fn cold_starts_of_different_functions_do_not_wait_for_each_other() {
    let h = Harness::new(ScalingConfig::default())
        .with_function("slow", FakeFunction::new().startup_delay(ms(5_000)))
        .with_function("fast", FakeFunction::new().startup_delay(ms(100)));
    let slow = tokio::spawn(h.get("/function/slow"));
    let started = tokio::time::Instant::now();
    assert_eq!(h.get("/function/fast").await.status, 200);
    assert!(started.elapsed() <= ms(200), "{:?}", started.elapsed());
    assert_eq!(slow.await.unwrap().status, 200);
    assert_eq!(h.provider.set_calls(), 2);
}
