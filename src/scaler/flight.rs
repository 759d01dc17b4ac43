//! [`FlightState`]: what one flight of a function (a cold start, a refresh, a scale-down) shares
//! with the requests that wait on it and with pushed states.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::deadlines::Deadlines;
use crate::util::lock;
use crate::{FunctionId, QueryError, ServiceQueryResponse};

/// What a flight hands its waiters.
pub(crate) type Outcome = Result<Ready, crate::ScaleError>;

/// A function found ready (or, for a scale-down with nobody waiting, not ready).
#[derive(Clone, Debug)]
pub(crate) struct Ready {
    pub(crate) state: ServiceQueryResponse,
    /// Whether the waiters waited for a cold start (not merely a refresh).
    pub(crate) cold: bool,
    /// When it was found ready: a waiter whose deadline had passed by then is late.
    pub(crate) at: Instant,
    /// The last known state, served because the provider is failing (stale-if-error).
    pub(crate) stale: bool,
}

impl Ready {
    pub(crate) fn now(state: ServiceQueryResponse, cold: bool) -> Self {
        Self {
            state,
            cold,
            at: Instant::now(),
            stale: false,
        }
    }

    /// The last known state of a function whose refresh failed.
    pub(crate) fn stale(state: ServiceQueryResponse) -> Self {
        Self {
            stale: true,
            ..Self::now(state, false)
        }
    }
}

/// The flight's mailbox and its waiters' bookkeeping: a push reaches exactly the flight of its
/// function.
#[derive(Default)]
pub(crate) struct FlightState {
    /// A ready state pushed while the flight was under way: the flight's task ends with it at
    /// once, whatever it is waiting on (a slow provider call, a place under the call cap, a
    /// scale write, which goes on by itself), and so releases every waiter.
    released: OnceLock<Ready>,
    /// Wakes the flight's task: a release, or a read asked for. `notify_one` keeps a permit if
    /// the task is not waiting, so nothing is missed.
    wake: Notify,
    /// Set by [`ReadinessNotifier::notify_changed`](crate::ReadinessNotifier::notify_changed).
    look_now: AtomicBool,
    /// Set once the flight knows the function is cold (not merely a refresh of a warm one):
    /// from then on its waiters count against the hold limits.
    cold: AtomicBool,
    /// Set once a read showed the function cold (or scaling up): the cold start is under way
    /// on the platform's side, not merely a refresh or a failing read. Only then may a browser
    /// be shown the waiting page.
    starting: AtomicBool,
    /// Set by a waiter that arrived before a drain began: such a waiter keeps its cold start.
    waiter_before_drain: AtomicBool,
    deadlines: Deadlines,
    /// Waiters that got a place under the total hold limit. A cold flight scales up only once
    /// one has: a flight whose every waiter was refused must not touch the platform.
    admitted: AtomicUsize,
    admission: Notify,
    /// Bytes its admitted waiters keep, under the per-function byte limit.
    held_bytes: AtomicUsize,
    held: Held,
    last_error: Mutex<Option<QueryError>>,
    /// The flight's span: the flight runs in it, and its waiters' spans follow from it.
    span: OnceLock<tracing::Span>,
}

impl FlightState {
    /// Ends the flight with `ready` (the first release wins): wakes its task, which returns
    /// it to every waiter.
    pub(crate) fn release(&self, ready: Ready) {
        if self.released.set(ready).is_ok() {
            self.wake.notify_one();
        }
    }

    pub(crate) fn released(&self) -> Option<&Ready> {
        self.released.get()
    }

