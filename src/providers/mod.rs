//! [`ServiceQuery`](crate::ServiceQuery) implementations for real platforms, each behind a
//! cargo feature:
//!
//! - `openfaas`: [`OpenFaasProvider`], the OpenFaaS provider HTTP API (faas-netes, faasd).
//! - `process`: [`ProcessProvider`], functions that are local commands started on demand.

#[cfg(feature = "openfaas")]
#[cfg_attr(docsrs, doc(cfg(feature = "openfaas")))]
pub mod openfaas;
#[cfg(feature = "process")]
#[cfg_attr(docsrs, doc(cfg(feature = "process")))]
pub mod process;

#[cfg(feature = "openfaas")]
pub use openfaas::OpenFaasProvider;
#[cfg(feature = "process")]
pub use process::{ProcessProvider, ProcessSpec};
