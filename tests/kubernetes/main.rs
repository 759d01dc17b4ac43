//! The Kubernetes provider against a real kube-apiserver (with etcd, on 127.0.0.1), started by
//! `scripts/kube-test-env.sh`: `.ci/run` starts one and sets `KUBE_TEST_DIR`; without it this
//! binary starts its own (building the apiserver the first time) and stops it at the end. A
//! server that cannot be started or reached fails the run: nothing is skipped.
//!
//! No controllers run: the tests play the deployment controller (they patch `/status`) and the
//! EndpointSlice controller (they write slices). One namespace per test.
//!
//! `harness = false`: the function process of the end-to-end test is this same binary, and
//! the API server restart test must run alone, last.

#[path = "../support/mod.rs"]
mod support;

use support::runner;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Config, ResourceExt};
use serde::Deserialize as _;
use serde_json::json;
use tower::{Service, ServiceExt};
use tower_scale_from_zero::activity::ActivityStore;
use tower_scale_from_zero::providers::KubernetesProvider;
use tower_scale_from_zero::{
    FunctionId, FunctionScaler, ScaleError, ScaleFromZeroLayer, ScalingConfig, ServiceQuery,
};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

const LABEL: &str = "tower-scale-from-zero/function";

// ---------------------------------------------------------------------------------------------
// The test API server

struct TestEnv {
    dir: PathBuf,
    owned: bool,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kube-test-env.sh")
}

impl TestEnv {
    /// The server `.ci/run` started (`KUBE_TEST_DIR`), or one of our own.
    fn start() -> Self {
        if let Ok(dir) = std::env::var("KUBE_TEST_DIR") {
            let dir = PathBuf::from(dir);
            assert!(
                dir.join("kubeconfig").exists(),
                "KUBE_TEST_DIR={} has no kubeconfig: start the server with `{} start DIR`",
                dir.display(),
                script().display()
            );
            return Self { dir, owned: false };
        }
        let dir = std::env::temp_dir().join(format!("tsfz-kube-test-{}", std::process::id()));
        eprintln!(
            "starting a kube-apiserver in {} (KUBE_TEST_DIR unset)",
            dir.display()
        );
        let env = Self { dir, owned: true };
        env.run(&["start"]);
        env
    }

    fn run(&self, args: &[&str]) {
        let status = Command::new("bash")
            .arg(script())
            .args(args)
            .arg(&self.dir)
            .status()
            .expect("bash runs the test server script");
        assert!(
            status.success(),
            "`kube-test-env.sh {args:?}` failed: {status}"
        );
    }

    fn kubeconfig(&self, who: &str) -> PathBuf {
        self.dir.join(format!("kubeconfig-{who}"))
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if self.owned {
            self.run(&["stop"]);
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

static ENV: OnceLock<PathBuf> = OnceLock::new();

fn env_dir() -> &'static Path {
    ENV.get().expect("set in main")
}

fn script_on_env(command: &str) {
    let status = Command::new("bash")
        .arg(script())
        .arg(command)
        .arg(env_dir())
        .status()
        .unwrap();
    assert!(status.success(), "kube-test-env.sh {command} failed");
}

async fn client_from(kubeconfig: &Path) -> Client {
    let config = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

async fn admin() -> Client {
    client_from(&env_dir().join("kubeconfig-admin")).await
}

/// A fresh namespace: a deleted one stays Terminating for ever without its controller.
async fn namespace(client: &Client, prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

// ---------------------------------------------------------------------------------------------
// Playing the controllers

/// A Deployment and its Service (port `port`), labelled as a function or not.
async fn deploy(client: &Client, ns: &str, name: &str, replicas: i32, labelled: bool, port: u16) {
    let mut labels = BTreeMap::new();
    labels.insert("app".to_string(), name.to_string());
    if labelled {
        labels.insert(LABEL.to_string(), "true".to_string());
    }
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "fn", "image": "example.invalid/fn:1"}]}
            }
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port}]}
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &service)
        .await
        .expect("create service");
}

/// As the deployment controller would: `n` replicas up and ready.
async fn mark_status(client: &Client, ns: &str, name: &str, n: i32) {
    let status = json!({"status": {
        "replicas": n, "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n
    }});
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("patch status");
}

/// As the EndpointSlice controller would: the function's slice with `n` ready endpoints.
async fn mark_endpoints(client: &Client, ns: &str, name: &str, n: usize, port: u16) {
    let endpoints: Vec<_> = (0..n)
        .map(|i| json!({"addresses": [format!("10.1.0.{}", i + 1)], "conditions": {"ready": true}}))
        .collect();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{name}-abcde"),
            "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "tests.tower-scale-from-zero",
                LABEL: "true",
            }
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}]
    });
    Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .patch(
            &format!("{name}-abcde"),
            &PatchParams::apply("tests").force(),
            &Patch::Apply(&slice),
        )
        .await
        .expect("apply slice");
}

