//! The life of a function, in one place: what the scaler knows of each function it saw, and
//! every move from one phase to the next.
//!
//! # Phases
//!
//! Each function the provider confirmed (a read or a push) has a [`Record`] whose [`Phase`]
//! is one of:
//!
//! | phase | means | requests |
//! |---|---|---|
//! | `Cold` | no replica wanted at the last read, no scale-up of ours pending | wait for a cold start |
//! | `ScalingUp` | starting: replicas wanted, none ready; or our scale-up was sent and no read has shown it yet | wait; a read that still says "desired 0" is lag, not a reason to ask again |
//! | `Warm` | ready at the last read or push | forwarded (the cache answers until its entry expires) |
//! | `ScalingDown` | our scale-down is under way | wait, each with its own deadline, then a fresh scale-up |
//! | `ScaledDown` | we scaled it to zero | wait for a fresh scale-up; "ready" reads from before are ignored |
//!
//! A function with no record is *unknown*; one the provider said does not exist is *gone*:
//! its record is dropped and its name remembered for `not_found_ttl` (404 without a call).
//!
//! # Moves
//!
//! Every move between phases is an arm of one transition function,
//! [`State::step`](state::State::step) (a phase's own data lives in its
//! [`State`](state::State) variant; the record mirrors the phase in an atomic
//! word for the warm path). The record's methods name the events; the flights and the reaper
//! decide when they happen. Moves that cannot happen in a phase change nothing and are logged;
//! a table test tries every event in every phase.
//!
//! | from | event | to | who sends the event |
//! |---|---|---|---|
//! | unknown | a read or push confirms it exists | `Cold` or `Warm` | [`Lifecycle::confirm`], [`Lifecycle::push`] |
//! | `Cold`, `ScalingUp`, `Warm` | a read or push says ready | `Warm` | [`Record::seen`] |
//! | `Cold`, `Warm` | a read or push says desired > 0, none ready | `ScalingUp` (starting) | [`Record::seen`] |
//! | `ScalingUp`, `Warm` | a read or push says desired 0 (and it is not our own write lagging) | `Cold` | [`Record::seen`] |
//! | `Cold`, `ScaledDown` | our scale-up is sent | `ScalingUp` | [`cold_start`](Lifecycle::cold_start) |
//! | `ScalingUp` | our scale-up failed | back to where it was | [`Record::scale_up_failed`] |
//! | `ScalingUp`, `Cold` | requests wait, reads say desired 0, and no write succeeded for a readiness deadline (lost, or undone by an operator), or the write relied on failed | `ScalingUp` (the scale-up sent again, at most once per readiness deadline) | [`cold_start`](Lifecycle::cold_start) |
//! | `ScalingDown` | a scale-up is sent | unchanged (cannot happen: the scale-down is the flight) | — |
//! | `Warm` | idle for its period, nothing in flight, no other gateway served it | `ScalingDown` | [`scale_down`](Lifecycle::scale_down) |
//! | `ScalingDown` | the platform scaled it down | `ScaledDown` | [`Record::scaled_down`] |
//! | `ScalingDown` | the platform refused, or the call failed | `Warm` (retried later, with backoff) | [`Record::scale_down_abandoned`] |
//! | `ScalingDown` | the call timed out or was cancelled (it may have happened) | `ScaledDown`, the last known state dropped | [`Record::scale_down_uncertain`], [`Record::scale_down_interrupted`] |
//! | `ScalingDown`, `ScaledDown` | a read or push says ready | unchanged (it is from before) | [`Record::seen`] |
//! | any | the provider says not found (a read, a scale-down) | gone | [`Lifecycle::gone`] |
//! | `Cold`, or `Warm` not opted in to scale to zero | quiet and idle | unknown (record dropped) | the reaper; a full map drops its oldest unused record |
//!
//! A record that carries an obligation (`ScalingUp`, `ScalingDown`, `ScaledDown`, or `Warm`
//! and opted in to scale to zero) is never dropped: the map may grow past its bound for them.
//!
//! Beside the phase, a `Warm` function whose refresh fails with a retryable error or a
//! timeout is in an *outage*: its requests are served from its last known state
//! (stale-if-error) until `stale_if_error` after it was last confirmed, refreshes backing off
//! meanwhile; the next successful read ends the outage.
//!
//! # Who moves it
//!
//! Requests ([`requests`]) take the warm path, or join the function's flight
//! ([`SingleFlight`]): one task per function at a time, that brings it up
//! ([`cold_start`](Lifecycle::cold_start)) or takes it down
//! ([`scale_down`](Lifecycle::scale_down)). A cold start belongs to the scaler, not to its
//! requests: it runs to its own outcome whatever they do (a waiting page shown, a disconnect),
//! or until none waits and the deadline of the last one that joined has passed, and it stops
//! with the scaler's last handle; a request's wait lives in
//! [`waiter`](super::waiter), the deadlines of a flight's waiters in
//! [`deadlines`](super::deadlines). Pushes ([`ReadinessNotifier`](crate::ReadinessNotifier)) move a
//! record directly and release the flight's waiters. The idle reaper looks for functions due
//! for scale to zero.

