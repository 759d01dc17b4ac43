//! The replica-state cache: the [`FunctionCacher`] trait and its default, [`TtlCache`].

use std::fmt;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::function::Key;
use crate::{FunctionId, FunctionRef, ServiceQueryResponse};

/// Remembers functions' replica states so that requests for warm functions skip the provider.
///
/// `get` runs on every request for a function: it must be cheap and must not block. Entries a
/// cacher returns are trusted as fresh; expiry is the cacher's business.
pub trait FunctionCacher: Send + Sync + 'static {
    /// The cached state of `function`, if it is known and fresh.
    fn get(&self, function: FunctionRef<'_>) -> Option<ServiceQueryResponse>;

    /// Records the state the provider reported for `function`.
    fn set(&self, function: &FunctionId, state: ServiceQueryResponse);

    /// Forgets `function`.
    fn invalidate(&self, function: FunctionRef<'_>);
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
}

/// The default [`FunctionCacher`]: entries expire `ttl` after they were written, and the cache
/// holds about `capacity` entries at most (a few more under concurrent writes).
///
/// When full, it first drops expired entries, then an arbitrary one: function names come from
/// untrusted URLs, so memory must not grow with them. Uses `tokio::time::Instant`, so paused
/// test time applies.
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

    fn set(&self, function: &FunctionId, state: ServiceQueryResponse) {
        self.map.insert(function, state);
    }

    fn invalidate(&self, function: FunctionRef<'_>) {
        self.map.remove(function);
    }
}

/// A bounded map whose entries expire; shared by [`TtlCache`] and the scaler's "not found"
/// cache.
pub(crate) struct TtlMap<V> {
    // foldhash, seeded per process: several times cheaper than SipHash on short names, which
    // matters on the warm path; names are validated DNS labels of at most 63 bytes.
    // Each entry holds the instant it expires: a hit costs one clock read and one comparison.
    entries: DashMap<FunctionId, (Instant, V), foldhash::fast::RandomState>,
    ttl: Duration,
    capacity: usize,
}

impl<V: Clone> TtlMap<V> {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            ttl,
            capacity,
        }
    }

    pub(crate) fn get(&self, function: FunctionRef<'_>) -> Option<V> {
        let entry = self.entries.get(&function as &dyn Key)?;
        let (expires, value) = entry.value();
        (Instant::now() < *expires).then(|| value.clone())
    }

    pub(crate) fn insert(&self, function: &FunctionId, value: V) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(function) {
            self.make_room();
        }
        let now = Instant::now();
        // A TTL too long to represent means "never expires" (about a century).
        let expires = now
            .checked_add(self.ttl)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        self.entries.insert(function.clone(), (expires, value));
    }

    pub(crate) fn remove(&self, function: FunctionRef<'_>) {
        self.entries.remove(&function as &dyn Key);
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn make_room(&self) {
        let now = Instant::now();
        self.entries.retain(|_, (expires, _)| now < *expires);
        while self.entries.len() >= self.capacity {
            // Take the key first: no guard may be alive while the map is written.
            let victim = self.entries.iter().next().map(|e| e.key().clone());
            match victim {
                Some(key) => {
                    self.entries.remove(&key);
                }
                None => break,
            }
        }
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

    #[test]
    fn invalidate_forgets() {
        let cache = TtlCache::new(Duration::from_secs(60), 10);
        cache.set(&id("a"), ServiceQueryResponse::new(1, 1));
        cache.invalidate(FunctionRef::new("a", "fn"));
        assert!(cache.is_empty());
    }
}
