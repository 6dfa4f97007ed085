//! Cinder v3 over HTTP under `/volume`: version documents, microversion
//! negotiation (`OpenStack-API-Version: volume 3.x`), and the resources, at
//! `/volume/v3/...` and `/volume/v3/{project_id}/...` alike. Errors in
//! Cinder's shape (`{"itemNotFound": {"code": 404, "message": ...}}`).

mod microversion;
mod resources;
mod views;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::api::extract::BaseUrl;
use crate::app::AppState;
use crate::volume::VolError;
pub use microversion::{Microversion, MAX, MIN};

pub fn router() -> Router<AppState> {
    let api = resources::router();
    Router::new()
        .route("/volume", get(root))
        .route("/volume/", get(root))
        .route("/volume/v3", get(v3))
        .route("/volume/v3/", get(v3))
        .nest("/volume/v3", api.clone())
        .nest("/volume/v3/{project_id}", api)
}

/// A Cinder error response.
pub struct CinderError(pub VolError);

impl From<VolError> for CinderError {
    fn from(e: VolError) -> Self {
        CinderError(e)
    }
}

impl IntoResponse for CinderError {
    fn into_response(self) -> Response {
        let (status, key) = match &self.0 {
            VolError::Store(_) | VolError::Backend(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "computeFault")
            }
            VolError::BadRequest(_) => (StatusCode::BAD_REQUEST, "badRequest"),
            VolError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            VolError::NotFound(_) => (StatusCode::NOT_FOUND, "itemNotFound"),
            VolError::Conflict(_) => (StatusCode::CONFLICT, "conflictingRequest"),
            VolError::OverLimit(_) => (StatusCode::PAYLOAD_TOO_LARGE, "overLimit"),
            VolError::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, "notImplemented"),
            VolError::NotAcceptable(_) => (StatusCode::NOT_ACCEPTABLE, "notAcceptable"),
        };
        let message = match &self.0 {
            VolError::Store(_) | VolError::Backend(_) => {
                tracing::error!(error = %self.0, "volume service error");
                "The server has either erred or is incapable of performing the requested operation."
                    .to_string()
            }
            other => other.to_string(),
        };
        let body = json!({ key: {"code": status.as_u16(), "message": message} });
        (status, axum::Json(body)).into_response()
    }
}

pub type CResult<T> = Result<T, CinderError>;

fn version_entry(base: &str) -> Value {
    json!({
        "id": "v3.0",
        "status": "CURRENT",
        "version": MAX.to_string(),
        "min_version": MIN.to_string(),
        "updated": "2023-08-31T00:00:00Z",
        "links": [
            {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
            {"rel": "self", "href": format!("{base}/volume/v3/")}
        ],
        "media-types": [{"base": "application/json",
                         "type": "application/vnd.openstack.volume+json;version=3"}]
    })
}

async fn root(BaseUrl(base): BaseUrl) -> Response {
    (
        StatusCode::MULTIPLE_CHOICES,
        axum::Json(json!({"versions": [version_entry(&base)]})),
    )
        .into_response()
}

async fn v3(BaseUrl(base): BaseUrl) -> axum::Json<Value> {
    axum::Json(json!({"versions": [version_entry(&base)]}))
}
