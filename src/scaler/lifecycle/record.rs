//! [`Record`]: what the scaler knows of one function, its [`Phase`] and the moves between
//! phases; [`Records`], the bounded map of them; [`ActivityGuard`], a request in flight.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::phase::{Phase, PhaseWord};
use super::state::{Event, State, Told};
pub(crate) use super::state::{Seen, Stale, Trust};
use crate::bounded::BoundedMap;
use crate::function::FunctionRef;
use crate::util::{lock, Backoff};
use crate::{FunctionId, IdlePolicy, ServiceQueryResponse};

/// `IdlePolicy` in one atomic word.
const NEVER: u64 = 0;
const DEFAULT: u64 = u64::MAX;

fn encode(policy: IdlePolicy) -> u64 {
    match policy {
        IdlePolicy::Never => NEVER,
        IdlePolicy::AfterDefault => DEFAULT,
        // At least 1 ms, so that it is never read back as `Never`.
        IdlePolicy::After(period) => (period.as_millis() as u64).clamp(1, DEFAULT - 1),
    }
}

fn decode(word: u64) -> IdlePolicy {
    match word {
        NEVER => IdlePolicy::Never,
        DEFAULT => IdlePolicy::AfterDefault,
        ms => IdlePolicy::After(Duration::from_millis(ms)),
    }
}

/// `next_report` while a record is under way: never due.
const REPORTING: u64 = u64::MAX;

/// One function the provider confirmed: its phase and activity. The warm path reads the
/// atomics; the moves between phases take the small lock.
pub(crate) struct Record {
    id: FunctionId,
    epoch: Instant,
    /// Its phase, and its requests in flight (scale to zero on).
    word: PhaseWord,
    /// When the last one ended (ms since `epoch`).
    last_end: AtomicU64,
    policy: AtomicU64,
    /// When this gateway is next due to record activity in the shared store (ms since
    /// `epoch`); `REPORTING` while a record is under way.
    next_report: AtomicU64,
    report_failures: AtomicU32,
    /// With the default cache, the function's cached state lives here (one entry per
    /// function): until when it is fresh (ns since `epoch`) shifted left by one, and whether it
    /// is ready in the low bit; 0 when nothing is cached. The state itself is in `details`.
    cached: AtomicU64,
    details: Mutex<Details>,
}

/// What the record's lock guards: its state (the phase's own data), and what schedules its
/// scale-ups and scale-downs across phases.
struct Details {
    state: State,
    /// When a scale-up of this scaler's last succeeded (not cleared by reads): a scale-up
    /// that never shows is sent again at most once per readiness deadline after it.
    written_at: Option<Instant>,
    scale_down_failures: u32,
    /// No scale-down before (ms since `epoch`).
    scale_down_not_before: u64,
    /// With the default cache, the state cached (see `Record::cached`).
    cached: Option<ServiceQueryResponse>,
}

impl Record {
    fn new(id: FunctionId, epoch: Instant) -> Self {
        let now = ms_since(epoch);
        Self {
            id,
            epoch,
            word: PhaseWord::new(Phase::Cold),
            last_end: AtomicU64::new(now),
            policy: AtomicU64::new(NEVER),
            next_report: AtomicU64::new(0),
            report_failures: AtomicU32::new(0),
            cached: AtomicU64::new(0),
            details: Mutex::new(Details {
                state: State::Cold,
                written_at: None,
                scale_down_failures: 0,
                scale_down_not_before: 0,
                cached: None,
            }),
        }
    }

    pub(crate) fn id(&self) -> &FunctionId {
        &self.id
    }

    pub(crate) fn phase(&self) -> Phase {
        self.word.get()
    }

    /// Applies `event` to the record's state (its lock held: `details`), mirrors the new
    /// phase in the phase word, and logs a move that cannot happen in that phase.
    fn step(&self, details: &mut Details, event: Event<'_>) -> Told {
        let state = std::mem::replace(&mut details.state, State::Cold);
        let (next, told) = state.step(event);
        let phase = next.phase();
        details.state = next;
        if self.word.get() != phase {
            self.word.set(phase);
        }
        if matches!(told, Told::Ignored) {
            tracing::debug!(
                function = %self.id,
                phase = ?phase,
                "a move that cannot happen in phase {phase:?} was ignored"
            );
        }
        told
    }

