//! Single-flight: at most one computation in flight per key, its result shared by every caller
//! that asked for the key meanwhile.
//!
//! The computation runs on its own Tokio task, so it is detached from the caller that started
//! it: that caller may be dropped (a client disconnects) and the others still get the result.
//! When the last caller of a flight is dropped, the flight is aborted and its entry removed,
//! unless the computation holds a [`KeepAlive`] (a write to the platform that must not be cut
//! off half-way): then it ends when the last `KeepAlive` is dropped with no caller left.
//! A panic in the computation reaches every caller as [`FlightError::Panicked`] and leaves
//! nothing behind.
//!
//! Flights heal: a flight whose task has finished or was cancelled (its runtime shut down) is
//! never joined; the next caller starts a fresh one. Each flight may carry a state `S` that its
//! callers, its computation and outsiders (through [`SingleFlight::state`]) share: the scaler
//! uses it as the per-function mailbox for pushed readiness.
//!
//! # Runtime
//!
//! [`SingleFlight::join`] spawns onto the current Tokio runtime and panics outside one.
//!
//! ```
//! use tower_scale_from_zero::single_flight::SingleFlight;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let flights: SingleFlight<&'static str, u32> = SingleFlight::new();
//! let a = flights.join("answer", || async { 42 });
//! let b = flights.join("answer", || async { unreachable!("coalesced into the first flight") });
//! assert_eq!((a.await.unwrap(), b.await.unwrap()), (42, 42));
//! assert!(flights.is_empty());
//! # }
//! ```

use std::borrow::Borrow;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use futures::future::{FutureExt, Shared};
use tokio::sync::futures::Notified;
use tokio::sync::{oneshot, Notify};
use tokio::task::AbortHandle;

/// One in-flight computation per key, each with a shared state `S`. Cloning shares the same
/// flights.
pub struct SingleFlight<K, V, S = ()> {
    inner: Arc<Inner<K, V, S>>,
}

struct Inner<K, V, S> {
    flights: DashMap<K, Slot<V, S>>,
    next_id: AtomicU64,
}

struct Slot<V, S> {
    id: u64,
    callers: usize,
    keep_alive: usize,
    result: Shared<Joined<V>>,
    /// Set once the task is spawned, which happens after the map's lock is released: a
    /// runtime that is shutting down drops a task inside `spawn`, and its clean-up takes that
    /// lock.
    abort: Option<AbortHandle>,
    state: Arc<S>,
    /// Notified when a caller leaves before the end (see [`FlightContext::caller_left`]).
    left: Arc<Notify>,
}

impl<K: Hash + Eq, V, S> Inner<K, V, S> {
    /// The state of `key`'s flight (only if it is flight `id`, when given).
    fn state<Q>(&self, key: &Q, id: Option<u64>) -> Option<Arc<S>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slot = self.flights.get(key)?;
        id.is_none_or(|id| slot.id == id)
            .then(|| Arc::clone(&slot.state))
    }
}

impl<V, S> Slot<V, S> {
    fn unused(&self) -> bool {
        self.callers == 0 && self.keep_alive == 0
    }

    /// Whether its task has ended without cleaning up (cancelled): such a flight is never
    /// joined. A flight whose task is not spawned yet is starting, not ended.
    fn is_dead(&self) -> bool {
        self.abort.as_ref().is_some_and(AbortHandle::is_finished)
    }
}

/// Why a flight ended without a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlightError {
    /// The computation panicked.
    #[error("the computation panicked")]
    Panicked,
    /// The computation's task was cancelled (its runtime is shutting down).
    #[error("the computation was cancelled")]
    Cancelled,
}

/// What `join_or_start` did.
enum Started<K: Hash + Eq, V, S> {
    Caller(Flight<K, V, S>),
    Detached,
    Busy,
}

/// Returned by [`SingleFlight::try_join`] when the key's flight already has its maximum number
/// of callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the flight already has its maximum number of callers")]
pub struct Full(());

impl<K: Hash + Eq, V, S> SingleFlight<K, V, S> {
    /// No flights.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                flights: DashMap::new(),
                next_id: AtomicU64::new(0),
            }),
        }
    }
}

