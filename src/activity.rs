//! Activity, for scale to zero: each function's requests in flight and when the last one
//! ended, and [`ActivityStore`], where several gateways share what they serve.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use tokio::time::Instant;

use crate::function::Key;
use crate::{FunctionId, FunctionRef, IdlePolicy, QueryError};

/// Where gateways record that they serve a function, so that a gateway that saw no traffic
/// does not scale down a function another gateway is serving. Consulted before every scale
/// to zero; see [`ScalerBuilder::activity_store`](crate::ScalerBuilder::activity_store).
///
/// Without one, each scaler knows only its own traffic (right for a single gateway).
/// [`KubernetesProvider`](crate::providers::KubernetesProvider) implements it with an
/// annotation on the function's Deployment.
#[async_trait]
pub trait ActivityStore: Send + Sync + 'static {
    /// Records that this gateway is serving `function` now. Called while the function is
    /// active, at most once per quarter of its idle period per gateway.
    async fn record(&self, function: &FunctionId) -> Result<(), QueryError>;

    /// How long ago any gateway last recorded activity for `function`; `None` if none did.
    async fn idle_for(&self, function: &FunctionId) -> Result<Option<Duration>, QueryError>;
}

#[async_trait]
impl<T: ActivityStore + ?Sized> ActivityStore for Arc<T> {
    async fn record(&self, function: &FunctionId) -> Result<(), QueryError> {
        (**self).record(function).await
    }

    async fn idle_for(&self, function: &FunctionId) -> Result<Option<Duration>, QueryError> {
        (**self).idle_for(function).await
    }
}

/// `IdlePolicy` in one atomic word.
const NEVER: u64 = 0;
const DEFAULT: u64 = u64::MAX;

fn encode(policy: IdlePolicy) -> u64 {
    match policy {
        IdlePolicy::Never => NEVER,
        IdlePolicy::AfterDefault => DEFAULT,
        // At least 1 ms, so that it is never read back as `Never`.
        IdlePolicy::After(period) => (period.as_millis() as u64).clamp(1, DEFAULT - 1),
    }
}

fn decode(word: u64) -> IdlePolicy {
    match word {
        NEVER => IdlePolicy::Never,
        DEFAULT => IdlePolicy::AfterDefault,
        ms => IdlePolicy::After(Duration::from_millis(ms)),
    }
}

/// Every function's activity, as far as this scaler has seen.
pub(crate) struct Activities {
    map: DashMap<FunctionId, Arc<Activity>, foldhash::fast::RandomState>,
    epoch: Instant,
}

/// One function's activity.
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    /// When the last request ended (ms since the epoch).
    last_end: AtomicU64,
    policy: AtomicU64,
    /// Scaled (or being scaled) to zero by this scaler, and not scaled up since: reads and
    /// pushes that still say "ready" are from before, and a request must not trust them.
    down: AtomicBool,
    /// Failed scale-downs in a row, and no new attempt before `not_before` (ms).
    failures: AtomicU32,
    not_before: AtomicU64,
    /// When this gateway last recorded activity in the store (ms; `u64::MAX`: never).
    recorded: AtomicU64,
    recording: AtomicBool,
}

