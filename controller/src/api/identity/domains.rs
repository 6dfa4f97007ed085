//! `/v3/domains`: create, list, show, update, delete (an enabled domain cannot be deleted).

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
use crate::identity::directory::{DomainPatch, NewDomain};
use crate::identity::policy::{allowed, Action, Resource};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v3/domains", get(list).post(create))
        .route("/v3/domains/{id}", get(show).patch(update).delete(remove))
}

#[derive(Deserialize)]
struct CreateBody {
    domain: NewDomain,
}

#[derive(Deserialize)]
struct UpdateBody {
    domain: DomainPatch,
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
        "identity:create_domain",
    )?;
    let d = state
        .blocking(move |id| id.create_domain(body.domain))
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"domain": views::domain(&base, &d)})),
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
    let own = caller.user_domain_id.clone();
    let domains = state.read(|id| id.list_domains(&f))?;
    let items = domains
        .iter()
        .filter(|d| all || d.id == own)
        .map(|d| views::domain(&base, d))
        .collect();
    Ok(axum::Json(views::collection(
        &base,
        "/v3/domains",
        "domains",
        items,
    )))
}

async fn show(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    Path(domain_id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let own =
        caller.user_domain_id == domain_id || caller.scope.domain_id() == Some(domain_id.as_str());
    if !own {
        require(
            &caller,
            Action::Read,
            Resource::Cloud,
            "identity:get_domain",
        )?;
    }
    let d = state.read(|id| id.get_domain(&domain_id))?;
    Ok(axum::Json(json!({"domain": views::domain(&base, &d)})))
}

async fn update(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    Path(domain_id): Path<String>,
    Json(body): Json<UpdateBody>,
) -> ApiResult<axum::Json<Value>> {
    require(
        &caller,
        Action::Write,
        Resource::Cloud,
        "identity:update_domain",
    )?;
    let d = state
        .blocking(move |id| id.update_domain(&domain_id, body.domain))
        .await?;
    Ok(axum::Json(json!({"domain": views::domain(&base, &d)})))
}

async fn remove(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(domain_id): Path<String>,
) -> ApiResult<StatusCode> {
    require(
        &caller,
        Action::Write,
        Resource::Cloud,
        "identity:delete_domain",
    )?;
    state
        .blocking(move |id| id.delete_domain(&domain_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
