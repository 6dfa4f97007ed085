//! Small compute resources: `/limits`, `/os-availability-zone`, `/os-quota-sets`.
//! Network-proxy quotas and limits go at 2.36, `maxImageMeta` at 2.39, the
//! injected-file ones at 2.57, exactly as Nova drops them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use crate::api::extract::{Caller, Json, Path};
use crate::app::AppState;
use crate::compute::quotas::{defaults, QuotaSet};
use crate::compute::Who;
use crate::error::{ApiError, ApiResult};
use crate::microversion::Microversion;
use crate::services::blocking;

/// Quota names that leave the API at 2.36 (nova-network proxies).
const GONE_236: &[&str] = &[
    "fixed_ips",
    "floating_ips",
    "security_group_rules",
    "security_groups",
];
/// Quota names that leave at 2.57 (personality files).
const GONE_257: &[&str] = &[
    "injected_file_content_bytes",
    "injected_file_path_bytes",
    "injected_files",
];

/// Whether quota `name` exists at `mv`.
fn quota_shown(name: &str, mv: Microversion) -> bool {
    !(mv.at_least(36) && GONE_236.contains(&name) || mv.at_least(57) && GONE_257.contains(&name))
}

/// Whether absolute limit `name` exists at `mv`.
fn limit_shown(name: &str, mv: Microversion) -> bool {
    let gone_236 = [
        "maxSecurityGroupRules",
        "maxSecurityGroups",
        "maxTotalFloatingIps",
        "totalFloatingIpsUsed",
        "totalSecurityGroupsUsed",
    ];
    !(mv.at_least(36) && gone_236.contains(&name)
        || mv.at_least(39) && name == "maxImageMeta"
        || mv.at_least(57) && (name == "maxPersonality" || name == "maxPersonalitySize"))
}

/// The availability zone every node is in until nodes name their own.
pub const DEFAULT_AZ: &str = "nova";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/compute/v2.1/limits", get(limits))
        .route("/compute/v2.1/os-availability-zone", get(zones))
        .route(
            "/compute/v2.1/os-availability-zone/detail",
            get(zones_detail),
        )
        .route(
            "/compute/v2.1/os-quota-sets/{project}",
            get(quota_show).put(quota_update).delete(quota_reset),
        )
        .route(
            "/compute/v2.1/os-quota-sets/{project}/defaults",
            get(quota_defaults),
        )
        .route(
            "/compute/v2.1/os-quota-sets/{project}/detail",
            get(quota_detail),
        )
}

async fn limits(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
) -> ApiResult<axum::Json<Value>> {
    let who = Who::of(&caller);
    let compute = &state.services.compute;
    let q = match &who.project {
        Some(p) => compute.quotas(&who, p)?,
        None => defaults(),
    };
    let used = compute.usage(&who)?;
    let get = |m: &QuotaSet, k: &str| m.get(k).copied().unwrap_or(-1);
    let absolute = json!({
        "maxImageMeta": get(&q, "metadata_items"),
        "maxPersonality": get(&q, "injected_files"),
        "maxPersonalitySize": get(&q, "injected_file_content_bytes"),
        "maxSecurityGroupRules": get(&q, "security_group_rules"),
        "maxSecurityGroups": get(&q, "security_groups"),
        "maxServerGroupMembers": get(&q, "server_group_members"),
        "maxServerGroups": get(&q, "server_groups"),
        "maxServerMeta": get(&q, "metadata_items"),
        "maxTotalCores": get(&q, "cores"),
        "maxTotalFloatingIps": get(&q, "floating_ips"),
        "maxTotalInstances": get(&q, "instances"),
        "maxTotalKeypairs": get(&q, "key_pairs"),
        "maxTotalRAMSize": get(&q, "ram"),
        "totalCoresUsed": get(&used, "cores"),
        "totalFloatingIpsUsed": 0,
        "totalInstancesUsed": get(&used, "instances"),
        "totalRAMUsed": get(&used, "ram"),
        "totalSecurityGroupsUsed": 0,
        "totalServerGroupsUsed": get(&used, "server_groups"),
    });
    let absolute: Map<String, Value> = absolute
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| limit_shown(k, mv))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(axum::Json(
        json!({"limits": {"rate": [], "absolute": absolute}}),
    ))
}

async fn zones(Caller(_caller): Caller) -> axum::Json<Value> {
    axum::Json(json!({"availabilityZoneInfo": [
        {"zoneName": DEFAULT_AZ, "zoneState": {"available": true}, "hosts": null}
    ]}))
}

async fn zones_detail(Caller(caller): Caller) -> ApiResult<axum::Json<Value>> {
    if !Who::of(&caller).admin {
        return Err(ApiError::Forbidden(
            "Policy doesn't allow os_compute_api:os-availability-zone:detail to be performed."
                .into(),
        ));
    }
    Ok(axum::Json(json!({"availabilityZoneInfo": [
        {"zoneName": DEFAULT_AZ, "zoneState": {"available": true}, "hosts": {}}
    ]})))
}

fn quota_body(q: &QuotaSet, id: Option<&str>, mv: Microversion) -> Value {
    let shown: QuotaSet = q
        .iter()
        .filter(|(k, _)| quota_shown(k, mv))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let mut v = json!(shown);
    if let Some(id) = id {
        v["id"] = json!(id);
    }
    json!({"quota_set": v})
}

async fn quota_show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path(project): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let q = state.services.compute.quotas(&Who::of(&caller), &project)?;
    Ok(axum::Json(quota_body(&q, Some(&project), mv)))
}

async fn quota_defaults(
    Caller(_caller): Caller,
    mv: Microversion,
    Path(project): Path<String>,
) -> axum::Json<Value> {
    axum::Json(quota_body(&defaults(), Some(&project), mv))
}

async fn quota_detail(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path(project): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let who = Who::of(&caller);
    let q = state.services.compute.quotas(&who, &project)?;
    let used = state.services.compute.usage(&who)?;
    let mut out = Map::new();
    for (k, limit) in q.iter().filter(|(k, _)| quota_shown(k, mv)) {
        out.insert(
            k.clone(),
            json!({"in_use": used.get(k).copied().unwrap_or(0), "limit": limit, "reserved": 0}),
        );
    }
    out.insert("id".into(), json!(project));
    Ok(axum::Json(json!({"quota_set": out})))
}

async fn quota_update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path(project): Path<String>,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<axum::Json<Value>> {
    let Some(Value::Object(set)) = body.get("quota_set").cloned() else {
        return Err(ApiError::BadRequest("Invalid input for field/attribute quota_set. Value: 'quota_set' is a required property".into()));
    };
    if let Some(k) = set.keys().find(|k| !quota_shown(k, mv)) {
        return Err(ApiError::BadRequest(format!(
            "Invalid input for field/attribute quota_set. Additional properties are not allowed ('{k}' was unexpected)"
        )));
    }
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    let q = blocking(move || compute.update_quotas(&who, &project, &set)).await?;
    Ok(axum::Json(quota_body(&q, None, mv)))
}

async fn quota_reset(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(project): Path<String>,
) -> ApiResult<StatusCode> {
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    blocking(move || compute.reset_quotas(&who, &project)).await?;
    Ok(StatusCode::ACCEPTED)
}
