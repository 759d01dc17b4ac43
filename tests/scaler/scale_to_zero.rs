//! Scale to zero (opt-in): activity counts until the response body ends, idle functions go to
//! zero, and a scale-down never races a scale-up. Paused time throughout.

use crate::support::harness as common;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{id, NS};
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc;
use tokio::time::{sleep, Instant};
use tower::{Layer, ServiceExt};
use tower_scale_from_zero::testing::{FakeFunction, Fault, InMemoryProvider};
use tower_scale_from_zero::{
    FunctionScaler, IdlePolicy, QueryError, ScaleFromZeroLayer, ScalingConfig,
};

type Body = StreamBody<futures::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn config() -> ScalingConfig {
    ScalingConfig::builder()
        .scale_to_zero(true)
        .idle_check_interval(secs(1))
        .build()
}

fn idle_after(period: Duration) -> FakeFunction {
    FakeFunction::new().scale_to_zero(IdlePolicy::After(period))
}

/// A gateway whose inner service answers with a body the test ends (a stream, a long poll).
struct Streams {
    scaler: FunctionScaler,
    provider: Arc<InMemoryProvider>,
    ends: Arc<std::sync::Mutex<Vec<mpsc::Sender<Bytes>>>>,
}

impl Streams {
    fn new(config: ScalingConfig, functions: &[(&str, FakeFunction)]) -> Self {
        let provider = Arc::new(InMemoryProvider::new());
        for (name, spec) in functions {
            provider.add_function(&id(name), spec.clone());
        }
        let scaler = FunctionScaler::new(provider.clone(), config);
        provider.push_readiness_to(scaler.readiness_notifier());
        Self {
            scaler,
            provider,
            ends: Arc::default(),
        }
    }

    /// A request whose response body stays open until `end` is called (or is dropped).
    async fn open(
        &self,
        name: &str,
    ) -> (
        StatusCode,
        Option<http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>>,
    ) {
        let ends = Arc::clone(&self.ends);
        let inner = tower::service_fn(move |_: Request<String>| {
            let (tx, mut rx) = mpsc::channel::<Bytes>(1);
            ends.lock().unwrap().push(tx);
            let body: Body = StreamBody::new(
                futures::stream::poll_fn(move |cx| {
                    rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
                })
                .boxed(),
            );
            async move { Ok::<_, Infallible>(Response::new(body)) }
        });
        let service = ScaleFromZeroLayer::new(self.scaler.clone()).layer(inner);
        let req = Request::get(format!("/function/{name}"))
            .body(String::new())
            .unwrap();
        let response = service.oneshot(req).await.unwrap();
        let status = response.status();
        let body = (status == StatusCode::OK).then(|| response.into_body().boxed_unsync());
        (status, body)
    }

    /// Ends every open response stream.
    fn end_all(&self) {
        self.ends.lock().unwrap().clear();
    }
}

