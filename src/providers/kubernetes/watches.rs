//! The watch tasks: one per watched kind, each keeping its table of the store whole and
//! pushing every change of a function's state.
//!
//! A watch that fails is started afresh and lists again (the store is whole once more,
//! whatever was missed; its `InitDone` says it is connected, where a resumed watch on a quiet
//! cluster would say nothing). Between tries it backs off as client-go's reflectors do:
//!
//! - an API server that answered and refused (403, 429, 5xx, a watch it cut) is asked less and
//!   less often: 2 s, 4 s, 8 s, ... up to 30 s, with a little jitter, so a list-ok/watch-denied
//!   Role or an API Priority and Fairness 429 does not turn into a re-list loop;
//! - an API server that cannot be reached (connection refused, reset, timed out) costs nothing
//!   to try: every 0.5 s doubling to 3 s, so the store is in sync within seconds of its return;
//! - both start over only once a watch has stayed up for two minutes.
//!
//! Every failure is logged (before the first sync too), counted in
//! `scale_from_zero_kubernetes_watch_failures_total{resource, reason}`, and each list in
//! `scale_from_zero_kubernetes_lists_total{resource}`. Watch calls carry a server-side timeout
//! of 20 s, so a quiet watch is renewed every 20 s, and a connection that stopped answering
//! (half-open, or a network that drops everything) is noticed by the client's read timeout of
//! 23 s ([`KubernetesProvider::client`](super::KubernetesProvider::client)), then listed again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::watcher;
use kube::Api;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::store::{Affected, Store, Watched};
use crate::util::{lock, Backoff, ErrorChain};
use crate::{FunctionId, ReadinessNotifier, ServiceQueryResponse};

/// Lists (initial and re-lists), by `resource`.
pub const LISTS: &str = "scale_from_zero_kubernetes_lists_total";
/// Watch failures by `resource` and `reason` (`gone`, `forbidden`, `unauthorized`,
/// `throttled`, `server`, `unreachable`, `other`).
pub const WATCH_FAILURES: &str = "scale_from_zero_kubernetes_watch_failures_total";
/// Reads the store could not answer (before the first sync, or of a function it never saw
/// while a watch was down), by `resource`.
pub const READS: &str = "scale_from_zero_kubernetes_reads_total";

/// The server-side timeout of each watch call.
const WATCH_TIMEOUT_SECS: u32 = 20;
/// A watch up this long counts as stable: its backoff starts over.
const STABLE: Duration = Duration::from_secs(120);

/// What the watch tasks share with the provider: the store and where to push.
pub(super) struct WatchState {
    pub(super) store: Mutex<Store>,
    pub(super) notifier: Mutex<Option<ReadinessNotifier>>,
    pub(super) selector: String,
}

impl WatchState {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        lock(&self.store)
    }
}

/// Starts the watch of `K` in `namespace` (all when `None`).
pub(super) fn spawn_watch<K: Watched>(
    client: &kube::Client,
    namespace: Option<&str>,
    shared: &Arc<WatchState>,
) -> AbortHandle {
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let config = watcher::Config::default()
        .labels(&shared.selector)
        .timeout(WATCH_TIMEOUT_SECS);
    let shared = Arc::clone(shared);
    tokio::spawn(
        async move {
            let mut backoff = WatchBackoff::new();
            loop {
                let stream = watcher(api.clone(), config.clone());
                futures::pin_mut!(stream);
                while let Some(event) = stream.next().await {
                    let failure = match &event {
                        Err(err) => Some(backoff.failed(err)),
                        Ok(watcher::Event::InitDone) => {
                            backoff.connected();
                            None
                        }
                        Ok(_) => None,
                    };
                    let pushes = handle::<K>(&shared, event);
                    let notifier = lock(&shared.notifier).clone();
                    if let Some(notifier) = notifier {
                        for push in pushes {
                            match push {
                                Push::State(function, state) => {
                                    tracing::debug!(%function, ready = state.is_ready(), "pushing state");
                                    notifier.notify(&function, state);
                                }
                                Push::Changed(function) => notifier.notify_changed(&function),
                            }
                        }
                    }
                    if let Some(pause) = failure {
                        tokio::time::sleep(pause).await;
                        break;
                    }
                }
            }
        }
        .instrument(tracing::info_span!("watch", resource = K::WHAT)),
    )
    .abort_handle()
}

/// What a watch event asks the scaler to learn.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Push {
    /// The function's state changed.
    State(FunctionId, ServiceQueryResponse),
    /// Something a state cannot say changed (the Deployment reports it cannot become ready):
    /// a cold start under way reads now.
    Changed(FunctionId),
}

