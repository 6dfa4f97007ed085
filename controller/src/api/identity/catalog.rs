//! The service catalog as Keystone resources: `/v3/services`, `/v3/endpoints` and
//! `/v3/regions`, read-only (kiln's catalog is fixed by its configuration; changes
//! answer 501).

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::{require, views};
use crate::api::extract::{BaseUrl, Caller, Path, QueryParams};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::identity::catalog::{Entry, REGION};
use crate::identity::policy::{Action, Resource};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v3/services", get(list_services).post(fixed))
        .route(
            "/v3/services/{id}",
            get(show_service).patch(fixed).delete(fixed),
        )
        .route("/v3/endpoints", get(list_endpoints).post(fixed))
        .route(
            "/v3/endpoints/{id}",
            get(show_endpoint).patch(fixed).delete(fixed),
        )
        .route("/v3/regions", get(list_regions).post(fixed))
        .route(
            "/v3/regions/{id}",
            get(show_region).patch(fixed).delete(fixed),
        )
}

async fn fixed() -> ApiError {
    ApiError::NotImplemented(
        "kiln's service catalog is derived from its configuration; it cannot be changed through the API yet.".into(),
    )
}

fn service(base: &str, e: &Entry) -> Value {
    json!({
        "id": e.service_id, "type": e.service_type, "name": e.service_name,
        "description": "", "enabled": true,
        "links": {"self": format!("{base}/v3/services/{}", e.service_id)}
    })
}

fn endpoint(base: &str, e: &Entry) -> Value {
    json!({
        "id": e.endpoint_id, "interface": e.interface, "region_id": REGION, "region": REGION,
        "url": e.url, "service_id": e.service_id, "enabled": true,
        "links": {"self": format!("{base}/v3/endpoints/{}", e.endpoint_id)}
    })
}

fn region(base: &str) -> Value {
    json!({
        "id": REGION, "description": "", "parent_region_id": null,
        "links": {"self": format!("{base}/v3/regions/{REGION}")}
    })
}

fn services(state: &AppState) -> Vec<Entry> {
    let mut seen = Vec::new();
    state
        .catalog
        .entries()
        .into_iter()
        .filter(|e| {
            let new = !seen.contains(&e.service_id);
            seen.push(e.service_id.clone());
            new
        })
        .collect()
}

async fn list_services(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    require(
        &caller,
        Action::Read,
        Resource::Cloud,
        "identity:list_services",
    )?;
    let items = services(&state)
        .iter()
        .filter(|e| q.get("type").is_none_or(|t| t == e.service_type))
        .filter(|e| q.get("name").is_none_or(|n| n == e.service_name))
        .map(|e| service(&base, e))
        .collect();
    Ok(axum::Json(views::collection(
        &base,
        "/v3/services",
        "services",
        items,
    )))
}

async fn show_service(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    require(
        &caller,
        Action::Read,
        Resource::Cloud,
        "identity:get_service",
    )?;
    let e = services(&state)
        .into_iter()
        .find(|e| e.service_id == id)
        .ok_or_else(|| ApiError::not_found("service", &id))?;
    Ok(axum::Json(json!({"service": service(&base, &e)})))
}

async fn list_endpoints(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    require(
        &caller,
        Action::Read,
        Resource::Cloud,
        "identity:list_endpoints",
    )?;
    let items = state
        .catalog
        .entries()
        .iter()
        .filter(|e| q.get("service_id").is_none_or(|s| s == e.service_id))
        .filter(|e| q.get("interface").is_none_or(|i| i == e.interface))
        .filter(|_| q.get("region_id").is_none_or(|r| r == REGION))
        .map(|e| endpoint(&base, e))
        .collect();
    Ok(axum::Json(views::collection(
        &base,
        "/v3/endpoints",
        "endpoints",
        items,
    )))
}

async fn show_endpoint(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    require(
        &caller,
        Action::Read,
        Resource::Cloud,
        "identity:get_endpoint",
    )?;
    let e = state
        .catalog
        .entries()
        .into_iter()
        .find(|e| e.endpoint_id == id)
        .ok_or_else(|| ApiError::not_found("endpoint", &id))?;
    Ok(axum::Json(json!({"endpoint": endpoint(&base, &e)})))
}

async fn list_regions(BaseUrl(base): BaseUrl, Caller(_caller): Caller) -> axum::Json<Value> {
    axum::Json(views::collection(
        &base,
        "/v3/regions",
        "regions",
        vec![region(&base)],
    ))
}

async fn show_region(
    BaseUrl(base): BaseUrl,
    Caller(_caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    if id != REGION {
        return Err(ApiError::not_found("region", &id));
    }
    Ok(axum::Json(json!({"region": region(&base)})))
}
