//! What the test areas share. Each area (`tests/<area>/main.rs`) includes this module and
//! uses what it needs:
//!
//! - [`harness`]: an in-memory platform, a counting inner service and the gateway around them,
//!   for behaviour tests on paused time;
//! - [`runner`]: the runner of the `harness = false` binaries (libtest's command line, through
//!   libtest-mimic), free ports, and the example gateways as processes;
//! - [`faas_provider`]: a fake OpenFaaS provider on 127.0.0.1;
//! - [`fragile`]: a function of fixed capacity that refuses beyond it (paced release);
//! - [`netns`]: a private network namespace with only `lo` (control plane, browser).
#![allow(dead_code, unused_imports, unused_macros)]

#[cfg(feature = "openfaas")]
pub mod faas_provider;
pub mod fragile;
#[cfg(feature = "test-util")]
pub mod harness;
pub mod netns;
pub mod runner;
