//! [`KubernetesProvider`]: a [`ServiceQuery`] that drives Kubernetes Deployments directly, with
//! replica state from watches and pushed readiness from EndpointSlices.
//!
//! **Which workloads are functions.** A Deployment that carries the function label (by default
//! `tower-scale-from-zero/function=true`, any label selector with
//! [`KubernetesProviderBuilder::label_selector`]). Anything else, unlabelled or missing, is
//! [`QueryError::not_found`]: a 404 that never touches the platform, so the gateway cannot
//! scale a workload that was never meant to be a function.
//!
//! **Readiness.** A function is served by the Service of the same name. Its routable replicas
//! are the ready endpoints of that Service's EndpointSlices (an endpoint whose `ready`
//! condition is unset counts as ready, as the API defines). The Service must carry the
//! function label too: the EndpointSlice controller copies a Service's labels onto its slices,
//! and the provider watches only labelled objects, so its memory grows with the number of
//! functions, not with the cluster.
//!
//! **State from watches.** Three label-selected watches (Deployments, Services,
//! EndpointSlices; one namespace or all, [`KubernetesProviderBuilder::namespace`]) keep a
//! compact store (a few integers per function). [`get_replicas`](ServiceQuery::get_replicas)
//! answers from it while the watches are in sync and falls back to two reads (a list of the
//! one Deployment, and of its slices, both label-selected) before the first sync and while a
//! watch is down. Each change of a function's state is pushed to the scaler through
//! [`push_readiness_to`](KubernetesProvider::push_readiness_to): a slice gaining a ready
//! endpoint releases that function's held requests at once. A watch that fails (an API
//! server restart, `410 Gone`) is started again, listing afresh, with backoff from 250 ms to
//! 5 s; meanwhile the provider reads.
//!
//! **Scaling** writes the Deployment's `scale` subresource with "at least" semantics: read the
//! Scale (with its resourceVersion), write only if its count is below the target, with that
//! resourceVersion as a precondition; on `409 Conflict` read again and retry. A count that
//! someone else raised (a user, an HPA, another gateway) is never lowered.
//!
//! **Errors.** 403 (RBAC) is a permanent failure whose message names the verb and resource
//! the gateway's account lacks; 401 is permanent; 404 is "not found"; 409 is retried here;
//! 429, 5xx and transport failures are retried by the scaler with its backoff.
//!
//! **Min and max** come from the Deployment's annotations or labels
//! `tower-scale-from-zero/min-replicas` / `tower-scale-from-zero/max-replicas`, or the OpenFaaS
//! names `com.openfaas.scale.min` / `com.openfaas.scale.max`.
//!
//! **Where to forward:** [`KubernetesProvider::endpoint`], by default
//! `http://{name}.{namespace}.svc.cluster.local:{port}` with the port of the function's Service.
//!
//! **Scale to zero** (when the scaler has it on): a Deployment opts in with the annotation
//! (or label) `tower-scale-from-zero/scale-to-zero: "true"` (or OpenFaaS'
//! `com.openfaas.scale.zero`), its idle period in `tower-scale-from-zero/idle-period` (or
//! `com.openfaas.scale.zero-duration`: `15m`, `1h30m`). The provider is also an
//! [`ActivityStore`]: gateways record activity in the annotation
//! `tower-scale-from-zero/last-active`, and a scale-down writes the Scale with the
//! resourceVersion of a fresh read as a precondition, so recent activity or a concurrent
//! scale-up wins.
//!
//! Needs (RBAC): `get`, `list`, `watch` (and `patch`, for shared activity) on `deployments`; `get`, `update` on
//! `deployments/scale`; `get`, `list`, `watch` on `services`; `list`, `watch` on
//! `endpointslices` (group `discovery.k8s.io`). The crate's `deploy/rbac.yaml` grants exactly
//! these.
//!
//! Built against the Kubernetes 1.36 API (`k8s-openapi` feature `v1_36`); the objects it uses
//! (`apps/v1` Deployment and Scale, `v1` Service, `discovery.k8s.io/v1` EndpointSlice) are
//! stable since Kubernetes 1.21, and it is tested against a real kube-apiserver 1.36.
//!
//! ```no_run
//! use tower_scale_from_zero::providers::KubernetesProvider;
//! use tower_scale_from_zero::{FunctionScaler, ScalingConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // In-cluster configuration, or KUBECONFIG outside a cluster.
//! let client = kube::Client::try_default().await?;
//! let provider = KubernetesProvider::builder(client).namespace("functions").build();
//! let scaler = FunctionScaler::new(provider.clone(), ScalingConfig::default());
//! provider.push_readiness_to(scaler.readiness_notifier());
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::activity::ActivityStore;
use crate::util::Jitter;
use crate::{
    FunctionId, IdlePolicy, QueryError, ReadinessNotifier, ServiceQuery, ServiceQueryResponse,
};

/// The label a Deployment (and its Service) carries to be a function, by default.
pub const DEFAULT_LABEL_SELECTOR: &str = "tower-scale-from-zero/function=true";
/// Where requests for a function go, by default: its Service's cluster DNS name.
pub const DEFAULT_ENDPOINT_TEMPLATE: &str = "http://{name}.{namespace}.svc.cluster.local:{port}";