/// Reads a body to its end.
async fn drain(body: http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>) {
    body.collect().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_whole_cycle_has_exact_provider_calls() {
    let gw = Streams::new(config(), &[("echo", idle_after(secs(60)))]);
    let f = id("echo");

    // Cold: a read and a scale-up; the platform's push of readiness ends the cold start (no
    // read after the write); the response streams.
    let (status, body) = gw.open("echo").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((gw.provider.get_calls(), gw.provider.set_calls()), (1, 1));
    assert_eq!(gw.scaler.stats().function(&f).in_flight, 1);

    // A stream open across twice the idle period keeps the function up.
    sleep(secs(120)).await;
    assert_eq!(gw.provider.scale_downs(), 0);
    assert_eq!(gw.scaler.stats().function(&f).in_flight, 1);

    // The stream ends; 59 s later still up; after 60 s (and one check interval) down.
    gw.end_all();
    drain(body.unwrap()).await;
    assert_eq!(gw.scaler.stats().function(&f).in_flight, 0);
    sleep(secs(59)).await;
    assert_eq!(gw.provider.scale_downs(), 0);
    sleep(secs(2)).await;
    assert_eq!(gw.provider.scale_downs(), 1);
    assert_eq!(gw.provider.desired_replicas(&f), Some(0));
    // The scale-down itself reads nothing.
    assert_eq!((gw.provider.get_calls(), gw.provider.set_calls()), (1, 2));

    // The next request: a cold start again (a read, a scale-up, the push).
    let (status, body) = gw.open("echo").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((gw.provider.get_calls(), gw.provider.set_calls()), (2, 3));
    assert_eq!(gw.provider.desired_replicas(&f), Some(1));
    drop(body); // a client that goes away ends the request too
    assert_eq!(gw.scaler.stats().function(&f).in_flight, 0);
    sleep(secs(62)).await;
    assert_eq!(gw.provider.scale_downs(), 2);
    assert_eq!(gw.provider.set_calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_request_during_the_scale_down_waits_and_causes_a_fresh_scale_up() {
    let gw = Streams::new(config(), &[("echo", idle_after(secs(60)))]);
    let f = id("echo");
    let (_, body) = gw.open("echo").await;
    drop(body);
    // Scale calls take 2 s: the scale-down is under way for a while.
    gw.provider.set_latency(secs(2));
    sleep(secs(61)).await; // the reaper has started the scale-down
    assert_eq!(gw.provider.set_calls(), 2, "the scale-down was sent");
    assert_eq!(gw.provider.desired_replicas(&f), Some(1), "not yet applied");

    let started = Instant::now();
    let (status, body) = gw.open("echo").await;
    assert_eq!(status, StatusCode::OK);
    // It waited for the scale-down to end, then for a scale-up of its own.
    assert_eq!(gw.provider.scale_downs(), 1);
    assert_eq!(gw.provider.set_calls(), 3);
    assert_eq!(gw.provider.desired_replicas(&f), Some(1));
    assert!(started.elapsed() >= secs(2), "{:?}", started.elapsed());
    drop(body);
}

#[tokio::test(start_paused = true)]
async fn a_lagging_read_after_a_scale_down_is_never_trusted() {
    // Reads report the state from before a scale call for 5 s: right after the scale-down
    // they still say "1 ready".
    let spec = idle_after(secs(60)).read_after_write_lag(secs(5));
    let gw = Streams::new(config(), &[("echo", spec)]);
    let f = id("echo");
    let (_, body) = gw.open("echo").await;
    drop(body);
    sleep(secs(62)).await;
    assert_eq!(gw.provider.scale_downs(), 1);
    assert!(
        gw.provider.current_state(&f).unwrap().is_ready(),
        "the read lags"
    );

    let (status, body) = gw.open("echo").await;
    assert_eq!(status, StatusCode::OK);
    // Not forwarded on the stale "ready": a scale-up was sent first.
    assert_eq!(gw.provider.set_calls(), 3);
    assert_eq!(gw.provider.desired_replicas(&f), Some(1));
    drop(body);
}

#[tokio::test(start_paused = true)]
async fn a_failed_scale_down_is_retried_later_and_the_function_keeps_serving() {
    let gw = Streams::new(config(), &[("echo", idle_after(secs(60)))]);
    let f = id("echo");
    let (_, body) = gw.open("echo").await;
    drop(body);
    gw.provider
        .fail_set(Fault::Error(QueryError::provider("quota service down")), 1);
    // Idle for 60 s: one attempt at 60 s, failed; the next not before 61 s.
    sleep(secs(60) + Duration::from_millis(500)).await;
    assert_eq!(gw.provider.set_calls(), 2, "one attempt, failed");
    assert_eq!(gw.provider.scale_downs(), 0);
    // Still serving, warm: no scale call.
    let (status, body) = gw.open("echo").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gw.provider.set_calls(), 2);
    drop(body);
    // Idle again: the next attempt (after the backoff and the idle period) succeeds.
    sleep(secs(62)).await;
    assert_eq!(gw.provider.scale_downs(), 1);
    assert_eq!(gw.provider.desired_replicas(&f), Some(0));
}

#[tokio::test(start_paused = true)]
async fn functions_that_did_not_opt_in_are_never_scaled_down() {
    let gw = Streams::new(
        config(),
        &[
            ("plain", FakeFunction::new()),
            ("opted", idle_after(secs(60))),
        ],
    );
    for name in ["plain", "opted"] {
        let (_, body) = gw.open(name).await;
        drop(body);
    }
    sleep(secs(3600)).await;
    assert_eq!(gw.provider.desired_replicas(&id("plain")), Some(1));
    assert_eq!(gw.provider.desired_replicas(&id("opted")), Some(0));
    assert_eq!(gw.provider.scale_downs(), 1);
}

#[tokio::test(start_paused = true)]
async fn with_scale_to_zero_off_nothing_is_tracked_or_scaled_down() {
    let gw = Streams::new(ScalingConfig::default(), &[("echo", idle_after(secs(60)))]);
    let (_, body) = gw.open("echo").await;
    assert_eq!(gw.scaler.stats().function(&id("echo")).in_flight, 0);
    drop(body);
    sleep(secs(3600)).await;
    assert_eq!(gw.provider.scale_downs(), 0);
    assert_eq!(gw.provider.set_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_default_idle_period_applies_to_functions_that_opted_in_without_one() {
    let config = config().to_builder().idle_period(secs(30)).build();
    let spec = FakeFunction::new().scale_to_zero(IdlePolicy::AfterDefault);
    let gw = Streams::new(config, &[("echo", spec)]);
    let (_, body) = gw.open("echo").await;
    drop(body);
    sleep(secs(29)).await;
    assert_eq!(gw.provider.scale_downs(), 0);
    sleep(secs(2)).await;
    assert_eq!(gw.provider.scale_downs(), 1);
}

#[tokio::test(start_paused = true)]
async fn two_gateways_one_idle_one_busy_never_scale_the_function_down() {
    let provider = Arc::new(InMemoryProvider::new());
    let f = id("echo");
    provider.add_function(&f, idle_after(secs(60)));
    let gateway = |provider: &Arc<InMemoryProvider>| {
        let scaler = FunctionScaler::builder(provider.clone())
            .config(config())
            .activity_store(provider.clone())
            .build();
        ScaleFromZeroLayer::new(scaler).layer(tower::service_fn(|_: Request<String>| async {
            Ok::<_, Infallible>(Response::new(String::from("ok")))
        }))
    };
    let (idle, busy) = (gateway(&provider), gateway(&provider));
    let get = |service: &_| {
        let service: tower_scale_from_zero::ScaleFromZero<_> = Clone::clone(service);
        async move {
            let req = Request::get(format!("/function/echo.{NS}"))
                .body(String::new())
                .unwrap();
            service.oneshot(req).await.unwrap().status()
        }
    };
    // One request through the idle gateway, then ten minutes of traffic through the other.
    assert_eq!(get(&idle).await, StatusCode::OK);
    for _ in 0..60 {
        assert_eq!(get(&busy).await, StatusCode::OK);
        sleep(secs(10)).await;
    }
    assert_eq!(
        provider.scale_downs(),
        0,
        "the idle gateway saw the busy one's activity"
    );
    assert_eq!(provider.set_calls(), 1);
    // Both idle: down within the idle period, a quarter of it (recording rate) and a check.
    sleep(secs(60 + 15 + 2)).await;
    assert!(provider.scale_downs() >= 1);
    assert_eq!(provider.desired_replicas(&f), Some(0));
}

#[tokio::test(start_paused = true)]
async fn the_reaper_stops_with_its_scaler() {
    let gw = Streams::new(config(), &[("echo", idle_after(secs(60)))]);
    let (_, body) = gw.open("echo").await; // starts the reaper
    drop(body);
    let provider = Arc::clone(&gw.provider);
    drop(gw);
    // Nothing keeps the scaler (and through it the provider) alive: not the reaper.
    tokio::task::yield_now().await;
    assert_eq!(Arc::strong_count(&provider), 1);
    sleep(secs(3600)).await;
    assert_eq!(
        provider.scale_downs(),
        0,
        "no reaper left to scale anything down"
    );
}

#[tokio::test(start_paused = true)]
async fn an_upgraded_connection_keeps_its_function_up_until_it_closes() {
    use tower_scale_from_zero::middleware::UpgradeActivity;
    let gw = Streams::new(config(), &[("ws", idle_after(secs(60)))]);
    // The forwarding service answers 101 and keeps the upgrade's activity for as long as
    // "the tunnel" lives (here: until the test drops it), as a proxy's tunnel task would.
    let tunnels: Arc<std::sync::Mutex<Vec<UpgradeActivity>>> = Arc::default();
    let inner = {
        let tunnels = Arc::clone(&tunnels);
        tower::service_fn(move |mut req: Request<String>| {
            let tunnel = req.extensions_mut().remove::<UpgradeActivity>();
            tunnels.lock().unwrap().extend(tunnel);
            async move {
                let mut response = Response::new(String::new());
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                Ok::<_, Infallible>(response)
            }
        })
    };
    let service = ScaleFromZeroLayer::new(gw.scaler.clone()).layer(inner);
    let upgrade = || {
        Request::get("/function/ws")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(String::new())
            .unwrap()
    };
    // Cold, then warm: both upgrades carry their activity to the tunnel.
    for _ in 0..2 {
        let response = service.clone().oneshot(upgrade()).await.unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        drain(response.into_body().map_err(|e| match e {}).boxed_unsync()).await;
    }
    assert_eq!(tunnels.lock().unwrap().len(), 2);
    assert_eq!(gw.scaler.stats().function(&id("ws")).in_flight, 2);
    // The 101 responses have ended; the tunnels have not: never idle.
    sleep(secs(200)).await;
    assert_eq!(
        gw.provider.scale_downs(),
        0,
        "scaled down under open tunnels"
    );
    tunnels.lock().unwrap().clear();
    sleep(secs(62)).await;
    assert_eq!(
        gw.provider.scale_downs(),
        1,
        "down an idle period after the tunnels closed"
    );
}

/// Two gateways sharing one platform as their activity store: `Streams` for the one that
/// holds a stream open, a plain scaler for the other.
fn two_gateways(spec: FakeFunction) -> (Streams, FunctionScaler) {
    let busy = Streams::new(config(), &[("echo", spec)]);
    let provider = busy.provider.clone();
    let busy = Streams {
        scaler: FunctionScaler::builder(provider.clone())
            .config(config())
            .activity_store(provider.clone())
            .build(),
        ..busy
    };
    let idle = FunctionScaler::builder(provider.clone())
        .config(config())
        .activity_store(provider)
        .build();
    (busy, idle)
}

#[tokio::test(start_paused = true)]
async fn a_stream_on_one_gateway_keeps_its_function_up_against_another_gateway() {
    let (busy, idle) = two_gateways(idle_after(secs(60)));
    let f = id("echo");
    // The idle gateway knows the function warm; then one stream through the other, open for
    // three idle periods: it records activity while it lasts, not only when it starts.
    idle.scale(&f).await.unwrap();
    let (status, body) = busy.open("echo").await;
    assert_eq!(status, StatusCode::OK);
    sleep(secs(180)).await;
    assert_eq!(busy.provider.scale_downs(), 0);
    assert_eq!(busy.provider.desired_replicas(&f), Some(1));
    busy.end_all();
    drain(body.unwrap()).await;
    // Both idle now: exactly one scale-down.
    sleep(secs(60 + 15 + 2)).await;
    assert_eq!(busy.provider.scale_downs(), 1);
    assert_eq!(busy.provider.desired_replicas(&f), Some(0));
}

#[tokio::test(start_paused = true)]
async fn a_scale_up_on_one_gateway_is_not_undone_by_another() {
    let (busy, idle) = two_gateways(idle_after(secs(60)).startup_delay(secs(5)));
    let f = id("echo");
    // The idle gateway saw the function warm long ago (its idle period is over)...
    busy.provider
        .add_function(&f, idle_after(secs(60)).running(1));
    idle.scale(&f).await.unwrap();
    busy.provider
        .add_function(&f, idle_after(secs(60)).startup_delay(secs(5)));
    sleep(secs(59)).await;
    // ... when the other brings it up from zero: a 5 s start, across the idle gateway's look.
    let (status, body) = busy.open("echo").await;
    assert_eq!(status, StatusCode::OK);
    drop(body);
    sleep(secs(5)).await;
    assert_eq!(busy.provider.scale_downs(), 0, "the scale-up stands");
    assert_eq!(busy.provider.desired_replicas(&f), Some(1));
}
