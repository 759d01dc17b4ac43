//! A function's [`State`]: its phase and the data that belongs to that phase, and every move
//! between phases in one function, [`State::step`]. A record keeps its state behind its lock
//! and mirrors the phase in its [`PhaseWord`](super::phase::PhaseWord) for the warm path; the
//! table of moves is in the [module docs](super), and each arm of `step` carries its own.

use std::time::Duration;

use tokio::time::Instant;

use super::phase::Phase;
use crate::util::{far_instant, Backoff};
use crate::ServiceQueryResponse;

/// What a record knows of its function, phase by phase.
pub(super) enum State {
    /// No replica wanted at the last read; no scale-up of this scaler's pending.
    Cold,
    /// Starting. `asked_at`: this scaler's scale-up was sent then and no read has shown it yet
    /// (a read that still says "desired 0" is read-after-write lag); `None`: the platform
    /// wants replicas and none is ready yet.
    ScalingUp { asked_at: Option<Instant> },
    /// Ready at the last read or push: what was confirmed (stale-if-error serves it), and the
    /// outage its refreshes are in, if they are failing.
    Warm {
        confirmed: Confirmed,
        outage: Option<Outage>,
    },
    /// This scaler's scale-down is under way; what was confirmed before it, should the
    /// platform refuse.
    ScalingDown {
        confirmed: Confirmed,
        outage: Option<Outage>,
    },
    /// This scaler scaled it down, or may have: "ready" is not trusted until its next
    /// scale-up is sent.
    ScaledDown,
}

/// A state read or pushed as ready, and when.
#[derive(Clone)]
pub(super) struct Confirmed {
    state: ServiceQueryResponse,
    at: Instant,
}

/// Refreshes of a warm function failing in a row.
pub(super) struct Outage {
    since: Instant,
    failures: u32,
    /// Requests before this are served stale without a refresh.
    retry_at: Instant,
    expiry_logged: bool,
}

/// What happens to a function.
pub(super) enum Event<'a> {
    /// A state read from the provider or pushed by it, at an instant.
    Seen(&'a ServiceQueryResponse, Instant),
    /// This scaler's scale-up is being sent, at an instant.
    ScaleUpSent(Instant),
    /// This scaler's scale-up failed; the phase before it was sent.
    ScaleUpFailed(Phase),
    /// This scaler's scale-down began (the phase word's handshake let it: nothing in flight).
    ScaleDownBegan,
    /// The platform scaled it down.
    ScaleDownDone,
    /// The platform refused the scale-down, or its call failed: it did not happen.
    ScaleDownRefused,
    /// The scale-down's call timed out or was cancelled: it may have happened.
    ScaleDownUncertain,
    /// A refresh failed with a retryable error, at an instant; stale-if-error's window and
    /// the backoff of its refreshes.
    RefreshFailed {
        now: Instant,
        window: Duration,
        backoff: &'a Backoff,
    },
}

/// What a move tells the record that made it.
pub(super) enum Told {
    Nothing,
    /// A move that cannot happen in that phase: nothing changed (the record logs it).
    Ignored,
    Seen {
        seen: Seen,
        /// Ready just now, from another phase (a scale-up that took): its idle period starts
        /// afresh.
        fresh: bool,
    },
    /// The phase before a scale-up was sent.
    Before(Phase),
    Stale(Stale),
}

/// What a read or a push told a record.
#[derive(Debug)]
pub(crate) struct Seen {
    pub(crate) trust: Trust,
    /// The function was served from its last known state and this read ended that: for how
    /// long.
    pub(crate) recovered: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trust {
    /// Ready, and believed.
    Ready,
    /// Not ready.
    NotReady,
    /// "Ready", but from before this scaler's scale-down: ignored.
    Stale,
}

/// What a failed refresh of a function leaves its requests.
#[derive(Debug)]
pub(crate) enum Stale {
    /// Serve them from the last known state; `began` on the first failure of an outage.
    Serve {
        state: ServiceQueryResponse,
        began: bool,
    },
    /// The last known state is too old to serve (`first`: the first time this outage).
    Expired { first: bool },
    /// Not known warm: no stale state to serve.
    Unknown,
}

impl State {
    pub(super) fn phase(&self) -> Phase {
        match self {
            State::Cold => Phase::Cold,
            State::ScalingUp { .. } => Phase::ScalingUp,
            State::Warm { .. } => Phase::Warm,
            State::ScalingDown { .. } => Phase::ScalingDown,
            State::ScaledDown => Phase::ScaledDown,
        }
    }

