//! Scale-from-zero for any [tower] HTTP service.
//!
//! When a request arrives for a function (a backend service) that has no running replica,
//! [`ScaleFromZero`] asks the platform to start one through a [`ServiceQuery`], holds the
//! request until a replica is ready, then forwards it. Requests for warm functions pass
//! straight through; requests for no function (health checks, UI) are not touched.
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_scale_from_zero::testing::{FakeFunction, InMemoryProvider};
//! use tower_scale_from_zero::{FunctionId, FunctionScaler, ScaleFromZeroLayer, ScalingConfig};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // A platform with one function, scaled to zero.
//! let provider = Arc::new(InMemoryProvider::new());
//! provider.add_function(&FunctionId::new("echo", "openfaas-fn").unwrap(), FakeFunction::new());
//!
//! let scaler = FunctionScaler::new(provider.clone(), ScalingConfig::default());
//! let gateway = ServiceBuilder::new()
//!     .layer(ScaleFromZeroLayer::new(scaler))
//!     .service(service_fn(|_: Request<String>| async {
//!         Ok::<_, Infallible>(Response::new(String::from("hello")))
//!     }));
//!
//! let response = gateway.clone().oneshot(Request::get("/function/echo").body(String::new()).unwrap());
//! assert_eq!(response.await.unwrap().status(), StatusCode::OK);
//! assert_eq!(provider.successful_sets(), 1);
//!
//! let response = gateway.oneshot(Request::get("/function/nope").body(String::new()).unwrap());
//! assert_eq!(response.await.unwrap().status(), StatusCode::NOT_FOUND);
//! # }
//! ```
//!
//! # Parts
//!
//! The crate root holds what a gateway author uses: the layer ([`ScaleFromZeroLayer`],
//! [`ScaleFromZero`]), the scaler ([`FunctionScaler`], [`ScalerBuilder`]) and its
//! [`ScalingConfig`], the provider interface ([`ServiceQuery`], [`ServiceQueryResponse`],
//! [`QueryError`], [`IdlePolicy`]), errors and their responses ([`ScaleError`],
//! [`ErrorResponder`], [`DefaultResponder`]), [`ReadinessNotifier`] and [`FunctionId`].
//! Everything else lives in its module:
//!
//! - [`middleware`]: the layer, its [`future::ResponseFuture`](middleware::future::ResponseFuture),
//!   the [`ColdStart`](middleware::ColdStart) request extension and
//!   [`UpgradeActivity`](middleware::UpgradeActivity).
//! - [`scaler`]: the algorithm without HTTP; [`Stats`](scaler::Stats) and the
//!   [`Phase`](scaler::Phase) of each function.
//! - [`query`]: the platform interface.
//! - [`activity`]: [`ActivityStore`](activity::ActivityStore), shared by several gateways.
//! - [`cache`]: [`FunctionCacher`](cache::FunctionCacher) and its default
//!   [`TtlCache`](cache::TtlCache).
//! - [`single_flight`]: [`SingleFlight`](single_flight::SingleFlight), one computation per
//!   key, cancellation-safe: the coalescing utility the scaler is built on.
//! - [`extract`]: which function a request is for; [`function`]: names and their validation.
//! - [`error`]: [`ScaleError`], statuses, and [`ErrorResponder`].
//! - [`config`]: [`ScalingConfig`], its builder and its defaults.
//! - [`body`]: the response body of the layer.
//! - [`telemetry`]: the metrics and traces it reports.
//! - `testing` (feature `test-util`): an in-memory provider with failure injection.
//! - `providers`: `OpenFaasProvider` (feature `openfaas`), `ProcessProvider` (feature
//!   `process`) and `KubernetesProvider` (feature `kubernetes`).
//!
//! # Runtime
//!
//! Cold starts spawn Tokio tasks and use `tokio::time`: the service must run inside a Tokio
//! runtime with the time driver enabled. Warm requests need neither.
//!
//! [tower]: https://docs.rs/tower
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod activity;
pub mod body;
mod bounded;
pub mod cache;
pub mod config;
pub mod error;
pub mod extract;
pub mod function;
pub mod middleware;
#[cfg(any(feature = "openfaas", feature = "process", feature = "kubernetes"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "openfaas", feature = "process", feature = "kubernetes")))
)]
pub mod providers;
pub mod query;
pub mod scaler;
pub mod single_flight;
mod sync;
pub mod telemetry;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;
mod util;

// What a gateway author uses; everything else is reached through its module.
pub use config::ScalingConfig;
pub use error::{DefaultResponder, ErrorKind, ErrorResponder, ScaleError};
pub use function::FunctionId;
pub use middleware::{ScaleFromZero, ScaleFromZeroLayer};
pub use query::{IdlePolicy, QueryError, QueryErrorKind, ServiceQuery, ServiceQueryResponse};
pub use scaler::{FunctionScaler, ReadinessNotifier, ScalerBuilder};

/// Re-exported so that providers need no dependency of their own to implement
/// [`ServiceQuery`].
pub use async_trait::async_trait;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
