//! The flight that brings a function up: `Cold` (or `ScaledDown`) → `ScalingUp` → `Warm`, run
//! once however many requests wait; also the refresh of a warm function whose cache entry
//! expired, and the stale-if-error fallback when that refresh fails.
//!
//! The flight's task answers a push at once, whatever it is waiting on: every wait (a pause,
//! a provider call, a place under the call cap, the first admitted waiter, a scale write) is
//! raced against the release. A scale write runs on a task of its own, so that it reaches its
//! own end even when the flight ends first (released, or abandoned by every waiter).

use std::future::Future;
use std::sync::Arc;

use tokio::time::{sleep_until, Instant};
use tracing::Instrument;

use super::{Lifecycle, Record, Trust};
use crate::scaler::flight::{FlightState, Outcome, Ready};
use crate::single_flight::{FlightContext, KeepAlive};
use crate::util::{far_instant, ErrorChain, Millis};
use crate::{ErrorKind, FunctionId, QueryError, ScaleError, ServiceQueryResponse};

pub(super) type FlightCx = FlightContext<FunctionId, Outcome, FlightState>;
pub(super) type FlightKeepAlive = KeepAlive<FunctionId, Outcome, FlightState>;

/// `work`'s output; or, if a push releases the flight first, the flight ends with that state.
macro_rules! or_released {
    ($flight:expr, $work:expr) => {
        match unless_released($flight, $work).await {
            Ok(out) => out,
            Err(ready) => return Ok(ready),
        }
    };
}

impl Lifecycle {
    /// The flight's task. It belongs to the scaler, not to its requests (it holds
    /// `keep_alive`): once begun it runs to its own outcome (ready, failure), or until no
    /// request waits and the deadline of the last one that joined has passed, whatever its
    /// requests do meanwhile (a waiting page shown, a disconnect, an outer timeout). Each
    /// waiter's deadline is swept here.
    pub(super) async fn cold_start(
        self: Arc<Self>,
        function: FunctionId,
        context: FlightCx,
        keep_alive: FlightKeepAlive,
    ) -> Outcome {
        let started = Instant::now();
        let flight = Arc::clone(context.state());
        if self.records.get(function.as_function_ref()).is_some() {
            flight.confirmed(&function);
        }
        let outcome = tokio::select! {
            outcome = self.bring_up(&function, &flight) => outcome,
            () = self.abandoned(&context, &flight) => {
                tracing::debug!(function = %function, "cold start ended: no request waits for it");
                // Not ready: a request that joins in the moment before the flight's entry is
                // gone is sent to a fresh flight, as after a scale-down.
                return Ok(Ready::now(ServiceQueryResponse::new(0, 0), false));
            }
            never = flight.deadlines().run() => match never {},
        };
        drop(keep_alive);
        // However it ended, a push that released it wins (it is never later than the end).
        let outcome = match (outcome, flight.released()) {
            (Err(_), Some(ready)) => Ok(ready.clone()),
            (outcome, _) => outcome,
        };
        self.report(&function, &flight, started, &outcome);
        outcome
    }

    /// Resolves once nobody is left to serve: no request waits, and either none was ever
    /// admitted (a refresh whose requests left, or a cold start whose every request was
    /// refused: it must not touch the platform) or the deadline of the last one that joined
    /// has passed.
    async fn abandoned(&self, context: &FlightCx, flight: &FlightState) {
        loop {
            let left = context.caller_left();
            tokio::pin!(left);
            left.as_mut().enable();
            let now = Instant::now();
            let latest = flight.deadlines().latest();
            let served_all = !flight.was_admitted() || latest.is_none_or(|at| now >= at);
            if served_all && context.callers() == 0 {
                return;
            }
            match latest.filter(|&at| at > now) {
                // Looked at again when the last deadline passes, or when a caller leaves.
                Some(at) => {
                    tokio::select! {
                        () = sleep_until(at) => {}
                        () = left => {}
                    }
                }
                None => left.await,
            }
        }
    }

