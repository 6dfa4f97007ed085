//! `/flavors`: list, detail, show, os-flavor-manage create/delete, extra specs and
//! flavor access.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};

use super::views;
use crate::api::extract::{BaseUrl, Caller, Json, Path, QueryParams};
use crate::app::AppState;
use crate::compute::flavors::FlavorQuery;
use crate::compute::multiqueue;
use crate::compute::Who;
use crate::error::{ApiError, ApiResult};
use crate::microversion::Microversion;
use crate::services::blocking;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/compute/v2.1/flavors", get(list).post(create))
        .route("/compute/v2.1/flavors/detail", get(detail))
        .route(
            "/compute/v2.1/flavors/{id}",
            get(show).put(update).delete(remove),
        )
        .route("/compute/v2.1/flavors/{id}/action", post(action))
        .route("/compute/v2.1/flavors/{id}/os-flavor-access", get(access))
        .route(
            "/compute/v2.1/flavors/{id}/os-extra_specs",
            get(specs).post(set_specs),
        )
        .route(
            "/compute/v2.1/flavors/{id}/os-extra_specs/{key}",
            get(spec).put(put_spec).delete(delete_spec),
        )
}

fn query(q: &QueryParams, who: &Who) -> ApiResult<FlavorQuery> {
    let num = |k: &str| -> ApiResult<Option<u64>> {
        q.get(k)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| ApiError::BadRequest(format!("Invalid {k} filter [{v}]")))
            })
            .transpose()
    };
    let is_public = match q.get("is_public").map(str::to_ascii_lowercase).as_deref() {
        None => Some(true),
        Some("none") if who.admin => None,
        Some("none") => Some(true),
        Some("true" | "t" | "1" | "yes" | "y") => Some(true),
        Some("false" | "f" | "0" | "no" | "n") => Some(false),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "Invalid is_public filter [{other}]"
            )))
        }
    };
    let sort_desc = match q.get("sort_dir") {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => return Err(ApiError::BadRequest(format!("Invalid sort_dir [{other}]"))),
    };
    Ok(FlavorQuery {
        is_public: if who.admin { is_public } else { None },
        min_ram: num("minRam")?,
        min_disk: num("minDisk")?,
        sort_key: q.get("sort_key").unwrap_or("flavorid").to_string(),
        sort_desc,
        limit: num("limit")?.map(|l| l as usize),
        marker: q.get("marker").map(str::to_string),
    })
}

async fn listing(
    state: AppState,
    base: String,
    caller: &crate::identity::model::TokenRecord,
    q: QueryParams,
    mv: Microversion,
    detail: bool,
) -> ApiResult<axum::Json<Value>> {
    let who = Who::of(caller);
    let fq = query(&q, &who)?;
    let list = state.services.compute.flavors(&who, &fq)?;
    let items: Vec<Value> = list
        .iter()
        .map(|f| views::flavor(&base, f, mv, detail))
        .collect();
    let mut body = json!({"flavors": items});
    if let (Some(limit), Some(last)) = (fq.limit, list.last()) {
        if list.len() == limit {
            let path = if detail { "flavors/detail" } else { "flavors" };
            body["flavors_links"] = json!([{"rel": "next", "href": format!("{base}/compute/v2.1/{path}?limit={limit}&marker={}", last.id)}]);
        }
    }
    Ok(axum::Json(body))
}

async fn list(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    mv: Microversion,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    listing(state, base, &caller, q, mv, false).await
}

async fn detail(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    mv: Microversion,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    listing(state, base, &caller, q, mv, true).await
}

async fn show(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    mv: Microversion,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let f = state.services.compute.flavor(&Who::of(&caller), &id)?;
    Ok(axum::Json(
        json!({"flavor": views::flavor(&base, &f, mv, true)}),
    ))
}

