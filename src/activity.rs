//! Activity, for scale to zero: [`ActivityStore`], where several gateways share what they
//! serve, and [`UpgradeActivity`], which keeps a function active while an upgraded connection
//! (a WebSocket) is open.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::scaler::ActivityGuard;
use crate::{FunctionId, QueryError};

/// Where gateways record that they serve a function, so that a gateway that saw no traffic
/// does not scale down a function another gateway is serving. Consulted before every scale
/// to zero; see [`ScalerBuilder::activity_store`](crate::ScalerBuilder::activity_store).
///
/// Without one, each scaler knows only its own traffic (right for a single gateway).
/// [`KubernetesProvider`](crate::providers::KubernetesProvider) implements it with an
/// annotation on the function's Deployment.
#[async_trait]
pub trait ActivityStore: Send + Sync + 'static {
    /// Records that this gateway is serving `function` now. Called while the function is
    /// active, at most once per quarter of its idle period per gateway; after a failure (or a
    /// panic) the next call backs off, from the poll interval up to that quarter.
    async fn record(&self, function: &FunctionId) -> Result<(), QueryError>;

    /// How long ago any gateway last recorded activity for `function`; `None` if none did.
    async fn idle_for(&self, function: &FunctionId) -> Result<Option<Duration>, QueryError>;
}

#[async_trait]
impl<T: ActivityStore + ?Sized> ActivityStore for Arc<T> {
    async fn record(&self, function: &FunctionId) -> Result<(), QueryError> {
        (**self).record(function).await
    }

    async fn idle_for(&self, function: &FunctionId) -> Result<Option<Duration>, QueryError> {
        (**self).idle_for(function).await
    }
}

/// The activity of an upgraded connection (a WebSocket, say): the function counts as in flight
/// until this is dropped.
///
/// With scale to zero on, the layer puts one in the extensions of each request that asks to
/// upgrade its connection (it has an `Upgrade` header): the response of an upgrade ends at once,
/// while the connection it opens may live for hours. A forwarding service that serves the
/// upgraded connection removes it from the request and keeps it until the connection closes
/// (a service that ignores it drops it with the request: the upgrade then counts only until its
/// response).
///
/// ```
/// # use http::Request;
/// use tower_scale_from_zero::activity::UpgradeActivity;
///
/// fn forward(mut req: Request<()>) {
///     let activity = req.extensions_mut().remove::<UpgradeActivity>();
///     // ... after the upgrade: move `activity` into the task that copies both ways ...
///     drop(activity);
/// }
/// # forward(Request::new(()));
/// ```
///
/// A clone counts on its own (the function stays active until every clone is dropped).
#[derive(Debug)]
pub struct UpgradeActivity {
    guard: ActivityGuard,
}

impl Clone for UpgradeActivity {
    fn clone(&self) -> Self {
        Self {
            guard: self.guard.another(),
        }
    }
}

impl UpgradeActivity {
    /// Adds one to `req` (whose activity `guard` tracks) when it asks for an upgrade.
    pub(crate) fn attach<B>(req: &mut http::Request<B>, guard: &ActivityGuard) {
        if req.headers().contains_key(http::header::UPGRADE) {
            req.extensions_mut().insert(Self {
                guard: guard.another(),
            });
        }
    }
}
