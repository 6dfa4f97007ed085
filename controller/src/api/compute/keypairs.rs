//! `/os-keypairs`: import or generate (the private key is in the create answer
//! only; generation is gone at 2.92), list (`limit`/`marker` from 2.35), show,
//! delete; `type` from 2.2 (and 201/204 instead of 200/202); `key_pairs` quota.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use super::views;
use crate::api::extract::{BaseUrl, Caller, Json, Path, QueryParams};
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
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
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
    match kp.get("type") {
        None => {}
        Some(Value::String(t)) if t == "ssh" => {}
        Some(Value::String(t)) if t == "x509" => {
            return Err(ApiError::NotImplemented(
                "x509 keypairs are not implemented in kiln; use type ssh.".into(),
            ))
        }
        Some(v) => {
            return Err(ApiError::BadRequest(format!(
            "Invalid input for field/attribute type. Value: {v}. {v} is not one of ['ssh', 'x509']"
        )))
        }
    }
    if mv.at_least(92) && public_key.is_none() {
        return Err(ApiError::BadRequest(
            "Invalid input for field/attribute keypair. Value: 'public_key' is a required property"
                .into(),
        ));
    }
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    let created = blocking(move || {
        let limit = compute.quota_limit(who.project.as_deref(), "key_pairs")?;
        compute.create_keypair(&who, &name, public_key.as_deref(), limit)
    })
    .await?;
    let status = if mv.at_least(2) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(json!({
            "keypair": views::keypair_created(&created.keypair, created.private_key.as_deref(), mv)
        })),
    ))
}

async fn list(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    mv: Microversion,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    let user = user_param(&q, mv);
    let mut list = state
        .services
        .compute
        .keypairs(&Who::of(&caller), user.as_deref())?;
    let mut links = None;
    if mv.at_least(35) {
        list.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(m) = q.get("marker") {
            let pos = list
                .iter()
                .position(|k| k.name == m)
                .ok_or_else(|| ApiError::BadRequest(format!("marker [{m}] not found")))?;
            list.drain(..=pos);
        }
        if let Some(l) = q.get("limit") {
            let l: usize = l.parse().map_err(|_| {
                ApiError::BadRequest(format!(
                    "Invalid input for query parameters limit. Value: {l}. '{l}' does not match '^[0-9]*$'"
                ))
            })?;
            list.truncate(l);
            if let (true, Some(last)) = (l > 0 && list.len() == l, list.last()) {
                let mut href = format!(
                    "{base}/compute/v2.1/os-keypairs?limit={l}&marker={}",
                    last.name
                );
                if let Some(u) = &user {
                    href.push_str(&format!("&user_id={u}"));
                }
                links = Some(json!([{"rel": "next", "href": href}]));
            }
        }
    }
    let items: Vec<Value> = list
        .iter()
        .map(|k| json!({"keypair": views::keypair_summary(k, mv)}))
        .collect();
    let mut out = json!({"keypairs": items});
    if let Some(l) = links {
        out["keypairs_links"] = l;
    }
    Ok(axum::Json(out))
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
    Ok(axum::Json(
        json!({"keypair": views::keypair_detail(&k, mv)}),
    ))
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
    Ok(if mv.at_least(2) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::ACCEPTED
    })
}