impl<K, V, S> SingleFlight<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: Default + Send + Sync + 'static,
{
    /// Joins the flight for `key`, starting it with `work` if there is none.
    ///
    /// `work` is called at most once, and only when this call starts the flight.
    pub fn join<F, Fut>(&self, key: K, work: F) -> Flight<K, V, S>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        match self.try_join(key, usize::MAX, work) {
            Ok(flight) => flight,
            Err(Full(())) => unreachable!("usize::MAX callers"),
        }
    }

    /// Like [`join`](Self::join), but refuses when the key's flight already has
    /// `max_callers` callers (a `max_callers` of 0 refuses every call).
    pub fn try_join<F, Fut>(
        &self,
        key: K,
        max_callers: usize,
        work: F,
    ) -> Result<Flight<K, V, S>, Full>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        self.try_join_with(key, max_callers, |_| work())
    }

    /// Like [`try_join`](Self::try_join), with the computation given its
    /// [`FlightContext`]: the flight's state and [`KeepAlive`] guards.
    pub fn try_join_with<F, Fut>(
        &self,
        key: K,
        max_callers: usize,
        work: F,
    ) -> Result<Flight<K, V, S>, Full>
    where
        F: FnOnce(FlightContext<K, V, S>) -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        match self.join_or_start(key, max_callers, |context, _| work(context), true, false)? {
            Started::Caller(flight) => Ok(flight),
            Started::Detached | Started::Busy => unreachable!("a caller always gets a flight"),
        }
    }

    /// Like [`try_join_with`](Self::try_join_with), but a flight this call starts belongs to
    /// its computation: it is given a [`KeepAlive`], so it is not aborted when every caller
    /// has left, and runs until it returns or drops the guard with no caller left. (Joining a
    /// flight under way changes nothing about it.)
    pub fn try_join_owned<F, Fut>(
        &self,
        key: K,
        max_callers: usize,
        work: F,
    ) -> Result<Flight<K, V, S>, Full>
    where
        F: FnOnce(FlightContext<K, V, S>, KeepAlive<K, V, S>) -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        match self.join_or_start(key, max_callers, kept(work), true, true)? {
            Started::Caller(flight) => Ok(flight),
            Started::Detached | Started::Busy => unreachable!("a caller always gets a flight"),
        }
    }

    /// Starts a flight for `key` with no caller, unless one is under way (then `false`, and
    /// nothing happens). The computation is given a [`KeepAlive`] that keeps the flight
    /// running until it drops it; callers may join meanwhile, and once it is dropped the flight
    /// runs only while a caller waits, as any other.
    pub fn try_start_detached<F, Fut>(&self, key: K, work: F) -> bool
    where
        F: FnOnce(FlightContext<K, V, S>, KeepAlive<K, V, S>) -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        matches!(
            self.join_or_start(key, 0, kept(work), false, true),
            Ok(Started::Detached)
        )
    }

    fn join_or_start<F, Fut>(
        &self,
        key: K,
        max_callers: usize,
        work: F,
        join: bool,
        kept: bool,
    ) -> Result<Started<K, V, S>, Full>
    where
        F: FnOnce(FlightContext<K, V, S>, Option<KeepAlive<K, V, S>>) -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        let mut dead = None;
        let mut task = None;
        let joined = match self.inner.flights.entry(key.clone()) {
            Entry::Occupied(slot) if !join && !slot.get().is_dead() => return Ok(Started::Busy),
            Entry::Occupied(mut slot) if !slot.get().is_dead() => {
                let slot = slot.get_mut();
                if slot.callers >= max_callers {
                    return Err(Full(()));
                }
                slot.callers += 1;
                (slot.id, slot.result.clone(), true)
            }
            entry => {
                if join && max_callers == 0 {
                    return Err(Full(()));
                }
                // Checked before the slot goes in: a slot whose task can never be spawned
                // would be joined for ever.
                let runtime = tokio::runtime::Handle::try_current()
                    .expect("SingleFlight spawns its flights: call it within a Tokio runtime");
                let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
                // A detached or owned flight is kept alive by its computation (a detached one
                // starts with no caller).
                let keep_alive = kept.then(|| KeepAlive {
                    inner: Arc::clone(&self.inner),
                    key: key.clone(),
                    id,
                });
                let state = Arc::new(S::default());
                let left = Arc::new(Notify::new());
                let context = FlightContext {
                    inner: Arc::clone(&self.inner),
                    key: key.clone(),
                    id,
                    state: Arc::clone(&state),
                    left: Arc::clone(&left),
                };
                let cleanup = Cleanup {
                    inner: Arc::clone(&self.inner),
                    key: key.clone(),
                    id,
                };
                let (sender, receiver) = oneshot::channel();
                // Spawned below, once this shard's lock is released.
                task = Some((runtime, async move {
                    let out = AssertUnwindSafe(async move { work(context, keep_alive).await })
                        .catch_unwind()
                        .await
                        .map_err(|_| FlightError::Panicked);
                    // The slot is gone from the map before any caller sees the result. (If the
                    // task is cancelled instead, `cleanup` is dropped with it.)
                    drop(cleanup);
                    let _ = sender.send(out);
                }));
                let result = Joined(receiver).shared();
                let slot = Slot {
                    id,
                    callers: usize::from(join),
                    keep_alive: usize::from(kept),
                    result: result.clone(),
                    abort: None,
                    state: Arc::clone(&state),
                    left,
                };
                match entry {
                    Entry::Occupied(mut occupied) => dead = Some(occupied.insert(slot)),
                    Entry::Vacant(vacant) => {
                        vacant.insert(slot);
                    }
                }
                (id, result, false)
            }
        };
        drop(dead);
        if let Some((runtime, task)) = task {
            let abort = runtime.spawn(task).abort_handle();
            let id = joined.0;
            let mut orphaned = true;
            if let Some(mut slot) = self.inner.flights.get_mut(&key) {
                if slot.id == id {
                    slot.abort = Some(abort.clone());
                    orphaned = false;
                }
            }
            // Every caller left (or the task ended) before the handle was stored: nothing
            // waits for it.
            if orphaned {
                abort.abort();
            }
        }
        if !join {
            return Ok(Started::Detached);
        }
        let (id, result, joined_existing) = joined;
        Ok(Started::Caller(Flight {
            result,
            guard: Caller {
                inner: Arc::clone(&self.inner),
                key,
                id,
                finished: false,
                joined_existing,
            },
        }))
    }

    /// The state of `key`'s flight, if one is under way.
    pub fn state<Q>(&self, key: &Q) -> Option<Arc<S>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.state(key, None)
    }

    /// The number of callers waiting on `key`'s flight (0 when there is none).
    pub fn callers<Q>(&self, key: &Q) -> usize
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.flights.get(key).map_or(0, |slot| slot.callers)
    }

    /// The callers waiting on every flight, all together.
    pub fn total_callers(&self) -> usize {
        self.inner.flights.iter().map(|slot| slot.callers).sum()
    }

    /// The key of `key`'s flight as the map holds it, if one is under way (a clone of it, where
    /// `key` may be a borrowed form).
    pub(crate) fn key_of<Q>(&self, key: &Q) -> Option<K>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.flights.get(key).map(|slot| slot.key().clone())
    }

    /// The keys of every flight under way.
    pub(crate) fn keys(&self) -> Vec<K> {
        self.inner
            .flights
            .iter()
            .map(|slot| slot.key().clone())
            .collect()
    }

    /// The states of every flight under way.
    pub(crate) fn states(&self) -> Vec<Arc<S>> {
        self.inner
            .flights
            .iter()
            .map(|slot| Arc::clone(&slot.state))
            .collect()
    }

    /// Ends every flight under way: their tasks are aborted and their callers get
    /// [`FlightError::Cancelled`].
    pub fn abort_all(&self) {
        let mut aborts = Vec::new();
        self.inner.flights.retain(|_, slot| {
            aborts.extend(slot.abort.take());
            false
        });
        // After the map's locks are released: a task's clean-up takes them.
        for abort in aborts {
            abort.abort();
        }
    }

    /// The number of flights under way.
    pub fn len(&self) -> usize {
        self.inner.flights.len()
    }

    /// Whether no flight is under way.
    pub fn is_empty(&self) -> bool {
        self.inner.flights.is_empty()
    }
}

