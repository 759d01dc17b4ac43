//! Hold queues are bounded: past the limit a request gets 503 with `Retry-After`.

use crate::support::harness as common;

use common::{id, ms, Harness};
use http::{header::RETRY_AFTER, StatusCode};
use tower_scale_from_zero::testing::FakeFunction;
use tower_scale_from_zero::ScalingConfig;

#[tokio::test(start_paused = true)]
async fn a_full_per_function_queue_answers_503_with_retry_after_and_slots_are_reused() {
    let config = ScalingConfig::builder().max_held_per_function(3).build();
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
    assert_eq!(h.scaler.stats().function(&id("echo")).held, 2);
    let reused = tokio::spawn(h.get("/function/echo"));
    for waiter in held.into_iter().skip(1) {
        assert_eq!(waiter.await.unwrap().status, 200);
    }
    assert_eq!(
        reused.await.unwrap().status,
        200,
        "a freed slot is reusable"
    );
    assert_eq!(h.scaler.stats().held, 0);
}

#[tokio::test(start_paused = true)]
async fn the_total_limit_bounds_all_functions_together() {
    let config = ScalingConfig::builder().max_held_total(2).build();
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

#[tokio::test(start_paused = true)]
async fn a_warm_function_is_never_refused_because_other_cold_starts_fill_the_total_limit() {
    let config = ScalingConfig::builder().max_held_total(5).build();
    let mut h = Harness::new(config).with_function("warm", FakeFunction::new().running(1));
    for i in 0..5 {
        h = h.with_function(
            &format!("cold-{i}"),
            FakeFunction::new().startup_delay(ms(30_000)),
        );
    }
    // The warm function's cache entry is filled, then expires.
    assert_eq!(h.get("/function/warm").await.status, 200);
    let cold: Vec<_> = (0..5)
        .map(|i| tokio::spawn(h.get(&format!("/function/cold-{i}"))))
        .collect();
    tokio::time::sleep(ms(300)).await;
    assert_eq!(h.scaler.stats().held, 5, "the total limit is full");

    for _ in 0..20 {
        assert_eq!(h.scaler.stats().held, 5, "still full");
        let reply = h.get("/function/warm").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        tokio::time::sleep(ms(300)).await; // past the cache TTL each time
    }
    let refused = h.get("/function/cold-extra").await;
    assert_eq!(
        refused.status,
        StatusCode::NOT_FOUND,
        "unknown: answered, not held"
    );
    h.provider
        .add_function(&id("cold-5"), FakeFunction::new().startup_delay(ms(30_000)));
    let refused = h.get("/function/cold-5").await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a cold one is refused"
    );
    assert!(refused.body.contains("total limit 5"), "{}", refused.body);
    assert_eq!(
        h.provider.desired_replicas(&id("cold-5")),
        Some(0),
        "and not scaled"
    );
    for request in cold {
        assert_eq!(request.await.unwrap().status, 200);
    }
    assert_eq!(h.scaler.stats().held, 0);
}

/// `GET path` with a 4 KiB cookie, through the harness's gateway.
fn heavy(h: &Harness, path: &str) -> impl std::future::Future<Output = common::Reply> + Send {
    let gateway = h.gateway.clone();
    let req = http::Request::get(path)
        .header("cookie", "c".repeat(4 << 10))
        .body(String::new())
        .unwrap();
    async move {
        use tower::ServiceExt;
        common::Reply::from(gateway.oneshot(req).await.unwrap()).await
    }
}

#[tokio::test(start_paused = true)]
async fn holds_are_bounded_in_bytes_per_function_and_the_bytes_come_back() {
    let probe = http::Request::get("/function/echo")
        .header("cookie", "c".repeat(4 << 10))
        .body(String::new())
        .unwrap();
    let each = tower_scale_from_zero::middleware::held_bytes(&probe);
    assert!(each > 4 << 10, "the head is counted: {each}");
    // Room for 5 such requests per function, far more by count.
    let config = ScalingConfig::builder()
        .max_held_bytes_per_function(5 * each + each / 2)
        .max_held_bytes_total(6 * each + each / 2)
        .build();
    let h = Harness::new(config)
        .with_function("echo", FakeFunction::new().startup_delay(ms(1_000)))
        .with_function("other", FakeFunction::new().startup_delay(ms(1_000)));
    let held: Vec<_> = (0..5)
        .map(|_| tokio::spawn(heavy(&h, "/function/echo")))
        .collect();
    tokio::time::sleep(ms(10)).await;
    let refused = heavy(&h, "/function/echo").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers[RETRY_AFTER], "1");
    assert!(
        refused.body.contains("per-function bytes"),
        "{}",
        refused.body
    );
    // A light request still fits in what is left.
    let light = tokio::spawn(h.get("/function/echo"));
    tokio::time::sleep(ms(10)).await;
    assert_eq!(h.scaler.stats().function(&id("echo")).held, 6);
    for request in held {
        assert_eq!(request.await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(light.await.unwrap().status, StatusCode::OK);
    // Everything given back: under the total limit, another function holds as many again.
    let again: Vec<_> = (0..5)
        .map(|_| tokio::spawn(heavy(&h, "/function/other")))
        .collect();
    for request in again {
        assert_eq!(request.await.unwrap().status, StatusCode::OK);
    }
}

#[tokio::test(start_paused = true)]
async fn the_total_byte_limit_bounds_all_functions_together() {
    let probe = http::Request::get("/function/a")
        .header("cookie", "c".repeat(4 << 10))
        .body(String::new())
        .unwrap();
    let each = tower_scale_from_zero::middleware::held_bytes(&probe);
    let config = ScalingConfig::builder()
        .max_held_bytes_total(2 * each + each / 2)
        .build();
    let h = Harness::new(config)
        .with_function("a", FakeFunction::new().startup_delay(ms(500)))
        .with_function("b", FakeFunction::new().startup_delay(ms(500)));
    let a = tokio::spawn(heavy(&h, "/function/a"));
    let b = tokio::spawn(heavy(&h, "/function/b"));
    tokio::time::sleep(ms(10)).await;
    let refused = heavy(&h, "/function/b").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.body.contains("total bytes"), "{}", refused.body);
    assert_eq!(a.await.unwrap().status, StatusCode::OK);
    assert_eq!(b.await.unwrap().status, StatusCode::OK);
}
