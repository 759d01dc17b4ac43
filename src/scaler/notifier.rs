//! Pushed readiness: [`ReadinessNotifier`].

use std::fmt;
use std::sync::{Arc, OnceLock, Weak};

use super::lifecycle::Lifecycle;
use crate::{FunctionId, ServiceQueryResponse};

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
    scaler: Arc<OnceLock<Weak<Lifecycle>>>,
}

impl ReadinessNotifier {
    /// A notifier not yet attached to a scaler.
    pub fn new() -> Self {
        Self::default()
    }

    pub(super) fn attached(lifecycle: &Arc<Lifecycle>) -> Self {
        let notifier = Self::new();
        notifier.attach(lifecycle);
        notifier
    }

    /// Attaches to `lifecycle`. Panics if already attached elsewhere: one notifier serves one
    /// scaler.
    pub(super) fn attach(&self, lifecycle: &Arc<Lifecycle>) {
        if self.scaler.set(Arc::downgrade(lifecycle)).is_err() {
            panic!("this ReadinessNotifier is already attached to a FunctionScaler");
        }
    }

    /// Whether a live scaler receives this notifier's pushes.
    pub fn is_attached(&self) -> bool {
        self.scaler
            .get()
            .is_some_and(|weak| weak.strong_count() > 0)
    }

    /// Reports `state` for `function`: it is written to the cache, its idle policy replaces
    /// the one the scaler knew, and if `state` is ready, the requests held for `function` are
    /// released at once, whatever its cold start is waiting on. A "ready" from before this
    /// scaler's own scale-down of `function` is ignored.
    pub fn notify(&self, function: &FunctionId, state: ServiceQueryResponse) {
        if let Some(lifecycle) = self.scaler.get().and_then(Weak::upgrade) {
            lifecycle.push(function, state);
        }
    }

    /// Reports that `function` changed in a way a state cannot say (its process exited while
    /// starting, say): a cold start of `function` under way reads its state now instead of at
    /// its next poll, so a failure the provider now reports ends it at once. No effect when
    /// no cold start of `function` is under way.
    pub fn notify_changed(&self, function: &FunctionId) {
        if let Some(lifecycle) = self.scaler.get().and_then(Weak::upgrade) {
            lifecycle.changed(function);
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
