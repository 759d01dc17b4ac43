//! End to end, over real TCP on 127.0.0.1: the example gateways' stacks, in-process, with the
//! local-process provider (this binary is also the function: see `main`) and with the fake
//! OpenFaaS provider.
//!
//! `harness = false`: the function processes the gateway starts are this same binary, so
//! `main` must run before any test harness would.
// Each example includes the shared `common` module; this test includes both examples.
#![allow(clippy::duplicate_mod)]

#[allow(dead_code)]
#[path = "../examples/axum_gateway.rs"]
mod axum_gateway;
#[path = "support/faas_provider.rs"]
mod faas_provider;
#[allow(dead_code)]
#[path = "../examples/hyper_gateway.rs"]
mod hyper_gateway;
#[path = "support/runner.rs"]
mod runner;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum_gateway::common::{self, Backend, Gateway, Options, ProxyBody};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower_scale_from_zero::providers::{ProcessProvider, ProcessSpec};

type Client_ = Client<HttpConnector, ProxyBody>;

fn client() -> Client_ {
    Client::builder(TokioExecutor::new()).build_http()
}

fn options(namespace: &str) -> Options {
    Options::parse(["--namespace".to_string(), namespace.to_string()]).unwrap()
}

fn function(name: &str, startup_ms: u64) -> ProcessSpec {
    let exe = std::env::current_exe().unwrap();
    ProcessSpec::new(exe)
        .arg("--serve-function")
        .arg(name)
        .arg("--startup-ms")
        .arg(startup_ms.to_string())
}

