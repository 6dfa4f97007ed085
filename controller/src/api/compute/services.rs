//! `/os-services`: list (filters `host`, `binary`), the 2.1 action forms
//! (`PUT /os-services/enable|disable|disable-log-reason|force-down`, gone at
//! 2.53), `PUT /os-services/{uuid}` from 2.53, and delete. Admin only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::Router;
use serde_json::{json, Map, Value};

use super::views::nova_time;
use crate::api::extract::{Caller, Json, Path, QueryParams};
use crate::app::AppState;
use crate::compute::services::{ServiceChange, ServiceView, COMPUTE_BINARY};
use crate::compute::Who;
use crate::error::{ApiError, ApiResult};
use crate::microversion::Microversion;
use crate::services::blocking;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/compute/v2.1/os-services", get(list))
        .route("/compute/v2.1/os-services/{id}", put(update).delete(remove))
}

/// A service as Nova shows it at `mv` (uuid ids from 2.53, `forced_down` from 2.11).
pub fn view(s: &ServiceView, mv: Microversion) -> Value {
    let r = &s.record;
    let mut v = json!({
        "id": if mv.at_least(53) { json!(r.uuid) } else { json!(r.num) },
        "binary": r.binary,
        "host": r.host,
        "zone": s.zone,
        "status": if r.disabled { "disabled" } else { "enabled" },
        "state": if s.up { "up" } else { "down" },
        "updated_at": nova_time(r.updated_at),
        "disabled_reason": r.disabled_reason,
    });
    if mv.at_least(11) {
        v["forced_down"] = json!(r.forced_down);
    }
    v
}

async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    let all = state.services.compute.services(&Who::of(&caller))?;
    let items: Vec<Value> = all
        .iter()
        .filter(|s| q.get("host").is_none_or(|h| h == s.record.host))
        .filter(|s| q.get("binary").is_none_or(|b| b == s.record.binary))
        .map(|s| view(s, mv))
        .collect();
    Ok(axum::Json(json!({"services": items})))
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

fn string_field(body: &Map<String, Value>, k: &str) -> ApiResult<String> {
    match body.get(k) {
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= 255 => Ok(s.clone()),
        Some(v) => Err(bad(format!(
            "Invalid input for field/attribute {k}. Value: {v}. {v} is not a valid string"
        ))),
        None => Err(bad(format!(
            "Invalid input for field/attribute {k}. Value: {}. '{k}' is a required property",
            Value::Object(body.clone())
        ))),
    }
}

fn only(body: &Map<String, Value>, allowed: &[&str]) -> ApiResult<()> {
    match body.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad(format!(
            "Additional properties are not allowed ('{k}' was unexpected)"
        ))),
        None => Ok(()),
    }
}

async fn update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path(id): Path<String>,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<axum::Json<Value>> {
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    if !mv.at_least(53) {
        return legacy_action(state, who, mv, &id, body).await;
    }
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(bad(format!("Invalid uuid {id}")));
    }
    only(&body, &["status", "disabled_reason", "forced_down"])?;
    let mut change = ServiceChange::default();
    match body.get("status") {
        None => {}
        Some(Value::String(s)) if s == "enabled" || s == "disabled" => {
            change.disabled = Some(s == "disabled")
        }
        Some(v) => {
            return Err(bad(format!(
                "Invalid input for field/attribute status. Value: {v}. {v} is not one of ['enabled', 'disabled']"
            )))
        }
    }
    if body.contains_key("disabled_reason") {
        if change.disabled != Some(true) {
            return Err(bad(
                "Specifying 'disabled_reason' with status 'enabled' is invalid.",
            ));
        }
        change.disabled_reason = Some(Some(string_field(&body, "disabled_reason")?));
    }
    match body.get("forced_down") {
        None => {}
        Some(Value::Bool(b)) => change.forced_down = Some(*b),
        Some(v) => {
            return Err(bad(format!(
                "Invalid input for field/attribute forced_down. Value: {v}. {v} is not of type 'boolean'"
            )))
        }
    }
    if change.disabled.is_none() && change.forced_down.is_none() {
        return Err(bad(
            "No updates were requested. Fields 'status' or 'forced_down' should be specified.",
        ));
    }
    let current = compute.service(&who, &id)?;
    if current.record.binary != COMPUTE_BINARY {
        return Err(bad(format!(
            "Updating a {} service is not supported. Only nova-compute services can be updated.",
            current.record.binary
        )));
    }
    let s = blocking(move || compute.update_service(&who, &id, change)).await?;
    Ok(axum::Json(json!({"service": view(&s, mv)})))
}

/// The 2.1–2.52 forms: `PUT /os-services/{enable|disable|disable-log-reason|force-down}`
/// with `host` and `binary` in the body.
async fn legacy_action(
    state: AppState,
    who: Who,
    mv: Microversion,
    action: &str,
    body: Map<String, Value>,
) -> ApiResult<axum::Json<Value>> {
    let fields: &[&str] = match action {
        "enable" | "disable" => &["host", "binary"],
        "disable-log-reason" => &["host", "binary", "disabled_reason"],
        "force-down" if mv.at_least(11) => &["host", "binary", "forced_down"],
        _ => return Err(ApiError::NotFound(format!("Unknown action {action}"))),
    };
    only(&body, fields)?;
    let host = string_field(&body, "host")?;
    let binary = string_field(&body, "binary")?;
    let mut change = ServiceChange::default();
    let out = match action {
        "enable" => {
            change.disabled = Some(false);
            json!({"binary": binary, "host": host, "status": "enabled"})
        }
        "disable" => {
            change.disabled = Some(true);
            json!({"binary": binary, "host": host, "status": "disabled"})
        }
        "disable-log-reason" => {
            let reason = string_field(&body, "disabled_reason")?;
            change.disabled = Some(true);
            change.disabled_reason = Some(Some(reason.clone()));
            json!({"binary": binary, "host": host, "status": "disabled", "disabled_reason": reason})
        }
        _ => {
            let Some(Value::Bool(f)) = body.get("forced_down") else {
                return Err(bad(
                    "Invalid input for field/attribute forced_down. 'forced_down' is a required boolean property",
                ));
            };
            change.forced_down = Some(*f);
            json!({"binary": binary, "host": host, "forced_down": f})
        }
    };
    let compute = state.services.compute.clone();
    blocking(move || {
        let s = compute.service_by_host(&who, &host, &binary)?;
        compute.update_service(&who, &s.record.uuid, change)
    })
    .await?;
    Ok(axum::Json(json!({"service": out})))
}

async fn remove(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if mv.at_least(53) && uuid::Uuid::parse_str(&id).is_err() {
        return Err(bad(format!("Invalid uuid {id}")));
    }
    if !mv.at_least(53) && id.parse::<u64>().is_err() {
        return Err(bad(format!("Invalid ID {id}")));
    }
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    blocking(move || compute.delete_service(&who, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
