//! `/servers` (Nova v2.1): create, list, detail, show, update, delete; the
//! `action` endpoint ([`actions`]); metadata, ips, tags and os-instance-actions.
//! Views per microversion live in [`views`]; body parsing in [`parse`].

mod actions;
pub mod attachments;
mod instance_actions;
pub mod interfaces;
mod parse;
mod rules;
pub mod views;

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};

use crate::api::extract::{BaseUrl, Caller, Json, Path, QueryParams};
use crate::app::AppState;
use crate::clock::parse_rfc3339;
use crate::compute::servers::lifecycle::Verb;
use crate::compute::servers::link::deliver_later;
use crate::compute::servers::query::{check_locked, check_tag, ListQuery, MAX_TAGS};
use crate::compute::Who;
use crate::error::{ApiError, ApiResult};
use crate::microversion::Microversion;
use crate::services::blocking;

const S: &str = "/compute/v2.1/servers";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(S, get(list).post(create))
        .route(&format!("{S}/detail"), get(detail))
        .route(&format!("{S}/{{id}}"), get(show).put(update).delete(remove))
        .route(&format!("{S}/{{id}}/action"), post(actions::action))
        .route(
            &format!("{S}/{{id}}/metadata"),
            get(metadata_list)
                .put(metadata_replace)
                .post(metadata_merge),
        )
        .route(
            &format!("{S}/{{id}}/metadata/{{key}}"),
            get(metadata_show).put(metadata_put).delete(metadata_delete),
        )
        .route(&format!("{S}/{{id}}/ips"), get(ips))
        .route(&format!("{S}/{{id}}/ips/{{network}}"), get(ips_network))
        .route(
            &format!("{S}/{{id}}/tags"),
            get(tags_list).put(tags_replace).delete(tags_clear),
        )
        .route(
            &format!("{S}/{{id}}/tags/{{tag}}"),
            get(tag_check).put(tag_add).delete(tag_remove),
        )
        .route(
            &format!("{S}/{{id}}/os-instance-actions"),
            get(instance_actions::list),
        )
        .route(
            &format!("{S}/{{id}}/os-instance-actions/{{req}}"),
            get(instance_actions::show),
        )
        .merge(attachments::router())
        .merge(interfaces::router())
}

fn list_query(q: &QueryParams, who: &Who, mv: Microversion) -> ApiResult<ListQuery> {
    let since = rules::list_filters(q.0.iter().map(|(k, v)| (k.as_str(), v.as_str())), mv)?;
    let list = |k: &str| -> Vec<String> {
        q.get(k)
            .map(|v| {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let limit = match q.get("limit") {
        Some(l) => Some(l.parse::<usize>().map_err(|_| {
            ApiError::BadRequest(format!(
                "Invalid input for query parameters limit. Value: {l}. '{l}' does not match '^[0-9]*$'"
            ))
        })?),
        None => None,
    };
    let changes_since = match q.get("changes-since").or_else(|| q.get("changes_since")) {
        Some(t) => Some(parse_rfc3339(t).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Invalid input for query parameters changes-since. Value: {t}. '{t}' is not a 'date-time'"
            ))
        })?),
        None => None,
    };
    if let (Some(a), Some(b)) = (changes_since, since.changes_before) {
        if a > b {
            return Err(ApiError::BadRequest(
                "The value of changes-since must be less than or equal to changes-before.".into(),
            ));
        }
    }
    let all_tenants = q.get("all_tenants").is_some_and(|v| {
        !matches!(
            v.to_ascii_lowercase().as_str(),
            "false" | "0" | "no" | "off"
        )
    });
    let admin_only = |k: &str| {
        if who.admin {
            q.get(k).map(str::to_string)
        } else {
            None
        }
    };
    Ok(ListQuery {
        name: q.get("name").map(str::to_string),
        status: q.get("status").map(str::to_string),
        image: q
            .get("image")
            .map(|i| i.rsplit('/').next().unwrap_or(i).to_string()),
        flavor: q
            .get("flavor")
            .map(|i| i.rsplit('/').next().unwrap_or(i).to_string()),
        changes_since,
        changes_before: since.changes_before,
        locked: since.locked,
        all_tenants,
        project: admin_only("project_id").or_else(|| admin_only("tenant_id")),
        host: admin_only("host"),
        ip: q.get("ip").map(str::to_string),
        reservation_id: q.get("reservation_id").map(str::to_string),
        tags: list("tags"),
        tags_any: list("tags-any"),
        not_tags: list("not-tags"),
        not_tags_any: list("not-tags-any"),
        limit,
        marker: q.get("marker").map(str::to_string),
        deleted: admin_only("deleted").map(|v| {
            matches!(
                v.to_ascii_lowercase().as_str(),
                "true" | "1" | "yes" | "on" | "t" | "y"
            )
        }),
    })
}