async fn mark_ready(client: &Client, ns: &str, name: &str, port: u16) {
    mark_status(client, ns, name, 1).await;
    mark_endpoints(client, ns, name, 1, port).await;
}

async fn replicas(client: &Client, ns: &str, name: &str) -> i32 {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    d.spec.and_then(|s| s.replicas).unwrap_or(1)
}

/// Spec changes (scale writes included) since creation: `metadata.generation - 1`.
async fn spec_writes(client: &Client, ns: &str, name: &str) -> i64 {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    d.metadata.generation.unwrap_or(1) - 1
}

async fn wait_for_replicas(client: &Client, ns: &str, name: &str, at_least: i32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while replicas(client, ns, name).await < at_least {
        assert!(
            Instant::now() < deadline,
            "{name} never reached {at_least} replicas"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The replica counts a watch on the Deployment sees, in order: each change is a scale write.
struct ScaleWrites {
    seen: Arc<Mutex<Vec<i32>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScaleWrites {
    async fn watch(client: &Client, ns: &str, name: &str) -> Self {
        let api = Api::<Deployment>::namespaced(client.clone(), ns);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (synced_tx, synced) = tokio::sync::oneshot::channel();
        let record = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut synced_tx = Some(synced_tx);
            let stream = watcher(api, config).default_backoff();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let object = match event {
                    Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) => d,
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = synced_tx.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    _ => continue,
                };
                let n = object.spec.and_then(|s| s.replicas).unwrap_or(1);
                let mut seen = record.lock().unwrap();
                if seen.last() != Some(&n) {
                    seen.push(n);
                }
            }
        });
        synced.await.expect("the write-counting watch syncs");
        Self { seen, task }
    }

    /// Writes seen so far (changes after the first count).
    fn writes(&self) -> usize {
        self.seen.lock().unwrap().len().saturating_sub(1)
    }

    fn counts(&self) -> Vec<i32> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for ScaleWrites {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway under test

struct Under {
    provider: KubernetesProvider,
    scaler: FunctionScaler,
}

async fn under(client: Client, ns: &str, config: ScalingConfig) -> Under {
    let provider = KubernetesProvider::builder(client).namespace(ns).build();
    let scaler = FunctionScaler::new(provider.clone(), config);
    provider.push_readiness_to(scaler.readiness_notifier());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !provider.is_in_sync() {
        assert!(
            Instant::now() < deadline,
            "the provider's watches never synced"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Under { provider, scaler }
}

type Answer = (StatusCode, Option<ScaleError>);

/// One request for `name.ns` through the layer over a service that answers 200.
async fn request(scaler: &FunctionScaler, ns: &str, name: &str) -> Answer {
    let inner = tower::service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    let service = tower::Layer::layer(&ScaleFromZeroLayer::new(scaler.clone()), inner);
    let req = Request::get(format!("/function/{name}.{ns}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = service.oneshot(req).await.unwrap();
    let error = response.extensions().get::<ScaleError>().cloned();
    (response.status(), error)
}

fn spawn_request(scaler: &FunctionScaler, ns: &str, name: &str) -> tokio::task::JoinHandle<Answer> {
    let (scaler, ns, name) = (scaler.clone(), ns.to_string(), name.to_string());
    tokio::spawn(async move { request(&scaler, &ns, &name).await })
}

async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {limit:?}"))
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// When the provider's watch pushed each function's first ready state: the instant its
/// `pushing state` event is emitted, right before the push.
static PUSHES: OnceLock<Mutex<BTreeMap<String, Instant>>> = OnceLock::new();

struct PushTimes(&'static Mutex<BTreeMap<String, Instant>>);

const PROVIDER_TARGET: &str = "tower_scale_from_zero::providers::kubernetes";

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PushTimes {
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if metadata.target() == PROVIDER_TARGET {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct Fields {
            message: String,
            function: String,
            ready: bool,
        }
        impl tracing::field::Visit for Fields {
            fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
                if field.name() == "ready" {
                    self.ready = value;
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "message" => self.message = format!("{value:?}"),
                    "function" => self.function = format!("{value:?}"),
                    _ => {}
                }
            }
        }
        let now = Instant::now();
        if event.metadata().target() != PROVIDER_TARGET {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.message == "pushing state" && fields.ready {
            // `name.namespace`: keyed by name, unique across this binary's tests.
            let name = fields
                .function
                .split('.')
                .next()
                .unwrap_or_default()
                .to_string();
            self.0.lock().unwrap().entry(name).or_insert(now);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tests

async fn a_cold_start_writes_the_scale_once_and_serves_when_an_endpoint_is_ready() {
    let admin = admin().await;
    let ns = namespace(&admin, "cold").await;
    deploy(&admin, &ns, "hello", 0, true, 8080).await;
    let writes = ScaleWrites::watch(&admin, &ns, "hello").await;
    let gw = under(admin.clone(), &ns, ScalingConfig::default()).await;

    let held = spawn_request(&gw.scaler, &ns, "hello");
    wait_for_replicas(&admin, &ns, "hello", 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!held.is_finished(), "held until an endpoint is ready");
    mark_ready(&admin, &ns, "hello", 8080).await;
    let (status, error) = within(Duration::from_secs(5), "held request", held)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{error:?}");
    assert_eq!(writes.counts(), vec![0, 1], "one scale write, 0 → 1");
    assert_eq!(spec_writes(&admin, &ns, "hello").await, 1);
    // Warm now: no further write.
    assert_eq!(request(&gw.scaler, &ns, "hello").await.0, StatusCode::OK);
    assert_eq!(writes.writes(), 1);
}

async fn a_thousand_concurrent_cold_requests_make_exactly_one_scale_write() {
    let admin = admin().await;
    let ns = namespace(&admin, "burst").await;
    deploy(&admin, &ns, "burst", 0, true, 8080).await;
    let writes = ScaleWrites::watch(&admin, &ns, "burst").await;
    let gw = under(admin.clone(), &ns, ScalingConfig::default()).await;

    let held: Vec<_> = (0..1000)
        .map(|_| spawn_request(&gw.scaler, &ns, "burst"))
        .collect();
    wait_for_replicas(&admin, &ns, "burst", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    mark_ready(&admin, &ns, "burst", 8080).await;
    for request in held {
        let (status, error) = within(Duration::from_secs(10), "held", request)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{error:?}");
    }
    println!(
        "    1000 cold requests: scale writes seen {:?}",
        writes.counts()
    );
    assert_eq!(writes.writes(), 1);
    assert_eq!(spec_writes(&admin, &ns, "burst").await, 1);
}

async fn unlabelled_and_missing_deployments_are_404_without_a_write() {
    let admin = admin().await;
    let ns = namespace(&admin, "nf").await;
    deploy(&admin, &ns, "plain", 0, false, 8080).await;
    let writes = ScaleWrites::watch(&admin, &ns, "plain").await;
    let gw = under(admin.clone(), &ns, ScalingConfig::default()).await;

    for name in ["plain", "missing"] {
        let (status, error) = request(&gw.scaler, &ns, name).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{name}: {error:?}");
    }
    // Even asked directly, the provider scales only functions.
    let plain = FunctionId::new("plain", &ns).unwrap();
    let err = gw.provider.set_replicas(&plain, 1).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(err.message().contains("labelled"), "{}", err.message());
    // And so does its fallback read, before any watch has synced.
    deploy(&admin, &ns, "labelled", 2, true, 8080).await;
    let fresh = KubernetesProvider::builder(admin.clone())
        .namespace(&ns)
        .build();
    assert!(!fresh.is_in_sync());
    let err = fresh.get_replicas(&plain).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    let labelled = FunctionId::new("labelled", &ns).unwrap();
    let state = fresh.get_replicas(&labelled).await.unwrap();
    assert_eq!((state.desired_replicas, state.available_replicas), (2, 0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(writes.writes(), 0);
    assert_eq!(replicas(&admin, &ns, "plain").await, 0);
}

async fn a_forbidden_scale_is_a_502_naming_the_missing_permission() {
    let admin = admin().await;
    let ns = namespace(&admin, "rbac").await;
    deploy(&admin, &ns, "hello", 0, true, 8080).await;
    // The limited user may read everything the provider reads, and read the scale, but not
    // update it.
    let role: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "reader"},
        "rules": [
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}
        ]
    }))
    .unwrap();
    let binding: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "limited"}]
    }))
    .unwrap();
    apply(&admin, &ns, &[role, binding]).await;
    let writes = ScaleWrites::watch(&admin, &ns, "hello").await;
    let limited = client_from(&env_dir().join("kubeconfig-limited")).await;
    let gw = under(limited, &ns, ScalingConfig::default()).await;

    let started = Instant::now();
    let (status, error) = within(
        Duration::from_secs(10),
        "forbidden",
        request(&gw.scaler, &ns, "hello"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let error = error.expect("a ScaleError");
    let cause = error.query_error().expect("a provider error");
    assert!(cause.is_permanent(), "not retried: {cause:?}");
    assert!(
        cause.message().contains("may not update deployments/scale"),
        "{}",
        cause.message()
    );
    println!("    502 after {:?}: {}", started.elapsed(), cause.message());
    assert_eq!(writes.writes(), 0);
}

async fn a_count_someone_else_raised_is_never_lowered() {
    let admin = admin().await;
    let ns = namespace(&admin, "five").await;
    // Scaled to 5 by someone else; none of them ready yet.
    deploy(&admin, &ns, "five", 5, true, 8080).await;
    let writes = ScaleWrites::watch(&admin, &ns, "five").await;
    let gw = under(admin.clone(), &ns, ScalingConfig::default()).await;

    let held = spawn_request(&gw.scaler, &ns, "five");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = FunctionId::new("five", &ns).unwrap();
    gw.provider.set_replicas(&id, 1).await.unwrap();
    mark_ready(&admin, &ns, "five", 8080).await;
    let (status, error) = within(Duration::from_secs(5), "held", held).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{error:?}");
    assert_eq!(writes.counts(), vec![5], "never lowered, never written");
    assert_eq!(spec_writes(&admin, &ns, "five").await, 0);
}

/// A client layer that, before the first scale write goes out, lets "someone else" change the
/// Deployment (a conflicting write): the provider's write then carries a stale
/// resourceVersion and gets 409.
#[derive(Clone)]
struct Interfere {
    admin: Client,
    ns: String,
    name: String,
    /// What the other writer sets: an annotation (the count stays) or a replica count.
    raise_to: Option<i32>,
    fired: Arc<AtomicBool>,
    conflicts: Arc<AtomicUsize>,
}

impl<S> tower::Layer<S> for Interfere
where
    S: Service<Request<kube::client::Body>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<tower::BoxError> + Send + Sync,
    S::Response: Send + 'static,
    Request<kube::client::Body>: Send,
{
    type Service = InterfereService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        InterfereService {
            inner: tower::buffer::Buffer::new(inner, 1024),
            layer: self.clone(),
        }
    }
}

struct InterfereService<S: Service<Request<kube::client::Body>>> {
    inner: tower::buffer::Buffer<Request<kube::client::Body>, S::Future>,
    layer: Interfere,
}

impl<S, B> Service<Request<kube::client::Body>> for InterfereService<S>
where
    S: Service<Request<kube::client::Body>, Response = Response<B>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<tower::BoxError> + Send + Sync,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = tower::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, tower::BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        let is_scale_write =
            req.method() == http::Method::PUT && req.uri().path().ends_with("/scale");
        let interfere = is_scale_write && !self.layer.fired.swap(true, Ordering::SeqCst);
        let layer = self.layer.clone();
        let mut inner = self.inner.clone();
        Box::pin(async move {
            if interfere {
                let api = Api::<Deployment>::namespaced(layer.admin.clone(), &layer.ns);
                let change = match layer.raise_to {
                    None => json!({"metadata": {"annotations": {"someone": "else"}}}),
                    Some(n) => json!({"spec": {"replicas": n}}),
                };
                api.patch(&layer.name, &PatchParams::default(), &Patch::Merge(&change))
                    .await
                    .expect("the other writer's write");
            }
            let response = inner.ready().await?.call(req).await?;
            if is_scale_write && response.status() == StatusCode::CONFLICT {
                layer.conflicts.fetch_add(1, Ordering::SeqCst);
            }
            Ok(response)
        })
    }
}

async fn interfering_client(
    admin: &Client,
    ns: &str,
    name: &str,
    raise_to: Option<i32>,
) -> (Client, Interfere) {
    let layer = Interfere {
        admin: admin.clone(),
        ns: ns.to_string(),
        name: name.to_string(),
        raise_to,
        fired: Arc::default(),
        conflicts: Arc::default(),
    };
    let config = Kubeconfig::read_from(env_dir().join("kubeconfig-admin")).unwrap();
    let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::client::ClientBuilder::try_from(config)
        .unwrap()
        .with_layer(&layer)
        .build();
    (client, layer)
}

async fn a_conflicting_write_is_retried_not_lost() {
    let admin = admin().await;
    let ns = namespace(&admin, "conflict").await;
    deploy(&admin, &ns, "hello", 0, true, 8080).await;
    let writes = ScaleWrites::watch(&admin, &ns, "hello").await;
    let (client, layer) = interfering_client(&admin, &ns, "hello", None).await;
    let gw = under(client, &ns, ScalingConfig::default()).await;

    let held = spawn_request(&gw.scaler, &ns, "hello");
    wait_for_replicas(&admin, &ns, "hello", 1).await;
    mark_ready(&admin, &ns, "hello", 8080).await;
    let (status, error) = within(Duration::from_secs(5), "held", held).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{error:?}");
    assert_eq!(
        layer.conflicts.load(Ordering::SeqCst),
        1,
        "the first write conflicted"
    );
    assert_eq!(writes.counts(), vec![0, 1], "then the retry landed");
}

async fn a_count_raised_during_our_write_is_kept() {
    let admin = admin().await;
    let ns = namespace(&admin, "raised").await;
    deploy(&admin, &ns, "hello", 0, true, 8080).await;
    let writes = ScaleWrites::watch(&admin, &ns, "hello").await;
    // Between our read (0) and our write, someone else asks for 3.
    let (client, layer) = interfering_client(&admin, &ns, "hello", Some(3)).await;
    let gw = under(client, &ns, ScalingConfig::default()).await;

    let held = spawn_request(&gw.scaler, &ns, "hello");
    wait_for_replicas(&admin, &ns, "hello", 3).await;
    mark_ready(&admin, &ns, "hello", 8080).await;
    let (status, error) = within(Duration::from_secs(5), "held", held).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{error:?}");
    assert_eq!(layer.conflicts.load(Ordering::SeqCst), 1);
    assert_eq!(
        writes.counts(),
        vec![0, 3],
        "their 3 stands; our 1 was not written over it"
    );
    assert_eq!(replicas(&admin, &ns, "hello").await, 3);
}

async fn pushed_readiness_releases_held_requests_without_waiting_for_a_poll() {
    let admin = admin().await;
    let ns = namespace(&admin, "push").await;
    const ROUNDS: usize = 10;
    for i in 0..ROUNDS {
        deploy(&admin, &ns, &format!("fn-{i}"), 0, true, 8080).await;
    }
    // A poll interval far beyond what the test waits: only a push can release in time.
    let config = ScalingConfig::builder()
        .poll_interval(Duration::from_secs(10))
        .build();
    let gw = under(admin.clone(), &ns, config).await;

    let (mut from_write, mut from_event) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        let name = format!("fn-{i}");
        let held = spawn_request(&gw.scaler, &ns, &name);
        wait_for_replicas(&admin, &ns, &name, 1).await;
        mark_status(&admin, &ns, &name, 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!held.is_finished());
        let written = Instant::now();
        mark_endpoints(&admin, &ns, &name, 1, 8080).await;
        let (status, error) = within(Duration::from_secs(5), "pushed", held)
            .await
            .unwrap();
        let answered = Instant::now();
        assert_eq!(status, StatusCode::OK, "{error:?}");
        from_write.push(answered - written);
        let pushed = PUSHES.get().unwrap().lock().unwrap()[&name];
        from_event.push(answered - pushed);
    }
    let max = *from_write.iter().max().unwrap();
    println!(
        "    push: slice write → response median {:?} (max {max:?}); event handled by the provider's watch → response median {:?} (max {:?}); {ROUNDS} rounds, poll interval 10 s",
        median(from_write.clone()),
        median(from_event.clone()),
        from_event.iter().max().unwrap()
    );
    assert!(
        max < Duration::from_secs(2),
        "released by the push, not a poll: {max:?}"
    );
}

async fn a_deleted_deployment_is_404_once_the_cache_ttl_has_passed() {
    let admin = admin().await;
    let ns = namespace(&admin, "gone").await;
    deploy(&admin, &ns, "gone", 1, true, 8080).await;
    mark_ready(&admin, &ns, "gone", 8080).await;
    let config = ScalingConfig::default();
    let ttl = config.cache_ttl();
    let gw = under(admin.clone(), &ns, config).await;
    assert_eq!(request(&gw.scaler, &ns, "gone").await.0, StatusCode::OK);

    Api::<Deployment>::namespaced(admin.clone(), &ns)
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(ttl + Duration::from_millis(250)).await;
    let (status, error) = request(&gw.scaler, &ns, "gone").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error:?}");
}

