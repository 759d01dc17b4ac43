//! An in-memory [`ServiceQuery`] for tests, ours and yours: functions with a start-up delay,
//! min/max replicas, read-after-write lag and scale-downs in progress; injected faults
//! (errors, hangs, panics) and call latency; call counters, including the most calls ever
//! under way at once; and readiness pushed through a [`ReadinessNotifier`]. Enabled by the
//! `test-util` feature. Time is `tokio::time`, so paused test time applies.
//!
//! ```
//! use std::time::Duration;
//! use tower_scale_from_zero::testing::{Fault, FakeFunction, InMemoryProvider};
//! use tower_scale_from_zero::{FunctionId, QueryError};
//!
//! let provider = InMemoryProvider::new();
//! let id = FunctionId::new("echo", "fn").unwrap();
//! provider.add_function(&id, FakeFunction::new().startup_delay(Duration::from_millis(500)));
//! // The next two scale calls fail.
//! provider.fail_set(Fault::Error(QueryError::provider("quota exceeded")), 2);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::activity::ActivityStore;
use crate::{
    FunctionId, IdlePolicy, QueryError, ReadinessNotifier, ServiceQuery, ServiceQueryResponse,
};

/// How a fake function behaves.
#[derive(Clone, Debug)]
pub struct FakeFunction {
    startup_delay: Duration,
    min_replicas: u64,
    max_replicas: u64,
    running: u64,
    never_ready: bool,
    lag: Duration,
    draining: u64,
    scale_to_zero: IdlePolicy,
}

impl FakeFunction {
    /// Scaled to zero, starts instantly, min 1, no max.
    pub fn new() -> Self {
        Self {
            startup_delay: Duration::ZERO,
            min_replicas: 1,
            max_replicas: u64::MAX,
            running: 0,
            never_ready: false,
            lag: Duration::ZERO,
            draining: 0,
            scale_to_zero: IdlePolicy::Never,
        }
    }

    /// Opts the function in to scale to zero (reported with its state).
    pub fn scale_to_zero(mut self, policy: IdlePolicy) -> Self {
        self.scale_to_zero = policy;
        self
    }

    /// Time from a scale-up until replicas are available.
    pub fn startup_delay(mut self, delay: Duration) -> Self {
        self.startup_delay = delay;
        self
    }

    /// The minimum replica count the provider reports.
    pub fn min_replicas(mut self, min: u64) -> Self {
        self.min_replicas = min;
        self
    }

    /// The maximum replica count the provider reports.
    pub fn max_replicas(mut self, max: u64) -> Self {
        self.max_replicas = max;
        self
    }

    /// Starts warm, with `replicas` ready replicas.
    pub fn running(mut self, replicas: u64) -> Self {
        self.running = replicas;
        self
    }

    /// Accepts scale-ups but never gets a replica ready.
    pub fn never_ready(mut self) -> Self {
        self.never_ready = true;
        self
    }

    /// For `lag` after a scale call, reads still report the state from before it.
    pub fn read_after_write_lag(mut self, lag: Duration) -> Self {
        self.lag = lag;
        self
    }

    /// Being scaled down: desired 0, with `replicas` replicas still available (terminating)
    /// until the next scale call.
    pub fn draining(mut self, replicas: u64) -> Self {
        self.draining = replicas;
        self
    }
}

impl Default for FakeFunction {
    fn default() -> Self {
        Self::new()
    }
}

/// A fault injected into provider calls.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Fault {
    /// The call fails with this error.
    Error(QueryError),
    /// The call never returns.
    Hang,
    /// The call panics.
    Panic,
}

#[derive(Debug)]
struct FakeState {
    spec: FakeFunction,
    desired: u64,
    draining: u64,
    previous: Option<ServiceQueryResponse>,
    set_at: Option<Instant>,
    ready_at: Option<Instant>,
    /// Successful scale-ups since it was added or scaled to zero.
    scale_ups: usize,
}

#[derive(Debug, Default)]
struct Plan {
    fault: Option<Fault>,
    remaining: usize,
}

impl Plan {
    fn next(&mut self) -> Option<Fault> {
        if self.remaining == 0 {
            return None;
        }
        if self.remaining != usize::MAX {
            self.remaining -= 1;
        }
        self.fault.clone()
    }
}

