//! Nova v2.1 under `/compute`: version documents without a token, then every
//! versioned route behind two layers — microversion negotiation
//! ([`crate::microversion::layer`]) and Nova's fault shape ([`faults`]), so
//! handlers return the common [`crate::error::ApiError`] and clients see
//! `{"itemNotFound": {"code": 404, "message": ...}}`.

mod faults;
mod flavors;
mod hypervisors;
mod keypairs;
mod misc;
mod node_images;
mod node_network;
pub mod nodes;
mod server_groups;
pub mod servers;
mod services;
mod usage;
mod versions;
pub mod views;

use axum::extract::OriginalUri;
use axum::http::Method;
use axum::middleware::from_fn;
use axum::routing::any;
use axum::Router;

use crate::app::AppState;
use crate::error::ApiError;

/// Compute resources the API reference lists that kiln does not serve yet: 501.
const PENDING: &[&str] = &[
    "os-aggregates",
    "os-migrations",
    "os-server-external-events",
    "os-instance_usage_audit_log",
    "os-assisted-volume-snapshots",
    "os-volumes",
    "os-volumes_boot",
    "os-snapshots",
    "images",
];

pub fn router() -> Router<AppState> {
    let mut versioned = Router::new()
        .merge(flavors::router())
        .merge(keypairs::router())
        .merge(misc::router())
        .merge(servers::router())
        .merge(services::router())
        .merge(hypervisors::router())
        .merge(server_groups::router())
        .merge(usage::router());
    for p in PENDING {
        versioned = versioned
            .route(&format!("/compute/v2.1/{p}"), any(pending))
            .route(&format!("/compute/v2.1/{p}/{{*rest}}"), any(pending));
    }
    let versioned = versioned
        .route("/compute/v2.1/{*rest}", any(unknown))
        .method_not_allowed_fallback(wrong_method)
        .layer(from_fn(crate::microversion::layer))
        .layer(from_fn(faults::layer));
    Router::new()
        .merge(versions::router())
        .merge(nodes::router())
        .merge(node_network::router())
        .merge(versioned)
        .route(
            "/compute/{*rest}",
            any(unknown).layer(from_fn(faults::layer)),
        )
}

/// Proxy APIs 2.36 removed (404 from there on).
const PROXIES_GONE_AT_2_36: &[&str] = &["images", "os-volumes", "os-snapshots"];

async fn pending(mv: crate::microversion::Microversion, OriginalUri(uri): OriginalUri) -> ApiError {
    let first = uri
        .path()
        .trim_start_matches("/compute/v2.1/")
        .split('/')
        .next()
        .unwrap_or_default();
    if mv.at_least(36) && PROXIES_GONE_AT_2_36.contains(&first) {
        return ApiError::NotFound(format!("The resource could not be found: {}", uri.path()));
    }
    ApiError::NotImplemented(format!(
        "{} is not implemented yet in kiln's compute API.",
        uri.path()
    ))
}

async fn unknown(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::NotFound(format!("The resource could not be found: {}", uri.path()))
}

async fn wrong_method(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "The method {method} is not allowed for the resource {}.",
        uri.path()
    ))
}
