//! `/os-server-groups`: create (`policies` before 2.64, `policy` + `rules` from
//! 2.64; soft policies from 2.15), list (`all_projects` for admins, `limit` /
//! `offset`), show, delete.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use crate::api::extract::{Caller, Json, Path, QueryParams};
use crate::app::AppState;
use crate::compute::server_groups::{NewGroup, ServerGroup};
use crate::compute::Who;
use crate::error::{ApiError, ApiResult};
use crate::microversion::Microversion;
use crate::services::blocking;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/compute/v2.1/os-server-groups", get(list).post(create))
        .route(
            "/compute/v2.1/os-server-groups/{id}",
            get(show).delete(remove),
        )
}

pub fn view(g: &ServerGroup, mv: Microversion) -> Value {
    let mut v = json!({
        "id": g.id,
        "name": g.name,
        "members": g.members.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>(),
    });
    if mv.at_least(64) {
        v["policy"] = json!(g.policy);
        v["rules"] = match g.max_server_per_host {
            Some(n) => json!({"max_server_per_host": n}),
            None => json!({}),
        };
    } else {
        v["policies"] = json!([g.policy]);
        v["metadata"] = json!({});
    }
    if mv.at_least(13) {
        v["project_id"] = json!(g.project_id);
        v["user_id"] = json!(g.user_id);
    }
    v
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

fn policy_ok(p: &str, mv: Microversion) -> bool {
    matches!(p, "affinity" | "anti-affinity")
        || (mv.at_least(15) && matches!(p, "soft-affinity" | "soft-anti-affinity"))
}

fn parse(body: &Map<String, Value>, mv: Microversion) -> ApiResult<NewGroup> {
    let Some(Value::Object(g)) = body.get("server_group") else {
        return Err(bad(
            "Invalid input for field/attribute server_group. Value: 'server_group' is a required property",
        ));
    };
    let allowed: &[&str] = if mv.at_least(64) {
        &["name", "policy", "rules"]
    } else {
        &["name", "policies"]
    };
    if let Some(k) = g.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(format!(
            "Invalid input for field/attribute server_group. Additional properties are not allowed ('{k}' was unexpected)"
        )));
    }
    let name = match g.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= 255 => s.clone(),
        Some(v) => {
            return Err(bad(format!(
                "Invalid input for field/attribute name. Value: {v}. {v} is not a valid name"
            )))
        }
        None => return Err(bad(
            "Invalid input for field/attribute server_group. Value: 'name' is a required property",
        )),
    };
    let (policy, max) = if mv.at_least(64) {
        let policy = match g.get("policy") {
            Some(Value::String(p)) if policy_ok(p, mv) => p.clone(),
            Some(v) => {
                return Err(bad(format!(
                    "Invalid input for field/attribute policy. Value: {v}. {v} is not one of ['anti-affinity', 'affinity', 'soft-anti-affinity', 'soft-affinity']"
                )))
            }
            None => {
                return Err(bad(
                    "Invalid input for field/attribute server_group. Value: 'policy' is a required property",
                ))
            }
        };
        let max = match g.get("rules") {
            None => None,
            Some(Value::Object(r)) if r.is_empty() => None,
            Some(Value::Object(r)) => {
                if let Some(k) = r.keys().find(|k| *k != "max_server_per_host") {
                    return Err(bad(format!(
                        "Invalid input for field/attribute rules. Additional properties are not allowed ('{k}' was unexpected)"
                    )));
                }
                if policy != "anti-affinity" {
                    return Err(bad("Only anti-affinity policy supports rules."));
                }
                let v = &r["max_server_per_host"];
                let n = v
                    .as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        bad(format!(
                            "Invalid input for field/attribute max_server_per_host. Value: {v}. {v} is less than the minimum of 1"
                        ))
                    })?;
                Some(n)
            }
            Some(v) => {
                return Err(bad(format!(
                "Invalid input for field/attribute rules. Value: {v}. {v} is not of type 'object'"
            )))
            }
        };
        (policy, max)
    } else {
        match g.get("policies") {
            Some(Value::Array(ps)) if ps.len() == 1 => match &ps[0] {
                Value::String(p) if policy_ok(p, mv) => (p.clone(), None),
                v => {
                    return Err(bad(format!(
                        "Invalid input for field/attribute policies. Value: {v}. {v} is not one of the allowed policies"
                    )))
                }
            },
            Some(v) => {
                return Err(bad(format!(
                    "Invalid input for field/attribute policies. Value: {v}. {v} must hold exactly one policy"
                )))
            }
            None => {
                return Err(bad(
                    "Invalid input for field/attribute server_group. Value: 'policies' is a required property",
                ))
            }
        }
    };
    Ok(NewGroup {
        name,
        policy,
        max_server_per_host: max,
    })
}

async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<axum::Json<Value>> {
    let new = parse(&body, mv)?;
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    let g = blocking(move || compute.create_server_group(&who, new)).await?;
    Ok(axum::Json(json!({"server_group": view(&g, mv)})))
}

async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    let all = q
        .flag("all_projects")
        .map_err(|e| bad(e.to_string()))?
        .unwrap_or(false);
    let num = |k: &str| -> ApiResult<Option<usize>> {
        q.get(k)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| bad(format!("Invalid {k} [{v}]")))
            })
            .transpose()
    };
    let (offset, limit) = (num("offset")?.unwrap_or(0), num("limit")?);
    let groups = state
        .services
        .compute
        .server_groups(&Who::of(&caller), all)?;
    let items: Vec<Value> = groups
        .iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .map(|g| view(g, mv))
        .collect();
    Ok(axum::Json(json!({"server_groups": items})))
}

async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let g = state
        .services
        .compute
        .server_group(&Who::of(&caller), &id)?;
    Ok(axum::Json(json!({"server_group": view(&g, mv)})))
}

async fn remove(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    blocking(move || compute.delete_server_group(&who, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
