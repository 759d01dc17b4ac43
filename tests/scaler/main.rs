//! The scaler's behaviour through the layer, on paused time: warm path, cold starts and their
//! coalescing, hold limits and deadlines, provider failures and protection, pushed readiness,
//! scale to zero, drains, the lifecycle's defects of docs/behaviour.md §11, and random schedules.

#[path = "../support/mod.rs"]
mod support;

mod client_disconnect;
mod cold_start_coalescing;
mod cold_start_ownership;
mod drain;
mod draining_replicas;
mod flight_healing;
mod hold_limits;
mod lifecycle;
mod property;
mod provider_failures;
mod provider_protection;
mod readiness_push;
mod request_deadlines;
mod scale_to_zero;
mod scale_write_completion;
mod warm_path;
