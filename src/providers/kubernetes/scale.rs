//! Writes to a Deployment's `scale` subresource: up with "at least" semantics, down to zero
//! only when nothing says otherwise.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};

use super::errors::{api_error, status_code};
use super::store::DeploymentInfo;
use crate::{FunctionId, QueryError};

/// Conflicting scale writes retried in one `set_replicas` before it fails (retryably).
const MAX_CONFLICTS: usize = 5;

/// Raises `function`'s replicas to at least `replicas`: reads the Scale and writes only if
/// its count is lower, with the read's resourceVersion as a precondition; a 409 is read again.
/// A count someone else raised (a user, an HPA, another gateway) is never lowered.
pub(super) async fn at_least(
    client: &Client,
    function: &FunctionId,
    replicas: u64,
) -> Result<(), QueryError> {
    let target = i32::try_from(replicas).unwrap_or(i32::MAX);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), function.namespace());
    for _ in 0..MAX_CONFLICTS {
        let mut scale = deployments
            .get_scale(function.name())
            .await
            .map_err(|e| api_error(e, "get", "deployments/scale", function))?;
        let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        if current >= target {
            // Someone asked for at least as many: never lower their count.
            return Ok(());
        }
        scale.spec.get_or_insert_with(Default::default).replicas = Some(target);
        // `scale.metadata.resource_version` is the precondition: the write fails with 409
        // if the count changed since the read.
        match deployments
            .replace_scale(function.name(), &PostParams::default(), &scale)
            .await
        {
            Ok(_) => {
                tracing::debug!(%function, from = current, to = target, "scale written");
                return Ok(());
            }
            Err(err) if status_code(&err) == Some(409) => {
                tracing::debug!(%function, "scale write conflicted; reading again");
            }
            Err(err) => return Err(api_error(err, "update", "deployments/scale", function)),
        }
    }
    Err(QueryError::provider(format!(
        "scale of {function} conflicted with other writers {MAX_CONFLICTS} times in a row"
    ))
    .with_status(http::StatusCode::CONFLICT))
}

/// Scales `deployment` (read just now) to zero, unless a scale-up is under way: replicas
/// wanted that the controller has not made ready yet (another gateway's cold start), or a spec
/// it has not seen. The write carries the read's resourceVersion, so that anything written
/// since (a scale-up) wins: a 409 is `Ok(false)`.
pub(super) async fn to_zero(
    client: &Client,
    function: &FunctionId,
    deployment: &Deployment,
) -> Result<bool, QueryError> {
    let info = DeploymentInfo::of(deployment);
    if info.desired == 0 {
        return Ok(true);
    }
    if info.scaling_up() {
        tracing::debug!(%function, "not scaled to zero: a scale-up is under way");
        return Ok(false);
    }
    let scale = Scale {
        metadata: ObjectMeta {
            name: Some(function.name().to_string()),
            namespace: Some(function.namespace().to_string()),
            resource_version: deployment.metadata.resource_version.clone(),
            ..ObjectMeta::default()
        },
        spec: Some(ScaleSpec { replicas: Some(0) }),
        status: None,
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), function.namespace());
    match deployments
        .replace_scale(function.name(), &PostParams::default(), &scale)
        .await
    {
        Ok(_) => Ok(true),
        Err(err) if status_code(&err) == Some(409) => Ok(false),
        Err(err) => Err(api_error(err, "update", "deployments/scale", function)),
    }
}
