//! [`ServiceQuery`](crate::ServiceQuery) implementations for real platforms, each behind a
//! cargo feature:
//!
//! - `openfaas`: [`OpenFaasProvider`], the OpenFaaS provider HTTP API (faas-netes, faasd).
//! - `process`: [`ProcessProvider`], functions that are local commands started on demand.
//! - `kubernetes`: [`KubernetesProvider`], labelled Deployments in a Kubernetes cluster, with
//!   state from watches and readiness pushed from EndpointSlices.

#[cfg(feature = "kubernetes")]
#[cfg_attr(docsrs, doc(cfg(feature = "kubernetes")))]
pub mod kubernetes;
#[cfg(feature = "openfaas")]
#[cfg_attr(docsrs, doc(cfg(feature = "openfaas")))]
pub mod openfaas;
#[cfg(feature = "process")]
#[cfg_attr(docsrs, doc(cfg(feature = "process")))]
pub mod process;

#[cfg(feature = "kubernetes")]
pub use kubernetes::KubernetesProvider;
#[cfg(feature = "openfaas")]
pub use openfaas::OpenFaasProvider;
#[cfg(feature = "process")]
pub use process::{ProcessProvider, ProcessSpec};
