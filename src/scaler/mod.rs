//! [`FunctionScaler`]: the scale-from-zero algorithm, with no HTTP in it.
//!
//! cache → "not found" remembered → one flight per function: a query that tells a warm function
//! (its cache entry merely expired) from a cold one; for a cold one, scale to the minimum with
//! retries (at most one successful `set_replicas`), then wait for readiness by polling at a
//! fixed interval or by a pushed event ([`ReadinessNotifier`]). Each request waits at most the
//! readiness deadline from its own arrival; requests waiting for a cold function count against
//! the hold limits. Every provider call passes one gate per scaler (a cap on calls under way,
//! a bounded queue, the call timeout) and failed calls are retried with jittered exponential
//! backoff. A function known warm whose refresh fails keeps being served from its last known
//! state for a while (stale-if-error).
//!
//! What the scaler knows of each function, and how it moves from cold to warm to scaled down,
//! lives in one place, described phase by phase in `docs/lifecycle.md`; [`Stats`] shows it.
//!
//! # Runtime
//!
//! Cold starts run on spawned Tokio tasks (see [`SingleFlight`](crate::single_flight::SingleFlight));
//! [`FunctionScaler::scale`] must be awaited inside a Tokio runtime with the `time` driver
//! enabled. A scaler may be shared by several runtimes: a cold start whose runtime shut down is
//! never joined again, and background work (the idle reaper) starts again on the runtime of
//! the next request.

mod deadlines;
mod flight;
mod lifecycle;
mod notifier;
mod place;
mod provider_calls;
mod waiter;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub(crate) use self::lifecycle::requests::{Released, Warm};
pub(crate) use self::lifecycle::ActivityGuard;
use self::lifecycle::Lifecycle;
pub use self::lifecycle::Phase;
pub use self::notifier::ReadinessNotifier;
use crate::activity::ActivityStore;
use crate::cache::FunctionCacher;
use crate::function::FunctionRef;
use crate::{FunctionId, ScaleError, ScalingConfig, ServiceQuery, ServiceQueryResponse};

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
    owner: Arc<Owner>,
}

