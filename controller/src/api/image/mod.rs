//! Glance v2 under `/image`: version discovery without a token, images, their data,
//! members, tags and schemas. Errors use the common OpenStack error shape.

mod data;
mod images;
mod members;
mod schemas;
pub mod views;

use axum::extract::OriginalUri;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use serde_json::json;

use super::extract::BaseUrl;
use crate::app::AppState;
use crate::error::ApiError;

/// The newest Glance API minor kiln's shapes follow.
pub const IMAGE_API_MINOR: u32 = 16;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/image", get(versions))
        .route("/image/", get(versions))
        .route("/image/v2", get(versions))
        .route("/image/v2/", get(versions))
        .merge(images::router())
        .merge(data::router())
        .merge(members::router())
        .merge(schemas::router())
        .route("/image/{*rest}", any(unknown))
}

async fn unknown(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::NotFound(format!("The resource could not be found: {}", uri.path()))
}

/// Glance answers discovery with 300 and every v2 minor it speaks.
async fn versions(BaseUrl(base): BaseUrl) -> Response {
    let values: Vec<_> = (0..=IMAGE_API_MINOR)
        .rev()
        .map(|minor| {
            json!({
                "id": format!("v2.{minor}"),
                "status": if minor == IMAGE_API_MINOR { "CURRENT" } else { "SUPPORTED" },
                "links": [{"rel": "self", "href": format!("{base}/image/v2/")}],
            })
        })
        .collect();
    (
        StatusCode::MULTIPLE_CHOICES,
        axum::Json(json!({"versions": values})),
    )
        .into_response()
}

/// An error with a status [`ApiError`] has no variant for (415, 416, 413), in the
/// same JSON shape.
pub(crate) fn status_error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {
        "code": status.as_u16(),
        "title": status.canonical_reason().unwrap_or("Error"),
        "message": message,
    }});
    (status, axum::Json(body)).into_response()
}
