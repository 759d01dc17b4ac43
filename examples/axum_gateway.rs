//! A scale-from-zero gateway on axum 0.8.
//!
//! ```sh
//! cargo run --example axum_gateway
//! curl -i localhost:8080/function/hello-world      # cold: the function process starts
//! curl -i localhost:8080/function/hello-world      # warm
//! ```
//!
//! With no flags, functions are local processes (the bundled `hello-world` is this binary in
//! function mode). `--provider-url URL` puts the gateway in front of an OpenFaaS provider
//! instead; `--help` lists the options.

#[path = "common/mod.rs"]
pub mod common;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use common::Gateway;
use http::StatusCode;
use tower::ServiceBuilder;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// The gateway's routes and layers.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let functions = Router::new()
        .route("/function/{name}", any(forward))
        .route("/function/{name}/", any(forward))
        .route("/function/{name}/{*rest}", any(forward));
    // Held requests wait inside this layer; warm ones pass straight through. (Benchmarks
    // compare against the same gateway without it.)
    let functions = if gateway.with_layer {
        functions.route_layer(gateway.layer())
    } else {
        functions
    };
    // Outside the scale layer and longer than its readiness deadline, so the 504 that
    // names the function is what a client sees.
    let outer_timeout = gateway.deadline + std::time::Duration::from_secs(30);
    Router::new()
        .merge(functions)
        .route("/healthz", get(|| async { "ok\n" }))
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

async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    common::metrics_response(&gateway).into_response()
}

async fn forward(State(gateway): State<Arc<Gateway>>, req: Request) -> Response {
    gateway.forward(req).await.into_response()
}

fn main() {
    common::main(serve);
}

pub async fn serve(args: Vec<String>) {
    let (_, gateway, listener) = common::start("axum gateway", args).await;
    // On SIGTERM: stop accepting, drain the held requests, finish what is in flight.
    axum::serve(listener, router(Arc::clone(&gateway)))
        .with_graceful_shutdown(common::shutdown_signal_and_drain(gateway))
        .await
        .expect("server");
}