mod cold_start;
mod phase;
mod record;
mod record_cache;
pub(crate) mod requests;
mod scale_down;
mod state;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

pub use self::phase::Phase;
pub(crate) use self::record::{ActivityGuard, Record, Records, Trust};
pub(crate) use self::record_cache::RecordCache;
use self::scale_down::Reaper;
use super::flight::{FlightState, Outcome, Ready};
use super::provider_calls::ProviderCalls;
use super::waiter::Holding;
use crate::activity::ActivityStore;
use crate::cache::FunctionCacher;
use crate::cache::TtlMap;
use crate::function::FunctionRef;
use crate::single_flight::SingleFlight;
use crate::{FunctionId, ScalingConfig, ServiceQuery, ServiceQueryResponse};

/// Everything the scaler keeps, per function and in all: the one owner of function state.
pub(crate) struct Lifecycle {
    pub(crate) config: ScalingConfig,
    pub(crate) query: Arc<dyn ServiceQuery>,
    /// Fresh replica states: the warm path's question.
    pub(crate) cache: Arc<dyn FunctionCacher>,
    /// The default cache, when no cache of the user's was given (`cache` is it, too): the
    /// warm path asks it directly.
    pub(crate) own_cache: Option<Arc<RecordCache>>,
    /// Functions the provider confirmed.
    pub(crate) records: Arc<Records>,
    /// Functions the provider said do not exist, remembered briefly.
    gone: TtlMap<()>,
    /// One flight per function at a time.
    pub(crate) flights: SingleFlight<FunctionId, Outcome, FlightState>,
    /// What every waiter shares: the limits, the requests held and their bytes, whether a
    /// drain's budget is spent.
    pub(crate) holding: Holding,
    pub(crate) calls: ProviderCalls,
    /// Scale to zero on: requests in flight are counted and idle functions scaled down.
    pub(crate) tracking: bool,
    pub(crate) activity_store: Option<Arc<dyn ActivityStore>>,
    reaper: Reaper,
    /// Draining: no new cold start; and once the drain's budget is spent, waiting requests
    /// are answered 503.
    pub(crate) draining: AtomicBool,
}

