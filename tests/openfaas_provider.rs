//! `OpenFaasProvider` against a local server that implements the OpenFaaS provider API.

#[path = "support/faas_provider.rs"]
mod faas_provider;

use std::time::Duration;

use faas_provider::{FaasServer, FakeFn};
use http::StatusCode;
use tower_scale_from_zero::providers::OpenFaasProvider;
use tower_scale_from_zero::{
    FunctionId, FunctionScaler, IdlePolicy, QueryErrorKind, ScalingConfig, ServiceQuery,
};

const NS: &str = "openfaas-fn";

fn id(name: &str) -> FunctionId {
    FunctionId::new(name, NS).unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> FakeFn {
    FakeFn {
        labels: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..FakeFn::default()
    }
}

#[tokio::test]
async fn omitted_replica_counts_mean_zero_and_scale_labels_give_min_and_max() {
    let server = FaasServer::start().await;
    server.add("cold", NS, FakeFn::default());
    server.add(
        "bounded",
        NS,
        labels(&[
            ("com.openfaas.scale.min", "2"),
            ("com.openfaas.scale.max", " 5 "),
        ]),
    );
    let provider = OpenFaasProvider::new(&server.url()).unwrap();

    let cold = provider.get_replicas(&id("cold")).await.unwrap();
    assert_eq!((cold.desired_replicas, cold.available_replicas), (0, 0));
    assert_eq!(
        (cold.min_replicas, cold.max_replicas),
        (1, u64::MAX),
        "defaults"
    );

    let bounded = provider.get_replicas(&id("bounded")).await.unwrap();
    assert_eq!((bounded.min_replicas, bounded.max_replicas), (2, 5));
    assert_eq!(bounded.scale_to_zero, IdlePolicy::Never);
}

#[tokio::test]
async fn scale_to_zero_labels_opt_a_function_in() {
    let server = FaasServer::start().await;
    server.add(
        "idle",
        NS,
        labels(&[
            ("com.openfaas.scale.zero", "true"),
            ("com.openfaas.scale.zero-duration", "15m"),
        ]),
    );
    server.add(
        "default",
        NS,
        labels(&[("com.openfaas.scale.zero", "true")]),
    );
    let provider = OpenFaasProvider::new(&server.url()).unwrap();
    let idle = provider.get_replicas(&id("idle")).await.unwrap();
    assert_eq!(
        idle.scale_to_zero,
        IdlePolicy::After(Duration::from_secs(900))
    );
    let default = provider.get_replicas(&id("default")).await.unwrap();
    assert_eq!(default.scale_to_zero, IdlePolicy::AfterDefault);
}

#[tokio::test]
async fn negative_or_non_numeric_labels_fall_back_to_the_defaults() {
    let server = FaasServer::start().await;
    for (name, min, max) in [
        ("neg", "-1", "-3"),
        ("text", "two", "many"),
        ("huge", "99999999999999999999999", "1.5"),
    ] {
        server.add(
            name,
            NS,
            labels(&[
                ("com.openfaas.scale.min", min),
                ("com.openfaas.scale.max", max),
            ]),
        );
    }
    let provider = OpenFaasProvider::new(&server.url()).unwrap();
    for name in ["neg", "text", "huge"] {
        let state = provider.get_replicas(&id(name)).await.unwrap();
        assert_eq!(
            (state.min_replicas, state.max_replicas),
            (1, u64::MAX),
            "{name}"
        );
        assert_eq!(
            state.scale_target(),
            1,
            "{name}: never wraps to a huge number"
        );
    }
}

#[tokio::test]
async fn scale_posts_the_openfaas_body_and_accepts_200_and_202() {
    let server = FaasServer::start().await;
    server.add("echo", NS, FakeFn::default());
    // With a trailing slash, too.
    let provider = OpenFaasProvider::new(&format!("{}/", server.url())).unwrap();
    provider.set_replicas(&id("echo"), 2).await.unwrap();
    server.with(|s| s.scale_status = Some(StatusCode::OK));
    provider.set_replicas(&id("echo"), 3).await.unwrap();
    let calls = server.with(|s| s.scale_calls.clone());
    assert_eq!(
        calls[0],
        serde_json::json!({"serviceName": "echo", "namespace": NS, "replicas": 2})
    );
    assert_eq!(calls[1]["replicas"], 3);
    let state = provider.get_replicas(&id("echo")).await.unwrap();
    assert_eq!((state.desired_replicas, state.available_replicas), (3, 3));
}

#[tokio::test]
async fn basic_auth_is_sent_on_every_call() {
    let server = FaasServer::start().await;
    server.add("echo", NS, FakeFn::default());
    let provider = OpenFaasProvider::new(&server.url())
        .unwrap()
        .basic_auth("admin", "secret");
    provider.get_replicas(&id("echo")).await.unwrap();
    provider.set_replicas(&id("echo"), 1).await.unwrap();
    let seen = server.with(|s| s.authorization.clone());
    assert_eq!(seen, vec![Some("Basic YWRtaW46c2VjcmV0".to_string()); 2]);
}

#[tokio::test]
async fn not_found_is_told_apart_from_every_other_failure() {
    let server = FaasServer::start().await;
    let provider = OpenFaasProvider::new(&server.url()).unwrap();
    let err = provider.get_replicas(&id("missing")).await.unwrap_err();
    assert!(err.is_not_found());
    let err = provider.set_replicas(&id("missing"), 1).await.unwrap_err();
    assert!(err.is_not_found());

    for (status, permanent) in [
        (StatusCode::BAD_REQUEST, true),
        (StatusCode::UNAUTHORIZED, true),
        (StatusCode::FORBIDDEN, true),
        (StatusCode::INTERNAL_SERVER_ERROR, false),
        (StatusCode::BAD_GATEWAY, false),
        (StatusCode::SERVICE_UNAVAILABLE, false),
    ] {
        server.with(|s| {
            s.fail_with = Some((status, format!("boom {}\nsecond line", status.as_u16())))
        });
        for err in [
            provider.get_replicas(&id("x")).await.unwrap_err(),
            provider.set_replicas(&id("x"), 1).await.unwrap_err(),
        ] {
            assert!(!err.is_not_found(), "{status}");
            assert_eq!(err.status(), Some(status));
            assert_eq!(err.is_retryable(), !permanent, "{status}");
            let text = err.to_string();
            assert!(
                text.contains(&format!("boom {} second line", status.as_u16())),
                "{text}"
            );
        }
    }
}

#[tokio::test]
async fn transport_errors_and_bad_json_are_retryable_provider_errors() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let provider = OpenFaasProvider::new(&format!("http://{closed}")).unwrap();
    let err = provider.get_replicas(&id("echo")).await.unwrap_err();
    assert_eq!(err.kind(), QueryErrorKind::Provider);
    assert!(err.is_retryable() && err.status().is_none(), "{err:?}");

    let server = FaasServer::start().await;
    server.with(|s| s.raw_status_body = Some("<html>proxy error</html>".into()));
    let provider = OpenFaasProvider::new(&server.url()).unwrap();
    let err = provider.get_replicas(&id("echo")).await.unwrap_err();
    assert!(err.to_string().contains("invalid function status"), "{err}");
    assert!(
        err.to_string().contains("<html>proxy error</html>"),
        "{err}"
    );
}

#[tokio::test]
async fn a_provider_that_never_answers_times_out() {
    let server = FaasServer::start().await;
    server.with(|s| s.hang = true);
    let provider = OpenFaasProvider::new(&server.url())
        .unwrap()
        .timeout(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let err = provider.get_replicas(&id("echo")).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_cold_start_through_the_provider_api_makes_one_scale_call() {
    let server = FaasServer::start().await;
    server.add(
        "echo",
        NS,
        FakeFn {
            startup: Duration::from_millis(150),
            ..FakeFn::default()
        },
    );
    let provider = OpenFaasProvider::new(&server.url()).unwrap();
    let config = ScalingConfig::default().poll_interval(Duration::from_millis(20));
    let scaler = FunctionScaler::new(provider, config);
    let waiters: Vec<_> = (0..50)
        .map(|_| {
            let scaler = scaler.clone();
            tokio::spawn(async move { scaler.scale(&id("echo")).await })
        })
        .collect();
    for waiter in waiters {
        assert!(waiter.await.unwrap().unwrap().is_ready());
    }
    assert_eq!(server.with(|s| s.scale_calls.len()), 1);
}
