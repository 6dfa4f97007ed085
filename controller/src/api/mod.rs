//! The HTTP layer: routers per service, version documents, placeholders for the
//! services not built yet, and the JSON 404/405 fallbacks.

pub mod extract;
pub mod identity;
pub mod network;
mod not_implemented;
mod versions;
pub mod volume;

use axum::http::{Method, Uri};
use axum::Router;

use crate::app::AppState;
use crate::error::ApiError;

/// Every route, without state.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(versions::router())
        .merge(identity::router())
        .merge(network::router())
        .merge(volume::router())
        .merge(not_implemented::router())
        .fallback(unknown_path)
        .method_not_allowed_fallback(wrong_method)
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