    pub(crate) fn policy(&self) -> IdlePolicy {
        decode(self.policy.load(Ordering::Relaxed))
    }

    /// Milliseconds on this record's clock.
    pub(crate) fn now_ms(&self) -> u64 {
        ms_since(self.epoch)
    }

    // --- reads and pushes --------------------------------------------------------------------

    /// A state read from the provider or pushed by it at `now`: the latest idle policy
    /// replaces the old one at once, and the state moves as [`State::step`] says.
    pub(crate) fn seen(&self, state: &ServiceQueryResponse, now: Instant) -> Seen {
        self.policy
            .store(encode(state.scale_to_zero), Ordering::Relaxed);
        let mut details = lock(&self.details);
        match self.step(&mut details, Event::Seen(state, now)) {
            Told::Seen { seen, fresh } => {
                if fresh {
                    // Ready just now (a scale-up, ours or another gateway's): its idle period
                    // starts afresh.
                    self.last_end
                        .fetch_max(ms_since(self.epoch), Ordering::AcqRel);
                }
                seen
            }
            _ => unreachable!("a read is always told what it showed"),
        }
    }

    /// Whether "ready" would be believed now.
    pub(crate) fn trusts_ready(&self) -> bool {
        !self.phase().distrusts_ready()
    }

    // --- scale-up ----------------------------------------------------------------------------

    /// This scaler's scale-up is being sent: `ScalingUp` from now (a function that a push
    /// made `Warm` meanwhile stays so), so that a flight started while the write is under way
    /// does not write again. Returns the phase before, for
    /// [`scale_up_failed`](Self::scale_up_failed).
    pub(crate) fn scale_up_sent(&self, now: Instant) -> Phase {
        let mut details = lock(&self.details);
        match self.step(&mut details, Event::ScaleUpSent(now)) {
            Told::Before(phase) => phase,
            _ => details.state.phase(),
        }
    }

    /// The scale-up write failed: back to the phase before it (unless a read or a push moved
    /// the function on meanwhile).
    pub(crate) fn scale_up_failed(&self, before: Phase) {
        let mut details = lock(&self.details);
        self.step(&mut details, Event::ScaleUpFailed(before));
    }

    /// A scale-up of this scaler's succeeded at `now`.
    pub(crate) fn scale_up_written(&self, now: Instant) {
        lock(&self.details).written_at = Some(now);
    }

    /// When a scale-up of this scaler's last succeeded.
    pub(crate) fn last_written(&self) -> Option<Instant> {
        lock(&self.details).written_at
    }

    /// Whether this scaler sent a scale-up less than `within` ago that no read has shown yet.
    pub(crate) fn recently_asked(&self, now: Instant, within: Duration) -> bool {
        lock(&self.details).state.recently_asked(now, within)
    }

    // --- scale-down --------------------------------------------------------------------------

    /// Whether it is due for scale to zero at `now_ms`: warm, opted in, nothing in flight, idle
    /// for its period, not backing off.
    pub(crate) fn due(&self, now_ms: u64, default: Duration) -> Option<Duration> {
        let period = self.policy().period(default)?;
        let idle = now_ms.saturating_sub(self.last_end.load(Ordering::Acquire));
        let due = self.phase() == Phase::Warm
            && self.word.in_flight() == 0
            && idle >= period.as_millis() as u64
            && now_ms >= lock(&self.details).scale_down_not_before;
        due.then_some(period)
    }

    /// Whether the record can go: nothing in flight, idle for `after`, and nothing that a
    /// later read would need (not opted in, not scaled down by this scaler).
    pub(crate) fn forgettable(&self, now_ms: u64, after: Duration) -> bool {
        let idle = now_ms.saturating_sub(self.last_end.load(Ordering::Acquire));
        self.word.in_flight() == 0 && idle >= after.as_millis() as u64 && !self.has_obligation()
    }

    /// Whether forgetting the record would lose something the scaler owes: an opted-in
    /// function that must be scaled to zero, a scale-down whose "ready" reads must not be
    /// trusted, a scale-up under way (forgotten, a second write would follow).
    pub(crate) fn has_obligation(&self) -> bool {
        let phase = self.phase();
        matches!(
            phase,
            Phase::ScalingUp | Phase::ScalingDown | Phase::ScaledDown
        ) || (phase == Phase::Warm && self.policy() != IdlePolicy::Never)
    }

