//! [`Phase`]: where a function is in its life; [`PhaseWord`]: the phase and the function's
//! requests in flight in one atomic word, and the handshake by which a request that enters
//! and a scale-down that begins never both proceed. Written against the crate's `sync` shim,
//! so that loom model-checks the handshake (`--cfg sfz_loom`).

use crate::sync::{AtomicUsize, Ordering};

/// Where a function is in its life, as this scaler knows it; see
/// [`Stats::function`](crate::scaler::Stats::function). The moves between phases are drawn in
/// the crate's `docs/lifecycle.md`: `Cold` → `ScalingUp` → `Warm` on a cold start (or `Cold`
/// → `Warm` when someone else scaled it), `Warm` → `ScalingDown` → `ScaledDown` on scale to
/// zero, back to `Warm` if the platform refuses, and `ScaledDown` → `ScalingUp` on the next
/// request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// No replica is wanted (the last read said desired 0), and no scale-up of this scaler's
    /// is pending.
    Cold,
    /// Starting: the platform wants replicas and none is ready yet, or this scaler asked for
    /// replicas and has not yet seen the request take effect (then a read that still says
    /// "desired 0" is read-after-write lag, not a reason to ask again, for up to a readiness
    /// deadline).
    ScalingUp,
    /// Ready at the last read or push.
    Warm,
    /// This scaler is scaling it to zero: requests take the cold path and wait; reads and
    /// pushes that still say "ready" are from before and are not trusted.
    ScalingDown,
    /// This scaler scaled it to zero: "ready" is not trusted until its next scale-up is sent.
    ScaledDown,
}

impl Phase {
    pub(crate) const ALL: [Phase; 5] = [
        Phase::Cold,
        Phase::ScalingUp,
        Phase::Warm,
        Phase::ScalingDown,
        Phase::ScaledDown,
    ];

    fn from_u8(value: u8) -> Self {
        Self::ALL[usize::from(value)]
    }

    /// Whether a "ready" read or push is from before this scaler's own scale-down.
    pub(crate) const fn distrusts_ready(self) -> bool {
        matches!(self, Phase::ScalingDown | Phase::ScaledDown)
    }
}

/// A function's phase and its requests in flight in one atomic word, read by every tracked
/// request without a lock: the phase in the top three bits, the count below. The moves
/// between phases are made by one mover at a time (the record's lock); requests only count
/// themselves in and out. Because both live in one word, a request that enters and a
/// scale-down that begins are ordered by that word alone: the request's increment sees the
/// phase it enters under, and the scale-down's compare-and-swap sees every request counted.
pub(crate) struct PhaseWord(AtomicUsize);

const PHASE_SHIFT: u32 = usize::BITS - 3;
const COUNT: usize = (1 << PHASE_SHIFT) - 1;

const fn pack(phase: Phase, count: usize) -> usize {
    ((phase as usize) << PHASE_SHIFT) | count
}

fn phase_of(word: usize) -> Phase {
    // The top three bits hold one of the five phases.
    Phase::from_u8((word >> PHASE_SHIFT) as u8)
}

impl PhaseWord {
    pub(crate) fn new(phase: Phase) -> Self {
        Self(AtomicUsize::new(pack(phase, 0)))
    }

    pub(crate) fn get(&self) -> Phase {
        phase_of(self.0.load(Ordering::Acquire))
    }