/// Applies one watch event to the store; returns what to push.
pub(super) fn handle<K: Watched>(
    shared: &WatchState,
    event: Result<watcher::Event<K>, watcher::Error>,
) -> Vec<Push> {
    let mut store = shared.lock();
    let affected = match event {
        Ok(watcher::Event::Init) => {
            metrics::counter!(LISTS, "resource" => K::WHAT).increment(1);
            let table = K::table(&mut store);
            if table.synced {
                tracing::info!("watch of {} listing again", K::WHAT);
            }
            table.relisting = Some(K::Map::default());
            Affected::None
        }
        Ok(watcher::Event::InitApply(object)) => {
            object.apply(&mut store, true);
            Affected::None
        }
        Ok(watcher::Event::InitDone) => {
            let table = K::table(&mut store);
            let map = table.relisting.take();
            if !table.healthy {
                tracing::info!("watch of {} in sync", K::WHAT);
            }
            table.synced = true;
            table.came_up();
            if let Some(map) = map {
                K::relisted(&mut store, map);
            }
            Affected::All
        }
        Ok(watcher::Event::Apply(object)) => {
            K::table(&mut store).came_up();
            object
                .apply(&mut store, false)
                .map_or(Affected::None, Affected::One)
        }
        Ok(watcher::Event::Delete(object)) => {
            K::table(&mut store).came_up();
            object
                .delete(&mut store)
                .map_or(Affected::None, Affected::One)
        }
        Err(err) => {
            let reason = failure_reason(&err);
            metrics::counter!(WATCH_FAILURES, "resource" => K::WHAT, "reason" => reason)
                .increment(1);
            let table = K::table(&mut store);
            let synced = table.synced;
            table.went_down();
            let what = describe(&err, K::WHAT, reason);
            if synced {
                tracing::warn!(
                    reason,
                    error = %ErrorChain(&err),
                    "watch of {} failed ({what}); answering from the state last synced while it \
                     is down",
                    K::WHAT
                );
            } else {
                tracing::warn!(
                    reason,
                    error = %ErrorChain(&err),
                    "watch of {} failed before its first sync ({what})",
                    K::WHAT
                );
            }
            Affected::None
        }
    };
    match affected {
        Affected::None => Vec::new(),
        Affected::One(function) => pushes_for(&mut store, function),
        Affected::All => {
            store.forget_pushes_of_gone();
            let functions: Vec<FunctionId> = store.deployments.live.keys().cloned().collect();
            functions
                .into_iter()
                .flat_map(|f| pushes_for(&mut store, f))
                .collect()
        }
    }
}

fn pushes_for(store: &mut Store, function: FunctionId) -> Vec<Push> {
    let failing = store
        .deployments
        .live
        .get(&function)
        .is_some_and(|d| d.failure.is_some());
    let mut pushes = Vec::new();
    if let Some(state) = store.changed_state(&function) {
        pushes.push(Push::State(function.clone(), state));
    }
    if failing {
        pushes.push(Push::Changed(function));
    }
    pushes
}

/// The class of a watch failure, for logs and the metric.
fn failure_reason(err: &watcher::Error) -> &'static str {
    let client = match err {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => e,
        watcher::Error::WatchError(status) => return status_reason(status.code),
        _ => return "other",
    };
    match client {
        kube::Error::Api(status) => status_reason(status.code),
        _ => "unreachable",
    }
}

fn status_reason(code: u16) -> &'static str {
    match code {
        410 => "gone",
        403 => "forbidden",
        401 => "unauthorized",
        429 => "throttled",
        500..=599 => "server",
        _ => "other",
    }
}

/// What a failure means, for the log line.
fn describe(err: &watcher::Error, resource: &str, reason: &str) -> String {
    match reason {
        "gone" => "410 Gone: its history was compacted; it lists afresh".into(),
        "forbidden" => {
            let verb = match err {
                watcher::Error::InitialListFailed(_) => "list",
                _ => "watch",
            };
            format!(
                "forbidden (RBAC): the gateway's account may not {verb} {resource}; grant \
                 `{verb}` on `{resource}` in its Role"
            )
        }
        "unauthorized" => "the API server does not accept the gateway's credentials".into(),
        "throttled" => "the API server asks to slow down (429)".into(),
        "server" => "the API server answered with an error".into(),
        "unreachable" => "the API server is unreachable".into(),
        _ => "an unexpected error".into(),
    }
}

/// When to try a failed watch again; see the [module docs](self).
pub(super) struct WatchBackoff {
    refused: Backoff,
    unreachable: Backoff,
    refusals: u32,
    misses: u32,
    /// Since when the watch has been up, if it is.
    up_since: Option<Instant>,
}

impl WatchBackoff {
    pub(super) fn new() -> Self {
        Self {
            refused: Backoff::growing(Duration::from_secs(2), Duration::from_secs(30)),
            unreachable: Backoff::growing(Duration::from_millis(500), Duration::from_secs(3)),
            refusals: 0,
            misses: 0,
            up_since: None,
        }
    }

    /// The watch listed and is connected.
    pub(super) fn connected(&mut self) {
        self.up_since.get_or_insert_with(Instant::now);
    }