    pub(crate) fn look_now(&self) {
        self.look_now.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Whether a read was asked for since the last call.
    pub(crate) fn take_look_now(&self) -> bool {
        self.look_now.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn wake(&self) -> &Notify {
        &self.wake
    }

    pub(crate) fn mark_cold(&self) {
        if !self.cold.swap(true, Ordering::AcqRel) {
            // Waiters that joined while this could still be a warm refresh take their places.
            self.deadlines.wake_all();
        }
    }

    pub(crate) fn is_cold(&self) -> bool {
        self.cold.load(Ordering::Acquire)
    }

    /// A read showed the function cold or scaling up: see [`is_starting`](Self::is_starting).
    pub(crate) fn mark_starting(&self) {
        self.starting.store(true, Ordering::Release);
        self.mark_cold();
    }

    /// Whether the function is known to be starting (a read showed it not ready).
    pub(crate) fn is_starting(&self) -> bool {
        self.starting.load(Ordering::Acquire)
    }

    /// A waiter that arrived before the drain began joined.
    pub(crate) fn joined_before_drain(&self) {
        if !self.waiter_before_drain.load(Ordering::Relaxed) {
            self.waiter_before_drain.store(true, Ordering::Release);
        }
    }

    /// Whether a waiter that arrived before the drain began joined: the drain keeps this cold
    /// start.
    pub(crate) fn has_waiter_from_before_drain(&self) -> bool {
        self.waiter_before_drain.load(Ordering::Acquire)
    }

    /// Whether a waiter was ever admitted (a cold start with someone to serve).
    pub(crate) fn was_admitted(&self) -> bool {
        self.admitted.load(Ordering::Acquire) > 0
    }

    pub(crate) fn deadlines(&self) -> &Deadlines {
        &self.deadlines
    }

    pub(crate) fn admit(&self) {
        self.held.enter();
        // Only the first admission can wake the flight.
        if self.admitted.fetch_add(1, Ordering::AcqRel) == 0 {
            self.admission.notify_waiters();
        }
    }

    /// A waiter that was neither admitted nor refused left while the flight could still be a
    /// refresh: its cold start was begun for it, so the flight goes on as if it had been
    /// admitted (until its deadline, for whoever comes next).
    pub(crate) fn departed_unrefused(&self) {
        if self.admitted.fetch_add(1, Ordering::AcqRel) == 0 {
            self.admission.notify_waiters();
        }
    }

    /// Room for `bytes` more under `limit`, if there is.
    pub(crate) fn take_bytes(&self, bytes: usize, limit: usize) -> bool {
        self.held_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&total| total <= limit)
            })
            .is_ok()
    }

    pub(crate) fn give_bytes(&self, bytes: usize) {
        self.held_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// An admitted waiter leaves.
    pub(crate) fn leave(&self) {
        self.held.leave();
    }

    /// Resolves once a waiter has been admitted (at once if one has).
    pub(crate) async fn some_admitted(&self) {
        loop {
            let admission = self.admission.notified();
            tokio::pin!(admission);
            admission.as_mut().enable();
            if self.admitted.load(Ordering::Acquire) > 0 {
                return;
            }
            admission.await;
        }
    }

    /// The provider confirmed `function` exists: from now on its held requests are counted
    /// under its name (a name becomes a label only once confirmed).
    pub(crate) fn confirmed(&self, function: &FunctionId) {
        self.held.label(function);
    }

    pub(crate) fn span(&self, function: &FunctionId) -> &tracing::Span {
        self.span
            .get_or_init(|| tracing::info_span!(parent: None, "cold_start", function = %function))
    }

    pub(crate) fn set_last_error(&self, err: QueryError) {
        *lock(&self.last_error) = Some(err);
    }

    pub(crate) fn last_error(&self) -> Option<QueryError> {
        lock(&self.last_error).clone()
    }
}

/// The flight's admitted waiters, counted in the `requests_held` gauge once the function is
/// confirmed. The top bit says the gauge is set: a waiter that entered before sees it clear
/// and is counted by `label`'s snapshot; one that entered after sees it set and counts itself.
#[derive(Default)]
struct Held {
    count: AtomicUsize,
    gauge: OnceLock<metrics::Gauge>,
}

const LABELLED: usize = 1 << (usize::BITS - 1);

impl Held {
    fn enter(&self) {
        if self.count.fetch_add(1, Ordering::AcqRel) & LABELLED != 0 {
            self.gauge().increment(1.0);
        }
    }

    fn leave(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) & LABELLED != 0 {
            self.gauge().decrement(1.0);
        }
    }

    fn label(&self, function: &FunctionId) {
        if self
            .gauge
            .set(crate::telemetry::held_gauge(function))
            .is_ok()
        {
            let before = self.count.fetch_or(LABELLED, Ordering::AcqRel);
            self.gauge().increment(before as f64);
        }
    }

    fn gauge(&self) -> &metrics::Gauge {
        self.gauge.get().expect("set before the labelled bit")
    }
}
