//! The store the watches keep: a few facts per function (its Deployment's settings and
//! conditions, its Service's port, its EndpointSlices' endpoints), how fresh they are, and
//! which states changed since they were last pushed.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::{FunctionId, IdlePolicy, ServiceQueryResponse};

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
/// The label the EndpointSlice controller puts on each slice: the Service it belongs to.
pub(super) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Default)]
pub(super) struct Store {
    pub(super) deployments: Table<HashMap<FunctionId, DeploymentInfo>>,
    /// The port of each function's Service (`None`: it has none).
    pub(super) services: Table<HashMap<FunctionId, Option<u16>>>,
    /// The endpoints of each function's slices, by slice.
    pub(super) slices: Table<HashMap<FunctionId, HashMap<String, SliceInfo>>>,
    /// Pods that were serving when their function's Deployment went to zero: their endpoints
    /// are not readiness of a later scale-up, however long the EndpointSlice controller takes
    /// to drop them. Forgotten once they are gone from the slices.
    departing: HashMap<FunctionId, HashSet<Arc<str>>>,
    /// The last state pushed per function, so that only changes are pushed.
    pushed: HashMap<FunctionId, ServiceQueryResponse>,
    /// Functions already warned about for having no labelled Service.
    pub(super) warned: HashSet<FunctionId>,
}

impl Store {
    /// Whether the store answers for deployments and endpoints: listed once, and connected or
    /// disconnected for less than `max_age`.
    pub(super) fn answers(&self, max_age: Duration) -> bool {
        self.deployments.answers(max_age) && self.slices.answers(max_age)
    }

    /// Whether every watch has listed and is connected now.
    pub(super) fn in_sync(&self) -> bool {
        self.deployments.in_sync() && self.slices.in_sync() && self.services.in_sync()
    }

    /// Whether every watch has listed at least once.
    pub(super) fn synced(&self) -> bool {
        self.deployments.synced && self.slices.synced && self.services.synced
    }

    /// Ready endpoints of `function`, those of departing pods left out.
    pub(super) fn ready_endpoints(&self, function: &FunctionId) -> u64 {
        self.ready_addresses(function).count() as u64
    }

    /// The addresses of `function`'s ready endpoints (departing pods left out), with the
    /// slice's port.
    pub(super) fn ready_addresses<'a>(
        &'a self,
        function: &FunctionId,
    ) -> impl Iterator<Item = (IpAddr, Option<u16>)> + 'a {
        let departing = self.departing.get(function);
        self.slices
            .live
            .get(function)
            .into_iter()
            .flat_map(|slices| slices.values())
            .flat_map(move |slice| {
                slice
                    .endpoints
                    .iter()
                    .filter(move |e| {
                        e.ready
                            && !e
                                .pod
                                .as_ref()
                                .is_some_and(|uid| departing.is_some_and(|d| d.contains(uid)))
                    })
                    .map(move |e| (e.address, slice.port))
            })
    }

    /// The function's Deployment went to zero: its ready pods are departing.
    fn mark_departing(&mut self, function: &FunctionId) {
        let uids: HashSet<Arc<str>> = self
            .slices
            .live
            .get(function)
            .into_iter()
            .flat_map(|slices| slices.values())
            .flat_map(|slice| slice.endpoints.iter())
            .filter(|e| e.ready)
            .filter_map(|e| e.pod.clone())
            .collect();
        if !uids.is_empty() {
            self.departing
                .entry(function.clone())
                .or_default()
                .extend(uids);
        }
    }

    /// Departing pods that are gone from `function`'s slices are forgotten.
    fn prune_departing(&mut self, function: &FunctionId) {
        let Some(departing) = self.departing.get_mut(function) else {
            return;
        };
        let present: HashSet<&Arc<str>> = self
            .slices
            .live
            .get(function)
            .into_iter()
            .flat_map(|slices| slices.values())
            .flat_map(|slice| slice.endpoints.iter())
            .filter_map(|e| e.pod.as_ref())
            .collect();
        departing.retain(|uid| present.contains(uid));
        if departing.is_empty() {
            self.departing.remove(function);
        }
    }

    /// The state of `function` if it changed since the last push (and the store knows it).
    pub(super) fn changed_state(&mut self, function: &FunctionId) -> Option<ServiceQueryResponse> {
        if !self.in_sync() {
            return None;
        }
        let Some(deployment) = self.deployments.live.get(function) else {
            self.pushed.remove(function);
            self.warned.remove(function);
            self.departing.remove(function);
            return None;
        };
        let state = deployment.state(self.ready_endpoints(function));
        if self.pushed.get(function) == Some(&state) {
            return None;
        }
        self.pushed.insert(function.clone(), state.clone());
        Some(state)
    }

    /// After a (re-)list of deployments: pushes are remembered only for functions that exist.
    pub(super) fn forget_pushes_of_gone(&mut self) {
        let Store {
            pushed,
            deployments,
            departing,
            ..
        } = self;
        pushed.retain(|f, _| deployments.live.contains_key(f));
        departing.retain(|f, _| deployments.live.contains_key(f));
    }
}

