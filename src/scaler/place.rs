//! [`Place`]: one place under a counted limit (the provider-call queue); [`HoldPlace`]: a
//! held request's place under the total hold limits, in count and bytes.

use std::sync::Arc;

use crate::sync::{add_within, AtomicUsize, Ordering};

/// One place under a counted limit, given back on drop.
pub(super) struct Place<'a>(&'a AtomicUsize);

impl<'a> Place<'a> {
    /// A place, if fewer than `limit` are taken.
    pub(super) fn take(count: &'a AtomicUsize, limit: usize) -> Option<Self> {
        // `then`, not `then_some`: a place built and dropped on refusal would give back one
        // it never took (loom found it).
        add_within(count, 1, limit).then(|| Self(count))
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The requests waiting for cold functions, all together, and the bytes they keep: what
/// the total hold limits bound.
#[derive(Debug)]
pub(crate) struct Holds {
    count: AtomicUsize,
    bytes: AtomicUsize,
}

impl Default for Holds {
    fn default() -> Self {
        Self {
            count: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
        }
    }
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
    bytes: u32,
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
        bytes: u32,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Self, Full> {
        let Some(place) = Place::take(&holds.count, max_count) else {
            return Err(Full::Count);
        };
        if !add_within(&holds.bytes, bytes as usize, max_bytes) {
            return Err(Full::Bytes);
        }
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
        self.holds
            .bytes
            .fetch_sub(self.bytes as usize, Ordering::AcqRel);
        self.holds.count.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(all(test, sfz_loom))]
mod loom_tests {
    use super::*;

    /// Three requests race for two places and their bytes: never more than the limits are
    /// taken, a refusal takes nothing, and every place comes back.
    #[test]
    fn held_places_stay_within_their_limits_and_all_come_back() {
        loom::model(|| {
            let holds = Arc::new(Holds::default());
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    let holds = Arc::clone(&holds);
                    loom::thread::spawn(move || {
                        if let Ok(place) = HoldPlace::take(&holds, 10, 2, 25) {
                            assert!(holds.count() <= 2);
                            assert!(holds.bytes.load(Ordering::Acquire) <= 25);
                            drop(place);
                        }
                    })
                })
                .collect();
            let mine = HoldPlace::take(&holds, 10, 2, 25);
            assert!(holds.count() <= 2);
            drop(mine);
            for racer in racers {
                racer.join().unwrap();
            }
            assert_eq!(holds.count(), 0);
            assert_eq!(holds.bytes.load(Ordering::Acquire), 0);
        });
    }

    /// A place refused for its bytes gives back the count it took first.
    #[test]
    fn a_place_refused_for_its_bytes_leaves_no_count_behind() {
        loom::model(|| {
            let holds = Arc::new(Holds::default());
            let other = {
                let holds = Arc::clone(&holds);
                loom::thread::spawn(move || drop(HoldPlace::take(&holds, 20, 5, 25)))
            };
            let mine = HoldPlace::take(&holds, 20, 5, 25);
            drop(mine);
            other.join().unwrap();
            assert_eq!(holds.count(), 0);
            assert_eq!(holds.bytes.load(Ordering::Acquire), 0);
        });
    }
}
