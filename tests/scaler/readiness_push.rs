//! A provider that pushes readiness releases that function's held requests at once, not at the
//! next poll, whatever the cache settings; pushes for other functions never touch its flight.

use crate::support::harness as common;

use std::sync::Arc;
use std::time::Duration;

use common::{id, ms, Echo, Harness, Reply};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};
use tower_scale_from_zero::cache::FunctionCacher;
use tower_scale_from_zero::function::FunctionRef;
use tower_scale_from_zero::testing::{FakeFunction, InMemoryProvider};
use tower_scale_from_zero::{
    FunctionId, FunctionScaler, ReadinessNotifier, ScaleFromZeroLayer, ScalingConfig,
    ServiceQueryResponse,
};

#[tokio::test(start_paused = true)]
async fn pushed_readiness_releases_every_held_request_without_waiting_for_a_poll() {
    // Polling alone would take 10 s; the push comes when the function is ready at 500 ms.
    let config = ScalingConfig::builder()
        .poll_interval(Duration::from_secs(10))
        .build();
    let h = Harness::new(config).with_function("echo", FakeFunction::new().startup_delay(ms(500)));
    h.provider.push_readiness_to(h.scaler.readiness_notifier());

    let started = Instant::now();
    let held: Vec<_> = (0..1_000)
        .map(|_| tokio::spawn(h.get("/function/echo")))
        .collect();
    for request in held {
        assert_eq!(request.await.unwrap().status, 200);
    }
    assert_eq!(
        started.elapsed(),
        ms(500),
        "released at the push, not at a poll"
    );
    assert_eq!(
        h.provider.get_calls(),
        2,
        "the query and one look right after scaling; no poll was needed"
    );
    assert_eq!(h.provider.set_calls(), 1);
    assert_eq!(h.scaler.stats().flights, 0);
}

#[tokio::test(start_paused = true)]
async fn a_push_that_is_not_ready_releases_nothing() {
    let config = ScalingConfig::builder()
        .poll_interval(Duration::from_secs(1))
        .build();
    let h =
        Harness::new(config).with_function("echo", FakeFunction::new().startup_delay(ms(1_500)));
    let notifier = h.scaler.readiness_notifier();
    let held = tokio::spawn(h.get("/function/echo"));
    tokio::time::sleep(ms(100)).await;
    notifier.notify(&id("echo"), ServiceQueryResponse::new(1, 0));
    tokio::time::sleep(ms(100)).await;
    assert!(!held.is_finished());
    assert_eq!(held.await.unwrap().status, 200);
}

#[tokio::test(start_paused = true)]
async fn pushes_for_other_functions_never_delay_a_functions_polling() {
    // X becomes ready at the provider at 250 ms without a push; it is polled at 100, 200 and
    // 300 ms. Meanwhile 50 other functions push every 10 ms (a rolling deployment).
    let config = ScalingConfig::builder()
        .readiness_deadline(Duration::from_secs(2))
        .build();
    let h = Harness::new(config).with_function("x", FakeFunction::new().startup_delay(ms(250)));
    let notifier = h.scaler.readiness_notifier();
    let others: Vec<FunctionId> = (0..50).map(|i| id(&format!("other-{i}"))).collect();
    let storm = tokio::spawn(async move {
        for round in 0u64.. {
            for other in &others {
                notifier.notify(other, ServiceQueryResponse::new(1, 1 + round % 2));
            }
            tokio::time::sleep(ms(10)).await;
        }
    });

    let started = Instant::now();
    let held: Vec<_> = (0..10)
        .map(|_| tokio::spawn(h.get("/function/x")))
        .collect();
    for request in held {
        assert_eq!(request.await.unwrap().status, 200);
    }
    assert_eq!(started.elapsed(), ms(300), "released at its own next poll");
    assert_eq!(
        h.provider.get_calls(),
        1 + 1 + 3,
        "a query, a look after scaling, polls at 100, 200 and 300 ms: no extra wake-ups"
    );
    storm.abort();
}

/// Released at the push instant however the cache is set up.
async fn push_releases_at_once(scaler: FunctionScaler, provider: Arc<InMemoryProvider>) {
    provider.push_readiness_to(scaler.readiness_notifier());
    let gateway = ScaleFromZeroLayer::new(scaler.clone()).layer(Echo::default());
    let started = Instant::now();
    let held: Vec<_> = (0..100)
        .map(|_| {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                let req = http::Request::get("/function/echo")
                    .body(String::new())
                    .unwrap();
                Reply::from(gateway.oneshot(req).await.unwrap()).await
            })
        })
        .collect();
    for request in held {
        assert_eq!(request.await.unwrap().status, 200);
    }
    assert_eq!(
        started.elapsed(),
        ms(250),
        "at the push (250 ms), not at the poll (2 s)"
    );
    assert_eq!(
        provider.get_calls(),
        2,
        "the query and the look after scaling"
    );
    assert_eq!(scaler.stats().flights, 0);
}

