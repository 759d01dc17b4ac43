//! Protects the provider: a cap on calls under way, a bounded queue, a time limit per call,
//! and the backoff between retries.

use crate::sync::AtomicUsize;
use std::future::Future;
use std::time::Duration;

use tokio::sync::{Semaphore, TryAcquireError};
use tokio::time::{timeout, Instant};
use tracing::Instrument;

use super::place::Place;
use crate::util::Backoff;
use crate::{QueryError, ScalingConfig};

/// The gate every provider call of one scaler passes: at most `max_provider_calls` under way,
/// at most `max_queued_provider_calls` waiting for a place, and the call timeout counted from
/// the moment the call asks for a place.
pub(crate) struct ProviderCalls {
    permits: Semaphore,
    max: usize,
    queued: AtomicUsize,
    max_queued: usize,
    timeout: Duration,
    backoff: Backoff,
}

impl ProviderCalls {
    pub(crate) fn new(config: &ScalingConfig) -> Self {
        Self {
            permits: Semaphore::new(config.max_provider_calls()),
            max: config.max_provider_calls(),
            queued: AtomicUsize::new(0),
            max_queued: config.max_queued_provider_calls(),
            timeout: config.call_timeout(),
            backoff: Backoff::new(config.poll_interval(), config.max_backoff()),
        }
    }

    /// Runs one provider call through the gate, under the call timeout. A call that cannot
    /// queue, or that waits past its timeout, fails like a call that failed.
    pub(crate) async fn call<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, QueryError>>,
    ) -> Result<T, QueryError> {
        let span = tracing::info_span!("provider_call", operation, outcome = tracing::field::Empty);
        let started = Instant::now();
        let result = self.gated(call).instrument(span.clone()).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(err) if err.is_not_found() => "not_found",
            Err(err) if err.is_timeout() => "timeout",
            Err(_) => "error",
        };
        span.record("outcome", outcome);
        crate::telemetry::provider_call(operation, outcome, started.elapsed());
        result
    }

    async fn gated<T>(
        &self,
        call: impl Future<Output = Result<T, QueryError>>,
    ) -> Result<T, QueryError> {
        let gated = async {
            let _permit = match self.permits.try_acquire() {
                Ok(permit) => permit,
                Err(TryAcquireError::NoPermits) => {
                    let _queued = Place::take(&self.queued, self.max_queued).ok_or_else(|| {
                        QueryError::provider(format!(
                            "too many provider calls waiting (limit {})",
                            self.max_queued
                        ))
                    })?;
                    self.permits
                        .acquire()
                        .await
                        .expect("the semaphore is never closed")
                }
                Err(TryAcquireError::Closed) => unreachable!("the semaphore is never closed"),
            };
            call.await
        };
        timeout(self.timeout, gated)
            .await
            .unwrap_or_else(|_| Err(QueryError::timeout(self.timeout)))
    }

    /// The backoff between retries: from the poll interval to `max_backoff`, with full jitter
    /// above one poll interval (so one flight never calls more often than once per poll
    /// interval, and many flights spread out).
    pub(crate) fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// Provider calls under way now.
    pub(crate) fn in_flight(&self) -> usize {
        self.max - self.permits.available_permits()
    }
}