async fn create(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    mv: Microversion,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<axum::Json<Value>> {
    let Some(Value::Object(flavor)) = body.get("flavor").cloned() else {
        return Err(ApiError::BadRequest(
            "Invalid input for field/attribute flavor. Value: 'flavor' is a required property"
                .into(),
        ));
    };
    if flavor.contains_key("description") && !mv.at_least(55) {
        return Err(ApiError::BadRequest("Invalid input for field/attribute flavor. Additional properties are not allowed ('description' was unexpected)".into()));
    }
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    let f = blocking(move || compute.create_flavor(&who, &flavor)).await?;
    Ok(axum::Json(
        json!({"flavor": views::flavor(&base, &f, mv, true)}),
    ))
}

/// 2.55: `PUT /flavors/{id}` with `{"flavor": {"description": ...}}` (405 before).
async fn update(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    mv: Microversion,
    Path(id): Path<String>,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<axum::Json<Value>> {
    if !mv.at_least(55) {
        return Err(ApiError::MethodNotAllowed(format!(
            "The method PUT is not allowed for the resource /compute/v2.1/flavors/{id}."
        )));
    }
    let description = match body.get("flavor") {
        Some(Value::Object(f)) if f.len() == 1 => match f.get("description") {
            Some(Value::Null) => None,
            Some(Value::String(s)) if s.chars().count() <= 65535 => Some(s.clone()),
            _ => return Err(ApiError::BadRequest(
                "Invalid input for field/attribute flavor. Value: 'description' is a required property".into(),
            )),
        },
        _ => {
            return Err(ApiError::BadRequest(
                "Invalid input for field/attribute flavor. Value: 'description' is a required property".into(),
            ))
        }
    };
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    let f = blocking(move || compute.update_flavor_description(&who, &id, description)).await?;
    Ok(axum::Json(
        json!({"flavor": views::flavor(&base, &f, mv, true)}),
    ))
}

async fn remove(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    blocking(move || compute.delete_flavor(&who, &id)).await?;
    Ok(StatusCode::ACCEPTED)
}

fn access_body(id: &str, projects: Vec<String>) -> Value {
    json!({"flavor_access": projects.into_iter().map(|p| json!({"flavor_id": id, "tenant_id": p})).collect::<Vec<_>>()})
}

async fn access(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let who = Who::of(&caller);
    if !who.admin {
        return Err(ApiError::Forbidden(
            "Policy doesn't allow os_compute_api:os-flavor-access to be performed.".into(),
        ));
    }
    let projects = state.services.compute.flavor_access(&who, &id)?;
    Ok(axum::Json(access_body(&id, projects)))
}

async fn action(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<axum::Json<Value>> {
    let (grant, inner) = match (body.get("addTenantAccess"), body.get("removeTenantAccess")) {
        (Some(v), None) => (true, v),
        (None, Some(v)) => (false, v),
        _ => {
            return Err(ApiError::BadRequest(
                "Invalid input: expected one of addTenantAccess or removeTenantAccess.".into(),
            ))
        }
    };
    let Some(project) = inner
        .get("tenant")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return Err(ApiError::BadRequest(
            "Invalid input for field/attribute tenant. Value: 'tenant' is a required property"
                .into(),
        ));
    };
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    let id2 = id.clone();
    let projects = blocking(move || compute.set_flavor_access(&who, &id2, &project, grant)).await?;
    Ok(axum::Json(access_body(&id, projects)))
}

async fn specs(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let f = state.services.compute.flavor(&Who::of(&caller), &id)?;
    Ok(axum::Json(json!({"extra_specs": f.extra_specs})))
}

async fn spec(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, key)): Path<(String, String)>,
) -> ApiResult<axum::Json<Value>> {
    let f = state.services.compute.flavor(&Who::of(&caller), &id)?;
    let v = f.extra_specs.get(&key).ok_or_else(|| {
        ApiError::NotFound(format!("Flavor {id} has no extra specs with key {key}."))
    })?;
    Ok(axum::Json(json!({key: v})))
}

fn string_map(v: &Map<String, Value>) -> ApiResult<BTreeMap<String, String>> {
    v.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            Value::Number(n) => Ok((k.clone(), n.to_string())),
            Value::Bool(b) => Ok((k.clone(), b.to_string())),
            _ => Err(ApiError::BadRequest(format!(
                "Invalid input for field/attribute {k}: extra spec values are strings."
            ))),
        })
        .collect()
}

/// From 2.86 Nova validates the values of the extra specs it knows; kiln
/// knows `hw:vif_multiqueue_enabled` (a boolean).
fn validated(
    specs: BTreeMap<String, String>,
    mv: Microversion,
) -> ApiResult<BTreeMap<String, String>> {
    if mv.at_least(86) {
        for (k, v) in &specs {
            multiqueue::validate_extra_spec(k, v)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        }
    }
    Ok(specs)
}

async fn set_specs(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    mv: Microversion,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<axum::Json<Value>> {
    let Some(Value::Object(specs)) = body.get("extra_specs") else {
        return Err(ApiError::BadRequest("Invalid input for field/attribute extra_specs. Value: 'extra_specs' is a required property".into()));
    };
    let specs = validated(string_map(specs)?, mv)?;
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    let all = blocking(move || compute.set_extra_specs(&who, &id, specs)).await?;
    Ok(axum::Json(json!({"extra_specs": all})))
}

async fn put_spec(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, key)): Path<(String, String)>,
    mv: Microversion,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<axum::Json<Value>> {
    if body.len() != 1 || !body.contains_key(&key) {
        return Err(ApiError::BadRequest("Request body and URI mismatch".into()));
    }
    let specs = validated(string_map(&body)?, mv)?;
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    let k2 = key.clone();
    let all = blocking(move || compute.set_extra_specs(&who, &id, specs)).await?;
    Ok(axum::Json(json!({key: all.get(&k2)})))
}

async fn delete_spec(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, key)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    blocking(move || compute.delete_extra_spec(&who, &id, &key)).await?;
    Ok(StatusCode::OK)
}