/// One watch's objects: the live map, the one being filled during a (re-)list, and whether
/// the watch is connected (and since when it is not).
pub(super) struct Table<M> {
    pub(super) live: M,
    pub(super) relisting: Option<M>,
    /// Listed at least once.
    pub(super) synced: bool,
    /// Connected; `down_since` says since when it is not.
    pub(super) healthy: bool,
    pub(super) down_since: Option<Instant>,
}

impl<M: Default> Default for Table<M> {
    fn default() -> Self {
        Self {
            live: M::default(),
            relisting: None,
            synced: false,
            healthy: false,
            down_since: None,
        }
    }
}

impl<M> Table<M> {
    pub(super) fn in_sync(&self) -> bool {
        self.synced && self.healthy
    }

    /// Listed once, and connected or disconnected for less than `max_age`.
    pub(super) fn answers(&self, max_age: Duration) -> bool {
        self.synced
            && (self.healthy
                || self
                    .down_since
                    .is_some_and(|since| since.elapsed() < max_age))
    }

    /// The watch failed: out of sync from now (the first failure sets the time).
    pub(super) fn went_down(&mut self) {
        if self.healthy || self.down_since.is_none() {
            self.down_since = Some(Instant::now());
        }
        self.healthy = false;
    }

    pub(super) fn came_up(&mut self) {
        self.healthy = true;
        self.down_since = None;
    }
}

/// What changed in the store after one watch event.
pub(super) enum Affected {
    None,
    One(FunctionId),
    All,
}

