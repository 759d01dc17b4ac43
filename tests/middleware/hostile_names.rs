//! Hostile names get 400 and leave no trace: no provider call, no cache entry, no flight.

use crate::support::harness as common;

use std::convert::Infallible;
use std::sync::Arc;

use common::{Echo, Harness};
use http::{Request, StatusCode};
use tower::{Layer, ServiceExt};
use tower_scale_from_zero::cache::TtlCache;
use tower_scale_from_zero::extract::{from_fn, Extracted};
use tower_scale_from_zero::testing::{FakeFunction, InMemoryProvider};
use tower_scale_from_zero::{ErrorKind, FunctionScaler, ScaleFromZeroLayer, ScalingConfig};

#[tokio::test(start_paused = true)]
async fn hostile_paths_get_400_with_no_provider_call_and_no_cache_entry() {
    let h = Harness::new(ScalingConfig::default()).with_function("echo", FakeFunction::new());
    let long = "a".repeat(64);
    // http::Uri refuses paths past 64 KiB; this is close to the largest it carries.
    let huge = "b".repeat(60_000);
    let cases: Vec<(String, &str)> = vec![
        ("/function/".into(), "name: is empty"),
        ("/function//rest".into(), "name: is empty"),
        (format!("/function/{long}"), "64 bytes"),
        (format!("/function/{huge}"), "60000 bytes"),
        (format!("/function/echo.{long}"), "namespace: is 64 bytes"),
        ("/function/Echo".into(), "'E' at byte 0"),
        ("/function/..".into(), "name: has '.'"),
        ("/function/a..b".into(), "name: has '.'"),
        ("/function/a.b.c".into(), "name: has '.'"),
        ("/function/%65cho".into(), "'%' at byte 0"),
        ("/function/%C3%A9".into(), "'%'"),
        ("/function/echo%00".into(), "'%'"),
        ("/function/-echo".into(), "start and end"),
        ("/function/echo-".into(), "start and end"),
        ("/function/ech_o".into(), "'_'"),
        ("/function/echo.Dev".into(), "namespace: has 'D'"),
        ("/function/.echo".into(), "name: is empty"),
    ];
    for (path, why) in &cases {
        let reply = h.get(path).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(
            reply.body.contains(why),
            "{path}: {:?} lacks {why:?}",
            reply.body
        );
        assert!(reply.body.len() < 200, "the body never echoes the input");
        assert_eq!(reply.body.lines().count(), 1);
        assert_eq!(reply.error.unwrap().kind(), ErrorKind::InvalidFunction);
    }
    assert_eq!(h.provider.get_calls(), 0);
    assert_eq!(h.provider.set_calls(), 0);
    assert_eq!(h.cache.len(), 0);
    assert_eq!(h.scaler.stats().flights, 0);
    assert_eq!(h.inner_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_trailing_dot_means_the_default_namespace() {
    // The documented rule (the reference design would make the namespace empty instead).
    let h = Harness::new(ScalingConfig::default()).with_function("echo", FakeFunction::new());
    assert_eq!(h.get("/function/echo.").await.status, 200);
    assert_eq!(h.get("/function/echo.openfaas-fn/x").await.status, 200);
    assert_eq!(
        h.provider.successful_sets(),
        1,
        "both name the same function"
    );
}

/// Names no URI can carry (control bytes, raw unicode, whitespace) reach the validator
/// through custom extractors.
#[tokio::test(start_paused = true)]
async fn unicode_and_control_bytes_from_a_custom_extractor_get_400() {
    let provider = Arc::new(InMemoryProvider::new());
    let cache = Arc::new(TtlCache::new(ScalingConfig::default().cache_ttl(), 100));
    let scaler = FunctionScaler::builder(provider.clone())
        .cache(cache.clone())
        .build();
    let by_header = from_fn(|req: &Request<String>| {
        let name = req.extensions().get::<String>()?;
        Some(Extracted::new(name.as_str(), "fn"))
    });
    let gateway = ScaleFromZeroLayer::new(scaler)
        .extractor(by_header)
        .layer(Echo::default());
    for name in [
        "é",
        "ech\0o",
        "echo\n",
        "ec ho",
        "\u{202e}ohce",
        "\u{1F600}",
        "echo\r\nX: y",
    ] {
        let mut req = Request::get("/").body(String::new()).unwrap();
        req.extensions_mut().insert(name.to_string());
        let reply = common::Reply::from(
            gateway
                .clone()
                .oneshot(req)
                .await
                .unwrap_or_else(|e: Infallible| match e {}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{name:?}");
        assert_eq!(reply.body.lines().count(), 1, "{name:?}: {:?}", reply.body);
        assert!(reply.body.ends_with('\n'));
    }
    assert_eq!(provider.get_calls(), 0);
    assert_eq!(cache.len(), 0);
}
