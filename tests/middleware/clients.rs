//! Responses by kind of client (docs/behaviour.md §12): a waiting page for browsers, gRPC statuses for
//! gRPC calls; everyone else is held as before.

use std::time::Duration;

use http::{header, Request, StatusCode};
use tower::{Layer, ServiceExt};
use tower_scale_from_zero::middleware::WaitingPage;
use tower_scale_from_zero::testing::{FakeFunction, Fault, InMemoryProvider};
use tower_scale_from_zero::{FunctionScaler, QueryError, ScaleFromZeroLayer, ScalingConfig};

use crate::support::harness::{id, ms, Echo, Reply};

fn gateway(
    config: ScalingConfig,
    layer: impl FnOnce(ScaleFromZeroLayer) -> ScaleFromZeroLayer,
) -> (
    tower_scale_from_zero::ScaleFromZero<Echo>,
    std::sync::Arc<InMemoryProvider>,
) {
    let provider = std::sync::Arc::new(InMemoryProvider::new());
    let scaler = FunctionScaler::new(provider.clone(), config);
    (
        layer(ScaleFromZeroLayer::new(scaler)).layer(Echo::default()),
        provider,
    )
}

async fn send(
    gateway: &tower_scale_from_zero::ScaleFromZero<Echo>,
    req: http::request::Builder,
) -> Reply {
    let response = gateway
        .clone()
        .oneshot(req.body(String::new()).unwrap())
        .await
        .unwrap();
    Reply::from(response).await
}

fn browser(path: &str) -> http::request::Builder {
    Request::get(path).header(
        header::ACCEPT,
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    )
}

