//! The readiness deadlines of one flight's waiters, kept by the flight's own task: one timer per
//! flight instead of one per held request, and nothing for a waiter to undo when the flight
//! ends (10 000 released requests must not each take a timer lock to leave).
//!
//! Deadlines are "arrival + readiness deadline", so they come in nearly sorted: a new one goes
//! at the back of the queue, or (a waiter moved over from a cancelled flight) a little before.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::Waker;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant};

use crate::util::lock;

pub(crate) struct Deadlines {
    /// Deadlines are kept as whole milliseconds after this (rounded up: never early), so that
    /// a queue entry takes 16 bytes, not 24.
    epoch: Instant,
    queue: Mutex<Queue>,
    /// A deadline earlier than any queued one arrived: the sweeper re-arms its timer.
    earlier: Notify,
    /// The latest deadline ever registered (ms after the epoch; 0: none): a flight whose
    /// waiters have all left runs until then.
    latest: AtomicU64,
}

#[derive(Default)]
struct Queue {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// (deadline in ms after the epoch, slot, generation), earliest first; pairs whose slot
    /// moved on are skipped.
    order: VecDeque<(u64, u32, u32)>,
    live: usize,
    next_generation: u32,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    used: bool,
    expired: bool,
    waker: Option<Waker>,
}

/// A waiter's place in the queue: 8 bytes, as it lives in every held request.
pub(crate) struct Ticket {
    index: u32,
    generation: u32,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            queue: Mutex::default(),
            earlier: Notify::new(),
            latest: AtomicU64::new(0),
        }
    }
}

impl Deadlines {
    /// `at` in whole milliseconds after the epoch, rounded up.
    fn millis(&self, at: Instant) -> u64 {
        let after = at.saturating_duration_since(self.epoch);
        let ms = after.as_millis() + u128::from(after.subsec_nanos() % 1_000_000 != 0);
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    /// Queues a waiter whose deadline is `at`, to be woken through `waker` then.
    pub(crate) fn register(&self, at: Instant, waker: &Waker) -> Ticket {
        let at = self.millis(at);
        self.latest.fetch_max(at.max(1), Ordering::AcqRel);
        let mut queue = lock(&self.queue);
        // Wrapping is harmless: a slot is reused long before 2^32 generations pass.
        queue.next_generation = queue.next_generation.wrapping_add(1);
        let generation = queue.next_generation;
        let index = match queue.free.pop() {
            Some(index) => index,
            None => {
                queue.slots.push(Slot::default());
                // At most one slot per waiter, and waiters per flight are bounded.
                u32::try_from(queue.slots.len() - 1).expect("fewer than 2^32 waiters")
            }
        };
        queue.slots[index as usize] = Slot {
            generation,
            used: true,
            expired: false,
            waker: Some(waker.clone()),
        };
        queue.live += 1;
        let earliest = queue.order.front().is_none_or(|&(head, ..)| at < head);
        let position = queue
            .order
            .iter()
            .rposition(|&(other, ..)| other <= at)
            .map_or(0, |p| p + 1);
        queue.order.insert(position, (at, index, generation));
        if queue.order.len() > 2 * queue.live + 64 {
            // Waiters that left: O(n) once per n departures.
            let Queue { slots, order, .. } = &mut *queue;
            order.retain(|&(_, index, generation)| {
                let slot = &slots[index as usize];
                slot.used && slot.generation == generation
            });
        }
        drop(queue);
        if earliest {
            self.earlier.notify_one();
        }
        Ticket { index, generation }
    }

    /// The latest deadline a waiter ever registered, if any did.
    pub(crate) fn latest(&self) -> Option<Instant> {
        match self.latest.load(Ordering::Acquire) {
            0 => None,
            ms => Some(crate::util::far_instant(
                self.epoch,
                Duration::from_millis(ms),
            )),
        }
    }

    /// Whether `ticket`'s deadline has passed; otherwise keeps its waker current.
    pub(crate) fn expired(&self, ticket: &Ticket, waker: &Waker) -> bool {
        let mut queue = lock(&self.queue);
        let slot = &mut queue.slots[ticket.index as usize];
        if slot.generation != ticket.generation || slot.expired {
            return true;
        }
        if !slot.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            slot.waker = Some(waker.clone());
        }
        false
    }

    /// A waiter leaves before the flight's end. (Waiters released by the flight never call
    /// this: the queue goes with the flight.)
    pub(crate) fn cancel(&self, ticket: &Ticket) {
        let mut queue = lock(&self.queue);
        let slot = &mut queue.slots[ticket.index as usize];
        if slot.generation == ticket.generation && slot.used {
            *slot = Slot::default();
            queue.free.push(ticket.index);
            queue.live -= 1;
        }
    }

    /// Wakes every queued waiter (the flight turned cold: each takes a place or is refused).
    pub(crate) fn wake_all(&self) {
        let queue = lock(&self.queue);
        for slot in queue.slots.iter().filter(|s| s.used && !s.expired) {
            if let Some(waker) = &slot.waker {
                waker.wake_by_ref();
            }
        }
    }

    /// The sweeper, run by the flight's task beside its work: wakes each waiter at its
    /// deadline. Never returns.
    pub(crate) async fn run(&self) -> Infallible {
        loop {
            let earlier = self.earlier.notified();
            tokio::pin!(earlier);
            earlier.as_mut().enable();
            let next = {
                let mut queue = lock(&self.queue);
                // Rounded down: a deadline (rounded up) is due only once it has passed.
                let now = Instant::now()
                    .saturating_duration_since(self.epoch)
                    .as_millis();
                let now = u64::try_from(now).unwrap_or(u64::MAX);
                loop {
                    match queue.order.front().copied() {
                        Some((at, index, generation)) if at <= now => {
                            queue.order.pop_front();
                            let slot = &mut queue.slots[index as usize];
                            if slot.used && slot.generation == generation {
                                slot.expired = true;
                                if let Some(waker) = slot.waker.take() {
                                    waker.wake();
                                }
                            }
                        }
                        Some((at, ..)) => break Some(at),
                        None => break None,
                    }
                }
            };
            match next {
                Some(at) => {
                    let at = crate::util::far_instant(self.epoch, Duration::from_millis(at));
                    tokio::select! {
                        _ = sleep_until(at) => {}
                        _ = earlier => {}
                    }
                }
                None => earlier.await,
            }
        }
    }
}
