//! The HTTP layer: routers per service, version documents, placeholders for the
//! services not built yet, and the JSON 404/405 fallbacks.

pub mod compute;
pub mod extract;
pub mod identity;
pub mod image;
pub mod network;
mod not_implemented;
mod versions;
pub mod volume;

use std::time::Instant;

use axum::extract::Request;
use axum::http::{Method, Uri};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;

use crate::app::AppState;
use crate::error::ApiError;

/// Every route, without state.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(versions::router())
        .merge(identity::router())
        .merge(image::router())
        .merge(compute::router())
        .merge(network::router())
        .merge(volume::router())
        .merge(not_implemented::router())
        .fallback(unknown_path)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn(log_request))
}

/// One debug line per request: method, path, status and time spent (when the
/// level is off this is one check).
async fn log_request(req: Request, next: Next) -> Response {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return next.run(req).await;
    }
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    tracing::debug!(
        %method,
        %path,
        status = resp.status().as_u16(),
        micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    resp
}

async fn unknown_path(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("The resource could not be found: {}", uri.path()))
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "The method {method} is not allowed for the resource {}.",
        uri.path()
    ))
}