fn slow_polling() -> ScalingConfig {
    ScalingConfig::builder()
        .poll_interval(Duration::from_secs(2))
        .build()
}

fn echo_provider() -> Arc<InMemoryProvider> {
    let provider = Arc::new(InMemoryProvider::new());
    provider.add_function(&id("echo"), FakeFunction::new().startup_delay(ms(250)));
    provider
}

#[tokio::test(start_paused = true)]
async fn a_push_releases_waiters_with_the_cache_disabled_by_ttl() {
    let provider = echo_provider();
    let scaler = FunctionScaler::new(
        provider.clone(),
        slow_polling()
            .to_builder()
            .cache_ttl(Duration::ZERO)
            .build(),
    );
    push_releases_at_once(scaler, provider).await;
}

#[tokio::test(start_paused = true)]
async fn a_push_releases_waiters_with_the_cache_disabled_by_capacity() {
    let provider = echo_provider();
    let scaler = FunctionScaler::new(
        provider.clone(),
        slow_polling().to_builder().cache_capacity(0).build(),
    );
    push_releases_at_once(scaler, provider).await;
}

/// A custom cacher that keeps nothing.
struct Forgetful;

impl FunctionCacher for Forgetful {
    fn get(&self, _: FunctionRef<'_>) -> Option<ServiceQueryResponse> {
        None
    }
    fn set(&self, _: &FunctionId, _: ServiceQueryResponse) {}
    fn invalidate(&self, _: FunctionRef<'_>) {}
}

#[tokio::test(start_paused = true)]
async fn a_push_releases_waiters_with_a_cacher_that_stores_nothing() {
    let provider = echo_provider();
    let scaler = FunctionScaler::builder(provider.clone())
        .config(slow_polling())
        .cache(Forgetful)
        .build();
    push_releases_at_once(scaler, provider).await;
}

#[tokio::test(start_paused = true)]
async fn a_notifier_made_before_the_scaler_reaches_it() {
    let notifier = ReadinessNotifier::new();
    assert!(!notifier.is_attached());
    let provider = echo_provider();
    provider.push_readiness_to(notifier.clone());
    let scaler = FunctionScaler::builder(provider.clone())
        .config(slow_polling())
        .readiness_notifier(notifier.clone())
        .build();
    assert!(notifier.is_attached());
    let started = Instant::now();
    scaler.scale(&id("echo")).await.unwrap();
    assert_eq!(started.elapsed(), ms(250), "released by the push");
    drop(scaler);
    assert!(!notifier.is_attached(), "no strong reference kept");
    notifier.notify(&id("echo"), ServiceQueryResponse::new(1, 1)); // ignored, no panic
}

#[test]
#[should_panic(expected = "already attached")]
fn one_notifier_serves_one_scaler() {
    let notifier = ReadinessNotifier::new();
    let _a = FunctionScaler::builder(InMemoryProvider::new())
        .readiness_notifier(notifier.clone())
        .build();
    let _b = FunctionScaler::builder(InMemoryProvider::new())
        .readiness_notifier(notifier)
        .build();
}

#[tokio::test(start_paused = true)]
async fn a_push_while_the_scale_call_is_being_retried_releases_at_once() {
    // Our scale calls keep failing; someone else scales the function and the watch says so.
    let config = ScalingConfig::builder()
        .poll_interval(Duration::from_secs(1))
        .build();
    let h = Harness::new(config).with_function("echo", FakeFunction::new());
    h.provider.fail_set(
        tower_scale_from_zero::testing::Fault::Error(tower_scale_from_zero::QueryError::provider(
            "conflict",
        )),
        usize::MAX,
    );
    let notifier = h.scaler.readiness_notifier();
    let started = Instant::now();
    let held = tokio::spawn(h.get("/function/echo"));
    tokio::time::sleep(ms(150)).await;
    notifier.notify(&id("echo"), ServiceQueryResponse::new(1, 1));
    assert_eq!(held.await.unwrap().status, 200);
    assert_eq!(
        started.elapsed(),
        ms(150),
        "released by the push, not a later poll"
    );
    assert_eq!(
        h.provider.set_calls(),
        1,
        "no further scale call after the push"
    );
}
