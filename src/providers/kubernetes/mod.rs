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
//! functions, not with the cluster. The pods that were serving when a Deployment went to zero
//! are never taken as readiness of its next scale-up, however long the EndpointSlice
//! controller takes to drop them (they are known by their pod UID). A Deployment the
//! deployment controller reports cannot become ready (`ProgressDeadlineExceeded`, a
//! `ReplicaFailure` such as an exceeded quota) fails its cold start at once with a 502 that
//! names the condition.
//!
//! **State from watches** (see [`watches`]). Three label-selected watches (Deployments,
//! Services, EndpointSlices; one namespace or all, [`KubernetesProviderBuilder::namespace`])
//! keep a compact store (a few facts per function). [`get_replicas`](ServiceQuery::get_replicas)
//! answers from it; each change of a function's state is pushed to the scaler through
//! [`push_readiness_to`](KubernetesProvider::push_readiness_to), so a slice gaining a ready
//! endpoint releases that function's held requests at once. **While a watch is down** (an
//! API server restart, an outage, a network cut) the store keeps answering from the state it
//! last synced, for up to [`max_staleness`](KubernetesProviderBuilder::max_staleness) (5 min):
//! a control-plane outage does not take down functions that are serving. Only functions the
//! store never saw are read from the API server meanwhile (and fail, with a log line saying the
//! API server is unreachable, if it is). Before the first sync, it reads.
//!
//! **Scaling** writes the Deployment's `scale` subresource with "at least" semantics: read the
//! Scale (with its resourceVersion), write only if its count is below the target, with that
//! resourceVersion as a precondition; on `409 Conflict` read again and retry. A count that
//! someone else raised (a user, an HPA, another gateway) is never lowered.
//!
//! **Scale to zero** (when the scaler has it on): a Deployment opts in with the annotation
//! (or label) `tower-scale-from-zero/scale-to-zero: "true"` (or OpenFaaS'
//! `com.openfaas.scale.zero`), its idle period in `tower-scale-from-zero/idle-period` (or
//! `com.openfaas.scale.zero-duration`: `15m`, `1h30m`). The provider is also an
//! [`ActivityStore`](crate::activity::ActivityStore): gateways record activity in a
//! `coordination.k8s.io/v1` Lease per function (`tower-scale-from-zero.NAME` in the function's
//! namespace). A scale-down is refused while another gateway recorded activity within the idle
//! period, while a scale-up is under way (replicas wanted that the controller has not yet made
//! ready), and when the Deployment changed since it was read (a resourceVersion
//! precondition): several gateways never undo each other.
//!
//! **Errors.** 403 (RBAC) is a permanent failure whose message names the verb and resource
//! the gateway's account lacks; 401 is permanent; 404 is "not found"; 409 is retried here;
//! 429, 5xx and transport failures are retried by the scaler with its backoff.
//!
//! **Min and max** come from the Deployment's annotations or labels
//! `tower-scale-from-zero/min-replicas` / `tower-scale-from-zero/max-replicas`, or the OpenFaaS
//! names `com.openfaas.scale.min` / `com.openfaas.scale.max`.
//!
//! **Where to forward:** to the function's ready endpoints
//! ([`KubernetesProvider::ready_addresses`]), routable the moment they are ready; or to its
//! Service ([`KubernetesProvider::endpoint`], by default
//! `http://{name}.{namespace}.svc.cluster.local:{port}`).
//!
//! Needs (RBAC): `get`, `list`, `watch` on `deployments`; `get`, `update` on
//! `deployments/scale`; `get`, `list`, `watch` on `services`; `list`, `watch` on
//! `endpointslices` (group `discovery.k8s.io`); `get`, `create`, `patch` on `leases` (group
//! `coordination.k8s.io`), for shared activity. Nothing else: it cannot change a Deployment's
//! spec, nor read Secrets. The crate's `deploy/10-rbac.yaml` grants exactly these.
//!
//! Metrics (through the `metrics` facade): `scale_from_zero_kubernetes_lists_total{resource}`,
//! `scale_from_zero_kubernetes_watch_failures_total{resource, reason}` and
//! `scale_from_zero_kubernetes_reads_total{resource}` (reads that the store could not answer).
//!
//! Built against the Kubernetes 1.36 API (`k8s-openapi` feature `v1_36`); the objects it uses
//! (`apps/v1` Deployment and Scale, `v1` Service, `discovery.k8s.io/v1` EndpointSlice,
//! `coordination.k8s.io/v1` Lease) are stable since Kubernetes 1.21, and it is tested against
//! a real kube-apiserver 1.36 with the deployment, ReplicaSet and EndpointSlice controllers.
//!
//! ```no_run
//! use tower_scale_from_zero::providers::KubernetesProvider;
//! use tower_scale_from_zero::{FunctionScaler, ScalingConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // In-cluster configuration, or KUBECONFIG outside a cluster, with the timeouts a watch
//! // needs to notice a dead connection.
//! let client = KubernetesProvider::client(kube::Config::infer().await?)?;
//! let provider = KubernetesProvider::builder(client).namespace("functions").build();
//! let scaler = FunctionScaler::builder(provider.clone())
//!     .config(ScalingConfig::builder().scale_to_zero(true).build())
//!     .activity_store(provider.clone())
//!     .build();
//! provider.push_readiness_to(scaler.readiness_notifier());
//! # Ok(()) }
//! ```