/// The in-memory provider. Functions not added are unknown: their calls answer
/// [`QueryError::not_found`].
#[derive(Default)]
pub struct InMemoryProvider {
    functions: Mutex<HashMap<FunctionId, FakeState>>,
    get_faults: Mutex<Plan>,
    set_faults: Mutex<Plan>,
    notifier: Mutex<Option<ReadinessNotifier>>,
    latency: Mutex<Duration>,
    set_latency: Mutex<Duration>,
    get_calls: AtomicUsize,
    set_calls: AtomicUsize,
    scale_downs: AtomicUsize,
    /// Shared activity (the provider as an [`ActivityStore`]): when any gateway last recorded
    /// each function.
    activity: Mutex<HashMap<FunctionId, Instant>>,
    successful_sets: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl InMemoryProvider {
    /// A provider that knows no function.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a function. Replacing one starts a new cold period: its state and
    /// its count of successful scale calls start afresh.
    pub fn add_function(&self, id: &FunctionId, spec: FakeFunction) {
        let running = spec.running;
        let state = FakeState {
            desired: running,
            draining: spec.draining,
            spec,
            previous: None,
            set_at: None,
            ready_at: (running > 0).then(Instant::now),
            scale_ups: 0,
        };
        self.functions.lock().unwrap().insert(id.clone(), state);
    }

    /// Makes the next `times` `get_replicas` calls fail with `fault` (`usize::MAX`: all).
    pub fn fail_get(&self, fault: Fault, times: usize) {
        *self.get_faults.lock().unwrap() = Plan {
            fault: Some(fault),
            remaining: times,
        };
    }

    /// Makes the next `times` `set_replicas` calls fail with `fault` (`usize::MAX`: all).
    pub fn fail_set(&self, fault: Fault, times: usize) {
        *self.set_faults.lock().unwrap() = Plan {
            fault: Some(fault),
            remaining: times,
        };
    }

    /// Pushes readiness to `notifier` the moment a scaled-up function becomes ready.
    pub fn push_readiness_to(&self, notifier: ReadinessNotifier) {
        *self.notifier.lock().unwrap() = Some(notifier);
    }

    /// Makes every call take `latency` before it answers (or fails).
    pub fn call_latency(&self, latency: Duration) {
        *self.latency.lock().unwrap() = latency;
    }

    /// Makes every `set_replicas` call take `latency` (on top of
    /// [`call_latency`](Self::call_latency)) before it takes effect.
    pub fn set_latency(&self, latency: Duration) {
        *self.set_latency.lock().unwrap() = latency;
    }

    /// The most calls that were ever under way at once.
    pub fn max_calls_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Forgets `id`: its calls answer "not found" from now on.
    pub fn remove_function(&self, id: &FunctionId) {
        self.functions.lock().unwrap().remove(id);
    }

    /// `get_replicas` calls so far, failed ones included.
    pub fn get_calls(&self) -> usize {
        self.get_calls.load(Ordering::SeqCst)
    }

    /// `set_replicas` calls so far, failed ones included.
    pub fn set_calls(&self) -> usize {
        self.set_calls.load(Ordering::SeqCst)
    }

    /// Successful scale-downs to zero (`scale_to_zero` calls that scaled down).
    pub fn scale_downs(&self) -> usize {
        self.scale_downs.load(Ordering::SeqCst)
    }

    /// `set_replicas` calls that succeeded.
    pub fn successful_sets(&self) -> usize {
        self.successful_sets.load(Ordering::SeqCst)
    }

    /// Successful scale-ups of `id` in its current cold period: `set_replicas` calls that
    /// raised its desired count from zero, since it was (last) added or scaled to zero. (A
    /// write that asks for replicas it already wants changes nothing and is not counted.)
    pub fn scale_ups_this_cold_period(&self, id: &FunctionId) -> usize {
        self.functions
            .lock()
            .unwrap()
            .get(id)
            .map_or(0, |s| s.scale_ups)
    }

    /// What `get_replicas` would answer for `id` now (read-after-write lag included), without
    /// counting a call or using up an injected fault; `None` if it does not exist.
    pub fn current_state(&self, id: &FunctionId) -> Option<ServiceQueryResponse> {
        self.state(id).ok()
    }

    /// The desired replica count of `id`, if it exists.
    pub fn desired_replicas(&self, id: &FunctionId) -> Option<u64> {
        self.functions.lock().unwrap().get(id).map(|s| s.desired)
    }

    fn state(&self, id: &FunctionId) -> Result<ServiceQueryResponse, QueryError> {
        let functions = self.functions.lock().unwrap();
        let state = functions
            .get(id)
            .ok_or_else(|| QueryError::not_found("no such fake function"))?;
        Ok(snapshot(state, Instant::now()))
    }

    /// Counts a call under way until the guard drops, and waits the configured latency.
    async fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let guard = InFlight(&self.in_flight);
        let latency = *self.latency.lock().unwrap();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        guard
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn snapshot(state: &FakeState, now: Instant) -> ServiceQueryResponse {
    if let (Some(previous), Some(at)) = (&state.previous, state.set_at) {
        if now < at + state.spec.lag {
            return previous.clone();
        }
    }
    let ready = !state.spec.never_ready && state.ready_at.is_some_and(|at| now >= at);
    let available = if ready { state.desired } else { state.draining };
    ServiceQueryResponse::new(state.desired, available)
        .min_replicas(state.spec.min_replicas)
        .max_replicas(state.spec.max_replicas)
        .scale_to_zero(state.spec.scale_to_zero)
}

async fn inject(fault: Option<Fault>, call: &str) -> Result<(), QueryError> {
    match fault {
        None => Ok(()),
        Some(Fault::Error(err)) => Err(err),
        Some(Fault::Hang) => std::future::pending().await,
        Some(Fault::Panic) => panic!("injected panic in {call}"),
    }
}

#[async_trait]
impl ServiceQuery for InMemoryProvider {
    async fn get_replicas(
        &self,
        function: &FunctionId,
    ) -> Result<ServiceQueryResponse, QueryError> {
        self.get_calls.fetch_add(1, Ordering::SeqCst);
        let _call = self.enter().await;
        let fault = self.get_faults.lock().unwrap().next();
        inject(fault, "get_replicas").await?;
        self.state(function)
    }

    /// As a shared platform would: no scale-down if any gateway recorded activity within
    /// `idle` (a precondition on the write), and no write when it is at zero already.
    async fn scale_to_zero(
        &self,
        function: &FunctionId,
        idle: Duration,
    ) -> Result<bool, QueryError> {
        let recent = self
            .activity
            .lock()
            .unwrap()
            .get(function)
            .is_some_and(|at| at.elapsed() < idle);
        if recent {
            return Ok(false);
        }
        // Already at zero (another gateway scaled it down): nothing to write.
        if self.desired_replicas(function) == Some(0) {
            return Ok(true);
        }
        self.set_replicas(function, 0).await?;
        self.scale_downs.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }

    async fn set_replicas(&self, function: &FunctionId, replicas: u64) -> Result<(), QueryError> {
        self.set_calls.fetch_add(1, Ordering::SeqCst);
        let _call = self.enter().await;
        let latency = *self.set_latency.lock().unwrap();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let fault = self.set_faults.lock().unwrap().next();
        inject(fault, "set_replicas").await?;
        let now = Instant::now();
        let pushed = {
            let mut functions = self.functions.lock().unwrap();
            let state = functions
                .get_mut(function)
                .ok_or_else(|| QueryError::not_found("no such fake function"))?;
            self.successful_sets.fetch_add(1, Ordering::SeqCst);
            if replicas == 0 {
                state.scale_ups = 0;
            } else if state.desired == 0 {
                state.scale_ups += 1;
            }
            state.previous = Some(snapshot(state, now));
            state.set_at = Some(now);
            state.draining = 0;
            if replicas == 0 {
                state.ready_at = None;
            } else if state.desired == 0 || state.ready_at.is_none() {
                state.ready_at = Some(now + state.spec.startup_delay);
            }
            state.desired = replicas;
            let ready_at = state.ready_at.filter(|_| !state.spec.never_ready);
            ready_at.map(|at| {
                let ready = ServiceQueryResponse::new(replicas, replicas)
                    .min_replicas(state.spec.min_replicas)
                    .max_replicas(state.spec.max_replicas)
                    .scale_to_zero(state.spec.scale_to_zero);
                (at, ready)
            })
        };
        let notifier = self.notifier.lock().unwrap().clone();
        if let (Some((at, ready)), Some(notifier)) = (pushed, notifier) {
            let id = function.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                notifier.notify(&id, ready);
            });
        }
        Ok(())
    }
}

/// Several scalers sharing one in-memory platform share their activity through it, as
/// gateways in front of one cluster would.
#[async_trait]
impl ActivityStore for InMemoryProvider {
    async fn record(&self, function: &FunctionId) -> Result<(), QueryError> {
        self.activity
            .lock()
            .unwrap()
            .insert(function.clone(), Instant::now());
        Ok(())
    }

    async fn idle_for(&self, function: &FunctionId) -> Result<Option<Duration>, QueryError> {
        Ok(self
            .activity
            .lock()
            .unwrap()
            .get(function)
            .map(|at| at.elapsed()))
    }
}

impl fmt::Debug for InMemoryProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryProvider")
            .field("functions", &self.functions.lock().unwrap().len())
            .field("get_calls", &self.get_calls())
            .field("set_calls", &self.set_calls())
            .finish()
    }
}