impl<K: Hash + Eq, V, S> Default for SingleFlight<K, V, S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V, S> Clone for SingleFlight<K, V, S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K: Hash + Eq, V, S> fmt::Debug for SingleFlight<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingleFlight")
            .field("flights", &self.inner.flights.len())
            .finish()
    }
}

/// A caller's share of a flight: resolves to the flight's value. Dropping it leaves the flight;
/// dropping the last one aborts it (unless the computation holds a [`KeepAlive`]).
#[must_use = "futures do nothing unless polled"]
pub struct Flight<K: Hash + Eq, V, S = ()> {
    result: Shared<Joined<V>>,
    guard: Caller<K, V, S>,
}

impl<K: Hash + Eq, V, S> Flight<K, V, S> {
    /// Whether this caller joined a flight already under way (rather than starting it).
    pub fn joined_existing(&self) -> bool {
        self.guard.joined_existing
    }

    /// The flight's shared state, while the flight is under way (`None` once it has ended).
    /// A look-up, not a field: callers that do not need the state pay nothing for it.
    pub fn state(&self) -> Option<Arc<S>> {
        self.guard.inner.state(&self.guard.key, Some(self.guard.id))
    }
}

// Nothing in a `Flight` is pinned: `Shared` is `Unpin` and the key is only read on drop.
impl<K: Hash + Eq, V, S> Unpin for Flight<K, V, S> {}

