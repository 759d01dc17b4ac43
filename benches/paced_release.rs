//! Released at once versus paced (docs/behaviour.md §12): 2 000 requests held through a 500 ms cold
//! start of a function that serves 8 requests at a time, 20 ms each, and answers 503 beyond
//! 64 in flight. Real time; rounds alternate; per mode: requests failed, p50 and p99 of the
//! time from arrival to response, and the time until the last response (the drain).
//!
//! `cargo bench --features test-util --bench paced_release`

#[path = "../tests/support/fragile.rs"]
mod fragile;

use std::time::Duration;

use http::{Request, StatusCode};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};
use tower_scale_from_zero::middleware::PacedRelease;
use tower_scale_from_zero::testing::{FakeFunction, InMemoryProvider};
use tower_scale_from_zero::{FunctionId, FunctionScaler, ScaleFromZeroLayer, ScalingConfig};

use fragile::Fragile;

const HELD: usize = 2_000;
const ROUNDS: usize = 3;

struct Round {
    failed: usize,
    p50: Duration,
    p99: Duration,
    drain: Duration,
    peak: usize,
}

async fn round(pacing: Option<PacedRelease>) -> Round {
    let provider = InMemoryProvider::new();
    let id = FunctionId::new("f", "fn").unwrap();
    provider.add_function(
        &id,
        FakeFunction::new().startup_delay(Duration::from_millis(500)),
    );
    let scaler = FunctionScaler::new(provider, ScalingConfig::default());
    let mut layer = ScaleFromZeroLayer::new(scaler);
    if let Some(pacing) = pacing {
        layer = layer.paced_release(pacing);
    }
    let function = Fragile::new(8, Duration::from_millis(20), 64);
    let service = layer.layer(function.clone());
    let started = Instant::now();
    let requests: Vec<_> = (0..HELD)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move {
                let req = Request::get("/function/f.fn").body(String::new()).unwrap();
                let status = service.oneshot(req).await.unwrap().status();
                (status, started.elapsed())
            })
        })
        .collect();
    let mut times = Vec::with_capacity(HELD);
    let mut failed = 0;
    for request in requests {
        let (status, at) = request.await.unwrap();
        if status != StatusCode::OK {
            failed += 1;
        }
        times.push(at);
    }
    times.sort();
    Round {
        failed,
        p50: times[HELD / 2],
        p99: times[HELD * 99 / 100],
        drain: times[HELD - 1],
        peak: function.peak(),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run either way.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut at_once = Vec::new();
        let mut paced = Vec::new();
        for _ in 0..ROUNDS {
            at_once.push(round(None).await);
            paced.push(round(Some(PacedRelease::new())).await);
        }
        println!(
            "{HELD} held through a 500 ms cold start; the function serves 8 at a time, 20 ms each, 503 beyond 64 in flight; {ROUNDS} rounds alternating, medians:"
        );
        for (name, rounds) in [("released at once", at_once), ("paced", paced)] {
            let failed: Vec<usize> = rounds.iter().map(|r| r.failed).collect();
            let peak: Vec<usize> = rounds.iter().map(|r| r.peak).collect();
            println!(
                "  {name:<16} failed {failed:?}, in flight at most {peak:?}, p50 {:?}, p99 {:?}, drained after {:?}",
                median(rounds.iter().map(|r| r.p50).collect()),
                median(rounds.iter().map(|r| r.p99).collect()),
                median(rounds.iter().map(|r| r.drain).collect()),
            );
        }
    });
}