fn next_link(
    base: &str,
    path: &str,
    q: &QueryParams,
    page: &[String],
    limit: Option<usize>,
) -> Option<Value> {
    let limit = limit.unwrap_or(crate::compute::servers::query::MAX_LIMIT);
    if page.len() < limit || page.is_empty() {
        return None;
    }
    let mut params: Vec<String> =
        q.0.iter()
            .filter(|(k, _)| k.as_str() != "marker")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
    params.sort();
    params.push(format!("marker={}", page.last()?));
    Some(
        json!([{"rel": "next", "href": format!("{base}/compute/v2.1/{path}?{}", params.join("&"))}]),
    )
}

async fn list_impl(
    state: AppState,
    who: Who,
    base: String,
    q: QueryParams,
    mv: Microversion,
    full: bool,
) -> ApiResult<axum::Json<Value>> {
    let lq = list_query(&q, &who, mv)?;
    let compute = state.services.compute.clone();
    let (w2, lq2) = (who.clone(), lq.clone());
    let servers = blocking(move || compute.servers(&w2, &lq2)).await?;
    let mut items: Vec<Value> = servers
        .iter()
        .map(|s| {
            if full {
                views::detail(&base, s, &who, mv)
            } else {
                views::summary(&base, s)
            }
        })
        .collect();
    // host_status (2.16+, where the view has the key) from one services read.
    if items.iter().any(|v| v.get("host_status").is_some()) {
        let statuses = state.services.compute.host_statuses()?;
        for (view, s) in items.iter_mut().zip(&servers) {
            if let (Some(host), Some(status)) = (&s.host, view.get_mut("host_status")) {
                *status = json!(statuses.get(host).copied().unwrap_or("UNKNOWN"));
            }
        }
    }
    let ids: Vec<String> = servers.iter().map(|s| s.id.clone()).collect();
    let mut out = json!({"servers": items});
    let path = if full { "servers/detail" } else { "servers" };
    if let Some(l) = next_link(&base, path, &q, &ids, lq.limit) {
        out["servers_links"] = l;
    }
    Ok(axum::Json(out))
}

async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    BaseUrl(base): BaseUrl,
    mv: Microversion,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    list_impl(state, Who::of(&caller), base, q, mv, false).await
}

async fn detail(
    State(state): State<AppState>,
    Caller(caller): Caller,
    BaseUrl(base): BaseUrl,
    mv: Microversion,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    list_impl(state, Who::of(&caller), base, q, mv, true).await
}

async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    BaseUrl(base): BaseUrl,
    mv: Microversion,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let (mut req, want_reservation) = parse::create(&body, mv)?;
    for b in &mut req.volumes {
        if let crate::compute::servers::bdm::BdmSource::Image { id, path } = &mut b.source {
            *path = state.services.images.files.path(id);
        }
    }
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    let (servers, calls) = blocking(move || compute.create_servers(&who, req)).await?;
    deliver_later(state.services.compute.clone(), state.nodes.clone(), calls);
    let Some(first) = servers.first() else {
        return Err(ApiError::Internal("no server was created".into()));
    };
    if want_reservation {
        return Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({"reservation_id": first.reservation_id})),
        ));
    }
    let admin_pass: String = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let server = json!({
        "id": first.id,
        "links": views::detail(&base, first, &Who::of(&caller), mv)["links"],
        "OS-DCF:diskConfig": "MANUAL",
        "security_groups": first.security_groups.iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
        "adminPass": admin_pass,
    });
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"server": server}))))
}