    /// Moves to `phase` (by the one mover at a time), keeping the count.
    pub(crate) fn set(&self, phase: Phase) {
        let mut word = self.0.load(Ordering::Acquire);
        loop {
            let next = pack(phase, word & COUNT);
            match self
                .0
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }

    /// A request enters: counted in flight, unless the function is being or has been scaled
    /// down by this scaler (then nothing is counted and the answer is `false`).
    pub(crate) fn enter(&self) -> bool {
        let before = self.0.fetch_add(1, Ordering::AcqRel);
        if phase_of(before).distrusts_ready() {
            self.0.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// One more request in flight, beside one that entered (an upgraded connection).
    pub(crate) fn enter_beside(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }

    /// A request that entered is done.
    pub(crate) fn leave(&self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.0.load(Ordering::Acquire) & COUNT
    }

    /// `Warm` → `ScalingDown` if no request is in flight (otherwise nothing changes and the
    /// answer is `false`). From here on requests that enter are refused.
    pub(crate) fn begin_scale_down(&self) -> bool {
        self.0
            .compare_exchange(
                pack(Phase::Warm, 0),
                pack(Phase::ScalingDown, 0),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }
}

#[cfg(all(test, sfz_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;

    /// A request that enters while nobody else is using the function: it would be forwarded
    /// (`inside`) exactly when no scale-down has begun.
    fn request(word: &PhaseWord, inside: &AtomicBool, scaling: &AtomicBool) {
        if word.enter() {
            inside.store(true, Ordering::SeqCst);
            assert!(
                !scaling.load(Ordering::SeqCst),
                "forwarded during a scale-down"
            );
            inside.store(false, Ordering::SeqCst);
            word.leave();
        }
    }

    /// A warm function's word, and the flags the requests and the scale-down raise.
    fn warm() -> (Arc<PhaseWord>, Arc<AtomicBool>, Arc<AtomicBool>) {
        (
            Arc::new(PhaseWord::new(Phase::Warm)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        )
    }

    fn spawn_request(
        word: &Arc<PhaseWord>,
        inside: &Arc<AtomicBool>,
        scaling: &Arc<AtomicBool>,
    ) -> loom::thread::JoinHandle<()> {
        let (word, inside, scaling) = (Arc::clone(word), Arc::clone(inside), Arc::clone(scaling));
        loom::thread::spawn(move || request(&word, &inside, &scaling))
    }

    #[test]
    fn a_request_and_a_scale_down_never_both_proceed() {
        loom::model(|| {
            let (word, inside, scaling) = warm();
            let requester = spawn_request(&word, &inside, &scaling);
            if word.begin_scale_down() {
                scaling.store(true, Ordering::SeqCst);
                assert!(
                    !inside.load(Ordering::SeqCst),
                    "scaled down under a request"
                );
            }
            requester.join().unwrap();
            assert_eq!(word.in_flight(), 0);
            assert!(matches!(word.get(), Phase::Warm | Phase::ScalingDown));
        });
    }

    #[test]
    fn two_requests_hold_off_a_scale_down_and_leave_the_word_as_it_was() {
        loom::model(|| {
            let (word, inside, scaling) = warm();
            let requesters: Vec<_> = (0..2)
                .map(|_| spawn_request(&word, &inside, &scaling))
                .collect();
            let scaled = word.begin_scale_down();
            if scaled {
                scaling.store(true, Ordering::SeqCst);
                assert!(
                    !inside.load(Ordering::SeqCst),
                    "scaled down under a request"
                );
            }
            for requester in requesters {
                requester.join().unwrap();
            }
            assert_eq!(word.in_flight(), 0, "every count given back");
            let expected = if scaled {
                Phase::ScalingDown
            } else {
                Phase::Warm
            };
            assert_eq!(word.get(), expected);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_keeps_every_phase_and_the_count_apart() {
        for phase in Phase::ALL {
            let word = PhaseWord::new(Phase::Cold);
            word.set(phase);
            word.enter_beside();
            word.enter_beside();
            assert_eq!(word.get(), phase);
            assert_eq!(word.in_flight(), 2);
            word.leave();
            assert_eq!((word.get(), word.in_flight()), (phase, 1));
        }
    }

    #[test]
    fn a_scale_down_begins_only_from_warm_with_nothing_in_flight() {
        let word = PhaseWord::new(Phase::Warm);
        assert!(word.enter());
        assert!(!word.begin_scale_down());
        assert_eq!(word.get(), Phase::Warm);
        word.leave();
        assert!(word.begin_scale_down());
        assert!(!word.enter(), "refused while scaling down");
        assert_eq!(word.in_flight(), 0);
    }
}
