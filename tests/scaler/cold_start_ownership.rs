//! Cold starts belong to the scaler (docs/behaviour.md §13): once begun, a cold start runs to
//! its own outcome whatever its requests do, a scale-up the platform undid is sent again, a
//! drain keeps the cold starts of requests that were already waiting, and what the scaler
//! must remember is never evicted to make room. Paused time throughout.

use crate::support::harness as common;

use std::sync::Arc;

use async_trait::async_trait;
use common::{id, ms, secs, settle, Harness};
use tokio::time::Instant;
use tower_scale_from_zero::scaler::Phase;
use tower_scale_from_zero::testing::{FakeFunction, Fault, InMemoryProvider};
use tower_scale_from_zero::{
    FunctionId, FunctionScaler, IdlePolicy, QueryError, ScalingConfig, ServiceQuery,
    ServiceQueryResponse,
};

#[tokio::test(start_paused = true)]
async fn a_cold_start_runs_to_its_end_when_its_only_request_leaves_before_the_first_read() {
    let provider = Arc::new(InMemoryProvider::new());
    provider.add_function(&id("f"), FakeFunction::new().startup_delay(secs(2)));
    // Every call takes 1.5 s: the request leaves while the first read is still out.
    provider.call_latency(ms(1_500));
    let scaler = FunctionScaler::new(provider.clone(), ScalingConfig::default());
    let left = tokio::time::timeout(ms(1_000), scaler.scale(&id("f"))).await;
    assert!(
        left.is_err(),
        "the request left before its function was ready"
    );

    tokio::time::sleep(secs(10)).await;
    assert_eq!(provider.set_calls(), 1, "the cold start sent its scale-up");
    assert_eq!(provider.desired_replicas(&id("f")), Some(1));
    let stats = scaler.stats();
    assert_eq!(stats.function(&id("f")).phase, Some(Phase::Warm));
    assert_eq!(stats.flights, 0, "and then ended");
}

#[tokio::test(start_paused = true)]
async fn a_cold_start_whose_requests_all_left_ends_at_the_last_ones_deadline() {
    let h = Harness::new(
        ScalingConfig::builder()
            .readiness_deadline(secs(10))
            .build(),
    )
    .with_function("never", FakeFunction::new().never_ready());
    let request = tokio::spawn(h.get("/function/never"));
    tokio::time::sleep(secs(1)).await;
    request.abort();
    let _ = request.await;
    tokio::time::sleep(secs(5)).await;
    assert_eq!(h.scaler.stats().flights, 1, "still starting the function");
    tokio::time::sleep(secs(6)).await;
    assert_eq!(
        h.scaler.stats().flights,
        0,
        "nobody waits past the deadline of the last request: the cold start ends"
    );
    assert_eq!(h.provider.set_calls(), 1);
}

