//! Protects the provider: a cap on calls under way, a bounded queue, a time limit per call,
//! and the backoff between retries.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, TryAcquireError};
use tokio::time::{timeout, Instant};
use tracing::Instrument;

use super::place::Place;
use crate::{QueryError, ScalingConfig};

/// The gate every provider call of one scaler passes: at most `max_provider_calls` under way,
/// at most `max_queued_provider_calls` waiting for a place, and the call timeout counted from
/// the moment the call asks for a place.
pub(super) struct ProviderCalls {
    permits: Semaphore,
    max: usize,
    queued: AtomicUsize,
    max_queued: usize,
    timeout: Duration,
    jitter: Jitter,
    poll_interval: Duration,
    max_backoff: Duration,
}

impl ProviderCalls {
    pub(super) fn new(config: &ScalingConfig) -> Self {
        Self {
            permits: Semaphore::new(config.get_max_provider_calls()),
            max: config.get_max_provider_calls(),
            queued: AtomicUsize::new(0),
            max_queued: config.get_max_queued_provider_calls(),
            timeout: config.get_call_timeout(),
            jitter: Jitter::new(),
            poll_interval: config.get_poll_interval(),
            max_backoff: config.get_max_backoff(),
        }
    }

    /// Runs one provider call through the gate, under the call timeout. A call that cannot
    /// queue, or that waits past its timeout, fails like a call that failed.
    pub(super) async fn call<T>(
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

    /// The pause before retrying after `failures` consecutive failed calls: exponential from
    /// the poll interval, capped, with full jitter above one poll interval (so one flight never
    /// calls more often than once per poll interval, and many flights spread out).
    pub(super) fn backoff(&self, failures: u32) -> Duration {
        let base = self.poll_interval;
        let cap = self.max_backoff.max(base);
        let doublings = failures.saturating_sub(1).min(20);
        let ceiling = base.saturating_mul(1 << doublings).min(cap);
        base + (ceiling - base).mul_f64(self.jitter.unit())
    }

    /// Provider calls under way now.
    pub(super) fn in_flight(&self) -> usize {
        self.max - self.permits.available_permits()
    }
}

/// splitmix64 over an atomic counter, seeded per scaler from the process's random hasher
/// seed: enough to spread retries, no dependency, no lock.
pub(crate) struct Jitter(AtomicU64);

impl Jitter {
    pub(crate) fn new() -> Self {
        use std::hash::BuildHasher;
        let seed = foldhash::fast::RandomState::default().hash_one(0x5ca1_ab1e_u64);
        Self(AtomicU64::new(seed))
    }

    /// A number in [0, 1).
    pub(crate) fn unit(&self) -> f64 {
        let mut z = self
            .0
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_from_the_poll_interval_to_the_cap() {
        let config = ScalingConfig::default()
            .poll_interval(Duration::from_millis(100))
            .max_backoff(Duration::from_secs(2));
        let calls = ProviderCalls::new(&config);
        for failures in 1..40 {
            let ceiling =
                Duration::from_millis(100 << (failures - 1).min(5)).min(Duration::from_secs(2));
            for _ in 0..50 {
                let pause = calls.backoff(failures);
                assert!(pause >= Duration::from_millis(100), "{pause:?}");
                assert!(pause <= ceiling, "{failures}: {pause:?} > {ceiling:?}");
            }
        }
        // Spread out: many draws at the cap are not all alike.
        let draws: std::collections::HashSet<_> = (0..100).map(|_| calls.backoff(30)).collect();
        assert!(draws.len() > 90);
    }
}