    /// Whether this scaler sent a scale-up less than `within` before `now` that no read has
    /// shown yet.
    pub(super) fn recently_asked(&self, now: Instant, within: Duration) -> bool {
        matches!(self, State::ScalingUp { asked_at: Some(at) } if now < far_instant(*at, within))
    }

    /// The last known ready state, if requests may be served from it without a refresh at
    /// `now`: an outage is under way, its next refresh is not due yet, and the state was
    /// confirmed less than `window` ago.
    pub(super) fn stale(&self, now: Instant, window: Duration) -> Option<ServiceQueryResponse> {
        match self {
            State::Warm {
                confirmed,
                outage: Some(outage),
            } if now < outage.retry_at && now < far_instant(confirmed.at, window) => {
                Some(confirmed.state.clone())
            }
            _ => None,
        }
    }

    /// When the outage this state is in began, if it is in one.
    fn outage_since(&self) -> Option<Instant> {
        match self {
            State::Warm {
                outage: Some(outage),
                ..
            }
            | State::ScalingDown {
                outage: Some(outage),
                ..
            } => Some(outage.since),
            _ => None,
        }
    }

    /// The one transition function: the state after `event`, and what the move tells its
    /// caller.
    pub(super) fn step(self, event: Event<'_>) -> (State, Told) {
        use Event::*;
        use State::*;
        let seen = |trust, recovered, fresh| Told::Seen {
            seen: self::Seen { trust, recovered },
            fresh,
        };
        match (self, event) {
            // --- reads and pushes ---------------------------------------------------------
            // ScalingDown | ScaledDown => unchanged: whatever a read says now is from before
            // this scaler's scale-down; a "ready" is not believed.
            // (An answer ends the outage the function was in.)
            (state @ (ScalingDown { .. } | ScaledDown), Seen(read, now)) => {
                let trust = if read.is_ready() {
                    Trust::Stale
                } else {
                    Trust::NotReady
                };
                let recovered = state.outage_since().map(|since| now - since);
                let state = match state {
                    ScalingDown { confirmed, .. } => ScalingDown {
                        confirmed,
                        outage: None,
                    },
                    state => state,
                };
                (state, seen(trust, recovered, false))
            }
            // Cold | ScalingUp | Warm => Warm: ready, and believed. It ends an outage; from
            // another phase it is a scale-up that took (ours or someone else's).
            (state, Seen(read, now)) if read.is_ready() => {
                let recovered = state.outage_since().map(|since| now - since);
                let fresh = !matches!(state, Warm { .. });
                let confirmed = Confirmed {
                    state: read.clone(),
                    at: now,
                };
                let next = Warm {
                    confirmed,
                    outage: None,
                };
                (next, seen(Trust::Ready, recovered, fresh))
            }
            // Cold | ScalingUp | Warm => ScalingUp: replicas wanted, none ready: starting (our
            // write, if we sent one, has taken effect).
            (state, Seen(read, now)) if read.desired_replicas > 0 => {
                let recovered = state.outage_since().map(|since| now - since);
                let next = ScalingUp { asked_at: None };
                (next, seen(Trust::NotReady, recovered, false))
            }
            // ScalingUp (our write out, not shown yet) => ScalingUp: "desired 0" is
            // read-after-write lag.
            (state @ ScalingUp { asked_at: Some(_) }, Seen(..)) => {
                (state, seen(Trust::NotReady, None, false))
            }
            // Cold | ScalingUp | Warm => Cold: nothing wanted (scaled to zero by someone else,
            // or never started).
            (state, Seen(_, now)) => {
                let recovered = state.outage_since().map(|since| now - since);
                (Cold, seen(Trust::NotReady, recovered, false))
            }

            // --- scale-up -----------------------------------------------------------------
            // Cold | ScaledDown | ScalingUp => ScalingUp: our scale-up is sent (again): a flight
            // started while it is out does not write again.
            (before @ (Cold | ScaledDown | ScalingUp { .. }), ScaleUpSent(now)) => {
                let phase = before.phase();
                (
                    ScalingUp {
                        asked_at: Some(now),
                    },
                    Told::Before(phase),
                )
            }
            // Warm => Warm: a push made it ready meanwhile.
            (state @ Warm { .. }, ScaleUpSent(_)) => (state, Told::Before(Phase::Warm)),
            // ScalingDown => (ignored): no scale-up is sent while our scale-down is under way
            // (the scale-down is the function's flight).
            (state @ ScalingDown { .. }, ScaleUpSent(_)) => (state, Told::Ignored),
            // ScalingUp => the phase before: our scale-up failed.
            (ScalingUp { .. }, ScaleUpFailed(before)) => {
                let next = match before {
                    Phase::Cold => Cold,
                    Phase::ScaledDown => ScaledDown,
                    _ => ScalingUp { asked_at: None },
                };
                (next, Told::Nothing)
            }
            // anything else => unchanged: a read or a push moved it on meanwhile.
            (state, ScaleUpFailed(_)) => (state, Told::Nothing),

            // --- scale-down ---------------------------------------------------------------
            // Warm => ScalingDown: idle, nothing in flight; requests take the cold path.
            (Warm { confirmed, outage }, ScaleDownBegan) => {
                (ScalingDown { confirmed, outage }, Told::Nothing)
            }
            (state, ScaleDownBegan) => (state, Told::Ignored),
            // ScalingDown => ScaledDown: the platform scaled it down.
            (ScalingDown { .. }, ScaleDownDone) => (ScaledDown, Told::Nothing),
            // ScalingDown => ScaledDown: the call timed out or was cancelled: it may have
            // happened, so "ready" is not trusted until our next scale-up, and nothing is
            // served stale from before.
            (ScalingDown { .. }, ScaleDownUncertain) => (ScaledDown, Told::Nothing),
            (state, ScaleDownDone | ScaleDownUncertain) => (state, Told::Ignored),
            // ScalingDown => Warm, on what was confirmed before and in the outage it was in:
            // refused, or the call failed.
            (ScalingDown { confirmed, outage }, ScaleDownRefused) => {
                (Warm { confirmed, outage }, Told::Nothing)
            }
            // anything else => unchanged: refused before it began (another gateway's activity,
            // a failing store).
            (state, ScaleDownRefused) => (state, Told::Nothing),

            // --- stale-if-error -----------------------------------------------------------
            // Warm => Warm in an outage: a refresh failed; its requests are served from what
            // was confirmed, within the window, refreshes backing off.
            (
                Warm { confirmed, outage },
                RefreshFailed {
                    now,
                    window,
                    backoff,
                },
            ) if !window.is_zero() => {
                let mut outage = outage.unwrap_or(Outage {
                    since: now,
                    failures: 0,
                    retry_at: now,
                    expiry_logged: false,
                });
                let stale = if now >= far_instant(confirmed.at, window) {
                    let first = !outage.expiry_logged;
                    outage.expiry_logged = true;
                    Stale::Expired { first }
                } else {
                    outage.failures += 1;
                    outage.retry_at = now + backoff.pause(outage.failures);
                    Stale::Serve {
                        state: confirmed.state.clone(),
                        began: outage.failures == 1,
                    }
                };
                let next = Warm {
                    confirmed,
                    outage: Some(outage),
                };
                (next, Told::Stale(stale))
            }
            // anything else => unchanged: not known warm, nothing to serve.
            (state, RefreshFailed { .. }) => (state, Told::Stale(Stale::Unknown)),
        }
    }
}