/// A watched kind: how its objects land in the store.
pub(super) trait Watched:
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
    /// Puts the object in the live map (`relisting`: in the map being filled); returns the
    /// function whose state it may change.
    fn apply(self, store: &mut Store, relisting: bool) -> Option<FunctionId>;
    fn delete(self, store: &mut Store) -> Option<FunctionId>;
    /// A (re-)list is complete: its map replaces the live one.
    fn relisted(store: &mut Store, map: Self::Map) {
        Self::table(store).live = map;
    }
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
    fn apply(self, store: &mut Store, relisting: bool) -> Option<FunctionId> {
        let id = function_of(self.namespace(), &self.name_any())?;
        let info = DeploymentInfo::of(&self);
        if relisting {
            store
                .deployments
                .relisting
                .as_mut()?
                .insert(id.clone(), info);
            return None;
        }
        let before = store.deployments.live.insert(id.clone(), info.clone());
        if info.desired == 0 && before.is_none_or(|b| b.desired > 0) {
            store.mark_departing(&id);
        }
        Some(id)
    }
    fn delete(self, store: &mut Store) -> Option<FunctionId> {
        let id = function_of(self.namespace(), &self.name_any())?;
        store.deployments.live.remove(&id);
        Some(id)
    }
    /// Functions that went to zero while the watch was away: their pods are departing too.
    fn relisted(store: &mut Store, map: Self::Map) {
        let went_to_zero: Vec<FunctionId> = map
            .iter()
            .filter(|(id, info)| {
                info.desired == 0
                    && store
                        .deployments
                        .live
                        .get(*id)
                        .is_some_and(|before| before.desired > 0)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &went_to_zero {
            store.mark_departing(id);
        }
        store.deployments.live = map;
    }
}

impl Watched for Service {
    type Map = HashMap<FunctionId, Option<u16>>;
    const WHAT: &'static str = "services";
    fn table(store: &mut Store) -> &mut Table<Self::Map> {
        &mut store.services
    }
    fn apply(self, store: &mut Store, relisting: bool) -> Option<FunctionId> {
        let id = function_of(self.namespace(), &self.name_any())?;
        let port = service_port(&self);
        let map = if relisting {
            store.services.relisting.as_mut()?
        } else {
            &mut store.services.live
        };
        map.insert(id, port);
        None // the port does not change a function's state
    }
    fn delete(self, store: &mut Store) -> Option<FunctionId> {
        store
            .services
            .live
            .remove(&function_of(self.namespace(), &self.name_any())?);
        None
    }
}

impl Watched for EndpointSlice {
    type Map = HashMap<FunctionId, HashMap<String, SliceInfo>>;
    const WHAT: &'static str = "endpointslices";
    fn table(store: &mut Store) -> &mut Table<Self::Map> {
        &mut store.slices
    }
    fn apply(self, store: &mut Store, relisting: bool) -> Option<FunctionId> {
        let id = slice_function(&self)?;
        let name = self.name_any();
        let info = SliceInfo::of(&self);
        let map = if relisting {
            store.slices.relisting.as_mut()?
        } else {
            &mut store.slices.live
        };
        map.entry(id.clone()).or_default().insert(name, info);
        if relisting {
            return None;
        }
        store.prune_departing(&id);
        Some(id)
    }
    fn delete(self, store: &mut Store) -> Option<FunctionId> {
        let id = slice_function(&self)?;
        if let Some(slices) = store.slices.live.get_mut(&id) {
            slices.remove(&self.name_any());
            if slices.is_empty() {
                store.slices.live.remove(&id);
            }
        }
        store.prune_departing(&id);
        Some(id)
    }
}

pub(super) fn slice_function(slice: &EndpointSlice) -> Option<FunctionId> {
    let service = slice.labels().get(SERVICE_NAME_LABEL)?;
    function_of(slice.namespace(), service)
}

/// What the provider keeps of one EndpointSlice: its endpoints (first address, readiness,
/// the pod behind it) and its port (named `http`, else the first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct SliceInfo {
    pub(super) endpoints: Vec<EndpointInfo>,
    pub(super) port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct EndpointInfo {
    pub(super) address: IpAddr,
    /// An unset `ready` condition means ready (API definition).
    pub(super) ready: bool,
    /// The UID of the pod behind it (`targetRef`), when the slice says.
    pub(super) pod: Option<Arc<str>>,
}

impl SliceInfo {
    pub(super) fn of(slice: &EndpointSlice) -> Self {
        let endpoints = slice
            .endpoints
            .iter()
            .flatten()
            .filter_map(|e| {
                let address = e.addresses.first()?.parse().ok()?;
                Some(EndpointInfo {
                    address,
                    ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
                    pod: e
                        .target_ref
                        .as_ref()
                        .and_then(|r| r.uid.as_deref())
                        .map(Arc::from),
                })
            })
            .collect();
        let port = slice.ports.as_ref().and_then(|ports| {
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some("http"))
                .or_else(|| ports.first())
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
        });
        Self { endpoints, port }
    }
}

