//! [`FunctionScaler`]: the scale-from-zero algorithm, with no HTTP in it.
//!
//! cache → "not found" cache → hold limits → one flight per function: query, scale to the
//! minimum with retries (at most one successful `set_replicas`), wait for readiness by polling
//! or by a pushed event ([`ReadinessNotifier`]), all under the readiness deadline.
//!
//! # Runtime
//!
//! Cold starts run on spawned Tokio tasks (see [`SingleFlight`]); [`FunctionScaler::scale`]
//! must be awaited inside a Tokio runtime with the `time` driver enabled.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{sleep, timeout, timeout_at, Instant};

use crate::cache::TtlMap;
use crate::{
    FlightError, FunctionCacher, FunctionId, FunctionRef, QueryError, ScaleError, ScalingConfig,
    ServiceQuery, ServiceQueryResponse, SingleFlight, TtlCache,
};

type Outcome = Result<ServiceQueryResponse, ScaleError>;

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

struct Inner {
    query: Arc<dyn ServiceQuery>,
    ready: Arc<ReadyShared>,
    not_found: TtlMap<()>,
    flights: SingleFlight<FunctionId, Outcome>,
    held: AtomicUsize,
    config: ScalingConfig,
}

/// What the scaler shares with [`ReadinessNotifier`]s. It holds no provider, so a provider
/// may keep a notifier without a reference cycle.
struct ReadyShared {
    cache: Arc<dyn FunctionCacher>,
    notify: Notify,
}

impl FunctionScaler {
    /// A scaler over `query` with the default [`TtlCache`] sized by `config`.
    pub fn new(query: impl ServiceQuery, config: ScalingConfig) -> Self {
        let cache = TtlCache::new(config.cache_ttl, config.cache_capacity);
        Self::with_cache(query, cache, config)
    }