impl Lifecycle {
    /// Without a `cache` of the user's, the default one lives in the records
    /// ([`RecordCache`]).
    pub(crate) fn new(
        query: Arc<dyn ServiceQuery>,
        cache: Option<Arc<dyn FunctionCacher>>,
        config: ScalingConfig,
        activity_store: Option<Arc<dyn ActivityStore>>,
    ) -> Self {
        let records = Arc::new(Records::new(config.cache_capacity().max(1_000)));
        let (cache, own_cache): (Arc<dyn FunctionCacher>, _) = match cache {
            Some(cache) => (cache, None),
            None => {
                let own = Arc::new(RecordCache::new(
                    Arc::clone(&records),
                    config.cache_ttl(),
                    config.cache_capacity(),
                ));
                (Arc::clone(&own) as Arc<dyn FunctionCacher>, Some(own))
            }
        };
        Self {
            query,
            cache,
            own_cache,
            records,
            gone: TtlMap::new(config.not_found_ttl(), config.not_found_capacity()),
            flights: SingleFlight::new(),
            holding: Holding::new(config.clone()),
            calls: ProviderCalls::new(&config),
            tracking: config.scale_to_zero(),
            activity_store,
            reaper: Reaper::default(),
            draining: AtomicBool::new(false),
            config,
        }
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether the provider said `function` does not exist, less than `not_found_ttl` ago.
    pub(crate) fn is_gone(&self, function: FunctionRef<'_>) -> bool {
        self.gone.get(function).is_some()
    }

    /// A read at `now` confirmed `function` exists: its record (made if new) takes the state.
    pub(crate) fn confirm(
        &self,
        function: &FunctionId,
        state: &ServiceQueryResponse,
        flight: &FlightState,
    ) -> (Arc<Record>, Trust) {
        let record = self.record(function);
        flight.confirmed(function);
        let seen = record.seen(state, Instant::now());
        if let Some(outage) = seen.recovered {
            tracing::info!(
                function = %function,
                "the provider answers again: {function} was served from its last known state for {}",
                crate::util::Millis(outage)
            );
        }
        if seen.trust == Trust::Ready {
            self.cache_set(&record, state);
        }
        (record, seen.trust)
    }

    /// Caches `state` for the function of `record`: with the default cache, in the record in
    /// hand (no second look-up, no copy handed over); otherwise through the user's cache.
    fn cache_set(&self, record: &Record, state: &ServiceQueryResponse) {
        match &self.own_cache {
            Some(cache) => cache.set_in(record, state),
            None => self.cache.set(record.id(), state.clone()),
        }
    }

    /// See [`FunctionScaler::id_of`](crate::FunctionScaler::id_of).
    pub(crate) fn id_of(&self, function: FunctionRef<'_>) -> FunctionId {
        if let Some(id) = function.with_key(|key| self.flights.key_of(key)).flatten() {
            return id;
        }
        if let Some(record) = self.records.get(function) {
            return record.id().clone();
        }
        function.to_function_id().expect("validated before")
    }

    /// The record of `function`, made if it has none. Only for functions the provider
    /// confirmed (a name becomes state here only then).
    pub(crate) fn record(&self, function: &FunctionId) -> Arc<Record> {
        self.records
            .get_or_insert(function, |record| self.is_unused(record))
    }

    /// Whether nothing refers to `record`: no request in flight, no flight, no scale-down.
    fn is_unused(&self, record: &Record) -> bool {
        record.in_flight() == 0
            && record.phase() != Phase::ScalingDown
            && self.flights.state(record.id()).is_none()
    }

    /// A state pushed by the provider: the record takes it (a push confirms the function
    /// exists), the cache too unless it is a "ready" from before our scale-down, and a ready
    /// state releases the requests waiting on the function's flight at once.
    pub(crate) fn push(&self, function: &FunctionId, state: ServiceQueryResponse) {
        let record = self.record(function);
        let seen = record.seen(&state, Instant::now());
        if seen.trust == Trust::Stale {
            return;
        }
        self.cache_set(&record, &state);
        if seen.trust == Trust::Ready {
            if let Some(flight) = self.flights.state(function) {
                flight.confirmed(function);
                flight.release(Ready::now(state, flight.is_cold()));
            }
        }
    }

    /// See [`ReadinessNotifier::notify_changed`](crate::ReadinessNotifier::notify_changed).
    pub(crate) fn changed(&self, function: &FunctionId) {
        self.cache.invalidate(function.as_function_ref());
        if let Some(flight) = self.flights.state(function) {
            flight.look_now();
        }
    }

    /// The provider says `function` does not exist: everything known of it goes, and its name
    /// is remembered briefly.
    pub(crate) fn gone(&self, function: &FunctionId) {
        let key = function.as_function_ref();
        if self.records.remove(key).is_some() {
            tracing::info!(function = %function, "function is gone from the platform; forgotten");
        }
        self.cache.invalidate(key);
        self.gone.insert(function, ());
    }
}

impl Lifecycle {
    /// The last handle of the scaler is gone: its background work stops (cold starts under
    /// way and the idle reaper; a scale write that was sent still runs to its own end).
    pub(crate) fn shut_down(&self) {
        self.reaper.stop();
        self.flights.abort_all();
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        self.reaper.stop();
    }
}

impl fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lifecycle")
            .field("config", &self.config)
            .field("functions", &self.records.len())
            .field("flights", &self.flights.len())
            .field("held", &self.holding.holds.count())
            .finish_non_exhaustive()
    }
}
