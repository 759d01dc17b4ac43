//! Metrics and traces: what the middleware and the scaler report.
//!
//! # Metrics
//!
//! Through the [`metrics`](https://docs.rs/metrics) facade: install any recorder (e.g.
//! `metrics-exporter-prometheus`) and they appear; install none and recording is a check of
//! an empty global. Nothing is recorded on the warm path. Names follow Prometheus conventions,
//! all with the prefix `scale_from_zero_`:
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `scale_from_zero_cold_starts_total` | counter | `function`, `outcome` (`ready`, `failed`) | cold starts (flights that found the function cold) by how they ended |
//! | `scale_from_zero_cold_start_duration_seconds` | histogram | `function` | from a cold start's beginning to its function being ready |
//! | `scale_from_zero_requests_held` | gauge | `function` | requests waiting for the function's cold start now |
//! | `scale_from_zero_coalesced_joins_total` | counter | | requests that joined a cold start already under way |
//! | `scale_from_zero_refusals_total` | counter | `status` | requests answered by the middleware itself (400, 404, 500, 502, 503, 504) |
//! | `scale_from_zero_provider_calls_total` | counter | `operation`, `outcome` (`ok`, `not_found`, `error`, `timeout`) | provider calls |
//! | `scale_from_zero_provider_call_duration_seconds` | histogram | `operation` | provider call durations, queueing for the call cap included |
//! | `scale_from_zero_scale_downs_total` | counter | `function`, `outcome` (`scaled`, `skipped`, `failed`) | scale to zero attempts |
//! | `scale_from_zero_stale_serves_total` | counter | `function` | requests served from their function's last known state while the provider failed (stale-if-error) |
//!
//! `operation` is one of `get_replicas`, `set_replicas`, `scale_to_zero`, `record_activity`,
//! `idle_for`. Label values are bounded: `function` (`name.namespace`) is set only for
//! functions the provider confirmed to exist (a successful read or a push), never for a name
//! that failed validation, that the provider does not know, or that it could not be asked
//! about (an outage).
//!
//! # Traces
//!
//! Each cold start runs in a `cold_start` span (field `function`); the span of every request
//! that waits for it is linked to it (follows-from). Provider calls are `provider_call` spans
//! (fields `operation`, `outcome`) inside it. The idle reaper runs in `idle_reaper`, each
//! scale-down in `scale_to_zero`. "function ready after N ms" is logged once per actual cold
//! start; refreshes of warm functions log at debug.

use std::time::Duration;

use metrics::{counter, gauge, histogram, Gauge};

use crate::FunctionId;

/// Cold starts by outcome.
pub const COLD_STARTS: &str = "scale_from_zero_cold_starts_total";
/// Cold start durations.
pub const COLD_START_DURATION: &str = "scale_from_zero_cold_start_duration_seconds";
/// Requests held per function.
pub const REQUESTS_HELD: &str = "scale_from_zero_requests_held";
/// Requests that joined a cold start under way.
pub const COALESCED_JOINS: &str = "scale_from_zero_coalesced_joins_total";
/// Requests the middleware answered itself, by status.
pub const REFUSALS: &str = "scale_from_zero_refusals_total";
/// Provider calls by operation and outcome.
pub const PROVIDER_CALLS: &str = "scale_from_zero_provider_calls_total";
/// Provider call durations by operation.
pub const PROVIDER_CALL_DURATION: &str = "scale_from_zero_provider_call_duration_seconds";
/// Scale to zero attempts by outcome.
pub const SCALE_DOWNS: &str = "scale_from_zero_scale_downs_total";
/// Requests served from a function's last known state while its provider failed.
pub const STALE_SERVES: &str = "scale_from_zero_stale_serves_total";

pub(crate) fn cold_start(function: &FunctionId, ready: bool, took: Duration) {
    let name = function.to_string();
    let outcome = if ready { "ready" } else { "failed" };
    counter!(COLD_STARTS, "function" => name.clone(), "outcome" => outcome).increment(1);
    if ready {
        histogram!(COLD_START_DURATION, "function" => name).record(took.as_secs_f64());
    }
}

pub(crate) fn held_gauge(function: &FunctionId) -> Gauge {
    gauge!(REQUESTS_HELD, "function" => function.to_string())
}

pub(crate) fn coalesced_join() {
    counter!(COALESCED_JOINS).increment(1);
}

pub(crate) fn refusal(status: http::StatusCode) {
    counter!(REFUSALS, "status" => status.as_str().to_owned()).increment(1);
}

pub(crate) fn provider_call(operation: &'static str, outcome: &'static str, took: Duration) {
    counter!(PROVIDER_CALLS, "operation" => operation, "outcome" => outcome).increment(1);
    histogram!(PROVIDER_CALL_DURATION, "operation" => operation).record(took.as_secs_f64());
}

pub(crate) fn scale_down(function: &FunctionId, outcome: &'static str) {
    counter!(SCALE_DOWNS, "function" => function.to_string(), "outcome" => outcome).increment(1);
}

pub(crate) fn stale_serve(function: &FunctionId) {
    counter!(STALE_SERVES, "function" => function.to_string()).increment(1);
}