    /// A scaler over `query` that keeps replica states in `cache`.
    pub fn with_cache(
        query: impl ServiceQuery,
        cache: impl FunctionCacher,
        config: ScalingConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                query: Arc::new(query),
                ready: Arc::new(ReadyShared {
                    cache: Arc::new(cache),
                    notify: Notify::new(),
                }),
                not_found: TtlMap::new(config.not_found_ttl, config.not_found_capacity),
                flights: SingleFlight::new(),
                held: AtomicUsize::new(0),
                config,
            }),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ScalingConfig {
        &self.inner.config
    }

    /// A handle through which a provider's watch loop reports that functions became ready.
    pub fn readiness_notifier(&self) -> ReadinessNotifier {
        ReadinessNotifier {
            shared: Arc::clone(&self.inner.ready),
        }
    }

    /// Whether the cache holds a fresh state with an available replica: the warm path.
    pub fn is_warm(&self, function: FunctionRef<'_>) -> bool {
        self.inner
            .ready
            .cache
            .get(function)
            .is_some_and(|state| state.is_ready())
    }

    /// The number of requests currently held, over all functions.
    pub fn held(&self) -> usize {
        self.inner.held.load(Ordering::Relaxed)
    }

    /// The number of cold starts under way.
    pub fn flights(&self) -> usize {
        self.inner.flights.len()
    }

    /// The number of requests held for `function`.
    pub fn held_for(&self, function: &FunctionId) -> usize {
        self.inner.flights.callers(function)
    }

    /// Makes `function` ready, or says why it cannot be. Concurrent calls for one function
    /// share one cold start; dropping the returned future frees its hold slot at once.
    pub async fn scale(&self, function: &FunctionId) -> Result<ServiceQueryResponse, ScaleError> {
        let inner = &*self.inner;
        let key = function.as_function_ref();
        if let Some(state) = inner.ready.cache.get(key).filter(|s| s.is_ready()) {
            return Ok(state);
        }
        if inner.not_found.get(key).is_some() {
            return Err(ScaleError::not_found(function.clone()));
        }
        let _held =
            HeldSlot::acquire(&inner.held, inner.config.max_held_total).ok_or_else(|| {
                ScaleError::overloaded(
                    function.clone(),
                    "total",
                    inner.config.max_held_total,
                    inner.config.retry_after,
                )
            })?;
        let this = self.clone();
        let id = function.clone();
        let flight = inner
            .flights
            .try_join(
                function.clone(),
                inner.config.max_held_per_function,
                move || async move { this.cold_start(id).await },
            )
            .map_err(|_| {
                ScaleError::overloaded(
                    function.clone(),
                    "per-function",
                    inner.config.max_held_per_function,
                    inner.config.retry_after,
                )
            })?;
        match flight.await {
            Ok(outcome) => outcome,
            Err(FlightError::Panicked) => Err(ScaleError::panicked(function.clone())),
            Err(_) => Err(ScaleError::not_ready(
                function.clone(),
                inner.config.readiness_deadline,
                None,
            )),
        }
    }

    /// The flight: everything that makes `function` ready, under the readiness deadline.
    async fn cold_start(self, function: FunctionId) -> Outcome {
        let started = Instant::now();
        // A deadline too far to represent means "about a century".
        let deadline = started
            .checked_add(self.inner.config.readiness_deadline)
            .unwrap_or_else(|| started + Duration::from_secs(100 * 365 * 24 * 3600));
        let mut last_error = None;
        let outcome = timeout_at(deadline, self.bring_up(&function, &mut last_error)).await;
        match outcome {
            Ok(Ok(state)) => {
                let waited_ms = started.elapsed().as_millis() as u64;
                tracing::info!(
                    function = %function,
                    waited_ms,
                    available = state.available_replicas,
                    "function ready after {waited_ms} ms"
                );
                Ok(state)
            }
            Ok(Err(err)) => {
                if err.kind() == crate::ErrorKind::NotFound {
                    tracing::debug!(function = %function, "function not found");
                } else {
                    tracing::warn!(function = %function, error = %err, "cold start failed");
                }
                Err(err)
            }
            Err(_) => {
                tracing::warn!(function = %function, "function not ready within the deadline");
                Err(ScaleError::not_ready(
                    function,
                    self.inner.config.readiness_deadline,
                    last_error,
                ))
            }
        }
    }

    async fn bring_up(
        &self,
        function: &FunctionId,
        last_error: &mut Option<QueryError>,
    ) -> Outcome {
        let inner = &*self.inner;
        let config = &inner.config;
        let query = &inner.query;

        let state = self
            .retry(function, last_error, || query.get_replicas(function))
            .await
            .map_err(|(e, _)| self.failed(function, e, None))?;
        if state.is_ready() {
            inner.ready.cache.set(function, state.clone());
            return Ok(state);
        }

        // Right after a scale call, look once without waiting: an instant platform (or a
        // start faster than the round trip) should not cost a whole poll interval.
        let mut look_now = false;
        if state.desired_replicas == 0 {
            look_now = true;
            let target = state.scale_target();
            self.retry(function, last_error, || {
                query.set_replicas(function, target)
            })
            .await
            .map_err(|(e, attempts)| self.failed(function, e, Some(attempts)))?;
            tracing::info!(function = %function, "function scaled 0 → {target}");
        }

        // Wait. `set_replicas` is never called again here: a read that still shows desired 0
        // is the platform's read-after-write lag, not a reason to scale twice.
        let mut failures = 0;
        loop {
            let notified = inner.ready.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(state) = inner.ready.cache.get(function.as_function_ref()) {
                if state.is_ready() {
                    return Ok(state);
                }
            }
            if !std::mem::take(&mut look_now) {
                tokio::select! {
                    _ = &mut notified => continue,
                    _ = sleep(config.poll_interval) => {}
                }
            }
            match self.call(query.get_replicas(function)).await {
                Ok(state) if state.is_ready() => {
                    inner.ready.cache.set(function, state.clone());
                    return Ok(state);
                }
                Ok(_) => failures = 0,
                Err(err) if !err.is_retryable() => return Err(self.failed(function, err, None)),
                Err(err) => {
                    failures += 1;
                    tracing::debug!(function = %function, error = %err, "readiness poll failed");
                    *last_error = Some(err.clone());
                    if failures >= config.max_scale_attempts {
                        return Err(ScaleError::provider(function.clone(), err));
                    }
                }
            }
        }
    }

    /// Calls `op` until it succeeds, fails for good (not found, permanent), or
    /// `max_scale_attempts` consecutive calls failed; one poll interval apart.
    async fn retry<T, F, Fut>(
        &self,
        function: &FunctionId,
        last_error: &mut Option<QueryError>,
        mut op: F,
    ) -> Result<T, (QueryError, u32)>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, QueryError>>,
    {
        let config = &self.inner.config;
        let mut attempt = 1;
        loop {
            match self.call(op()).await {
                Ok(value) => return Ok(value),
                Err(err) if !err.is_retryable() || attempt >= config.max_scale_attempts => {
                    return Err((err, attempt))
                }
                Err(err) => {
                    tracing::debug!(function = %function, attempt, error = %err, "provider call failed");
                    *last_error = Some(err);
                    attempt += 1;
                    sleep(config.poll_interval).await;
                }
            }
        }
    }

    /// One provider call under the per-call time limit.
    async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, QueryError>>,
    ) -> Result<T, QueryError> {
        let limit = self.inner.config.call_timeout;
        timeout(limit, call)
            .await
            .unwrap_or_else(|_| Err(QueryError::timeout(limit)))
    }

    fn failed(
        &self,
        function: &FunctionId,
        err: QueryError,
        scale_attempts: Option<u32>,
    ) -> ScaleError {
        if err.is_not_found() {
            self.inner.not_found.insert(function, ());
            return ScaleError::not_found(function.clone());
        }
        match scale_attempts {
            Some(attempts) => ScaleError::scale_failed(function.clone(), attempts, err),
            None => ScaleError::provider(function.clone(), err),
        }
    }
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

/// One place in the total hold queue, given back on drop.
struct HeldSlot<'a>(&'a AtomicUsize);

impl<'a> HeldSlot<'a> {
    fn acquire(held: &'a AtomicUsize, limit: usize) -> Option<Self> {
        held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .ok()
        .map(|_| Self(held))
    }
}

impl Drop for HeldSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Lets a provider that watches the platform (a Kubernetes watch, a process supervisor) report
/// readiness as it happens: requests held for the function are released at once instead of
/// at the next poll. Cheap to clone; holds no reference to the provider.
#[derive(Clone)]
pub struct ReadinessNotifier {
    shared: Arc<ReadyShared>,
}

impl ReadinessNotifier {
    /// Records `state` for `function` in the cache and, if it is ready, wakes the cold starts
    /// waiting on it.
    pub fn notify(&self, function: &FunctionId, state: ServiceQueryResponse) {
        let ready = state.is_ready();
        self.shared.cache.set(function, state);
        if ready {
            self.shared.notify.notify_waiters();
        }
    }
}

impl fmt::Debug for ReadinessNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadinessNotifier").finish_non_exhaustive()
    }
}
