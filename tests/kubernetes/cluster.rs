//! What the Kubernetes tests share: the test API server, clients, playing the controllers (no
//! controller runs here), the gateway under test, and what it logged and counted.

pub(crate) use crate::support::runner;
pub(crate) use std::collections::BTreeMap;
pub(crate) use std::convert::Infallible;
pub(crate) use std::future::Future;
pub(crate) use std::path::{Path, PathBuf};
pub(crate) use std::pin::Pin;
pub(crate) use std::process::{Command, Stdio};
pub(crate) use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
pub(crate) use std::sync::{Arc, Mutex, OnceLock};
pub(crate) use std::task::{Context, Poll};
pub(crate) use std::time::{Duration, Instant};

pub(crate) use bytes::Bytes;
pub(crate) use futures::StreamExt;
pub(crate) use http::{Request, Response, StatusCode};
pub(crate) use http_body_util::{BodyExt, Full};
pub(crate) use k8s_openapi::api::apps::v1::Deployment;
pub(crate) use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
pub(crate) use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
pub(crate) use k8s_openapi::api::discovery::v1::EndpointSlice;
pub(crate) use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
pub(crate) use kube::config::{KubeConfigOptions, Kubeconfig};
pub(crate) use kube::discovery::{ApiCapabilities, ApiResource, Scope};
pub(crate) use kube::runtime::{watcher, WatchStreamExt};
pub(crate) use kube::{Api, Client, Config, ResourceExt};
pub(crate) use serde::Deserialize as _;
pub(crate) use serde_json::json;
pub(crate) use tower::{Service, ServiceExt};
pub(crate) use tower_scale_from_zero::activity::ActivityStore;
pub(crate) use tower_scale_from_zero::providers::KubernetesProvider;
pub(crate) use tower_scale_from_zero::{
    FunctionId, FunctionScaler, ScaleError, ScaleFromZeroLayer, ScalingConfig, ServiceQuery,
};
pub(crate) use tracing_subscriber::layer::SubscriberExt as _;
pub(crate) use tracing_subscriber::util::SubscriberInitExt as _;
pub(crate) use tracing_subscriber::Layer as _;

pub(crate) const LABEL: &str = "tower-scale-from-zero/function";

// ---------------------------------------------------------------------------------------------
// The test API server

pub(crate) struct TestEnv {
    pub(crate) dir: PathBuf,
    pub(crate) owned: bool,
}

pub(crate) fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kube-test-env.sh")
}

