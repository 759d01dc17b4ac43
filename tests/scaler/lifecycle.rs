//! The life of a function (docs/behaviour.md §11): one test per behaviour, the first thirteen and the
//! outage test written before the lifecycle rework (each failed on 22c554d); then the phases
//! as `stats()` shows them. Paused time throughout, except where a real runtime shuts down.

use crate::support::harness as common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{id, ms, secs, settle, Harness, NS};
use tower_scale_from_zero::activity::ActivityStore;
use tower_scale_from_zero::testing::{FakeFunction, Fault, InMemoryProvider};
use tower_scale_from_zero::{
    FunctionId, FunctionScaler, IdlePolicy, QueryError, ScalingConfig, ServiceQueryResponse,
};

#[tokio::test(start_paused = true)]
async fn a_push_releases_held_requests_within_1ms_while_the_flight_waits_on_a_slow_provider_call() {
    let h = Harness::new(ScalingConfig::builder().call_timeout(secs(5)).build())
        .with_function("slow", FakeFunction::new().startup_delay(secs(30)));
    let request = tokio::spawn(h.get("/function/slow"));
    // The cold start reads, scales and reads once more; then every read hangs.
    settle().await;
    assert_eq!(h.provider.successful_sets(), 1);
    h.provider.fail_get(Fault::Hang, usize::MAX);
    tokio::time::advance(ms(150)).await;
    settle().await;
    assert_eq!(h.scaler.stats().provider_calls, 1, "a read hangs");

    h.scaler
        .readiness_notifier()
        .notify(&id("slow"), ServiceQueryResponse::new(1, 1));
    let reply = tokio::time::timeout(ms(1), request)
        .await
        .expect("released within 1 ms of the push")
        .unwrap();
    assert_eq!(reply.status, 200);
}

#[tokio::test(start_paused = true)]
async fn a_push_releases_held_requests_within_1ms_while_the_flight_is_queued_behind_the_call_cap() {
    let h = Harness::new(
        ScalingConfig::builder()
            .max_provider_calls(1)
            .call_timeout(secs(5))
            .build(),
    )
    .with_function("queued", FakeFunction::new().startup_delay(secs(30)))
    .with_function("other", FakeFunction::new());
    let request = tokio::spawn(h.get("/function/queued"));
    settle().await;
    assert_eq!(h.provider.successful_sets(), 1);
    // Another function's read takes the only place and hangs: the next poll of `queued` waits
    // behind it.
    h.provider.fail_get(Fault::Hang, 1);
    let other = tokio::spawn(h.get("/function/other"));
    tokio::time::advance(ms(150)).await;
    settle().await;
    assert_eq!(h.scaler.stats().provider_calls, 1);

    h.scaler
        .readiness_notifier()
        .notify(&id("queued"), ServiceQueryResponse::new(1, 1));
    let reply = tokio::time::timeout(ms(1), request)
        .await
        .expect("released within 1 ms of the push")
        .unwrap();
    assert_eq!(reply.status, 200);
    other.abort();
}

#[tokio::test(start_paused = true)]
async fn while_draining_a_warm_function_is_served_after_its_cache_entry_expires() {
    let h = Harness::new(ScalingConfig::default())
        .with_function("warm", FakeFunction::new().running(1));
    assert_eq!(h.get("/function/warm").await.status, 200);
    let scaler = h.scaler.clone();
    let drain = tokio::spawn(async move { scaler.drain(secs(30)).await });
    settle().await;
    tokio::time::advance(secs(1)).await;
    assert!(!h.scaler.stats().function(&id("warm")).warm, "expired");
    let reply = h.get("/function/warm").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // A cold function is still refused.
    h.provider.add_function(&id("cold"), FakeFunction::new());
    assert_eq!(h.get("/function/cold").await.status, 503);
    assert_eq!(h.provider.set_calls(), 0);
    drain.await.unwrap();
}

fn scale_to_zero(config: ScalingConfig) -> ScalingConfig {
    config
        .to_builder()
        .scale_to_zero(true)
        .idle_check_interval(secs(1))
        .build()
}