    /// The pause before the next try after `err`.
    pub(super) fn failed(&mut self, err: &watcher::Error) -> Duration {
        if self
            .up_since
            .take()
            .is_some_and(|since| since.elapsed() >= STABLE)
        {
            self.refusals = 0;
            self.misses = 0;
        }
        if failure_reason(err) == "unreachable" {
            self.misses += 1;
            self.unreachable.pause(self.misses)
        } else {
            self.refusals += 1;
            self.refused.pause(self.refusals)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::discovery::v1::EndpointSlice;

    fn shared() -> WatchState {
        WatchState {
            store: Mutex::new(Store::default()),
            notifier: Mutex::new(None),
            selector: super::super::DEFAULT_LABEL_SELECTOR.into(),
        }
    }

    fn deployment(replicas: i32) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "f", "namespace": "ns"},
            "spec": {"replicas": replicas, "selector": {}, "template": {}}
        }))
        .unwrap()
    }

    fn slice(ready: bool) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "f-x", "namespace": "ns",
                         "labels": {super::super::store::SERVICE_NAME_LABEL: "f"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": ready}}],
        }))
        .unwrap()
    }

    fn sync_services(shared: &WatchState) {
        handle::<k8s_openapi::api::core::v1::Service>(shared, Ok(watcher::Event::Init));
        handle::<k8s_openapi::api::core::v1::Service>(shared, Ok(watcher::Event::InitDone));
    }

    #[test]
    fn the_store_syncs_on_init_done_pushes_only_changes_and_leaves_sync_on_errors() {
        let shared = shared();
        let id = FunctionId::new("f", "ns").unwrap();
        use watcher::Event::*;
        sync_services(&shared);
        assert!(handle::<Deployment>(&shared, Ok(Init)).is_empty());
        assert!(handle(&shared, Ok(InitApply(deployment(1)))).is_empty());
        assert!(handle::<Deployment>(&shared, Ok(InitDone)).is_empty());
        assert!(!shared.lock().in_sync(), "slices not listed yet");
        handle::<EndpointSlice>(&shared, Ok(Init));
        let pushed = handle::<EndpointSlice>(&shared, Ok(InitDone));
        assert_eq!(
            pushed,
            vec![Push::State(id.clone(), ServiceQueryResponse::new(1, 0))]
        );
        assert!(shared.lock().in_sync());

        // A slice gains a ready endpoint: one push; the same state again: none.
        let pushed = handle(&shared, Ok(Apply(slice(true))));
        assert_eq!(
            pushed,
            vec![Push::State(id.clone(), ServiceQueryResponse::new(1, 1))]
        );
        assert!(handle(&shared, Ok(Apply(slice(true)))).is_empty());

        // A failed watch: out of sync, still answering for a while, and no pushes from it.
        let err = watcher::Error::NoResourceVersion;
        assert!(handle::<EndpointSlice>(&shared, Err(err)).is_empty());
        assert!(!shared.lock().in_sync());
        assert!(shared.lock().answers(Duration::from_secs(300)));
        assert!(!shared.lock().answers(Duration::ZERO));
        // A re-list replaces the table whole: the slice is gone.
        handle::<EndpointSlice>(&shared, Ok(Init));
        let pushed = handle::<EndpointSlice>(&shared, Ok(InitDone));
        assert_eq!(
            pushed,
            vec![Push::State(id.clone(), ServiceQueryResponse::new(1, 0))]
        );
        assert!(shared.lock().in_sync());

        // A deleted Deployment leaves nothing behind.
        handle(&shared, Ok(Delete(deployment(1))));
        let store = shared.lock();
        assert!(store.deployments.live.is_empty());
    }

    fn forbidden() -> watcher::Error {
        watcher::Error::WatchStartFailed(kube::Error::Api(
            kube::core::Status::failure("forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        ))
    }

    fn refused() -> watcher::Error {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        watcher::Error::InitialListFailed(kube::Error::Service(Box::new(io)))
    }

    #[test]
    fn a_refusing_server_is_asked_less_and_less_often_an_unreachable_one_every_few_seconds() {
        let mut backoff = WatchBackoff::new();
        let pauses: Vec<Duration> = (0..7).map(|_| backoff.failed(&forbidden())).collect();
        assert!(pauses[0] >= Duration::from_secs(2));
        assert!(pauses[0] + pauses[1] >= Duration::from_secs(6));
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert!(pauses[6] >= Duration::from_secs(30) && pauses[6] <= Duration::from_secs(30));
        // A list that succeeds does not reset it: a list-ok/watch-denied loop stays slow.
        backoff.connected();
        assert!(backoff.failed(&forbidden()) >= Duration::from_secs(30));
        // Unreachable: from 0.5 s to at most 3 s.
        let mut backoff = WatchBackoff::new();
        let pauses: Vec<Duration> = (0..8).map(|_| backoff.failed(&refused())).collect();
        assert!(pauses[0] >= Duration::from_millis(500) && pauses[0] < Duration::from_secs(1));
        assert!(pauses.iter().all(|p| *p <= Duration::from_secs(3)));
        assert_eq!(failure_reason(&refused()), "unreachable");
        assert_eq!(failure_reason(&forbidden()), "forbidden");
    }

    #[tokio::test(start_paused = true)]
    async fn the_backoff_starts_over_after_two_minutes_up() {
        let mut backoff = WatchBackoff::new();
        for _ in 0..6 {
            backoff.failed(&forbidden());
        }
        backoff.connected();
        tokio::time::advance(STABLE).await;
        assert!(backoff.failed(&forbidden()) < Duration::from_secs(3));
    }
}
