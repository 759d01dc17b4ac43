//! HTTP/2 and gRPC end to end (docs/behaviour.md §12): a real `tonic` client through the example
//! gateways (h2c) to a real `tonic` server as the function (this binary in gRPC function
//! mode: the standard health service, `grpc.health.v1.Health`, with a unary and a
//! server-streaming call).

use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::runner::ExampleGateway as Gateway;
use crate::temp;

/// `--function` for this binary as a gRPC function: `NAME=<exe> --grpc-function NAME`.
fn grpc_function(name: &str, starts: &std::path::Path) -> String {
    let exe = std::env::current_exe().unwrap();
    format!(
        "{name}='{}' --grpc-function {name} --starts-file '{}'",
        exe.display(),
        starts.display()
    )
}

/// A service whose requests go to `/function/NAME/<gRPC path>` on the gateway.
type Routed = tower::util::MapRequest<
    Channel,
    Box<dyn Fn(http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body> + Send + Sync>,
>;

/// A health client for function `name` through `gateway`, over HTTP/2 without TLS (h2c).
async fn health(gateway: &Gateway, name: &str) -> HealthClient<Routed> {
    let channel = Channel::from_shared(gateway.url(""))
        .unwrap()
        .connect()
        .await
        .expect("an h2c connection to the gateway");
    let prefix = format!("/function/{name}");
    let route: Box<
        dyn Fn(http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body> + Send + Sync,
    > = Box::new(move |mut req| {
        let path = format!("{prefix}{}", req.uri().path());
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = Some(path.parse().unwrap());
        *req.uri_mut() = http::Uri::from_parts(parts).unwrap();
        req
    });
    HealthClient::new(tower::util::MapRequest::new(channel, route))
}

fn check() -> tonic::Request<HealthCheckRequest> {
    tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    })
}

fn starts(file: &std::path::Path) -> usize {
    std::fs::read_to_string(file)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

async fn a_unary_call_held_through_a_cold_start(example: &str) {
    let file = temp(&format!("grpc-starts-{example}"));
    let flag = grpc_function("health", &file);
    let gateway = Gateway::start(example, &["--function", &flag]).await;
    let mut client = health(&gateway, "health").await;
    let started = Instant::now();
    let response = client
        .check(check())
        .await
        .expect("the call succeeds: its status came back in the trailers");
    assert_eq!(response.into_inner().status(), ServingStatus::Serving);
    assert_eq!(starts(&file), 1, "the function was started for the call");
    println!(
        "    {example}: a gRPC call through a cold start: {:?}",
        started.elapsed()
    );
    // Warm: again, on the same HTTP/2 connection.
    let response = client.check(check()).await.unwrap();
    assert_eq!(response.into_inner().status(), ServingStatus::Serving);
    assert_eq!(starts(&file), 1);
    let _ = std::fs::remove_file(file);
}

pub(crate) async fn a_grpc_call_is_held_through_a_cold_start_and_its_trailers_come_back() {
    a_unary_call_held_through_a_cold_start("axum_gateway").await;
}

pub(crate) async fn the_hyper_gateway_passes_grpc_through_a_cold_start_too() {
    a_unary_call_held_through_a_cold_start("hyper_gateway").await;
}

pub(crate) async fn a_server_stream_open_across_the_idle_period_keeps_the_function_up() {
    let file = temp("grpc-stream-starts");
    let flag = grpc_function("health", &file);
    let gateway = Gateway::start(
        "axum_gateway",
        &["--function", &flag, "--scale-to-zero-after", "1s"],
    )
    .await;
    let mut client = health(&gateway, "health").await;
    let mut stream = client.watch(check()).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().expect("the current status");
    assert_eq!(first.status(), ServingStatus::Serving);
    // Three idle periods with the stream open: the function must stay up.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let still = tokio::time::timeout(Duration::from_millis(200), stream.message()).await;
    assert!(still.is_err(), "the stream is still open: {still:?}");
    assert_eq!(
        client.check(check()).await.unwrap().into_inner().status(),
        ServingStatus::Serving
    );
    assert_eq!(starts(&file), 1, "never stopped while the stream was open");
    // Closed, the function goes idle and is stopped; the next call starts it again.
    drop(stream);
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let mut client = health(&gateway, "health").await;
    assert_eq!(
        client.check(check()).await.unwrap().into_inner().status(),
        ServingStatus::Serving
    );
    assert_eq!(starts(&file), 2, "stopped once idle, started again");
    let _ = std::fs::remove_file(file);
}

pub(crate) async fn refused_grpc_calls_get_grpc_status_codes_through_the_gateway() {
    let gateway = Gateway::start(
        "axum_gateway",
        &["--function", "mute=sleep 30", "--deadline", "1s"],
    )
    .await;
    let code = |result: Result<tonic::Response<_>, tonic::Status>| match result {
        Ok(response) => panic!("a refusal, not {response:?}"),
        Err(status) => (status.code(), status.message().to_string()),
    };
    let (unknown, message) = code(health(&gateway, "nope").await.check(check()).await);
    assert_eq!(unknown, tonic::Code::NotFound, "{message}");
    assert!(message.contains("nope"), "{message}");
    let (invalid, _) = code(health(&gateway, "Not_A_Name").await.check(check()).await);
    assert_eq!(invalid, tonic::Code::InvalidArgument);
    // A function that never listens: the deadline.
    let started = Instant::now();
    let (late, message) = code(health(&gateway, "mute").await.check(check()).await);
    assert_eq!(late, tonic::Code::DeadlineExceeded, "{message}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// gRPC function mode: `--grpc-function NAME [--starts-file F]`: the health service on
/// 127.0.0.1:$PORT (h2c), each start appended to F.
pub(crate) fn grpc_function_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("--grpc-function") {
        return false;
    }
    let port: u16 = std::env::var("PORT").unwrap().parse().unwrap();
    if let Some(file) = args
        .iter()
        .position(|a| a == "--starts-file")
        .and_then(|i| args.get(i + 1))
    {
        crate::record_start(file, port);
    }
    crate::function_runtime().block_on(async move {
        let (_reporter, service) = tonic_health::server::health_reporter();
        tonic::transport::Server::builder()
            .add_service(service)
            .serve(([127, 0, 0, 1], port).into())
            .await
            .unwrap();
    });
    true
}
