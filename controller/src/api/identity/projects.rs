//! `/v3/projects`: create, list (admins see all, others their own), show, update, delete.

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
use crate::identity::directory::{NewProject, ProjectPatch};
use crate::identity::policy::{allowed, Action, Resource};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v3/projects", get(list).post(create))
        .route("/v3/projects/{id}", get(show).patch(update).delete(remove))
}

#[derive(Deserialize)]
struct CreateBody {
    project: NewProject,
}

#[derive(Deserialize)]
struct UpdateBody {
    project: ProjectPatch,
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
        "identity:create_project",
    )?;
    let p = state
        .blocking(move |id| id.create_project(body.project))
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"project": views::project(&base, &p)})),
    ))
}

async fn list(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    let f = list_filter(&q)?;
    let all = allowed(&caller, Action::Read, Resource::Cloud);
    let user = caller.user_id.clone();
    let projects = state.read(|id| {
        let mut list = id.list_projects(&f)?;
        if !all {
            let mine: Vec<String> = id
                .projects_with_roles(&user)?
                .into_iter()
                .map(|p| p.id)
                .collect();
            list.retain(|p| mine.contains(&p.id));
        }
        Ok(list)
    })?;
    let items = projects.iter().map(|p| views::project(&base, p)).collect();
    Ok(axum::Json(views::collection(
        &base,
        "/v3/projects",
        "projects",
        items,
    )))
}

async fn show(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    Path(project_id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    require(
        &caller,
        Action::Read,
        Resource::Project(&project_id),
        "identity:get_project",
    )?;
    let p = state.read(|id| id.get_project(&project_id))?;
    Ok(axum::Json(json!({"project": views::project(&base, &p)})))
}

async fn update(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    Path(project_id): Path<String>,
    Json(body): Json<UpdateBody>,
) -> ApiResult<axum::Json<Value>> {
    require(
        &caller,
        Action::Write,
        Resource::Cloud,
        "identity:update_project",
    )?;
    let p = state
        .blocking(move |id| id.update_project(&project_id, body.project))
        .await?;
    Ok(axum::Json(json!({"project": views::project(&base, &p)})))
}

async fn remove(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(project_id): Path<String>,
) -> ApiResult<StatusCode> {
    require(
        &caller,
        Action::Write,
        Resource::Cloud,
        "identity:delete_project",
    )?;
    state
        .blocking(move |id| id.delete_project(&project_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
