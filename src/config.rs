//! [`ScalingConfig`]: every bound and interval the scaler uses, with the defaults of docs/behaviour.md,
//! and [`ScalingConfigBuilder`], the one place that checks them.

use std::time::Duration;

/// The scaler's bounds and intervals. Start from [`ScalingConfig::builder`] (the defaults)
/// and change what you need:
///
/// ```
/// use std::time::Duration;
/// use tower_scale_from_zero::ScalingConfig;
///
/// let config = ScalingConfig::builder()
///     .poll_interval(Duration::from_millis(50))
///     .readiness_deadline(Duration::from_secs(30))
///     .build();
/// assert_eq!(config.poll_interval(), Duration::from_millis(50));
/// assert_eq!(config.max_scale_attempts(), 20);
/// ```
///
/// Fields are private so that every value passes the builder's checks: its setters panic on
/// values that cannot work (a zero interval or limit), naming the setting.
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
    max_held_bytes_per_function: usize,
    max_held_bytes_total: usize,
    not_found_ttl: Duration,
    not_found_capacity: usize,
    retry_after: Duration,
    max_provider_calls: usize,
    max_queued_provider_calls: usize,
    max_backoff: Duration,
    stale_if_error: Duration,
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
            max_held_bytes_per_function: 64 << 20,
            max_held_bytes_total: 256 << 20,
            not_found_ttl: Duration::from_secs(1),
            not_found_capacity: 10_000,
            retry_after: Duration::from_secs(1),
            max_provider_calls: 64,
            max_queued_provider_calls: 10_000,
            max_backoff: Duration::from_secs(2),
            stale_if_error: Duration::from_secs(300),
            scale_to_zero: false,
            idle_period: Duration::from_secs(300),
            idle_check_interval: Duration::from_secs(10),
        }
    }
}

/// Getters, each documented by its setter on [`ScalingConfigBuilder`].
macro_rules! getters {
    ($($name:ident: $ty:ty),* $(,)?) => {
        impl ScalingConfig {
            $(
                #[doc = concat!("See [`ScalingConfigBuilder::", stringify!($name), "`].")]
                pub fn $name(&self) -> $ty {
                    self.$name
                }
            )*
        }
    };
}

getters! {
    poll_interval: Duration,
    cache_ttl: Duration,
    cache_capacity: usize,
    call_timeout: Duration,
    readiness_deadline: Duration,
    max_scale_attempts: u32,
    max_held_per_function: usize,
    max_held_total: usize,
    max_held_bytes_per_function: usize,
    max_held_bytes_total: usize,
    not_found_ttl: Duration,
    not_found_capacity: usize,
    retry_after: Duration,
    max_provider_calls: usize,
    max_queued_provider_calls: usize,
    max_backoff: Duration,
    stale_if_error: Duration,
    scale_to_zero: bool,
    idle_period: Duration,
    idle_check_interval: Duration,
}

impl ScalingConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ScalingConfigBuilder {
        ScalingConfigBuilder {
            config: Self::default(),
        }
    }

    /// A builder starting from this configuration.
    pub fn to_builder(&self) -> ScalingConfigBuilder {
        ScalingConfigBuilder {
            config: self.clone(),
        }
    }
}

/// Builds a [`ScalingConfig`]; see [`ScalingConfig::builder`]. Each setter says its default.
#[derive(Clone, Debug)]
#[must_use]
pub struct ScalingConfigBuilder {
    config: ScalingConfig,
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

impl ScalingConfigBuilder {
    /// The configuration.
    pub fn build(self) -> ScalingConfig {
        self.config
    }

    /// How often the provider is asked whether a starting function is ready. Default 100 ms.
    /// Also the first delay before a failed provider call is retried. Panics on zero.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.config.poll_interval = nonzero_duration("poll_interval", interval);
        self
    }

