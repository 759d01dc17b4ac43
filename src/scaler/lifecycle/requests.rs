//! What a request does: the warm path, or a wait on the function's flight; and, with scale
//! to zero on, its place among the function's requests in flight.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::time::Instant;
use tracing::Instrument;

use super::{ActivityGuard, Lifecycle, Record, RecordCache};
use crate::function::FunctionRef;
use crate::scaler::place::HoldPlace;
use crate::scaler::waiter::{Waited, Waiter};
use crate::single_flight::FlightError;
use crate::util::ErrorChain;
use crate::{FunctionId, ScaleError, ServiceQueryResponse};

/// What the warm path found.
pub(crate) enum Warm {
    /// Not warm (or being scaled down): take the cold path.
    No,
    /// Warm; scale to zero is off, so nothing is counted.
    Untracked,
    /// Warm, and counted in flight until the guard drops.
    Tracked(ActivityGuard),
}

/// What a request that took the cold path is handed once its function is ready.
#[derive(Debug)]
pub(crate) struct Released {
    pub(crate) state: ServiceQueryResponse,
    /// When the request arrived, if it waited for a cold start.
    pub(crate) cold_since: Option<Instant>,
    /// With scale to zero on, the request's place among the function's requests in flight.
    pub(crate) guard: Option<ActivityGuard>,
    /// Its place under the total hold limits, if it waited for a cold start: kept until the
    /// request is forwarded (a paced release may hold it a while longer).
    pub(crate) place: Option<HoldPlace>,
}

/// How [`Lifecycle::track`] admits a request the scaler found ready.
enum Tracked {
    Untracked,
    Guard(ActivityGuard),
    /// Being scaled down: wait for a fresh scale-up.
    ScalingDown,
}

impl Lifecycle {
    /// The warm path: a fresh, ready cache entry; with scale to zero on, the request is also
    /// counted in flight (unless the function is being scaled down).
    #[inline]
    pub(crate) fn warm(self: &Arc<Self>, function: FunctionRef<'_>) -> Warm {
        if let Some(cache) = &self.own_cache {
            return self.warm_in_records(cache, function);
        }
        if !self.tracking {
            return if self.cache.is_ready(function) {
                Warm::Untracked
            } else {
                Warm::No
            };
        }
        self.warm_tracked(function)
    }

    /// The warm path with the default cache: the function's cache entry is its record, so one
    /// look-up answers both whether it is warm and (scale to zero on) its place in flight.
    #[inline]
    fn warm_in_records(self: &Arc<Self>, cache: &RecordCache, function: FunctionRef<'_>) -> Warm {
        if !self.tracking {
            return if cache.ready(function) {
                Warm::Untracked
            } else {
                Warm::No
            };
        }
        self.warm_tracked_in_records(function)
    }

    /// Every tracked warm request with the default cache passes here (not inlined, so that
    /// the untracked warm path stays small).
    #[inline(never)]
    fn warm_tracked_in_records(self: &Arc<Self>, function: FunctionRef<'_>) -> Warm {
        let entered = self.records.with(function, |record| {
            record.cached_ready().then(|| record.enter())
        });
        match entered {
            Some(Some(entered)) => match self.entered(entered, function) {
                Some(guard) => Warm::Tracked(guard),
                None => Warm::No,
            },
            _ => Warm::No,
        }
    }

    /// Every tracked warm request passes here: lookups and atomics only. Not inlined, so that
    /// the untracked warm path stays small.
    #[inline(never)]
    fn warm_tracked(self: &Arc<Self>, function: FunctionRef<'_>) -> Warm {
        if !self.cache.is_ready(function) {
            return Warm::No;
        }
        // Entered under the map's read lock (atomics only): the guard's is the one reference
        // to the record taken.
        let entered = match self.records.with(function, Record::enter) {
            Some(entered) => entered,
            // Warm in the cache but forgotten here: the provider reported it, so it exists.
            None => match function.to_function_id() {
                Ok(id) => self.record(&id).enter(),
                Err(_) => return Warm::No,
            },
        };
        match self.entered(entered, function) {
            Some(guard) => Warm::Tracked(guard),
            None => Warm::No,
        }
    }

    /// A request for a function the scaler found ready enters (scale to zero on): counted in
    /// flight; the idle reaper is started (again, if its runtime is gone) and activity is
    /// recorded in the shared store when due. `None` while the function is being scaled down:
    /// the "ready" the request saw is from before, and is forgotten here.
    pub(crate) fn enter(self: &Arc<Self>, record: &Arc<Record>) -> Option<ActivityGuard> {
        self.entered(record.enter(), record.id().as_function_ref())
    }

    /// What follows a request's entry into `function`'s record (`None`: refused).
    #[inline]
    fn entered(
        self: &Arc<Self>,
        guard: Option<ActivityGuard>,
        function: FunctionRef<'_>,
    ) -> Option<ActivityGuard> {
        let Some(guard) = guard else {
            self.cache.invalidate(function);
            return None;
        };
        self.reaper.ensure_running(self);
        self.report_activity_if_due(guard.record());
        Some(guard)
    }

    /// Records in the shared store (if any) that this gateway serves `record`'s function,
    /// when a record is due: at most once per quarter of its idle period, on each request,
    /// while requests are in flight (the reaper asks), and when a scale-up is sent.
    #[inline]
    pub(crate) fn report_activity_if_due(self: &Arc<Self>, record: &Arc<Record>) {
        let Some(store) = &self.activity_store else {
            return;
        };
        if let Some(period) = record.policy().period(self.config.idle_period()) {
            let now = record.now_ms();
            if record.report_due(now)
                && tokio::runtime::Handle::try_current().is_ok()
                && record.claim_report(now)
            {
                self.report_activity(Arc::clone(store), Arc::clone(record), period / 4);
            }
        }
    }