mod activity;
mod errors;
mod scale;
mod store;
mod template;
pub mod watches;

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};
use tokio::task::AbortHandle;

pub use self::activity::LEASE_PREFIX;
use self::errors::{api_error, no_port, no_service};
use self::store::{DeploymentInfo, SliceInfo, Store, SERVICE_NAME_LABEL};
use self::template::EndpointTemplate;
use self::watches::{spawn_watch, WatchState, READS};
use crate::util::lock;
use crate::{FunctionId, QueryError, ReadinessNotifier, ServiceQuery, ServiceQueryResponse};

/// The label a Deployment (and its Service) carries to be a function, by default.
pub const DEFAULT_LABEL_SELECTOR: &str = "tower-scale-from-zero/function=true";
/// Where requests for a function go, by default, when sent to its Service: its cluster DNS
/// name.
pub const DEFAULT_ENDPOINT_TEMPLATE: &str = "http://{name}.{namespace}.svc.cluster.local:{port}";

/// Builds a [`KubernetesProvider`]; see [`KubernetesProvider::builder`].
#[derive(Clone)]
#[must_use]
pub struct KubernetesProviderBuilder {
    client: Client,
    namespace: Option<String>,
    selector: String,
    template: EndpointTemplate,
    max_staleness: Duration,
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

    /// Where requests for a function go through [`KubernetesProvider::endpoint`]: a URL with
    /// the placeholders `{name}`, `{namespace}` and `{port}` (the port of the function's
    /// Service). Default [`DEFAULT_ENDPOINT_TEMPLATE`].
    pub fn endpoint_template(
        mut self,
        template: impl Into<String>,
    ) -> Result<Self, InvalidKubernetesOption> {
        self.template = EndpointTemplate::parse(&template.into())?;
        Ok(self)
    }

    /// How long the store keeps answering from the state it last synced while a watch is
    /// down (an API server outage). Default 5 min. Past it, functions are read from the API
    /// server (and fail while it is unreachable).
    pub fn max_staleness(mut self, max: Duration) -> Self {
        self.max_staleness = max;
        self
    }