impl TestEnv {
    /// The server `.ci/run` started (`KUBE_TEST_DIR`), or one of our own.
    pub(crate) fn start() -> Self {
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

    pub(crate) fn run(&self, args: &[&str]) {
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

    pub(crate) fn kubeconfig(&self, who: &str) -> PathBuf {
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

pub(crate) static ENV: OnceLock<PathBuf> = OnceLock::new();

pub(crate) fn env_dir() -> &'static Path {
    ENV.get().expect("set in main")
}

pub(crate) fn script_on_env(command: &str) {
    let status = Command::new("bash")
        .arg(script())
        .arg(command)
        .arg(env_dir())
        .status()
        .unwrap();
    assert!(status.success(), "kube-test-env.sh {command} failed");
}

pub(crate) async fn client_from(kubeconfig: &Path) -> Client {
    let config = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

pub(crate) async fn admin() -> Client {
    client_from(&env_dir().join("kubeconfig-admin")).await
}

/// A fresh namespace: a deleted one stays Terminating for ever without its controller.
pub(crate) async fn namespace(client: &Client, prefix: &str) -> String {
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
pub(crate) async fn deploy(
    client: &Client,
    ns: &str,
    name: &str,
    replicas: i32,
    labelled: bool,
    port: u16,
) {
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

/// As the deployment controller would: `n` replicas up and ready, for the current spec.
pub(crate) async fn mark_status(client: &Client, ns: &str, name: &str, n: i32) {
    let api = Api::<Deployment>::namespaced(client.clone(), ns);
    let generation = api
        .get(name)
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap_or(1);
    let status = json!({"status": {
        "observedGeneration": generation,
        "replicas": n, "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("patch status");
}

/// As the EndpointSlice controller would: the function's slice with `n` ready endpoints.
pub(crate) async fn mark_endpoints(client: &Client, ns: &str, name: &str, n: usize, port: u16) {
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

pub(crate) async fn mark_ready(client: &Client, ns: &str, name: &str, port: u16) {
    mark_status(client, ns, name, 1).await;
    mark_endpoints(client, ns, name, 1, port).await;
}

pub(crate) async fn replicas(client: &Client, ns: &str, name: &str) -> i32 {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    d.spec.and_then(|s| s.replicas).unwrap_or(1)
}

/// Spec changes (scale writes included) since creation: `metadata.generation - 1`.
pub(crate) async fn spec_writes(client: &Client, ns: &str, name: &str) -> i64 {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    d.metadata.generation.unwrap_or(1) - 1
}

pub(crate) async fn wait_for_replicas(client: &Client, ns: &str, name: &str, at_least: i32) {
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
pub(crate) struct ScaleWrites {
    pub(crate) seen: Arc<Mutex<Vec<i32>>>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl ScaleWrites {
    pub(crate) async fn watch(client: &Client, ns: &str, name: &str) -> Self {
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
    pub(crate) fn writes(&self) -> usize {
        self.seen.lock().unwrap().len().saturating_sub(1)
    }

    pub(crate) fn counts(&self) -> Vec<i32> {
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

pub(crate) struct Under {
    pub(crate) provider: KubernetesProvider,
    pub(crate) scaler: FunctionScaler,
}

pub(crate) async fn under(client: Client, ns: &str, config: ScalingConfig) -> Under {
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

pub(crate) type Answer = (StatusCode, Option<ScaleError>);

/// One request for `name.ns` through the layer over a service that answers 200.
pub(crate) async fn request(scaler: &FunctionScaler, ns: &str, name: &str) -> Answer {
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

pub(crate) fn spawn_request(
    scaler: &FunctionScaler,
    ns: &str,
    name: &str,
) -> tokio::task::JoinHandle<Answer> {
    let (scaler, ns, name) = (scaler.clone(), ns.to_string(), name.to_string());
    tokio::spawn(async move { request(&scaler, &ns, &name).await })
}

pub(crate) async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {limit:?}"))
}

pub(crate) fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// When the provider's watch pushed each function's first ready state: the instant its
/// `pushing state` event is emitted, right before the push.
pub(crate) static PUSHES: OnceLock<Mutex<BTreeMap<String, Instant>>> = OnceLock::new();

pub(crate) struct PushTimes(pub(crate) &'static Mutex<BTreeMap<String, Instant>>);

pub(crate) const PROVIDER_TARGET: &str = "tower_scale_from_zero::providers::kubernetes";

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PushTimes {
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
        if !event.metadata().target().starts_with(PROVIDER_TARGET) {
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
// Objects and a meddling client

/// Creates (or updates) `objects` in `ns`, finding each kind through discovery.
pub(crate) async fn apply(client: &Client, ns: &str, objects: &[DynamicObject]) {
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
pub(crate) fn manifests(gateway_ns: &str, functions_ns: &str) -> Vec<DynamicObject> {
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

/// A client layer that, before the first scale write goes out, lets "someone else" change the
/// Deployment (a conflicting write): the provider's write then carries a stale
/// resourceVersion and gets 409.
#[derive(Clone)]
pub(crate) struct Interfere {
    pub(crate) admin: Client,
    pub(crate) ns: String,
    pub(crate) name: String,
    /// What the other writer sets: an annotation (the count stays) or a replica count.
    pub(crate) raise_to: Option<i32>,
    pub(crate) fired: Arc<AtomicBool>,
    pub(crate) conflicts: Arc<AtomicUsize>,
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

pub(crate) struct InterfereService<S: Service<Request<kube::client::Body>>> {
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

pub(crate) async fn interfering_client(
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

// ---------------------------------------------------------------------------------------------
// What the gateway logged and counted

/// Warnings and errors the crate logged, as `message field=value ...` lines.
pub(crate) static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Keeps every warning or error of the crate in [`LOGGED`].
pub(crate) struct Warnings;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let metadata = event.metadata();
        if *metadata.level() > tracing::Level::WARN
            || !metadata.target().starts_with("tower_scale_from_zero")
        {
            return;
        }
        struct Line(String);
        impl tracing::field::Visit for Line {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0.insert_str(0, &format!("{value:?} "));
                } else {
                    self.0.push_str(&format!("{}={value:?} ", field.name()));
                }
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.push_str(&format!("{}={value} ", field.name()));
            }
        }
        let mut line = Line(String::new());
        event.record(&mut line);
        LOGGED.lock().unwrap().push(line.0);
    }
}

/// The logged lines that contain every one of `parts`.
pub(crate) fn logged(parts: &[&str]) -> Vec<String> {
    LOGGED
        .lock()
        .unwrap()
        .iter()
        .filter(|line| parts.iter().all(|part| line.contains(part)))
        .cloned()
        .collect()
}

/// The crate's counters, as the binary's recorder has seen them (totals since it started).
pub(crate) static SNAPSHOTTER: OnceLock<metrics_util::debugging::Snapshotter> = OnceLock::new();
static COUNTED: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// The total of counter `name` over the series whose labels include every one of `labels`.
pub(crate) fn counted(name: &str, labels: &[(&str, &str)]) -> u64 {
    let mut totals = COUNTED.lock().unwrap();
    // A snapshot holds what changed since the previous one: added up here.
    for (key, _, _, value) in SNAPSHOTTER.get().unwrap().snapshot().into_vec() {
        if let metrics_util::debugging::DebugValue::Counter(n) = value {
            let key = key.key();
            let mut id = key.name().to_string();
            for label in key.labels() {
                id.push_str(&format!(" {}={}", label.key(), label.value()));
            }
            *totals.entry(id).or_default() += n;
        }
    }
    totals
        .iter()
        .filter(|(id, _)| {
            let mut parts = id.split(' ');
            parts.next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| id.split(' ').any(|part| part == format!("{k}={v}")))
        })
        .map(|(_, n)| n)
        .sum()
}

/// Requests the API server has answered with `verb` on `resource` (its own
/// `apiserver_request_total`, summed over codes and scopes).
pub(crate) async fn served_by_apiserver(verb: &str, resource: &str) -> u64 {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = admin().await.request_text(request).await.unwrap();
    let (verb, resource) = (
        format!("verb=\"{verb}\""),
        format!("resource=\"{resource}\""),
    );
    text.lines()
        .filter(|line| line.starts_with("apiserver_request_total{"))
        .filter(|line| line.contains(&verb) && line.contains(&resource))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

// ---------------------------------------------------------------------------------------------
// More of the controllers' part

/// As the EndpointSlice controller would: the function's slice with one endpoint per
/// `(address, pod uid, ready)`.
pub(crate) async fn mark_pods(
    client: &Client,
    ns: &str,
    name: &str,
    pods: &[(&str, &str, bool)],
    port: u16,
) {
    let endpoints: Vec<_> = pods
        .iter()
        .map(|(address, uid, ready)| json!({
            "addresses": [address],
            "conditions": {"ready": ready},
            "targetRef": {"kind": "Pod", "namespace": ns, "name": format!("{name}-{uid}"), "uid": uid}
        }))
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

/// As the deployment controller would after a while: the Deployment's current spec cannot
/// progress (`ProgressDeadlineExceeded`).
pub(crate) async fn mark_stuck(client: &Client, ns: &str, name: &str) {
    let api = Api::<Deployment>::namespaced(client.clone(), ns);
    let generation = api
        .get(name)
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap_or(1);
    let status = json!({"status": {
        "observedGeneration": generation,
        "replicas": 1, "updatedReplicas": 1, "readyReplicas": 0, "availableReplicas": 0,
        "conditions": [{
            "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            "message": format!("ReplicaSet \"{name}-7d4b9c\" has timed out progressing.")
        }]
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("patch status");
}

/// Opts `name` in to scale to zero after `idle`.
pub(crate) async fn opt_in(client: &Client, ns: &str, name: &str, idle: &str) {
    let opt_in = json!({"metadata": {"annotations": {
        "tower-scale-from-zero/scale-to-zero": "true",
        "tower-scale-from-zero/idle-period": idle
    }}});
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&opt_in))
        .await
        .unwrap();
}

/// A gateway under test that shares activity through its provider's Leases.
pub(crate) async fn under_sharing(client: Client, ns: &str, config: ScalingConfig) -> Under {
    let provider = KubernetesProvider::builder(client).namespace(ns).build();
    let scaler = FunctionScaler::builder(provider.clone())
        .config(config)
        .activity_store(provider.clone())
        .build();
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

/// Waits (up to `patience`) until `condition` holds.
pub(crate) async fn eventually(
    patience: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
) {
    let until = Instant::now() + patience;
    while !condition() {
        assert!(Instant::now() < until, "{what}: not within {patience:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy that can stop forwarding

/// A TCP proxy on 127.0.0.1 in front of the API server. Blackholed, it stops forwarding:
/// established connections go silent both ways and new ones are accepted but held, as a cut
/// network (or a dead node) leaves them; healed, the held ones and new ones are forwarded.
pub(crate) struct Blackhole {
    pub(crate) addr: std::net::SocketAddr,
    cut: Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    pub(crate) async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = tokio::sync::watch::channel(false);
        let cut = Arc::new(cut);
        let forwarding = Arc::clone(&cut);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let mut state = forwarding.subscribe();
                tokio::spawn(async move {
                    // A connection made while cut waits for the cut to heal.
                    while *state.borrow_and_update() {
                        if state.changed().await.is_err() {
                            return;
                        }
                    }
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let copy =
                        |mut from: tokio::net::tcp::OwnedReadHalf,
                         mut to: tokio::net::tcp::OwnedWriteHalf,
                         mut state: tokio::sync::watch::Receiver<bool>| async move {
                            use tokio::io::{AsyncReadExt, AsyncWriteExt};
                            let mut buffer = vec![0u8; 16 * 1024];
                            loop {
                                let n = match from.read(&mut buffer).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => n,
                                };
                                // Cut: nothing more passes on this connection, ever.
                                if *state.borrow_and_update() {
                                    std::future::pending::<()>().await;
                                }
                                if to.write_all(&buffer[..n]).await.is_err() {
                                    return;
                                }
                            }
                        };
                    let up = tokio::spawn(copy(client_read, server_write, state.clone()));
                    copy(server_read, client_write, state).await;
                    up.abort();
                });
            }
        });
        Self { addr, cut, task }
    }

    pub(crate) fn cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client to the API server through `proxy`, as the admin, with the provider's timeouts.
pub(crate) async fn admin_through(proxy: std::net::SocketAddr) -> Client {
    let text = std::fs::read_to_string(env_dir().join("kubeconfig-admin")).unwrap();
    let url = std::fs::read_to_string(env_dir().join("url")).unwrap();
    let text = text.replace(url.trim(), &format!("https://{proxy}"));
    let config = Kubeconfig::from_yaml(&text).unwrap();
    let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .unwrap();
    KubernetesProvider::client(config).unwrap()
}

/// The API server's address.
pub(crate) fn apiserver_addr() -> std::net::SocketAddr {
    let url = std::fs::read_to_string(env_dir().join("url")).unwrap();
    url.trim().trim_start_matches("https://").parse().unwrap()
}

/// The shared API server stopped until [`start`](Self::start) (or the drop, if a test fails
/// first: the next test finds it running).
pub(crate) struct Outage {
    up: bool,
}

impl Outage {
    pub(crate) fn begin() -> Self {
        script_on_env("stop-apiserver");
        Self { up: false }
    }

    pub(crate) fn end(&mut self) {
        if !self.up {
            script_on_env("start-apiserver");
            self.up = true;
        }
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.end();
    }
}