async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    BaseUrl(base): BaseUrl,
    mv: Microversion,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let who = Who::of(&caller);
    let s = state.services.compute.server(&who, &id)?;
    let mut view = views::full(&base, &s, &who, mv, views::Call::Show);
    if let (Some(host), Some(status)) = (&s.host, view.get_mut("host_status")) {
        *status = json!(state.services.compute.host_status(host)?);
    }
    Ok(axum::Json(json!({ "server": view })))
}

async fn update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    BaseUrl(base): BaseUrl,
    mv: Microversion,
    Path(id): Path<String>,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<axum::Json<Value>> {
    let Some(Value::Object(o)) = body.get("server") else {
        return Err(parse::bad("server", "'server' is a required property"));
    };
    let mut name = None;
    let mut description = None;
    let mut ipv4 = None;
    let mut ipv6 = None;
    let mut hostname = None;
    for (k, v) in o {
        match (k.as_str(), v) {
            ("name", Value::String(n)) => name = Some(parse::name(n, "name")?),
            ("description", Value::String(_) | Value::Null) if mv.at_least(19) => {
                description = Some(v.as_str().map(str::to_string))
            }
            ("accessIPv4", Value::String(a)) => ipv4 = Some(a.clone()),
            ("accessIPv6", Value::String(a)) => ipv6 = Some(a.clone()),
            ("OS-DCF:diskConfig", _) => {}
            ("hostname", Value::String(h)) if mv.at_least(90) => {
                rules::hostname(h, mv)?;
                hostname = Some(h.clone());
            }
            _ => {
                return Err(parse::bad(
                    "server",
                    &format!("Additional properties are not allowed ('{k}' was unexpected)"),
                ))
            }
        }
    }
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    let w2 = who.clone();
    let (s, ()) = blocking(move || {
        compute.modify_server(&w2, &id, |s| {
            check_locked(&w2, s)?;
            if let Some(n) = name {
                s.name = n;
            }
            if let Some(d) = description {
                s.description = d;
            }
            if let Some(a) = ipv4 {
                s.access_ipv4 = a;
            }
            if let Some(a) = ipv6 {
                s.access_ipv6 = a;
            }
            if let Some(h) = hostname {
                s.hostname = Some(h);
            }
            Ok(())
        })
    })
    .await?;
    Ok(axum::Json(
        json!({"server": views::full(&base, &s, &who, mv, views::Call::Update)}),
    ))
}

async fn remove(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    let (_, calls) = blocking(move || compute.act(&who, &id, Verb::Delete)).await?;
    deliver_later(state.services.compute.clone(), state.nodes.clone(), calls);
    Ok(StatusCode::NO_CONTENT)
}

// --- metadata ---

async fn metadata_list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let s = state.services.compute.server(&Who::of(&caller), &id)?;
    Ok(axum::Json(json!({"metadata": s.metadata})))
}

async fn set_metadata(
    state: AppState,
    who: Who,
    id: String,
    items: BTreeMap<String, String>,
    replace: bool,
) -> ApiResult<BTreeMap<String, String>> {
    let compute = state.services.compute.clone();
    blocking(move || compute.set_server_metadata(&who, &id, items, replace)).await
}

fn metadata_body(body: &Map<String, Value>) -> ApiResult<BTreeMap<String, String>> {
    match body.get("metadata") {
        Some(v) => parse::metadata(Some(v)),
        None => Err(parse::bad("metadata", "'metadata' is a required property")),
    }
}

async fn metadata_replace(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<axum::Json<Value>> {
    let items = metadata_body(&body)?;
    let md = set_metadata(state, Who::of(&caller), id, items, true).await?;
    Ok(axum::Json(json!({"metadata": md})))
}

async fn metadata_merge(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<axum::Json<Value>> {
    let items = metadata_body(&body)?;
    let md = set_metadata(state, Who::of(&caller), id, items, false).await?;
    Ok(axum::Json(json!({"metadata": md})))
}

async fn metadata_show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, key)): Path<(String, String)>,
) -> ApiResult<axum::Json<Value>> {
    let s = state.services.compute.server(&Who::of(&caller), &id)?;
    let v = s
        .metadata
        .get(&key)
        .ok_or_else(|| ApiError::NotFound("Metadata item was not found".into()))?;
    Ok(axum::Json(json!({"meta": {key: v}})))
}