/// A platform on which someone (an operator, a GitOps sync) sets the replicas back to 0 right
/// after each of the first `undo` scale-ups.
struct Undone {
    platform: Arc<InMemoryProvider>,
    spec: FakeFunction,
    undo: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl ServiceQuery for Undone {
    async fn get_replicas(
        &self,
        function: &FunctionId,
    ) -> Result<ServiceQueryResponse, QueryError> {
        self.platform.get_replicas(function).await
    }

    async fn set_replicas(&self, function: &FunctionId, replicas: u64) -> Result<(), QueryError> {
        self.platform.set_replicas(function, replicas).await?;
        let undo = &self.undo;
        if undo
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok()
        {
            // Back to zero, a new cold period: the write is gone.
            self.platform.add_function(function, self.spec.clone());
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn an_undone_scale_up_is_sent_again_within_a_deadline_under_steady_traffic() {
    let platform = Arc::new(InMemoryProvider::new());
    let spec = FakeFunction::new().startup_delay(secs(1));
    platform.add_function(&id("f"), spec.clone());
    let provider = Undone {
        platform: platform.clone(),
        spec,
        undo: std::sync::atomic::AtomicUsize::new(1),
    };
    let deadline = secs(20);
    let scaler = FunctionScaler::new(
        provider,
        ScalingConfig::builder()
            .readiness_deadline(deadline)
            .build(),
    );
    // A request every 0.5 s, so that the flight never runs out of requests.
    let started = Instant::now();
    let mut requests = Vec::new();
    while started.elapsed() < secs(50) {
        let scaler = scaler.clone();
        requests.push(tokio::spawn(async move {
            let arrived = Instant::now();
            scaler.scale(&id("f")).await.map(|_| arrived.elapsed())
        }));
        tokio::time::sleep(ms(500)).await;
    }
    assert_eq!(
        platform.set_calls(),
        2,
        "the undone scale-up was sent again, once"
    );
    let mut served_after = Vec::new();
    for request in requests {
        if let Ok(waited) = request.await.unwrap() {
            served_after.push(waited);
        }
    }
    assert!(
        !served_after.is_empty(),
        "requests are served once the second scale-up takes"
    );
    assert_eq!(
        platform.desired_replicas(&id("f")),
        Some(1),
        "the function ends up scaled"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_whose_relied_on_scale_write_failed_gets_its_own() {
    let h = Harness::new(ScalingConfig::default())
        .with_function("f", FakeFunction::new().startup_delay(secs(1)));
    // The first write takes 2 s and then fails.
    h.provider.set_latency(secs(2));
    h.provider
        .fail_set(Fault::Error(QueryError::provider("write lost")), 1);
    let first = tokio::spawn(h.get("/function/f"));
    tokio::time::sleep(ms(500)).await;
    // Its client goes away while the write is out.
    first.abort();
    let _ = first.await;
    tokio::time::sleep(ms(500)).await;
    let started = Instant::now();
    let second = h.get("/function/f").await;
    assert_eq!(second.status, 200);
    assert!(
        started.elapsed() < secs(10),
        "served within seconds, not at the deadline: {:?}",
        started.elapsed()
    );
    assert_eq!(h.provider.set_calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_request_waiting_when_a_drain_began_keeps_its_cold_start() {
    let h = Harness::new(ScalingConfig::default())
        .with_function("f", FakeFunction::new().startup_delay(ms(500)));
    // The first read answers after 1 s: the drain begins while it is out.
    h.provider.call_latency(secs(1));
    let request = tokio::spawn(h.get("/function/f"));
    tokio::time::sleep(ms(300)).await;
    let drain = tokio::spawn({
        let scaler = h.scaler.clone();
        async move { scaler.drain(secs(30)).await }
    });
    let reply = request.await.unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(h.provider.set_calls(), 1);
    assert_eq!(drain.await.unwrap().cut_short, 0);
}

#[tokio::test(start_paused = true)]
async fn a_warm_function_is_served_after_the_drain_budget_ran_out() {
    let h = Harness::new(ScalingConfig::default())
        .with_function("warm", FakeFunction::new().running(1))
        .with_function("never", FakeFunction::new().never_ready());
    assert_eq!(h.get("/function/warm").await.status, 200);
    let held = tokio::spawn(h.get("/function/never"));
    tokio::time::sleep(ms(10)).await;
    let drained = h.scaler.drain(secs(1)).await;
    assert_eq!(drained.cut_short, 1);
    assert_eq!(held.await.unwrap().status, 503);
    // The warm function's cache entry has expired by now: its refresh is served.
    h.provider.call_latency(ms(50));
    let reply = h.get("/function/warm").await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[tokio::test(start_paused = true)]
async fn every_idle_opted_in_function_is_scaled_to_zero_however_many_there_are() {
    let provider = Arc::new(InMemoryProvider::new());
    let names: Vec<String> = (0..1_100).map(|n| format!("f{n}")).collect();
    for name in &names {
        provider.add_function(
            &id(name),
            FakeFunction::new()
                .running(1)
                .scale_to_zero(IdlePolicy::After(secs(60))),
        );
    }
    let scaler = FunctionScaler::new(
        provider.clone(),
        ScalingConfig::builder()
            .scale_to_zero(true)
            .idle_check_interval(secs(5))
            // The scaler keeps at most 1 000 records of functions that need nothing.
            .cache_capacity(100)
            .build(),
    );
    for name in &names {
        scaler.scale(&id(name)).await.unwrap();
    }
    tokio::time::sleep(secs(120)).await;
    settle().await;
    assert_eq!(provider.scale_downs(), names.len());
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_scale_down_is_treated_as_may_have_happened() {
    let h = Harness::new(
        ScalingConfig::builder()
            .scale_to_zero(true)
            .idle_check_interval(secs(1))
            .call_timeout(secs(2))
            .max_scale_attempts(2)
            .build(),
    )
    .with_function(
        "f",
        FakeFunction::new()
            .running(1)
            .scale_to_zero(IdlePolicy::After(secs(10))),
    );
    assert_eq!(h.get("/function/f").await.status, 200);
    assert_eq!(h.inner_calls(), 1);
    // The scale-down's writes hang past the call timeout: each may have reached the platform.
    h.provider.fail_set(Fault::Hang, usize::MAX);
    tokio::time::sleep(secs(15)).await;
    settle().await;
    assert!(h.provider.set_calls() >= 1, "the scale-down was tried");
    // The platform scaled it down after all, and the provider fails from here on: the last
    // known "ready" must not send a request to zero replicas.
    h.provider.add_function(
        &id("f"),
        FakeFunction::new().scale_to_zero(IdlePolicy::After(secs(10))),
    );
    h.provider.fail_get(
        Fault::Error(QueryError::provider("unreachable")),
        usize::MAX,
    );
    h.provider.fail_set(
        Fault::Error(QueryError::provider("unreachable")),
        usize::MAX,
    );
    let reply = h.get("/function/f").await;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert_eq!(h.inner_calls(), 1, "never forwarded on the old state");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_scaler_stops_its_cold_starts() {
    let provider = Arc::new(InMemoryProvider::new());
    provider.add_function(&id("f"), FakeFunction::new().never_ready());
    let scaler = FunctionScaler::new(provider.clone(), ScalingConfig::default());
    let left = tokio::time::timeout(ms(500), scaler.scale(&id("f"))).await;
    assert!(left.is_err(), "still starting");
    drop(scaler);
    settle().await;
    let calls = provider.get_calls();
    tokio::time::sleep(secs(30)).await;
    assert_eq!(
        provider.get_calls(),
        calls,
        "no provider call once the scaler is gone"
    );
}

#[tokio::test(start_paused = true)]
async fn a_scale_up_seen_and_then_read_as_zero_again_is_not_sent_twice_within_a_deadline() {
    // Reads that flap (several caches behind the provider): desired 1, then 0 again, while
    // the replica starts. One write for the whole cold start.
    let h = Harness::new(ScalingConfig::default())
        .with_function("f", FakeFunction::new().startup_delay(secs(3)));
    let request = tokio::spawn(h.get("/function/f"));
    tokio::time::sleep(ms(350)).await;
    assert_eq!(h.provider.set_calls(), 1);
    // A stale cache answers "desired 0" for the next reads.
    h.provider
        .add_function(&id("f"), FakeFunction::new().startup_delay(secs(3)));
    tokio::time::sleep(secs(5)).await;
    assert_eq!(
        h.provider.set_calls(),
        1,
        "not sent again within a readiness deadline of the last write"
    );
    request.abort();
}