    /// Activity, metrics and the log line of a flight that ended.
    fn report(
        &self,
        function: &FunctionId,
        flight: &FlightState,
        started: Instant,
        outcome: &Outcome,
    ) {
        let record = self.records.get(function.as_function_ref());
        if let (Ok(ready), Some(record)) = (outcome, &record) {
            if ready.state.is_ready() {
                // Made ready just now: its requests are about to be forwarded, so its idle
                // period starts afresh.
                record.touch();
            }
        }
        // Only a function the provider confirmed becomes a label.
        if flight.is_cold() && record.is_some() {
            match outcome {
                Ok(ready) => crate::telemetry::cold_start(function, ready.cold, started.elapsed()),
                Err(err) if err.kind() != ErrorKind::NotFound => {
                    crate::telemetry::cold_start(function, false, started.elapsed())
                }
                Err(_) => {}
            }
        }
        match outcome {
            Ok(ready) if ready.cold => {
                let waited_ms = started.elapsed().as_millis() as u64;
                tracing::info!(
                    function = %function,
                    waited_ms,
                    available = ready.state.available_replicas,
                    "function ready after {waited_ms} ms"
                );
            }
            Ok(_) => tracing::debug!(function = %function, "function is warm"),
            Err(err) if err.kind() == ErrorKind::NotFound => {
                tracing::debug!(function = %function, "function not found");
            }
            Err(err) => {
                tracing::warn!(function = %function, error = %ErrorChain(err), "cold start failed");
            }
        }
    }

    async fn bring_up(self: &Arc<Self>, function: &FunctionId, flight: &FlightState) -> Outcome {
        let config = &self.config;
        let mut failures = 0;

        // The first answer tells a warm function whose cache entry expired (released at once,
        // never counted as held) from a cold one. A failed call counts as cold, unless the
        // function was known warm: then its requests are served from that (stale-if-error).
        let state = loop {
            let read = self
                .calls
                .call("get_replicas", self.query.get_replicas(function));
            match or_released!(flight, read) {
                Ok(state) => break state,
                Err(err) => {
                    if err.is_retryable() {
                        if let Some(ready) = self.stale_after(function, &err) {
                            return Ok(ready);
                        }
                    }
                    self.failed(function, flight, err, &mut failures, None)?;
                    flight.mark_cold();
                    let retry_at = Instant::now() + self.calls.backoff().pause(failures);
                    if let Some(ready) = self.pause(flight, retry_at).await {
                        return Ok(ready);
                    }
                }
            }
        };
        failures = 0;
        let (record, trust) = self.confirm(function, &state, flight);
        if trust == Trust::Ready {
            return Ok(Ready::now(state, flight.is_cold()));
        }
        if self.is_draining() && !flight.has_waiter_from_before_drain() {
            // A drain refuses cold starts that begin after it (warm functions were served
            // above); one that a request waited for before the drain goes on.
            return Err(ScaleError::shutting_down(
                function.clone(),
                config.retry_after(),
            ));
        }
        flight.mark_starting();
        // Only for a waiter that holds a place under the total limit: if every one is refused
        // they leave, and the flight is aborted here without having touched the platform.
        or_released!(flight, flight.some_admitted());

        // Scale up unless the platform is scaling already, or this scaler asked and has not
        // seen its request take effect yet (a read right after a write may show desired 0).
        let deadline = config.readiness_deadline();
        // When this flight last wrote successfully: it writes again at most once per
        // readiness deadline.
        let mut written_at: Option<Instant> = None;
        let mut look_now = false;
        if (state.desired_replicas == 0 || !record.trusts_ready())
            && !record.recently_asked(Instant::now(), deadline)
        {
            if let Some(ready) = self.scale_up(function, flight, &record, &state).await? {
                return Ok(ready);
            }
            written_at = Some(Instant::now());
            // Look once without waiting: a fast platform should not cost a poll interval.
            look_now = true;
        }

        // Wait: a poll per interval on a fixed schedule; a push for this function ends the
        // wait at once. Pushes for other functions never reach this flight.
        let mut next_poll = Instant::now() + config.poll_interval();
        loop {
            if !std::mem::take(&mut look_now) {
                if let Some(ready) = self.pause(flight, next_poll).await {
                    return Ok(ready);
                }
            }
            let read = self
                .calls
                .call("get_replicas", self.query.get_replicas(function));
            let polled = or_released!(flight, read);
            next_poll = Instant::now() + config.poll_interval();
            match polled {
                Ok(state) => {
                    failures = 0;
                    let (record, trust) = self.confirm(function, &state, flight);
                    if trust == Trust::Ready {
                        return Ok(Ready::now(state, true));
                    }
                    // The platform wants 0 and no scale-up is pending: the one this flight
                    // relied on failed (another flight's write), or a whole readiness deadline
                    // has passed since it was sent and it never showed (lost, or undone by an
                    // operator or a GitOps sync). Sent again, at most once per deadline:
                    // steady traffic can keep one flight going for longer than any deadline.
                    let now = Instant::now();
                    // The last write that succeeded, this flight's or another's.
                    let last = written_at.max(record.last_written());
                    if state.desired_replicas == 0
                        && !record.recently_asked(now, deadline)
                        && last.is_none_or(|at| now >= far_instant(at, deadline))
                    {
                        if written_at.is_some() {
                            tracing::info!(
                                function = %function,
                                "the scale-up of {function} did not take or was undone: sending it again"
                            );
                        }
                        if let Some(ready) =
                            self.scale_up(function, flight, &record, &state).await?
                        {
                            return Ok(ready);
                        }
                        written_at = Some(Instant::now());
                        look_now = true;
                    }
                }
                Err(err) => {
                    self.failed(function, flight, err, &mut failures, None)?;
                    next_poll = Instant::now() + self.calls.backoff().pause(failures);
                }
            }
        }
    }

