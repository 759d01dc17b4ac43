//! [`ScalingConfig`]: every bound and interval the scaler uses, with the contract's defaults.

use std::time::Duration;

/// The scaler's bounds and intervals. Start from [`ScalingConfig::default`] and change what
/// you need:
///
/// ```
/// use std::time::Duration;
/// use tower_scale_from_zero::ScalingConfig;
///
/// let config = ScalingConfig::default()
///     .poll_interval(Duration::from_millis(50))
///     .readiness_deadline(Duration::from_secs(30));
/// assert_eq!(config.max_scale_attempts, 20);
/// ```
///
/// Builder methods panic on values that cannot work (a zero interval or limit), naming the
/// setting.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScalingConfig {
    /// How often the provider is asked whether a starting function is ready. Default 100 ms.
    pub poll_interval: Duration,
    /// How long a replica state stays in the cache. Default 250 ms.
    pub cache_ttl: Duration,
    /// How many functions the cache holds at most. Default 10 000.
    pub cache_capacity: usize,
    /// The time limit for one provider call; a call that exceeds it counts as a failed
    /// attempt. Default 5 s.
    pub call_timeout: Duration,
    /// How long a request is held for a function to become ready before it gets 504.
    /// Default 60 s.
    pub readiness_deadline: Duration,
    /// How many consecutive failed provider calls (one poll interval apart) end a cold start
    /// with 502. Default 20.
    pub max_scale_attempts: u32,
    /// How many requests may wait for one function. Default 10 000.
    pub max_held_per_function: usize,
    /// How many requests may wait for all functions together. Default 50 000.
    pub max_held_total: usize,
    /// How long "function not found" is remembered. Default 1 s.
    pub not_found_ttl: Duration,
    /// How many "not found" answers are remembered at most. Default 10 000.
    pub not_found_capacity: usize,
    /// The `Retry-After` sent with 503 when the hold queue is full. Default 1 s.
    pub retry_after: Duration,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(100),
            cache_ttl: Duration::from_millis(250),
            cache_capacity: 10_000,
            call_timeout: Duration::from_secs(5),
            readiness_deadline: Duration::from_secs(60),
            max_scale_attempts: 20,
            max_held_per_function: 10_000,
            max_held_total: 50_000,
            not_found_ttl: Duration::from_secs(1),
            not_found_capacity: 10_000,
            retry_after: Duration::from_secs(1),
        }
    }
}

fn nonzero_duration(setting: &str, value: Duration) -> Duration {
    assert!(
        !value.is_zero(),
        "ScalingConfig: {setting} must be greater than zero"
    );
    value
}

fn nonzero(setting: &str, value: usize) -> usize {
    assert!(
        value > 0,
        "ScalingConfig: {setting} must be greater than zero"
    );
    value
}

impl ScalingConfig {
    /// Sets [`poll_interval`](Self::poll_interval). Panics on zero.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = nonzero_duration("poll_interval", interval);
        self
    }

    /// Sets [`cache_ttl`](Self::cache_ttl); zero disables the cache.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// Sets [`cache_capacity`](Self::cache_capacity); zero disables the cache.
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// Sets [`call_timeout`](Self::call_timeout). Panics on zero.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = nonzero_duration("call_timeout", timeout);
        self
    }

    /// Sets [`readiness_deadline`](Self::readiness_deadline). Panics on zero.
    pub fn readiness_deadline(mut self, deadline: Duration) -> Self {
        self.readiness_deadline = nonzero_duration("readiness_deadline", deadline);
        self
    }

    /// Sets [`max_scale_attempts`](Self::max_scale_attempts). Panics on zero.
    pub fn max_scale_attempts(mut self, attempts: u32) -> Self {
        nonzero("max_scale_attempts", attempts as usize);
        self.max_scale_attempts = attempts;
        self
    }

    /// Sets [`max_held_per_function`](Self::max_held_per_function). Panics on zero.
    pub fn max_held_per_function(mut self, limit: usize) -> Self {
        self.max_held_per_function = nonzero("max_held_per_function", limit);
        self
    }

    /// Sets [`max_held_total`](Self::max_held_total). Panics on zero.
    pub fn max_held_total(mut self, limit: usize) -> Self {
        self.max_held_total = nonzero("max_held_total", limit);
        self
    }

    /// Sets [`not_found_ttl`](Self::not_found_ttl); zero disables the "not found" cache.
    pub fn not_found_ttl(mut self, ttl: Duration) -> Self {
        self.not_found_ttl = ttl;
        self
    }

    /// Sets [`not_found_capacity`](Self::not_found_capacity); zero disables the "not found"
    /// cache.
    pub fn not_found_capacity(mut self, capacity: usize) -> Self {
        self.not_found_capacity = capacity;
        self
    }

    /// Sets [`retry_after`](Self::retry_after).
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "poll_interval must be greater than zero")]
    fn zero_poll_interval_is_refused() {
        let _ = ScalingConfig::default().poll_interval(Duration::ZERO);
    }
}
