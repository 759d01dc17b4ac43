//! [`Place`]: one place under a counted limit (a hold queue, the provider-call queue).

use std::sync::atomic::{AtomicUsize, Ordering};

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
