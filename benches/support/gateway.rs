//! What the gateway benchmarks share: the axum example's router shape over a `gateway-kit`
//! gateway, and the benchmark-only switches (every function already running at one address;
//! the same gateway without the layer) that the user-facing examples do not carry.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use gateway_kit::proxy::{Forward, Proxy};
use gateway_kit::Gateway;
use tower_scale_from_zero::{
    FunctionId, FunctionScaler, QueryError, ScaleFromZeroLayer, ScalingConfig, ServiceQuery,
    ServiceQueryResponse,
};

/// The axum example's function routes over `gateway`.
pub fn router(gateway: Arc<Gateway>) -> Router {
    async fn forward(
        State(gateway): State<Arc<Gateway>>,
        ConnectInfo(peer): ConnectInfo<SocketAddr>,
        req: Request,
    ) -> Response {
        gateway.forward(req, Some(peer)).await.into_response()
    }
    Router::new()
        .route("/function/{name}", any(forward))
        .route("/function/{name}/{*rest}", any(forward))
        .route_layer(gateway.layer())
        .with_state(gateway)
}

/// Every function exists and is running (at the static upstream).
#[derive(Clone, Copy, Debug)]
pub struct AlwaysRunning;

#[async_trait::async_trait]
impl ServiceQuery for AlwaysRunning {
    async fn get_replicas(&self, _: &FunctionId) -> Result<ServiceQueryResponse, QueryError> {
        Ok(ServiceQueryResponse::new(1, 1))
    }

    async fn set_replicas(&self, _: &FunctionId, _: u64) -> Result<(), QueryError> {
        Ok(())
    }
}

#[derive(Clone)]
struct Static {
    upstream: SocketAddr,
    proxy: Proxy,
}

/// A gateway whose every function runs at `upstream`, with the layer (over
/// [`AlwaysRunning`]) or without it: the warm-path load comparison.
pub fn static_router(upstream: SocketAddr, with_layer: bool) -> Router {
    async fn forward(
        State(s): State<Static>,
        ConnectInfo(peer): ConnectInfo<SocketAddr>,
        req: Request,
    ) -> Response {
        let rest = match gateway_kit::gateway::path_after_function(req.uri().path()) {
            "" => "/",
            rest => rest,
        };
        let uri = format!("http://{}{rest}", s.upstream).parse().unwrap();
        match s
            .proxy
            .forward(req, Forward::to(uri).from(Some(peer)))
            .await
        {
            Ok(response) => response.into_response(),
            Err(err) => err.into_response().into_response(),
        }
    }
    let tls = gateway_kit::platform::tls_config(gateway_kit::cli::Roots::Webpki, None).unwrap();
    let state = Static {
        upstream,
        proxy: Proxy::new(tls, Vec::new()),
    };
    let routes = Router::new()
        .route("/function/{name}", any(forward))
        .route("/function/{name}/{*rest}", any(forward));
    let routes = if with_layer {
        let scaler = FunctionScaler::new(AlwaysRunning, ScalingConfig::default());
        routes.route_layer(ScaleFromZeroLayer::new(scaler))
    } else {
        routes
    };
    routes.with_state(state)
}
