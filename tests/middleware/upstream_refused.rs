//! "Ready" is not always "routable" yet: held requests are marked with [`ColdStart`] so the
//! forwarding service can retry a refused first connection, and it can evict the function's
//! cache entry so the next request checks the provider again.

use crate::support::harness as common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{id, ms, Harness};
use http::{Request, Response, StatusCode};
use tower::{service_fn, Layer, ServiceExt};
use tower_scale_from_zero::cache::FunctionCacher;
use tower_scale_from_zero::middleware::ColdStart;
use tower_scale_from_zero::testing::FakeFunction;
use tower_scale_from_zero::{ScaleFromZeroLayer, ScalingConfig};

#[tokio::test(start_paused = true)]
async fn held_requests_carry_cold_start_when_asked_and_warm_ones_never() {
    let h = Harness::new(ScalingConfig::default())
        .with_function("echo", FakeFunction::new().startup_delay(ms(300)))
        .with_function("warm", FakeFunction::new().running(1));
    let seen = service_fn(|req: Request<String>| async move {
        let waited = req.extensions().get::<ColdStart>().map(|c| c.waited());
        Ok::<_, Infallible>(Response::new(format!("{waited:?}")))
    });
    let gateway = ScaleFromZeroLayer::new(h.scaler.clone())
        .mark_cold_starts(true)
        .layer(seen);
    let get = |path: &str| {
        let req = Request::get(path).body(String::new()).unwrap();
        gateway.clone().oneshot(req)
    };
    let body = |r: Response<_>| async {
        use http_body_util::BodyExt;
        let bytes = BodyExt::collect(r.into_body()).await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    let cold = get("/function/echo").await.unwrap();
    assert_eq!(body(cold).await, "Some(300ms)");
    let warm_now = get("/function/echo").await.unwrap();
    assert_eq!(body(warm_now).await, "None", "served from the cache");
    let refreshed = get("/function/warm").await.unwrap();
    assert_eq!(
        body(refreshed).await,
        "None",
        "a warm function's first look is no cold start"
    );
}

#[tokio::test(start_paused = true)]
async fn evicting_after_a_refused_upstream_makes_the_next_request_check_again() {
    let h = Harness::new(ScalingConfig::default())
        .with_function("echo", FakeFunction::new().running(1));
    let scaler = h.scaler.clone();
    let refusals = Arc::new(AtomicUsize::new(1));
    // An upstream that refuses once (ready, not yet routable) and tells the scaler so.
    let upstream = service_fn(move |req: Request<String>| {
        let scaler = scaler.clone();
        let refusals = Arc::clone(&refusals);
        async move {
            if refusals.fetch_sub(1, Ordering::SeqCst) > 0 {
                scaler.evict(id("echo").as_function_ref());
                let mut refused = Response::new(String::from("upstream refused"));
                *refused.status_mut() = StatusCode::BAD_GATEWAY;
                return Ok::<_, Infallible>(refused);
            }
            Ok(Response::new(req.uri().path().to_owned()))
        }
    });
    let gateway = ScaleFromZeroLayer::new(h.scaler.clone()).layer(upstream);
    let get = || {
        let req = Request::get("/function/echo").body(String::new()).unwrap();
        gateway.clone().oneshot(req)
    };
    assert_eq!(get().await.unwrap().status(), StatusCode::BAD_GATEWAY);
    assert_eq!(h.cache.entry_count(), Some(0), "evicted");
    assert_eq!(h.provider.get_calls(), 1);
    assert_eq!(get().await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        h.provider.get_calls(),
        2,
        "checked again instead of trusting the cache"
    );
    assert_eq!(h.scaler.cache().entry_count(), Some(1));
}
