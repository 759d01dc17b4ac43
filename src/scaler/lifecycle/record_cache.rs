//! [`RecordCache`]: the default cache of replica states, kept in the records themselves, so
//! that a function's cache entry and its record are one entry of one map and the warm path
//! makes one look-up. A cache given to the [`ScalerBuilder`](crate::ScalerBuilder) is used
//! through [`FunctionCacher`] instead (the slower path: a second map).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{Record, Records};
use crate::cache::FunctionCacher;
use crate::function::FunctionRef;
use crate::{FunctionId, ServiceQueryResponse};

/// Entries live `ttl` after they were written (a zero TTL or capacity caches nothing), and
/// are bounded with the records.
pub(crate) struct RecordCache {
    records: Arc<Records>,
    ttl: Duration,
    on: bool,
}

impl RecordCache {
    pub(crate) fn new(records: Arc<Records>, ttl: Duration, capacity: usize) -> Self {
        Self {
            records,
            ttl,
            on: !ttl.is_zero() && capacity > 0,
        }
    }

    /// Caches `state` in `record` (the scaler's own sets: the record is in hand).
    pub(crate) fn set_in(&self, record: &Record, state: &ServiceQueryResponse) {
        if self.on {
            record.cache_set(state, self.ttl);
        }
    }

    /// The warm path's question, without the trait object's indirection.
    #[inline]
    pub(crate) fn ready(&self, function: FunctionRef<'_>) -> bool {
        self.records
            .with(function, |record| record.cached_ready())
            .unwrap_or(false)
    }
}

impl FunctionCacher for RecordCache {
    fn get(&self, function: FunctionRef<'_>) -> Option<ServiceQueryResponse> {
        // The record's lock is taken outside the map's.
        self.records.get(function)?.cached()
    }

    fn is_ready(&self, function: FunctionRef<'_>) -> bool {
        self.ready(function)
    }

    fn set(&self, function: &FunctionId, state: ServiceQueryResponse) {
        if !self.on {
            return;
        }
        // Only a user's own sets come here (the scaler's go to `set_in`); the scaler sets only
        // states it confirmed: the record exists already (made just
        // before); one made here is made as the scaler's own would be.
        let record = self
            .records
            .get_or_insert(function, |record| record.in_flight() == 0);
        self.set_in(&record, &state);
    }

    fn invalidate(&self, function: FunctionRef<'_>) {
        self.records.with(function, |record| record.cache_clear());
    }

    fn entry_count(&self) -> Option<usize> {
        Some(self.records.len())
    }
}

impl fmt::Debug for RecordCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordCache")
            .field("ttl", &self.ttl)
            .field("records", &self.records.len())
            .finish()
    }
}