/// The Service's port: the one named `http` if there are several, else the first.
pub(super) fn service_port(service: &Service) -> Option<u16> {
    let ports = service.spec.as_ref()?.ports.as_ref()?;
    let port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .or_else(|| ports.first())?;
    u16::try_from(port.port).ok()
}

/// What the provider keeps of a function's Deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DeploymentInfo {
    pub(super) desired: u64,
    pub(super) min: u64,
    pub(super) max: u64,
    pub(super) idle: IdlePolicy,
    /// Replicas the deployment controller reports ready (`status.readyReplicas`).
    pub(super) ready_replicas: u64,
    /// Whether the deployment controller has seen the current spec
    /// (`status.observedGeneration >= metadata.generation`).
    pub(super) observed: bool,
    /// Why it cannot become ready, when the controller says so for the current spec:
    /// `ProgressDeadlineExceeded`, or a `ReplicaFailure` (quota, admission).
    pub(super) failure: Option<Arc<str>>,
}

impl DeploymentInfo {
    pub(super) fn of(deployment: &Deployment) -> Self {
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
        let status = deployment.status.as_ref();
        let generation = meta.generation.unwrap_or(0);
        let observed = status
            .and_then(|s| s.observed_generation)
            .is_some_and(|seen| seen >= generation);
        let failure = observed
            .then(|| status.and_then(|s| s.conditions.as_ref()))
            .flatten()
            .and_then(|conditions| {
                conditions.iter().find_map(|c| {
                    let said = c.message.as_deref().unwrap_or_default();
                    match (c.type_.as_str(), c.status.as_str(), c.reason.as_deref()) {
                        ("Progressing", "False", Some("ProgressDeadlineExceeded")) => {
                            Some(format!("ProgressDeadlineExceeded: {said}"))
                        }
                        ("ReplicaFailure", "True", reason) => Some(format!(
                            "ReplicaFailure ({}): {said}",
                            reason.unwrap_or("no reason given")
                        )),
                        _ => None,
                    }
                })
            })
            .map(Arc::from);
        Self {
            desired,
            min: count(&MIN_KEYS).unwrap_or(1),
            max: count(&MAX_KEYS).unwrap_or(u64::MAX),
            idle: crate::providers::idle_policy(
                &name,
                setting(&ZERO_KEYS),
                setting(&ZERO_PERIOD_KEYS),
            ),
            ready_replicas: status
                .and_then(|s| s.ready_replicas)
                .map_or(0, |r| u64::try_from(r).unwrap_or(0)),
            observed,
            failure,
        }
    }

    pub(super) fn state(&self, available: u64) -> ServiceQueryResponse {
        ServiceQueryResponse::new(self.desired, available)
            .min_replicas(self.min)
            .max_replicas(self.max)
            .scale_to_zero(self.idle)
    }

