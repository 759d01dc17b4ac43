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
/// assert_eq!(config.get_poll_interval(), Duration::from_millis(50));
/// assert_eq!(config.get_max_scale_attempts(), 20);
/// ```
///
/// Fields are private so that every value passes the setters' checks: setters panic on values
/// that cannot work (a zero interval or limit), naming the setting. Getters are named
/// `get_*`, as [`std::process::Command`]'s are, since the setters own the plain names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalingConfig {
    poll_interval: Duration,
    cache_ttl: Duration,
    cache_capacity: usize,
    call_timeout: Duration,
    readiness_deadline: Duration,
    max_scale_attempts: u32,
    max_held_per_function: usize,
    max_held_total: usize,
    not_found_ttl: Duration,
    not_found_capacity: usize,
    retry_after: Duration,
    max_provider_calls: usize,
    max_queued_provider_calls: usize,
    max_backoff: Duration,
    scale_to_zero: bool,
    idle_period: Duration,
    idle_check_interval: Duration,
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
            max_provider_calls: 64,
            max_queued_provider_calls: 10_000,
            max_backoff: Duration::from_secs(2),
            scale_to_zero: false,
            idle_period: Duration::from_secs(300),
            idle_check_interval: Duration::from_secs(10),
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
    /// How often the provider is asked whether a starting function is ready. Default 100 ms.
    /// Also the first delay before a failed provider call is retried. Panics on zero.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = nonzero_duration("poll_interval", interval);
        self
    }

    /// How long a replica state stays in the default cache. Default 250 ms; zero disables
    /// the cache. Applies to the cache the scaler builds itself, not to one you pass it.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// How many functions the default cache holds at most. Default 10 000; zero disables the
    /// cache. Applies to the cache the scaler builds itself, not to one you pass it.
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// The time limit for one provider call, including the time it waits for a place under
    /// [`max_provider_calls`](Self::max_provider_calls); a call that exceeds it counts as a
    /// failed attempt. Default 5 s. Panics on zero.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = nonzero_duration("call_timeout", timeout);
        self
    }

    /// How long a request is held, from its own arrival, for its function to become ready
    /// before it gets 504. Default 60 s. Panics on zero.
    pub fn readiness_deadline(mut self, deadline: Duration) -> Self {
        self.readiness_deadline = nonzero_duration("readiness_deadline", deadline);
        self
    }

    /// How many consecutive failed provider calls end a cold start with 502. Default 20.
    /// Panics on zero.
    pub fn max_scale_attempts(mut self, attempts: u32) -> Self {
        nonzero("max_scale_attempts", attempts as usize);
        self.max_scale_attempts = attempts;
        self
    }

    /// How many requests may wait for one function. Default 10 000. Panics on zero.
    pub fn max_held_per_function(mut self, limit: usize) -> Self {
        self.max_held_per_function = nonzero("max_held_per_function", limit);
        self
    }

    /// How many requests may wait for cold functions, all together. Requests for a function
    /// whose cache entry merely expired and that the provider reports ready are not counted.
    /// Default 50 000. Panics on zero.
    pub fn max_held_total(mut self, limit: usize) -> Self {
        self.max_held_total = nonzero("max_held_total", limit);
        self
    }

    /// How long "function not found" is remembered. Default 1 s; zero disables the
    /// "not found" cache.
    pub fn not_found_ttl(mut self, ttl: Duration) -> Self {
        self.not_found_ttl = ttl;
        self
    }

    /// How many "not found" answers are remembered at most. Default 10 000; zero disables
    /// the "not found" cache.
    pub fn not_found_capacity(mut self, capacity: usize) -> Self {
        self.not_found_capacity = capacity;
        self
    }

    /// The `Retry-After` sent with 503. Default 1 s.
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// How many provider calls may be under way at once, all functions together. Default 64.
    /// Further calls queue. Panics on zero.
    pub fn max_provider_calls(mut self, limit: usize) -> Self {
        self.max_provider_calls = nonzero("max_provider_calls", limit);
        self
    }

    /// How many provider calls may queue for a place under
    /// [`max_provider_calls`](Self::max_provider_calls). Past it a call fails at once, as a
    /// failed attempt. Default 10 000.
    pub fn max_queued_provider_calls(mut self, limit: usize) -> Self {
        self.max_queued_provider_calls = limit;
        self
    }

    /// The longest delay between retries of failed provider calls. Retries back off
    /// exponentially from the poll interval with full jitter up to this cap. Default 2 s.
    /// Panics on zero.
    pub fn max_backoff(mut self, cap: Duration) -> Self {
        self.max_backoff = nonzero_duration("max_backoff", cap);
        self
    }

    /// Scale to zero: when on, the layer counts each function's requests in flight (until
    /// the response body has ended or been dropped) and the scaler scales a function that
    /// opted in ([`IdlePolicy`](crate::IdlePolicy), from its provider) to zero after its idle
    /// period with no request in flight. Default off: nothing is tracked and nothing is ever
    /// scaled down.
    pub fn scale_to_zero(mut self, enabled: bool) -> Self {
        self.scale_to_zero = enabled;
        self
    }

    /// The idle period of functions whose policy is
    /// [`IdlePolicy::AfterDefault`](crate::IdlePolicy::AfterDefault). Default 5 min. Panics
    /// on zero.
    pub fn idle_period(mut self, period: Duration) -> Self {
        self.idle_period = nonzero_duration("idle_period", period);
        self
    }

    /// How often idle functions are looked for; a function is scaled to zero between its idle
    /// period and its idle period plus this. Default 10 s. Panics on zero.
    pub fn idle_check_interval(mut self, interval: Duration) -> Self {
        self.idle_check_interval = nonzero_duration("idle_check_interval", interval);
        self
    }

    /// Whether scale to zero is on.
    pub fn get_scale_to_zero(&self) -> bool {
        self.scale_to_zero
    }

    /// The default idle period.
    pub fn get_idle_period(&self) -> Duration {
        self.idle_period
    }

    /// How often idle functions are looked for.
    pub fn get_idle_check_interval(&self) -> Duration {
        self.idle_check_interval
    }

    /// See [`poll_interval`](Self::poll_interval).
    pub fn get_poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// See [`cache_ttl`](Self::cache_ttl).
    pub fn get_cache_ttl(&self) -> Duration {
        self.cache_ttl
    }

    /// See [`cache_capacity`](Self::cache_capacity).
    pub fn get_cache_capacity(&self) -> usize {
        self.cache_capacity
    }

    /// See [`call_timeout`](Self::call_timeout).
    pub fn get_call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// See [`readiness_deadline`](Self::readiness_deadline).
    pub fn get_readiness_deadline(&self) -> Duration {
        self.readiness_deadline
    }

    /// See [`max_scale_attempts`](Self::max_scale_attempts).
    pub fn get_max_scale_attempts(&self) -> u32 {
        self.max_scale_attempts
    }

    /// See [`max_held_per_function`](Self::max_held_per_function).
    pub fn get_max_held_per_function(&self) -> usize {
        self.max_held_per_function
    }

    /// See [`max_held_total`](Self::max_held_total).
    pub fn get_max_held_total(&self) -> usize {
        self.max_held_total
    }

    /// See [`not_found_ttl`](Self::not_found_ttl).
    pub fn get_not_found_ttl(&self) -> Duration {
        self.not_found_ttl
    }

    /// See [`not_found_capacity`](Self::not_found_capacity).
    pub fn get_not_found_capacity(&self) -> usize {
        self.not_found_capacity
    }

    /// See [`retry_after`](Self::retry_after).
    pub fn get_retry_after(&self) -> Duration {
        self.retry_after
    }

    /// See [`max_provider_calls`](Self::max_provider_calls).
    pub fn get_max_provider_calls(&self) -> usize {
        self.max_provider_calls
    }

    /// See [`max_queued_provider_calls`](Self::max_queued_provider_calls).
    pub fn get_max_queued_provider_calls(&self) -> usize {
        self.max_queued_provider_calls
    }

    /// See [`max_backoff`](Self::max_backoff).
    pub fn get_max_backoff(&self) -> Duration {
        self.max_backoff
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

    #[test]
    #[should_panic(expected = "max_provider_calls must be greater than zero")]
    fn zero_provider_calls_is_refused() {
        let _ = ScalingConfig::default().max_provider_calls(0);
    }

    #[test]
    fn setters_and_getters_agree() {
        let config = ScalingConfig::default()
            .max_backoff(Duration::from_secs(3))
            .max_provider_calls(8);
        assert_eq!(config.get_max_backoff(), Duration::from_secs(3));
        assert_eq!(config.get_max_provider_calls(), 8);
        assert_eq!(config.get_cache_ttl(), Duration::from_millis(250));
    }
}