    /// How long a replica state stays in the default cache. Default 250 ms; zero disables
    /// the cache. Applies to the cache the scaler builds itself, not to one you pass it.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.config.cache_ttl = ttl;
        self
    }

    /// How many functions the default cache holds at most. Default 10 000; zero disables the
    /// cache. Applies to the cache the scaler builds itself, not to one you pass it. It also
    /// bounds what the scaler remembers of each function it saw (at least 1 000 of them).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.config.cache_capacity = capacity;
        self
    }

    /// The time limit for one provider call, including the time it waits for a place under
    /// [`max_provider_calls`](Self::max_provider_calls); a call that exceeds it counts as a
    /// failed attempt. Default 5 s. Panics on zero.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.config.call_timeout = nonzero_duration("call_timeout", timeout);
        self
    }

    /// How long a request is held, from its own arrival, for its function to become ready
    /// before it gets 504. Default 60 s. Panics on zero.
    pub fn readiness_deadline(mut self, deadline: Duration) -> Self {
        self.config.readiness_deadline = nonzero_duration("readiness_deadline", deadline);
        self
    }

    /// How many consecutive failed provider calls end a cold start with 502. Default 20.
    /// Panics on zero.
    pub fn max_scale_attempts(mut self, attempts: u32) -> Self {
        nonzero("max_scale_attempts", attempts as usize);
        self.config.max_scale_attempts = attempts;
        self
    }

    /// How many requests may wait for one function. Default 10 000. Panics on zero.
    pub fn max_held_per_function(mut self, limit: usize) -> Self {
        self.config.max_held_per_function = nonzero("max_held_per_function", limit);
        self
    }

    /// How many requests may wait for cold functions, all together. Requests for a function
    /// whose cache entry merely expired and that the provider reports ready are not counted.
    /// Default 50 000. Panics on zero.
    pub fn max_held_total(mut self, limit: usize) -> Self {
        self.config.max_held_total = nonzero("max_held_total", limit);
        self
    }

    /// How many bytes the requests waiting for one function may keep, all together (see
    /// [`held_bytes`](crate::middleware::held_bytes): a request's head and the layer's share;
    /// bodies are never buffered). Beyond it, 503 + `Retry-After`. Default 64 MiB. Panics on
    /// zero.
    pub fn max_held_bytes_per_function(mut self, limit: usize) -> Self {
        self.config.max_held_bytes_per_function = nonzero("max_held_bytes_per_function", limit);
        self
    }

    /// How many bytes the requests waiting for cold functions may keep, all together.
    /// Default 256 MiB. Panics on zero.
    pub fn max_held_bytes_total(mut self, limit: usize) -> Self {
        self.config.max_held_bytes_total = nonzero("max_held_bytes_total", limit);
        self
    }

    /// How long "function not found" is remembered. Default 1 s; zero disables the
    /// "not found" cache.
    pub fn not_found_ttl(mut self, ttl: Duration) -> Self {
        self.config.not_found_ttl = ttl;
        self
    }

    /// How many "not found" answers are remembered at most. Default 10 000; zero disables
    /// the "not found" cache.
    pub fn not_found_capacity(mut self, capacity: usize) -> Self {
        self.config.not_found_capacity = capacity;
        self
    }

    /// The `Retry-After` sent with 503. Default 1 s.
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.config.retry_after = retry_after;
        self
    }

    /// How many provider calls may be under way at once, all functions together. Default 64.
    /// Further calls queue. Panics on zero.
    pub fn max_provider_calls(mut self, limit: usize) -> Self {
        self.config.max_provider_calls = nonzero("max_provider_calls", limit);
        self
    }

    /// How many provider calls may queue for a place under
    /// [`max_provider_calls`](Self::max_provider_calls). Past it a call fails at once, as a
    /// failed attempt. Default 10 000.
    pub fn max_queued_provider_calls(mut self, limit: usize) -> Self {
        self.config.max_queued_provider_calls = limit;
        self
    }

    /// The longest delay between retries of failed provider calls. Retries back off
    /// exponentially from the poll interval with full jitter up to this cap. Default 2 s.
    /// Panics on zero.
    pub fn max_backoff(mut self, cap: Duration) -> Self {
        self.config.max_backoff = nonzero_duration("max_backoff", cap);
        self
    }

    /// Stale-if-error (as in HTTP caching, RFC 5861): when a function was last known warm and
    /// the refresh of its state fails with a retryable error or times out, its requests are
    /// forwarded on that last known state for up to this long after it was last confirmed,
    /// while refreshes are retried with backoff. Logged once per function per outage and
    /// counted in `scale_from_zero_stale_serves_total`. Functions known cold, or unknown,
    /// still get 502 after the retry budget. Default 5 min; zero turns it off.
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.config.stale_if_error = window;
        self
    }

    /// Scale to zero: when on, the layer counts each function's requests in flight (until
    /// the response body has ended or been dropped) and the scaler scales a function that
    /// opted in ([`IdlePolicy`](crate::IdlePolicy), from its provider) to zero after its idle
    /// period with no request in flight. Default off: nothing is tracked and nothing is ever
    /// scaled down.
    pub fn scale_to_zero(mut self, enabled: bool) -> Self {
        self.config.scale_to_zero = enabled;
        self
    }

    /// The idle period of functions whose policy is
    /// [`IdlePolicy::AfterDefault`](crate::IdlePolicy::AfterDefault). Default 5 min. Panics
    /// on zero.
    pub fn idle_period(mut self, period: Duration) -> Self {
        self.config.idle_period = nonzero_duration("idle_period", period);
        self
    }

    /// How often idle functions are looked for; a function is scaled to zero between its idle
    /// period and its idle period plus this. Default 10 s. Panics on zero.
    pub fn idle_check_interval(mut self, interval: Duration) -> Self {
        self.config.idle_check_interval = nonzero_duration("idle_check_interval", interval);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "poll_interval must be greater than zero")]
    fn zero_poll_interval_is_refused() {
        let _ = ScalingConfig::builder().poll_interval(Duration::ZERO);
    }

    #[test]
    #[should_panic(expected = "max_provider_calls must be greater than zero")]
    fn zero_provider_calls_is_refused() {
        let _ = ScalingConfig::builder().max_provider_calls(0);
    }

    #[test]
    fn setters_and_getters_agree() {
        let config = ScalingConfig::builder()
            .max_backoff(Duration::from_secs(3))
            .max_provider_calls(8)
            .build();
        assert_eq!(config.max_backoff(), Duration::from_secs(3));
        assert_eq!(config.max_provider_calls(), 8);
        assert_eq!(config.cache_ttl(), Duration::from_millis(250));
        assert_eq!(config.stale_if_error(), Duration::from_secs(300));
        let again = config.to_builder().max_provider_calls(9).build();
        assert_eq!(again.max_backoff(), Duration::from_secs(3));
        assert_eq!(again.max_provider_calls(), 9);
    }
}