    /// Sends `set_replicas(target)` until it succeeds, with backoff between failures; ends
    /// early with the state if a ready one is pushed meanwhile. Each write runs on a task of
    /// its own and reaches its own end (success, error or call timeout) even if the flight
    /// ends first: abandoning requests must not abandon the platform mid-write. The record
    /// says `ScalingUp` from the moment a write is sent, so that a flight started meanwhile
    /// does not write again.
    async fn scale_up(
        self: &Arc<Self>,
        function: &FunctionId,
        flight: &FlightState,
        record: &Arc<Record>,
        state: &ServiceQueryResponse,
    ) -> Result<Option<Ready>, ScaleError> {
        let target = state.scale_target();
        let mut failures = 0;
        loop {
            let write = self.spawn_write(function, record, target);
            let written = match unless_released(flight, write).await {
                Ok(written) => written,
                // Pushed ready while writing: someone else scaled it; the write goes on.
                Err(ready) => return Ok(Some(ready)),
            };
            match written {
                Ok(Ok(())) => {
                    tracing::info!(function = %function, "function scaled 0 → {target}");
                    return Ok(None);
                }
                Ok(Err(err)) => {
                    let attempts = failures + 1;
                    self.failed(function, flight, err, &mut failures, Some(attempts))?;
                }
                Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                Err(_) => {
                    return Err(ScaleError::interrupted(
                        function.clone(),
                        self.config.retry_after(),
                    ))
                }
            }
            let retry_at = Instant::now() + self.calls.backoff().pause(failures);
            if let Some(ready) = self.pause(flight, retry_at).await {
                // Pushed ready while retrying: someone else scaled it. Nothing left to write.
                return Ok(Some(ready));
            }
        }
    }

    /// One scale write, on a task of its own: `ScalingUp` from now, back to where it was if
    /// the write fails.
    fn spawn_write(
        self: &Arc<Self>,
        function: &FunctionId,
        record: &Arc<Record>,
        target: u64,
    ) -> tokio::task::JoinHandle<Result<(), QueryError>> {
        let before = record.scale_up_sent(Instant::now());
        let (lifecycle, function, record) =
            (Arc::clone(self), function.clone(), Arc::clone(record));
        // In the flight's span: the write is part of its cold start.
        tokio::spawn(
            async move {
                // A failed, panicking or cancelled write puts the phase back.
                let mut sending = Sending {
                    record,
                    before: Some(before),
                };
                let written = lifecycle
                    .calls
                    .call(
                        "set_replicas",
                        lifecycle.query.set_replicas(&function, target),
                    )
                    .await;
                if written.is_ok() {
                    sending.before = None;
                    sending.record.scale_up_written(Instant::now());
                    // Other gateways learn at once that this one is bringing it up: none of
                    // them scales it down meanwhile.
                    lifecycle.report_activity_if_due(&sending.record);
                }
                written
            }
            .instrument(tracing::Span::current()),
        )
    }

