//! Paced release: the requests held through a cold start reach the fresh replicas in a slow
//! start instead of all at once.
//!
//! When a function becomes ready with many requests held, releasing them together sends the
//! whole queue to replicas that have just started (a JVM still compiling, a worker pool of 8):
//! they answer the burst with timeouts and 5xx. With [`PacedRelease`] on the layer, the held
//! requests of one cold start go through a window per function, as TCP's slow start does:
//!
//! - it opens at [`initial_per_replica`](PacedRelease::initial_per_replica) requests in flight
//!   per ready replica (4 by default);
//! - each response that succeeds within [`latency_factor`](PacedRelease::latency_factor)
//!   times the fastest response seen so far widens it by one (so it doubles every round trip);
//! - a 5xx, an error of the inner service (a refused connection) or a slower response narrows
//!   it (halves it, or by a quarter for latency), never below one request per replica;
//! - once no held request of that cold start waits, pacing ends.
//!
//! The layer measures each released request itself, from the inner call to its response's
//! head: nothing about the function's capacity is declared. A paced request still has its
//! deadline: one still waiting for the window when its readiness deadline passes gets 504 and
//! is never forwarded. Requests that arrive after the function is ready take the warm path,
//! unpaced: pacing is for the queue a cold start built up.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::util::lock;
use crate::FunctionId;

/// How held requests are let through after a cold start; see [the module
/// docs](crate::middleware::pacing). Set with
/// [`ScaleFromZeroLayer::paced_release`](crate::ScaleFromZeroLayer::paced_release).
///
/// ```
/// use tower_scale_from_zero::middleware::PacedRelease;
///
/// let pacing = PacedRelease::new().initial_per_replica(8).latency_factor(2.0);
/// assert_eq!(pacing.get_initial_per_replica(), 8);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct PacedRelease {
    initial_per_replica: usize,
    latency_factor: f64,
}

impl Default for PacedRelease {
    fn default() -> Self {
        Self::new()
    }
}

impl PacedRelease {
    /// 4 requests in flight per ready replica at first; responses up to 3 times slower than
    /// the fastest count as good.
    pub const fn new() -> Self {
        Self {
            initial_per_replica: 4,
            latency_factor: 3.0,
        }
    }

    /// Requests in flight per ready replica when the window opens.
    ///
    /// # Panics
    ///
    /// If `n` is zero.
    pub fn initial_per_replica(mut self, n: usize) -> Self {
        assert!(n > 0, "initial_per_replica must be at least 1");
        self.initial_per_replica = n;
        self
    }

    /// How much slower than the fastest response seen a response may be and still widen the
    /// window.
    ///
    /// # Panics
    ///
    /// If `factor` is not a finite number greater than 1.
    pub fn latency_factor(mut self, factor: f64) -> Self {
        assert!(
            factor.is_finite() && factor > 1.0,
            "latency_factor must be a finite number greater than 1"
        );
        self.latency_factor = factor;
        self
    }

    /// Requests in flight per ready replica when the window opens.
    pub const fn get_initial_per_replica(&self) -> usize {
        self.initial_per_replica
    }

    /// See [`latency_factor`](Self::latency_factor).
    pub const fn get_latency_factor(&self) -> f64 {
        self.latency_factor
    }
}

/// The windows of the functions whose held requests are being released.
#[derive(Debug)]
pub(super) struct Pacers {
    config: PacedRelease,
    windows: Mutex<HashMap<FunctionId, Arc<Window>>>,
}

