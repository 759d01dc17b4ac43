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
mod upgrade;

pub use self::clients::WaitingPage;
pub use self::cold_start::ColdStart;
pub use self::future::ResponseFuture;
pub use self::layer::ScaleFromZeroLayer;
pub use self::pacing::PacedRelease;
pub use self::service::ScaleFromZero;
pub use self::upgrade::UpgradeActivity;

/// What the layer itself keeps for each held request, beyond the request: its boxed wait,
/// the waiter's bookkeeping and the deadline entry (`benches/held_memory.rs` measures what
/// a held request keeps beyond its `Request`; this rounds it up, and the bench checks that
/// the count covers it).
pub const HELD_OVERHEAD: usize = 320;

/// What holding `req` keeps, in bytes, as counted against
/// [`max_held_bytes_per_function`](crate::config::ScalingConfigBuilder::max_held_bytes_per_function)
/// and [`max_held_bytes_total`](crate::config::ScalingConfigBuilder::max_held_bytes_total):
/// [`HELD_OVERHEAD`], the `Request` itself, its URI, each header's name and value (and 32
/// bytes of the map's own per entry), and 32 bytes per extension (their sizes are not
/// known). The body is never buffered by the layer: it stays with the connection and is
/// not counted.
///
/// ```
/// use tower_scale_from_zero::middleware::{held_bytes, HELD_OVERHEAD};
///
/// let small = http::Request::get("/function/f").body(()).unwrap();
/// let large = http::Request::get("/function/f")
///     .header("cookie", "x".repeat(4096))
///     .body(())
///     .unwrap();
/// assert!(held_bytes(&small) > HELD_OVERHEAD);
/// assert!(held_bytes(&large) > held_bytes(&small) + 4096);
/// ```
pub fn held_bytes<B>(req: &http::Request<B>) -> usize {
    const PER_ENTRY: usize = 32;
    let uri = req.uri();
    let uri_bytes = uri.scheme_str().map_or(0, str::len)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + PER_ENTRY)
        .sum();
    HELD_OVERHEAD
        + std::mem::size_of::<http::Request<B>>()
        + uri_bytes
        + headers
        + req.extensions().len() * PER_ENTRY
}