const MIN_KEYS: [&str; 2] = [
    "tower-scale-from-zero/min-replicas",
    "com.openfaas.scale.min",
];
const MAX_KEYS: [&str; 2] = [
    "tower-scale-from-zero/max-replicas",
    "com.openfaas.scale.max",
];
const ZERO_KEYS: [&str; 2] = [
    "tower-scale-from-zero/scale-to-zero",
    "com.openfaas.scale.zero",
];
const ZERO_PERIOD_KEYS: [&str; 2] = [
    "tower-scale-from-zero/idle-period",
    "com.openfaas.scale.zero-duration",
];
/// The annotation where gateways record when they last served a function (RFC 3339).
pub const LAST_ACTIVE: &str = "tower-scale-from-zero/last-active";
/// The label the EndpointSlice controller puts on each slice: the Service it belongs to.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Conflicting scale writes retried in one `set_replicas` before it fails (retryably).
const MAX_CONFLICTS: usize = 5;

/// Builds a [`KubernetesProvider`]; see [`KubernetesProvider::builder`].
#[derive(Clone)]
#[must_use]
pub struct KubernetesProviderBuilder {
    client: Client,
    namespace: Option<String>,
    selector: String,
    template: EndpointTemplate,
}

impl KubernetesProviderBuilder {
    /// Watches and serves one namespace only; functions elsewhere are "not found". By default
    /// every namespace is watched (which needs a ClusterRole).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The label selector that makes a Deployment (and its Service) a function, in the API's
    /// syntax (`key=value`, `key in (a,b)`, `key`, comma-separated). Default
    /// [`DEFAULT_LABEL_SELECTOR`]. An empty selector is refused: it would make every
    /// Deployment a function.
    pub fn label_selector(
        mut self,
        selector: impl Into<String>,
    ) -> Result<Self, InvalidKubernetesOption> {
        let selector = selector.into();
        if selector.trim().is_empty() {
            return Err(InvalidKubernetesOption(
                "the label selector is empty: it would make every Deployment a function".into(),
            ));
        }
        self.selector = selector;
        Ok(self)
    }

    /// Where requests for a function go: a URL with the placeholders `{name}`, `{namespace}`
    /// and `{port}` (the port of the function's Service). Default
    /// [`DEFAULT_ENDPOINT_TEMPLATE`].
    pub fn endpoint_template(
        mut self,
        template: impl Into<String>,
    ) -> Result<Self, InvalidKubernetesOption> {
        self.template = EndpointTemplate::parse(&template.into())?;
        Ok(self)
    }

    /// Starts the watches and returns the provider. Must be called within a Tokio runtime;
    /// the watches stop when the last clone of the provider is dropped.
    pub fn build(self) -> KubernetesProvider {
        let shared = Arc::new(WatchState {
            store: Mutex::new(Store::default()),
            notifier: Mutex::new(None),
            selector: self.selector.clone(),
        });
        let tasks = vec![
            spawn_watch::<Deployment>(&self, &shared),
            spawn_watch::<Service>(&self, &shared),
            spawn_watch::<EndpointSlice>(&self, &shared),
        ];
        KubernetesProvider {
            inner: Arc::new(Inner {
                client: self.client,
                namespace: self.namespace,
                template: self.template,
                shared,
                tasks,
            }),
        }
    }
}

impl fmt::Debug for KubernetesProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubernetesProviderBuilder")
            .field("namespace", &self.namespace)
            .field("selector", &self.selector)
            .field("template", &self.template.text)
            .finish_non_exhaustive()
    }
}

/// An option given to [`KubernetesProviderBuilder`] cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid Kubernetes provider option: {0}")]
pub struct InvalidKubernetesOption(String);

/// Functions are labelled Deployments in a Kubernetes cluster; see the [module
/// docs](self). Cloning shares the client, the watches and their store.
#[derive(Clone)]
pub struct KubernetesProvider {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    namespace: Option<String>,
    template: EndpointTemplate,
    shared: Arc<WatchState>,
    tasks: Vec<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl fmt::Debug for KubernetesProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let store = self.inner.shared.lock();
        f.debug_struct("KubernetesProvider")
            .field("namespace", &self.inner.namespace)
            .field("selector", &self.inner.shared.selector)
            .field("functions", &store.deployments.live.len())
            .field("in_sync", &store.in_sync())
            .finish_non_exhaustive()
    }
}

impl KubernetesProvider {
    /// A provider with the default options, watching every namespace. Must be called within
    /// a Tokio runtime.
    pub fn new(client: Client) -> Self {
        Self::builder(client).build()
    }

    /// A builder: namespace, label selector, endpoint template.
    pub fn builder(client: Client) -> KubernetesProviderBuilder {
        KubernetesProviderBuilder {
            client,
            namespace: None,
            selector: DEFAULT_LABEL_SELECTOR.into(),
            template: EndpointTemplate::parse(DEFAULT_ENDPOINT_TEMPLATE).expect("valid default"),
        }
    }

    /// Pushes every change of a function's state to `notifier` (from then on): requests held
    /// for a function are released the moment one of its endpoints becomes ready.
    pub fn push_readiness_to(&self, notifier: ReadinessNotifier) {
        *lock(&self.inner.shared.notifier) = Some(notifier);
    }