impl Activities {
    pub(crate) fn new() -> Self {
        Self {
            map: DashMap::default(),
            epoch: Instant::now(),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64
    }

    pub(crate) fn get(&self, function: FunctionRef<'_>) -> Option<Arc<Activity>> {
        self.map
            .get(&function as &dyn Key)
            .map(|entry| Arc::clone(&entry))
    }

    /// The function's activity, created if this is its first request. Only functions the
    /// scaler knows to exist get here (a warm cache entry, or a flight that made them ready).
    pub(crate) fn get_or_insert(&self, function: FunctionRef<'_>) -> Arc<Activity> {
        if let Some(activity) = self.get(function) {
            return activity;
        }
        let id = function.to_function_id().expect("validated before");
        let now = self.now_ms();
        Arc::clone(&self.map.entry(id).or_insert_with(|| {
            Arc::new(Activity {
                in_flight: AtomicUsize::new(0),
                last_end: AtomicU64::new(now),
                policy: AtomicU64::new(NEVER),
                down: AtomicBool::new(false),
                failures: AtomicU32::new(0),
                not_before: AtomicU64::new(0),
                recorded: AtomicU64::new(u64::MAX),
                recording: AtomicBool::new(false),
            })
        }))
    }

    /// A request enters: counted in flight until the guard drops. `None` if the function is
    /// being scaled down: the request must take the cold path and wait for a fresh scale-up.
    pub(crate) fn enter(self: &Arc<Self>, activity: Arc<Activity>) -> Option<ActivityGuard> {
        // Paired with `begin_scale_down`: this increment and its `down` store are both
        // sequentially consistent, so either this request sees `down` or the scale-down sees
        // the request.
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = ActivityGuard {
            activity,
            activities: Arc::clone(self),
        };
        if guard.activity.down.load(Ordering::SeqCst) {
            return None;
        }
        Some(guard)
    }

    /// Functions due for scale to zero at `now`: opted in, nothing in flight, idle for their
    /// period, not being scaled down, not backing off. Forgets functions that never opted in
    /// and have been idle for `forget_after`, so the map stays as small as the set of active
    /// functions.
    pub(crate) fn due(
        &self,
        default: Duration,
        forget_after: Duration,
    ) -> Vec<(FunctionId, Duration)> {
        let now = self.now_ms();
        let forget_ms = forget_after.as_millis() as u64;
        let mut due = Vec::new();
        self.map.retain(|id, activity| {
            let idle_ms = now.saturating_sub(activity.last_end.load(Ordering::Acquire));
            let quiet = activity.in_flight.load(Ordering::SeqCst) == 0;
            let Some(period) = activity.policy().period(default) else {
                return !(quiet && idle_ms >= forget_ms);
            };
            if quiet
                && idle_ms >= period.as_millis() as u64
                && !activity.down.load(Ordering::SeqCst)
                && now >= activity.not_before.load(Ordering::Acquire)
            {
                due.push((id.clone(), period));
            }
            true
        });
        due
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

impl fmt::Debug for Activities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Activities")
            .field("functions", &self.map.len())
            .finish()
    }
}

impl Activity {
    pub(crate) fn policy(&self) -> IdlePolicy {
        decode(self.policy.load(Ordering::Relaxed))
    }