    /// Waits until `until`, or less if a push released the flight (returned) or a read is
    /// asked for (`None`, as when the time is up). The sleep is made once.
    async fn pause(&self, flight: &FlightState, until: Instant) -> Option<Ready> {
        let sleep = sleep_until(until);
        tokio::pin!(sleep);
        loop {
            let woken = flight.wake().notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(ready) = flight.released() {
                return Some(ready.clone());
            }
            if flight.take_look_now() {
                return None;
            }
            tokio::select! {
                _ = &mut sleep => return None,
                _ = woken => {}
            }
        }
    }

    /// A refresh of `function` failed with `err` (retryable): its last known state, if the
    /// function was known warm recently enough (stale-if-error). Logged once per outage.
    fn stale_after(&self, function: &FunctionId, err: &QueryError) -> Option<Ready> {
        let record = self.records.get(function.as_function_ref())?;
        let window = self.config.stale_if_error();
        match record.refresh_failed(Instant::now(), window, self.calls.backoff()) {
            super::record::Stale::Serve { state, began } => {
                if began {
                    tracing::warn!(
                        function = %function,
                        error = %ErrorChain(err),
                        "the provider is failing: serving {function} from its last known state \
                         (for up to {} after it was last confirmed)",
                        Millis(window)
                    );
                }
                Some(Ready::stale(state))
            }
            super::record::Stale::Expired { first } => {
                if first {
                    tracing::warn!(
                        function = %function,
                        error = %ErrorChain(err),
                        "the last known state of {function} is older than {}: its requests \
                         wait for the provider again",
                        Millis(window)
                    );
                }
                None
            }
            super::record::Stale::Unknown => None,
        }
    }

    /// Counts a failed call; says whether the flight ends with it (not found, permanent, or
    /// too many failures in a row).
    fn failed(
        &self,
        function: &FunctionId,
        flight: &FlightState,
        err: QueryError,
        failures: &mut u32,
        scale_attempts: Option<u32>,
    ) -> Result<(), ScaleError> {
        if err.is_not_found() {
            self.gone(function);
            return Err(ScaleError::not_found(function.clone()));
        }
        *failures += 1;
        tracing::debug!(
            function = %function,
            failures = *failures,
            error = %ErrorChain(&err),
            "provider call failed"
        );
        flight.set_last_error(err.clone());
        if err.is_retryable() && *failures < self.config.max_scale_attempts() {
            return Ok(());
        }
        Err(match scale_attempts {
            Some(attempts) => ScaleError::scale_failed(function.clone(), attempts, err),
            None => ScaleError::provider(function.clone(), err),
        })
    }
}

/// A scale write under way: unless it succeeded, the record's phase goes back when it ends.
struct Sending {
    record: Arc<Record>,
    before: Option<super::Phase>,
}

impl Drop for Sending {
    fn drop(&mut self) {
        if let Some(before) = self.before {
            self.record.scale_up_failed(before);
        }
    }
}

/// `work`, unless a push releases the flight first (then the released state; `work` is
/// dropped, which for a read or a wait is fine, and a write runs on a task of its own).
async fn unless_released<T>(
    flight: &FlightState,
    work: impl Future<Output = T>,
) -> Result<T, Ready> {
    tokio::pin!(work);
    loop {
        let woken = flight.wake().notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if let Some(ready) = flight.released() {
            return Err(ready.clone());
        }
        tokio::select! {
            out = &mut work => return Ok(out),
            _ = woken => {}
        }
    }
}
