//! `/v3/groups`: create, list, show, update, delete, and membership.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{list_filter, require, views};
use crate::api::extract::{BaseUrl, Caller, Json, Path, QueryParams};
use crate::app::AppState;
use crate::error::ApiResult;
use crate::identity::groups::{GroupPatch, NewGroup};
use crate::identity::policy::{Action, Resource};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v3/groups", get(list).post(create))
        .route("/v3/groups/{id}", get(show).patch(update).delete(remove))
        .route("/v3/groups/{id}/users", get(members))
        .route(
            "/v3/groups/{id}/users/{user_id}",
            put(add_member)
                .head(check_member)
                .get(check_member)
                .delete(remove_member),
        )
}

#[derive(Deserialize)]
struct CreateBody {
    group: NewGroup,
}

#[derive(Deserialize)]
struct UpdateBody {
    group: GroupPatch,
}

async fn create(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    Json(body): Json<CreateBody>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    require(
        &caller,
        Action::Write,
        Resource::Cloud,
        "identity:create_group",
    )?;
    let g = state
        .blocking(move |id| id.create_group(body.group))
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"group": views::group(&base, &g)})),
    ))
}

async fn list(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    require(
        &caller,
        Action::Read,
        Resource::Cloud,
        "identity:list_groups",
    )?;
    let f = list_filter(&q)?;
    let groups = state.read(|id| id.list_groups(&f))?;
    let items = groups.iter().map(|g| views::group(&base, g)).collect();
    Ok(axum::Json(views::collection(
        &base,
        "/v3/groups",
        "groups",
        items,
    )))
}

async fn show(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    Path(group_id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    require(&caller, Action::Read, Resource::Cloud, "identity:get_group")?;
    let g = state.read(|id| id.get_group(&group_id))?;
    Ok(axum::Json(json!({"group": views::group(&base, &g)})))
}

async fn update(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    Path(group_id): Path<String>,
    Json(body): Json<UpdateBody>,
) -> ApiResult<axum::Json<Value>> {
    require(
        &caller,
        Action::Write,
        Resource::Cloud,
        "identity:update_group",
    )?;
    let g = state
        .blocking(move |id| id.update_group(&group_id, body.group))
        .await?;
    Ok(axum::Json(json!({"group": views::group(&base, &g)})))
}

async fn remove(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(group_id): Path<String>,
) -> ApiResult<StatusCode> {
    require(
        &caller,
        Action::Write,
        Resource::Cloud,
        "identity:delete_group",
    )?;
    state.blocking(move |id| id.delete_group(&group_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn members(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    Path(group_id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    require(
        &caller,
        Action::Read,
        Resource::Cloud,
        "identity:list_users_in_group",
    )?;
    let path = format!("/v3/groups/{group_id}/users");
    let users = state.read(|id| id.group_members(&group_id))?;
    let items = users.iter().map(|u| views::user(&base, u)).collect();
    Ok(axum::Json(views::collection(&base, &path, "users", items)))
}

async fn add_member(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((group_id, user_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    require(
        &caller,
        Action::Write,
        Resource::Cloud,
        "identity:add_user_to_group",
    )?;
    state
        .blocking(move |id| id.add_group_member(&group_id, &user_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn check_member(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((group_id, user_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    if caller.user_id != user_id {
        require(
            &caller,
            Action::Read,
            Resource::Cloud,
            "identity:check_user_in_group",
        )?;
    }
    state
        .blocking(move |id| id.check_group_member(&group_id, &user_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_member(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((group_id, user_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    require(
        &caller,
        Action::Write,
        Resource::Cloud,
        "identity:remove_user_from_group",
    )?;
    state
        .blocking(move |id| id.remove_group_member(&group_id, &user_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
