//! [`ServiceQuery`](crate::ServiceQuery) implementations for real platforms, each behind a
//! cargo feature:
//!
//! - `openfaas`: [`OpenFaasProvider`], the OpenFaaS provider HTTP API (faas-netes, faasd).
//! - `process`: [`ProcessProvider`], functions that are local commands started on demand.
//! - `kubernetes`: [`KubernetesProvider`], labelled Deployments in a Kubernetes cluster, with
//!   state from watches and readiness pushed from EndpointSlices.

#[cfg(feature = "kubernetes")]
#[cfg_attr(docsrs, doc(cfg(feature = "kubernetes")))]
pub mod kubernetes;
#[cfg(feature = "openfaas")]
#[cfg_attr(docsrs, doc(cfg(feature = "openfaas")))]
pub mod openfaas;
#[cfg(feature = "process")]
#[cfg_attr(docsrs, doc(cfg(feature = "process")))]
pub mod process;

#[cfg(feature = "kubernetes")]
pub use kubernetes::KubernetesProvider;
#[cfg(feature = "openfaas")]
pub use openfaas::{InvalidTls, OpenFaasProvider, TlsRoots};
#[cfg(feature = "process")]
pub use process::{ProcessProvider, ProcessSpec};

/// An [`IdlePolicy`](crate::IdlePolicy) from a function's settings: `enabled` (`"true"` opts
/// in) and `period` (`"15m"`, `"1h30m"`, `"30s"`; unset: the scaler's default). A period that
/// cannot be read is logged and the default used.
#[cfg(any(feature = "openfaas", feature = "kubernetes"))]
pub(crate) fn idle_policy(
    function: &str,
    enabled: Option<&str>,
    period: Option<&str>,
) -> crate::IdlePolicy {
    if enabled.map(str::trim) != Some("true") {
        return crate::IdlePolicy::Never;
    }
    match period.map(|p| humantime::parse_duration(p.trim())) {
        None => crate::IdlePolicy::AfterDefault,
        Some(Ok(period)) if !period.is_zero() => crate::IdlePolicy::After(period),
        Some(_) => {
            tracing::warn!(
                function,
                "idle period {:?} is not a duration such as 15m or 1h30m; using the default",
                period.unwrap_or_default()
            );
            crate::IdlePolicy::AfterDefault
        }
    }
}

#[cfg(all(test, any(feature = "openfaas", feature = "kubernetes")))]
mod tests {
    use super::idle_policy;
    use crate::IdlePolicy;
    use std::time::Duration;

    #[test]
    fn idle_policies_read_like_openfaas_labels() {
        assert_eq!(idle_policy("f", None, Some("1m")), IdlePolicy::Never);
        assert_eq!(idle_policy("f", Some("false"), None), IdlePolicy::Never);
        assert_eq!(
            idle_policy("f", Some("true"), None),
            IdlePolicy::AfterDefault
        );
        assert_eq!(
            idle_policy("f", Some("true"), Some("1h30m")),
            IdlePolicy::After(Duration::from_secs(5400))
        );
        assert_eq!(
            idle_policy("f", Some("true"), Some("soon")),
            IdlePolicy::AfterDefault
        );
    }
}