    /// Whether every watch has listed its objects and is connected: `get_replicas` answers
    /// from memory. Otherwise it reads from the API server.
    pub fn is_in_sync(&self) -> bool {
        self.inner.shared.lock().in_sync()
    }

    /// Where to forward requests for `function`: the endpoint template filled in. Needs the
    /// function's Service when the template has `{port}` (from the watch, else one read).
    pub async fn endpoint(&self, function: &FunctionId) -> Result<http::Uri, QueryError> {
        self.check_namespace(function)?;
        let port = if self.inner.template.needs_port {
            Some(self.service_port(function).await?)
        } else {
            None
        };
        let url = self.inner.template.fill(function, port);
        url.parse().map_err(|e| {
            QueryError::provider(format!("endpoint {url:?} of {function} is not a URL: {e}"))
                .permanent()
        })
    }

    async fn service_port(&self, function: &FunctionId) -> Result<u16, QueryError> {
        {
            let store = self.inner.shared.lock();
            if let Some(port) = store.services.live.get(function) {
                return port.ok_or_else(|| no_port(function));
            }
            if store.services.in_sync() {
                return Err(no_service(function, &self.inner.shared.selector));
            }
        }
        let services: Api<Service> =
            Api::namespaced(self.inner.client.clone(), function.namespace());
        let list = services
            .list(&self.selected(function))
            .await
            .map_err(|e| api_error(e, "list", "services", function))?;
        match list.items.first() {
            Some(service) => service_port(service).ok_or_else(|| no_port(function)),
            None => Err(no_service(function, &self.inner.shared.selector)),
        }
    }

    /// A function whose Service is missing or unlabelled never looks ready (its slices are
    /// not watched): say so once, instead of leaving a user with 504s to explain.
    fn warn_if_no_service(&self, function: &FunctionId) {
        let mut store = self.inner.shared.lock();
        if store.services.in_sync()
            && !store.services.live.contains_key(function)
            && store.warned.insert(function.clone())
        {
            tracing::warn!(
                %function,
                "function has no Service {} labelled {} in its namespace: its readiness \
                 (the Service's EndpointSlices) cannot be seen, so its requests will time out",
                function.name(),
                self.inner.shared.selector
            );
        }
    }

    fn check_namespace(&self, function: &FunctionId) -> Result<(), QueryError> {
        match &self.inner.namespace {
            Some(ns) if ns != function.namespace() => Err(QueryError::not_found(format!(
                "namespace {} is not served (this provider watches {ns} only)",
                function.namespace()
            ))),
            _ => Ok(()),
        }
    }

    /// The function's Deployment and nothing else, if it carries the label.
    fn selected(&self, function: &FunctionId) -> ListParams {
        ListParams::default()
            .labels(&self.inner.shared.selector)
            .fields(&format!("metadata.name={}", function.name()))
    }

    fn not_labelled(&self, function: &FunctionId) -> QueryError {
        QueryError::not_found(format!(
            "no Deployment {} labelled {} in namespace {}",
            function.name(),
            self.inner.shared.selector,
            function.namespace()
        ))
    }

    /// The function's Deployment settings, from the store or (out of sync) a read.
    async fn deployment(&self, function: &FunctionId) -> Result<DeploymentInfo, QueryError> {
        {
            let store = self.inner.shared.lock();
            if store.deployments.in_sync() {
                return store
                    .deployments
                    .live
                    .get(function)
                    .copied()
                    .ok_or_else(|| self.not_labelled(function));
            }
        }
        let deployments: Api<Deployment> =
            Api::namespaced(self.inner.client.clone(), function.namespace());
        let list = deployments
            .list(&self.selected(function))
            .await
            .map_err(|e| api_error(e, "list", "deployments", function))?;
        list.items
            .first()
            .map(DeploymentInfo::of)
            .ok_or_else(|| self.not_labelled(function))
    }

    async fn ready_endpoints(&self, function: &FunctionId) -> Result<u64, QueryError> {
        {
            let store = self.inner.shared.lock();
            if store.slices.in_sync() {
                return Ok(store.ready_endpoints(function));
            }
        }
        let slices: Api<EndpointSlice> =
            Api::namespaced(self.inner.client.clone(), function.namespace());
        let selector = format!(
            "{SERVICE_NAME_LABEL}={},{}",
            function.name(),
            self.inner.shared.selector
        );
        let list = slices
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| api_error(e, "list", "endpointslices", function))?;
        Ok(list.items.iter().map(|s| u64::from(ready_in(s))).sum())
    }
}

#[async_trait]
impl ServiceQuery for KubernetesProvider {
    async fn get_replicas(
        &self,
        function: &FunctionId,
    ) -> Result<ServiceQueryResponse, QueryError> {
        self.check_namespace(function)?;
        let deployment = self.deployment(function).await?;
        let available = self.ready_endpoints(function).await?;
        self.warn_if_no_service(function);
        Ok(deployment.state(available))
    }

