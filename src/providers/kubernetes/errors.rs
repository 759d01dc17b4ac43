//! Kubernetes API errors as [`QueryError`]s: 403 names the missing permission, 401 the
//! credentials, 404 is "not found"; a server that cannot be reached says so.

use crate::{FunctionId, QueryError};

pub(super) fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// A kube error as a [`QueryError`]: `verb` and `resource` name the call, for RBAC messages.
pub(super) fn api_error(
    err: kube::Error,
    verb: &str,
    resource: &str,
    function: &FunctionId,
) -> QueryError {
    let ns = function.namespace();
    let kube::Error::Api(status) = &err else {
        return QueryError::with_source(
            format!("the API server is unreachable ({verb} {resource} in {ns})"),
            err,
        );
    };
    let code = http::StatusCode::from_u16(status.code).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let said = status.message.clone();
    match status.code {
        404 => QueryError::not_found(format!("{resource} of {function}: {said}")),
        403 => QueryError::provider(format!(
            "forbidden (RBAC): the gateway's account may not {verb} {resource} in namespace \
             {ns}; grant `{verb}` on `{resource}` in its Role. The API server said: {said}"
        ))
        .with_status(code)
        .permanent(),
        401 => QueryError::provider(format!(
            "unauthorized: the API server does not accept the gateway's credentials ({verb} \
             {resource} in {ns}): {said}"
        ))
        .with_status(code)
        .permanent(),
        _ => QueryError::provider(format!("{verb} {resource} in {ns}: {said}")).with_status(code),
    }
}

pub(super) fn no_service(function: &FunctionId, selector: &str) -> QueryError {
    QueryError::not_found(format!(
        "no Service {} labelled {selector} in namespace {}",
        function.name(),
        function.namespace()
    ))
}

pub(super) fn no_port(function: &FunctionId) -> QueryError {
    QueryError::provider(format!("the Service of {function} has no port")).permanent()
}
