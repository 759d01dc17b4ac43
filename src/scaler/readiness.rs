//! Pushed readiness: [`ReadinessNotifier`] and the per-flight mailbox it delivers to.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::Notify;

use super::deadlines::Deadlines;
use super::{lock, Inner};
use crate::{FunctionId, QueryError, ServiceQueryResponse};

/// Lets a provider that watches the platform (a Kubernetes watch, a process supervisor) report
/// a function's state as it changes: requests held for **that** function are released the
/// moment it is ready, instead of at the next poll, whatever the cache settings. A push for
/// one function never wakes or delays another function's cold start.
///
/// A notifier can exist before the scaler it serves, so a provider can take one when it is
/// built; [`FunctionScaler::builder`](crate::FunctionScaler::builder) then attaches it. Until
/// it is attached (and after its scaler is dropped) pushes are ignored. Cheap to clone; it
/// holds no strong reference to the scaler, so a provider may keep one without a cycle.
///
/// ```
/// use tower_scale_from_zero::testing::{FakeFunction, InMemoryProvider};
/// use tower_scale_from_zero::{FunctionId, FunctionScaler, ReadinessNotifier, ScalingConfig};
///
/// let notifier = ReadinessNotifier::new();
/// let provider = InMemoryProvider::new();
/// provider.push_readiness_to(notifier.clone());
/// let scaler = FunctionScaler::builder(provider)
///     .config(ScalingConfig::default())
///     .readiness_notifier(notifier.clone())
///     .build();
/// assert!(notifier.is_attached());
/// # let _ = scaler;
/// ```
#[derive(Clone, Default)]
pub struct ReadinessNotifier {
    scaler: Arc<OnceLock<Weak<Inner>>>,
}

impl ReadinessNotifier {
    /// A notifier not yet attached to a scaler.
    pub fn new() -> Self {
        Self::default()
    }

    pub(super) fn attached(inner: &Arc<Inner>) -> Self {
        let notifier = Self::new();
        notifier.attach(inner);
        notifier
    }

    /// Attaches to `inner`. Panics if already attached elsewhere: one notifier serves one
    /// scaler.
    pub(super) fn attach(&self, inner: &Arc<Inner>) {
        if self.scaler.set(Arc::downgrade(inner)).is_err() {
            panic!("this ReadinessNotifier is already attached to a FunctionScaler");
        }
    }

    /// Whether a live scaler receives this notifier's pushes.
    pub fn is_attached(&self) -> bool {
        self.scaler
            .get()
            .is_some_and(|weak| weak.strong_count() > 0)
    }

    /// Reports `state` for `function`: it is written to the cache and, if a cold start of
    /// `function` is under way, delivered to it directly. If `state` is ready, that
    /// function's held requests are released at once.
    pub fn notify(&self, function: &FunctionId, state: ServiceQueryResponse) {
        if let Some(inner) = self.scaler.get().and_then(Weak::upgrade) {
            inner.push(function, state);
        }
    }

    /// Reports that `function` changed in a way a state cannot say (its process exited while
    /// starting, say): a cold start of `function` under way reads its state now instead of at
    /// its next poll, so a failure the provider now reports ends it at once. No effect when
    /// no cold start of `function` is under way.
    pub fn notify_changed(&self, function: &FunctionId) {
        if let Some(inner) = self.scaler.get().and_then(Weak::upgrade) {
            inner.changed(function);
        }
    }
}

impl fmt::Debug for ReadinessNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadinessNotifier")
            .field("attached", &self.is_attached())
            .finish()
    }
}

/// What one cold start shares with its waiters and with pushes: its own mailbox, so that a
/// push reaches exactly the flight of its function.
#[derive(Default)]
pub(super) struct FlightState {
    /// The latest pushed state not yet looked at.
    pushed: Mutex<Option<ServiceQueryResponse>>,
    /// Wakes the flight's task when a state is pushed. `notify_one` keeps a permit if the
    /// task is not waiting, so a push is never missed.
    wake: Notify,
    /// Set by [`ReadinessNotifier::notify_changed`]: read the state now.
    look_now: AtomicBool,
    /// Set once the flight knows the function is cold (not merely a refresh of a warm one):
    /// from then on its waiters count against the hold limits.
    cold: AtomicBool,
    /// Its waiters' deadlines, swept by the flight's task.
    deadlines: Deadlines,
    /// Waiters that got a place under the total hold limit. A cold flight scales up only once
    /// one has: a flight whose every waiter was refused must not touch the platform.
    admitted: AtomicUsize,
    admission: Notify,
    last_error: Mutex<Option<QueryError>>,
    /// The flight's `cold_start` span: the flight runs in it, and its waiters' spans follow
    /// from it. Made by whichever needs it first.
    span: OnceLock<tracing::Span>,
    /// The `requests_held` gauge of the function: one handle per flight, not per waiter.
    held: OnceLock<metrics::Gauge>,
}

impl FlightState {
    pub(super) fn push(&self, state: ServiceQueryResponse) {
        *lock(&self.pushed) = Some(state);
        self.wake.notify_one();
    }

    /// The pushed state, if one arrived and it is ready. Pushes that are not ready are
    /// dropped: polling covers them.
    pub(super) fn take_ready_push(&self) -> Option<ServiceQueryResponse> {
        lock(&self.pushed)
            .take()
            .filter(ServiceQueryResponse::is_ready)
    }

    pub(super) fn look_now(&self) {
        self.look_now.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Whether a read was asked for since the last call.
    pub(super) fn take_look_now(&self) -> bool {
        self.look_now.swap(false, Ordering::AcqRel)
    }

    pub(super) fn wake(&self) -> &Notify {
        &self.wake
    }

    pub(super) fn mark_cold(&self) {
        if !self.cold.swap(true, Ordering::AcqRel) {
            // Waiters that joined while this could still be a warm refresh take their places.
            self.deadlines.wake_all();
        }
    }

    pub(super) fn is_cold(&self) -> bool {
        self.cold.load(Ordering::Acquire)
    }

    pub(super) fn deadlines(&self) -> &Deadlines {
        &self.deadlines
    }

    pub(super) fn admit(&self) {
        // Only the first admission can wake the flight.
        if self.admitted.fetch_add(1, Ordering::AcqRel) == 0 {
            self.admission.notify_waiters();
        }
    }

    /// Resolves once a waiter has been admitted (at once if one has).
    pub(super) async fn some_admitted(&self) {
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

    pub(super) fn span(&self, function: &FunctionId) -> &tracing::Span {
        self.span
            .get_or_init(|| tracing::info_span!(parent: None, "cold_start", function = %function))
    }

    pub(super) fn held_gauge(&self, function: &FunctionId) -> metrics::Gauge {
        self.held
            .get_or_init(|| crate::telemetry::held_gauge(function))
            .clone()
    }

    pub(super) fn set_last_error(&self, err: QueryError) {
        *lock(&self.last_error) = Some(err);
    }

    pub(super) fn last_error(&self) -> Option<QueryError> {
        lock(&self.last_error).clone()
    }
}