    async fn set_replicas(&self, function: &FunctionId, replicas: u64) -> Result<(), QueryError> {
        self.check_namespace(function)?;
        // Only functions are ever scaled, whatever the caller.
        self.deployment(function).await?;
        let target = i32::try_from(replicas).unwrap_or(i32::MAX);
        let deployments: Api<Deployment> =
            Api::namespaced(self.inner.client.clone(), function.namespace());
        for _ in 0..MAX_CONFLICTS {
            let mut scale = deployments
                .get_scale(function.name())
                .await
                .map_err(|e| api_error(e, "get", "deployments/scale", function))?;
            let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            if current >= target {
                // Someone asked for at least as many: never lower their count.
                return Ok(());
            }
            scale.spec.get_or_insert_with(Default::default).replicas = Some(target);
            // `scale.metadata.resource_version` is the precondition: the write fails with 409
            // if the count changed since the read.
            match deployments
                .replace_scale(function.name(), &PostParams::default(), &scale)
                .await
            {
                Ok(_) => {
                    tracing::debug!(%function, from = current, to = target, "scale written");
                    return Ok(());
                }
                Err(err) if status_code(&err) == Some(409) => {
                    tracing::debug!(%function, "scale write conflicted; reading again");
                }
                Err(err) => return Err(api_error(err, "update", "deployments/scale", function)),
            }
        }
        Err(QueryError::provider(format!(
            "scale of {function} conflicted with other writers {MAX_CONFLICTS} times in a row"
        ))
        .with_status(http::StatusCode::CONFLICT))
    }

    /// Reads the Deployment afresh; no scale-down if a gateway recorded activity within
    /// `idle` (the `last-active` annotation); else writes replicas 0 with the read's
    /// resourceVersion as the precondition, so that anything written since (a scale-up,
    /// recorded activity) wins: a 409 is `Ok(false)`.
    async fn scale_to_zero(
        &self,
        function: &FunctionId,
        idle: Duration,
    ) -> Result<bool, QueryError> {
        self.check_namespace(function)?;
        let deployments: Api<Deployment> =
            Api::namespaced(self.inner.client.clone(), function.namespace());
        let list = deployments
            .list(&self.selected(function))
            .await
            .map_err(|e| api_error(e, "list", "deployments", function))?;
        let deployment = list
            .items
            .first()
            .ok_or_else(|| self.not_labelled(function))?;
        let info = DeploymentInfo::of(deployment);
        if info.desired == 0 {
            return Ok(true);
        }
        // A clock ahead of ours counts as recent.
        let recent = |at: SystemTime| at.elapsed().map_or(true, |ago| ago < idle);
        if info.last_active.is_some_and(recent) {
            return Ok(false);
        }
        let scale = Scale {
            metadata: ObjectMeta {
                name: Some(function.name().to_string()),
                namespace: Some(function.namespace().to_string()),
                resource_version: deployment.metadata.resource_version.clone(),
                ..ObjectMeta::default()
            },
            spec: Some(ScaleSpec { replicas: Some(0) }),
            status: None,
        };
        match deployments
            .replace_scale(function.name(), &PostParams::default(), &scale)
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if status_code(&err) == Some(409) => Ok(false),
            Err(err) => Err(api_error(err, "update", "deployments/scale", function)),
        }
    }
}

/// Gateways share activity through the function's Deployment: each records when it served
/// the function in the annotation `tower-scale-from-zero/last-active` (a merge patch, at most
/// once per quarter of the idle period per gateway while active; needs `patch` on
/// `deployments`), and reads it back from the watch.
#[async_trait]
impl ActivityStore for KubernetesProvider {
    async fn record(&self, function: &FunctionId) -> Result<(), QueryError> {
        self.check_namespace(function)?;
        let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let annotated = Deployment {
            metadata: ObjectMeta {
                annotations: Some([(LAST_ACTIVE.to_string(), now)].into()),
                ..ObjectMeta::default()
            },
            ..Deployment::default()
        };
        Api::<Deployment>::namespaced(self.inner.client.clone(), function.namespace())
            .patch(
                function.name(),
                &PatchParams::default(),
                &Patch::Merge(&annotated),
            )
            .await
            .map_err(|e| api_error(e, "patch", "deployments", function))?;
        Ok(())
    }

