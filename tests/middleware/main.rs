//! The layer as a tower citizen: the `Service` contract, composition with tower and axum,
//! hostile names, cold-start marks and headers, error responses and logs, metrics and traces.

#[path = "../support/mod.rs"]
mod support;

mod clients;
mod cold_start_header;
mod composition;
mod error_reporting;
mod hostile_names;
mod metrics;
mod paced_release;
mod tower_contract;
mod tracing_spans;
mod upstream_refused;
