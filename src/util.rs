//! Small helpers the crate shares: a lock that ignores poisoning, whole-millisecond durations
//! in messages, far-off instants, and jittered exponential backoff.

use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// Locks a mutex that guards plain values, kept consistent after every statement: a panic
/// elsewhere cannot leave them half-written, so a poisoned lock is used as it is.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Formats a duration as whole milliseconds ("1500 ms").
pub(crate) struct Millis(pub(crate) Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0.as_millis())
    }
}

/// Displays an error followed by each of its causes (`a: b: c`), skipping a cause whose text
/// the line already holds (errors that print their source as part of their own message).
///
#[derive(Clone, Copy)]
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn StdError + 'a));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        let mut next = self.0.source();
        // Bounded: a cyclic or absurdly deep chain must not spin a log call.
        for _ in 0..16 {
            let Some(cause) = next else { break };
            let text = cause.to_string();
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            next = cause.source();
        }
        f.write_str(&line)
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `start + by`, or about a century from `start` when that cannot be represented: expiries
/// and deadlines from configured durations, which may be `Duration::MAX`.
pub(crate) fn far_instant(start: Instant, by: Duration) -> Instant {
    start
        .checked_add(by)
        .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Exponential backoff with jitter. After `n` failures in a row the step is
/// `min(first · 2ⁿ⁻¹, cap)`, and the pause is drawn:
///
/// - [`new`](Self::new), full jitter: uniformly between `first` and the step. Never below
///   `first` (one retrier never calls more often than that), spread out above it (many
///   retriers do not move together). Provider calls retry this way.
/// - [`growing`](Self::growing): between the step and a quarter more (capped). The pauses
///   themselves grow, as client-go's watch backoff does: a caller that keeps failing calls
///   less and less often.
pub(crate) struct Backoff {
    first: Duration,
    cap: Duration,
    full_jitter: bool,
    jitter: Jitter,
}

impl Backoff {
    pub(crate) fn new(first: Duration, cap: Duration) -> Self {
        Self {
            first,
            cap: cap.max(first),
            full_jitter: true,
            jitter: Jitter::new(),
        }
    }

    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
    pub(crate) fn growing(first: Duration, cap: Duration) -> Self {
        Self {
            full_jitter: false,
            ..Self::new(first, cap)
        }
    }

    /// The step after `failures` failures in a row (1 for the first), without jitter:
    /// `min(first · 2ⁿ⁻¹, cap)`. For retries that one caller makes alone (a function's
    /// activity reports, its scale-downs), where spreading callers apart is moot.
    pub(crate) fn step(first: Duration, cap: Duration, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        first.saturating_mul(1 << doublings).min(cap.max(first))
    }

    /// The pause after `failures` failures in a row (1 for the first).
    pub(crate) fn pause(&self, failures: u32) -> Duration {
        let step = Self::step(self.first, self.cap, failures);
        if self.full_jitter {
            self.first + (step - self.first).mul_f64(self.jitter.unit())
        } else {
            (step + (step / 4).mul_f64(self.jitter.unit())).min(self.cap)
        }
    }
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backoff")
            .field("first", &self.first)
            .field("cap", &self.cap)
            .finish()
    }
}

/// splitmix64 over an atomic counter, seeded from the process's random hasher seed: enough to
/// spread retries, no dependency, no lock.
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
    fn backoff_grows_from_the_first_pause_to_the_cap_with_jitter() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for failures in 1..40 {
            let ceiling =
                Duration::from_millis(100 << (failures - 1).min(5)).min(Duration::from_secs(2));
            for _ in 0..50 {
                let pause = backoff.pause(failures);
                assert!(pause >= Duration::from_millis(100), "{pause:?}");
                assert!(pause <= ceiling, "{failures}: {pause:?} > {ceiling:?}");
            }
        }
        // Spread out: many draws at the cap are not all alike.
        let draws: std::collections::HashSet<_> = (0..100).map(|_| backoff.pause(30)).collect();
        assert!(draws.len() > 90);
    }

    #[test]
    fn an_error_chain_shows_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let err = crate::QueryError::with_source("cannot reach the provider", io);
        assert_eq!(
            ErrorChain(&err).to_string(),
            "cannot reach the provider: connection refused"
        );
    }

    #[test]
    fn growing_pauses_grow_themselves_up_to_the_cap() {
        let backoff = Backoff::growing(Duration::from_secs(2), Duration::from_secs(30));
        for _ in 0..50 {
            let pauses: Vec<Duration> = (1..=6).map(|n| backoff.pause(n)).collect();
            for (n, pause) in pauses.iter().enumerate() {
                let step = Duration::from_secs(2 << n).min(Duration::from_secs(30));
                assert!(*pause >= step && *pause <= (step * 5 / 4).min(Duration::from_secs(30)));
            }
            // Three tries in the first ten seconds at most: 0, >= 2, >= 6, >= 14.
            assert!(pauses[0] + pauses[1] >= Duration::from_secs(6));
        }
    }

    #[test]
    fn a_cap_below_the_first_pause_is_the_first_pause() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_millis(10));
        assert_eq!(backoff.pause(5), Duration::from_secs(1));
    }
}
