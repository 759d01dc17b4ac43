//! Inserting a new function into a full cache: `TtlCache` (the replica cache; the "not found"
//! cache shares its map) against the eviction it replaced, kept here as a reference: a
//! `retain` over every shard, then removing the first entry found. Every insert is a key the
//! cache does not hold, into a cache full of fresh entries: what a spray of random valid
//! names does. Time is per insert.
//!
//! `cargo bench --all-features --bench cache_insert_full`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dashmap::DashMap;
use tokio::time::Instant;
use tower_scale_from_zero::cache::FunctionCacher;
use tower_scale_from_zero::cache::TtlCache;
use tower_scale_from_zero::{FunctionId, ServiceQueryResponse};

const CAPACITIES: [usize; 2] = [10_000, 100_000];
const TTL: Duration = Duration::from_secs(3_600);

/// The previous eviction: O(capacity) per insert into a full map.
struct RetainScan {
    entries: DashMap<FunctionId, (Instant, ServiceQueryResponse)>,
    capacity: usize,
}

impl RetainScan {
    fn insert(&self, function: &FunctionId, value: ServiceQueryResponse) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(function) {
            let now = Instant::now();
            self.entries.retain(|_, (expires, _)| now < *expires);
            while self.entries.len() >= self.capacity {
                let victim = self.entries.iter().next().map(|e| e.key().clone());
                match victim {
                    Some(key) => {
                        self.entries.remove(&key);
                    }
                    None => break,
                }
            }
        }
        self.entries
            .insert(function.clone(), (Instant::now() + TTL, value));
    }
}

/// Twice the capacity: cycling through them, each key was evicted before it comes again.
fn keys(capacity: usize) -> Vec<FunctionId> {
    (0..2 * capacity)
        .map(|i| FunctionId::new(&format!("f{i}"), "openfaas-fn").unwrap())
        .collect()
}

fn cache_insert_full(c: &mut Criterion) {
    let mut group = c.benchmark_group("cache_insert_full (per insert)");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    let state = ServiceQueryResponse::new(1, 1);
    for capacity in CAPACITIES {
        let keys = keys(capacity);

        let cache = TtlCache::new(TTL, capacity);
        for key in &keys[..capacity] {
            cache.set(key, state.clone());
        }
        let mut next = capacity;
        group.bench_with_input(BenchmarkId::new("TtlCache", capacity), &capacity, |b, _| {
            b.iter(|| {
                cache.set(&keys[next], state.clone());
                next = (next + 1) % keys.len();
            })
        });
        assert!(cache.len() <= capacity);

        // The reference is ~1 000 times slower: fewer samples of it.
        let reference = RetainScan {
            entries: DashMap::new(),
            capacity,
        };
        for key in &keys[..capacity] {
            reference.insert(key, state.clone());
        }
        let mut next = capacity;
        group.bench_with_input(
            BenchmarkId::new("reference: retain scan", capacity),
            &capacity,
            |b, _| {
                b.iter(|| {
                    reference.insert(&keys[next], state.clone());
                    next = (next + 1) % keys.len();
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, cache_insert_full);
criterion_main!(benches);