    /// `Warm` → `ScalingDown`, unless a request is in flight (then nothing changes and the
    /// answer is `false`). From here on requests take the cold path. The phase word's
    /// handshake decides against requests entering at the same moment.
    pub(crate) fn begin_scale_down(&self) -> bool {
        let mut details = lock(&self.details);
        if details.state.phase() != Phase::Warm || !self.word.begin_scale_down() {
            return false;
        }
        self.step(&mut details, Event::ScaleDownBegan);
        true
    }

    /// `ScalingDown` → `ScaledDown`: the platform scaled it to zero.
    pub(crate) fn scaled_down(&self) {
        let mut details = lock(&self.details);
        if let Told::Nothing = self.step(&mut details, Event::ScaleDownDone) {
            details.scale_down_failures = 0;
        }
    }

    /// `ScalingDown` → `ScaledDown`: the scale-down was cancelled mid-call, so it may have
    /// happened.
    pub(crate) fn scale_down_interrupted(&self) {
        let mut details = lock(&self.details);
        self.step(&mut details, Event::ScaleDownUncertain);
    }

    /// `ScalingDown` → `Warm`: the scale-down did not happen (refused or failed); no new
    /// attempt for `pause`. Returns the failed attempts in a row when `failed`.
    pub(crate) fn scale_down_abandoned(&self, pause: Duration, failed: bool) -> u32 {
        let mut details = lock(&self.details);
        self.step(&mut details, Event::ScaleDownRefused);
        if failed {
            details.scale_down_failures += 1;
        }
        details.scale_down_not_before = self.now_ms() + pause.as_millis() as u64;
        details.scale_down_failures
    }

    /// `ScalingDown` → `ScaledDown`: the scale-down's call timed out, so it may have
    /// happened. As after a cancelled call, "ready" is not trusted until the next scale-up
    /// (a lagging read must not send requests to replicas being removed; at worst one write
    /// that changes nothing), and the last known state is dropped (stale-if-error must not
    /// forward to zero replicas); no new attempt for `pause`.
    pub(crate) fn scale_down_uncertain(&self, pause: Duration) {
        let mut details = lock(&self.details);
        self.step(&mut details, Event::ScaleDownUncertain);
        details.scale_down_failures += 1;
        details.scale_down_not_before = self.now_ms() + pause.as_millis() as u64;
    }

    /// No scale-down for `pause` (nothing else changes): another gateway served it recently,
    /// or one is being considered.
    pub(crate) fn defer_scale_down(&self, pause: Duration) {
        lock(&self.details).scale_down_not_before = self.now_ms() + pause.as_millis() as u64;
    }

    /// Failed scale-downs in a row.
    pub(crate) fn scale_down_failures(&self) -> u32 {
        lock(&self.details).scale_down_failures
    }

    // --- stale-if-error ----------------------------------------------------------------------

    /// The last known ready state, if requests may be served from it without a refresh now:
    /// an outage is under way and its next refresh is not due yet.
    pub(crate) fn stale(&self, now: Instant, window: Duration) -> Option<ServiceQueryResponse> {
        lock(&self.details).state.stale(now, window)
    }

    /// A refresh failed with a retryable error at `now`: whether its requests may be served
    /// from the last known state (warm, confirmed less than `window` ago), with the next
    /// refresh after `backoff`.
    pub(crate) fn refresh_failed(
        &self,
        now: Instant,
        window: Duration,
        backoff: &Backoff,
    ) -> Stale {
        let mut details = lock(&self.details);
        let event = Event::RefreshFailed {
            now,
            window,
            backoff,
        };
        match self.step(&mut details, event) {
            Told::Stale(stale) => stale,
            _ => Stale::Unknown,
        }
    }

