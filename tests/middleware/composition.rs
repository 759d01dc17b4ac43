//! The layer composes with other tower layers and with axum, without `HandleErrorLayer`.

use crate::support::harness as common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::routing::{any, get};
use axum::Router;
use common::{ms, Echo};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::{ServiceBuilder, ServiceExt};
use tower_scale_from_zero::testing::{FakeFunction, InMemoryProvider};
use tower_scale_from_zero::{FunctionId, FunctionScaler, ScaleFromZeroLayer, ScalingConfig};

fn platform() -> (Arc<InMemoryProvider>, FunctionScaler) {
    let provider = Arc::new(InMemoryProvider::new());
    let id = FunctionId::new("echo", "openfaas-fn").unwrap();
    provider.add_function(&id, FakeFunction::new().startup_delay(ms(300)));
    let scaler = FunctionScaler::new(provider.clone(), ScalingConfig::default());
    (provider, scaler)
}

#[tokio::test(start_paused = true)]
async fn inside_service_builder_with_a_timeout_and_a_concurrency_limit() {
    let (provider, scaler) = platform();
    let gateway = ServiceBuilder::new()
        .timeout(Duration::from_secs(90)) // outside: longer than the readiness deadline
        .layer(ScaleFromZeroLayer::new(scaler))
        .concurrency_limit(64)
        .service(Echo::default());

    let calls: Vec<_> = (0..100)
        .map(|_| {
            let req = Request::get("/function/echo").body(String::new()).unwrap();
            tokio::spawn(gateway.clone().oneshot(req))
        })
        .collect();
    for call in calls {
        let response = call.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello from /function/echo");
    }
    assert_eq!(provider.successful_sets(), 1);

    let req = Request::get("/function/missing")
        .body(String::new())
        .unwrap();
    let response = gateway.oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(start_paused = true)]
async fn as_an_axum_route_layer_driven_with_oneshot() {
    let (provider, scaler) = platform();
    let app = Router::new()
        .route(
            "/function/{name}",
            any(|Path(name): Path<String>| async move { format!("hi from {name}") }),
        )
        .route_layer(ScaleFromZeroLayer::new(scaler))
        .route("/healthz", get(|| async { "ok" }));

    let call = |path: &str| {
        let app = app.clone();
        let req = Request::get(path).body(Body::empty()).unwrap();
        async move {
            let response = app.oneshot(req).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    assert_eq!(
        call("/function/echo").await,
        (StatusCode::OK, "hi from echo".into())
    );
    assert_eq!(provider.successful_sets(), 1);
    assert_eq!(
        call("/function/echo").await,
        (StatusCode::OK, "hi from echo".into())
    );
    assert_eq!(
        provider.get_calls(),
        5,
        "query, a look right after scaling, 3 polls of 100 ms; the second call was warm"
    );

    let (status, body) = call("/function/nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, "function nobody.openfaas-fn not found\n");
    let (status, _) = call("/function/Bad").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(call("/healthz").await, (StatusCode::OK, "ok".into()));
}

#[tokio::test(start_paused = true)]
async fn under_axum_nest_the_prefix_is_configurable() {
    use tower_scale_from_zero::extract::OpenFaasPath;
    let (provider, scaler) = platform();
    let functions = Router::new()
        .route(
            "/{name}",
            any(|Path(name): Path<String>| async move { name }),
        )
        .route_layer(ScaleFromZeroLayer::new(scaler).extractor(OpenFaasPath::new().prefix("/")));
    let app = Router::new().nest("/function", functions);
    let req = Request::get("/function/echo").body(Body::empty()).unwrap();
    assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::OK);
    assert_eq!(provider.successful_sets(), 1);
}
