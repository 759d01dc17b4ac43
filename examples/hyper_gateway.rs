//! The same scale-from-zero gateway on plain hyper 1 + hyper-util, with `ServiceBuilder` and
//! no axum.
//!
//! ```sh
//! cargo run --example hyper_gateway
//! curl -i localhost:8080/function/hello-world
//! ```

#[path = "common/mod.rs"]
pub mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use common::{Gateway, ProxyBody};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::{service_fn, BoxError, ServiceBuilder};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// The gateway as one tower service: trace → timeout → scale-from-zero → routes.
pub fn service(
    gateway: Arc<Gateway>,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<
        impl http_body::Body<Data = bytes::Bytes, Error = impl Into<BoxError>> + Send + 'static,
    >,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
       + Send
       + 'static {
    let outer_timeout = gateway.deadline + Duration::from_secs(30);
    ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            outer_timeout,
        ))
        .layer(gateway.layer())
        .service(service_fn(move |req: Request<Incoming>| {
            let gateway = Arc::clone(&gateway);
            async move { Ok::<_, Infallible>(route(&gateway, req).await) }
        }))
}

async fn route(gateway: &Gateway, req: Request<Incoming>) -> Response<ProxyBody> {
    match req.uri().path() {
        "/healthz" => common::text(StatusCode::OK, "ok\n"),
        "/metrics" => common::metrics_response(gateway),
        path if path.starts_with("/function/") => gateway.forward(req).await,
        _ => common::text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn main() {
    common::main(serve);
}

pub async fn serve(args: Vec<String>) {
    let (options, gateway, listener) = common::start("hyper gateway", args).await;
    if options.without_layer {
        eprintln!("--without-scale-from-zero is for axum_gateway's benchmarks only");
        std::process::exit(2);
    }
    let service = service(Arc::clone(&gateway));
    let budget = gateway.drain_budget;
    let shutdown = common::shutdown_signal_and_drain(gateway);
    tokio::pin!(shutdown);
    // Tracks every connection, so that a shutdown can wait for them to finish.
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that never finishes its headers does not hold a connection for ever.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(service.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    // Stop accepting (done), let held requests drain and in-flight ones finish; the drain
    // answers what is still waiting after its budget, so this ends soon after it.
    let limit = budget + Duration::from_secs(5);
    if tokio::time::timeout(limit, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open {} s after the drain budget; closing",
            5
        );
    }
}