async fn metadata_put(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, key)): Path<(String, String)>,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<axum::Json<Value>> {
    let Some(meta) = body.get("meta") else {
        return Err(parse::bad("meta", "'meta' is a required property"));
    };
    let items = parse::metadata(Some(meta))?;
    if items.len() != 1 || !items.contains_key(&key) {
        return Err(ApiError::BadRequest(if items.len() > 1 {
            "Request body contains too many items".into()
        } else {
            "Request body and URI mismatch".into()
        }));
    }
    let value = items.get(&key).cloned().unwrap_or_default();
    set_metadata(state, Who::of(&caller), id, items, false).await?;
    Ok(axum::Json(json!({"meta": {key: value}})))
}

async fn metadata_delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, key)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    blocking(move || compute.delete_server_metadata(&who, &id, &key)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- ips ---

async fn ips(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let s = state.services.compute.server(&Who::of(&caller), &id)?;
    Ok(axum::Json(json!({"addresses": views::addresses(&s)})))
}

async fn ips_network(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, network)): Path<(String, String)>,
) -> ApiResult<axum::Json<Value>> {
    let s = state.services.compute.server(&Who::of(&caller), &id)?;
    let all = views::addresses(&s);
    let Some(list) = all.get(&network) else {
        return Err(ApiError::NotFound(
            "Instance is not a member of specified network".into(),
        ));
    };
    Ok(axum::Json(json!({ network: list })))
}

// --- tags (2.26) ---

fn tags_version(mv: Microversion) -> ApiResult<()> {
    if mv.at_least(26) {
        Ok(())
    } else {
        Err(ApiError::NotFound(
            "The resource could not be found.".into(),
        ))
    }
}

async fn change_tags(
    state: &AppState,
    who: Who,
    id: String,
    f: impl FnOnce(&mut Vec<String>) -> ApiResult<()> + Send + 'static,
) -> ApiResult<Vec<String>> {
    let compute = state.services.compute.clone();
    let (s, ()) = blocking(move || {
        compute.modify_server(&who, &id, |s| {
            check_locked(&who, s)?;
            f(&mut s.tags)?;
            if s.tags.len() > MAX_TAGS {
                return Err(ApiError::BadRequest(format!(
                    "The number of tags exceeded the per-server limit {MAX_TAGS}"
                )));
            }
            Ok(())
        })
    })
    .await?;
    Ok(s.tags)
}

async fn tags_list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    tags_version(mv)?;
    let s = state.services.compute.server(&Who::of(&caller), &id)?;
    Ok(axum::Json(json!({"tags": s.tags})))
}

async fn tags_replace(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path(id): Path<String>,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<axum::Json<Value>> {
    tags_version(mv)?;
    let Some(Value::Array(list)) = body.get("tags") else {
        return Err(parse::bad("tags", "'tags' is a required property"));
    };
    let mut new = Vec::new();
    for t in list {
        let t = t
            .as_str()
            .ok_or_else(|| parse::bad("tags", "tags must be strings"))?;
        check_tag(t)?;
        if !new.iter().any(|x: &String| x == t) {
            new.push(t.to_string());
        }
    }
    let tags = change_tags(&state, Who::of(&caller), id, move |t| {
        *t = new;
        Ok(())
    })
    .await?;
    Ok(axum::Json(json!({"tags": tags})))
}

async fn tags_clear(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    tags_version(mv)?;
    change_tags(&state, Who::of(&caller), id, |t| {
        t.clear();
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn tag_check(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    tags_version(mv)?;
    let s = state.services.compute.server(&Who::of(&caller), &id)?;
    if s.tags.contains(&tag) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("Tag {tag} could not be found.")))
    }
}

async fn tag_add(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    tags_version(mv)?;
    check_tag(&tag)?;
    let t2 = tag.clone();
    let before = state.services.compute.server(&Who::of(&caller), &id)?;
    change_tags(&state, Who::of(&caller), id, move |t| {
        if !t.contains(&t2) {
            t.push(t2);
        }
        Ok(())
    })
    .await?;
    Ok(if before.tags.contains(&tag) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    })
}

async fn tag_remove(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    tags_version(mv)?;
    change_tags(&state, Who::of(&caller), id, move |t| {
        let before = t.len();
        t.retain(|x| *x != tag);
        if t.len() == before {
            return Err(ApiError::NotFound(format!("Tag {tag} could not be found.")));
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
