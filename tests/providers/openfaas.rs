//! `OpenFaasProvider` against a local server that implements the OpenFaaS provider API.

use crate::support::faas_provider;

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
async fn a_provider_that_never_answers_is_bounded_by_the_scalers_call_timeout() {
    let server = FaasServer::start().await;
    server.with(|s| s.hang = true);
    let provider = OpenFaasProvider::new(&server.url()).unwrap();
    let config = ScalingConfig::builder()
        .call_timeout(Duration::from_millis(200))
        .max_scale_attempts(1)
        .build();
    let scaler = FunctionScaler::new(provider, config);
    let started = std::time::Instant::now();
    let err = scaler.scale(&id("echo")).await.unwrap_err();
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY, "{err}");
    assert!(err.to_string().contains("no answer within 200 ms"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A CA and a `localhost` certificate it signed, as a server config and the CA's PEM.
fn self_signed_ca() -> (tokio_rustls::rustls::ServerConfig, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = tokio_rustls::rustls::crypto::ring::default_provider();
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider.into())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    (config, ca.pem())
}

#[tokio::test]
async fn https_to_a_provider_behind_a_private_ca_works_once_its_ca_is_given() {
    let (tls, ca_pem) = self_signed_ca();
    let server = FaasServer::start_tls(tls).await;
    server.add("echo", NS, FakeFn::default());

    // Not trusted by the system's roots: a retryable transport error naming the certificate.
    let untrusted = OpenFaasProvider::new(&server.https_url()).unwrap();
    let err = untrusted.get_replicas(&id("echo")).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        format!("{err:?}").to_lowercase().contains("certificate"),
        "{err:?}"
    );
    assert_eq!(server.with(|s| s.get_calls), 0);

    let provider = OpenFaasProvider::new(&server.https_url())
        .unwrap()
        .add_root_certificates(ca_pem.as_bytes())
        .unwrap()
        .bearer_token("t0ken")
        .unwrap();
    let state = provider.get_replicas(&id("echo")).await.unwrap();
    assert_eq!(state.desired_replicas, 0);
    provider.set_replicas(&id("echo"), 1).await.unwrap();
    let seen = server.with(|s| s.authorization.clone());
    assert_eq!(seen, vec![Some("Bearer t0ken".to_string()); 2]);
    assert_eq!(server.with(|s| s.scale_calls.len()), 1);
}

#[test]
fn credentials_in_the_url_are_refused_without_echoing_them() {
    let err = OpenFaasProvider::new("http://admin:hunter2@127.0.0.1:8081").unwrap_err();
    let message = err.to_string();
    assert!(message.contains("basic_auth"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    let err = OpenFaasProvider::new("ftp://127.0.0.1").unwrap_err();
    assert!(err.to_string().contains("http or https"), "{err}");
    assert!(OpenFaasProvider::new("https://127.0.0.1:8443/").is_ok());
    assert!(OpenFaasProvider::new("http://127.0.0.1")
        .unwrap()
        .bearer_token("bad\ntoken")
        .is_err());
    let pem = b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
    assert!(OpenFaasProvider::new("https://127.0.0.1")
        .unwrap()
        .add_root_certificates(pem)
        .is_err());
    assert!(OpenFaasProvider::new("https://127.0.0.1")
        .unwrap()
        .add_root_certificates(b"")
        .is_err());
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
    let config = ScalingConfig::builder()
        .poll_interval(Duration::from_millis(20))
        .build();
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
