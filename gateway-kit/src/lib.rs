//! The building blocks of `tower-scale-from-zero`'s example gateways, by job. Dev-only (never
//! published): the examples, their end-to-end tests and the gateway benchmarks share it, so
//! none of them includes another's source.
//!
//! - [`cli`]: the command line ([`cli::Options`], clap).
//! - [`functions`]: the user's local functions (`--function NAME=COMMAND`, the TOML file).
//! - [`platform`]: local processes, OpenFaaS or Kubernetes, and the scaler over it.
//! - [`gateway`]: what a route needs: the layer, `forward`, `/metrics`.
//! - [`proxy`]: the streaming reverse proxy.
//! - [`logs`], [`metrics`], [`shutdown`], [`start`] (the common start of both examples' `main`):
//!   process plumbing.
//! - [`hello`]: the bundled `hello-world` function (the gateway binary in function mode).
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod cli;
pub mod functions;
pub mod gateway;
pub mod hello;
pub mod logs;
pub mod metrics;
pub mod platform;
pub mod proxy;
pub mod shutdown;
pub mod start;

pub use cli::Options;
pub use gateway::Gateway;
pub use start::run;
