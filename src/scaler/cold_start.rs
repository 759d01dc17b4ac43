//! The flight: everything that makes one function ready, run once however many requests wait.

use std::sync::Arc;

use tokio::time::{sleep_until, Instant};

use super::readiness::FlightState;
use super::{FunctionScaler, Outcome, Ready};
use crate::error::ErrorChain;
use crate::single_flight::FlightContext;
use crate::{ErrorKind, FunctionId, QueryError, ScaleError, ServiceQueryResponse};

type FlightCx = FlightContext<FunctionId, Outcome, FlightState>;

impl FunctionScaler {
    /// The flight's task. It has no deadline of its own: it runs while a request waits on it
    /// (each with its own deadline) or while a `set_replicas` it sent is under way.
    pub(super) async fn cold_start(self, function: FunctionId, context: FlightCx) -> Outcome {
        let started = Instant::now();
        let flight = Arc::clone(context.state());
        let outcome = tokio::select! {
            outcome = self.bring_up(&function, &context, &flight) => outcome,
            never = flight.deadlines().run() => match never {},
        };
        if let (Ok(ready), Some(activities)) = (&outcome, &self.inner.activities) {
            if ready.state.is_ready() {
                // Made ready just now: its requests are about to be forwarded, so its idle
                // period starts afresh.
                if let Some(activity) = activities.get(function.as_function_ref()) {
                    activity.touch(activities.now_ms());
                }
            }
        }
        if flight.is_cold() {
            match &outcome {
                Ok(ready) => crate::telemetry::cold_start(&function, ready.cold, started.elapsed()),
                Err(err) if err.kind() != ErrorKind::NotFound => {
                    crate::telemetry::cold_start(&function, false, started.elapsed())
                }
                Err(_) => {}
            }
        }
        match &outcome {
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
        outcome
    }

    async fn bring_up(
        &self,
        function: &FunctionId,
        context: &FlightCx,
        flight: &FlightState,
    ) -> Outcome {
        let inner = &*self.inner;
        let config = &inner.config;
        let query = &inner.query;
        let mut failures = 0;

        // The first answer tells a warm function whose cache entry expired (released at once,
        // never counted as held) from a cold one. A failed call counts as cold.
        let state = loop {
            match inner
                .calls
                .call("get_replicas", query.get_replicas(function))
                .await
            {
                Ok(state) => break state,
                Err(err) => {
                    self.failed(function, flight, err, &mut failures, None)?;
                    flight.mark_cold();
                    let retry_at = Instant::now() + inner.calls.backoff(failures);
                    if let Some(state) = self.pause(flight, retry_at).await {
                        return Ok(Ready::now(state, true));
                    }
                }
            }
        };
        failures = 0;
        self.seen(function, &state);
        // Scaled to zero by this scaler and not up since: a "ready" read is from before.
        let down = inner.is_down(function.as_function_ref());
        if state.is_ready() && !down {
            inner.cache.set(function, state.clone());
            return Ok(Ready::now(state, flight.is_cold()));
        }
        flight.mark_cold();
        // Only for a waiter that holds a place under the total limit: if every one is refused
        // they leave, and the flight is aborted here without having touched the platform.
        flight.some_admitted().await;
        if let Some(state) = flight.take_ready_push() {
            return Ok(Ready::now(state, true));
        }

        // Scale up unless the platform is scaling already, or this scaler asked and has not
        // seen its request take effect yet (a read right after a write may show desired 0).
        // A flight sends at most one successful `set_replicas`.
        let mut sent = false;
        let mut look_now = false;
        if (state.desired_replicas == 0 || down) && !self.recently_asked(function) {
            if let Some(state) = self.scale_up(function, context, flight, &state).await? {
                return Ok(Ready::now(state, true));
            }
            sent = true;
            // Look once without waiting: a fast platform should not cost a poll interval.
            look_now = true;
        }

        let waiting_since = Instant::now();
        // Wait: a poll per interval on a fixed schedule; a push for this function ends the
        // wait at once. Pushes for other functions never reach this flight.
        let mut next_poll = Instant::now() + config.get_poll_interval();
        loop {
            if !std::mem::take(&mut look_now) {
                if let Some(state) = self.pause(flight, next_poll).await {
                    return Ok(Ready::now(state, true));
                }
            } else if let Some(state) = flight.take_ready_push() {
                return Ok(Ready::now(state, true));
            }
            let polled = inner
                .calls
                .call("get_replicas", query.get_replicas(function))
                .await;
            next_poll = Instant::now() + config.get_poll_interval();
            if let Ok(state) = &polled {
                self.seen(function, state);
            }
            match polled {
                Ok(state) if state.is_ready() && !inner.is_down(function.as_function_ref()) => {
                    inner.cache.set(function, state.clone());
                    return Ok(Ready::now(state, true));
                }
                Ok(state) => {
                    failures = 0;
                    // This flight skipped its scale-up on the strength of an earlier request,
                    // and a whole readiness deadline later the platform still wants 0: that
                    // request was lost, not lagging. (Steady traffic can keep one flight going
                    // for longer than any deadline.)
                    if !sent
                        && state.desired_replicas == 0
                        && waiting_since.elapsed() >= config.get_readiness_deadline()
                    {
                        if let Some(state) =
                            self.scale_up(function, context, flight, &state).await?
                        {
                            return Ok(Ready::now(state, true));
                        }
                        sent = true;
                        look_now = true;
                    }
                }
                Err(err) => {
                    self.failed(function, flight, err, &mut failures, None)?;
                    next_poll = Instant::now() + inner.calls.backoff(failures);
                }
            }
        }
    }

    /// Sends `set_replicas(target)` until it succeeds, with backoff between failures; ends
    /// early with the state if a ready one is pushed meanwhile. Once sent, a call runs to its
    /// own end (success, error or call timeout) even if every waiter leaves meanwhile:
    /// abandoning requests must not abandon the platform mid-write.
    async fn scale_up(
        &self,
        function: &FunctionId,
        context: &FlightCx,
        flight: &FlightState,
        state: &ServiceQueryResponse,
    ) -> Result<Option<ServiceQueryResponse>, ScaleError> {
        let inner = &*self.inner;
        let target = state.scale_target();
        let mut failures = 0;
        loop {
            let Some(writing) = context.keep_alive() else {
                // Every waiter has left and the flight's abort is on its way: send nothing.
                return std::future::pending().await;
            };
            match inner
                .calls
                .call("set_replicas", inner.query.set_replicas(function, target))
                .await
            {
                Ok(()) => {
                    tracing::info!(function = %function, "function scaled 0 → {target}");
                    // Scaled up since any scale-down of ours: reads are trusted again.
                    if let Some(activities) = &inner.activities {
                        if let Some(activity) = activities.get(function.as_function_ref()) {
                            activity.clear_down();
                        }
                    }
                    // Until a read shows it, so that a later flight does not take the
                    // platform's read-after-write lag for a reason to scale again.
                    inner.asked.insert(function, ());
                    return Ok(None);
                }
                Err(err) => {
                    let attempts = failures + 1;
                    self.failed(function, flight, err, &mut failures, Some(attempts))?;
                }
            }
            drop(writing);
            let retry_at = Instant::now() + inner.calls.backoff(failures);
            if let Some(ready) = self.pause(flight, retry_at).await {
                // Pushed ready while retrying: someone else scaled it. Nothing left to write.
                return Ok(Some(ready));
            }
        }
    }

    /// Whether this scaler asked the platform to scale `function` up and has not yet seen a
    /// read that shows it.
    fn recently_asked(&self, function: &FunctionId) -> bool {
        self.inner.asked.get(function.as_function_ref()).is_some()
    }

    /// A read shows the platform wants replicas: any request of ours has taken effect.
    fn seen(&self, function: &FunctionId, state: &ServiceQueryResponse) {
        if state.desired_replicas > 0 {
            self.inner.asked.remove(function.as_function_ref());
        }
    }

    /// Waits until `until`, or less if a ready state is pushed for this function (returned) or
    /// a read is asked for (`None`, as when the time is up). The sleep is made once: pushes
    /// that are not ready neither end nor restart it.
    async fn pause(&self, flight: &FlightState, until: Instant) -> Option<ServiceQueryResponse> {
        let sleep = sleep_until(until);
        tokio::pin!(sleep);
        loop {
            let pushed = flight.wake().notified();
            tokio::pin!(pushed);
            pushed.as_mut().enable();
            if let Some(state) = flight.take_ready_push() {
                return Some(state);
            }
            if flight.take_look_now() {
                return None;
            }
            tokio::select! {
                _ = &mut sleep => return None,
                _ = pushed => {}
            }
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
        let inner = &*self.inner;
        if err.is_not_found() {
            inner.not_found.insert(function, ());
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
        if err.is_retryable() && *failures < inner.config.get_max_scale_attempts() {
            return Ok(());
        }
        Err(match scale_attempts {
            Some(attempts) => ScaleError::scale_failed(function.clone(), attempts, err),
            None => ScaleError::provider(function.clone(), err),
        })
    }
}