    async fn idle_for(&self, function: &FunctionId) -> Result<Option<Duration>, QueryError> {
        self.check_namespace(function)?;
        let info = self.deployment(function).await?;
        Ok(info
            .last_active
            .map(|at| at.elapsed().unwrap_or(Duration::ZERO)))
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// A kube error as a [`QueryError`]: `verb` and `resource` name the call, for RBAC messages.
fn api_error(err: kube::Error, verb: &str, resource: &str, function: &FunctionId) -> QueryError {
    let ns = function.namespace();
    let kube::Error::Api(status) = &err else {
        return QueryError::with_source(format!("{verb} {resource} in {ns}"), err);
    };
    let code = http::StatusCode::from_u16(status.code).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let said = status.message.clone();
    match status.code {
        404 => QueryError::not_found(format!("{resource} of {function}: {said}")),
        403 => QueryError::provider(format!(
            "forbidden (RBAC): the gateway's account may not {verb} {resource} in namespace \
             {ns}; grant `{verb}` on `{resource}` in its Role. The API server said: {said}"
        ))
        .with_status(code)
        .permanent(),
        401 => QueryError::provider(format!(
            "unauthorized: the API server does not accept the gateway's credentials ({verb} \
             {resource} in {ns}): {said}"
        ))
        .with_status(code)
        .permanent(),
        _ => QueryError::provider(format!("{verb} {resource} in {ns}: {said}")).with_status(code),
    }
}

fn no_service(function: &FunctionId, selector: &str) -> QueryError {
    QueryError::not_found(format!(
        "no Service {} labelled {selector} in namespace {}",
        function.name(),
        function.namespace()
    ))
}

fn no_port(function: &FunctionId) -> QueryError {
    QueryError::provider(format!("the Service of {function} has no port")).permanent()
}

// ---------------------------------------------------------------------------------------------
// The endpoint template

#[derive(Clone)]
struct EndpointTemplate {
    text: String,
    needs_port: bool,
}

impl EndpointTemplate {
    fn parse(text: &str) -> Result<Self, InvalidKubernetesOption> {
        let invalid =
            |why: String| InvalidKubernetesOption(format!("endpoint template {text:?}: {why}"));
        // Every `{...}` must be a known placeholder.
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| invalid("a `{` is not closed".into()))?;
            let key = &rest[open + 1..open + close];
            if !matches!(key, "name" | "namespace" | "port") {
                return Err(invalid(format!(
                    "unknown placeholder {{{key}}} (use {{name}}, {{namespace}}, {{port}})"
                )));
            }
            rest = &rest[open + close + 1..];
        }
        let sample = text
            .replace("{name}", "f")
            .replace("{namespace}", "ns")
            .replace("{port}", "8080");
        let uri: http::Uri = sample
            .parse()
            .map_err(|e| invalid(format!("not a URL: {e}")))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(invalid("expected http://host[:port][/path]".into()));
        }
        Ok(Self {
            text: text.to_string(),
            needs_port: text.contains("{port}"),
        })
    }

    fn fill(&self, function: &FunctionId, port: Option<u16>) -> String {
        let mut url = self
            .text
            .replace("{name}", function.name())
            .replace("{namespace}", function.namespace());
        if let Some(port) = port {
            url = url.replace("{port}", &port.to_string());
        }
        url
    }
}

// ---------------------------------------------------------------------------------------------
// The store the watches keep

/// What the watch tasks share with the provider: the store and where to push.
struct WatchState {
    store: Mutex<Store>,
    notifier: Mutex<Option<ReadinessNotifier>>,
    selector: String,
}

impl WatchState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        lock(&self.store)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The store is consistent after every statement: a panic elsewhere does not spoil it.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Default)]
struct Store {
    deployments: Table<HashMap<FunctionId, DeploymentInfo>>,
    /// The port of each function's Service (`None`: it has none).
    services: Table<HashMap<FunctionId, Option<u16>>>,
    /// Ready endpoints per slice, per function (the slice's Service).
    slices: Table<HashMap<FunctionId, HashMap<String, u32>>>,
    /// The last state pushed per function, so that only changes are pushed.
    pushed: HashMap<FunctionId, ServiceQueryResponse>,
    /// Functions already warned about for having no labelled Service.
    warned: HashSet<FunctionId>,
}

impl Store {
    fn in_sync(&self) -> bool {
        self.deployments.in_sync() && self.slices.in_sync()
    }

    fn ready_endpoints(&self, function: &FunctionId) -> u64 {
        self.slices
            .live
            .get(function)
            .map_or(0, |slices| slices.values().map(|&n| u64::from(n)).sum())
    }

    /// The state of `function` if it changed since the last push (and the store knows it).
    fn changed_state(&mut self, function: &FunctionId) -> Option<ServiceQueryResponse> {
        if !self.in_sync() {
            return None;
        }
        let Some(deployment) = self.deployments.live.get(function) else {
            self.pushed.remove(function);
            self.warned.remove(function);
            return None;
        };
        let state = deployment.state(self.ready_endpoints(function));
        if self.pushed.get(function) == Some(&state) {
            return None;
        }
        self.pushed.insert(function.clone(), state.clone());
        Some(state)
    }
}

/// One watch's objects: the live map, the one being filled during a (re-)list, and whether
/// the watch is connected.
struct Table<M> {
    live: M,
    relisting: Option<M>,
    synced: bool,
    healthy: bool,
}

impl<M: Default> Default for Table<M> {
    fn default() -> Self {
        Self {
            live: M::default(),
            relisting: None,
            synced: false,
            healthy: false,
        }
    }
}

impl<M> Table<M> {
    fn in_sync(&self) -> bool {
        self.synced && self.healthy
    }
}

/// What changed in the store after one watch event.
enum Affected {
    None,
    One(FunctionId),
    All,
}

/// A watched kind: how its objects land in the store.
trait Watched:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + fmt::Debug
    + Send
    + Sync
    + 'static
{
    type Map: Default + Send;
    const WHAT: &'static str;
    fn table(store: &mut Store) -> &mut Table<Self::Map>;
    /// Puts the object in `map`; returns the function it concerns.
    fn apply(&self, map: &mut Self::Map) -> Option<FunctionId>;
    fn delete(&self, map: &mut Self::Map) -> Option<FunctionId>;
}

fn function_of(namespace: Option<String>, name: &str) -> Option<FunctionId> {
    // Names that are not DNS-1123 labels (Kubernetes allows dots) cannot be requested.
    FunctionId::new(name, namespace.as_deref()?).ok()
}

