//! `/v3/roles`: create, list, show, update, delete. Any authenticated user may read
//! role definitions (names are not secrets; `role assignment list --names` needs them).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{list_filter, require, views};
use crate::api::extract::{BaseUrl, Caller, Json, Path, QueryParams};
use crate::app::AppState;
use crate::error::ApiResult;
use crate::identity::policy::{Action, Resource};
use crate::identity::roles::{NewRole, RolePatch};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v3/roles", get(list).post(create))
        .route("/v3/roles/{id}", get(show).patch(update).delete(remove))
}

#[derive(Deserialize)]
struct CreateBody {
    role: NewRole,
}

#[derive(Deserialize)]
struct UpdateBody {
    role: RolePatch,
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
        "identity:create_role",
    )?;
    let r = state.blocking(move |id| id.create_role(body.role)).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"role": views::role(&base, &r)})),
    ))
}

async fn list(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(_caller): Caller,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    let f = list_filter(&q)?;
    let roles = state.read(|id| id.list_roles(&f))?;
    let items = roles.iter().map(|r| views::role(&base, r)).collect();
    Ok(axum::Json(views::collection(
        &base,
        "/v3/roles",
        "roles",
        items,
    )))
}

async fn show(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(_caller): Caller,
    Path(role_id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let r = state.read(|id| id.get_role(&role_id))?;
    Ok(axum::Json(json!({"role": views::role(&base, &r)})))
}

async fn update(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    Path(role_id): Path<String>,
    Json(body): Json<UpdateBody>,
) -> ApiResult<axum::Json<Value>> {
    require(
        &caller,
        Action::Write,
        Resource::Cloud,
        "identity:update_role",
    )?;
    let r = state
        .blocking(move |id| id.update_role(&role_id, body.role))
        .await?;
    Ok(axum::Json(json!({"role": views::role(&base, &r)})))
}

async fn remove(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(role_id): Path<String>,
) -> ApiResult<StatusCode> {
    require(
        &caller,
        Action::Write,
        Resource::Cloud,
        "identity:delete_role",
    )?;
    state.blocking(move |id| id.delete_role(&role_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
