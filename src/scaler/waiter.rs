//! A request waiting on its function's flight: its deadline in the flight's queue
//! ([`Deadlines`](super::deadlines::Deadlines)), its place under the hold limits, and
//! everything it gives back when it leaves, however it leaves (released, timed out, refused,
//! or dropped mid-wait when its client goes away).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;

use super::deadlines::Ticket;
use super::flight::{FlightState, Outcome};
use super::place::{Full, HoldPlace, Holds};
use crate::single_flight::FlightError;
use crate::util::far_instant;
use crate::{FunctionId, QueryError, ScaleError, ScalingConfig};

/// The caller's share of a function's flight.
pub(crate) type FlightHandle = crate::single_flight::Flight<FunctionId, Outcome, FlightState>;

/// What the waiters of every flight share: the limits, the requests held for cold functions
/// (and their bytes), and whether a drain's budget is spent.
pub(crate) struct Holding {
    pub(crate) config: ScalingConfig,
    pub(crate) holds: Arc<Holds>,
    /// Once set, every request still waiting for a cold start is answered 503.
    pub(crate) drain_expired: AtomicBool,
}

impl Holding {
    pub(crate) fn new(config: ScalingConfig) -> Self {
        Self {
            config,
            holds: Arc::default(),
            drain_expired: AtomicBool::new(false),
        }
    }
}

/// Why a waiter gets no place.
enum Refusal {
    Draining,
    Full(&'static str, usize),
}

/// How one request's wait ended.
pub(crate) enum Waited {
    /// The flight ended (a push ends it at once).
    Done(Result<Outcome, FlightError>),
    /// The request's deadline passed first; the flight's last provider error, if any.
    TimedOut(Option<QueryError>),
    Refused(ScaleError),
}

/// One request waiting on a flight. It takes its deadline slot on its first poll and its place
/// under the hold limits once the flight knows the function is cold; dropping it gives
/// back its slot, its waker and its share of the flight's per-function counts at once, and
/// its place unless [`take_place`](Self::take_place) handed it on.
pub(crate) struct Waiter<'a> {
    holding: &'a Holding,
    /// Its own arrival: the deadline counts from here, also after it moved to a fresh flight.
    arrival: &'a Instant,
    flight: Option<Arc<FlightState>>,
    ticket: Option<Ticket>,
    place: Option<HoldPlace>,
    /// What the request keeps, in bytes: counted under both byte limits while it has a place.
    /// (32 bits: with the place and the flags it packs into the room one `usize` took.)
    bytes: u32,
    /// Counted among the flight's admitted waiters (and its bytes).
    admitted: bool,
    /// The flight ended: its deadline queue went with it, so there is nothing to cancel.
    flight_ended: bool,
    /// A drain had begun when the request arrived: it may not begin a cold start.
    arrived_draining: bool,
    /// Refused a place (hold limits, a drain): a flight whose every waiter was refused must
    /// not touch the platform.
    refused: bool,
}

impl<'a> Waiter<'a> {
    pub(crate) fn new(
        holding: &'a Holding,
        arrival: &'a Instant,
        bytes: usize,
        arrived_draining: bool,
    ) -> Self {
        Self {
            holding,
            arrival,
            flight: None,
            ticket: None,
            place: None,
            // A request's head of 4 GiB or more is counted as 4 GiB: far past any byte limit.
            bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
            admitted: false,
            flight_ended: false,
            arrived_draining,
            refused: false,
        }
    }

