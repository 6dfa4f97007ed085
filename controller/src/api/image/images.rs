//! `/v2/images`: create, list (filters, sorting, pagination), show, JSON-patch
//! update, delete, deactivate/reactivate and tags.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde_json::{json, Map, Value};

use super::{status_error, views};
use crate::api::extract::{Caller, Json, Path, QueryParams};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::image::{patch, ListQuery, Who};
use crate::services::blocking;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/image/v2/images", get(list).post(create))
        .route(
            "/image/v2/images/{id}",
            get(show).patch(update).delete(remove),
        )
        .route("/image/v2/images/{id}/actions/deactivate", post(deactivate))
        .route("/image/v2/images/{id}/actions/reactivate", post(reactivate))
        .route(
            "/image/v2/images/{id}/tags/{tag}",
            put(add_tag).delete(remove_tag),
        )
}

async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let who = Who::of(&caller);
    let images = state.services.images.clone();
    let image = blocking(move || images.create(&who, body)).await?;
    Ok((StatusCode::CREATED, axum::Json(views::image(&image))))
}

async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let image = state.services.images.get(&Who::of(&caller), &id)?;
    Ok(axum::Json(views::image(&image)))
}

/// `in:a,b` (or a plain value) → the list of accepted values.
fn in_list(v: &str) -> Vec<String> {
    let v = v.strip_prefix("in:").unwrap_or(v);
    v.split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .collect()
}

fn parse_u64(q: &QueryParams, key: &str) -> ApiResult<Option<u64>> {
    q.get(key)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::BadRequest(format!(
                    "Invalid {key} {v:?}: expected a non-negative integer."
                ))
            })
        })
        .transpose()
}

const KNOWN: &[&str] = &[
    "name",
    "id",
    "status",
    "visibility",
    "owner",
    "member_status",
    "tag",
    "disk_format",
    "container_format",
    "os_hidden",
    "size_min",
    "size_max",
    "sort_key",
    "sort_dir",
    "sort",
    "limit",
    "marker",
    "protected",
    "created_at",
    "updated_at",
];

fn list_query(q: &QueryParams) -> ApiResult<ListQuery> {
    let limit = parse_u64(q, "limit")?.map(|l| l as usize);
    let (mut sort_key, mut sort_desc) = ("created_at".to_string(), true);
    if let Some(k) = q.get("sort_key") {
        sort_key = k.to_string();
    }
    match q.get("sort_dir") {
        None | Some("desc") => {}
        Some("asc") => sort_desc = false,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "Invalid sort direction: {other}"
            )))
        }
    }
    if let Some(sort) = q.get("sort") {
        // `sort=key:dir[,key2:dir2]`: the first key decides.
        let first = sort.split(',').next().unwrap_or_default();
        let (k, d) = first.split_once(':').unwrap_or((first, "desc"));
        sort_key = k.to_string();
        sort_desc = d != "asc";
    }
    let tags: Vec<String> =
        q.0.iter()
            .filter(|(k, _)| k.as_str() == "tag")
            .map(|(_, v)| v.clone())
            .collect();
    let properties: BTreeMap<String, String> =
        q.0.iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
    let visibility = q.get("visibility").map(str::to_string);
    if let Some(v) = &visibility {
        if !["public", "private", "shared", "community", "all"].contains(&v.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "Invalid visibility value: {v}"
            )));
        }
    }
    Ok(ListQuery {
        name: q.get("name").map(in_list),
        id: q.get("id").map(in_list),
        status: q.get("status").map(str::to_string),
        visibility,
        owner: q.get("owner").map(str::to_string),
        member_status: q.get("member_status").map(str::to_string),
        tags,
        disk_format: q.get("disk_format").map(str::to_string),
        container_format: q.get("container_format").map(str::to_string),
        os_hidden: q.flag("os_hidden")?.unwrap_or(false),
        size_min: parse_u64(q, "size_min")?,
        size_max: parse_u64(q, "size_max")?,
        properties,
        sort_key,
        sort_desc,
        limit,
        marker: q.get("marker").map(str::to_string),
    })
}

async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    let query = list_query(&q)?;
    let images = state.services.images.list(&Who::of(&caller), &query)?;
    let mut body = json!({
        "images": images.iter().map(views::image).collect::<Vec<_>>(),
        "first": "/v2/images",
        "schema": "/v2/schemas/images",
    });
    if let (Some(limit), Some(last)) = (query.limit, images.last()) {
        if images.len() == limit {
            body["next"] = json!(format!("/v2/images?marker={}&limit={limit}", last.id));
        }
    }
    Ok(axum::Json(body))
}

async fn update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let ctype = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let base = ctype.split(';').next().unwrap_or_default().trim();
    if !patch::MEDIA_TYPES.contains(&base) {
        return Ok(status_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!(
                "Unsupported Content-Type {ctype:?}: use {}.",
                patch::MEDIA_TYPES[0]
            ),
        ));
    }
    let ops = patch::parse(&body)?;
    let who = Who::of(&caller);
    let images = state.services.images.clone();
    let image = blocking(move || images.update(&who, &id, ops)).await?;
    Ok(axum::Json(views::image(&image)).into_response())
}

async fn remove(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let who = Who::of(&caller);
    let images = state.services.images.clone();
    blocking(move || images.delete(&who, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_active(
    state: AppState,
    caller: &crate::identity::model::TokenRecord,
    id: String,
    active: bool,
) -> ApiResult<StatusCode> {
    let who = Who::of(caller);
    let images = state.services.images.clone();
    blocking(move || images.set_active(&who, &id, active)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn deactivate(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    set_active(state, &caller, id, false).await
}

async fn reactivate(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    set_active(state, &caller, id, true).await
}

async fn set_tag(
    state: AppState,
    caller: &crate::identity::model::TokenRecord,
    id: String,
    tag: String,
    present: bool,
) -> ApiResult<StatusCode> {
    let who = Who::of(caller);
    let images = state.services.images.clone();
    blocking(move || images.set_tag(&who, &id, &tag, present)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add_tag(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    set_tag(state, &caller, id, tag, true).await
}

async fn remove_tag(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    set_tag(state, &caller, id, tag, false).await
}
