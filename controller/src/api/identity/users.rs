//! `/v3/users`: create, list, show, update, delete; the self-service password
//! change; a user's projects and groups.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{list_filter, require, views};
use crate::api::extract::{BaseUrl, Caller, Json, Path, QueryParams};
use crate::app::AppState;
use crate::error::ApiResult;
use crate::identity::policy::{Action, Resource};
use crate::identity::users::{NewUser, UserPatch};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v3/users", get(list).post(create))
        .route("/v3/users/{id}", get(show).patch(update).delete(remove))
        .route("/v3/users/{id}/password", post(change_password))
        .route("/v3/users/{id}/projects", get(projects))
        .route("/v3/users/{id}/groups", get(groups))
}

#[derive(Deserialize)]
struct CreateBody {
    user: NewUser,
}

#[derive(Deserialize)]
struct UpdateBody {
    user: UserPatch,
}

#[derive(Deserialize)]
struct PasswordChange {
    password: String,
    original_password: String,
}

#[derive(Deserialize)]
struct PasswordBody {
    user: PasswordChange,
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
        "identity:create_user",
    )?;
    let u = state.blocking(move |id| id.create_user(body.user)).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"user": views::user(&base, &u)})),
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
        "identity:list_users",
    )?;
    let f = list_filter(&q)?;
    let users = state.read(|id| id.list_users(&f))?;
    let items = users.iter().map(|u| views::user(&base, u)).collect();
    Ok(axum::Json(views::collection(
        &base,
        "/v3/users",
        "users",
        items,
    )))
}

async fn show(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    Path(user_id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    require(
        &caller,
        Action::Read,
        Resource::User(&user_id),
        "identity:get_user",
    )?;
    let u = state.read(|id| id.get_user(&user_id))?;
    Ok(axum::Json(json!({"user": views::user(&base, &u)})))
}

async fn update(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    Path(user_id): Path<String>,
    Json(body): Json<UpdateBody>,
) -> ApiResult<axum::Json<Value>> {
    require(
        &caller,
        Action::Write,
        Resource::Cloud,
        "identity:update_user",
    )?;
    let u = state
        .blocking(move |id| id.update_user(&user_id, body.user))
        .await?;
    Ok(axum::Json(json!({"user": views::user(&base, &u)})))
}

async fn remove(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(user_id): Path<String>,
) -> ApiResult<StatusCode> {
    require(
        &caller,
        Action::Write,
        Resource::Cloud,
        "identity:delete_user",
    )?;
    state.blocking(move |id| id.delete_user(&user_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// No token needed (as Keystone): the original password proves who is asking, so a
/// user whose password expired can still change it.
async fn change_password(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    Json(body): Json<PasswordBody>,
) -> ApiResult<StatusCode> {
    state
        .blocking(move |id| {
            id.change_password(&user_id, &body.user.original_password, &body.user.password)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn projects(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    Path(user_id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    require(
        &caller,
        Action::Read,
        Resource::User(&user_id),
        "identity:list_user_projects",
    )?;
    let path = format!("/v3/users/{user_id}/projects");
    let projects = state.read(|id| id.user_projects(&user_id))?;
    let items = projects.iter().map(|p| views::project(&base, p)).collect();
    Ok(axum::Json(views::collection(
        &base, &path, "projects", items,
    )))
}

async fn groups(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    Path(user_id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    require(
        &caller,
        Action::Read,
        Resource::User(&user_id),
        "identity:list_groups_for_user",
    )?;
    let path = format!("/v3/users/{user_id}/groups");
    let groups = state.read(|id| id.user_groups(&user_id))?;
    let items = groups.iter().map(|g| views::group(&base, g)).collect();
    Ok(axum::Json(views::collection(&base, &path, "groups", items)))
}
