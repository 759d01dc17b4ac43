//! Hold queues are bounded: past the limit a request gets 503 with `Retry-After`.

mod common;

use common::{id, ms, Harness};
use http::{header::RETRY_AFTER, StatusCode};
use tower_scale_from_zero::testing::FakeFunction;
use tower_scale_from_zero::ScalingConfig;

#[tokio::test(start_paused = true)]
async fn a_full_per_function_queue_answers_503_with_retry_after_and_slots_are_reused() {
    let config = ScalingConfig::default().max_held_per_function(3);
    let h =
        Harness::new(config).with_function("echo", FakeFunction::new().startup_delay(ms(1_000)));
    let held: Vec<_> = (0..3)
        .map(|_| tokio::spawn(h.get("/function/echo")))
        .collect();
    tokio::time::sleep(ms(10)).await;

    let refused = h.get("/function/echo").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers[RETRY_AFTER], "1");
    assert!(
        refused.body.contains("echo.openfaas-fn"),
        "{}",
        refused.body
    );

    held[0].abort();
    tokio::time::sleep(ms(10)).await;
    assert_eq!(h.scaler.held_for(id("echo").as_function_ref()), 2);
    let reused = tokio::spawn(h.get("/function/echo"));
    for waiter in held.into_iter().skip(1) {
        assert_eq!(waiter.await.unwrap().status, 200);
    }
    assert_eq!(
        reused.await.unwrap().status,
        200,
        "a freed slot is reusable"
    );
    assert_eq!(h.scaler.held(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_total_limit_bounds_all_functions_together() {
    let config = ScalingConfig::default().max_held_total(2);
    let h = Harness::new(config)
        .with_function("a", FakeFunction::new().startup_delay(ms(500)))
        .with_function("b", FakeFunction::new().startup_delay(ms(500)))
        .with_function("c", FakeFunction::new().startup_delay(ms(500)));
    let a = tokio::spawn(h.get("/function/a"));
    let b = tokio::spawn(h.get("/function/b"));
    tokio::time::sleep(ms(10)).await;
    let c = h.get("/function/c").await;
    assert_eq!(c.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(c.headers.contains_key(RETRY_AFTER));
    assert_eq!(
        h.provider.get_calls(),
        2 * 2 + 1,
        "a query and a look after scaling for a and b; one query for c, to learn it is cold"
    );
    assert_eq!(
        h.provider.set_calls(),
        2,
        "c was refused before any scale call"
    );
    assert_eq!(a.await.unwrap().status, 200);
    assert_eq!(b.await.unwrap().status, 200);
    assert_eq!(h.get("/function/c").await.status, 200);
}
