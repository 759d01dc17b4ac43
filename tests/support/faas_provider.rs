//! A fake OpenFaaS provider on 127.0.0.1: the provider API (`/system/function/{name}`,
//! `/system/scale-function/{name}`) and invocation (`/function/{name}/...`), with replicas
//! that become available a start-up delay after a scale call, recorded calls, and faults.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use http::StatusCode;
use tokio::time::Instant;

#[derive(Clone, Debug, Default)]
pub struct FakeFn {
    pub replicas: u64,
    pub ready_at: Option<Instant>,
    pub startup: Duration,
    pub labels: HashMap<String, String>,
}

#[derive(Debug, Default)]
pub struct FakeFaas {
    pub functions: HashMap<(String, String), FakeFn>,
    pub get_calls: usize,
    pub scale_calls: Vec<serde_json::Value>,
    pub invocations: usize,
    pub authorization: Vec<Option<String>>,
    /// Every provider API call answers with this status and body.
    pub fail_with: Option<(StatusCode, String)>,
    pub scale_status: Option<StatusCode>,
    pub hang: bool,
    pub raw_status_body: Option<String>,
}

#[derive(Clone)]
pub struct FaasServer {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<FakeFaas>>,
}

impl FaasServer {
    pub async fn start() -> Self {
        let (state, app) = Self::app();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    /// The same provider over TLS with `config` (its certificate chain and key); `url()` is
    /// still `http://`, so use `https_url()`.
    pub async fn start_tls(config: tokio_rustls::rustls::ServerConfig) -> Self {
        let (state, app) = Self::app();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake: not served.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { addr, state }
    }

    pub fn https_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    fn app() -> (Arc<Mutex<FakeFaas>>, Router) {
        let state = Arc::new(Mutex::new(FakeFaas::default()));
        let app = Router::new()
            .route("/system/function/{name}", get(status))
            .route("/system/scale-function/{name}", post(scale))
            .route("/function/{name}", any(invoke))
            .route("/function/{name}/", any(invoke))
            .route("/function/{name}/{*rest}", any(invoke))
            .with_state(state.clone());
        (state, app)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn add(&self, name: &str, namespace: &str, f: FakeFn) {
        let key = (name.to_string(), namespace.to_string());
        self.state.lock().unwrap().functions.insert(key, f);
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut FakeFaas) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }
}

fn target(req: &Request) -> (String, String) {
    let name = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let namespace = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("namespace="))
        .unwrap_or_default()
        .to_string();
    (name, namespace)
}

type Shared = State<Arc<Mutex<FakeFaas>>>;

async fn status(State(state): Shared, req: Request) -> Response {
    let hang = {
        let mut s = state.lock().unwrap();
        s.get_calls += 1;
        let auth = req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string());
        s.authorization.push(auth);
        s.hang
    };
    if hang {
        std::future::pending::<()>().await;
    }
    let s = state.lock().unwrap();
    if let Some((code, body)) = &s.fail_with {
        return (*code, body.clone()).into_response();
    }
    if let Some(raw) = &s.raw_status_body {
        return (StatusCode::OK, raw.clone()).into_response();
    }
    let (name, namespace) = target(&req);
    let Some(f) = s.functions.get(&(name.clone(), namespace.clone())) else {
        return (StatusCode::NOT_FOUND, format!("function {name} not found")).into_response();
    };
    let available = if f.ready_at.is_some_and(|at| Instant::now() >= at) {
        f.replicas
    } else {
        0
    };
    // The provider omits zero counts.
    let mut body = serde_json::json!({
        "name": name,
        "namespace": namespace,
        "labels": f.labels,
        "annotations": {},
    });
    if f.replicas > 0 {
        body["replicas"] = f.replicas.into();
    }
    if available > 0 {
        body["availableReplicas"] = available.into();
    }
    (StatusCode::OK, body.to_string()).into_response()
}

async fn scale(State(state): Shared, req: Request) -> Response {
    let (name, namespace) = target(&req);
    let auth = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string());
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut s = state.lock().unwrap();
    s.authorization.push(auth);
    if let Some((code, body)) = &s.fail_with {
        return (*code, body.clone()).into_response();
    }
    s.scale_calls.push(json.clone());
    let status = s.scale_status.unwrap_or(StatusCode::ACCEPTED);
    let Some(f) = s.functions.get_mut(&(name, namespace)) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let replicas = json["replicas"].as_u64().unwrap();
    if f.replicas == 0 && replicas > 0 {
        f.ready_at = Some(Instant::now() + f.startup);
    }
    f.replicas = replicas;
    status.into_response()
}

async fn invoke(State(state): Shared, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let segment = path
        .trim_start_matches("/function/")
        .split('/')
        .next()
        .unwrap();
    let name = segment
        .rsplit_once('.')
        .map_or(segment, |(name, _)| name)
        .to_string();
    let body: Bytes = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .unwrap();
    let mut s = state.lock().unwrap();
    s.invocations += 1;
    let ready = s.functions.iter().any(|((n, _), f)| {
        *n == name && f.ready_at.is_some_and(|at| Instant::now() >= at) && f.replicas > 0
    });
    if !ready {
        return (StatusCode::SERVICE_UNAVAILABLE, "no replicas").into_response();
    }
    Response::new(Body::from(format!(
        "{name} via provider: {path} ({} bytes)",
        body.len()
    )))
}
