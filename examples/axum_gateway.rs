//! A scale-from-zero gateway on axum 0.8: requests to `/function/NAME[/PATH]` wait while
//! NAME starts, then go to it.
//!
//! ```sh
//! cargo run --features process,openfaas --example axum_gateway
//! curl -i localhost:8080/function/hello-world      # cold: the function process starts
//! curl -i localhost:8080/function/hello-world      # warm
//! ```
//!
//! Your own functions: `-- --function files='python3 -m http.server {port}'`, or a
//! functions file; an OpenFaaS provider: `-- --provider-url URL`; `-- --help` lists the
//! options. What is not about wiring the layer into axum (command line, platform, proxy,
//! logs, metrics) lives in `gateway-kit`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use gateway_kit::{shutdown, Gateway};
use http::StatusCode;
use tower::ServiceBuilder;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// The gateway's routes and layers.
fn router(gateway: Arc<Gateway>) -> Router {
    // Held requests wait inside the scale-from-zero layer; warm ones pass straight through.
    // `route_layer`: only function routes are held, never /healthz or /metrics.
    let functions = Router::new()
        .route("/function/{name}", any(forward))
        .route("/function/{name}/", any(forward))
        .route("/function/{name}/{*rest}", any(forward))
        .route_layer(gateway.layer());
    // Outside the scale layer and longer than its readiness deadline, so the 504 that
    // names the function is what a client sees.
    let outer_timeout = gateway.deadline() + std::time::Duration::from_secs(30);
    Router::new()
        .merge(functions)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(
            ServiceBuilder::new()
                .layer(TraceLayer::new_for_http())
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::GATEWAY_TIMEOUT,
                    outer_timeout,
                )),
        )
        .with_state(gateway)
}

async fn forward(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    gateway.forward(req, Some(peer)).await.into_response()
}

async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    gateway.readiness_response().into_response()
}

async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    gateway.metrics_response().into_response()
}

fn main() {
    // Command line, logs, gateway and listener (or the bundled function's mode): gateway-kit.
    gateway_kit::run("axum gateway", serve);
}

async fn serve(gateway: Arc<Gateway>, listener: tokio::net::TcpListener) {
    let drain = shutdown::signal_then_drain(gateway.scaler().clone(), gateway.drain_budget());
    let app = router(gateway).into_make_service_with_connect_info::<SocketAddr>();
    // On SIGTERM: stop accepting, drain the held requests, finish what is in flight.
    axum::serve(listener, app)
        .with_graceful_shutdown(drain)
        .await
        .expect("server");
}
