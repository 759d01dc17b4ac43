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

#[tokio::test(start_paused = true)]
async fn with_the_default_cache_a_functions_cache_entry_is_its_record() {
    use std::sync::Arc;
    use tower_scale_from_zero::testing::{FakeFunction, InMemoryProvider};
    use tower_scale_from_zero::{FunctionId, FunctionScaler, ScalingConfig};

    let provider = Arc::new(InMemoryProvider::new());
    let scaler = FunctionScaler::new(provider.clone(), ScalingConfig::default());
    for name in ["a", "b", "c"] {
        let id = FunctionId::new(name, "fn").unwrap();
        provider.add_function(&id, FakeFunction::new().running(1));
        scaler.scale(&id).await.unwrap();
    }
    // One entry per function: the cache counts the records.
    assert_eq!(
        scaler.cache().entry_count(),
        Some(scaler.stats().functions())
    );
    assert_eq!(scaler.stats().functions(), 3);
    let a = FunctionId::new("a", "fn").unwrap();
    assert!(scaler.stats().function(&a).warm);
    // Fresh for the TTL (250 ms), then a miss that one read refreshes.
    let reads = provider.get_calls();
    scaler.scale(&a).await.unwrap();
    assert_eq!(provider.get_calls(), reads, "served from the cache");
    tokio::time::advance(std::time::Duration::from_millis(250)).await;
    assert!(!scaler.stats().function(&a).warm, "expired");
    scaler.scale(&a).await.unwrap();
    assert_eq!(provider.get_calls(), reads + 1);
}
