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
//!
//! # The first forward after a cold start
//!
//! "Ready" on the platform is not always "routable" yet (a Service's endpoints, a proxy's
//! routes and a process's listener lag behind by milliseconds). With
//! [`ScaleFromZeroLayer::mark_cold_starts`], a request that waited for a cold start carries a
//! [`ColdStart`] extension when it reaches the inner service. A
//! forwarding service should retry such a request when the upstream refuses the connection,
//! a few times within a short bound (e.g. 5 tries over at most 1 s), if its body is empty or
//! can be replayed; and call [`FunctionScaler::evict`](crate::FunctionScaler::evict) when an
//! upstream refuses, so that the next request checks the function again instead of trusting
//! the cache.
//!
//! ```
//! use http::Request;
//! use tower_scale_from_zero::middleware::ColdStart;
//!
//! fn may_retry_refused_connection<B>(request: &Request<B>) -> bool {
//!     request.extensions().get::<ColdStart>().is_some()
//! }
//! # assert!(!may_retry_refused_connection(&Request::new(())));
//! ```

pub mod clients;
mod cold_start;
pub mod future;
mod layer;
pub mod pacing;
mod service;

pub use self::clients::WaitingPage;
pub use self::cold_start::ColdStart;
pub use self::future::ResponseFuture;
pub use self::layer::ScaleFromZeroLayer;
pub use self::pacing::PacedRelease;
pub use self::service::ScaleFromZero;
