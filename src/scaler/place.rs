//! [`Place`]: one place under a counted limit (the provider-call queue); [`HoldPlace`]: a
//! held request's place under the total hold limits, in count and bytes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One place under a counted limit, given back on drop.
pub(super) struct Place<'a>(&'a AtomicUsize);

impl<'a> Place<'a> {
    /// A place, if fewer than `limit` are taken.
    pub(super) fn take(count: &'a AtomicUsize, limit: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(count))
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The requests waiting for cold functions, all together, and the bytes they keep: what
/// the total hold limits bound.
#[derive(Debug, Default)]
pub(crate) struct Holds {
    count: AtomicUsize,
    bytes: AtomicUsize,
}

impl Holds {
    /// Requests holding a place now.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

/// One held request's place under the total hold limits, in count and in bytes, given back
/// on drop. Owned, so that it can travel with the request past its release: a request that
/// waits for a paced release keeps it until it is forwarded.
#[derive(Debug)]
pub(crate) struct HoldPlace {
    holds: Arc<Holds>,
    bytes: usize,
}

/// Which total limit refused a place.
pub(super) enum Full {
    Count,
    Bytes,
}

impl HoldPlace {
    /// A place for a request that keeps `bytes`, if fewer than `max_count` are held and
    /// `bytes` more stay within `max_bytes`.
    pub(super) fn take(
        holds: &Arc<Holds>,
        bytes: usize,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Self, Full> {
        let Some(place) = Place::take(&holds.count, max_count) else {
            return Err(Full::Count);
        };
        holds
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&total| total <= max_bytes)
            })
            .map_err(|_| Full::Bytes)?;
        // The count is given back by `HoldPlace`'s drop from here on.
        std::mem::forget(place);
        Ok(Self {
            holds: Arc::clone(holds),
            bytes,
        })
    }
}

impl Drop for HoldPlace {
    fn drop(&mut self) {
        self.holds.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.holds.count.fetch_sub(1, Ordering::AcqRel);
    }
}