/// Serves the axum example's router for `gateway` on an ephemeral port.
async fn serve_axum(gateway: Arc<Gateway>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum_gateway::router(gateway);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn local_provider(gateway: &Gateway) -> ProcessProvider {
    match &gateway.backend {
        Backend::Local(provider) => provider.clone(),
        _ => unreachable!("a local gateway"),
    }
}

async fn get(client: &Client_, url: String) -> (StatusCode, String) {
    let req = Request::get(url).body(common::full(Bytes::new())).unwrap();
    let response = client.request(req).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `n` concurrent GETs; `url(i)` is request `i`'s URL. Answers in request order.
async fn concurrent_gets(
    client: &Client_,
    n: usize,
    url: impl Fn(usize) -> String,
) -> Vec<(StatusCode, String)> {
    let requests: Vec<_> = (0..n)
        .map(|i| {
            let (client, url) = (client.clone(), url(i));
            tokio::spawn(async move { get(&client, url).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(n);
    for request in requests {
        answers.push(request.await.unwrap());
    }
    answers
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn a_large_request_body_streams_through_without_being_buffered() {
    const SIZE: usize = 50 << 20;
    const CHUNK: usize = 64 << 10;
    let gateway = Arc::new(Gateway::local(
        &options("local"),
        [("hello-world", function("hello-world", 0))],
    ));
    let addr = serve_axum(gateway).await;
    let client = client();
    assert_eq!(
        get(&client, format!("http://{addr}/function/hello-world"))
            .await
            .0,
        200
    );

    let before = peak_rss_kib();
    let chunks = futures::stream::iter(
        (0..SIZE / CHUNK)
            .map(|_| Ok::<_, common::BoxError>(Frame::data(Bytes::from(vec![b'x'; CHUNK])))),
    );
    let req = Request::post(format!("http://{addr}/function/hello-world/upload"))
        .body(StreamBody::new(chunks).boxed_unsync())
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("Hello from hello-world! path=/upload received={SIZE} bytes\n")
    );
    let grew_mib = (peak_rss_kib() - before) / 1024;
    println!("    peak RSS grew by {grew_mib} MiB while 50 MiB passed through");
    assert!(
        grew_mib < 16,
        "the gateway buffered the body: peak RSS grew by {grew_mib} MiB"
    );
}

async fn two_hundred_concurrent_requests_start_exactly_one_process() {
    let gateway = Arc::new(Gateway::local(
        &options("local"),
        [("hello-world", function("hello-world", 300))],
    ));
    let provider = local_provider(&gateway);
    let addr = serve_axum(gateway).await;
    let client = client();
    let started = Instant::now();
    let answers = concurrent_gets(&client, 200, |i| {
        format!("http://{addr}/function/hello-world/{i}")
    })
    .await;
    for (i, (status, body)) in answers.into_iter().enumerate() {
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            format!("Hello from hello-world! path=/{i} received=0 bytes\n")
        );
    }
    println!(
        "    200 requests answered in {} ms after one cold start",
        started.elapsed().as_millis()
    );
    assert_eq!(provider.starts(), 1, "exactly one process started");
}

async fn an_unknown_function_is_404_and_an_invalid_one_400() {
    let gateway = Arc::new(Gateway::local(
        &options("local"),
        [("hello-world", function("hello-world", 0))],
    ));
    let provider = local_provider(&gateway);
    let addr = serve_axum(gateway).await;
    let (status, body) = get(&client(), format!("http://{addr}/function/nobody")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, "function nobody.local not found\n");
    let (status, _) = get(&client(), format!("http://{addr}/function/NoBody")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(provider.starts(), 0);
}

async fn a_function_that_exits_at_once_gives_502_quickly() {
    let crashing = function("crash", 0).arg("--exit-at-once");
    let gateway = Arc::new(Gateway::local(&options("local"), [("crash", crashing)]));
    let addr = serve_axum(gateway).await;
    let started = Instant::now();
    let (status, body) = get(&client(), format!("http://{addr}/function/crash")).await;
    let took = started.elapsed();
    println!("    502 after {} ms", took.as_millis());
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    // The provider's own text ("exited during start-up") is for the logs, not the client.
    assert_eq!(
        body,
        "provider error for function crash.local: the provider call failed\n"
    );
    assert!(
        took < Duration::from_secs(5),
        "not a wait for the 60 s deadline: {took:?}"
    );
}

async fn in_front_of_an_openfaas_provider_a_cold_start_makes_one_scale_call() {
    let faas = faas_provider::FaasServer::start().await;
    faas.add(
        "echo",
        "openfaas-fn",
        faas_provider::FakeFn {
            startup: Duration::from_millis(200),
            ..Default::default()
        },
    );
    let options =
        Options::parse(["--provider-url".to_string(), format!("{}/", faas.url())]).unwrap();
    let gateway = Arc::new(Gateway::from_options(&options).await.unwrap());
    let addr = serve_axum(gateway).await;
    let client = client();
    let answers = concurrent_gets(&client, 20, |_| {
        format!("http://{addr}/function/echo/run?x=1")
    })
    .await;
    for (status, body) in answers {
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            "echo via provider: /function/echo.openfaas-fn/run (0 bytes)"
        );
    }
    assert_eq!(
        faas.with(|s| s.scale_calls.len()),
        1,
        "exactly one scale call"
    );
    assert_eq!(faas.with(|s| s.invocations), 20);
    let (status, _) = get(&client, format!("http://{addr}/function/missing")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn the_hyper_gateway_serves_a_cold_start_too() {
    type HyperGateway = hyper_gateway::common::Gateway;
    let options = hyper_gateway::common::Options::parse(Vec::<String>::new()).unwrap();
    let spec = function("hello-world", 100);
    let gateway = Arc::new(HyperGateway::local(&options, [("hello-world", spec)]));
    let service = hyper_gateway::service(gateway);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    let client = client();
    let (status, body) = get(&client, format!("http://{addr}/function/hello-world")).await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::OK,
            "Hello from hello-world! path=/ received=0 bytes\n"
        )
    );
    assert_eq!(
        get(&client, format!("http://{addr}/healthz")).await,
        (StatusCode::OK, "ok\n".to_string())
    );
    assert_eq!(
        get(&client, format!("http://{addr}/function/nobody"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

/// Whether something accepts connections at `addr`, within `patience`.
async fn accepts_within(addr: SocketAddr, patience: Duration) -> bool {
    let until = Instant::now() + patience;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `addr` stops accepting connections within `patience`.
async fn closes_within(addr: SocketAddr, patience: Duration) -> bool {
    let until = Instant::now() + patience;
    while Instant::now() < until {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

async fn the_process_provider_stops_processes_on_scale_to_zero_and_on_drop() {
    use tower_scale_from_zero::ServiceQuery;
    let provider = ProcessProvider::new();
    let id = tower_scale_from_zero::FunctionId::new("hello-world", "local").unwrap();
    // Ready only once `GET /` answers, not merely when the port is open.
    provider.add_function(&id, function("hello-world", 0).http_probe("/"));

    provider.set_replicas(&id, 1).await.unwrap();
    let mut waited = 0;
    while provider.upstream(&id).is_none() {
        assert!(waited < 500, "not ready within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    let first = provider.upstream(&id).unwrap();
    let state = provider.get_replicas(&id).await.unwrap();
    assert_eq!((state.desired_replicas, state.available_replicas), (1, 1));
    assert!(accepts_within(first, Duration::from_secs(1)).await);

    provider.set_replicas(&id, 0).await.unwrap();
    assert!(
        closes_within(first, Duration::from_secs(5)).await,
        "set_replicas(0) stops it"
    );
    let state = provider.get_replicas(&id).await.unwrap();
    assert_eq!((state.desired_replicas, state.available_replicas), (0, 0));
    assert_eq!(provider.upstream(&id), None);

    provider.set_replicas(&id, 1).await.unwrap();
    while provider.upstream(&id).is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = provider.upstream(&id).unwrap();
    assert_eq!(provider.starts(), 2);
    drop(provider);
    assert!(
        closes_within(second, Duration::from_secs(5)).await,
        "no child outlives the provider"
    );
}

async fn gateway_options_are_checked_with_clear_messages() {
    let o = Options::parse(Vec::<String>::new()).unwrap();
    assert_eq!(
        (o.namespace.as_str(), o.deadline),
        ("local", Duration::from_secs(60))
    );
    let o = Options::parse(["--provider-url".into(), "http://p:8081".into()]).unwrap();
    assert_eq!(o.namespace, "openfaas-fn");
    assert_eq!(
        Options::parse(["--deadline=500ms".into()])
            .unwrap()
            .deadline,
        Duration::from_millis(500)
    );
    for (args, why) in [
        (vec!["--deadline", "soon"], "expected a duration"),
        (vec!["--deadline", "0s"], "greater than zero"),
        (vec!["--listen", "nowhere"], "--listen"),
        (vec!["--namespace", "Bad_NS"], "--namespace"),
        (vec!["--frobnicate"], "unknown option"),
        (vec!["--listen"], "needs a value"),
    ] {
        let err = Options::parse(args.into_iter().map(String::from)).unwrap_err();
        assert!(err.contains(why), "{err}");
    }
    let bad_url = Options::parse(["--provider-url".into(), "https://secure:8081".into()]).unwrap();
    let err = Gateway::from_options(&bad_url).await.unwrap_err();
    assert!(err.contains("only http"), "{err}");
    for (args, why) in [
        (
            vec!["--kubernetes", "--upstream", "127.0.0.1:1"],
            "excludes",
        ),
        (vec!["--label-selector", "a=b"], "need --kubernetes"),
    ] {
        let err = Options::parse(args.into_iter().map(String::from)).unwrap_err();
        assert!(err.contains(why), "{err}");
    }
    let k8s = Options::parse(["--kubernetes".into()]).unwrap();
    assert_eq!(k8s.namespace, "default");
}

/// Runs an example gateway as a process of its own (this binary in gateway mode), sends it
/// 100 requests held by a slow cold start, then SIGTERM: every client gets a response.
async fn sigterm_with_held_requests(example: &str, startup: &str, budget: &str) -> Vec<u16> {
    let port = runner::free_port();
    let mut gateway = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--serve-gateway", example, "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--function-startup", startup, "--drain-budget", budget])
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = client();
    let up = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < up, "the gateway never listened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The example serves its metrics.
    let (status, text) = get(&client, format!("http://{addr}/metrics")).await;
    assert_eq!(status, 200, "{text}");
    let requests: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let req = Request::get(format!("http://{addr}/function/hello-world"))
                    .body(common::full(Bytes::new()))
                    .unwrap();
                match client.request(req).await {
                    Ok(response) => response.status().as_u16(),
                    Err(_) => 0, // no response at all
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &gateway.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut statuses = Vec::new();
    for request in requests {
        let status = tokio::time::timeout(Duration::from_secs(15), request)
            .await
            .expect("every client gets a response in time")
            .unwrap();
        statuses.push(status);
    }
    let exited = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = gateway.try_wait().unwrap() {
            assert!(status.success(), "the gateway exited with {status}");
            break;
        }
        assert!(
            Instant::now() < exited,
            "the gateway did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    statuses
}

async fn sigterm_answers_every_held_request_of_the_axum_gateway() {
    // The cold start outlasts the drain budget: all 100 are answered 503, none dropped.
    let statuses = sigterm_with_held_requests("axum", "10s", "1s").await;
    assert!(statuses.iter().all(|&s| s == 503), "{statuses:?}");
    // A cold start that ends within the budget: all 100 are served.
    let statuses = sigterm_with_held_requests("axum", "500ms", "10s").await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
}

async fn sigterm_answers_every_held_request_of_the_hyper_gateway() {
    let statuses = sigterm_with_held_requests("hyper", "10s", "1s").await;
    assert!(statuses.iter().all(|&s| s == 503), "{statuses:?}");
    let statuses = sigterm_with_held_requests("hyper", "500ms", "10s").await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
}

async fn metrics_after_a_cold_start_are_served_at_slash_metrics() {
    let mut gateway = Gateway::local(&options("metered"), [("hello", function("hello", 50))]);
    gateway.metrics = Some(common::metrics());
    let addr = serve_axum(Arc::new(gateway)).await;
    let client = client();
    let (status, _) = get(&client, format!("http://{addr}/function/hello")).await;
    assert_eq!(status, 200);
    assert_eq!(
        get(&client, format!("http://{addr}/function/nope")).await.0,
        404
    );
    let (status, text) = get(&client, format!("http://{addr}/metrics")).await;
    assert_eq!(status, 200);
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let f = r#"function="hello.metered""#;
    assert_eq!(
        value(&format!(
            r#"scale_from_zero_cold_starts_total{{{f},outcome="ready"}}"#
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "scale_from_zero_cold_start_duration_seconds_count{{{f}}}"
        )),
        1.0
    );
    let took = value(&format!(
        "scale_from_zero_cold_start_duration_seconds_sum{{{f}}}"
    ));
    assert!(took > 0.05 && took < 5.0, "{took}");
    assert_eq!(value(&format!("scale_from_zero_requests_held{{{f}}}")), 0.0);
    assert!(value(r#"scale_from_zero_refusals_total{status="404"}"#) >= 1.0);
    assert!(
        !text.contains("nope"),
        "an unknown function became a label value"
    );
    println!(
        "    /metrics after a cold start:\n{}",
        text.lines()
            .filter(|l| l.contains("hello.metered") && !l.contains("_bucket"))
            .map(|l| format!("      {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

async fn the_bundled_function_stops_when_idle_and_starts_again() {
    let options =
        Options::parse(["--namespace", "idle", "--scale-to-zero-after", "1s"].map(String::from))
            .unwrap();
    let gateway = Arc::new(Gateway::from_options(&options).await.unwrap());
    let provider = local_provider(&gateway);
    let addr = serve_axum(Arc::clone(&gateway)).await;
    let client = client();
    let url = format!("http://{addr}/function/hello-world");
    assert_eq!(get(&client, url.clone()).await.0, 200);
    let id = tower_scale_from_zero::FunctionId::new("hello-world", "idle").unwrap();
    let first = provider.upstream(&id).unwrap();
    assert_eq!(provider.starts(), 1);
    // Idle for 1 s (plus a check interval of 100 ms): the process is stopped.
    assert!(
        closes_within(first, Duration::from_secs(5)).await,
        "the idle function's process was not stopped"
    );
    assert!(provider.upstream(&id).is_none());
    // The next request starts it again.
    assert_eq!(get(&client, url).await.0, 200);
    assert_eq!(provider.starts(), 2);
}

async fn dot_segments_after_the_function_name_are_refused_before_forwarding() {
    let gateway = Arc::new(Gateway::local(
        &options("dots"),
        [("hello-world", function("hello-world", 0))],
    ));
    let addr = serve_axum(gateway).await;
    let client = client();
    for path in [
        "/function/hello-world/../../system/functions",
        "/function/hello-world/./x",
        "/function/hello-world/%2e%2e/secret",
        "/function/hello-world/a/%2E%2e",
        "/function/hello-world/..",
    ] {
        let (status, body) = get(&client, format!("http://{addr}{path}")).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("segment"), "{path}: {body}");
    }
    // Dots inside a segment are fine.
    let (status, body) = get(
        &client,
        format!("http://{addr}/function/hello-world/a..b/.well-known"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("path=/a..b/.well-known"), "{body}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if common::run_function_if_asked(&args) {
        return;
    }
    // Gateway mode, for the SIGTERM tests: `--serve-gateway axum|hyper [options]`.
    if args.get(1).map(String::as_str) == Some("--serve-gateway") {
        let example = args[2].clone();
        let gateway_args: Vec<String> = std::iter::once(args[0].clone())
            .chain(args[3..].iter().cloned())
            .collect();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        match example.as_str() {
            "axum" => runtime.block_on(axum_gateway::serve(gateway_args)),
            "hyper" => runtime.block_on(hyper_gateway::serve(gateway_args)),
            other => panic!("no example gateway {other}"),
        }
        return;
    }
    // Streaming first: it reads the process's peak memory.
    let tests: [runner::Test; 13] = runner::tests![
        a_large_request_body_streams_through_without_being_buffered,
        two_hundred_concurrent_requests_start_exactly_one_process,
        an_unknown_function_is_404_and_an_invalid_one_400,
        a_function_that_exits_at_once_gives_502_quickly,
        in_front_of_an_openfaas_provider_a_cold_start_makes_one_scale_call,
        the_hyper_gateway_serves_a_cold_start_too,
        the_process_provider_stops_processes_on_scale_to_zero_and_on_drop,
        gateway_options_are_checked_with_clear_messages,
        sigterm_answers_every_held_request_of_the_axum_gateway,
        sigterm_answers_every_held_request_of_the_hyper_gateway,
        metrics_after_a_cold_start_are_served_at_slash_metrics,
        the_bundled_function_stops_when_idle_and_starts_again,
        dot_segments_after_the_function_name_are_refused_before_forwarding,
    ];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let passed = runner::run(&runtime, &tests, Duration::from_secs(60));
    drop(runtime);
    std::process::exit(i32::from(!passed));
}