impl<K: Hash + Eq, V: Clone, S> Future for Flight<K, V, S> {
    type Output = Result<V, FlightError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let out = ready!(self.result.poll_unpin(cx));
        // The flight removed its slot before finishing: nothing to leave on drop.
        self.guard.finished = true;
        Poll::Ready(out)
    }
}

impl<K: Hash + Eq, V, S> fmt::Debug for Flight<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flight")
            .field("id", &self.guard.id)
            .finish()
    }
}

/// What a flight's computation is given: its state, and [`KeepAlive`] guards.
pub struct FlightContext<K: Hash + Eq, V, S = ()> {
    inner: Arc<Inner<K, V, S>>,
    key: K,
    id: u64,
    state: Arc<S>,
    left: Arc<Notify>,
}

impl<K: Hash + Eq + Clone, V, S> FlightContext<K, V, S> {
    /// The flight's shared state.
    pub fn state(&self) -> &Arc<S> {
        &self.state
    }

    /// Resolves after a caller left the flight before its end (a permit is kept if nobody
    /// waits, so a departure between a check of [`callers`](Self::callers) and the wait is
    /// not missed). For a computation that owns its flight and ends once nobody waits.
    pub fn caller_left(&self) -> Notified<'_> {
        self.left.notified()
    }

    /// The number of callers waiting on this flight now.
    pub fn callers(&self) -> usize {
        self.inner
            .flights
            .get(&self.key)
            .filter(|slot| slot.id == self.id)
            .map_or(0, |slot| slot.callers)
    }

    /// Keeps the flight running while the guard lives, even if every caller leaves; `None`
    /// when no caller is left already (the flight is ending). Dropping the last guard with no
    /// caller left ends the flight.
    pub fn keep_alive(&self) -> Option<KeepAlive<K, V, S>> {
        let mut slot = self.inner.flights.get_mut(&self.key)?;
        if slot.id != self.id || slot.unused() {
            return None;
        }
        slot.keep_alive += 1;
        Some(KeepAlive {
            inner: Arc::clone(&self.inner),
            key: self.key.clone(),
            id: self.id,
        })
    }
}

impl<K: Hash + Eq, V, S> fmt::Debug for FlightContext<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlightContext")
            .field("id", &self.id)
            .finish()
    }
}

/// Keeps a flight running without callers; see [`FlightContext::keep_alive`].
pub struct KeepAlive<K: Hash + Eq, V, S = ()> {
    inner: Arc<Inner<K, V, S>>,
    key: K,
    id: u64,
}

impl<K: Hash + Eq, V, S> Drop for KeepAlive<K, V, S> {
    fn drop(&mut self) {
        release(&self.inner, &self.key, self.id, |slot| slot.keep_alive -= 1);
    }
}

impl<K: Hash + Eq, V, S> fmt::Debug for KeepAlive<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepAlive").field("id", &self.id).finish()
    }
}

struct Caller<K: Hash + Eq, V, S> {
    inner: Arc<Inner<K, V, S>>,
    key: K,
    id: u64,
    finished: bool,
    joined_existing: bool,
}

impl<K: Hash + Eq, V, S> Drop for Caller<K, V, S> {
    fn drop(&mut self) {
        if !self.finished {
            release(&self.inner, &self.key, self.id, |slot| slot.callers -= 1);
        }
    }
}

/// The keep-alive `join_or_start` hands a computation: `Some` for a flight that starts kept.
type MaybeKept<K, V, S> = Option<KeepAlive<K, V, S>>;

/// `work`, for a flight that starts kept alive (`join_or_start` with `kept`): it is always
/// handed its [`KeepAlive`].
fn kept<K: Hash + Eq, V, S, F, Fut>(
    work: F,
) -> impl FnOnce(FlightContext<K, V, S>, MaybeKept<K, V, S>) -> Fut
where
    F: FnOnce(FlightContext<K, V, S>, KeepAlive<K, V, S>) -> Fut,
{
    |context, keep_alive| {
        work(
            context,
            keep_alive.expect("a kept flight starts kept alive"),
        )
    }
}