#[tokio::test(start_paused = true)]
async fn requests_arriving_during_a_scale_down_get_their_own_deadline() {
    let h = Harness::new(scale_to_zero(
        ScalingConfig::builder()
            .readiness_deadline(secs(2))
            .call_timeout(secs(60))
            .build(),
    ))
    .with_function(
        "f",
        FakeFunction::new()
            .running(1)
            .scale_to_zero(IdlePolicy::After(secs(10))),
    );
    assert_eq!(h.get("/function/f").await.status, 200);
    // The platform takes 30 s to answer the scale-down.
    h.provider.set_latency(secs(30));
    tokio::time::sleep(secs(12)).await;
    assert_eq!(h.provider.set_calls(), 1, "the scale-down is under way");
    let started = tokio::time::Instant::now();
    let reply = h.get("/function/f").await;
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert!(
        started.elapsed() <= secs(2) + ms(10),
        "answered at its own deadline, not after the scale-down: {:?}",
        started.elapsed()
    );
}

/// An activity store whose look-ups take `latency` and always find recent activity.
struct SlowBusyStore {
    latency: Duration,
}

#[async_trait]
impl ActivityStore for SlowBusyStore {
    async fn record(&self, _: &FunctionId) -> Result<(), QueryError> {
        Ok(())
    }
    async fn idle_for(&self, _: &FunctionId) -> Result<Option<Duration>, QueryError> {
        tokio::time::sleep(self.latency).await;
        Ok(Some(Duration::ZERO))
    }
}

#[tokio::test(start_paused = true)]
async fn a_vetoed_scale_down_holds_no_request() {
    let provider = Arc::new(InMemoryProvider::new());
    provider.add_function(
        &id("f"),
        FakeFunction::new()
            .running(1)
            .scale_to_zero(IdlePolicy::After(secs(10))),
    );
    let scaler = FunctionScaler::builder(provider.clone())
        .config(scale_to_zero(ScalingConfig::default()))
        .activity_store(SlowBusyStore { latency: secs(3) })
        .build();
    let gateway = tower::Layer::layer(
        &tower_scale_from_zero::ScaleFromZeroLayer::new(scaler.clone()),
        common::Echo::default(),
    );
    let get = || {
        let req = http::Request::get("/function/f")
            .body(String::new())
            .unwrap();
        tower::ServiceExt::oneshot(gateway.clone(), req)
    };
    assert_eq!(get().await.unwrap().status(), 200);
    // The reaper consults the store (3 s) before deciding: a request meanwhile passes at once.
    tokio::time::sleep(secs(11) + ms(500)).await;
    let started = tokio::time::Instant::now();
    assert_eq!(get().await.unwrap().status(), 200);
    assert!(
        started.elapsed() < ms(1),
        "held for {:?} by a scale-down that was vetoed",
        started.elapsed()
    );
    assert_eq!(provider.scale_downs(), 0);
}

/// An activity store that counts its calls; `record` fails, or panics the first time.
#[derive(Default)]
struct FaultyStore {
    records: AtomicUsize,
    panic_first: bool,
}

#[async_trait]
impl ActivityStore for FaultyStore {
    async fn record(&self, _: &FunctionId) -> Result<(), QueryError> {
        let n = self.records.fetch_add(1, Ordering::SeqCst);
        if self.panic_first {
            if n == 0 {
                panic!("injected panic in record");
            }
            return Ok(());
        }
        Err(QueryError::provider("store down"))
    }
    async fn idle_for(&self, _: &FunctionId) -> Result<Option<Duration>, QueryError> {
        Ok(None)
    }
}

