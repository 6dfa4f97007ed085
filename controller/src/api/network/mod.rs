//! Neutron v2.0 over HTTP under `/network`: version documents, extensions, and
//! one file per resource. Errors in Neutron's shape
//! `{"NeutronError": {"type", "message", "detail"}}`.
//!
//! Internal paths for nodes (admin/service token): `GET /network/kiln/v1/desired`
//! and `PUT /network/kiln/v1/ports/{id}/status` (see [`crate::network::desired`]).

mod extensions;
mod handlers;
mod query;
mod resources;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::api::extract::{BaseUrl, Caller};
use crate::app::AppState;
use crate::error::ApiError;
use crate::network::{Ctx, NetError};
use crate::store::Store;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/network", get(versions))
        .route("/network/", get(versions))
        .route("/network/v2.0", get(v2))
        .route("/network/v2.0/", get(v2))
        .merge(extensions::router())
        .merge(resources::router())
}

/// A Neutron error response.
pub struct NeutronError(pub NetError);

impl From<NetError> for NeutronError {
    fn from(e: NetError) -> Self {
        NeutronError(e)
    }
}

impl From<crate::store::StoreError> for NeutronError {
    fn from(e: crate::store::StoreError) -> Self {
        NeutronError(NetError::Store(e))
    }
}

impl IntoResponse for NeutronError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match &e {
            NetError::Store(detail) => {
                tracing::error!(%detail, "network store error");
                "Request Failed: internal server error while processing your request.".to_string()
            }
            other => other.to_string(),
        };
        let body = json!({"NeutronError": {"type": e.kind(), "message": message, "detail": ""}});
        (status, axum::Json(body)).into_response()
    }
}

pub type NResult<T> = Result<T, NeutronError>;

/// A JSON body; malformed JSON or wrong fields → Neutron's 400.
pub struct NJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for NJson<T> {
    type Rejection = NeutronError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| NetError::BadRequest(format!("Cannot read the request body: {e}")))?;
        if bytes.is_empty() {
            return Err(NetError::BadRequest("Resource body required".into()).into());
        }
        serde_json::from_slice(&bytes)
            .map(NJson)
            .map_err(|e| NetError::BadRequest(format!("Invalid input for operation: {e}.")).into())
    }
}

/// The caller as the network service sees it; 401 (Keystone's shape, as
/// keystonemiddleware answers) without a valid token.
pub struct NetCaller(pub Ctx);

impl<S> FromRequestParts<S> for NetCaller
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Caller(t) = Caller::from_request_parts(parts, state).await?;
        Ok(NetCaller(Ctx::from_token(&t)))
    }
}

/// The store behind the state.
pub fn store(state: &AppState) -> Arc<dyn Store> {
    state.identity.store().clone()
}

/// Runs a store operation on the blocking pool.
pub async fn blocking<R, F>(state: &AppState, f: F) -> NResult<R>
where
    R: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<R, NetError> + Send + 'static,
{
    let store = store(state);
    tokio::task::spawn_blocking(move || f(&*store))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "blocking network task failed");
            NeutronError(NetError::BadRequest(
                "The request could not be completed.".into(),
            ))
        })?
        .map_err(NeutronError)
}

fn version_entry(base: &str) -> Value {
    json!({
        "id": "v2.0",
        "status": "CURRENT",
        "links": [{"rel": "self", "href": format!("{base}/network/v2.0/")}]
    })
}

async fn versions(BaseUrl(base): BaseUrl) -> axum::Json<Value> {
    axum::Json(json!({"versions": [version_entry(&base)]}))
}

async fn v2(BaseUrl(base): BaseUrl) -> axum::Json<Value> {
    let resources: Vec<Value> = [
        ("network", "networks"),
        ("subnet", "subnets"),
        ("port", "ports"),
        ("security_group", "security-groups"),
        ("security_group_rule", "security-group-rules"),
        ("router", "routers"),
        ("floatingip", "floatingips"),
        ("quota", "quotas"),
    ]
    .iter()
    .map(|(name, coll)| {
        json!({"name": name, "collection": coll.replace('-', "_"),
               "links": [{"rel": "self", "href": format!("{base}/network/v2.0/{coll}")}]})
    })
    .collect();
    axum::Json(json!({"resources": resources}))
}