/// Gives back a caller's or a guard's hold on flight `id`; the last one out removes the slot and
/// aborts the task (after the map's lock is released).
fn release<K: Hash + Eq, V, S>(
    inner: &Inner<K, V, S>,
    key: &K,
    id: u64,
    leave: impl FnOnce(&mut Slot<V, S>),
) {
    // A finished flight has removed its slot already (or a newer flight holds the key).
    let removed = inner.flights.remove_if_mut(key, |_, slot| {
        if slot.id != id {
            return false;
        }
        leave(slot);
        // Wakes a computation that owns its flight (a waker, no lock of ours).
        slot.left.notify_one();
        slot.unused()
    });
    if let Some(abort) = removed.and_then(|(_, slot)| slot.abort) {
        abort.abort();
    }
}

/// Removes the flight's slot when its task ends, however it ends.
struct Cleanup<K: Hash + Eq, V, S> {
    inner: Arc<Inner<K, V, S>>,
    key: K,
    id: u64,
}

impl<K: Hash + Eq, V, S> Drop for Cleanup<K, V, S> {
    fn drop(&mut self) {
        let id = self.id;
        self.inner
            .flights
            .remove_if(&self.key, |_, slot| slot.id == id);
    }
}

/// The flight's result, as its task sends it; a task that ended without sending (cancelled,
/// or dropped by a runtime that is shutting down) is `Cancelled`.
struct Joined<V>(oneshot::Receiver<Result<V, FlightError>>);

impl<V> Future for Joined<V> {
    type Output = Result<V, FlightError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0
            .poll_unpin(cx)
            .map(|sent| sent.unwrap_or(Err(FlightError::Cancelled)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_computation() {
        let flights = SingleFlight::<u32, u32>::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..100)
            .map(|_| {
                let runs = Arc::clone(&runs);
                flights.join(1, move || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    7
                })
            })
            .collect();
        assert_eq!(flights.callers(&1), 100);
        for out in futures::future::join_all(callers).await {
            assert_eq!(out, Ok(7));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(flights.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_starter_does_not_cancel_the_others() {
        let flights = SingleFlight::<u32, u32>::new();
        let starter = flights.join(1, || async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            7
        });
        let other = flights.join(1, || async { unreachable!() });
        drop(starter);
        assert_eq!(flights.callers(&1), 1);
        assert_eq!(other.await, Ok(7));
        assert!(flights.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_every_caller_aborts_and_removes() {
        let flights = SingleFlight::<u32, u32>::new();
        let finished = Arc::new(AtomicUsize::new(0));
        let f = Arc::clone(&finished);
        let a = flights.join(1, move || async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            f.fetch_add(1, Ordering::SeqCst);
            7
        });
        let b = flights.join(1, || async { unreachable!() });
        drop((a, b));
        assert!(flights.is_empty());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            finished.load(Ordering::SeqCst),
            0,
            "aborted work must not finish"
        );
        // A new caller starts a fresh flight.
        assert_eq!(flights.join(1, || async { 8 }).await, Ok(8));
    }

    #[tokio::test]
    async fn a_panic_reaches_every_caller_and_leaves_nothing() {
        let flights = SingleFlight::<u32, u32>::new();
        let a = flights.join(1, || async { panic!("boom") });
        let b = flights.join(1, || async { 0 });
        assert_eq!(a.await, Err(FlightError::Panicked));
        assert_eq!(b.await, Err(FlightError::Panicked));
        assert!(flights.is_empty());
        assert_eq!(flights.join(1, || async { 9 }).await, Ok(9));
    }

    #[tokio::test]
    async fn try_join_refuses_past_the_limit_and_frees_on_drop() {
        let flights = SingleFlight::<u32, u32>::new();
        let a = flights.try_join(1, 2, std::future::pending::<u32>).unwrap();
        let b = flights.try_join(1, 2, || async { 0 }).unwrap();
        assert!(flights.try_join(1, 2, || async { 0 }).is_err());
        drop(b);
        let c = flights.try_join(1, 2, || async { 0 }).unwrap();
        assert!(flights.try_join(1, 0, || async { 0 }).is_err());
        drop((a, c));
        assert!(flights.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_owned_flight_outlives_its_callers_and_ends_when_its_computation_does() {
        let flights = SingleFlight::<u32, u32>::new();
        let finished = Arc::new(AtomicUsize::new(0));
        let f = Arc::clone(&finished);
        let caller = flights
            .try_join_owned(1, 10, move |_, keep_alive| async move {
                let _keep_alive = keep_alive;
                tokio::time::sleep(Duration::from_millis(10)).await;
                f.fetch_add(1, Ordering::SeqCst);
                7
            })
            .unwrap();
        drop(caller);
        assert_eq!(flights.len(), 1, "still running without callers");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(finished.load(Ordering::SeqCst), 1, "ran to its end");
        assert!(flights.is_empty());
    }
}
