//! The replica-state cache: the [`FunctionCacher`] trait and its default, [`TtlCache`].

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::bounded::BoundedMap;
use crate::function::FunctionRef;
use crate::util::far_instant;
use crate::{FunctionId, ServiceQueryResponse};

/// Remembers functions' replica states so that requests for warm functions skip the provider.
///
/// `get` runs on every request for a function: it must be cheap and must not block. Entries a
/// cacher returns are trusted as fresh; expiry is the cacher's business. The warm path asks
/// before it validates the name (it validates on a miss), so a cacher may be asked about names
/// that are not valid function names; only valid ones are ever `set`, and a cacher must match
/// names and namespaces exactly.
pub trait FunctionCacher: Send + Sync + 'static {
    /// The cached state of `function`, if it is known and fresh.
    fn get(&self, function: FunctionRef<'_>) -> Option<ServiceQueryResponse>;

    /// Records the state the provider reported for `function`.
    fn set(&self, function: &FunctionId, state: ServiceQueryResponse);

    /// Forgets `function`.
    fn invalidate(&self, function: FunctionRef<'_>);

    /// Whether a fresh, ready state of `function` is cached: the warm path's question.
    /// The default asks [`get`](Self::get); a cacher can answer without copying the state.
    fn is_ready(&self, function: FunctionRef<'_>) -> bool {
        self.get(function).is_some_and(|state| state.is_ready())
    }

    /// How many entries the cacher holds, if it counts them. The default says `None`.
    fn entry_count(&self) -> Option<usize> {
        None
    }
}

impl<T: FunctionCacher + ?Sized> FunctionCacher for std::sync::Arc<T> {
    fn get(&self, function: FunctionRef<'_>) -> Option<ServiceQueryResponse> {
        (**self).get(function)
    }

    fn set(&self, function: &FunctionId, state: ServiceQueryResponse) {
        (**self).set(function, state);
    }

    fn invalidate(&self, function: FunctionRef<'_>) {
        (**self).invalidate(function);
    }

    fn is_ready(&self, function: FunctionRef<'_>) -> bool {
        (**self).is_ready(function)
    }

    fn entry_count(&self) -> Option<usize> {
        (**self).entry_count()
    }
}

/// The default [`FunctionCacher`]: entries expire `ttl` after they were written, and the cache
/// holds about `capacity` entries at most (a few more under concurrent writes).
///
/// When full, a new entry replaces the oldest-inserted one in O(1) amortised time. Function names
/// come from untrusted URLs, so neither memory nor the cost of an insert may grow with them.
/// Uses `tokio::time::Instant`, so paused test time applies.
pub struct TtlCache {
    map: TtlMap<ServiceQueryResponse>,
}

impl TtlCache {
    /// A cache whose entries live for `ttl`, holding about `capacity` of them.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            map: TtlMap::new(ttl, capacity),
        }
    }

    /// The number of entries, fresh or expired.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for TtlCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TtlCache")
            .field("ttl", &self.map.ttl)
            .field("capacity", &self.map.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl FunctionCacher for TtlCache {
    fn get(&self, function: FunctionRef<'_>) -> Option<ServiceQueryResponse> {
        self.map.get(function)
    }

    fn is_ready(&self, function: FunctionRef<'_>) -> bool {
        self.map.test(function, ServiceQueryResponse::is_ready)
    }

    fn set(&self, function: &FunctionId, state: ServiceQueryResponse) {
        self.map.insert(function, state);
    }

    fn invalidate(&self, function: FunctionRef<'_>) {
        self.map.remove(function);
    }

    fn entry_count(&self) -> Option<usize> {
        Some(self.len())
    }
}

/// A bounded map whose entries expire; shared by [`TtlCache`] and the scaler's "not found"
/// cache. Each entry holds the instant it expires: a hit costs one clock read and one
/// comparison.
pub(crate) struct TtlMap<V> {
    map: BoundedMap<(Instant, V)>,
    ttl: Duration,
    capacity: usize,
}

impl<V: Clone> TtlMap<V> {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            map: BoundedMap::new(capacity),
            ttl,
            capacity,
        }
    }

    pub(crate) fn get(&self, function: FunctionRef<'_>) -> Option<V> {
        self.map
            .with(function, |(expires, value)| {
                (Instant::now() < *expires).then(|| value.clone())
            })
            .flatten()
    }

    /// Whether a fresh entry for `function` passes `test`, without copying it.
    pub(crate) fn test(&self, function: FunctionRef<'_>, test: impl FnOnce(&V) -> bool) -> bool {
        self.map
            .with(function, |(expires, value)| {
                Instant::now() < *expires && test(value)
            })
            .unwrap_or(false)
    }

    pub(crate) fn insert(&self, function: &FunctionId, value: V) {
        // A TTL too long to represent means "never expires" (about a century). Any entry
        // may go to make room: the oldest insertion is the nearest expiry.
        let expires = far_instant(Instant::now(), self.ttl);
        self.map.insert(function, (expires, value), |_| true);
    }

    pub(crate) fn remove(&self, function: FunctionRef<'_>) {
        self.map.remove(function);
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> FunctionId {
        FunctionId::new(name, "fn").unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_ttl() {
        let cache = TtlCache::new(Duration::from_millis(250), 10);
        cache.set(&id("a"), ServiceQueryResponse::new(1, 1));
        tokio::time::advance(Duration::from_millis(249)).await;
        assert!(cache.get(FunctionRef::new("a", "fn")).is_some());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(cache.get(FunctionRef::new("a", "fn")).is_none());
        // An expired entry is overwritten by the next answer.
        cache.set(&id("a"), ServiceQueryResponse::new(2, 2));
        assert_eq!(
            cache
                .get(FunctionRef::new("a", "fn"))
                .unwrap()
                .available_replicas,
            2
        );
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn capacity_bounds_entries() {
        let cache = TtlCache::new(Duration::from_secs(60), 100);
        for i in 0..1_000 {
            cache.set(&id(&format!("f{i}")), ServiceQueryResponse::new(1, 1));
        }
        assert!(cache.len() <= 100, "{}", cache.len());
        // The newest entry is always kept.
        assert!(cache.get(FunctionRef::new("f999", "fn")).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn full_cache_drops_expired_entries_first() {
        let cache = TtlCache::new(Duration::from_secs(1), 3);
        cache.set(&id("old"), ServiceQueryResponse::new(1, 1));
        tokio::time::advance(Duration::from_secs(2)).await;
        cache.set(&id("b"), ServiceQueryResponse::new(1, 1));
        cache.set(&id("c"), ServiceQueryResponse::new(1, 1));
        cache.set(&id("d"), ServiceQueryResponse::new(1, 1));
        for name in ["b", "c", "d"] {
            assert!(cache.get(FunctionRef::new(name, "fn")).is_some(), "{name}");
        }
    }

    #[test]
    fn a_huge_ttl_does_not_overflow() {
        let cache = TtlCache::new(Duration::MAX, 10);
        cache.set(&id("a"), ServiceQueryResponse::new(1, 1));
        assert!(cache.get(FunctionRef::new("a", "fn")).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_keeps_recently_inserted_entries() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        for i in 0..100 {
            cache.set(&id(&format!("f{i}")), ServiceQueryResponse::new(1, 1));
            assert!(cache.len() <= 10, "{}", cache.len());
        }
        // Oldest first: the last few inserted are all there.
        for i in 95..100 {
            assert!(cache
                .get(FunctionRef::new(&format!("f{i}"), "fn"))
                .is_some());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_and_reinsert_does_not_grow_the_ring() {
        let cache = TtlCache::new(Duration::from_secs(60), 4);
        for _ in 0..10_000 {
            cache.set(&id("a"), ServiceQueryResponse::new(1, 1));
            cache.invalidate(FunctionRef::new("a", "fn"));
        }
        assert!(cache.map.map.ring_len() <= 64);
        assert!(cache.is_empty());
    }

    #[test]
    fn invalidate_forgets() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        cache.set(&id("a"), ServiceQueryResponse::new(1, 1));
        cache.invalidate(FunctionRef::new("a", "fn"));
        assert!(cache.is_empty());
    }
}