/// The scaler's handles all share this: when the last one goes, so does the scaler's
/// background work (cold starts under way, the idle reaper), which holds the lifecycle
/// itself and would otherwise outlive it by up to a readiness deadline.
struct Owner(Arc<Lifecycle>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.shut_down();
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

    /// Keeps replica states in `cache` (a [`TtlCache`](crate::cache::TtlCache), or one of the
    /// user's) instead of the default, which keeps each function's state in the scaler's own
    /// record of it (one entry per function: the warm path makes one look-up, not two). The
    /// config's `cache_ttl` and `cache_capacity` then do not apply to it: `cache` decides.
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
        let lifecycle = Arc::new(Lifecycle::new(
            self.query,
            self.cache,
            config,
            self.activity_store,
        ));
        if let Some(notifier) = self.notifier {
            notifier.attach(&lifecycle);
        }
        FunctionScaler {
            owner: Arc::new(Owner(lifecycle)),
        }
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
    #[inline]
    fn lifecycle(&self) -> &Arc<Lifecycle> {
        &self.owner.0
    }

    /// A scaler over `query` with the default cache, sized by `config` (`cache_ttl`,
    /// `cache_capacity`): each function's cached state lives in the scaler's record of it.
    pub fn new(query: impl ServiceQuery, config: ScalingConfig) -> Self {
        Self::builder(query).config(config).build()
    }

    /// A builder: for a custom cache, an activity store shared with other gateways, or a
    /// [`ReadinessNotifier`] made before the scaler.
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
        &self.lifecycle().config
    }

    /// The cache of replica states (the one built from the config, or the one given).
    pub fn cache(&self) -> &dyn FunctionCacher {
        &*self.lifecycle().cache
    }

    /// A handle through which a provider's watch loop reports functions' states as they
    /// change.
    pub fn readiness_notifier(&self) -> ReadinessNotifier {
        ReadinessNotifier::attached(self.lifecycle())
    }

    /// Forgets what the cache knows of `function`, so that the next request asks the provider
    /// again. For the forwarding service to call when the function's upstream refused a
    /// connection: "ready" on the platform is not always "routable" yet.
    pub fn evict(&self, function: FunctionRef<'_>) {
        self.lifecycle().cache.invalidate(function);
    }

    /// Makes `function` ready, or says why it cannot be, within the readiness deadline counted
    /// from this call. Concurrent calls for one function share one flight; dropping the
    /// returned future frees everything it took at once.
    pub async fn scale(&self, function: &FunctionId) -> Result<ServiceQueryResponse, ScaleError> {
        self.lifecycle()
            .ready(function, crate::middleware::HELD_OVERHEAD)
            .await
            .map(|released| released.state)
    }

    /// A snapshot of what the scaler holds: requests waiting, flights, provider calls under
    /// way, and each function it keeps a record of or has a flight for. It walks every
    /// function: for tests, debugging and occasional metrics, not for each request.
    pub fn stats(&self) -> Stats {
        let lifecycle = &**self.lifecycle();
        let mut functions: HashMap<FunctionId, FunctionStats> = HashMap::new();
        for record in lifecycle.records.all() {
            let stats = functions.entry(record.id().clone()).or_default();
            stats.phase = Some(record.phase());
            stats.in_flight = record.in_flight();
        }
        for id in lifecycle.flights.keys() {
            let held = lifecycle.flights.callers(&id);
            functions.entry(id).or_default().held = held;
        }
        for (id, stats) in &mut functions {
            stats.warm = lifecycle.cache.is_ready(id.as_function_ref());
        }
        Stats {
            held: lifecycle.holding.holds.count(),
            flights: lifecycle.flights.len(),
            provider_calls: lifecycle.calls.in_flight(),
            functions,
        }
    }

    /// One look for idle functions, as the reaper makes every `idle_check_interval`, without
    /// scaling anything down: how many are due. For benchmarks of the reaper's cost.
    #[doc(hidden)]
    pub fn idle_scan(&self) -> usize {
        self.lifecycle().due_now()
    }

    /// Drains, for a graceful shutdown: from now on no cold start begins (a request for a
    /// function that is not warm on the platform is answered 503 with `Retry-After`; one that
    /// is warm is served, also once its cache entry has expired), requests already waiting
    /// keep waiting for up to `budget`, and any still waiting then are answered 503. Resolves
    /// once no request waits, so every request has had a response. Stop accepting
    /// connections alongside (the servers' graceful shutdown), and let forwarded requests
    /// finish there.
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
        let lifecycle = &**self.lifecycle();
        lifecycle.draining.store(true, Ordering::Release);
        let started = Instant::now();
        let deadline = started + budget;
        // Requests on flights, and those released from a cold start that wait for a paced
        // release (they keep their hold place until forwarded).
        let waiting = || {
            lifecycle
                .flights
                .total_callers()
                .max(lifecycle.holding.holds.count())
        };
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
                crate::util::Millis(budget)
            );
            lifecycle
                .holding
                .drain_expired
                .store(true, Ordering::Release);
            for flight in lifecycle.flights.states() {
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
        self.lifecycle().is_draining()
    }

    /// An owned id for `function` (validated): the one the scaler already holds when it knows
    /// the function (no allocation for a request that joins a cold start), else a new one.
    pub(crate) fn id_of(&self, function: FunctionRef<'_>) -> FunctionId {
        self.lifecycle().id_of(function)
    }

    /// Whether `function` is known to be starting: its cold start is under way and a read
    /// showed it not ready (not merely a refresh of a warm function, nor failing reads).
    pub(crate) fn is_starting(&self, function: &FunctionId) -> bool {
        self.lifecycle()
            .flights
            .state(function)
            .is_some_and(|flight| flight.is_starting())
    }

    /// The warm path (see [`Warm`]).
    #[inline]
    pub(crate) fn warm(&self, function: FunctionRef<'_>) -> Warm {
        self.lifecycle().warm(function)
    }

    /// [`scale`](Self::scale), also saying since when the request waited if a cold start
    /// happened (for the middleware's [`ColdStart`](crate::middleware::ColdStart) mark) and
    /// handing over its activity guard.
    /// `bytes`: what the request keeps while it waits (see
    /// [`held_bytes`](crate::middleware::held_bytes)).
    pub(crate) async fn ready(
        &self,
        function: &FunctionId,
        bytes: usize,
    ) -> Result<Released, ScaleError> {
        self.lifecycle().ready(function, bytes).await
    }
}

impl fmt::Debug for FunctionScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionScaler")
            .field("lifecycle", &**self.lifecycle())
            .finish()
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

/// What a [`FunctionScaler`] holds at one moment; see [`FunctionScaler::stats`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Requests waiting for cold functions, or released from a cold start and waiting for a
    /// paced release, all together (what
    /// [`max_held_total`](crate::config::ScalingConfigBuilder::max_held_total) bounds).
    pub held: usize,
    /// Flights under way: cold starts, refreshes of expired entries, scale-downs.
    pub flights: usize,
    /// Provider calls under way (at most
    /// [`max_provider_calls`](crate::config::ScalingConfigBuilder::max_provider_calls)).
    pub provider_calls: usize,
    functions: HashMap<FunctionId, FunctionStats>,
}

impl Stats {
    /// What the scaler holds for `function` (all zero for a function it keeps nothing of).
    pub fn function(&self, function: &FunctionId) -> FunctionStats {
        self.functions.get(function).copied().unwrap_or_default()
    }

    /// How many functions the scaler keeps anything of (a record or a flight).
    pub fn functions(&self) -> usize {
        self.functions.len()
    }
}

/// What a [`FunctionScaler`] holds for one function; see [`Stats::function`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FunctionStats {
    /// Requests waiting on the function's flight (what
    /// [`max_held_per_function`](crate::config::ScalingConfigBuilder::max_held_per_function)
    /// bounds).
    pub held: usize,
    /// With scale to zero on, its requests forwarded and not yet done (a response body still
    /// streaming counts).
    pub in_flight: usize,
    /// Its phase, if the scaler keeps a record of it.
    pub phase: Option<Phase>,
    /// Whether the cache holds a fresh, ready state of it (the warm path would take it).
    pub warm: bool,
}