    /// Whether a scale-up is under way: replicas wanted that the controller has not yet made
    /// ready, or a spec it has not yet seen.
    pub(super) fn scaling_up(&self) -> bool {
        self.desired > 0 && (!self.observed || self.ready_replicas < self.desired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(value: serde_json::Value) -> Deployment {
        serde_json::from_value(value).unwrap()
    }

    fn slice(service: &str, endpoints: &[(&str, Option<bool>, &str)]) -> EndpointSlice {
        let endpoints: Vec<_> = endpoints
            .iter()
            .map(|(address, ready, uid)| {
                let mut e = serde_json::json!({"addresses": [address],
                    "targetRef": {"kind": "Pod", "name": "p", "uid": uid}});
                if let Some(ready) = ready {
                    e["conditions"] = serde_json::json!({"ready": ready});
                }
                e
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{service}-x"), "namespace": "ns",
                         "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8080}],
        }))
        .unwrap()
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
    fn scale_to_zero_settings_are_read() {
        let info = DeploymentInfo::of(&deployment(serde_json::json!({
            "metadata": {"name": "f",
                "labels": {"com.openfaas.scale.zero": "true",
                           "com.openfaas.scale.zero-duration": "15m"}},
            "spec": {"replicas": 1, "selector": {}, "template": {}}
        })));
        assert_eq!(info.idle, IdlePolicy::After(Duration::from_secs(900)));
        assert_eq!(info.state(1).scale_to_zero, info.idle);
    }

    #[test]
    fn a_failure_counts_only_for_the_spec_the_controller_has_seen() {
        let with = |generation: i64, observed: i64| {
            DeploymentInfo::of(&deployment(serde_json::json!({
                "metadata": {"name": "f", "generation": generation},
                "spec": {"replicas": 1, "selector": {}, "template": {}},
                "status": {"observedGeneration": observed, "conditions": [
                    {"type": "Progressing", "status": "False",
                     "reason": "ProgressDeadlineExceeded",
                     "message": "ReplicaSet \"f-1\" has timed out progressing."}
                ]}
            })))
        };
        let seen = with(2, 2);
        assert_eq!(
            seen.failure.as_deref(),
            Some("ProgressDeadlineExceeded: ReplicaSet \"f-1\" has timed out progressing.")
        );
        assert!(seen.scaling_up());
        // A scale-up the controller has not seen yet: the old condition says nothing.
        assert_eq!(with(3, 2).failure, None);
        let quota = DeploymentInfo::of(&deployment(serde_json::json!({
            "metadata": {"name": "f", "generation": 1},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"observedGeneration": 1, "conditions": [
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                 "message": "exceeded quota: pods"}
            ]}
        })));
        assert_eq!(
            quota.failure.as_deref(),
            Some("ReplicaFailure (FailedCreate): exceeded quota: pods")
        );
    }

    #[test]
    fn an_endpoint_without_a_ready_condition_counts_as_ready() {
        let info = SliceInfo::of(&slice(
            "f",
            &[
                ("10.0.0.1", Some(true), "a"),
                ("10.0.0.2", None, "b"),
                ("10.0.0.3", Some(false), "c"),
            ],
        ));
        let ready: Vec<_> = info.endpoints.iter().filter(|e| e.ready).collect();
        assert_eq!(ready.len(), 2);
        assert_eq!(info.port, Some(8080));
    }

    #[test]
    fn pods_serving_when_their_deployment_went_to_zero_are_not_readiness_of_the_next_scale_up() {
        let mut store = Store::default();
        for table in [&mut store.deployments.synced, &mut store.slices.synced] {
            *table = true;
        }
        let f = FunctionId::new("f", "ns").unwrap();
        let replicas = |n: i32| {
            deployment(serde_json::json!({
                "metadata": {"name": "f", "namespace": "ns"},
                "spec": {"replicas": n, "selector": {}, "template": {}}
            }))
        };
        replicas(1).apply(&mut store, false);
        slice("f", &[("10.0.0.1", Some(true), "old")]).apply(&mut store, false);
        assert_eq!(store.ready_endpoints(&f), 1);
        // Scaled to zero and straight back up, before the slice dropped the old pod.
        replicas(0).apply(&mut store, false);
        replicas(1).apply(&mut store, false);
        assert_eq!(store.ready_endpoints(&f), 0, "the old pod is departing");
        // The new pod is ready (the old one still listed, still departing).
        slice(
            "f",
            &[
                ("10.0.0.1", Some(true), "old"),
                ("10.0.0.2", Some(true), "new"),
            ],
        )
        .apply(&mut store, false);
        assert_eq!(store.ready_endpoints(&f), 1);
        let addresses: Vec<_> = store.ready_addresses(&f).collect();
        assert_eq!(addresses, [("10.0.0.2".parse().unwrap(), Some(8080))]);
        // The old pod leaves the slice: forgotten.
        slice("f", &[("10.0.0.2", Some(true), "new")]).apply(&mut store, false);
        assert!(store.departing.is_empty());
    }
}
