//! Scale to zero: the idle reaper, and the scale-down it starts as a flight of the function,
//! so that requests arriving meanwhile wait for it and then for a fresh scale-up.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument;

use super::{FunctionScaler, Inner, Outcome, Ready};
use crate::activity::Activity;
use crate::error::ErrorChain;
use crate::single_flight::{FlightContext, KeepAlive};
use crate::{FunctionId, ServiceQueryResponse};

type FlightCx = FlightContext<FunctionId, Outcome, super::FlightState>;
type FlightKeepAlive = KeepAlive<FunctionId, Outcome, super::FlightState>;

/// Looks for idle functions every `idle_check_interval` for as long as the scaler lives.
pub(super) fn spawn_reaper(inner: &Arc<Inner>) -> AbortHandle {
    let scaler: Weak<Inner> = Arc::downgrade(inner);
    let every = inner.config.get_idle_check_interval();
    tokio::spawn(
        async move {
            let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(inner) = scaler.upgrade() else {
                    return;
                };
                FunctionScaler { inner }.reap();
            }
        }
        .instrument(tracing::info_span!("idle_reaper")),
    )
    .abort_handle()
}

impl FunctionScaler {
    /// Starts a scale-down for each function that is due, unless a flight of it is under way.
    fn reap(&self) {
        let inner = &*self.inner;
        let Some(activities) = &inner.activities else {
            return;
        };
        let default = inner.config.get_idle_period();
        for (function, idle) in activities.due(default, default) {
            let this = self.clone();
            let id = function.clone();
            inner
                .flights
                .try_start_detached(function, move |context, keep_alive| {
                    let span = tracing::info_span!("scale_to_zero", function = %id);
                    this.scale_down(id, idle, context, keep_alive)
                        .instrument(span)
                });
        }
    }

    /// The scale-down flight. Kept alive by `keep_alive` until the platform has answered;
    /// then it lives only for requests that joined meanwhile, and serves them as a cold start.
    async fn scale_down(
        self,
        function: FunctionId,
        idle: Duration,
        context: FlightCx,
        keep_alive: FlightKeepAlive,
    ) -> Outcome {
        let inner = &*self.inner;
        let activities = inner.activities.as_ref().expect("scale to zero is on");
        let activity = activities.get_or_insert(function.as_function_ref());
        // From here requests take the cold path and join this flight, unless one is in
        // flight already (then nothing is scaled down).
        if activity.begin_scale_down() {
            inner.cache.invalidate(function.as_function_ref());
            if !self.scale_to_zero(&function, &activity, idle).await {
                activity.clear_down();
            }
        }
        drop(keep_alive);
        if context.callers() > 0 {
            // Requests arrived meanwhile: a fresh scale-up if the function went to zero, else
            // a refresh that finds it warm.
            return self.cold_start(function, context).await;
        }
        // Not ready: a request that joins just now is sent to a fresh flight.
        Ok(Ready::now(ServiceQueryResponse::new(0, 0), false))
    }

    /// Asks the platform to scale `function` to zero; whether it did.
    async fn scale_to_zero(
        &self,
        function: &FunctionId,
        activity: &Activity,
        idle: Duration,
    ) -> bool {
        let inner = &*self.inner;
        let activities = inner.activities.as_ref().expect("scale to zero is on");
        let every = inner.config.get_idle_check_interval();
        // No new attempt for `pause`; returns the attempts that did not scale down in a row.
        let retry_after = |pause: Duration| {
            activity.scale_down_failed(activities.now_ms() + pause.as_millis() as u64)
        };
        // Another gateway may be serving it.
        if let Some(store) = &inner.activity_store {
            match inner.calls.call("idle_for", store.idle_for(function)).await {
                Ok(Some(idle_for)) if idle_for < idle => {
                    tracing::debug!(
                        function = %function,
                        "not scaled to zero: another gateway served it {} ago",
                        crate::error::Millis(idle_for)
                    );
                    retry_after(idle - idle_for);
                    crate::telemetry::scale_down(function, "skipped");
                    return false;
                }
                Ok(_) => {}
                Err(err) => {
                    let failures = retry_after(every);
                    tracing::warn!(function = %function, failures, error = %ErrorChain(&err), "reading shared activity failed; not scaled to zero");
                    crate::telemetry::scale_down(function, "failed");
                    return false;
                }
            }
        }
        match inner
            .calls
            .call("scale_to_zero", inner.query.scale_to_zero(function, idle))
            .await
        {
            Ok(true) => {
                tracing::info!(
                    function = %function,
                    "function scaled to zero after {} idle",
                    crate::error::Millis(idle)
                );
                activity.scaled_down();
                crate::telemetry::scale_down(function, "scaled");
                inner.asked.remove(function.as_function_ref());
                // A push that raced the eviction before the call.
                inner.cache.invalidate(function.as_function_ref());
                true
            }
            Ok(false) => {
                tracing::debug!(function = %function, "not scaled to zero: the platform saw recent activity or a scale-up");
                crate::telemetry::scale_down(function, "skipped");
                retry_after(every);
                false
            }
            Err(err) => {
                let failures = activity.failures() + 1;
                let pause = every
                    .saturating_mul(1 << failures.min(6).saturating_sub(1))
                    .min(idle);
                retry_after(pause);
                crate::telemetry::scale_down(function, "failed");
                tracing::warn!(
                    function = %function,
                    failures,
                    error = %ErrorChain(&err),
                    "scale to zero failed; the function keeps serving"
                );
                false
            }
        }
    }
}
