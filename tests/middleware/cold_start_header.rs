//! The optional response header that tells a client its request waited for a cold start.

use crate::support::harness as common;

use common::{ms, Echo, Reply};
use http::{HeaderName, Request};
use std::sync::Arc;
use tower::{Layer, ServiceExt};
use tower_scale_from_zero::testing::{FakeFunction, InMemoryProvider};
use tower_scale_from_zero::{FunctionScaler, ScaleFromZeroLayer, ScalingConfig};

const HEADER: &str = "x-cold-start-ms";

#[tokio::test(start_paused = true)]
async fn a_request_that_waited_says_how_long_and_a_warm_one_says_nothing() {
    let provider = Arc::new(InMemoryProvider::new());
    for name in ["echo", "other"] {
        provider.add_function(
            &common::id(name),
            FakeFunction::new().startup_delay(ms(700)),
        );
    }
    let scaler = FunctionScaler::new(provider, ScalingConfig::default());
    let layer = |header: bool| {
        let layer = ScaleFromZeroLayer::new(scaler.clone());
        let layer = if header {
            layer.cold_start_header(HeaderName::from_static(HEADER))
        } else {
            layer
        };
        layer.layer(Echo::default())
    };
    let get_from = |service: tower_scale_from_zero::ScaleFromZero<Echo>, name: &str| {
        let req = Request::get(format!("/function/{name}"))
            .body(String::new())
            .unwrap();
        async move { Reply::from(service.oneshot(req).await.unwrap()).await }
    };
    let get = |service| get_from(service, "echo");

    let cold = get(layer(true)).await;
    assert_eq!(cold.status, 200);
    let waited: u64 = cold.headers[HEADER].to_str().unwrap().parse().unwrap();
    assert!((700..=800).contains(&waited), "{waited}");
    // Warm now: no header.
    let warm = get(layer(true)).await;
    assert!(warm.headers.get(HEADER).is_none());
    // Off by default: a cold start, and no header.
    let plain = get_from(layer(false), "other").await;
    assert_eq!(plain.status, 200);
    assert!(plain.headers.get(HEADER).is_none());
}
