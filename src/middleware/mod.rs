//! The tower middleware: [`ScaleFromZeroLayer`] and [`ScaleFromZero`].
//!
//! Requests for a warm function (a fresh cache entry with an available replica) go straight to
//! the inner service: no provider call, allocation, spawn or box. Requests for a cold function
//! wait for [`FunctionScaler::scale`](crate::FunctionScaler::scale) and are forwarded once it
//! succeeds; otherwise they are answered by the [`ErrorResponder`](crate::ErrorResponder) and
//! never forwarded. Requests that name no function pass through untouched.
//!
//! The service's error type is the inner one: scale failures are responses, so axum takes the
//! layer without `HandleErrorLayer`.
//!
//! # Readiness
//!
//! `poll_ready` delegates to the inner service. A request that has to wait for a cold start
//! gives back the inner readiness it was called with (a `ConcurrencyLimit` permit, a `Buffer`
//! slot) and asks a clone of the inner service for readiness again once the function is ready,
//! so waiting requests hold no inner capacity.

mod future;
mod layer;
mod service;

pub use self::future::ResponseFuture;
pub use self::layer::ScaleFromZeroLayer;
pub use self::service::ScaleFromZero;
