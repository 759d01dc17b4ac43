//! Cold burst: 1 000 concurrent requests, over real TCP on 127.0.0.1, to a cold function whose
//! process takes 500 ms to start; through the axum example's gateway stack (its router shape
//! over `gateway-kit`) with the local-process provider (this binary is also the function).
//! Each round uses a fresh gateway.
//! Reports p50/p99/max latency, provider calls, process starts, and the time from readiness
//! (the provider marking the function ready) to the last response.
//!
//! `cargo bench --all-features --bench cold_burst` (or `benches/load.sh cold`)

#[path = "support/gateway.rs"]
mod gateway;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use clap::Parser;
use gateway_kit::platform::{Platform, Upstreams};
use gateway_kit::proxy::{full, Proxy, ProxyBody};
use gateway_kit::{Gateway, Options};
use http::Request;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_scale_from_zero::providers::{ProcessProvider, ProcessSpec};
use tower_scale_from_zero::{
    FunctionId, FunctionScaler, QueryError, ScalingConfig, ServiceQuery, ServiceQueryResponse,
};

const BURST: usize = 1_000;
const STARTUP: Duration = Duration::from_millis(500);
const ROUNDS: usize = 5;

/// Counts the provider calls the scaler makes.
#[derive(Clone)]
struct Counted {
    inner: ProcessProvider,
    gets: Arc<AtomicUsize>,
    sets: Arc<AtomicUsize>,
}

#[async_trait]
impl ServiceQuery for Counted {
    async fn get_replicas(&self, f: &FunctionId) -> Result<ServiceQueryResponse, QueryError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get_replicas(f).await
    }

    async fn set_replicas(&self, f: &FunctionId, n: u64) -> Result<(), QueryError> {
        self.sets.fetch_add(1, Ordering::SeqCst);
        self.inner.set_replicas(f, n).await
    }
}

/// `BURST` concurrent requests from a fresh client (new connections, as a burst of new
/// clients would make): sorted latencies and the instant the last one ended.
async fn burst(addr: std::net::SocketAddr) -> (Vec<Duration>, Instant) {
    let client: Client<_, ProxyBody> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(BURST)
        .build_http();
    let requests: Vec<_> = (0..BURST)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let req = Request::get(format!("http://{addr}/function/hello-world"))
                    .body(full(Bytes::new()))
                    .unwrap();
                let start = Instant::now();
                let response = client.request(req).await.unwrap();
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.unwrap();
                let end = Instant::now();
                (end - start, end)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(BURST);
    let mut last = None::<Instant>;
    for request in requests {
        let (latency, end) = request.await.unwrap();
        latencies.push(latency);
        last = Some(last.map_or(end, |l| l.max(end)));
    }
    latencies.sort();
    (latencies, last.unwrap())
}

struct Round {
    latencies: Vec<Duration>,
    warm_latencies: Vec<Duration>,
    ready_to_last: Duration,
    gets: usize,
    sets: usize,
    starts: usize,
}

async fn round() -> Round {
    let options = Options::parse_from(["cold_burst"]);
    let id = FunctionId::new("hello-world", options.namespace()).unwrap();
    let provider = ProcessProvider::new();
    let spec = ProcessSpec::new(std::env::current_exe().unwrap())
        .arg("--serve-function")
        .arg("hello-world")
        .arg("--startup-ms")
        .arg(STARTUP.as_millis().to_string());
    provider.add_function(&id, spec);
    let counted = Counted {
        inner: provider.clone(),
        gets: Arc::default(),
        sets: Arc::default(),
    };
    let scaler = FunctionScaler::new(counted.clone(), ScalingConfig::default());
    provider.push_readiness_to(scaler.readiness_notifier());
    let platform = Platform {
        scaler,
        upstreams: Upstreams::Local(provider.clone()),
    };
    let tls = gateway_kit::platform::tls_config(gateway_kit::cli::Roots::Webpki, None).unwrap();
    let gateway = Arc::new(Gateway::new(
        platform,
        Proxy::new(tls, Vec::new()),
        &options,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app =
        gateway::router(gateway).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // Watches for the moment the provider marks the function ready.
    let watcher = {
        let provider = provider.clone();
        let id = id.clone();
        tokio::spawn(async move {
            while provider.upstream(&id).is_none() {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            Instant::now()
        })
    };

    let (latencies, last) = burst(addr).await;
    let ready = watcher.await.unwrap();
    // The same burst again, now warm: what 1 000 concurrent requests cost through this
    // gateway and function anyway, to tell the cold start's share of the tail.
    let (warm_latencies, _) = burst(addr).await;
    server.abort();
    Round {
        latencies,
        warm_latencies,
        ready_to_last: last.saturating_duration_since(ready),
        gets: counted.gets.load(Ordering::SeqCst),
        sets: counted.sets.load(Ordering::SeqCst),
        starts: provider.starts(),
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if gateway_kit::hello::run_if_asked() {
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and friends: nothing to list
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!(
        "cold_burst: {BURST} concurrent requests, function start-up {}, {ROUNDS} rounds",
        ms(STARTUP)
    );
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    let mut maxes = Vec::new();
    let mut tails = Vec::new();
    let mut warm_p99s = Vec::new();
    for i in 1..=ROUNDS {
        let r = runtime.block_on(round());
        let (p50, p99, max) = (
            pct(&r.latencies, 0.50),
            pct(&r.latencies, 0.99),
            pct(&r.latencies, 1.0),
        );
        let warm_p99 = pct(&r.warm_latencies, 0.99);
        println!(
            "cold_burst: round {i}: p50 {} p99 {} max {}; readiness -> last response {}; \
             same burst warm: p99 {}; get_replicas {} set_replicas {} processes started {}",
            ms(p50),
            ms(p99),
            ms(max),
            ms(r.ready_to_last),
            ms(warm_p99),
            r.gets,
            r.sets,
            r.starts
        );
        assert_eq!(r.sets, 1, "exactly one scale call");
        assert_eq!(r.starts, 1, "exactly one process");
        p50s.push(p50);
        p99s.push(p99);
        maxes.push(max);
        tails.push(r.ready_to_last);
        warm_p99s.push(warm_p99);
    }
    for v in [&mut p50s, &mut p99s, &mut maxes, &mut tails, &mut warm_p99s] {
        v.sort();
    }
    let m = ROUNDS / 2;
    println!(
        "cold_burst: median of {ROUNDS} rounds: p50 {} p99 {} max {}; readiness -> last response {}; \
         same burst warm: p99 {}; target p99 <= start-up + 20 ms = {}",
        ms(p50s[m]),
        ms(p99s[m]),
        ms(maxes[m]),
        ms(tails[m]),
        ms(warm_p99s[m]),
        ms(STARTUP + Duration::from_millis(20))
    );
}
