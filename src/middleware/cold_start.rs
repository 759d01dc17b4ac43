use std::time::Duration;

/// A request extension: this request was held while its function started from cold, for
/// [`waited`](Self::waited). Added when the layer is built with
/// [`mark_cold_starts(true)`](crate::ScaleFromZeroLayer::mark_cold_starts), and only to
/// requests that waited for a cold start (not to warm ones, nor to refreshes of a warm
/// function's expired cache entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColdStart {
    waited: Duration,
}

impl ColdStart {
    pub(crate) const fn new(waited: Duration) -> Self {
        Self { waited }
    }

    /// How long the request was held.
    pub const fn waited(&self) -> Duration {
        self.waited
    }
}
