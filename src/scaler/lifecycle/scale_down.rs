//! Scale to zero: the idle reaper, and the move `Warm` → `ScalingDown` → `ScaledDown` it
//! starts as a flight of the function, so that requests arriving meanwhile wait for it (each
//! with its own deadline) and then for a fresh scale-up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument;

use super::cold_start::{FlightCx, FlightKeepAlive};
use super::{Lifecycle, Record};
use crate::scaler::flight::{Outcome, Ready};
use crate::util::{lock, Backoff, ErrorChain, Millis};
use crate::{FunctionId, ServiceQueryResponse};

/// The idle reaper's task: started by the first tracked request made inside a runtime (so a
/// scaler can be built outside one), started again on the current runtime when the one that
/// ran it is gone, and stopped with the scaler.
#[derive(Default)]
pub(super) struct Reaper {
    running: AtomicBool,
    task: Mutex<Option<AbortHandle>>,
}

impl Reaper {
    /// Starts the reaper if it is not running. One atomic load when it is.
    #[inline]
    pub(super) fn ensure_running(&self, lifecycle: &Arc<Lifecycle>) {
        if self.running.load(Ordering::Acquire) {
            return;
        }
        self.start(lifecycle);
    }

    #[cold]
    fn start(&self, lifecycle: &Arc<Lifecycle>) {
        if tokio::runtime::Handle::try_current().is_err()
            || self.running.swap(true, Ordering::AcqRel)
        {
            return;
        }
        // Spawned with no lock held: a runtime that is shutting down drops the task at once,
        // and its guard clears `running` as it goes.
        let task = spawn_reaper(lifecycle);
        if let Some(old) = lock(&self.task).replace(task) {
            old.abort();
        }
    }

    pub(super) fn stop(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

/// Clears `running` when the reaper's task ends, however it ends (its runtime shut down).
struct Running(Weak<Lifecycle>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(lifecycle) = self.0.upgrade() {
            lifecycle.reaper.running.store(false, Ordering::Release);
        }
    }
}

/// Looks for idle functions every `idle_check_interval` for as long as the scaler lives.
fn spawn_reaper(lifecycle: &Arc<Lifecycle>) -> AbortHandle {
    let weak = Arc::downgrade(lifecycle);
    let every = lifecycle.config.idle_check_interval();
    let running = Running(weak.clone());
    tokio::spawn(
        async move {
            let _running = running;
            let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(lifecycle) = weak.upgrade() else {
                    return;
                };
                lifecycle.reap();
            }
        }
        .instrument(tracing::info_span!("idle_reaper")),
    )
    .abort_handle()
}

impl Lifecycle {
    /// One look: forgets records nothing needs, and starts a scale-down for each function due.
    pub(super) fn reap(self: &Arc<Self>) {
        let default = self.config.idle_period();
        self.records.forget(|record| {
            record.forgettable(record.now_ms(), default)
                && self.flights.state(record.id()).is_none()
        });
        for record in self.records.all() {
            // A stream or a long poll keeps its function up on every gateway: its activity is
            // recorded while it lasts, not only when it starts.
            if record.in_flight() > 0 {
                self.report_activity_if_due(&record);
                continue;
            }
            if let Some(idle) = record.due(record.now_ms(), default) {
                // Not due again while this one is considered (the store's answer, bounded by
                // the call timeout, sets what comes next).
                record.defer_scale_down(self.config.call_timeout());
                let lifecycle = Arc::clone(self);
                let span = tracing::info_span!("scale_to_zero", function = %record.id());
                tokio::spawn(lifecycle.consider_scale_down(record, idle).instrument(span));
            }
        }
    }

    /// How many records are due for scale to zero now, without scaling anything down.
    pub(crate) fn due_now(&self) -> usize {
        let default = self.config.idle_period();
        self.records
            .all()
            .iter()
            .filter(|record| record.due(record.now_ms(), default).is_some())
            .count()
    }