/// Creates (or updates) `objects` in `ns`, finding each kind through discovery.
async fn apply(client: &Client, ns: &str, objects: &[DynamicObject]) {
    for object in objects {
        let types = object.types.as_ref().expect("apiVersion and kind");
        let gvk = kube::api::GroupVersionKind::try_from(types).unwrap();
        let (resource, caps): (ApiResource, ApiCapabilities) =
            kube::discovery::pinned_kind(client, &gvk).await.unwrap();
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(client.clone(), ns, &resource),
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            &object.name_any(),
            &PatchParams::apply("tests").force(),
            &Patch::Apply(object),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {} {}: {e}", types.kind, object.name_any()));
    }
}

/// The manifests in `deploy/`, with their namespaces renamed for this test.
fn manifests(gateway_ns: &str, functions_ns: &str) -> Vec<DynamicObject> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut objects = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace("sfz-gateway", gateway_ns)
            .replace("sfz-functions", functions_ns);
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value =
                serde_json::to_value(serde_yaml::Value::deserialize(document).unwrap()).unwrap();
            if value.is_null() {
                continue;
            }
            objects.push(
                serde_json::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", file.display())),
            );
        }
    }
    objects
}

async fn the_shipped_manifests_apply_and_their_role_suffices() {
    let admin = admin().await;
    let prefix = format!("m{}", std::process::id());
    let (gateway_ns, functions_ns) = (format!("{prefix}-gw"), format!("{prefix}-fn"));
    let objects = manifests(&gateway_ns, &functions_ns);
    let kinds: Vec<String> = objects
        .iter()
        .map(|o| o.types.as_ref().unwrap().kind.clone())
        .collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "deploy/ has no {kind}: {kinds:?}"
        );
    }
    // Namespaces first, then everything else in its own namespace.
    let (namespaces, rest): (Vec<_>, Vec<_>) = objects
        .into_iter()
        .partition(|o| o.types.as_ref().unwrap().kind == "Namespace");
    apply(&admin, "", &namespaces).await;
    for object in &rest {
        let ns = object
            .metadata
            .namespace
            .clone()
            .expect("every object names its namespace");
        apply(&admin, &ns, std::slice::from_ref(object)).await;
    }

    // A token for the gateway's ServiceAccount, bound to exactly the shipped Role.
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), &gateway_ns);
    let request: TokenRequest = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = accounts
        .create_token_request("gateway", &PostParams::default(), &request)
        .await
        .expect("a token for the gateway's ServiceAccount")
        .status
        .and_then(|status| status.token)
        .expect("a token");
    let admin_text = std::fs::read_to_string(env_dir().join("kubeconfig-admin")).unwrap();
    let admin_token = std::fs::read_to_string(env_dir().join("admin.token")).unwrap();
    let sa_kubeconfig = env_dir().join(format!("kubeconfig-{prefix}-gateway"));
    std::fs::write(
        &sa_kubeconfig,
        admin_text.replace(admin_token.trim(), &token),
    )
    .unwrap();
    let gateway = client_from(&sa_kubeconfig).await;

    // The shipped example function, at 0 replicas, cold-started with the gateway's rights.
    let writes = ScaleWrites::watch(&admin, &functions_ns, "hello").await;
    assert_eq!(writes.counts(), vec![0]);
    let gw = under(gateway, &functions_ns, ScalingConfig::default()).await;
    let held = spawn_request(&gw.scaler, &functions_ns, "hello");
    wait_for_replicas(&admin, &functions_ns, "hello", 1).await;
    mark_ready(&admin, &functions_ns, "hello", 8080).await;
    let (status, error) = within(Duration::from_secs(5), "held", held).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{error:?}");
    let id = FunctionId::new("hello", &functions_ns).unwrap();
    assert_eq!(
        gw.provider.endpoint(&id).await.unwrap().to_string(),
        format!("http://hello.{functions_ns}.svc.cluster.local:8080/")
    );
    assert_eq!(writes.counts(), vec![0, 1]);
    // Shared activity for scale to zero: recorded with the gateway's rights.
    gw.provider.record(&id).await.unwrap();
    // Nothing is left to admin-only rights: the account may not, say, delete Deployments.
    let denied = Api::<Deployment>::namespaced(client_from(&sa_kubeconfig).await, &functions_ns)
        .delete("hello", &DeleteParams::default())
        .await
        .unwrap_err();
    assert!(denied.to_string().contains("forbidden"), "{denied}");
}