impl Watched for Deployment {
    type Map = HashMap<FunctionId, DeploymentInfo>;
    const WHAT: &'static str = "deployments";
    fn table(store: &mut Store) -> &mut Table<Self::Map> {
        &mut store.deployments
    }
    fn apply(&self, map: &mut Self::Map) -> Option<FunctionId> {
        let id = function_of(self.namespace(), &self.name_any())?;
        map.insert(id.clone(), DeploymentInfo::of(self));
        Some(id)
    }
    fn delete(&self, map: &mut Self::Map) -> Option<FunctionId> {
        let id = function_of(self.namespace(), &self.name_any())?;
        map.remove(&id);
        Some(id)
    }
}

impl Watched for Service {
    type Map = HashMap<FunctionId, Option<u16>>;
    const WHAT: &'static str = "services";
    fn table(store: &mut Store) -> &mut Table<Self::Map> {
        &mut store.services
    }
    fn apply(&self, map: &mut Self::Map) -> Option<FunctionId> {
        let id = function_of(self.namespace(), &self.name_any())?;
        map.insert(id, service_port(self));
        None // the port does not change a function's state
    }
    fn delete(&self, map: &mut Self::Map) -> Option<FunctionId> {
        map.remove(&function_of(self.namespace(), &self.name_any())?);
        None
    }
}

impl Watched for EndpointSlice {
    type Map = HashMap<FunctionId, HashMap<String, u32>>;
    const WHAT: &'static str = "endpointslices";
    fn table(store: &mut Store) -> &mut Table<Self::Map> {
        &mut store.slices
    }
    fn apply(&self, map: &mut Self::Map) -> Option<FunctionId> {
        let id = slice_function(self)?;
        map.entry(id.clone())
            .or_default()
            .insert(self.name_any(), ready_in(self));
        Some(id)
    }
    fn delete(&self, map: &mut Self::Map) -> Option<FunctionId> {
        let id = slice_function(self)?;
        if let Some(slices) = map.get_mut(&id) {
            slices.remove(&self.name_any());
            if slices.is_empty() {
                map.remove(&id);
            }
        }
        Some(id)
    }
}

fn slice_function(slice: &EndpointSlice) -> Option<FunctionId> {
    let service = slice.labels().get(SERVICE_NAME_LABEL)?;
    function_of(slice.namespace(), service)
}

/// Ready endpoints in a slice; an unset `ready` condition means ready (API definition).
fn ready_in(slice: &EndpointSlice) -> u32 {
    let ready = slice
        .endpoints
        .iter()
        .flatten()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .count();
    u32::try_from(ready).unwrap_or(u32::MAX)
}

/// The Service's port: the one named `http` if there are several, else the first.
fn service_port(service: &Service) -> Option<u16> {
    let ports = service.spec.as_ref()?.ports.as_ref()?;
    let port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .or_else(|| ports.first())?;
    u16::try_from(port.port).ok()
}

/// What the provider keeps of a function's Deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DeploymentInfo {
    desired: u64,
    min: u64,
    max: u64,
    idle: IdlePolicy,
    /// When a gateway last recorded serving it (the `last-active` annotation).
    last_active: Option<SystemTime>,
}

impl DeploymentInfo {
    fn of(deployment: &Deployment) -> Self {
        // The API server defaults an unset `spec.replicas` to 1.
        let desired = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .map_or(1, |r| u64::try_from(r).unwrap_or(0));
        let meta = deployment.meta();
        let name = deployment.name_any();
        let setting = |keys: &[&str]| -> Option<&str> {
            keys.iter().find_map(|key| {
                meta.annotations
                    .as_ref()
                    .and_then(|a| a.get(*key))
                    .or_else(|| meta.labels.as_ref().and_then(|l| l.get(*key)))
                    .map(String::as_str)
            })
        };
        let count = |keys: &[&str]| {
            let value = setting(keys)?;
            match value.trim().parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    tracing::warn!(deployment = %name, "{value:?} is not a replica count; ignored");
                    None
                }
            }
        };
        let last_active =
            setting(&[LAST_ACTIVE]).and_then(|at| humantime::parse_rfc3339_weak(at.trim()).ok());
        Self {
            desired,
            min: count(&MIN_KEYS).unwrap_or(1),
            max: count(&MAX_KEYS).unwrap_or(u64::MAX),
            idle: crate::providers::idle_policy(
                &name,
                setting(&ZERO_KEYS),
                setting(&ZERO_PERIOD_KEYS),
            ),
            last_active,
        }
    }

    fn state(&self, available: u64) -> ServiceQueryResponse {
        ServiceQueryResponse::new(self.desired, available)
            .min_replicas(self.min)
            .max_replicas(self.max)
            .scale_to_zero(self.idle)
    }
}

// ---------------------------------------------------------------------------------------------
// The watch tasks

