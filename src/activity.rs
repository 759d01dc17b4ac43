//! Activity, for scale to zero: [`ActivityStore`], where several gateways share what they
//! serve. (What keeps a function active while an upgraded connection is open is the layer's
//! [`UpgradeActivity`](crate::middleware::UpgradeActivity).)

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{FunctionId, QueryError};

/// Where gateways record that they serve a function, so that a gateway that saw no traffic
/// does not scale down a function another gateway is serving. Consulted before every scale
/// to zero; see [`ScalerBuilder::activity_store`](crate::ScalerBuilder::activity_store).
///
/// Without one, each scaler knows only its own traffic (right for a single gateway).
/// [`KubernetesProvider`](crate::providers::KubernetesProvider) implements it with a Lease
/// per function.
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