    /// Asks the shared activity store first (another gateway may be serving the function): a
    /// veto holds no request. Then the scale-down runs as the function's flight, unless one is
    /// under way.
    async fn consider_scale_down(self: Arc<Self>, record: Arc<Record>, idle: Duration) {
        let function = record.id().clone();
        let every = self.config.idle_check_interval();
        if let Some(store) = &self.activity_store {
            match self.calls.call("idle_for", store.idle_for(&function)).await {
                Ok(Some(idle_for)) if idle_for < idle => {
                    tracing::debug!(
                        function = %function,
                        "not scaled to zero: another gateway served it {} ago",
                        Millis(idle_for)
                    );
                    record.defer_scale_down(idle - idle_for);
                    crate::telemetry::scale_down(&function, "skipped");
                    return;
                }
                Ok(_) => {}
                Err(err) if err.is_not_found() => {
                    self.gone(&function);
                    return;
                }
                Err(err) => {
                    let failures = record.scale_down_abandoned(every, true);
                    tracing::warn!(function = %function, failures, error = %ErrorChain(&err), "reading shared activity failed; not scaled to zero");
                    crate::telemetry::scale_down(&function, "failed");
                    return;
                }
            }
        }
        let lifecycle = Arc::clone(&self);
        self.flights
            .try_start_detached(function.clone(), move |context, keep_alive| {
                lifecycle.scale_down(function, record, idle, context, keep_alive)
            });
    }

    /// The scale-down flight. Kept alive by `keep_alive` until the platform has answered;
    /// then it lives only for requests that joined meanwhile, and serves them as a cold start.
    async fn scale_down(
        self: Arc<Self>,
        function: FunctionId,
        record: Arc<Record>,
        idle: Duration,
        context: FlightCx,
        keep_alive: FlightKeepAlive,
    ) -> Outcome {
        let flight = Arc::clone(context.state());
        flight.confirmed(&function);
        tokio::select! {
            () = self.scale_to_zero(&function, &record, idle) => {}
            never = flight.deadlines().run() => match never {},
        }
        if context.callers() > 0 {
            // Requests arrived meanwhile: a fresh scale-up if the function went to zero, else
            // a refresh that finds it warm. It belongs to the scaler as any cold start does.
            return self.cold_start(function, context, keep_alive).await;
        }
        drop(keep_alive);
        // Not ready: a request that joins just now is sent to a fresh flight.
        Ok(Ready::now(ServiceQueryResponse::new(0, 0), false))
    }

    /// `Warm` → `ScalingDown` (unless a request is in flight) → `ScaledDown`, or back to
    /// `Warm` if the platform refuses or the call fails.
    async fn scale_to_zero(&self, function: &FunctionId, record: &Record, idle: Duration) {
        // From here requests take the cold path and join this flight.
        if !record.begin_scale_down() {
            return;
        }
        // Cancelled mid-call (its runtime shut down), nobody knows whether the platform
        // scaled it down: it counts as scaled down, so "ready" is not trusted until the next
        // scale-up (at worst one write that changes nothing).
        let mut interrupted = Interrupted(Some(record));
        self.cache.invalidate(function.as_function_ref());
        let every = self.config.idle_check_interval();
        match self
            .calls
            .call("scale_to_zero", self.query.scale_to_zero(function, idle))
            .await
        {
            Ok(true) => {
                tracing::info!(
                    function = %function,
                    "function scaled to zero after {} idle",
                    Millis(idle)
                );
                record.scaled_down();
                crate::telemetry::scale_down(function, "scaled");
                // A push that raced the eviction before the call.
                self.cache.invalidate(function.as_function_ref());
            }
            Ok(false) => {
                tracing::debug!(function = %function, "not scaled to zero: the platform saw recent activity or a scale-up");
                crate::telemetry::scale_down(function, "skipped");
                record.scale_down_abandoned(every, false);
            }
            Err(err) if err.is_not_found() => {
                crate::telemetry::scale_down(function, "failed");
                self.gone(function);
            }
            Err(err) => {
                let failures = record.scale_down_failures() + 1;
                // Doubling from the check interval, at most 32 of them (and the idle period).
                let pause = Backoff::step(every, every.saturating_mul(32).min(idle), failures);
                if err.is_timeout() {
                    // The write may have reached the platform: "ready" is not known any more
                    // until a read or a push says so again (nothing is served stale from it).
                    record.scale_down_uncertain(pause);
                } else {
                    record.scale_down_abandoned(pause, true);
                }
                crate::telemetry::scale_down(function, "failed");
                tracing::warn!(
                    function = %function,
                    failures,
                    error = %ErrorChain(&err),
                    "scale to zero failed; the function keeps serving"
                );
            }
        }
        interrupted.0 = None;
    }
}

/// A scale-down whose call was cancelled: see [`Lifecycle::scale_to_zero`].
struct Interrupted<'a>(Option<&'a Record>);

impl Drop for Interrupted<'_> {
    fn drop(&mut self) {
        if let Some(record) = self.0 {
            record.scale_down_interrupted();
        }
    }
}