/// The reload period a page asks for, from its `<meta http-equiv="refresh">`.
fn meta_refresh(body: &str) -> Duration {
    let start = body
        .find(r#"http-equiv="refresh" content=""#)
        .expect("a meta refresh")
        + r#"http-equiv="refresh" content=""#.len();
    let seconds: u64 = body[start..].split('"').next().unwrap().parse().unwrap();
    Duration::from_secs(seconds)
}

#[tokio::test(start_paused = true)]
async fn a_browser_gets_a_page_that_reloads_itself_until_the_cold_function_answers() {
    let (gateway, provider) = gateway(ScalingConfig::default(), |layer| {
        layer.waiting_page(WaitingPage::new())
    });
    provider.add_function(&id("slow"), FakeFunction::new().startup_delay(ms(6_000)));
    let started = tokio::time::Instant::now();
    let first = send(&gateway, browser("/function/slow")).await;
    // Held for a second like any request, then the page.
    assert_eq!(started.elapsed(), ms(1_000));
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        first.headers[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert_eq!(first.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(first.headers[header::RETRY_AFTER], "2");
    assert!(
        first.body.contains("slow.openfaas-fn is starting"),
        "{}",
        first.body
    );
    assert!(!first.body.contains("<script"), "no JavaScript needed");
    // Follow the reloads as a browser would, until the function itself answers.
    let mut pages = 1;
    let mut reply = first;
    while reply.headers.get(header::CONTENT_TYPE).is_some() {
        tokio::time::sleep(meta_refresh(&reply.body)).await;
        reply = send(&gateway, browser("/function/slow")).await;
        pages += 1;
        assert!(pages < 10, "still a page after {pages} loads");
    }
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "hello from /function/slow");
    assert!(pages >= 3, "{pages} loads over a 6 s start");
    assert!(started.elapsed() < ms(6_000 + 2_000 + 1_000));
    assert_eq!(
        provider.scale_ups_this_cold_period(&id("slow")),
        1,
        "one cold start for all the loads"
    );
}

#[tokio::test(start_paused = true)]
async fn api_clients_posts_and_upgrades_are_held_as_before() {
    let (gateway, provider) = gateway(ScalingConfig::default(), |layer| {
        layer.waiting_page(WaitingPage::new())
    });
    provider.add_function(&id("slow"), FakeFunction::new().startup_delay(ms(3_000)));
    let api = tokio::spawn({
        let gateway = gateway.clone();
        async move {
            send(
                &gateway,
                Request::get("/function/slow").header(header::ACCEPT, "application/json"),
            )
            .await
        }
    });
    let post = tokio::spawn({
        let gateway = gateway.clone();
        async move {
            send(
                &gateway,
                Request::post("/function/slow").header(header::ACCEPT, "text/html"),
            )
            .await
        }
    });
    let upgrade = tokio::spawn({
        let gateway = gateway.clone();
        async move {
            send(
                &gateway,
                browser("/function/slow").header(header::UPGRADE, "websocket"),
            )
            .await
        }
    });
    for reply in [
        api.await.unwrap(),
        post.await.unwrap(),
        upgrade.await.unwrap(),
    ] {
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.body, "hello from /function/slow",
            "held, then forwarded"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_quick_cold_start_shows_no_page_and_a_function_that_cannot_start_shows_its_error() {
    let (gateway, provider) = gateway(ScalingConfig::default(), |layer| {
        layer.waiting_page(WaitingPage::new().after(ms(500)))
    });
    provider.add_function(&id("quick"), FakeFunction::new().startup_delay(ms(300)));
    let quick = send(&gateway, browser("/function/quick")).await;
    assert_eq!(quick.body, "hello from /function/quick");
    let unknown = send(&gateway, browser("/function/nope")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
}

#[tokio::test(start_paused = true)]
async fn the_page_is_the_users_template_with_the_function_name_escaped() {
    let template = "<!doctype html><meta http-equiv=\"refresh\" content=\"{refresh}\"><h1>{function} warms up</h1>";
    let (gateway, provider) = gateway(ScalingConfig::default(), |layer| {
        layer.waiting_page(
            WaitingPage::new()
                .template(template)
                .refresh(Duration::from_secs(5))
                .after(Duration::ZERO),
        )
    });
    provider.add_function(&id("slow"), FakeFunction::new().startup_delay(ms(3_000)));
    let page = send(&gateway, browser("/function/slow")).await;
    assert_eq!(
        page.body,
        "<!doctype html><meta http-equiv=\"refresh\" content=\"5\"><h1>slow.openfaas-fn warms up</h1>"
    );
    assert_eq!(page.headers[header::RETRY_AFTER], "5");
    assert_eq!(page.headers["refresh"], "5");
}

#[tokio::test(start_paused = true)]
async fn without_a_waiting_page_browsers_are_held() {
    let (gateway, provider) = gateway(ScalingConfig::default(), |layer| layer);
    provider.add_function(&id("slow"), FakeFunction::new().startup_delay(ms(3_000)));
    let reply = send(&gateway, browser("/function/slow")).await;
    assert_eq!(reply.body, "hello from /function/slow");
}

fn grpc(path: &str) -> http::request::Builder {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/grpc+proto")
        .header("te", "trailers")
}

#[tokio::test(start_paused = true)]
async fn refused_grpc_calls_get_grpc_statuses() {
    let config = ScalingConfig::builder()
        .readiness_deadline(Duration::from_secs(2))
        .max_held_per_function(1)
        .build();
    let (gateway, provider) = gateway(config, |layer| layer.grpc_statuses(true));
    provider.add_function(&id("slow"), FakeFunction::new().startup_delay(ms(10_000)));

    let status = |reply: &Reply| {
        assert_eq!(reply.status, StatusCode::OK, "gRPC errors travel in a 200");
        assert_eq!(reply.headers[header::CONTENT_TYPE], "application/grpc");
        assert!(reply.body.is_empty());
        let message = reply.headers["grpc-message"].to_str().unwrap().to_string();
        (
            reply.headers["grpc-status"].to_str().unwrap().to_string(),
            message,
        )
    };
    let unknown = send(&gateway, grpc("/function/nope")).await;
    let (code, message) = status(&unknown);
    assert_eq!(code, "5", "NOT_FOUND");
    assert!(message.contains("nope.openfaas-fn"), "{message}");
    assert_eq!(
        unknown.error.unwrap().status(),
        StatusCode::NOT_FOUND,
        "the error is kept"
    );

    let invalid = send(&gateway, grpc("/function/Not_A_Name")).await;
    assert_eq!(status(&invalid).0, "3", "INVALID_ARGUMENT");

    // One held (the per-function limit is 1): the next is UNAVAILABLE, the held one runs out
    // of time: DEADLINE_EXCEEDED.
    let held = tokio::spawn({
        let gateway = gateway.clone();
        async move { send(&gateway, grpc("/function/slow")).await }
    });
    tokio::time::sleep(ms(10)).await;
    let full = send(&gateway, grpc("/function/slow")).await;
    assert_eq!(status(&full).0, "14", "UNAVAILABLE");
    assert!(full.headers.contains_key(header::RETRY_AFTER));
    let late = held.await.unwrap();
    let (code, message) = status(&late);
    assert_eq!(code, "4", "DEADLINE_EXCEEDED");
    assert!(message.contains("not ready after 2000 ms"), "{message}");
}

#[tokio::test(start_paused = true)]
async fn grpc_statuses_are_for_grpc_calls_only_and_off_unless_asked_for() {
    let (with, _) = gateway(ScalingConfig::default(), |layer| layer.grpc_statuses(true));
    let plain = send(&with, Request::get("/function/nope")).await;
    assert_eq!(plain.status, StatusCode::NOT_FOUND);
    assert!(!plain.headers.contains_key("grpc-status"));
    let (without, _) = gateway(ScalingConfig::default(), |layer| layer);
    let call = send(&without, grpc("/function/nope")).await;
    assert_eq!(call.status, StatusCode::NOT_FOUND);
    assert!(!call.headers.contains_key("grpc-status"));
}

// --- cold starts belong to the scaler (docs/behaviour.md §13) ---------------------------------

/// Follows a browser's reloads until the function itself answers; the number of loads.
async fn reload_until_served(
    gateway: &tower_scale_from_zero::ScaleFromZero<Echo>,
    path: &str,
    first: Reply,
) -> (Reply, usize) {
    let mut loads = 1;
    let mut reply = first;
    while reply.headers.get(header::CONTENT_TYPE).is_some() {
        tokio::time::sleep(meta_refresh(&reply.body)).await;
        reply = send(gateway, browser(path)).await;
        loads += 1;
        assert!(
            loads < 20,
            "still a page after {loads} loads: {}",
            reply.body
        );
    }
    (reply, loads)
}

#[tokio::test(start_paused = true)]
async fn a_browser_alone_gets_its_function_started_when_the_provider_is_slower_than_the_page() {
    let (gateway, provider) = gateway(ScalingConfig::default(), |layer| {
        layer.waiting_page(WaitingPage::new())
    });
    provider.add_function(&id("f"), FakeFunction::new().startup_delay(ms(2_000)));
    // Every provider call takes 1.5 s; the page shows after 1 s.
    provider.call_latency(ms(1_500));
    let first = send(&gateway, browser("/function/f")).await;
    assert!(
        first.body.contains("f.openfaas-fn is starting"),
        "{}",
        first.body
    );
    let (reply, _) = reload_until_served(&gateway, "/function/f", first).await;
    assert_eq!(reply.body, "hello from /function/f");
    assert_eq!(
        provider.set_calls(),
        1,
        "one scale-up, sent by the cold start"
    );
}

#[tokio::test(start_paused = true)]
async fn a_browser_alone_gets_its_function_started_with_the_page_at_once() {
    let (gateway, provider) = gateway(ScalingConfig::default(), |layer| {
        layer.waiting_page(WaitingPage::new().after(Duration::ZERO))
    });
    provider.add_function(&id("f"), FakeFunction::new().startup_delay(ms(3_000)));
    let first = send(&gateway, browser("/function/f")).await;
    assert!(first.body.contains("is starting"), "{}", first.body);
    let (reply, loads) = reload_until_served(&gateway, "/function/f", first).await;
    assert_eq!(reply.body, "hello from /function/f");
    assert!(loads >= 2);
    assert_eq!(provider.set_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_browser_sees_a_failing_providers_error_not_the_page() {
    let (gateway, provider) = gateway(ScalingConfig::default(), |layer| {
        layer.waiting_page(WaitingPage::new().after(Duration::ZERO))
    });
    provider.add_function(&id("f"), FakeFunction::new());
    provider.fail_get(
        Fault::Error(QueryError::provider("connection refused")),
        usize::MAX,
    );
    let reply = send(&gateway, browser("/function/f")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.body);
}

#[tokio::test(start_paused = true)]
async fn the_refresh_of_a_warm_function_never_shows_the_page() {
    let (gateway, provider) = gateway(ScalingConfig::default(), |layer| {
        layer.waiting_page(WaitingPage::new().after(Duration::ZERO))
    });
    provider.add_function(&id("warm"), FakeFunction::new().running(1));
    // The refresh (the cache is empty, or its entry expired) takes longer than the page's
    // delay.
    provider.call_latency(ms(300));
    for _ in 0..3 {
        let reply = send(&gateway, browser("/function/warm")).await;
        assert_eq!(reply.body, "hello from /function/warm");
        tokio::time::sleep(ms(1_000)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn grpc_messages_never_carry_provider_text_unless_opted_in() {
    for (expose, layer) in [
        (
            false,
            (|l| l.grpc_statuses(true)) as fn(ScaleFromZeroLayer) -> ScaleFromZeroLayer,
        ),
        (true, |l| l.grpc_statuses(true).grpc_provider_errors(true)),
    ] {
        let (gateway, provider) = gateway(ScalingConfig::default(), layer);
        provider.add_function(&id("f"), FakeFunction::new());
        provider.fail_get(
            Fault::Error(
                QueryError::provider("token hunter2 was refused")
                    .with_status(StatusCode::UNAUTHORIZED)
                    .permanent(),
            ),
            usize::MAX,
        );
        let reply = send(&gateway, grpc("/function/f")).await;
        assert_eq!(reply.headers["grpc-status"], "14");
        let message = reply.headers["grpc-message"].to_str().unwrap();
        assert!(message.contains("f.openfaas-fn"), "{message}");
        assert_eq!(message.contains("hunter2"), expose, "{message}");
    }
}

#[tokio::test(start_paused = true)]
async fn grpc_web_calls_get_grpc_web_refusals_and_content_types_match_in_any_case() {
    let (gateway, _) = gateway(ScalingConfig::default(), |layer| layer.grpc_statuses(true));
    for (content_type, answered) in [
        ("application/grpc-web+proto", "application/grpc-web"),
        ("application/grpc-web-text", "application/grpc-web-text"),
        ("Application/GRPC-Web", "application/grpc-web"),
        ("APPLICATION/GRPC+proto", "application/grpc"),
    ] {
        let call = Request::post("/function/nope").header(header::CONTENT_TYPE, content_type);
        let reply = send(&gateway, call).await;
        assert_eq!(reply.status, StatusCode::OK, "{content_type}");
        assert_eq!(reply.headers["grpc-status"], "5", "{content_type}");
        assert_eq!(
            reply.headers[header::CONTENT_TYPE],
            answered,
            "{content_type}"
        );
    }
}