fn spawn_watch<K: Watched>(
    builder: &KubernetesProviderBuilder,
    shared: &Arc<WatchState>,
) -> AbortHandle {
    let api: Api<K> = match &builder.namespace {
        Some(ns) => Api::namespaced(builder.client.clone(), ns),
        None => Api::all(builder.client.clone()),
    };
    let config = watcher::Config::default().labels(&builder.selector);
    let shared = Arc::clone(shared);
    tokio::spawn(
        async move {
            let mut backoff = WatchBackoff::new();
            loop {
                // A failed watch is started afresh: it lists again (the store is whole once
                // more, whatever was missed) and its InitDone says it is connected, where a
                // resumed watch on a quiet cluster would say nothing.
                let stream = watcher(api.clone(), config.clone());
                futures::pin_mut!(stream);
                while let Some(event) = stream.next().await {
                    let failed = event.is_err();
                    if matches!(event, Ok(watcher::Event::InitDone)) {
                        backoff.reset();
                    }
                    let pushes = handle::<K>(&shared, event);
                    let notifier = lock(&shared.notifier).clone();
                    if let Some(notifier) = notifier {
                        for (function, state) in pushes {
                            tracing::debug!(%function, ready = state.is_ready(), "pushing state");
                            notifier.notify(&function, state);
                        }
                    }
                    if failed {
                        break;
                    }
                }
                tokio::time::sleep(backoff.next_pause()).await;
            }
        }
        .instrument(tracing::info_span!("watch", resource = K::WHAT)),
    )
    .abort_handle()
}

/// Applies one watch event to the store; returns the states to push.
fn handle<K: Watched>(
    shared: &WatchState,
    event: Result<watcher::Event<K>, watcher::Error>,
) -> Vec<(FunctionId, ServiceQueryResponse)> {
    let mut store = shared.lock();
    let table = K::table(&mut store);
    let affected = match event {
        Ok(watcher::Event::Init) => {
            if table.synced {
                tracing::info!("watch of {} re-listing", K::WHAT);
            }
            table.relisting = Some(K::Map::default());
            Affected::None
        }
        Ok(watcher::Event::InitApply(object)) => {
            if let Some(map) = table.relisting.as_mut() {
                object.apply(map);
            }
            Affected::None
        }
        Ok(watcher::Event::InitDone) => {
            if let Some(map) = table.relisting.take() {
                table.live = map;
            }
            if !table.healthy {
                tracing::info!("watch of {} in sync", K::WHAT);
            }
            table.synced = true;
            table.healthy = true;
            Affected::All
        }
        Ok(watcher::Event::Apply(object)) => {
            table.healthy = true;
            object
                .apply(&mut table.live)
                .map_or(Affected::None, Affected::One)
        }
        Ok(watcher::Event::Delete(object)) => {
            table.healthy = true;
            object
                .delete(&mut table.live)
                .map_or(Affected::None, Affected::One)
        }
        Err(err) => {
            if table.healthy {
                tracing::warn!(
                    error = %crate::util::ErrorChain(&err),
                    "watch of {} failed; reading from the API server until it recovers",
                    K::WHAT
                );
            }
            table.healthy = false;
            Affected::None
        }
    };
    match affected {
        Affected::None => Vec::new(),
        Affected::One(function) => store
            .changed_state(&function)
            .map(|state| vec![(function, state)])
            .unwrap_or_default(),
        Affected::All => {
            let Store {
                pushed,
                deployments,
                ..
            } = &mut *store;
            pushed.retain(|f, _| deployments.live.contains_key(f));
            let functions: Vec<FunctionId> = deployments.live.keys().cloned().collect();
            functions
                .into_iter()
                .filter_map(|f| store.changed_state(&f).map(|s| (f, s)))
                .collect()
        }
    }
}

