//! [`BoundedMap`]: a concurrent map from functions to values, bounded in number. A new key in
//! a full map replaces the oldest-inserted entry that may go, in O(1) amortised: never a scan
//! of every entry, so that a spray of random names cannot turn into a CPU or lock storm. The
//! cache of replica states and the records of the scaler are both one.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use dashmap::DashMap;

use crate::function::FunctionRef;
use crate::util::lock;
use crate::FunctionId;

/// How many entries that may not go a full map passes over to make room, before it lets
/// itself overflow rather than scan.
const EVICTION_TRIES: usize = 8;

pub(crate) struct BoundedMap<V> {
    // foldhash, seeded per process: several times cheaper than SipHash on short names, which
    // matters on the warm path; names are validated DNS labels of at most 63 bytes.
    entries: DashMap<FunctionId, V, foldhash::fast::RandomState>,
    // Keys in insertion order, for eviction. It may hold keys removed since (skipped when
    // met) and is compacted when it grows past twice the capacity. Only inserts of new keys
    // and evictions take this lock; look-ups and updates of present keys never do.
    order: Mutex<VecDeque<FunctionId>>,
    // Counted here: `DashMap::len` locks every shard.
    len: AtomicUsize,
    capacity: usize,
}

impl<V> BoundedMap<V> {
    /// At most `capacity` entries (0: the map keeps nothing; see [`insert`](Self::insert)).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            order: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            capacity,
        }
    }

    /// `f` applied to `function`'s value under the map's read lock (keep it short: no lock,
    /// no spawn); `None` when it has none.
    #[inline]
    pub(crate) fn with<R>(&self, function: FunctionRef<'_>, f: impl FnOnce(&V) -> R) -> Option<R> {
        function
            .with_key(|key| self.entries.get(key).map(|entry| f(entry.value())))
            .flatten()
    }

    /// Sets `function`'s value (in a full map, first making room: see
    /// [`make_room`](Self::make_room)). With a capacity of 0 nothing is kept.
    pub(crate) fn insert(&self, function: &FunctionId, value: V, may_go: impl Fn(&V) -> bool) {
        if self.capacity == 0 {
            return;
        }
        // The common case, a refresh of a present key: no eviction, no ring.
        if self.entries.insert(function.clone(), value).is_none() {
            self.inserted(function, may_go);
        }
    }

    /// `function`'s value, made by `make` if it has none (in a full map, making room first).
    /// The map keeps it even with a capacity of 0 (the records' case never has one).
    pub(crate) fn get_or_insert_with(
        &self,
        function: &FunctionId,
        make: impl FnOnce() -> V,
        may_go: impl Fn(&V) -> bool,
    ) -> V
    where
        V: Clone,
    {
        if let Some(value) = self.with(function.as_function_ref(), V::clone) {
            return value;
        }
        let mut inserted = false;
        let value = self
            .entries
            .entry(function.clone())
            .or_insert_with(|| {
                inserted = true;
                make()
            })
            .value()
            .clone();
        if inserted {
            self.inserted(function, may_go);
        }
        value
    }

    pub(crate) fn remove(&self, function: FunctionRef<'_>) -> Option<V> {
        let removed = function
            .with_key(|key| self.entries.remove(key).map(|(_, value)| value))
            .flatten();
        if removed.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Keeps the entries `keep` says stay.
    pub(crate) fn retain(&self, keep: impl Fn(&V) -> bool) {
        let mut dropped = 0;
        self.entries.retain(|_, value| {
            let stays = keep(value);
            dropped += usize::from(!stays);
            stays
        });
        self.len.fetch_sub(dropped, Ordering::Relaxed);
    }

    /// Every value, copied out (no lock is held while the caller works on them).
    pub(crate) fn values(&self) -> Vec<V>
    where
        V: Clone,
    {
        self.entries
            .iter()
            .map(|entry| entry.value().clone())
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// `function` was just inserted: it joins the ring, and a full map makes room.
    fn inserted(&self, function: &FunctionId, may_go: impl Fn(&V) -> bool) {
        let len = self.len.fetch_add(1, Ordering::Relaxed) + 1;
        let mut order = lock(&self.order);
        order.push_back(function.clone());
        if len > self.capacity {
            self.make_room(&mut order, function, may_go);
        }
        if order.len() >= self.capacity.saturating_mul(2).max(64) {
            // Keys removed since, and repeats of re-inserted ones: O(n) once per n inserts.
            let mut seen = HashSet::with_capacity(order.len());
            order.retain(|key| self.entries.contains_key(key) && seen.insert(key.clone()));
        }
    }

    /// Removes the oldest-inserted entry that `may_go` allows, other than `kept` (the one
    /// just inserted): keys removed since they were queued are dropped from the ring as they
    /// are met (each once: O(1) amortised); entries that may not go are passed over and
    /// queued again, a few at most, after which the map overflows rather than scan. The
    /// oldest insertion is the nearest expiry unless it was refreshed since.
    fn make_room(
        &self,
        order: &mut VecDeque<FunctionId>,
        kept: &FunctionId,
        may_go: impl Fn(&V) -> bool,
    ) {
        let mut passed = 0;
        while passed < EVICTION_TRIES {
            let Some(oldest) = order.pop_front() else {
                return;
            };
            if !self.entries.contains_key(&oldest) {
                continue;
            }
            if oldest != *kept && self.entries.remove_if(&oldest, |_, v| may_go(v)).is_some() {
                self.len.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            order.push_back(oldest);
            passed += 1;
        }
    }

    /// Keys in the ring (for tests).
    #[cfg(test)]
    pub(crate) fn ring_len(&self) -> usize {
        lock(&self.order).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> FunctionId {
        FunctionId::new(&format!("f{n}"), "fn").unwrap()
    }

    #[test]
    fn a_full_map_replaces_its_oldest_entry_that_may_go() {
        let map = BoundedMap::new(3);
        for n in 0..3 {
            map.insert(&id(n), n, |_| true);
        }
        // f0 may not go: f1 makes room.
        map.insert(&id(3), 3, |&v| v != 0);
        assert_eq!(map.len(), 3);
        assert!(map.with(id(0).as_function_ref(), |_| ()).is_some());
        assert!(map.with(id(1).as_function_ref(), |_| ()).is_none());
    }

    #[test]
    fn a_map_of_entries_that_may_not_go_overflows_but_keeps_the_new_one() {
        let map = BoundedMap::new(2);
        for n in 0..20 {
            let value = map.get_or_insert_with(&id(n), || n, |_| false);
            assert_eq!(value, n);
        }
        assert_eq!(map.len(), 20);
        assert!(map.ring_len() < 64);
        map.retain(|&v| v >= 18);
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn removing_and_inserting_again_does_not_grow_the_ring() {
        let map = BoundedMap::new(4);
        for _ in 0..10_000 {
            map.insert(&id(0), 0, |_| true);
            map.remove(id(0).as_function_ref());
        }
        assert!(map.ring_len() <= 64);
        assert_eq!(map.len(), 0);
    }

    #[test]
    fn a_capacity_of_zero_keeps_nothing_inserted() {
        let map = BoundedMap::new(0);
        map.insert(&id(0), 0, |_| true);
        assert_eq!(map.len(), 0);
    }
}
