//! `/v3/auth/*`: issue, validate, check and revoke tokens; the caller's catalog,
//! projects, domains and system scope.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use serde_json::{json, Value};

use super::views;
use crate::api::extract::{BaseUrl, Caller, Json, QueryParams};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::identity::auth::AuthBody;
use crate::identity::model::TokenRecord;
use crate::identity::policy::is_admin;
use crate::identity::tokens::LiveToken;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v3/auth/tokens", get(validate).post(issue).delete(revoke))
        .route("/v3/auth/catalog", get(catalog))
        .route("/v3/auth/projects", get(projects))
        .route("/v3/auth/domains", get(domains))
        .route("/v3/auth/system", get(system))
}

fn with_subject(status: StatusCode, token: &str, body: Bytes) -> ApiResult<Response> {
    let header = HeaderValue::from_str(token).map_err(|_| {
        ApiError::BadRequest("The subject token is not a valid header value.".into())
    })?;
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("x-subject-token", header);
    Ok(resp)
}

/// JSON bytes of a token body (our own typed views cannot fail to serialize).
fn render(body: impl Serialize) -> Bytes {
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .unwrap_or_else(|_| Bytes::from_static(b"{}"))
}

/// The body of a live token: with the catalog it is rendered once per token and
/// shared (the validation hot path); without, rendered on demand.
fn token_body(state: &AppState, live: &LiveToken, catalog: bool) -> Bytes {
    if catalog {
        live.rendered(|r| render(views::token(r, Some(state.catalog.json()))))
    } else {
        render(views::token(live, None))
    }
}

fn wants_catalog(q: &QueryParams) -> ApiResult<bool> {
    Ok(!q.flag("nocatalog")?.unwrap_or(false))
}

async fn issue(
    State(state): State<AppState>,
    q: QueryParams,
    Json(body): Json<AuthBody>,
) -> ApiResult<Response> {
    let nocatalog = !wants_catalog(&q)?;
    let (token, record) = state
        .blocking(move |id| id.authenticate(&body.auth))
        .await?;
    with_subject(
        StatusCode::CREATED,
        &token,
        token_body(&state, &record, !nocatalog),
    )
}

/// The subject token from `X-Subject-Token`; the caller must own it or be an admin.
fn subject(
    state: &AppState,
    caller: &TokenRecord,
    headers: &HeaderMap,
) -> ApiResult<(String, std::sync::Arc<LiveToken>)> {
    let token = headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::BadRequest("The X-Subject-Token header is required.".into()))?;
    let record = state
        .identity
        .validate_token(token)
        .ok_or_else(|| ApiError::not_found("token", "(subject token)"))?;
    if record.user_id != caller.user_id && !is_admin(caller) {
        return Err(ApiError::forbidden("identity:validate_token"));
    }
    Ok((token.to_string(), record))
}

async fn validate(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    q: QueryParams,
) -> ApiResult<Response> {
    let (token, record) = subject(&state, &caller, &headers)?;
    let body = token_body(&state, &record, wants_catalog(&q)?);
    with_subject(StatusCode::OK, &token, body)
}

async fn revoke(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let (token, _) = subject(&state, &caller, &headers)?;
    state.blocking(move |id| id.revoke_token(&token)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn catalog(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(_caller): Caller,
) -> axum::Json<Value> {
    axum::Json(json!({
        "catalog": state.catalog.json(),
        "links": {"self": format!("{base}/v3/auth/catalog"), "previous": null, "next": null}
    }))
}

async fn projects(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
) -> ApiResult<axum::Json<Value>> {
    let user = caller.user_id.clone();
    let projects = state.read(|id| id.projects_with_roles(&user))?;
    let items = projects
        .iter()
        .filter(|p| p.enabled)
        .map(|p| views::project(&base, p))
        .collect();
    Ok(axum::Json(views::collection(
        &base,
        "/v3/auth/projects",
        "projects",
        items,
    )))
}

async fn domains(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
) -> ApiResult<axum::Json<Value>> {
    let user = caller.user_id.clone();
    let domains = state.read(|id| {
        id.read(|r| {
            let mut out = Vec::new();
            for d in crate::identity::assignments::domain_ids_of_user(r, &user)? {
                if let Some(d) = crate::identity::tables::DOMAINS.get(r, &d)? {
                    out.push(d);
                }
            }
            Ok(out)
        })
    })?;
    let items = domains
        .iter()
        .filter(|d| d.enabled)
        .map(|d| views::domain(&base, d))
        .collect();
    Ok(axum::Json(views::collection(
        &base,
        "/v3/auth/domains",
        "domains",
        items,
    )))
}

async fn system(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
) -> ApiResult<axum::Json<Value>> {
    let user = caller.user_id.clone();
    let has =
        state.read(|id| id.read(|r| crate::identity::assignments::has_system_roles(r, &user)))?;
    let items = if has {
        vec![json!({"all": true})]
    } else {
        vec![]
    };
    Ok(axum::Json(views::collection(
        &base,
        "/v3/auth/system",
        "system",
        items,
    )))
}