/// Restarts a failed watch after 250 ms, doubling up to 5 s, with jitter; reset once a
/// watch has listed.
struct WatchBackoff {
    next: Duration,
    jitter: Jitter,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Self {
            next: Self::FIRST,
            jitter: Jitter::new(),
        }
    }

    fn next_pause(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        // Between half the ceiling and the ceiling: spread, never a hot loop.
        ceiling / 2 + (ceiling / 2).mul_f64(self.jitter.unit())
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(value: serde_json::Value) -> Deployment {
        serde_json::from_value(value).unwrap()
    }

    fn slice(service: &str, ready: &[Option<bool>]) -> EndpointSlice {
        let endpoints: Vec<_> = ready
            .iter()
            .map(|r| match r {
                Some(r) => {
                    serde_json::json!({"addresses": ["10.0.0.1"], "conditions": {"ready": r}})
                }
                None => serde_json::json!({"addresses": ["10.0.0.1"]}),
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{service}-x"), "namespace": "ns",
                         "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4",
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    #[test]
    fn endpoint_templates_are_checked_and_filled() {
        let id = FunctionId::new("figlet", "fns").unwrap();
        let default = EndpointTemplate::parse(DEFAULT_ENDPOINT_TEMPLATE).unwrap();
        assert!(default.needs_port);
        assert_eq!(
            default.fill(&id, Some(8080)),
            "http://figlet.fns.svc.cluster.local:8080"
        );
        let fixed = EndpointTemplate::parse("http://127.0.0.1:9000/{namespace}/{name}").unwrap();
        assert!(!fixed.needs_port);
        assert_eq!(fixed.fill(&id, None), "http://127.0.0.1:9000/fns/figlet");
        for (bad, why) in [
            ("http://{nme}:80", "unknown placeholder {nme}"),
            ("http://{name:80", "not closed"),
            ("https://{name}:{port}", "expected http://"),
            ("{name}", "expected http://"),
            ("http://{name} x:{port}", "not a URL"),
        ] {
            let err = EndpointTemplate::parse(bad).err().unwrap().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn min_and_max_come_from_annotations_or_labels_openfaas_names_too() {
        let info = DeploymentInfo::of(&deployment(serde_json::json!({
            "metadata": {"name": "f",
                "annotations": {"tower-scale-from-zero/min-replicas": "2"},
                "labels": {"com.openfaas.scale.max": "4"}},
            "spec": {"replicas": 0, "selector": {}, "template": {}}
        })));
        assert_eq!((info.desired, info.min, info.max), (0, 2, 4));
        assert_eq!(info.idle, IdlePolicy::Never);
        // Unset replicas are defaulted to 1 by the API server; a bad value is ignored.
        let info = DeploymentInfo::of(&deployment(serde_json::json!({
            "metadata": {"name": "f", "annotations": {"com.openfaas.scale.min": "many"}},
            "spec": {"selector": {}, "template": {}}
        })));
        assert_eq!((info.desired, info.min, info.max), (1, 1, u64::MAX));
        assert_eq!(info.state(0).scale_target(), 1);
    }

    #[test]
    fn scale_to_zero_settings_and_recorded_activity_are_read() {
        let info = DeploymentInfo::of(&deployment(serde_json::json!({
            "metadata": {"name": "f",
                "labels": {"com.openfaas.scale.zero": "true",
                           "com.openfaas.scale.zero-duration": "15m"},
                "annotations": {LAST_ACTIVE: "2026-11-29T20:00:00.123Z"}},
            "spec": {"replicas": 1, "selector": {}, "template": {}}
        })));
        assert_eq!(info.idle, IdlePolicy::After(Duration::from_secs(900)));
        assert_eq!(
            info.last_active,
            Some(humantime::parse_rfc3339("2026-11-29T20:00:00.123Z").unwrap())
        );
        assert_eq!(info.state(1).scale_to_zero, info.idle);
    }

    #[test]
    fn an_endpoint_without_a_ready_condition_counts_as_ready() {
        assert_eq!(ready_in(&slice("f", &[Some(true), None, Some(false)])), 2);
        assert_eq!(ready_in(&slice("f", &[])), 0);
    }

    fn shared() -> WatchState {
        WatchState {
            store: Mutex::new(Store::default()),
            notifier: Mutex::new(None),
            selector: DEFAULT_LABEL_SELECTOR.into(),
        }
    }

    fn function_deployment(replicas: i32) -> Deployment {
        deployment(serde_json::json!({
            "metadata": {"name": "f", "namespace": "ns"},
            "spec": {"replicas": replicas, "selector": {}, "template": {}}
        }))
    }

    #[test]
    fn the_store_syncs_on_init_done_pushes_only_changes_and_leaves_sync_on_errors() {
        let shared = shared();
        let id = FunctionId::new("f", "ns").unwrap();
        use watcher::Event::*;
        assert!(handle::<Deployment>(&shared, Ok(Init)).is_empty());
        assert!(handle(&shared, Ok(InitApply(function_deployment(1)))).is_empty());
        assert!(handle::<Deployment>(&shared, Ok(InitDone)).is_empty());
        assert!(!shared.lock().in_sync(), "slices not listed yet");
        handle::<EndpointSlice>(&shared, Ok(Init));
        let pushed = handle::<EndpointSlice>(&shared, Ok(InitDone));
        assert_eq!(pushed, vec![(id.clone(), ServiceQueryResponse::new(1, 0))]);
        assert!(shared.lock().in_sync());

        // A slice gains a ready endpoint: one push; the same state again: none.
        let ready = slice("f", &[Some(true)]);
        let pushed = handle(&shared, Ok(Apply(ready.clone())));
        assert_eq!(pushed, vec![(id.clone(), ServiceQueryResponse::new(1, 1))]);
        assert!(handle(&shared, Ok(Apply(ready.clone()))).is_empty());

        // A failed watch: out of sync (reads), and no pushes from it.
        let err = watcher::Error::NoResourceVersion;
        assert!(handle::<EndpointSlice>(&shared, Err(err)).is_empty());
        assert!(!shared.lock().in_sync());
        // A re-list replaces the table whole: the slice is gone.
        handle::<EndpointSlice>(&shared, Ok(Init));
        let pushed = handle::<EndpointSlice>(&shared, Ok(InitDone));
        assert_eq!(pushed, vec![(id.clone(), ServiceQueryResponse::new(1, 0))]);
        assert!(shared.lock().in_sync());

        // A deleted Deployment leaves nothing behind.
        handle(&shared, Ok(Delete(function_deployment(1))));
        let store = shared.lock();
        assert!(store.deployments.live.is_empty());
        assert!(store.pushed.is_empty());
    }

    #[test]
    fn watch_backoff_doubles_to_five_seconds_with_jitter_and_resets() {
        let mut backoff = WatchBackoff::new();
        let pauses: Vec<Duration> = (0..8).map(|_| backoff.next_pause()).collect();
        for (i, pause) in pauses.iter().enumerate() {
            let ceiling = (Duration::from_millis(250) * (1 << i)).min(Duration::from_secs(5));
            assert!(*pause >= ceiling / 2 && *pause <= ceiling, "{i}: {pause:?}");
        }
        backoff.reset();
        assert!(backoff.next_pause() <= Duration::from_millis(250));
    }
}