    pub(crate) fn set_policy(&self, policy: IdlePolicy) {
        let word = encode(policy);
        if self.policy.load(Ordering::Relaxed) != word {
            self.policy.store(word, Ordering::Relaxed);
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Counts as activity now (a cold start that just made the function ready).
    pub(crate) fn touch(&self, now_ms: u64) {
        self.last_end.fetch_max(now_ms, Ordering::AcqRel);
    }

    /// Starts a scale-down: from here on requests take the cold path. `false` (and nothing
    /// changed) if a request is in flight.
    pub(crate) fn begin_scale_down(&self) -> bool {
        self.down.store(true, Ordering::SeqCst);
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            self.down.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// The scale-down did not happen, or a scale-up has been sent since: reads are trusted.
    pub(crate) fn clear_down(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// Failed scale-downs in a row.
    pub(crate) fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    pub(crate) fn scaled_down(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// A failed (or refused) scale-down: no new attempt before `not_before` (ms).
    pub(crate) fn scale_down_failed(&self, not_before: u64) -> u32 {
        self.not_before.store(not_before, Ordering::Release);
        self.failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Whether this gateway should record activity in the store now (at most once per
    /// `every`). Two loads: cheap enough for every tracked request.
    pub(crate) fn record_due(&self, now_ms: u64, every: Duration) -> bool {
        let last = self.recorded.load(Ordering::Relaxed);
        let due = last == u64::MAX || now_ms.saturating_sub(last) >= every.as_millis() as u64;
        due && !self.recording.load(Ordering::Relaxed)
    }

    /// Claims the recording that is due; `false` if another request claimed it first.
    pub(crate) fn claim_record(&self) -> bool {
        !self.recording.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn recorded(&self, now_ms: u64, ok: bool) {
        if ok {
            self.recorded.store(now_ms, Ordering::Relaxed);
        }
        self.recording.store(false, Ordering::Release);
    }
}

/// A request in flight: dropped when its response body has ended or been dropped (or the
/// request failed), which ends the request's activity.
pub(crate) struct ActivityGuard {
    activity: Arc<Activity>,
    activities: Arc<Activities>,
}

impl ActivityGuard {
    pub(crate) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// One more request's worth of activity for the same function, ending when it drops.
    fn another(&self) -> Self {
        self.activity.in_flight.fetch_add(1, Ordering::SeqCst);
        Self {
            activity: Arc::clone(&self.activity),
            activities: Arc::clone(&self.activities),
        }
    }
}

/// The activity of an upgraded connection (a WebSocket, say): the function counts as in flight
/// until this is dropped.
///
/// With scale to zero on, the layer puts one in the extensions of each request that asks to
/// upgrade its connection (it has an `Upgrade` header): the response of an upgrade ends at once,
/// while the connection it opens may live for hours. A forwarding service that serves the
/// upgraded connection removes it from the request and keeps it until the connection closes
/// (a service that ignores it drops it with the request: the upgrade then counts only until its
/// response).
///
/// ```
/// # use http::Request;
/// use tower_scale_from_zero::UpgradeActivity;
///
/// fn forward(mut req: Request<()>) {
///     let activity = req.extensions_mut().remove::<UpgradeActivity>();
///     // ... after the upgrade: move `activity` into the task that copies both ways ...
///     drop(activity);
/// }
/// # forward(Request::new(()));
/// ```
///
/// A clone counts on its own (the function stays active until every clone is dropped).
#[derive(Debug)]
pub struct UpgradeActivity {
    guard: ActivityGuard,
}

impl Clone for UpgradeActivity {
    fn clone(&self) -> Self {
        Self {
            guard: self.guard.another(),
        }
    }
}

impl UpgradeActivity {
    /// Adds one to `req` (whose activity `guard` tracks) when it asks for an upgrade.
    pub(crate) fn attach<B>(req: &mut http::Request<B>, guard: &ActivityGuard) {
        if req.headers().contains_key(http::header::UPGRADE) {
            req.extensions_mut().insert(Self {
                guard: guard.another(),
            });
        }
    }
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        let now = self.activities.now_ms();
        // The end time first: a scale-down that sees nothing in flight sees it too.
        self.activity.last_end.fetch_max(now, Ordering::AcqRel);
        self.activity.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl fmt::Debug for ActivityGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActivityGuard").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_survive_the_atomic_word() {
        for policy in [
            IdlePolicy::Never,
            IdlePolicy::AfterDefault,
            IdlePolicy::After(Duration::from_secs(30)),
        ] {
            assert_eq!(decode(encode(policy)), policy);
        }
        assert_eq!(
            decode(encode(IdlePolicy::After(Duration::ZERO))),
            IdlePolicy::After(Duration::from_millis(1))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_scale_down_and_a_request_never_both_proceed() {
        let activities = Arc::new(Activities::new());
        let f = FunctionRef::new("f", "ns");
        let activity = activities.get_or_insert(f);
        // A request in flight stops a scale-down.
        let guard = activities.enter(Arc::clone(&activity)).unwrap();
        assert!(!activity.begin_scale_down());
        assert!(!activity.is_down());
        drop(guard);
        // A scale-down under way sends requests to the cold path (and counts nothing).
        assert!(activity.begin_scale_down());
        assert!(activities.enter(Arc::clone(&activity)).is_none());
        assert_eq!(activity.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn due_functions_are_opted_in_quiet_and_idle_for_their_period() {
        let activities = Arc::new(Activities::new());
        let (a, b, c) = (
            FunctionRef::new("a", "ns"),
            FunctionRef::new("b", "ns"),
            FunctionRef::new("c", "ns"),
        );
        activities
            .get_or_insert(a)
            .set_policy(IdlePolicy::After(Duration::from_secs(30)));
        activities
            .get_or_insert(b)
            .set_policy(IdlePolicy::AfterDefault);
        activities.get_or_insert(c); // never opted in
        let default = Duration::from_secs(60);
        tokio::time::advance(Duration::from_secs(31)).await;
        let due = activities.due(default, Duration::from_secs(120));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0.name(), "a");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(activities.due(default, Duration::from_secs(120)).len(), 2);
        // `c` is forgotten once idle for `forget_after`; the opted-in ones are kept.
        tokio::time::advance(Duration::from_secs(60)).await;
        activities.due(default, Duration::from_secs(120));
        assert_eq!(activities.len(), 2);
    }
}
