//! `/v3/users/{id}/application_credentials`: create (secret shown once), list,
//! show, delete. Only the owner creates; the owner or an admin reads and deletes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{require, views};
use crate::api::extract::{BaseUrl, Caller, Json, Path, QueryParams};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::identity::app_creds::NewAppCred;
use crate::identity::policy::{Action, Resource};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v3/users/{id}/application_credentials",
            get(list).post(create),
        )
        .route(
            "/v3/users/{id}/application_credentials/{cred_id}",
            get(show).delete(remove),
        )
}

#[derive(Deserialize)]
struct CreateBody {
    application_credential: NewAppCred,
}

async fn create(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    Path(user_id): Path<String>,
    Json(body): Json<CreateBody>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    if caller.user_id != user_id {
        return Err(ApiError::forbidden(
            "identity:create_application_credential",
        ));
    }
    let token = caller.clone();
    let (ac, secret) = state
        .blocking(move |id| id.create_app_cred(&user_id, &token, body.application_credential))
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"application_credential": views::app_cred(&base, &ac, Some(&secret))})),
    ))
}

async fn list(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    Path(user_id): Path<String>,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    require(
        &caller,
        Action::Read,
        Resource::User(&user_id),
        "identity:list_application_credentials",
    )?;
    let path = format!("/v3/users/{user_id}/application_credentials");
    let name = q.get("name").map(str::to_string);
    let creds = state.read(|id| id.list_app_creds(&user_id, name.as_deref()))?;
    let items = creds
        .iter()
        .map(|a| views::app_cred(&base, a, None))
        .collect();
    Ok(axum::Json(views::collection(
        &base,
        &path,
        "application_credentials",
        items,
    )))
}

async fn show(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    Path((user_id, cred_id)): Path<(String, String)>,
) -> ApiResult<axum::Json<Value>> {
    require(
        &caller,
        Action::Read,
        Resource::User(&user_id),
        "identity:get_application_credential",
    )?;
    let ac = state.read(|id| id.get_app_cred(&user_id, &cred_id))?;
    Ok(axum::Json(
        json!({"application_credential": views::app_cred(&base, &ac, None)}),
    ))
}

async fn remove(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((user_id, cred_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    require(
        &caller,
        Action::Write,
        Resource::User(&user_id),
        "identity:delete_application_credential",
    )?;
    state
        .blocking(move |id| id.delete_app_cred(&user_id, &cred_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
