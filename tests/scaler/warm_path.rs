//! Warm functions: a fresh cache entry sends the request straight to the inner service.

use crate::support::harness as common;

use common::{ms, Harness};
use tower_scale_from_zero::testing::FakeFunction;
use tower_scale_from_zero::ScalingConfig;

#[tokio::test(start_paused = true)]
async fn a_live_warm_answer_is_cached_and_the_next_request_makes_no_provider_call() {
    let h = Harness::new(ScalingConfig::default())
        .with_function("echo", FakeFunction::new().running(1));

    let first = h.get("/function/echo/path").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body, "hello from /function/echo/path");
    assert_eq!(
        h.provider.get_calls(),
        1,
        "the first request asks the provider"
    );
    assert_eq!(h.cache.len(), 1, "the live warm answer is cached");

    for _ in 0..100 {
        assert_eq!(h.get("/function/echo").await.status, 200);
    }
    assert_eq!(
        h.provider.get_calls(),
        1,
        "cache hits make no provider call"
    );
    assert_eq!(h.provider.set_calls(), 0);
    assert_eq!(h.inner_calls(), 101);
}

#[tokio::test(start_paused = true)]
async fn an_expired_entry_is_a_miss_and_is_refreshed() {
    let h = Harness::new(ScalingConfig::default())
        .with_function("echo", FakeFunction::new().running(1));
    h.get("/function/echo").await;
    tokio::time::advance(ms(249)).await;
    h.get("/function/echo").await;
    assert_eq!(h.provider.get_calls(), 1);
    tokio::time::advance(ms(1)).await;
    h.get("/function/echo").await;
    assert_eq!(h.provider.get_calls(), 2, "TTL 250 ms: the entry expired");
    h.get("/function/echo").await;
    assert_eq!(
        h.provider.get_calls(),
        2,
        "and was refreshed by the live answer"
    );
}

#[tokio::test(start_paused = true)]
async fn requests_that_name_no_function_pass_through_untouched() {
    let h = Harness::new(ScalingConfig::default());
    for path in ["/healthz", "/", "/ui/function/x", "/functions/echo"] {
        let reply = h.get(path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.body, format!("hello from {path}"));
        assert!(reply.error.is_none());
    }
    assert_eq!(h.provider.get_calls(), 0);
    assert_eq!(h.cache.len(), 0);
}