    /// The flight's result, unless the deadline passes first or the flight turns cold while
    /// no place is free. The flight is polled first: a released waiter leaves at once.
    pub(crate) fn poll(
        &mut self,
        function: &FunctionId,
        handle: &mut FlightHandle,
        cx: &mut Context<'_>,
    ) -> Poll<Waited> {
        let holding = self.holding;
        let config = &holding.config;
        let deadline = far_instant(*self.arrival, config.readiness_deadline());
        if let Poll::Ready(out) = Pin::new(&mut *handle).poll(cx) {
            self.flight_ended = true;
            // Timers fire on whole milliseconds: a release in the same tick as the deadline
            // must not forward a request that was already late when the flight ended.
            if matches!(&out, Ok(Ok(ready)) if ready.at > deadline) {
                return Poll::Ready(Waited::TimedOut(self.last_error()));
            }
            return Poll::Ready(Waited::Done(out));
        }
        if self.flight.is_none() {
            match handle.state() {
                Some(flight) => {
                    if !self.arrived_draining {
                        flight.joined_before_drain();
                    }
                    self.flight = Some(flight);
                }
                None => {
                    // Ended between the poll and the look-up: its result is there next time.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
        let flight = self.flight.as_ref().expect("set above");
        match &self.ticket {
            None => self.ticket = Some(flight.deadlines().register(deadline, cx.waker())),
            Some(ticket) => {
                if flight.deadlines().expired(ticket, cx.waker()) {
                    return Poll::Ready(Waited::TimedOut(flight.last_error()));
                }
            }
        }
        // A refresh of a warm function is never refused: neither by the hold limits nor by a
        // drain, also once its budget is spent.
        if !flight.is_cold() {
            return Poll::Pending;
        }
        if self.admitted {
            if holding.drain_expired.load(Ordering::Acquire) {
                return self.refuse(ScaleError::shutting_down(
                    function.clone(),
                    config.retry_after(),
                ));
            }
            return Poll::Pending;
        }
        match self.take_place(flight, config) {
            Ok(place) => {
                self.place = Some(place);
                self.admitted = true;
                flight.admit();
                Poll::Pending
            }
            Err(refusal) => {
                let error = match refusal {
                    Refusal::Draining => {
                        ScaleError::shutting_down(function.clone(), config.retry_after())
                    }
                    Refusal::Full(scope, limit) => {
                        ScaleError::overloaded(function.clone(), scope, limit, config.retry_after())
                    }
                };
                self.refuse(error)
            }
        }
    }

    /// A place under the hold limits for a request that waits for a cold start, unless a
    /// drain refuses it (its budget is spent, or it began before the request arrived: the
    /// request's cold start would begin after it).
    fn take_place(
        &self,
        flight: &FlightState,
        config: &ScalingConfig,
    ) -> Result<HoldPlace, Refusal> {
        if self.arrived_draining || self.holding.drain_expired.load(Ordering::Acquire) {
            return Err(Refusal::Draining);
        }
        let place = HoldPlace::take(
            &self.holding.holds,
            self.bytes,
            config.max_held_total(),
            config.max_held_bytes_total(),
        )
        .map_err(|full| match full {
            Full::Count => Refusal::Full("total", config.max_held_total()),
            Full::Bytes => Refusal::Full("total bytes", config.max_held_bytes_total()),
        })?;
        let limit = config.max_held_bytes_per_function();
        if !flight.take_bytes(self.bytes as usize, limit) {
            return Err(Refusal::Full("per-function bytes", limit));
        }
        Ok(place)
    }

    fn refuse(&mut self, error: ScaleError) -> Poll<Waited> {
        self.refused = true;
        Poll::Ready(Waited::Refused(error))
    }

    /// Hands on the request's place under the total hold limits (a released request keeps it
    /// until it is forwarded).
    pub(crate) fn hand_on_place(&mut self) -> Option<HoldPlace> {
        self.place.take()
    }

    fn last_error(&self) -> Option<QueryError> {
        self.flight.as_ref().and_then(|flight| flight.last_error())
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let Some(flight) = &self.flight else {
            return;
        };
        if let Some(ticket) = self.ticket.take() {
            if !self.flight_ended {
                flight.deadlines().cancel(&ticket);
                // One that left while the flight could still be a refresh (neither admitted
                // nor refused: a place was never asked of it) wanted its cold start; one that
                // left after the flight turned cold without a place did not get one.
                if !self.admitted && !self.refused && !flight.is_cold() {
                    flight.departed_unrefused();
                }
            }
        }
        if self.admitted {
            flight.give_bytes(self.bytes as usize);
            flight.leave();
        }
    }
}