    /// Records in the shared store that this gateway serves the function; the next record is
    /// due `every` later, or after a backoff if this one fails, panics or never finishes.
    fn report_activity(
        self: &Arc<Self>,
        store: Arc<dyn crate::activity::ActivityStore>,
        record: Arc<Record>,
        every: Duration,
    ) {
        let lifecycle = Arc::clone(self);
        let span = tracing::info_span!("report_activity", function = %record.id());
        tokio::spawn(
            async move {
                let mut reporting = Reporting {
                    record,
                    ok: false,
                    every,
                    first: lifecycle.config.poll_interval(),
                };
                let id = reporting.record.id().clone();
                let call = lifecycle.calls.call("record_activity", store.record(&id));
                match AssertUnwindSafe(call).catch_unwind().await {
                    Ok(Ok(())) => reporting.ok = true,
                    Ok(Err(err)) => {
                        tracing::debug!(error = %ErrorChain(&err), "reporting activity failed");
                    }
                    Err(_) => tracing::warn!("the activity store panicked while reporting"),
                }
            }
            .instrument(span),
        );
    }

    /// A released request's place among `function`'s requests in flight.
    #[inline]
    fn track(self: &Arc<Self>, function: &FunctionId) -> Tracked {
        if !self.tracking {
            return Tracked::Untracked;
        }
        let record = self.record(function);
        match self.enter(&record) {
            Some(guard) => Tracked::Guard(guard),
            None => Tracked::ScalingDown,
        }
    }

    /// Makes `function` ready, or says why it cannot be, within the readiness deadline counted
    /// from this call: the warm path, a "not found" remembered, the last known state during
    /// an outage, or a wait on the function's flight.
    pub(crate) async fn ready(
        self: &Arc<Self>,
        function: &FunctionId,
        bytes: usize,
    ) -> Result<Released, ScaleError> {
        let config = &self.config;
        // A block, so that none of this is kept in the future's state while it waits.
        {
            let key = function.as_function_ref();
            let known = if let Some(state) = self.cache.get(key).filter(|s| s.is_ready()) {
                Some(state)
            } else if self.is_gone(key) {
                return Err(ScaleError::not_found(function.clone()));
            } else {
                self.serve_stale(function)
            };
            if let Some(state) = known {
                let released = |guard| Released {
                    state,
                    cold_since: None,
                    guard,
                    place: None,
                };
                match self.track(function) {
                    Tracked::Untracked => return Ok(released(None)),
                    Tracked::Guard(guard) => return Ok(released(Some(guard))),
                    Tracked::ScalingDown => {}
                }
            }
        }
        let arrival = Instant::now();
        let arrived_draining = self.is_draining();
        let mut healed = false;
        let mut scaled_down_meanwhile = 0;
        loop {
            let joined = {
                // In a block: moved into the flight, they must not keep room in this future.
                let lifecycle = Arc::clone(self);
                let id = function.clone();
                self.flights.try_join_owned(
                    function.clone(),
                    config.max_held_per_function(),
                    move |context, keep_alive| {
                        let span = context.state().span(&id).clone();
                        async move { lifecycle.cold_start(id, context, keep_alive).await }
                            .instrument(span)
                    },
                )
            };
            let mut flight = joined.map_err(|_| {
                ScaleError::overloaded(
                    function.clone(),
                    "per-function",
                    config.max_held_per_function(),
                    config.retry_after(),
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
            let (waited, place) = {
                // Polled in place (no nested future): this state lives in every held request.
                let mut waiter = Waiter::new(&self.holding, &arrival, bytes, arrived_draining);
                let waited =
                    std::future::poll_fn(|cx| waiter.poll(function, &mut flight, cx)).await;
                (waited, waiter.hand_on_place())
            };
            match waited {
                Waited::TimedOut(last_error) => {
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
                    if ready.stale {
                        crate::telemetry::stale_serve(function);
                    }
                    let cold_since = ready.cold.then_some(arrival);
                    let released = |guard| Released {
                        state: ready.state,
                        cold_since,
                        guard,
                        place,
                    };
                    match self.track(function) {
                        Tracked::Untracked => return Ok(released(None)),
                        Tracked::Guard(guard) => return Ok(released(Some(guard))),
                        // A scale-down began since the release (only possible with an idle
                        // period shorter than a cold start): wait for a fresh scale-up, a few
                        // times.
                        Tracked::ScalingDown if scaled_down_meanwhile < 3 => {
                            scaled_down_meanwhile += 1;
                        }
                        Tracked::ScalingDown => {
                            return Err(ScaleError::interrupted(
                                function.clone(),
                                config.retry_after(),
                            ))
                        }
                    }
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
                        config.retry_after(),
                    ))
                }
            }
        }
    }

    /// The last known state of `function`, if it is served stale now (an outage under way,
    /// its next refresh not due yet).
    fn serve_stale(&self, function: &FunctionId) -> Option<ServiceQueryResponse> {
        let window = self.config.stale_if_error();
        if window.is_zero() {
            return None;
        }
        let state = self
            .records
            .get(function.as_function_ref())?
            .stale(Instant::now(), window)?;
        crate::telemetry::stale_serve(function);
        Some(state)
    }
}

/// A claimed activity record: however its task ends (done, failed, panicked, dropped with its
/// runtime), the next one is scheduled.
struct Reporting {
    record: Arc<Record>,
    ok: bool,
    every: Duration,
    first: Duration,
}

impl Drop for Reporting {
    fn drop(&mut self) {
        self.record.reported(self.ok, self.every, self.first);
    }
}
