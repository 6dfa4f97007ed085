//! Keystone resources kiln does not serve yet: a clear 501 instead of a 404, so a
//! client can tell "not built" from "not found".

use axum::extract::OriginalUri;
use axum::routing::any;
use axum::Router;

use crate::app::AppState;
use crate::error::ApiError;

/// Path prefixes under `/v3` (each also matched with anything below it).
const PENDING: &[&str] = &[
    "/v3/credentials",
    "/v3/policies",
    "/v3/limits",
    "/v3/registered_limits",
    "/v3/role_inferences",
    "/v3/domains/config",
    "/v3/OS-FEDERATION",
    "/v3/OS-TRUST",
    "/v3/OS-OAUTH1",
    "/v3/OS-OAUTH2",
    "/v3/OS-EP-FILTER",
    "/v3/OS-INHERIT",
    "/v3/OS-REVOKE",
    "/v3/OS-SIMPLE-CERT",
    "/v3/auth/OS-FEDERATION",
    "/v3/s3tokens",
    "/v3/ec2tokens",
];

/// Sub-resources of resources we do serve.
const PENDING_BELOW: &[&str] = &[
    "/v3/projects/{id}/tags",
    "/v3/roles/{id}/implies",
    "/v3/users/{id}/access_rules",
    "/v3/users/{id}/credentials",
];

pub fn router() -> Router<AppState> {
    let handler = |OriginalUri(uri): OriginalUri| async move {
        ApiError::NotImplemented(format!(
            "{} is not implemented yet in kiln's identity service.",
            uri.path()
        ))
    };
    let mut r = Router::new();
    for prefix in PENDING.iter().chain(PENDING_BELOW) {
        r = r
            .route(prefix, any(handler))
            .route(&format!("{prefix}/{{*rest}}"), any(handler));
    }
    r
}
