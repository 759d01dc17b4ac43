//! [`FunctionScaler`]: the scale-from-zero algorithm, with no HTTP in it.
//!
//! cache → "not found" cache → one flight per function: a query that tells a warm function
//! (its cache entry merely expired) from a cold one; for a cold one, scale to the minimum with
//! retries (at most one successful `set_replicas`), then wait for readiness by polling at a
//! fixed interval or by a pushed event ([`ReadinessNotifier`]). Each request waits at most the
//! readiness deadline from its own arrival; requests waiting for a cold function count against
//! the hold limits. Every provider call passes one gate per scaler (a cap on calls under way,
//! a bounded queue, the call timeout) and failed calls are retried with jittered exponential
//! backoff.
//!
//! # Runtime
//!
//! Cold starts run on spawned Tokio tasks (see [`SingleFlight`]); [`FunctionScaler::scale`]
//! must be awaited inside a Tokio runtime with the `time` driver enabled. A scaler may be
//! shared by several runtimes: a cold start whose runtime shut down is never joined again.

mod cold_start;
mod deadlines;
mod place;
mod provider_calls;
mod readiness;
mod scale_down;

#[cfg(feature = "kubernetes")]
pub(crate) use provider_calls::Jitter;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use self::place::Place;
use self::provider_calls::ProviderCalls;
use self::readiness::FlightState;
pub use self::readiness::ReadinessNotifier;
use crate::activity::{Activities, ActivityGuard};
use crate::cache::{far_instant, TtlMap};
use crate::function::Key;
use crate::{
    ActivityStore, FlightError, FunctionCacher, FunctionId, FunctionRef, ScaleError, ScalingConfig,
    ServiceQuery, ServiceQueryResponse, SingleFlight, TtlCache,
};

/// What a flight hands its waiters: the ready state, and whether a cold start happened.
type Outcome = Result<Ready, ScaleError>;

#[derive(Clone, Debug)]
pub(crate) struct Ready {
    pub(crate) state: ServiceQueryResponse,
    pub(crate) cold: bool,
    /// When the flight found it ready: a waiter whose deadline had passed by then is late.
    pub(crate) at: Instant,
}

impl Ready {
    fn now(state: ServiceQueryResponse, cold: bool) -> Self {
        Self {
            state,
            cold,
            at: Instant::now(),
        }
    }
}

/// Brings functions from zero to ready. Cloning is a reference-count bump.
///
/// ```
/// use std::sync::Arc;
/// use tower_scale_from_zero::{FunctionId, FunctionScaler, ScalingConfig};
/// use tower_scale_from_zero::testing::{FakeFunction, InMemoryProvider};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let provider = Arc::new(InMemoryProvider::new());
/// let id = FunctionId::new("echo", "fn").unwrap();
/// provider.add_function(&id, FakeFunction::new());
///
/// let scaler = FunctionScaler::new(provider.clone(), ScalingConfig::default());
/// let state = scaler.scale(&id).await.unwrap();
/// assert!(state.is_ready());
/// assert_eq!(provider.set_calls(), 1);
/// # }
/// ```
#[derive(Clone)]
pub struct FunctionScaler {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    query: Arc<dyn ServiceQuery>,
    cache: Arc<dyn FunctionCacher>,
    not_found: TtlMap<()>,
    /// Functions this scaler asked to scale up whose platform has not shown it yet (a read
    /// with desired > 0): a later flight takes desired 0 for read-after-write lag, not for a
    /// reason to ask again. Independent of the user's cache, which may keep nothing.
    asked: TtlMap<()>,
    flights: SingleFlight<FunctionId, Outcome, FlightState>,
    /// Requests waiting for cold functions, all together.
    held: AtomicUsize,
    calls: ProviderCalls,
    config: ScalingConfig,
    /// Requests in flight per function, when scale to zero is on.
    activities: Option<Arc<Activities>>,
    activity_store: Option<Arc<dyn ActivityStore>>,
    /// The idle reaper, started with the first tracked request (so a scaler can be built
    /// outside a runtime) and stopped when the scaler is dropped.
    reaper: OnceLock<tokio::task::AbortHandle>,
    /// Draining: no new cold start; and once the drain's budget is spent, waiting requests
    /// are answered 503.
    draining: AtomicBool,
    drain_expired: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(reaper) = self.reaper.get() {
            reaper.abort();
        }
    }
}

