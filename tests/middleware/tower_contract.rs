//! The tower contract: `poll_ready` is honoured, and a request held for a cold start keeps no
//! inner readiness slot.

use crate::support::harness as common;

use std::sync::Arc;
use std::time::Duration;

use common::{ms, Echo};
use http::{Request, Response, StatusCode};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_scale_from_zero::testing::{FakeFunction, InMemoryProvider};
use tower_scale_from_zero::{FunctionId, FunctionScaler, ScaleFromZeroLayer, ScalingConfig};
use tower_test::mock;

fn platform() -> (Arc<InMemoryProvider>, FunctionScaler) {
    let provider = Arc::new(InMemoryProvider::new());
    for (name, spec) in [
        ("warm", FakeFunction::new().running(1)),
        ("cold", FakeFunction::new().startup_delay(ms(1_000))),
    ] {
        provider.add_function(&FunctionId::new(name, "openfaas-fn").unwrap(), spec);
    }
    let scaler = FunctionScaler::new(provider.clone(), ScalingConfig::default());
    (provider, scaler)
}

fn req(path: &str) -> Request<String> {
    Request::get(path).body(String::new()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn poll_ready_is_delegated_and_a_not_ready_inner_service_is_never_called() {
    let (_, scaler) = platform();
    let (inner, mut handle) = mock::pair::<Request<String>, Response<String>>();
    let mut svc = mock::Spawn::new(ScaleFromZeroLayer::new(scaler).layer(inner));

    handle.allow(0);
    assert!(
        svc.poll_ready().is_pending(),
        "not ready while the inner service is not"
    );
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());

    let response = tokio::spawn(svc.call(req("/function/warm")));
    let (request, send) = handle.next_request().await.unwrap();
    assert_eq!(request.uri().path(), "/function/warm");
    send.send_response(Response::new("hi".to_string()));
    assert_eq!(response.await.unwrap().unwrap().status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn after_a_cold_start_the_request_waits_for_inner_readiness_again() {
    let (_, scaler) = platform();
    let (inner, mut handle) = mock::pair::<Request<String>, Response<String>>();
    let mut svc = mock::Spawn::new(ScaleFromZeroLayer::new(scaler).layer(inner));
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let response = tokio::spawn(svc.call(req("/function/cold")));

    // The readiness `call` was made with is given back; the inner service is full meanwhile.
    handle.allow(0);
    tokio::time::sleep(Duration::from_secs(2)).await; // the function is ready after 1 s
    assert!(
        tokio::time::timeout(ms(1), handle.next_request())
            .await
            .is_err(),
        "a not-ready inner service is never called"
    );

    handle.allow(1);
    let (request, send) = handle.next_request().await.unwrap();
    assert_eq!(request.uri().path(), "/function/cold");
    send.send_response(Response::new("hi".to_string()));
    assert_eq!(response.await.unwrap().unwrap().status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_held_request_does_not_keep_a_concurrency_limit_permit() {
    let (_, scaler) = platform();
    let gateway = ServiceBuilder::new()
        .layer(ScaleFromZeroLayer::new(scaler))
        .concurrency_limit(1)
        .service(Echo::default());

    let mut cold_client = gateway.clone();
    let cold = tokio::spawn(async move {
        let svc = cold_client.ready().await.unwrap(); // takes the only permit
        svc.call(req("/function/cold")).await.unwrap().status()
    });
    tokio::time::sleep(ms(100)).await;

    // While the cold request waits (1 s), the only permit is free for others.
    let healthz = tokio::time::timeout(ms(1), gateway.clone().oneshot(req("/healthz"))).await;
    assert_eq!(
        healthz.expect("permit was free").unwrap().status(),
        StatusCode::OK
    );
    let warm = tokio::time::timeout(ms(1), gateway.clone().oneshot(req("/function/warm"))).await;
    assert_eq!(
        warm.expect("permit was free").unwrap().status(),
        StatusCode::OK
    );

    assert_eq!(cold.await.unwrap(), StatusCode::OK);
}