async fn the_axum_gateway_in_kubernetes_mode_holds_then_forwards_to_the_function() {
    let admin = admin().await;
    let ns = namespace(&admin, "e2e").await;
    let port = runner::free_port();
    deploy(&admin, &ns, "hello", 0, true, port).await;
    let writes = ScaleWrites::watch(&admin, &ns, "hello").await;
    // The example as a user runs it (the binary `cargo test --all-features` builds), finding
    // the server through KUBECONFIG (the admin's, set in `main`).
    let args = [
        "--kubernetes",
        "--namespace",
        &ns,
        "--endpoint-template",
        "http://127.0.0.1:{port}",
    ];
    let gateway = runner::ExampleGateway::start("axum_gateway", &args).await;

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let url = gateway.url("/function/hello/greet?x=1");
    let held = tokio::spawn({
        let client = client.clone();
        async move {
            let response = client
                .request(Request::get(url).body(Full::new(Bytes::new())).unwrap())
                .await
                .unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    });
    wait_for_replicas(&admin, &ns, "hello", 1).await;
    // "The kubelet" starts the function: a local process on the Service's port.
    let mut function = Command::new(std::env::current_exe().unwrap())
        .args(["--serve-function", "hello", "--startup-ms", "0"])
        .env("PORT", port.to_string())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let up = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < up, "the function process never listened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!held.is_finished(), "held until the slice says ready");
    mark_ready(&admin, &ns, "hello", port).await;
    let (status, body) = within(Duration::from_secs(5), "forwarded", held)
        .await
        .unwrap();
    let _ = function.kill();
    let _ = function.wait();
    drop(gateway);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("Hello from hello! path=/greet"), "{body}");
    assert_eq!(writes.counts(), vec![0, 1]);
}