    /// Starts the watches and returns the provider. Must be called within a Tokio runtime;
    /// the watches stop when the last clone of the provider is dropped.
    pub fn build(self) -> KubernetesProvider {
        let shared = Arc::new(WatchState {
            store: Mutex::new(Store::default()),
            notifier: Mutex::new(None),
            selector: self.selector.clone(),
        });
        let namespace = self.namespace.as_deref();
        let tasks = vec![
            spawn_watch::<Deployment>(&self.client, namespace, &shared),
            spawn_watch::<Service>(&self.client, namespace, &shared),
            spawn_watch::<EndpointSlice>(&self.client, namespace, &shared),
        ];
        KubernetesProvider {
            inner: Arc::new(Inner {
                identity: activity::identity(),
                client: self.client,
                namespace: self.namespace,
                template: self.template,
                max_staleness: self.max_staleness,
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
            .field("max_staleness", &self.max_staleness)
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
    max_staleness: Duration,
    /// Who this gateway is, in the Leases it renews.
    identity: String,
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

    /// A builder: namespace, label selector, endpoint template, staleness bound.
    pub fn builder(client: Client) -> KubernetesProviderBuilder {
        KubernetesProviderBuilder {
            client,
            namespace: None,
            selector: DEFAULT_LABEL_SELECTOR.into(),
            template: EndpointTemplate::parse(DEFAULT_ENDPOINT_TEMPLATE).expect("valid default"),
            max_staleness: Duration::from_secs(300),
        }
    }

    /// A client for the provider from `config`, with the timeouts its watches need to notice a
    /// connection that stopped answering (a half-open connection, a proxy that drops traffic):
    /// connect within 10 s, and no response (or no data on a watch) for 23 s is a failure.
    /// Watch calls end every 20 s on the server's side, so a quiet, healthy watch never waits
    /// that long; and it fires before kube's own idle timeout (25 s), which would reconnect
    /// without a word. Timeouts already set in `config` are kept.
    pub fn client(mut config: kube::Config) -> Result<Client, kube::Error> {
        config
            .connect_timeout
            .get_or_insert(Duration::from_secs(10));
        config.read_timeout.get_or_insert(Duration::from_secs(23));
        config.reset_reader_on_write = true;
        Client::try_from(config)
    }

    /// Pushes every change of a function's state to `notifier` (from then on): requests held
    /// for a function are released the moment one of its endpoints becomes ready.
    pub fn push_readiness_to(&self, notifier: ReadinessNotifier) {
        *lock(&self.inner.shared.notifier) = Some(notifier);
    }

    /// Whether every watch has listed its objects and is connected now.
    pub fn is_in_sync(&self) -> bool {
        self.inner.shared.lock().in_sync()
    }

    /// Whether every watch has listed its objects at least once: from then on the provider
    /// answers from memory (also through a later outage, within its staleness bound). A
    /// gateway reports itself ready once this is true.
    pub fn is_synced(&self) -> bool {
        self.inner.shared.lock().synced()
    }

    /// The addresses of `function`'s ready endpoints (from its EndpointSlices: pod IPs and
    /// the slice's port, or `port` when the slice names none), in the store's order; empty
    /// when none is ready or the store cannot answer. Forward to these to reach a replica the
    /// moment it is ready, without waiting for the Service's routing to catch up.
    pub fn ready_addresses(&self, function: &FunctionId, port: Option<u16>) -> Vec<SocketAddr> {
        let store = self.inner.shared.lock();
        if !store.answers(self.inner.max_staleness) {
            return Vec::new();
        }
        store
            .ready_addresses(function)
            .filter_map(|(ip, slice_port)| Some(SocketAddr::new(ip, slice_port.or(port)?)))
            .collect()
    }

    /// Where to forward requests for `function` through its Service: the endpoint template
    /// filled in. Needs the function's Service when the template has `{port}` (from the
    /// watch, else one read).
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
            if store.services.answers(self.inner.max_staleness) && store.services.healthy {
                return Err(no_service(function, &self.inner.shared.selector));
            }
        }
        let services: Api<Service> =
            Api::namespaced(self.inner.client.clone(), function.namespace());
        metrics::counter!(READS, "resource" => "services").increment(1);
        let list = services
            .list(&self.selected(function))
            .await
            .map_err(|e| api_error(e, "list", "services", function))?;
        match list.items.first() {
            Some(service) => store::service_port(service).ok_or_else(|| no_port(function)),
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

    /// The function's Deployment settings: from the store while it answers (a function it
    /// does not know is "not found" while its watch is connected, and read while it is
    /// down: the store never saw it), else a read.
    async fn deployment(&self, function: &FunctionId) -> Result<DeploymentInfo, QueryError> {
        {
            let store = self.inner.shared.lock();
            let table = &store.deployments;
            if table.answers(self.inner.max_staleness) {
                if let Some(info) = table.live.get(function) {
                    return Ok(info.clone());
                }
                if table.healthy {
                    return Err(self.not_labelled(function));
                }
            }
        }
        let deployments: Api<Deployment> =
            Api::namespaced(self.inner.client.clone(), function.namespace());
        metrics::counter!(READS, "resource" => "deployments").increment(1);
        let list = deployments
            .list(&self.selected(function))
            .await
            .map_err(|e| api_error(e, "list", "deployments", function))?;
        list.items
            .first()
            .map(DeploymentInfo::of)
            .ok_or_else(|| self.not_labelled(function))
    }

    /// Ready endpoints of `function`: from the store while it answers and knows the
    /// function (no slice then means no endpoint), else a read.
    async fn ready_endpoints(&self, function: &FunctionId) -> Result<u64, QueryError> {
        {
            let store = self.inner.shared.lock();
            if store.slices.answers(self.inner.max_staleness)
                && (store.slices.healthy || store.deployments.live.contains_key(function))
            {
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
        metrics::counter!(READS, "resource" => "endpointslices").increment(1);
        let list = slices
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| api_error(e, "list", "endpointslices", function))?;
        Ok(list
            .items
            .iter()
            .flat_map(|s| SliceInfo::of(s).endpoints)
            .filter(|e| e.ready)
            .count() as u64)
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
        if let Some(failure) = deployment.failure.as_deref() {
            if deployment.desired > 0 && available == 0 {
                return Err(QueryError::provider(format!(
                    "the Deployment of {function} cannot become ready: {failure}"
                ))
                .permanent());
            }
        }
        Ok(deployment.state(available))
    }

    async fn set_replicas(&self, function: &FunctionId, replicas: u64) -> Result<(), QueryError> {
        self.check_namespace(function)?;
        // Only functions are ever scaled, whatever the caller.
        self.deployment(function).await?;
        scale::at_least(&self.inner.client, function, replicas).await
    }

    /// Reads the Deployment afresh and scales it to zero unless another gateway recorded
    /// activity within `idle` (its Lease), a scale-up is under way (replicas the controller
    /// has not made ready yet), or it changed since the read (the write carries the read's
    /// resourceVersion as a precondition: a 409 is `Ok(false)`).
    async fn scale_to_zero(
        &self,
        function: &FunctionId,
        idle: Duration,
    ) -> Result<bool, QueryError> {
        self.check_namespace(function)?;
        if crate::activity::ActivityStore::idle_for(self, function)
            .await?
            .is_some_and(|idle_for| idle_for < idle)
        {
            return Ok(false);
        }
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
        scale::to_zero(&self.inner.client, function, deployment).await
    }
}
