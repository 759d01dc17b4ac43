//! Paced release (docs/behaviour.md §12): the requests held through a cold start reach a fresh replica
//! in a slow start that follows its responses, not all at once.

use std::time::Duration;

use http::{Request, StatusCode};
use tower::{Layer, ServiceExt};
use tower_scale_from_zero::middleware::PacedRelease;
use tower_scale_from_zero::testing::{FakeFunction, InMemoryProvider};
use tower_scale_from_zero::{FunctionScaler, ScaleFromZeroLayer, ScalingConfig};

use crate::support::fragile::Fragile;
use crate::support::harness::{id, ms};

#[derive(Debug)]
struct Outcome {
    ok: usize,
    unavailable: usize,
    timed_out: usize,
    peak: usize,
    forwarded: usize,
    last_answer: Duration,
}

/// `held` requests for a function that starts in 500 ms and then serves 8 at a time, 20 ms
/// each, refusing beyond 64 in flight; released at once or paced.
async fn release(held: usize, pacing: Option<PacedRelease>, deadline: Duration) -> Outcome {
    release_to(held, pacing, deadline, Fragile::new(8, ms(20), 64)).await
}

async fn release_to(
    held: usize,
    pacing: Option<PacedRelease>,
    deadline: Duration,
    function: Fragile,
) -> Outcome {
    let provider = InMemoryProvider::new();
    provider.add_function(&id("f"), FakeFunction::new().startup_delay(ms(500)));
    let config = ScalingConfig::builder()
        .readiness_deadline(deadline)
        .build();
    let scaler = FunctionScaler::new(provider, config);
    let mut layer = ScaleFromZeroLayer::new(scaler);
    if let Some(pacing) = pacing {
        layer = layer.paced_release(pacing);
    }
    let service = layer.layer(function.clone());
    let started = tokio::time::Instant::now();
    let requests: Vec<_> = (0..held)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move {
                let req = Request::get("/function/f").body(String::new()).unwrap();
                let status = service.oneshot(req).await.unwrap().status();
                (status, started.elapsed())
            })
        })
        .collect();
    let mut outcome = Outcome {
        ok: 0,
        unavailable: 0,
        timed_out: 0,
        peak: 0,
        forwarded: 0,
        last_answer: Duration::ZERO,
    };
    for request in requests {
        let (status, at) = request.await.unwrap();
        match status {
            StatusCode::OK => outcome.ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => outcome.unavailable += 1,
            StatusCode::GATEWAY_TIMEOUT => outcome.timed_out += 1,
            other => panic!("unexpected {other}"),
        }
        outcome.last_answer = outcome.last_answer.max(at);
    }
    outcome.peak = function.peak();
    outcome.forwarded = function.served() + function.refused();
    outcome
}

#[tokio::test(start_paused = true)]
async fn paced_release_serves_two_thousand_held_requests_without_overloading_a_fresh_replica() {
    let deadline = Duration::from_secs(120);
    // Released at once, the fresh replica refuses all but 64 of them.
    let at_once = release(2_000, None, deadline).await;
    assert_eq!(at_once.ok, 64, "{at_once:?}");
    assert_eq!(at_once.unavailable, 1_936);

    let paced = release(2_000, Some(PacedRelease::new()), deadline).await;
    assert_eq!(paced.ok, 2_000, "{paced:?}");
    assert_eq!(paced.unavailable, 0);
    assert!(paced.peak <= 64, "in flight at most 64: {paced:?}");
    assert_eq!(paced.forwarded, 2_000, "each forwarded once");
    // The replica's own pace is 8 per 20 ms: 5 s for 2 000, after the 500 ms start.
    assert!(
        paced.last_answer < Duration::from_secs(8),
        "drained close to the replica's own pace: {paced:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn paced_release_is_off_unless_asked_for() {
    let at_once = release(200, None, Duration::from_secs(60)).await;
    assert_eq!(
        at_once.unavailable, 136,
        "all released together: {at_once:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_paced_request_still_waiting_at_its_deadline_gets_504_and_is_never_forwarded() {
    // One worker, 1 s per request: with a 3 s deadline (500 ms of it the cold start), only a
    // few of the 40 held requests can be served; the rest must not be sent late.
    let function = Fragile::new(1, Duration::from_secs(1), 1_000);
    let paced = release_to(
        40,
        Some(PacedRelease::new()),
        Duration::from_secs(3),
        function,
    )
    .await;
    assert!(paced.timed_out > 0, "{paced:?}");
    assert_eq!(paced.ok + paced.timed_out, 40, "{paced:?}");
    assert_eq!(
        paced.forwarded, paced.ok,
        "no request was forwarded after its deadline"
    );
    assert_eq!(paced.unavailable, 0);
}

#[tokio::test(start_paused = true)]
async fn a_window_grows_while_responses_stay_fast_so_a_roomy_replica_drains_quickly() {
    // A replica with room for all of them (1 000 workers): the window doubles every 20 ms round
    // trip, so 2 000 requests drain in a handful of round trips, not at 4 per round trip.
    let function = Fragile::new(1_000, ms(20), 10_000);
    let paced = release_to(
        2_000,
        Some(PacedRelease::new()),
        Duration::from_secs(60),
        function,
    )
    .await;
    assert_eq!(paced.ok, 2_000);
    assert!(
        paced.last_answer < ms(500 + 20 * 12),
        "a dozen round trips at most: {paced:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn paced_requests_count_under_the_hold_limits_until_forwarded() {
    let provider = InMemoryProvider::new();
    provider.add_function(&id("f"), FakeFunction::new().startup_delay(ms(500)));
    let scaler = FunctionScaler::new(provider, ScalingConfig::default());
    let layer = ScaleFromZeroLayer::new(scaler.clone())
        .paced_release(PacedRelease::new().initial_per_replica(1));
    // One worker, 200 ms a request: the window lets one through at a time at first.
    let function = Fragile::new(1, ms(200), 1_000);
    let service = layer.layer(function.clone());
    let requests: Vec<_> = (0..10)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move {
                let req = Request::get("/function/f").body(String::new()).unwrap();
                service.oneshot(req).await.unwrap().status()
            })
        })
        .collect();
    tokio::time::sleep(ms(100)).await;
    assert_eq!(scaler.stats().held, 10, "held through the cold start");
    tokio::time::sleep(ms(500)).await;
    let held = scaler.stats().held;
    assert!(
        (1..10).contains(&held),
        "the ones still waiting for the window are held: {held}"
    );
    for request in requests {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(scaler.stats().held, 0, "and given back once forwarded");
}
