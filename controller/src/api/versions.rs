//! Identity version discovery without a token: `GET /` (300, `versions.values`) and
//! `GET /v3` (200, `version`), with absolute links built from the request's host.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::extract::BaseUrl;
use crate::app::AppState;

/// The identity API version we speak (Keystone's current v3 minor).
pub const IDENTITY_VERSION: &str = "v3.14";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/v3", get(v3))
        .route("/v3/", get(v3))
}

fn version_entry(base: &str) -> Value {
    json!({
        "id": IDENTITY_VERSION,
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{base}/v3/")}],
        "media-types": [{
            "base": "application/json",
            "type": "application/vnd.openstack.identity-v3+json"
        }]
    })
}

async fn root(BaseUrl(base): BaseUrl) -> Response {
    let body = json!({"versions": {"values": [version_entry(&base)]}});
    (StatusCode::MULTIPLE_CHOICES, axum::Json(body)).into_response()
}

async fn v3(BaseUrl(base): BaseUrl) -> Response {
    axum::Json(json!({"version": version_entry(&base)})).into_response()
}
