//! Shared activity in `coordination.k8s.io/v1` Leases, one per function
//! (`tower-scale-from-zero.NAME` in the function's namespace): each gateway renews it while it
//! serves the function, and none scales down a function whose Lease was renewed within its
//! idle period. Leases, not an annotation on the Deployment: the gateway needs no right to
//! change Deployments, and activity does not churn the Deployment's resourceVersion (which
//! scale-downs use as their precondition).

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams};
use kube::Api;

use super::errors::{api_error, status_code};
use super::KubernetesProvider;
use crate::activity::ActivityStore;
use crate::{FunctionId, QueryError};

/// The Lease of a function is this followed by its name.
pub const LEASE_PREFIX: &str = "tower-scale-from-zero.";
/// The field manager of the provider's server-side applies.
const FIELD_MANAGER: &str = "tower-scale-from-zero";

/// Who this gateway is in the Leases it renews: its pod's name (`HOSTNAME`) when it runs in
/// a cluster.
pub(super) fn identity() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("gateway-{}", std::process::id()))
}

fn lease_name(function: &FunctionId) -> String {
    format!("{LEASE_PREFIX}{}", function.name())
}

#[async_trait]
impl ActivityStore for KubernetesProvider {
    /// Renews the function's Lease (a server-side apply, which creates it the first time).
    async fn record(&self, function: &FunctionId) -> Result<(), QueryError> {
        self.check_namespace(function)?;
        let now = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
        let lease = serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": lease_name(function),
                "labels": {"tower-scale-from-zero/lease-of": function.name()},
            },
            "spec": {"holderIdentity": self.inner.identity, "renewTime": now},
        });
        Api::<Lease>::namespaced(self.inner.client.clone(), function.namespace())
            .patch(
                &lease_name(function),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&lease),
            )
            .await
            .map_err(|e| api_error(e, "patch", "leases", function))?;
        Ok(())
    }

    /// How long ago the function's Lease was renewed; `None` when it has none.
    async fn idle_for(&self, function: &FunctionId) -> Result<Option<Duration>, QueryError> {
        self.check_namespace(function)?;
        let lease = match Api::<Lease>::namespaced(self.inner.client.clone(), function.namespace())
            .get(&lease_name(function))
            .await
        {
            Ok(lease) => lease,
            Err(err) if status_code(&err) == Some(404) => return Ok(None),
            Err(err) => return Err(api_error(err, "get", "leases", function)),
        };
        let renewed = lease
            .spec
            .and_then(|spec| spec.renew_time)
            .map(|time| SystemTime::from(time.0));
        // A clock ahead of ours counts as now.
        Ok(renewed.map(|at| at.elapsed().unwrap_or(Duration::ZERO)))
    }
}