impl Inner {
    /// Whether `function` was scaled to zero by this scaler and not scaled up since: a ready
    /// state read or pushed now is from before, and must not be trusted.
    fn is_down(&self, function: FunctionRef<'_>) -> bool {
        self.activities
            .as_ref()
            .and_then(|activities| activities.get(function))
            .is_some_and(|activity| activity.is_down())
    }

    /// A pushed state: into the cache, and into the mailbox of the function's flight, if any.
    fn push(&self, function: &FunctionId, state: ServiceQueryResponse) {
        if state.is_ready() && self.is_down(function.as_function_ref()) {
            return;
        }
        // Ready is proof that a scale request took effect. (A push of desired > 0 alone is
        // not taken as proof: the provider's reads may lag behind its pushes.)
        if state.is_ready() {
            self.asked.remove(function.as_function_ref());
        }
        self.cache.set(function, state.clone());
        if let Some(flight) = self.flights.state(function) {
            flight.push(state);
        }
    }

    /// See [`ReadinessNotifier::notify_changed`].
    fn changed(&self, function: &FunctionId) {
        self.cache.invalidate(function.as_function_ref());
        if let Some(flight) = self.flights.state(function) {
            flight.look_now();
        }
    }
}

/// Builds a [`FunctionScaler`]; see [`FunctionScaler::builder`].
#[must_use]
pub struct ScalerBuilder {
    query: Arc<dyn ServiceQuery>,
    config: ScalingConfig,
    cache: Option<Arc<dyn FunctionCacher>>,
    notifier: Option<ReadinessNotifier>,
    activity_store: Option<Arc<dyn ActivityStore>>,
}

impl ScalerBuilder {
    /// With scale to zero on, shares activity with other gateways through `store`: each
    /// active function is recorded there (at most once per quarter of its idle period), and
    /// a function another gateway recorded within its idle period is not scaled down.
    pub fn activity_store(mut self, store: impl ActivityStore) -> Self {
        self.activity_store = Some(Arc::new(store));
        self
    }

    /// The bounds and intervals; default [`ScalingConfig::default`].
    pub fn config(mut self, config: ScalingConfig) -> Self {
        self.config = config;
        self
    }

    /// Keeps replica states in `cache` instead of a [`TtlCache`] built from the config. The
    /// config's `cache_ttl` and `cache_capacity` then do not apply: `cache` decides.
    pub fn cache(mut self, cache: impl FunctionCacher) -> Self {
        self.cache = Some(Arc::new(cache));
        self
    }

    /// Attaches `notifier`, made before the scaler (and typically handed to the provider), so
    /// that its pushes reach this scaler. Panics at [`build`](Self::build) if the notifier is
    /// attached to another scaler already.
    pub fn readiness_notifier(mut self, notifier: ReadinessNotifier) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// The scaler.
    pub fn build(self) -> FunctionScaler {
        let config = self.config;
        let cache = self.cache.unwrap_or_else(|| {
            Arc::new(TtlCache::new(
                config.get_cache_ttl(),
                config.get_cache_capacity(),
            ))
        });
        let inner = Arc::new(Inner {
            query: self.query,
            cache,
            not_found: TtlMap::new(config.get_not_found_ttl(), config.get_not_found_capacity()),
            // Each entry comes from a flight with an admitted waiter: bounded like them.
            asked: TtlMap::new(config.get_readiness_deadline(), config.get_max_held_total()),
            flights: SingleFlight::new(),
            held: AtomicUsize::new(0),
            calls: ProviderCalls::new(&config),
            activities: config
                .get_scale_to_zero()
                .then(|| Arc::new(Activities::new())),
            activity_store: self.activity_store,
            reaper: OnceLock::new(),
            draining: AtomicBool::new(false),
            drain_expired: AtomicBool::new(false),
            config,
        });
        if let Some(notifier) = self.notifier {
            notifier.attach(&inner);
        }
        FunctionScaler { inner }
    }
}

impl fmt::Debug for ScalerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScalerBuilder")
            .field("config", &self.config)
            .field("custom_cache", &self.cache.is_some())
            .field("notifier", &self.notifier)
            .field("activity_store", &self.activity_store.is_some())
            .finish()
    }
}

