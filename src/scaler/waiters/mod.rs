//! A request waiting on its function's flight: its deadline in the flight's queue
//! ([`Deadlines`]), its place under the total hold limit, and everything it gives back when it
//! leaves, however it leaves (released, timed out, refused, or dropped mid-wait when its
//! client goes away).

mod deadlines;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;

pub(crate) use self::deadlines::Deadlines;
use self::deadlines::Ticket;
use super::flight::{Flight, Outcome};
use super::lifecycle::Lifecycle;
use super::place::{Place, Places};
use crate::single_flight::FlightError;
use crate::util::far_instant;
use crate::{FunctionId, QueryError, ScaleError};

/// The caller's share of a function's flight.
pub(crate) type FlightHandle = crate::single_flight::Flight<FunctionId, Outcome, Flight>;

/// How one request's wait ended.
pub(crate) enum Waited {
    /// The flight ended (a push ends it at once).
    Done(Result<Outcome, FlightError>),
    /// The request's deadline passed first; the flight's last provider error, if any.
    TimedOut(Option<QueryError>),
    Refused(ScaleError),
}

/// One request waiting on a flight. It takes its deadline slot on its first poll and its place
/// under the total hold limit once the flight knows the function is cold; dropping it gives
/// both back at once, with the waker it left.
pub(crate) struct Waiter<'a> {
    lifecycle: &'a Lifecycle,
    /// Its own arrival: the deadline counts from here, also after it moved to a fresh flight.
    arrival: &'a Instant,
    flight: Option<Arc<Flight>>,
    ticket: Option<Ticket>,
    place: Option<Place<'a>>,
    /// What the request keeps, in bytes: counted under both byte limits while it has a place.
    bytes: usize,
    /// The flight ended: its deadline queue went with it, so there is nothing to cancel.
    flight_ended: bool,
}

impl<'a> Waiter<'a> {
    pub(crate) fn new(lifecycle: &'a Lifecycle, arrival: &'a Instant, bytes: usize) -> Self {
        Self {
            lifecycle,
            arrival,
            flight: None,
            ticket: None,
            place: None,
            bytes,
            flight_ended: false,
        }
    }

    /// The flight's result, unless the deadline passes first or the flight turns cold while no place is free. The flight is polled
    /// first: a released waiter leaves at once.
    pub(crate) fn poll(
        &mut self,
        function: &FunctionId,
        handle: &mut FlightHandle,
        cx: &mut Context<'_>,
    ) -> Poll<Waited> {
        let lifecycle = self.lifecycle;
        let config = &lifecycle.config;
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
        if lifecycle.drain_expired.load(Ordering::Acquire) {
            return Poll::Ready(Waited::Refused(ScaleError::shutting_down(
                function.clone(),
                config.retry_after(),
            )));
        }
        if self.flight.is_none() {
            match handle.state() {
                Some(flight) => self.flight = Some(flight),
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
        if self.place.is_none() && flight.is_cold() {
            if lifecycle.is_draining() {
                // A drain refuses new cold starts: a request that has no place yet is one.
                return Poll::Ready(Waited::Refused(ScaleError::shutting_down(
                    function.clone(),
                    config.retry_after(),
                )));
            }
            let refused = |scope, limit| {
                Poll::Ready(Waited::Refused(ScaleError::overloaded(
                    function.clone(),
                    scope,
                    limit,
                    config.retry_after(),
                )))
            };
            let Some(place) = Place::take(&lifecycle.held, config.max_held_total()) else {
                return refused("total", config.max_held_total());
            };
            let limit = config.max_held_bytes_total();
            let Some(bytes) = Places::take(&lifecycle.held_bytes, self.bytes, limit) else {
                return refused("total bytes", limit);
            };
            let limit = config.max_held_bytes_per_function();
            if !flight.take_bytes(self.bytes, limit) {
                return refused("per-function bytes", limit);
            }
            self.place = Some(place);
            // Given back with the place (in `drop`).
            std::mem::forget(bytes);
            flight.admit();
        }
        Poll::Pending
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
            }
        }
        if self.place.is_some() {
            self.lifecycle
                .held_bytes
                .fetch_sub(self.bytes, Ordering::AcqRel);
            flight.give_bytes(self.bytes);
            flight.leave();
        }
    }
}