async fn record_calls_over_a_minute_of_traffic(store: Arc<FaultyStore>) -> usize {
    let provider = Arc::new(InMemoryProvider::new());
    provider.add_function(
        &id("f"),
        FakeFunction::new()
            .running(1)
            .scale_to_zero(IdlePolicy::After(secs(40))),
    );
    let scaler = FunctionScaler::builder(provider.clone())
        .config(scale_to_zero(ScalingConfig::default()))
        .activity_store(store.clone())
        .build();
    let f = id("f");
    // A request every 100 ms for a minute: recording is due every 10 s (a quarter of 40 s).
    for _ in 0..600 {
        scaler.scale(&f).await.unwrap();
        settle().await;
        tokio::time::sleep(ms(100)).await;
    }
    store.records.load(Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn activity_record_failures_back_off() {
    let calls = record_calls_over_a_minute_of_traffic(Arc::new(FaultyStore::default())).await;
    // Backing off from the poll interval to at most the recording period: far fewer calls
    // than the 600 requests, and more than one.
    assert!(
        (2..=40).contains(&calls),
        "{calls} record calls in a minute"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_activity_record_does_not_stop_later_ones() {
    let calls = record_calls_over_a_minute_of_traffic(Arc::new(FaultyStore {
        panic_first: true,
        ..FaultyStore::default()
    }))
    .await;
    // The panic, then one success per 10 s.
    assert!(calls >= 5, "{calls} record calls in a minute");
}

#[tokio::test(start_paused = true)]
async fn a_pushed_idle_policy_replaces_the_old_one_at_once() {
    let h = Harness::new(scale_to_zero(ScalingConfig::default())).with_function(
        "f",
        FakeFunction::new()
            .running(1)
            .scale_to_zero(IdlePolicy::After(secs(10))),
    );
    assert_eq!(h.get("/function/f").await.status, 200);
    // The function opts out while idle.
    h.scaler.readiness_notifier().notify(
        &id("f"),
        ServiceQueryResponse::new(1, 1).scale_to_zero(IdlePolicy::Never),
    );
    tokio::time::sleep(secs(60)).await;
    assert_eq!(h.provider.scale_downs(), 0);
    assert_eq!(h.provider.set_calls(), 0);
}

#[test]
fn the_idle_reaper_restarts_on_the_current_runtime_when_its_own_is_gone() {
    let provider = Arc::new(InMemoryProvider::new());
    provider.add_function(
        &id("f"),
        FakeFunction::new()
            .running(1)
            .scale_to_zero(IdlePolicy::After(secs(10))),
    );
    let scaler = FunctionScaler::new(provider.clone(), scale_to_zero(ScalingConfig::default()));
    let f = id("f");
    // The first runtime serves the function (and starts the reaper), then shuts down.
    common::paused_runtime().block_on(async {
        scaler.scale(&f).await.unwrap();
    });
    // The next one serves it too; once it is idle, it is scaled down.
    common::paused_runtime().block_on(async {
        scaler.scale(&f).await.unwrap();
        tokio::time::sleep(secs(30)).await;
    });
    assert_eq!(provider.scale_downs(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_deleted_function_gets_at_most_one_failing_scale_down_ever() {
    let h = Harness::new(scale_to_zero(ScalingConfig::default())).with_function(
        "f",
        FakeFunction::new()
            .running(1)
            .scale_to_zero(IdlePolicy::After(secs(10))),
    );
    assert_eq!(h.get("/function/f").await.status, 200);
    h.provider.remove_function(&id("f"));
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(
        h.provider.set_calls() <= 1,
        "{} scale-downs of a deleted function",
        h.provider.set_calls()
    );
}

#[tokio::test(start_paused = true)]
async fn a_function_read_as_gone_is_never_scaled_down() {
    let h = Harness::new(scale_to_zero(ScalingConfig::default())).with_function(
        "f",
        FakeFunction::new()
            .running(1)
            .scale_to_zero(IdlePolicy::After(secs(10))),
    );
    assert_eq!(h.get("/function/f").await.status, 200);
    h.provider.remove_function(&id("f"));
    tokio::time::sleep(ms(300)).await;
    assert_eq!(h.get("/function/f").await.status, 404);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(h.provider.set_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_name_becomes_a_label_only_once_the_provider_confirmed_it_also_during_an_outage() {
    use metrics_util::debugging::DebuggingRecorder;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let h = Harness::new(
        ScalingConfig::builder()
            .call_timeout(ms(500))
            .max_scale_attempts(6)
            .build(),
    );
    // Retryable failures and timeouts, then "not found".
    h.provider
        .fail_get(Fault::Error(QueryError::provider("down")), 2);
    let first = tokio::spawn(h.get("/function/ghost"));
    settle().await;
    tokio::time::sleep(ms(450)).await;
    h.provider.fail_get(Fault::Hang, 2);
    let status = first.await.unwrap().status;
    assert_eq!(status, 404);
    let labelled: Vec<String> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().labels().any(|l| l.value().contains("ghost")))
        .map(|(key, ..)| format!("{key:?}"))
        .collect();
    assert!(labelled.is_empty(), "labelled: {labelled:?}");
}

#[test]
fn no_request_hangs_on_a_runtime_that_is_shutting_down() {
    let provider = Arc::new(InMemoryProvider::new());
    provider.add_function(&id("f"), FakeFunction::new());
    let scaler = FunctionScaler::new(provider, ScalingConfig::default());
    let gone = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = gone.handle().clone();
    drop(gone);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _entered = handle.enter();
        let answer = futures::executor::block_on(scaler.scale(&id("f")));
        let _ = tx.send(answer.map(|_| ()).map_err(|e| e.status()));
    });
    let answer = rx
        .recv_timeout(Duration::from_secs(1))
        .expect("answered within 1 s");
    assert_eq!(answer, Err(http::StatusCode::SERVICE_UNAVAILABLE));
    let _ = NS;
}

#[tokio::test(start_paused = true)]
async fn a_warm_function_is_served_from_its_last_known_state_through_a_five_minute_outage() {
    let h = Harness::new(ScalingConfig::default())
        .with_function("warm", FakeFunction::new().running(1));
    assert_eq!(h.get("/function/warm").await.status, 200);
    // From now on every provider call fails, for five minutes.
    h.provider.fail_get(
        Fault::Error(QueryError::provider("unreachable")),
        usize::MAX,
    );
    let outage = tokio::time::Instant::now();
    let gets_before = h.provider.get_calls();
    let mut served: u32 = 0;
    while outage.elapsed() < Duration::from_secs(299) {
        tokio::time::sleep(secs(1)).await;
        let reply = h.get("/function/warm").await;
        assert_eq!(
            reply.status,
            200,
            "after {:?} of outage: {}",
            outage.elapsed(),
            reply.body
        );
        served += 1;
    }
    assert!(served >= 298);
    // Refreshes back off (100 ms doubling to 2 s, jittered): a request finds its refresh due
    // only every second or two, so the provider sees far fewer calls than requests.
    let calls = h.provider.get_calls() - gets_before;
    assert!(
        (150..=served as usize * 3 / 4).contains(&calls),
        "{calls} provider calls for {served} requests in five minutes"
    );
    // Past five minutes the last known state is too old: 502 after the retry budget.
    tokio::time::sleep(secs(5)).await;
    let reply = h.get("/function/warm").await;
    assert_eq!(reply.status, 502, "{}", reply.body);
}

#[tokio::test(start_paused = true)]
async fn stats_show_each_phase_of_a_functions_life() {
    use tower_scale_from_zero::scaler::Phase;
    let h = Harness::new(scale_to_zero(ScalingConfig::default())).with_function(
        "f",
        FakeFunction::new()
            .startup_delay(secs(1))
            .scale_to_zero(IdlePolicy::After(secs(10))),
    );
    let f = id("f");
    let phase = |h: &Harness| h.scaler.stats().function(&f).phase;
    assert_eq!(phase(&h), None, "unknown");
    let request = tokio::spawn(h.get("/function/f"));
    settle().await;
    assert_eq!(phase(&h), Some(Phase::ScalingUp), "scale-up sent");
    assert_eq!(h.scaler.stats().function(&f).held, 1);
    assert_eq!(request.await.unwrap().status, 200);
    assert_eq!(phase(&h), Some(Phase::Warm));
    // The platform takes a while to answer the scale-down: the phase shows it under way.
    h.provider.set_latency(secs(5));
    tokio::time::sleep(secs(11) + ms(500)).await;
    assert_eq!(phase(&h), Some(Phase::ScalingDown));
    tokio::time::sleep(secs(5)).await;
    assert_eq!(phase(&h), Some(Phase::ScaledDown));
    assert_eq!(h.provider.scale_downs(), 1);
    // Gone from the platform: forgotten at the next read.
    h.provider.remove_function(&f);
    assert_eq!(h.get("/function/f").await.status, 404);
    assert_eq!(phase(&h), None);
}

#[test]
fn a_scale_down_cancelled_with_its_runtime_counts_as_done() {
    use tower_scale_from_zero::scaler::Phase;
    let provider = Arc::new(InMemoryProvider::new());
    let f = id("f");
    provider.add_function(
        &f,
        FakeFunction::new()
            .running(1)
            .scale_to_zero(IdlePolicy::After(secs(10))),
    );
    let scaler = FunctionScaler::new(provider.clone(), scale_to_zero(ScalingConfig::default()));
    common::paused_runtime().block_on(async {
        scaler.scale(&f).await.unwrap();
        // The scale-down's call never answers; the runtime shuts down under it.
        provider.fail_set(Fault::Hang, 1);
        tokio::time::sleep(secs(12)).await;
        assert_eq!(scaler.stats().function(&f).phase, Some(Phase::ScalingDown));
    });
    // Nobody knows whether the platform scaled it down: its "ready" is not trusted.
    assert_eq!(scaler.stats().function(&f).phase, Some(Phase::ScaledDown));
    common::paused_runtime().block_on(async {
        let sets = provider.set_calls();
        scaler.scale(&f).await.unwrap();
        assert_eq!(
            provider.set_calls(),
            sets + 1,
            "scaled up again, to be sure"
        );
    });
}