    /// Puts the record in `phase` with typical data (for tests of the moves).
    #[cfg(test)]
    fn force(&self, phase: Phase) {
        let ready = ServiceQueryResponse::new(1, 1);
        let mut details = lock(&self.details);
        details.state = State::Cold;
        self.word.set(Phase::Cold);
        let warm = |details: &mut Details| {
            self.step(details, Event::Seen(&ready, Instant::now()));
        };
        match phase {
            Phase::Cold => {}
            Phase::ScalingUp => {
                self.step(
                    &mut details,
                    Event::Seen(&ServiceQueryResponse::new(1, 0), Instant::now()),
                );
            }
            Phase::Warm => warm(&mut details),
            Phase::ScalingDown | Phase::ScaledDown => {
                warm(&mut details);
                drop(details);
                assert!(self.begin_scale_down());
                if phase == Phase::ScaledDown {
                    self.scaled_down();
                }
            }
        }
    }

    // --- the default cache's entry ------------------------------------------------------------

    /// Caches `state` for `ttl` (the default cache: see [`RecordCache`](super::RecordCache)).
    pub(crate) fn cache_set(&self, state: &ServiceQueryResponse, ttl: Duration) {
        let until = self
            .now_ns()
            .saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX))
            .min(u64::MAX >> 1);
        // The word is stored under the lock too: two sets that race leave the word and the
        // state of the same one.
        let mut details = lock(&self.details);
        details.cached = Some(state.clone());
        self.cached.store(
            (until << 1) | u64::from(state.is_ready()),
            Ordering::Release,
        );
    }

    /// Forgets the cached state.
    pub(crate) fn cache_clear(&self) {
        self.cached.store(0, Ordering::Release);
    }

    /// Whether a fresh, ready state is cached: the warm path's question, one load and a clock
    /// read.
    #[inline]
    pub(crate) fn cached_ready(&self) -> bool {
        let word = self.cached.load(Ordering::Acquire);
        word & 1 == 1 && self.now_ns() < word >> 1
    }

    /// Nanoseconds on this record's clock (whole: no 128-bit arithmetic on the warm path;
    /// saturates after centuries).
    #[inline]
    fn now_ns(&self) -> u64 {
        let since = Instant::now().saturating_duration_since(self.epoch);
        since
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(since.subsec_nanos()))
    }

    /// The cached state, if it is fresh.
    pub(crate) fn cached(&self) -> Option<ServiceQueryResponse> {
        let word = self.cached.load(Ordering::Acquire);
        if word == 0 || self.now_ns() >= word >> 1 {
            return None;
        }
        lock(&self.details).cached.clone()
    }

    // --- activity ----------------------------------------------------------------------------

    /// A request enters: counted in flight until the guard drops. `None` while the function is
    /// being or has been scaled down by this scaler: the request must take the cold path.
    pub(crate) fn enter(self: &Arc<Self>) -> Option<ActivityGuard> {
        self.word.enter().then(|| ActivityGuard {
            record: Arc::clone(self),
        })
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.word.in_flight()
    }

    /// Counts as activity now: a request that ended, a cold start that made the function ready.
    pub(crate) fn touch(&self) {
        let now = self.now_ms();
        // A load first: most requests end in a millisecond some other one already wrote, and
        // a load leaves the cache line shared where a read-modify-write would take it.
        if self.last_end.load(Ordering::Acquire) < now {
            self.last_end.fetch_max(now, Ordering::AcqRel);
        }
    }

    /// Whether this gateway should record activity in the shared store at `now_ms`. One load:
    /// it is asked on every tracked request.
    #[inline]
    pub(crate) fn report_due(&self, now_ms: u64) -> bool {
        now_ms >= self.next_report.load(Ordering::Relaxed)
    }

    /// Claims the record that is due; `false` if another request claimed it first.
    pub(crate) fn claim_report(&self, now_ms: u64) -> bool {
        let next = self.next_report.load(Ordering::Relaxed);
        now_ms >= next
            && self
                .next_report
                .compare_exchange(next, REPORTING, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// The claimed record ended: the next one is due `every` later after a success, and
    /// after a backoff (from `first`, doubling, at most `every`) after a failure or a panic.
    pub(crate) fn reported(&self, ok: bool, every: Duration, first: Duration) {
        let pause = if ok {
            self.report_failures.store(0, Ordering::Relaxed);
            every
        } else {
            let failures = self.report_failures.fetch_add(1, Ordering::Relaxed) + 1;
            Backoff::step(first, every, failures)
        };
        self.next_report
            .store(self.now_ms() + pause.as_millis() as u64, Ordering::Release);
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("function", &self.id)
            .field("phase", &self.phase())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

fn ms_since(epoch: Instant) -> u64 {
    Instant::now().saturating_duration_since(epoch).as_millis() as u64
}

/// A request in flight: dropped when its response body has ended or been dropped (or the
/// request failed), which ends the request's activity.
pub(crate) struct ActivityGuard {
    record: Arc<Record>,
}

impl ActivityGuard {
    pub(crate) fn record(&self) -> &Arc<Record> {
        &self.record
    }

    /// One more request's worth of activity for the same function, ending when it drops.
    pub(crate) fn another(&self) -> Self {
        self.record.word.enter_beside();
        Self {
            record: Arc::clone(&self.record),
        }
    }
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        // The end time first: a scale-down that sees nothing in flight sees it too.
        self.record.touch();
        self.record.word.leave();
    }
}

impl fmt::Debug for ActivityGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActivityGuard")
            .field("function", &self.record.id)
            .finish()
    }
}

