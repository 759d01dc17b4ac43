//! [`Place`]: one place under a counted limit (a hold queue, the provider-call queue);
//! [`Places`]: several (the bytes a held request keeps).

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

/// `n` units under a limit (bytes), given back on drop.
pub(super) struct Places<'a>(&'a AtomicUsize, usize);

impl<'a> Places<'a> {
    /// `n` units, if `n` more stay within `limit`.
    pub(super) fn take(count: &'a AtomicUsize, n: usize, limit: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|&total| total <= limit)
            })
            .ok()
            .map(|_| Self(count, n))
    }
}

impl Drop for Places<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::AcqRel);
    }
}