async fn gateways_share_activity_and_a_concurrent_scale_up_beats_a_scale_down() {
    let admin = admin().await;
    let ns = namespace(&admin, "idle").await;
    deploy(&admin, &ns, "hello", 1, true, 8080).await;
    let opt_in = json!({"metadata": {"annotations": {
        "tower-scale-from-zero/scale-to-zero": "true",
        "tower-scale-from-zero/idle-period": "1m"
    }}});
    let deployments = Api::<Deployment>::namespaced(admin.clone(), &ns);
    deployments
        .patch("hello", &PatchParams::default(), &Patch::Merge(&opt_in))
        .await
        .unwrap();
    let id = FunctionId::new("hello", &ns).unwrap();
    let idle = Duration::from_secs(60);
    let (a, b) = (
        under(admin.clone(), &ns, ScalingConfig::default()).await,
        under(admin.clone(), &ns, ScalingConfig::default()).await,
    );
    let state = b.provider.get_replicas(&id).await.unwrap();
    assert_eq!(
        state.scale_to_zero,
        tower_scale_from_zero::IdlePolicy::After(idle)
    );

    // Gateway A served it just now: B does not scale it down.
    a.provider.record(&id).await.unwrap();
    let seen_by_b = Instant::now() + Duration::from_secs(5);
    while b.provider.idle_for(&id).await.unwrap().is_none() {
        assert!(Instant::now() < seen_by_b, "B never saw A's activity");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(b.provider.idle_for(&id).await.unwrap().unwrap() < Duration::from_secs(5));
    assert!(!b.provider.scale_to_zero(&id, idle).await.unwrap());
    assert_eq!(replicas(&admin, &ns, "hello").await, 1);

    // Two minutes of quiet; but someone scales it up between B's read and B's write: the
    // scale-up wins (409 on B's precondition).
    let long_ago =
        humantime::format_rfc3339_millis(std::time::SystemTime::now() - Duration::from_secs(120))
            .to_string();
    let quiet =
        json!({"metadata": {"annotations": {"tower-scale-from-zero/last-active": long_ago}}});
    deployments
        .patch("hello", &PatchParams::default(), &Patch::Merge(&quiet))
        .await
        .unwrap();
    let (client, layer) = interfering_client(&admin, &ns, "hello", Some(2)).await;
    let racing = KubernetesProvider::builder(client).namespace(&ns).build();
    assert!(!racing.scale_to_zero(&id, idle).await.unwrap());
    assert_eq!(layer.conflicts.load(Ordering::SeqCst), 1);
    assert_eq!(
        replicas(&admin, &ns, "hello").await,
        2,
        "the scale-up stands"
    );

    // Quiet and uncontested: down to zero.
    assert!(b.provider.scale_to_zero(&id, idle).await.unwrap());
    assert_eq!(replicas(&admin, &ns, "hello").await, 0);
}

/// Last: it stops the shared API server for a while.
async fn held_requests_survive_an_api_server_restart_and_410_gone() {
    let admin = admin().await;
    let ns = namespace(&admin, "restart").await;
    deploy(&admin, &ns, "hello", 0, true, 8080).await;
    let config = ScalingConfig::default();
    let deadline = config.readiness_deadline();
    let gw = under(admin.clone(), &ns, config).await;

    let started = Instant::now();
    let held: Vec<_> = (0..20)
        .map(|_| spawn_request(&gw.scaler, &ns, "hello"))
        .collect();
    wait_for_replicas(&admin, &ns, "hello", 1).await;

    script_on_env("stop-apiserver");
    let stopped = Instant::now();
    assert!(
        !gw.provider.is_in_sync() || {
            // The watches notice the closed connections within moments.
            tokio::time::sleep(Duration::from_millis(500)).await;
            !gw.provider.is_in_sync()
        }
    );
    // History the watches have not seen is compacted away: they resume with 410 Gone and
    // must list again.
    script_on_env("compact-etcd");
    tokio::time::sleep(Duration::from_secs(1)).await;
    script_on_env("start-apiserver");
    let restarted = Instant::now();
    let admin = self::admin().await;
    mark_ready(&admin, &ns, "hello", 8080).await;
    let ready = Instant::now();
    for request in held {
        let (status, error) = within(deadline, "held over the restart", request)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{error:?}");
    }
    let served = Instant::now();
    let sync_by = Instant::now() + Duration::from_secs(15);
    while !gw.provider.is_in_sync() {
        assert!(Instant::now() < sync_by, "the watches never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let in_sync = Instant::now();
    println!(
        "    restart: apiserver down {:?}; marked ready {:?} after it was back; held requests served {:?} after that ({:?} after they arrived); watches back in sync {:?} after the restart",
        restarted - stopped,
        ready - restarted,
        served - ready,
        served - started,
        in_sync - restarted,
    );
    assert_eq!(
        spec_writes(&admin, &ns, "hello").await,
        1,
        "one scale write, not repeated"
    );
    // The store the watches rebuilt after 410 serves the function without a read.
    assert_eq!(request(&gw.scaler, &ns, "hello").await.0, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve-function") {
        assert!(gateway_kit::hello::run_if_asked());
        return;
    }
    let tests: [runner::Test; 12] = runner::tests![
        a_cold_start_writes_the_scale_once_and_serves_when_an_endpoint_is_ready,
        a_thousand_concurrent_cold_requests_make_exactly_one_scale_write,
        unlabelled_and_missing_deployments_are_404_without_a_write,
        a_forbidden_scale_is_a_502_naming_the_missing_permission,
        a_count_someone_else_raised_is_never_lowered,
        a_conflicting_write_is_retried_not_lost,
        a_count_raised_during_our_write_is_kept,
        pushed_readiness_releases_held_requests_without_waiting_for_a_poll,
        a_deleted_deployment_is_404_once_the_cache_ttl_has_passed,
        the_shipped_manifests_apply_and_their_role_suffices,
        the_axum_gateway_in_kubernetes_mode_holds_then_forwards_to_the_function,
        gateways_share_activity_and_a_concurrent_scale_up_beats_a_scale_down,
    ];
    // It restarts the shared API server: it runs alone (the others share this lock).
    let alone: [runner::Test; 1] =
        runner::tests![held_requests_survive_an_api_server_restart_and_410_gone];
    let args = runner::arguments();
    let shared = Arc::new(std::sync::RwLock::new(()));
    let limit = Duration::from_secs(120);
    let exclusive = |tests: &[runner::Test], alone: bool| -> Vec<libtest_mimic::Trial> {
        tests
            .iter()
            .map(|&(name, test)| {
                let shared = Arc::clone(&shared);
                libtest_mimic::Trial::test(name, move || {
                    let _guard = if alone {
                        (
                            None,
                            Some(shared.write().unwrap_or_else(|e| e.into_inner())),
                        )
                    } else {
                        (Some(shared.read().unwrap_or_else(|e| e.into_inner())), None)
                    };
                    runner::run_one(test, limit)
                })
            })
            .collect()
    };
    let mut trials = exclusive(&tests, false);
    trials.extend(exclusive(&alone, true));
    if args.list {
        libtest_mimic::run(&args, trials).exit();
    }
    let pushes = PUSHES.get_or_init(Mutex::default);
    let log = std::env::var("KUBE_TEST_LOG").ok().map(|level| {
        let level: tracing::Level = level.parse().expect("KUBE_TEST_LOG: a tracing level");
        tracing_subscriber::fmt::layer()
            .with_filter(tracing_subscriber::filter::LevelFilter::from_level(level))
    });
    tracing_subscriber::registry()
        .with(PushTimes(pushes))
        .with(log)
        .init();
    let env = TestEnv::start();
    ENV.set(env.dir.clone()).unwrap();
    // The gateway under test finds the server the way a user's would.
    std::env::set_var("KUBECONFIG", env.kubeconfig("admin"));

    println!("\nthe kube-apiserver of these tests: {}", env.dir.display());
    let conclusion = libtest_mimic::run(&args, trials);
    drop(env);
    conclusion.exit();
}
