//! The same scale-from-zero gateway on plain hyper 1 + hyper-util, with `ServiceBuilder` and
//! no axum.
//!
//! ```sh
//! cargo run --features process,openfaas --example hyper_gateway
//! curl -i localhost:8080/function/hello-world
//! ```
//!
//! The options are the axum example's (`-- --help`); what is not about wiring the layer into
//! hyper lives in `gateway-kit`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gateway_kit::proxy::{text, ProxyBody};
use gateway_kit::{shutdown, Gateway};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::{service_fn, BoxError, ServiceBuilder};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Routes behind the layer. The layer holds only `/function/...` requests: for other paths its
/// extractor finds no function and lets them through.
async fn route(gateway: &Gateway, req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => gateway.readiness_response(),
        "/metrics" => gateway.metrics_response(),
        path if path.starts_with("/function/") => gateway.forward(req, Some(peer)).await,
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The gateway as one tower service for the client at `peer`: trace → timeout (longer than
/// the readiness deadline, so the layer's 504 wins) → scale from zero → routes.
fn service(
    gateway: Arc<Gateway>,
    peer: SocketAddr,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<
        impl http_body::Body<Data = bytes::Bytes, Error = impl Into<BoxError>> + Send,
    >,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
       + Send
       + 'static {
    ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            gateway.deadline() + Duration::from_secs(30),
        ))
        .layer(gateway.layer())
        .service(service_fn(move |req: Request<Incoming>| {
            let gateway = Arc::clone(&gateway);
            async move { Ok::<_, Infallible>(route(&gateway, req, peer).await) }
        }))
}

fn main() {
    // Command line, logs, gateway and listener (or the bundled function's mode): gateway-kit.
    gateway_kit::run("hyper gateway", serve);
}

async fn serve(gateway: Arc<Gateway>, listener: tokio::net::TcpListener) {
    let budget = gateway.drain_budget();
    let shutdown = shutdown::signal_then_drain(gateway.scaler().clone(), budget);
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
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(service(Arc::clone(&gateway), peer));
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
    if tokio::time::timeout(budget + Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open 5 s after the drain budget; closing");
    }
}
