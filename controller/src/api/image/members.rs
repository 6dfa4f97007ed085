//! `/v2/images/{id}/members`: share an image with other projects; members accept
//! or reject.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::Value;

use super::views;
use crate::api::extract::{Caller, Json, Path};
use crate::app::AppState;
use crate::error::ApiResult;
use crate::image::Who;
use crate::services::blocking;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/image/v2/images/{id}/members", get(list).post(add))
        .route(
            "/image/v2/images/{id}/members/{member}",
            get(show).put(update).delete(remove),
        )
}

#[derive(Deserialize)]
struct AddBody {
    member: String,
}

#[derive(Deserialize)]
struct UpdateBody {
    status: String,
}

async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let members = state.services.images.members(&Who::of(&caller), &id)?;
    Ok(axum::Json(views::members(&members)))
}

async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, member)): Path<(String, String)>,
) -> ApiResult<axum::Json<Value>> {
    let m = state
        .services
        .images
        .member(&Who::of(&caller), &id, &member)?;
    Ok(axum::Json(views::member(&m)))
}

async fn add(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Json(body): Json<AddBody>,
) -> ApiResult<axum::Json<Value>> {
    let who = Who::of(&caller);
    let images = state.services.images.clone();
    let m = blocking(move || images.add_member(&who, &id, &body.member)).await?;
    Ok(axum::Json(views::member(&m)))
}

async fn update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, member)): Path<(String, String)>,
    Json(body): Json<UpdateBody>,
) -> ApiResult<axum::Json<Value>> {
    let who = Who::of(&caller);
    let images = state.services.images.clone();
    let m = blocking(move || images.update_member(&who, &id, &member, &body.status)).await?;
    Ok(axum::Json(views::member(&m)))
}

async fn remove(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, member)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let who = Who::of(&caller);
    let images = state.services.images.clone();
    blocking(move || images.remove_member(&who, &id, &member)).await?;
    Ok(StatusCode::NO_CONTENT)
}