impl Pacers {
    pub(super) fn new(config: PacedRelease) -> Self {
        Self {
            config,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for room in `function`'s window (opened for `replicas` ready replicas if none is
    /// open); `None` once `deadline` has passed without it. Dropped at any point, it gives
    /// back what it took: its place in the queue, or the room granted to it meanwhile.
    pub(super) async fn admit(
        self: &Arc<Self>,
        function: &FunctionId,
        replicas: u64,
        deadline: Instant,
    ) -> Option<Permit> {
        let (window, granted) = {
            // The map's lock, then the window's: the window cannot be ended (taken out of the
            // map) between finding it and queueing in it.
            let mut windows = lock(&self.windows);
            let window = Arc::clone(windows.entry(function.clone()).or_insert_with(|| {
                let replicas = replicas.max(1) as f64;
                Arc::new(Window {
                    function: function.clone(),
                    latency_factor: self.config.latency_factor,
                    floor: replicas,
                    state: Mutex::new(State {
                        limit: replicas * self.config.initial_per_replica as f64,
                        in_flight: 0,
                        queue: VecDeque::new(),
                        fastest: None,
                    }),
                })
            }));
            let mut state = lock(&window.state);
            let granted = if state.queue.is_empty() && (state.in_flight as f64) < state.limit {
                state.in_flight += 1;
                None
            } else {
                let (tx, rx) = oneshot::channel();
                state.queue.push_back(tx);
                Some(rx)
            };
            drop(state);
            (window, granted)
        };
        let Some(granted) = granted else {
            return Some(Permit {
                pacers: Arc::clone(self),
                window,
            });
        };
        let mut queued = Queued {
            pacers: Arc::clone(self),
            window: Some(window),
            granted,
        };
        match tokio::time::timeout_at(deadline, &mut queued.granted).await {
            Ok(Ok(())) => {
                let window = queued.window.take().expect("taken once");
                Some(Permit {
                    pacers: Arc::clone(self),
                    window,
                })
            }
            // The window was dropped with this request queued: cannot happen while it waits
            // (a waiter keeps its window), but give up cleanly. Past its deadline, `queued`
            // gives back whatever it had.
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// Ends `window`'s pacing if nothing is in flight and nobody waits in it.
    fn end_if_idle(&self, window: &Arc<Window>) {
        // The same order as `admit`: the map's lock, then the window's.
        let mut windows = lock(&self.windows);
        if !windows
            .get(&window.function)
            .is_some_and(|open| Arc::ptr_eq(open, window))
        {
            return;
        }
        let idle = {
            let state = lock(&window.state);
            state.in_flight == 0 && state.queue.iter().all(oneshot::Sender::is_closed)
        };
        if idle {
            windows.remove(&window.function);
        }
    }

    /// One place in `window` is free again: the next waiters get it, and pacing ends if
    /// nothing is left.
    fn give_back(&self, window: &Arc<Window>) {
        {
            let mut state = lock(&window.state);
            state.in_flight -= 1;
            while (state.in_flight as f64) < state.limit {
                let Some(next) = state.queue.pop_front() else {
                    break;
                };
                // Room is taken before the waiter hears of it; one that gave up (its deadline
                // passed, or it was dropped) is skipped, and one dropped after this send
                // gives the room back itself (`Queued`).
                if next.send(()).is_ok() {
                    state.in_flight += 1;
                }
            }
        }
        self.end_if_idle(window);
    }

    /// Functions with a window open (for tests).
    #[cfg(test)]
    fn open(&self) -> usize {
        lock(&self.windows).len()
    }
}

/// One function's release window.
#[derive(Debug)]
struct Window {
    function: FunctionId,
    latency_factor: f64,
    /// One request per ready replica: the window never closes below it.
    floor: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    /// Held requests waiting for room, oldest first.
    queue: VecDeque<oneshot::Sender<()>>,
    /// The fastest response seen: the replicas' time for a request when not queueing.
    fastest: Option<Duration>,
}

/// How a paced request went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// A response below 500, after this long.
    Answered(Duration),
    /// A 5xx or an error of the inner service.
    Failed,
}

/// Room for one request in a window, given back when dropped.
#[derive(Debug)]
pub(super) struct Permit {
    pacers: Arc<Pacers>,
    window: Arc<Window>,
}

impl Permit {
    /// The request's response (or failure): the window widens or narrows by it.
    pub(super) fn finish(self, outcome: Outcome) {
        let window = Arc::clone(&self.window);
        let mut state = lock(&window.state);
        match outcome {
            Outcome::Answered(latency) => {
                let fastest = *state.fastest.get_or_insert(latency);
                if latency < fastest {
                    state.fastest = Some(latency);
                }
                if latency.as_secs_f64() <= fastest.as_secs_f64() * window.latency_factor {
                    state.limit += 1.0;
                } else {
                    state.limit = (state.limit * 0.75).max(window.floor);
                }
            }
            Outcome::Failed => state.limit = (state.limit / 2.0).max(window.floor),
        }
        drop(state);
        // Drop gives the room back and lets the next ones in.
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.pacers.give_back(&self.window);
    }
}

/// A request waiting in a window's queue. However it stops waiting (granted, timed out,
/// dropped), what it took comes back: room granted to it that it will not use is given back,
/// and a window left with nothing in it ends.
struct Queued {
    pacers: Arc<Pacers>,
    /// Taken when the grant is handed on as a [`Permit`].
    window: Option<Arc<Window>>,
    granted: oneshot::Receiver<()>,
}

impl Drop for Queued {
    fn drop(&mut self) {
        let Some(window) = self.window.take() else {
            return;
        };
        // No grant can arrive after this; one that arrived before is room taken for it.
        self.granted.close();
        if self.granted.try_recv().is_ok() {
            self.pacers.give_back(&window);
        } else {
            self.pacers.end_if_idle(&window);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> FunctionId {
        FunctionId::new("f", "fn").unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_opens_at_the_initial_size_per_replica_and_grows_with_good_responses() {
        let pacers = Arc::new(Pacers::new(PacedRelease::new().initial_per_replica(2)));
        let far = Instant::now() + Duration::from_secs(60);
        let a = pacers.admit(&id(), 1, far).await.unwrap();
        let b = pacers.admit(&id(), 1, far).await.unwrap();
        // The third waits for room.
        let third = tokio::spawn({
            let pacers = Arc::clone(&pacers);
            async move { pacers.admit(&id(), 1, far).await }
        });
        tokio::task::yield_now().await;
        assert!(!third.is_finished());
        // A good response widens the window to 3 and frees one place: the third goes, and a
        // fourth fits too.
        a.finish(Outcome::Answered(Duration::from_millis(20)));
        let c = third.await.unwrap().unwrap();
        let d = pacers.admit(&id(), 1, far).await.unwrap();
        assert_eq!(lock(&b.window.state).in_flight, 3);
        drop((b, c, d));
        assert_eq!(pacers.open(), 0, "pacing ends once nobody waits");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_and_slow_responses_narrow_the_window_but_not_below_one_per_replica() {
        let pacers = Arc::new(Pacers::new(PacedRelease::new().initial_per_replica(8)));
        let far = Instant::now() + Duration::from_secs(60);
        let mut permits = Vec::new();
        for _ in 0..16 {
            permits.push(pacers.admit(&id(), 2, far).await.unwrap());
        }
        let window = Arc::clone(&permits[0].window);
        let limit = || lock(&window.state).limit;
        assert_eq!(limit(), 16.0);
        permits
            .pop()
            .unwrap()
            .finish(Outcome::Answered(Duration::from_millis(10)));
        assert_eq!(limit(), 17.0);
        permits
            .pop()
            .unwrap()
            .finish(Outcome::Answered(Duration::from_millis(31)));
        assert_eq!(
            limit(),
            12.75,
            "more than 3x the fastest: narrowed by a quarter"
        );
        for _ in 0..6 {
            permits.pop().unwrap().finish(Outcome::Failed);
        }
        assert_eq!(limit(), 2.0, "halved down to one per replica");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_still_waiting_at_its_deadline_is_turned_away_and_leaves_nothing() {
        let pacers = Arc::new(Pacers::new(PacedRelease::new().initial_per_replica(1)));
        let soon = Instant::now() + Duration::from_millis(100);
        let held = pacers.admit(&id(), 1, soon).await.unwrap();
        let late = pacers.admit(&id(), 1, soon).await;
        assert!(late.is_none());
        assert_eq!(Instant::now(), soon, "turned away at its deadline");
        drop(held);
        assert_eq!(pacers.open(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_place_granted_to_a_waiter_that_leaves_at_that_moment_is_given_back() {
        let pacers = Arc::new(Pacers::new(PacedRelease::new().initial_per_replica(1)));
        let far = Instant::now() + Duration::from_secs(60);
        let first = pacers.admit(&id(), 1, far).await.unwrap();
        let waiter = tokio::spawn({
            let pacers = Arc::clone(&pacers);
            async move { pacers.admit(&id(), 1, far).await.map(drop) }
        });
        tokio::task::yield_now().await;
        // The place goes to the waiter, which leaves before it is polled again.
        drop(first);
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(pacers.open(), 0, "the window is empty once traffic stops");
    }

    /// A small deterministic generator for the schedules below (no dependency for it).
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_returns_to_empty_whatever_the_drop_points() {
        for seed in 0..300 {
            let mut rng = Lcg(seed);
            let pacers = Arc::new(Pacers::new(
                PacedRelease::new().initial_per_replica(1 + rng.below(3) as usize),
            ));
            let start = Instant::now();
            let deadline = start + Duration::from_millis(5 + rng.below(60));
            let waiters: Vec<_> = (0..2 + rng.below(12))
                .map(|_| {
                    let pacers = Arc::clone(&pacers);
                    let hold = Duration::from_millis(rng.below(20));
                    let fails = rng.below(3) == 0;
                    tokio::spawn(async move {
                        if let Some(permit) = pacers.admit(&id(), 1, deadline).await {
                            tokio::time::sleep(hold).await;
                            if fails {
                                permit.finish(Outcome::Failed);
                            }
                        }
                    })
                })
                .collect();
            // Some waiters leave at random moments: queued, just granted, or holding a place.
            for waiter in &waiters {
                if rng.below(2) == 0 {
                    for _ in 0..rng.below(4) {
                        tokio::task::yield_now().await;
                    }
                    if rng.below(2) == 0 {
                        tokio::time::advance(Duration::from_millis(rng.below(10))).await;
                    }
                    waiter.abort();
                }
            }
            for waiter in waiters {
                let _ = waiter.await;
            }
            assert_eq!(pacers.open(), 0, "seed {seed}: a window was left open");
        }
    }
}