impl FunctionScaler {
    /// A scaler over `query` with the default [`TtlCache`] sized by `config`.
    pub fn new(query: impl ServiceQuery, config: ScalingConfig) -> Self {
        Self::builder(query).config(config).build()
    }

    /// A scaler over `query` that keeps replica states in `cache`; `config`'s `cache_ttl` and
    /// `cache_capacity` do not apply to it.
    pub fn with_cache(
        query: impl ServiceQuery,
        cache: impl FunctionCacher,
        config: ScalingConfig,
    ) -> Self {
        Self::builder(query).config(config).cache(cache).build()
    }

    /// A builder: for a custom cache, or a [`ReadinessNotifier`] made before the scaler.
    pub fn builder(query: impl ServiceQuery) -> ScalerBuilder {
        ScalerBuilder {
            query: Arc::new(query),
            config: ScalingConfig::default(),
            cache: None,
            notifier: None,
            activity_store: None,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ScalingConfig {
        &self.inner.config
    }

    /// The cache of replica states (the one built from the config, or the one given).
    pub fn cache(&self) -> &dyn FunctionCacher {
        &*self.inner.cache
    }

    /// A handle through which a provider's watch loop reports functions' states as they
    /// change.
    pub fn readiness_notifier(&self) -> ReadinessNotifier {
        ReadinessNotifier::attached(&self.inner)
    }

    /// Whether the cache holds a fresh, ready state for `function`: the warm path.
    pub fn is_warm(&self, function: FunctionRef<'_>) -> bool {
        self.inner.cache.is_ready(function)
    }

    /// The warm path: `None` if `function` is not warm (or is being scaled to zero); else,
    /// with scale to zero on, the request's place among the function's requests in flight.
    #[inline]
    pub(crate) fn warm(&self, function: FunctionRef<'_>) -> Option<Option<ActivityGuard>> {
        match &self.inner.activities {
            None => self.is_warm(function).then_some(None),
            Some(activities) => {
                let state = self.inner.cache.get(function).filter(|s| s.is_ready())?;
                self.enter(activities, function, &state).map(Some)
            }
        }
    }

    /// A released request's place among `function`'s requests in flight: `Some(None)` with
    /// scale to zero off, `Some(Some(guard))` with it on, `None` while `function` is being
    /// scaled to zero (the "ready" the request saw is from before: forgotten here, so that the
    /// next look goes through the flight). Inlined: every released request passes here.
    #[inline]
    fn track(
        &self,
        function: FunctionRef<'_>,
        state: &ServiceQueryResponse,
    ) -> Option<Option<ActivityGuard>> {
        let Some(activities) = &self.inner.activities else {
            return Some(None);
        };
        let guard = self.enter(activities, function, state);
        if guard.is_none() {
            self.inner.cache.invalidate(function);
        }
        guard.map(Some)
    }

    /// Every tracked request passes here (warm ones included): keep it to lookups and atomics.
    /// Not inlined, so that the untracked warm path stays small.
    #[inline(never)]
    fn enter(
        &self,
        activities: &Arc<Activities>,
        function: FunctionRef<'_>,
        state: &ServiceQueryResponse,
    ) -> Option<ActivityGuard> {
        let activity = activities.get_or_insert(function);
        activity.set_policy(state.scale_to_zero);
        // The guard holds the function's activity: one reference, not two.
        let guard = activities.enter(activity)?;
        let activity = guard.activity();
        if self.inner.reaper.get().is_none() {
            // Started by the first tracked request made inside a runtime.
            if tokio::runtime::Handle::try_current().is_ok() {
                self.inner
                    .reaper
                    .get_or_init(|| scale_down::spawn_reaper(&self.inner));
            }
        }
        if let (Some(store), Some(period)) = (
            &self.inner.activity_store,
            state
                .scale_to_zero
                .period(self.inner.config.get_idle_period()),
        ) {
            let now = activities.now_ms();
            if activity.record_due(now, period / 4)
                && tokio::runtime::Handle::try_current().is_ok()
                && activity.claim_record()
            {
                let store = Arc::clone(store);
                let inner = Arc::clone(&self.inner);
                let activity = Arc::clone(activity);
                let id = function.to_function_id().expect("validated");
                tokio::spawn(async move {
                    let recorded = inner.calls.call("record_activity", store.record(&id)).await;
                    if let Err(err) = &recorded {
                        tracing::debug!(function = %id, error = %crate::error::ErrorChain(err), "recording activity failed");
                    }
                    activity.recorded(now, recorded.is_ok());
                });
            }
        }
        Some(guard)
    }

    /// Forgets what the cache knows of `function`, so that the next request asks the provider
    /// again. For the forwarding service to call when the function's upstream refused a
    /// connection: "ready" on the platform is not always "routable" yet.
    pub fn evict(&self, function: FunctionRef<'_>) {
        self.inner.cache.invalidate(function);
    }

    /// The number of requests waiting for cold functions, all together (what
    /// [`ScalingConfig::max_held_total`] bounds).
    pub fn held(&self) -> usize {
        self.inner.held.load(Ordering::Relaxed)
    }

    /// The number of requests waiting on `function`'s flight (what
    /// [`ScalingConfig::max_held_per_function`] bounds).
    pub fn held_for(&self, function: FunctionRef<'_>) -> usize {
        self.inner.flights.callers(&function as &dyn Key)
    }

    /// With scale to zero on, the requests for `function` in flight now: forwarded and not
    /// yet done (a response body still streaming counts). Always 0 with it off.
    pub fn in_flight(&self, function: FunctionRef<'_>) -> usize {
        self.inner
            .activities
            .as_ref()
            .and_then(|activities| activities.get(function))
            .map_or(0, |activity| activity.in_flight())
    }

    /// One look for idle functions, as the reaper makes every `idle_check_interval`, without
    /// scaling anything down: how many are due. For benchmarks of the reaper's cost.
    #[doc(hidden)]
    pub fn idle_scan(&self) -> usize {
        let default = self.inner.config.get_idle_period();
        self.inner
            .activities
            .as_ref()
            .map_or(0, |activities| activities.due(default, default).len())
    }

    /// The number of flights under way (cold starts, and refreshes of expired entries).
    pub fn flights(&self) -> usize {
        self.inner.flights.len()
    }

    /// The number of provider calls under way now (at most
    /// [`ScalingConfig::max_provider_calls`]).
    pub fn provider_calls_in_flight(&self) -> usize {
        self.inner.calls.in_flight()
    }

    /// Makes `function` ready, or says why it cannot be, within the readiness deadline counted
    /// from this call. Concurrent calls for one function share one flight; dropping the
    /// returned future frees its hold slot at once.
    pub async fn scale(&self, function: &FunctionId) -> Result<ServiceQueryResponse, ScaleError> {
        self.ready(function).await.map(|released| released.state)
    }

    /// Drains, for a graceful shutdown: from now on no cold start begins (a request for a
    /// function that is not warm is answered 503 with `Retry-After`), requests already
    /// waiting keep waiting for up to `budget`, and any still waiting then are answered 503.
    /// Resolves once no request waits, so every request has had a response; warm requests
    /// keep passing meanwhile. Stop accepting connections alongside (the servers' graceful
    /// shutdown), and let forwarded requests finish there.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_scale_from_zero::{FunctionScaler, ScalingConfig};
    /// # use tower_scale_from_zero::testing::InMemoryProvider;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let scaler = FunctionScaler::new(InMemoryProvider::new(), ScalingConfig::default());
    /// let drained = scaler.drain(Duration::from_secs(10)).await;
    /// assert_eq!(drained.cut_short, 0);
    /// # }
    /// ```
    pub async fn drain(&self, budget: Duration) -> Drained {
        let inner = &*self.inner;
        inner.draining.store(true, Ordering::Release);
        let started = Instant::now();
        let deadline = started + budget;
        let waiting = || inner.flights.total_callers();
        // Polled: this runs once, at shutdown.
        let tick = Duration::from_millis(10);
        while waiting() > 0 && Instant::now() < deadline {
            tokio::time::sleep(tick.min(deadline - Instant::now())).await;
        }
        let cut_short = waiting();
        if cut_short > 0 {
            tracing::warn!(
                waiting = cut_short,
                "drain budget of {} spent: answering the requests still waiting with 503",
                crate::error::Millis(budget)
            );
            inner.drain_expired.store(true, Ordering::Release);
            for flight in inner.flights.states() {
                flight.deadlines().wake_all();
            }
            // They answer as soon as they are polled; a moment's grace for that.
            let grace = Instant::now() + Duration::from_secs(1);
            while waiting() > 0 && Instant::now() < grace {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Drained {
            took: started.elapsed(),
            cut_short,
        }
    }

    /// Whether [`drain`](Self::drain) has been called.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// [`scale`](Self::scale), also saying since when the request waited if a cold start
    /// happened (for the middleware's [`ColdStart`](crate::ColdStart) mark).
    pub(crate) async fn ready(&self, function: &FunctionId) -> Result<Released, ScaleError> {
        // A block, so that none of this is kept in the future's state while it waits.
        {
            let key = function.as_function_ref();
            if let Some(state) = self.inner.cache.get(key).filter(|s| s.is_ready()) {
                // Being scaled to zero (`None`): wait for a fresh scale-up through the flight.
                if let Some(guard) = self.track(key, &state) {
                    return Ok(Released {
                        state,
                        cold_since: None,
                        guard,
                    });
                }
            }
            if self.inner.not_found.get(key).is_some() {
                return Err(ScaleError::not_found(function.clone()));
            }
            if self.inner.draining.load(Ordering::Acquire) {
                return Err(ScaleError::shutting_down(
                    function.clone(),
                    self.inner.config.get_retry_after(),
                ));
            }
        }
        let inner = &*self.inner;
        let config = &inner.config;
        let arrival = Instant::now();
        let mut healed = false;
        let mut scaled_down_meanwhile = 0;
        loop {
            let joined = {
                // In a block: moved into the flight, they must not keep room in this future.
                let this = self.clone();
                let id = function.clone();
                inner.flights.try_join_with(
                    function.clone(),
                    config.get_max_held_per_function(),
                    move |context| {
                        let span = context.state().span(&id).clone();
                        async move { this.cold_start(id, context).await }.instrument(span)
                    },
                )
            };
            let mut flight = joined.map_err(|_| {
                ScaleError::overloaded(
                    function.clone(),
                    "per-function",
                    config.get_max_held_per_function(),
                    config.get_retry_after(),
                )
            })?;
            if flight.joined_existing() {
                crate::telemetry::coalesced_join();
            }
            let current = tracing::Span::current();
            if !current.is_disabled() {
                if let Some(state) = flight.state() {
                    current.follows_from(state.span(function));
                }
            }
            // Polled in place (no nested future): this state lives in every held request.
            let mut waiter = Waiter {
                ticket: None,
                slot: None,
            };
            let waited =
                std::future::poll_fn(|cx| waiter.poll(inner, function, &mut flight, arrival, cx))
                    .await;
            waiter.leave(&flight, &waited);
            match waited {
                Waited::TimedOut => {
                    let last_error = flight.state().and_then(|state| state.last_error());
                    return Err(ScaleError::not_ready(
                        function.clone(),
                        arrival.elapsed(),
                        last_error,
                    ));
                }
                Waited::Refused(refused) => return Err(refused),
                // A flight that scaled the function to zero just as this request joined:
                // wait for a fresh one, which scales it up again.
                Waited::Done(Ok(Ok(ready))) if !ready.state.is_ready() => {}
                Waited::Done(Ok(Ok(ready))) => {
                    let guard = match self.track(function.as_function_ref(), &ready.state) {
                        Some(guard) => guard,
                        // A scale-down began since the release (only possible with an idle
                        // period shorter than a cold start): wait for a fresh scale-up, a few
                        // times.
                        None if scaled_down_meanwhile < 3 => {
                            scaled_down_meanwhile += 1;
                            continue;
                        }
                        None => {
                            return Err(ScaleError::interrupted(
                                function.clone(),
                                config.get_retry_after(),
                            ))
                        }
                    };
                    return Ok(Released {
                        state: ready.state,
                        cold_since: ready.cold.then_some(arrival),
                        guard,
                    });
                }
                Waited::Done(Ok(Err(err))) => return Err(err),
                Waited::Done(Err(FlightError::Panicked)) => {
                    return Err(ScaleError::panicked(function.clone()))
                }
                // The flight's task was cancelled (its runtime shut down): join a fresh one
                // once; a second cancellation means this runtime is going too.
                Waited::Done(Err(_)) if !healed => {
                    tracing::debug!(function = %function, "cold start was cancelled; starting a fresh one");
                    healed = true;
                }
                Waited::Done(Err(_)) => {
                    return Err(ScaleError::interrupted(
                        function.clone(),
                        config.get_retry_after(),
                    ))
                }
            }
        }
    }
}

/// How a [`FunctionScaler::drain`] went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Drained {
    /// From the start of the drain to no request waiting.
    pub took: Duration,
    /// Requests still waiting when the budget was spent, answered 503.
    pub cut_short: usize,
}

/// What [`FunctionScaler::ready`] hands the middleware.
#[derive(Debug)]
pub(crate) struct Released {
    pub(crate) state: ServiceQueryResponse,
    /// When the request arrived, if it waited for a cold start.
    pub(crate) cold_since: Option<Instant>,
    /// With scale to zero on, the request's place among the function's requests in flight.
    pub(crate) guard: Option<ActivityGuard>,
}

impl fmt::Debug for FunctionScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionScaler")
            .field("config", &self.inner.config)
            .field("flights", &self.inner.flights.len())
            .field("held", &self.held())
            .finish()
    }
}

/// Locks a mutex that guards plain values: a panic elsewhere cannot leave them half-written,
/// so a poisoned lock is used as it is.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How one request's wait on a flight ended.
enum Waited {
    Done(Result<Outcome, FlightError>),
    TimedOut,
    Refused(ScaleError),
}

/// One request waiting on a flight: its deadline in the flight's queue, and its place under
/// the total hold limit once the flight knows the function is cold. It keeps no reference to
/// the flight's state: it looks it up on the rare polls that need it, so that a released
/// waiter leaves without touching anything shared but the flight's result.
struct Waiter<'a> {
    ticket: Option<deadlines::Ticket>,
    slot: Option<(Place<'a>, crate::telemetry::HeldGauge)>,
}

impl<'a> Waiter<'a> {
    /// The flight's result, unless the deadline passes first or the flight turns cold while
    /// the total hold limit is full. The flight is polled first: a released waiter leaves at
    /// once.
    fn poll(
        &mut self,
        inner: &'a Inner,
        function: &FunctionId,
        flight: &mut SingleFlightHandle,
        arrival: Instant,
        cx: &mut Context<'_>,
    ) -> Poll<Waited> {
        let config = &inner.config;
        let deadline = far_instant(arrival, config.get_readiness_deadline());
        if let Poll::Ready(out) = Pin::new(&mut *flight).poll(cx) {
            // Timers fire on whole milliseconds: a release in the same tick as the deadline
            // must not forward a request that was already late when the flight ended.
            if matches!(&out, Ok(Ok(ready)) if ready.at > deadline) {
                return Poll::Ready(Waited::TimedOut);
            }
            return Poll::Ready(Waited::Done(out));
        }
        if inner.drain_expired.load(Ordering::Acquire) {
            return Poll::Ready(Waited::Refused(ScaleError::shutting_down(
                function.clone(),
                config.get_retry_after(),
            )));
        }
        let Some(state) = flight.state() else {
            // Ended between the poll and the look-up: its result is there next time.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        };
        match &self.ticket {
            None => self.ticket = Some(state.deadlines().register(deadline, cx.waker())),
            Some(ticket) => {
                if state.deadlines().expired(ticket, cx.waker()) {
                    return Poll::Ready(Waited::TimedOut);
                }
            }
        }
        if self.slot.is_none() && state.is_cold() {
            match Place::take(&inner.held, config.get_max_held_total()) {
                Some(slot) => {
                    self.slot = Some((slot, crate::telemetry::held(state.held_gauge(function))));
                    state.admit();
                }
                None => {
                    return Poll::Ready(Waited::Refused(ScaleError::overloaded(
                        function.clone(),
                        "total",
                        config.get_max_held_total(),
                        config.get_retry_after(),
                    )))
                }
            }
        }
        Poll::Pending
    }

    /// Leaving before the flight's end (deadline, refusal) frees the queue slot; a released
    /// waiter has nothing to undo.
    fn leave(&mut self, flight: &SingleFlightHandle, waited: &Waited) {
        if let (Some(ticket), false) = (self.ticket.take(), matches!(waited, Waited::Done(_))) {
            if let Some(state) = flight.state() {
                state.deadlines().cancel(&ticket);
            }
        }
    }
}

type SingleFlightHandle = crate::single_flight::Flight<FunctionId, Outcome, FlightState>;