/// The records of the functions the provider confirmed, bounded in number: a new record in a
/// full map replaces the oldest one that nothing uses and that carries no obligation, in O(1)
/// amortised.
pub(crate) struct Records {
    map: BoundedMap<Arc<Record>>,
    epoch: Instant,
}

impl Records {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            map: BoundedMap::new(capacity.max(1)),
            epoch: Instant::now(),
        }
    }

    #[inline]
    pub(crate) fn get(&self, function: FunctionRef<'_>) -> Option<Arc<Record>> {
        self.with(function, Arc::clone)
    }

    /// `f` applied to `function`'s record under the map's read lock (keep it to atomics: no
    /// lock, no spawn); `None` when it has none.
    #[inline]
    pub(crate) fn with<R>(
        &self,
        function: FunctionRef<'_>,
        f: impl FnOnce(&Arc<Record>) -> R,
    ) -> Option<R> {
        self.map.with(function, f)
    }

    /// The record of `function`, made if it has none; a full map first drops the
    /// oldest-inserted record that `unused` allows and that carries no obligation (records
    /// that carry obligations are never dropped to make room: the map overflows for them).
    pub(crate) fn get_or_insert(
        &self,
        function: &FunctionId,
        unused: impl Fn(&Record) -> bool,
    ) -> Arc<Record> {
        self.map.get_or_insert_with(
            function,
            || Arc::new(Record::new(function.clone(), self.epoch)),
            |record| unused(record) && !record.has_obligation(),
        )
    }

    pub(crate) fn remove(&self, function: FunctionRef<'_>) -> Option<Arc<Record>> {
        self.map.remove(function)
    }

    /// Every record, copied out (no lock is held while the caller works on them).
    pub(crate) fn all(&self) -> Vec<Arc<Record>> {
        self.map.values()
    }

    /// Drops the records `forget` says can go.
    pub(crate) fn forget(&self, forget: impl Fn(&Record) -> bool) {
        self.map.retain(|record| !forget(record));
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Arc<Record> {
        Arc::new(Record::new(
            FunctionId::new("f", "ns").unwrap(),
            Instant::now(),
        ))
    }

    #[test]
    fn policies_survive_the_atomic_word() {
        for policy in [
            IdlePolicy::Never,
            IdlePolicy::AfterDefault,
            IdlePolicy::After(Duration::from_secs(30)),
        ] {
            assert_eq!(decode(encode(policy)), policy);
        }
        assert_eq!(
            decode(encode(IdlePolicy::After(Duration::ZERO))),
            IdlePolicy::After(Duration::from_millis(1))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_scale_down_and_a_request_never_both_proceed() {
        let record = record();
        record.seen(&ServiceQueryResponse::new(1, 1), Instant::now());
        // A request in flight stops a scale-down.
        let guard = record.enter().unwrap();
        assert!(!record.begin_scale_down());
        assert_eq!(record.phase(), Phase::Warm);
        drop(guard);
        // A scale-down under way sends requests to the cold path (and counts nothing).
        assert!(record.begin_scale_down());
        assert!(record.enter().is_none());
        assert_eq!(record.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ready_from_before_a_scale_down_is_not_trusted_until_the_next_scale_up() {
        let record = record();
        let ready = ServiceQueryResponse::new(1, 1);
        assert_eq!(record.seen(&ready, Instant::now()).trust, Trust::Ready);
        assert!(record.begin_scale_down());
        record.scaled_down();
        assert_eq!(record.seen(&ready, Instant::now()).trust, Trust::Stale);
        assert_eq!(record.phase(), Phase::ScaledDown);
        record.scale_up_sent(Instant::now());
        assert_eq!(record.seen(&ready, Instant::now()).trust, Trust::Ready);
        assert_eq!(record.phase(), Phase::Warm);
    }

    #[tokio::test(start_paused = true)]
    async fn a_scale_up_is_remembered_until_a_read_shows_it_or_the_deadline_passes() {
        let record = record();
        let deadline = Duration::from_secs(60);
        record.scale_up_sent(Instant::now());
        assert!(record.recently_asked(Instant::now(), deadline));
        // Read-after-write lag: desired 0 still.
        record.seen(&ServiceQueryResponse::new(0, 0), Instant::now());
        assert_eq!(record.phase(), Phase::ScalingUp);
        assert!(record.recently_asked(Instant::now(), deadline));
        assert!(!record.recently_asked(Instant::now() + deadline, deadline));
        // Taken effect: desired 1, starting.
        record.seen(&ServiceQueryResponse::new(1, 0), Instant::now());
        assert_eq!(record.phase(), Phase::ScalingUp);
        assert!(!record.recently_asked(Instant::now(), deadline));
        // Scaled to zero by someone else before it was ready.
        record.seen(&ServiceQueryResponse::new(0, 0), Instant::now());
        assert_eq!(record.phase(), Phase::Cold);
    }

    #[tokio::test(start_paused = true)]
    async fn a_warm_function_is_served_stale_with_backoff_until_its_window_ends() {
        let record = record();
        let window = Duration::from_secs(300);
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let start = Instant::now();
        record.seen(&ServiceQueryResponse::new(1, 1), start);
        assert!(record.stale(start, window).is_none(), "no outage yet");
        let Stale::Serve { began: true, .. } = record.refresh_failed(start, window, &backoff)
        else {
            panic!("served stale");
        };
        assert!(record.stale(start, window).is_some(), "within the backoff");
        assert!(record
            .stale(start + Duration::from_secs(3), window)
            .is_none());
        let Stale::Serve { began: false, .. } =
            record.refresh_failed(start + Duration::from_secs(3), window, &backoff)
        else {
            panic!("still served stale");
        };
        let late = start + window;
        assert!(matches!(
            record.refresh_failed(late, window, &backoff),
            Stale::Expired { first: true }
        ));
        assert!(matches!(
            record.refresh_failed(late, window, &backoff),
            Stale::Expired { first: false }
        ));
        // A successful read ends the outage and says how long it was.
        let seen = record.seen(&ServiceQueryResponse::new(1, 1), late);
        assert_eq!(seen.recovered, Some(window));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_map_drops_the_oldest_unused_record() {
        let records = Records::new(2);
        let id = |n: u32| FunctionId::new(&format!("f{n}"), "ns").unwrap();
        let busy = records.get_or_insert(&id(0), |_| true);
        let _guard = busy.enter();
        records.get_or_insert(&id(1), |r| r.in_flight() == 0);
        records.get_or_insert(&id(2), |r| r.in_flight() == 0);
        assert_eq!(records.len(), 2);
        assert!(records.get(id(0).as_function_ref()).is_some(), "in use");
        assert!(records.get(id(1).as_function_ref()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_map_never_drops_a_record_that_carries_an_obligation() {
        let records = Records::new(2);
        let id = |n: u32| FunctionId::new(&format!("f{n}"), "ns").unwrap();
        let unused = |r: &Record| r.in_flight() == 0;
        // An idle function opted in to scale to zero, a scale-down marker, a write under way.
        let opted_in = records.get_or_insert(&id(0), unused);
        opted_in.seen(
            &ServiceQueryResponse::new(1, 1).scale_to_zero(IdlePolicy::AfterDefault),
            Instant::now(),
        );
        let scaled_down = records.get_or_insert(&id(1), unused);
        scaled_down.seen(&ServiceQueryResponse::new(1, 1), Instant::now());
        assert!(scaled_down.begin_scale_down());
        scaled_down.scaled_down();
        let scaling_up = records.get_or_insert(&id(2), unused);
        scaling_up.scale_up_sent(Instant::now());
        for n in 3..10 {
            records.get_or_insert(&id(n), unused);
        }
        for n in 0..3 {
            assert!(records.get(id(n).as_function_ref()).is_some(), "f{n} kept");
        }
    }

    /// Every move, tried in every phase: the phase it leaves the record in. The impossible
    /// ones (a scale-down finishing that never began, a scale-up during our own scale-down)
    /// change nothing and never panic.
    #[tokio::test(start_paused = true)]
    async fn every_event_in_every_phase_moves_as_the_table_says() {
        use Phase::*;
        type Event = (&'static str, fn(&Record));
        let events: [Event; 10] = [
            ("read: ready", |r| {
                r.seen(&ServiceQueryResponse::new(1, 1), Instant::now());
            }),
            ("read: starting", |r| {
                r.seen(&ServiceQueryResponse::new(1, 0), Instant::now());
            }),
            ("read: desired 0", |r| {
                r.seen(&ServiceQueryResponse::new(0, 0), Instant::now());
            }),
            ("scale-up sent", |r| {
                r.scale_up_sent(Instant::now());
            }),
            ("scale-up failed", |r| r.scale_up_failed(Cold)),
            ("scale-down begins", |r| {
                r.begin_scale_down();
            }),
            ("scaled down", |r| r.scaled_down()),
            ("scale-down refused", |r| {
                r.scale_down_abandoned(Duration::from_secs(1), false);
            }),
            ("scale-down timed out", |r| {
                r.scale_down_uncertain(Duration::from_secs(1))
            }),
            ("scale-down cancelled", |r| r.scale_down_interrupted()),
        ];
        // Rows: the phase before; columns: the events above, in order.
        let table: [(Phase, [Phase; 10]); 5] = [
            (
                Cold,
                [
                    Warm, ScalingUp, Cold, ScalingUp, Cold, Cold, Cold, Cold, Cold, Cold,
                ],
            ),
            (
                ScalingUp,
                [
                    Warm, ScalingUp, Cold, ScalingUp, Cold, ScalingUp, ScalingUp, ScalingUp,
                    ScalingUp, ScalingUp,
                ],
            ),
            (
                Warm,
                [
                    Warm,
                    ScalingUp,
                    Cold,
                    Warm,
                    Warm,
                    ScalingDown,
                    Warm,
                    Warm,
                    Warm,
                    Warm,
                ],
            ),
            (
                ScalingDown,
                [
                    ScalingDown,
                    ScalingDown,
                    ScalingDown,
                    ScalingDown,
                    ScalingDown,
                    ScalingDown,
                    ScaledDown,
                    Warm,
                    ScaledDown,
                    ScaledDown,
                ],
            ),
            (
                ScaledDown,
                [
                    ScaledDown, ScaledDown, ScaledDown, ScalingUp, ScaledDown, ScaledDown,
                    ScaledDown, ScaledDown, ScaledDown, ScaledDown,
                ],
            ),
        ];
        assert_eq!(table.len(), Phase::ALL.len(), "a row per phase");
        for (before, after) in table {
            for ((name, event), expected) in events.iter().zip(after) {
                let record = record();
                record.force(before);
                event(&record);
                assert_eq!(
                    record.phase(),
                    expected,
                    "{name} in {before:?} should leave {expected:?}"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_outlives_a_refused_scale_down() {
        let record = record();
        let window = Duration::from_secs(300);
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let start = Instant::now();
        record.seen(&ServiceQueryResponse::new(1, 1), start);
        let Stale::Serve { began: true, .. } = record.refresh_failed(start, window, &backoff)
        else {
            panic!("served stale");
        };
        assert!(record.begin_scale_down());
        record.scale_down_abandoned(Duration::from_secs(1), true);
        assert_eq!(record.phase(), Phase::Warm);
        assert!(record.stale(start, window).is_some(), "still in its outage");
        let Stale::Serve { began: false, .. } =
            record.refresh_failed(start + Duration::from_secs(3), window, &backoff)
        else {
            panic!("the same outage goes on (no second warning)");
        };
    }
}
