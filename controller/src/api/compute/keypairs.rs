//! `/os-keypairs`: import or generate (the private key is in the create answer
//! only), list, show, delete; `key_pairs` quota enforced.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use super::views;
use crate::api::extract::{Caller, Json, Path, QueryParams};
use crate::app::AppState;
use crate::compute::Who;
use crate::error::{ApiError, ApiResult};
use crate::microversion::Microversion;
use crate::services::blocking;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/compute/v2.1/os-keypairs", get(list).post(create))
        .route("/compute/v2.1/os-keypairs/{name}", get(show).delete(remove))
}

/// `user_id` is honoured from 2.10 on (admins only).
fn user_param(q: &QueryParams, mv: Microversion) -> Option<String> {
    if mv.at_least(10) {
        q.get("user_id").map(str::to_string)
    } else {
        None
    }
}

async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<axum::Json<Value>> {
    let Some(Value::Object(kp)) = body.get("keypair") else {
        return Err(ApiError::BadRequest(
            "Invalid input for field/attribute keypair. Value: 'keypair' is a required property"
                .into(),
        ));
    };
    for k in kp.keys() {
        let allowed = match k.as_str() {
            "name" | "public_key" => true,
            "type" => mv.at_least(2),
            "user_id" => mv.at_least(10),
            _ => false,
        };
        if !allowed {
            return Err(ApiError::BadRequest(format!(
                "Invalid input for field/attribute keypair. Additional properties are not allowed ('{k}' was unexpected)"
            )));
        }
    }
    let Some(name) = kp.get("name").and_then(Value::as_str).map(str::to_string) else {
        return Err(ApiError::BadRequest(
            "Invalid input for field/attribute keypair. Value: 'name' is a required property"
                .into(),
        ));
    };
    let public_key = match kp.get("public_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "Invalid input for field/attribute public_key: expected a string.".into(),
            ))
        }
    };
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    let created = blocking(move || {
        let limit = compute.quota_limit(who.project.as_deref(), "key_pairs")?;
        compute.create_keypair(&who, &name, public_key.as_deref(), limit)
    })
    .await?;
    Ok(axum::Json(json!({
        "keypair": views::keypair_created(&created.keypair, created.private_key.as_deref())
    })))
}

async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    let user = user_param(&q, mv);
    let list = state
        .services
        .compute
        .keypairs(&Who::of(&caller), user.as_deref())?;
    let items: Vec<Value> = list
        .iter()
        .map(|k| json!({"keypair": views::keypair_summary(k)}))
        .collect();
    Ok(axum::Json(json!({"keypairs": items})))
}

async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path(name): Path<String>,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    let user = user_param(&q, mv);
    let k = state
        .services
        .compute
        .keypair(&Who::of(&caller), &name, user.as_deref())?;
    Ok(axum::Json(json!({"keypair": views::keypair_detail(&k)})))
}

async fn remove(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path(name): Path<String>,
    q: QueryParams,
) -> ApiResult<StatusCode> {
    let user = user_param(&q, mv);
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    blocking(move || compute.delete_keypair(&who, &name, user.as_deref())).await?;
    Ok(StatusCode::ACCEPTED)
}
