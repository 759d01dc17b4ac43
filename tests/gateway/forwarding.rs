//! The example gateways' forwarding right after a cold start (`gateway-kit`'s `Gateway`
//! behind the layer), over real TCP on 127.0.0.1: "ready" is not always routable yet (the
//! platform said ready, the port is not open), so the first forward of a held request is
//! retried on a refused connection when it can be sent again, and a refusal takes the
//! function out of the cache.

use crate::support::runner;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use gateway_kit::platform::{Platform, Upstreams};
use gateway_kit::proxy::Proxy;
use gateway_kit::{Gateway, Options};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, ServiceExt};
use tower_scale_from_zero::testing::{FakeFunction, InMemoryProvider};
use tower_scale_from_zero::{FunctionId, FunctionScaler, ScalingConfig};

/// A gateway whose platform says `late` is ready as soon as it is scaled, while its upstream
/// (`port`) is whatever the test makes of it.
fn gateway(port: u16) -> (Arc<InMemoryProvider>, Arc<Gateway>) {
    let provider = Arc::new(InMemoryProvider::new());
    provider.add_function(
        &FunctionId::new("late", "local").unwrap(),
        FakeFunction::new(),
    );
    let config = ScalingConfig::builder()
        .poll_interval(Duration::from_millis(5))
        .build();
    let platform = Platform {
        scaler: FunctionScaler::new(provider.clone(), config),
        upstreams: Upstreams::OpenFaas {
            base: format!("http://127.0.0.1:{port}"),
        },
    };
    let tls = gateway_kit::platform::tls_config(gateway_kit::cli::Roots::Webpki, None).unwrap();
    let options = Options::parse_from(["test"]);
    let gateway = Gateway::new(platform, Proxy::new(tls, Vec::new()), &options);
    (provider, Arc::new(gateway))
}

async fn send(gateway: &Arc<Gateway>, req: Request<Full<Bytes>>) -> (StatusCode, String) {
    let forward = {
        let gateway = Arc::clone(gateway);
        service_fn(move |req: Request<Full<Bytes>>| {
            let gateway = Arc::clone(&gateway);
            async move { Ok::<_, Infallible>(gateway.forward(req, None).await) }
        })
    };
    let response = gateway.layer().layer(forward).oneshot(req).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Serves `late ok` on `port` once the provider has been asked to scale, `after` later.
fn open_port_after_scale(
    provider: Arc<InMemoryProvider>,
    port: u16,
    after: Duration,
) -> tokio::task::JoinHandle<Instant> {
    tokio::spawn(async move {
        while provider.set_calls() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ready = Instant::now();
        tokio::time::sleep(after).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("late ok"))))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        ready
    })
}

pub async fn the_first_forward_after_a_cold_start_is_retried_until_the_port_opens() {
    let port = runner::free_port();
    let (provider, gateway) = gateway(port);
    let opened = open_port_after_scale(provider, port, Duration::from_millis(200));
    let req = Request::get("/function/late/first")
        .body(Full::default())
        .unwrap();
    let (status, body) = send(&gateway, req).await;
    let ready = opened.await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "late ok"));
    let took = ready.elapsed();
    println!(
        "    served {} ms after the platform said ready",
        took.as_millis()
    );
    // Retries give up 0.8 s after the first try; a loaded machine gets a margin on top.
    assert!(took < Duration::from_secs(2), "{took:?}");
}

pub async fn a_request_with_a_body_is_never_retried_and_a_refusal_evicts_the_function() {
    let port = runner::free_port();
    let (provider, gateway) = gateway(port);
    let _opened = open_port_after_scale(provider.clone(), port, Duration::from_secs(30));
    let req = Request::post("/function/late/upload")
        .body(Full::new(Bytes::from("payload")))
        .unwrap();
    let started = Instant::now();
    let (status, body) = send(&gateway, req).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("Connection refused"), "{body}");
    // Retried, it would take the whole 0.8 s retry budget.
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "retried: {:?}",
        started.elapsed()
    );
    let late = FunctionId::new("late", "local").unwrap();
    assert!(
        !gateway.scaler().stats().function(&late).warm,
        "a refusing upstream must not stay cached as ready"
    );
    // A warm request (not held) that is refused is not retried either.
    let gets = provider.get_calls();
    let req = Request::get("/function/late/again")
        .body(Full::default())
        .unwrap();
    let started = Instant::now();
    let (status, _) = send(&gateway, req).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        provider.get_calls() > gets,
        "evicted: the platform is asked again"
    );
    assert!(started.elapsed() < Duration::from_millis(700));
}
