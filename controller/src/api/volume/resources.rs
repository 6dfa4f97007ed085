//! The Cinder resources: volumes (+ actions and metadata), snapshots, types,
//! limits, quota sets, availability zones. Mounted at `/volume/v3` and
//! `/volume/v3/{project_id}` (path parameters are read by name).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::microversion::{headers, Microversion};
use super::{views, CResult, CinderError};
use crate::api::extract::{BaseUrl, Caller, Path, QueryParams};
use crate::app::AppState;
use crate::store::Store;
use crate::volume::ops::{self, MetaChange, VCtx};
use crate::volume::{VolError, VolResult, VolumeBackend};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/volumes", get(list_volumes).post(create_volume))
        .route("/volumes/detail", get(list_volumes_detail))
        .route(
            "/volumes/{id}",
            get(show_volume).put(update_volume).delete(delete_volume),
        )
        .route("/volumes/{id}/action", post(volume_action))
        .route(
            "/volumes/{id}/metadata",
            get(get_metadata).post(merge_metadata).put(replace_metadata),
        )
        .route(
            "/volumes/{id}/metadata/{key}",
            get(get_meta_key).put(put_meta_key).delete(delete_meta_key),
        )
        .route("/snapshots", get(list_snapshots).post(create_snapshot))
        .route("/snapshots/detail", get(list_snapshots))
        .route(
            "/snapshots/{id}",
            get(show_snapshot)
                .put(update_snapshot)
                .delete(delete_snapshot),
        )
        .route("/types", get(list_types).post(create_type))
        .route("/types/default", get(default_type))
        .route("/types/{id}", get(show_type).delete(delete_type))
        .route("/limits", get(limits))
        .route("/os-quota-sets/{target}", get(show_quota).put(update_quota))
        .route("/os-quota-sets/{target}/defaults", get(default_quota))
        .route("/os-availability-zone", get(zones))
}

type Params = Path<HashMap<String, String>>;

fn param(p: &HashMap<String, String>, k: &str) -> String {
    p.get(k).cloned().unwrap_or_default()
}

/// The caller; 401 in Keystone's shape (as keystonemiddleware answers).
async fn ctx_of(caller: Caller) -> VCtx {
    VCtx::from_token(&caller.0)
}

fn body<T: DeserializeOwned>(bytes: &Bytes, key: &str) -> CResult<T> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| VolError::BadRequest(format!("Malformed request body: {e}")))?;
    let inner = v.get(key).cloned().ok_or_else(|| {
        VolError::BadRequest(format!("Missing required element '{key}' in request body."))
    })?;
    serde_json::from_value(inner)
        .map_err(|e| CinderError(VolError::BadRequest(format!("Invalid input received: {e}"))))
}

async fn run<R: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn Store, &dyn VolumeBackend) -> VolResult<R> + Send + 'static,
) -> CResult<R> {
    let store = state.identity.store().clone();
    let backend: Arc<dyn VolumeBackend> = state.volumes.clone();
    tokio::task::spawn_blocking(move || f(&*store, &*backend))
        .await
        .map_err(|e| CinderError(VolError::Backend(std::io::Error::other(e.to_string()))))?
        .map_err(CinderError)
}

fn reply(mv: Microversion, status: StatusCode, body: Value) -> Response {
    (status, headers(mv.0), axum::Json(body)).into_response()
}

fn reply_empty(mv: Microversion, status: StatusCode) -> Response {
    (status, headers(mv.0)).into_response()
}

// ---- list helpers ----

const RESERVED: &[&str] = &[
    "limit",
    "marker",
    "sort",
    "sort_key",
    "sort_dir",
    "all_tenants",
    "with_count",
    "offset",
];

fn page(
    kind: &str,
    url: &str,
    mut items: Vec<Value>,
    q: &QueryParams,
    summary: impl Fn(&Value) -> Value,
) -> CResult<Value> {
    items.retain(|i| {
        q.0.iter().all(|(k, want)| {
            if RESERVED.contains(&k.as_str()) || k == "project_id" {
                return true;
            }
            match i.get(k) {
                Some(Value::String(s)) => s == want,
                Some(Value::Number(n)) => n.to_string() == *want,
                Some(Value::Bool(b)) => b.to_string().eq_ignore_ascii_case(want),
                Some(Value::Null) => want.is_empty(),
                _ => true,
            }
        })
    });
    let mut keys: Vec<(String, bool)> = Vec::new();
    if let Some(sort) = q.get("sort") {
        for part in sort.split(',') {
            let (k, d) = part.split_once(':').unwrap_or((part, "desc"));
            keys.push((k.to_string(), d != "asc"));
        }
    } else if let Some(k) = q.get("sort_key") {
        keys.push((k.to_string(), q.get("sort_dir") != Some("asc")));
    } else {
        keys.push(("created_at".into(), true));
    }
    if let Some(d) = q.get("sort_dir") {
        if d != "asc" && d != "desc" {
            return Err(VolError::BadRequest(format!("Invalid input received: Unknown sort direction, must be 'desc' or 'asc' (not '{d}').")).into());
        }
    }
    items.sort_by(|a, b| {
        for (k, desc) in &keys {
            let o = a[k].to_string().cmp(&b[k].to_string());
            let o = if *desc { o.reverse() } else { o };
            if o.is_ne() {
                return o;
            }
        }
        a["id"].to_string().cmp(&b["id"].to_string())
    });
    let count = items.len();
    let start = match q.get("marker") {
        Some(m) => items
            .iter()
            .position(|i| i["id"] == m)
            .map(|p| p + 1)
            .ok_or_else(|| {
                VolError::BadRequest(format!("Invalid input received: marker [{m}] not found"))
            })?,
        None => 0,
    };
    let limit = match q.get("limit") {
        Some(l) => Some(l.parse::<usize>().map_err(|_| {
            VolError::BadRequest(format!(
                "Invalid input received: limit must be a non-negative integer, not '{l}'."
            ))
        })?),
        None => None,
    };
    let rest: Vec<Value> = items.into_iter().skip(start).collect();
    let more = limit.is_some_and(|l| rest.len() > l);
    let shown: Vec<Value> = rest.into_iter().take(limit.unwrap_or(usize::MAX)).collect();
    let mut out = Map::new();
    if more {
        if let (Some(last), Some(l)) = (shown.last().and_then(|i| i["id"].as_str()), limit) {
            out.insert(
                format!("{kind}_links"),
                json!([{"rel": "next", "href": format!("{url}?limit={l}&marker={last}")}]),
            );
        }
    }
    out.insert(
        kind.to_string(),
        Value::Array(shown.iter().map(summary).collect()),
    );
    if q.flag("with_count")
        .map_err(|e| VolError::BadRequest(e.to_string()))?
        == Some(true)
    {
        out.insert("count".into(), json!(count));
    }
    Ok(Value::Object(out))
}

// ---- volumes ----

async fn volume_views(
    state: &AppState,
    ctx: VCtx,
    base: String,
    mv: Microversion,
    all: bool,
) -> CResult<Vec<Value>> {
    run(state, move |s, _| {
        let types = ops::types(s)?;
        Ok(ops::list_volumes(s, &ctx, all)?
            .iter()
            .map(|v| {
                views::volume(
                    &base,
                    v,
                    mv.0,
                    ctx.admin,
                    &views::type_name(&types, &v.volume_type_id),
                )
            })
            .collect())
    })
    .await
}

async fn list_common(
    state: AppState,
    base: String,
    caller: Caller,
    mv: Microversion,
    q: QueryParams,
    detail: bool,
) -> CResult<Response> {
    let ctx = ctx_of(caller).await;
    let all = q
        .flag("all_tenants")
        .map_err(|e| VolError::BadRequest(e.to_string()))?
        == Some(true);
    let items = volume_views(&state, ctx, base.clone(), mv, all).await?;
    let url = format!(
        "{base}/volume/v3/volumes{}",
        if detail { "/detail" } else { "" }
    );
    let body = page("volumes", &url, items, &q, |v| {
        if detail {
            v.clone()
        } else {
            json!({"id": v["id"], "name": v["name"], "links": v["links"]})
        }
    })?;
    Ok(reply(mv, StatusCode::OK, body))
}

async fn list_volumes(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    caller: Caller,
    mv: Microversion,
    q: QueryParams,
) -> CResult<Response> {
    list_common(state, base, caller, mv, q, false).await
}

async fn list_volumes_detail(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    caller: Caller,
    mv: Microversion,
    q: QueryParams,
) -> CResult<Response> {
    list_common(state, base, caller, mv, q, true).await
}

async fn one_volume(
    state: &AppState,
    ctx: VCtx,
    base: String,
    mv: Microversion,
    id: String,
) -> CResult<Value> {
    run(state, move |s, _| {
        let r = s.read()?;
        let v = ops::find_volume(&*r, &ctx, &id)?;
        let types = ops::types(s)?;
        Ok(views::volume(
            &base,
            &v,
            mv.0,
            ctx.admin,
            &views::type_name(&types, &v.volume_type_id),
        ))
    })
    .await
}

async fn show_volume(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    caller: Caller,
    mv: Microversion,
    Path(p): Params,
) -> CResult<Response> {
    let ctx = ctx_of(caller).await;
    let v = one_volume(&state, ctx, base, mv, param(&p, "id")).await?;
    Ok(reply(mv, StatusCode::OK, json!({ "volume": v })))
}

async fn create_volume(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    caller: Caller,
    mv: Microversion,
    bytes: Bytes,
) -> CResult<Response> {
    let image_who = crate::image::Who::of(&caller.0);
    let ctx = ctx_of(caller).await;
    let b: ops::VolumeCreate = body(&bytes, "volume")?;
    let image = match &b.image_ref {
        Some(r) => Some(image_source(&state, &image_who, r)?),
        None => None,
    };
    let c2 = ctx.clone();
    let (v, source) = run(&state, move |s, _| {
        ops::create_volume_from(s, &c2, b, image)
    })
    .await?;
    let types = run(&state, |s, _| ops::types(s)).await?;
    let view = views::volume(
        &base,
        &v,
        mv.0,
        ctx.admin,
        &views::type_name(&types, &v.volume_type_id),
    );
    // The bytes are made after the reply: the volume is `creating` until then.
    let id = v.id.clone();
    let st = state.clone();
    tokio::spawn(async move {
        if let Err(e) = run(&st, move |s, b| ops::finish_create(s, b, &id, &source)).await {
            tracing::error!(error = %e.0, "volume creation failed");
        }
    });
    Ok(reply(mv, StatusCode::ACCEPTED, json!({ "volume": view })))
}

/// The image `imageRef` names, if the caller may read it and it is active
/// (Cinder's 400 otherwise), with what the volume will show as
/// `volume_image_metadata`.
fn image_source(
    state: &AppState,
    who: &crate::image::Who,
    image_ref: &str,
) -> CResult<ops::ImageSource> {
    let invalid = || {
        CinderError(VolError::BadRequest(
            "Invalid image identifier or unable to access requested image.".into(),
        ))
    };
    let images = &state.services.images;
    let image = images.get(who, image_ref).map_err(|_| invalid())?;
    if image.status != "active" {
        return Err(CinderError(VolError::BadRequest(format!(
            "Invalid input received: Image {} is not active.",
            image.id
        ))));
    }
    let size = image.size.ok_or_else(invalid)?;
    let mut meta = serde_json::Map::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            meta.insert(k.to_string(), Value::String(v));
        }
    };
    put("image_id", Some(image.id.clone()));
    put("image_name", image.name.clone());
    put("checksum", image.checksum.clone());
    put("container_format", image.container_format.clone());
    put("disk_format", image.disk_format.clone());
    put("min_disk", Some(image.min_disk.to_string()));
    put("min_ram", Some(image.min_ram.to_string()));
    put("size", Some(size.to_string()));
    for (k, v) in &image.properties {
        put(k, Some(v.clone()));
    }
    Ok(ops::ImageSource {
        id: image.id.clone(),
        path: images.files.path(&image.id),
        size_bytes: size,
        min_disk_gb: image.min_disk,
        metadata: meta,
    })
}

async fn update_volume(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    caller: Caller,
    mv: Microversion,
    Path(p): Params,
    bytes: Bytes,
) -> CResult<Response> {
    let ctx = ctx_of(caller).await;
    let b: ops::VolumeUpdate = body(&bytes, "volume")?;
    let id = param(&p, "id");
    let c2 = ctx.clone();
    let i2 = id.clone();
    run(&state, move |s, _| ops::update_volume(s, &c2, &i2, b)).await?;
    let v = one_volume(&state, ctx, base, mv, id).await?;
    Ok(reply(mv, StatusCode::OK, json!({ "volume": v })))
}

async fn delete_volume(
    State(state): State<AppState>,
    caller: Caller,
    mv: Microversion,
    Path(p): Params,
    q: QueryParams,
) -> CResult<Response> {
    let ctx = ctx_of(caller).await;
    let cascade = q
        .flag("cascade")
        .map_err(|e| VolError::BadRequest(e.to_string()))?
        == Some(true);
    let id = param(&p, "id");
    run(&state, move |s, b| {
        ops::delete_volume(s, b, &ctx, &id, cascade)
    })
    .await?;
    Ok(reply_empty(mv, StatusCode::ACCEPTED))
}

async fn volume_action(
    State(state): State<AppState>,
    caller: Caller,
    mv: Microversion,
    Path(p): Params,
    bytes: Bytes,
) -> CResult<Response> {
    let ctx = ctx_of(caller).await;
    let id = param(&p, "id");
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| VolError::BadRequest(format!("Malformed request body: {e}")))?;
    let Some((action, arg)) = v
        .as_object()
        .and_then(|m| m.iter().next())
        .map(|(k, v)| (k.clone(), v.clone()))
    else {
        return Err(
            VolError::BadRequest("Malformed request body: an action is required.".into()).into(),
        );
    };
    match action.as_str() {
        "os-extend" => {
            let size = arg.get("new_size").cloned().ok_or_else(|| {
                VolError::BadRequest(
                    "Invalid input received: 'new_size' is a required property.".into(),
                )
            })?;
            run(&state, move |s, b| ops::extend(s, b, &ctx, &id, &size)).await?;
            Ok(reply_empty(mv, StatusCode::ACCEPTED))
        }
        "os-set_bootable" => {
            let flag = arg.get("bootable").cloned().unwrap_or(Value::Null);
            run(&state, move |s, _| ops::set_bootable(s, &ctx, &id, &flag)).await?;
            Ok(reply_empty(mv, StatusCode::OK))
        }
        "os-reset_status" => {
            let status = arg
                .get("status")
                .and_then(Value::as_str)
                .map(str::to_string);
            let attach = arg
                .get("attach_status")
                .and_then(Value::as_str)
                .map(str::to_string);
            run(&state, move |s, _| {
                ops::reset_status(s, &ctx, &id, status.as_deref(), attach.as_deref())
            })
            .await?;
            Ok(reply_empty(mv, StatusCode::ACCEPTED))
        }
        "os-force_detach" => {
            let vol = id.clone();
            let servers = run(&state, move |s, _| ops::force_detach(s, &ctx, &vol)).await?;
            let compute = state.services.compute.clone();
            let calls = crate::services::blocking(move || compute.forget_volume(&id, &servers))
                .await
                .map_err(|e| {
                    CinderError(VolError::Backend(std::io::Error::other(e.to_string())))
                })?;
            crate::compute::servers::link::deliver_later(
                state.services.compute.clone(),
                state.nodes.clone(),
                calls,
            );
            Ok(reply_empty(mv, StatusCode::ACCEPTED))
        }
        other => Err(VolError::BadRequest(format!("There is no such action: {other}")).into()),
    }
}

// ---- metadata ----

#[derive(Deserialize)]
struct MetaBody {
    metadata: Map<String, Value>,
}

async fn get_metadata(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Params,
) -> CResult<axum::Json<Value>> {
    let ctx = ctx_of(caller).await;
    let id = param(&p, "id");
    let m = run(&state, move |s, _| {
        Ok(ops::find_volume(&*s.read()?, &ctx, &id)?.metadata)
    })
    .await?;
    Ok(axum::Json(json!({ "metadata": m })))
}

async fn change_meta(
    state: AppState,
    ctx: VCtx,
    id: String,
    change: MetaChange,
) -> CResult<Map<String, Value>> {
    run(&state, move |s, _| {
        ops::change_metadata(s, &ctx, &id, change)
    })
    .await
}

async fn merge_metadata(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Params,
    bytes: Bytes,
) -> CResult<axum::Json<Value>> {
    let ctx = ctx_of(caller).await;
    let b: MetaBody = serde_json::from_slice(&bytes)
        .map_err(|e| VolError::BadRequest(format!("Malformed request body: {e}")))?;
    let m = change_meta(state, ctx, param(&p, "id"), MetaChange::Merge(b.metadata)).await?;
    Ok(axum::Json(json!({ "metadata": m })))
}

async fn replace_metadata(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Params,
    bytes: Bytes,
) -> CResult<axum::Json<Value>> {
    let ctx = ctx_of(caller).await;
    let b: MetaBody = serde_json::from_slice(&bytes)
        .map_err(|e| VolError::BadRequest(format!("Malformed request body: {e}")))?;
    let m = change_meta(state, ctx, param(&p, "id"), MetaChange::Replace(b.metadata)).await?;
    Ok(axum::Json(json!({ "metadata": m })))
}

async fn get_meta_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Params,
) -> CResult<axum::Json<Value>> {
    let ctx = ctx_of(caller).await;
    let (id, key) = (param(&p, "id"), param(&p, "key"));
    let m = run(&state, move |s, _| {
        Ok(ops::find_volume(&*s.read()?, &ctx, &id)?.metadata)
    })
    .await?;
    let v = m
        .get(&key)
        .cloned()
        .ok_or_else(|| VolError::NotFound(format!("Metadata item {key} was not found.")))?;
    Ok(axum::Json(json!({"meta": { key: v }})))
}

async fn put_meta_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Params,
    bytes: Bytes,
) -> CResult<axum::Json<Value>> {
    let ctx = ctx_of(caller).await;
    let key = param(&p, "key");
    let meta: Map<String, Value> = body(&bytes, "meta")?;
    if meta.len() != 1 || !meta.contains_key(&key) {
        return Err(VolError::BadRequest("Request body and URI mismatch".into()).into());
    }
    change_meta(state, ctx, param(&p, "id"), MetaChange::Merge(meta.clone())).await?;
    Ok(axum::Json(json!({ "meta": meta })))
}

async fn delete_meta_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Params,
) -> CResult<StatusCode> {
    let ctx = ctx_of(caller).await;
    change_meta(
        state,
        ctx,
        param(&p, "id"),
        MetaChange::Delete(param(&p, "key")),
    )
    .await?;
    Ok(StatusCode::OK)
}

// ---- snapshots ----

async fn list_snapshots(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    caller: Caller,
    mv: Microversion,
    q: QueryParams,
) -> CResult<Response> {
    let ctx = ctx_of(caller).await;
    let all = q
        .flag("all_tenants")
        .map_err(|e| VolError::BadRequest(e.to_string()))?
        == Some(true);
    let items = run(&state, move |s, _| {
        Ok(ops::list_snapshots(s, &ctx, all)?
            .iter()
            .map(|x| views::snapshot(x, mv.0))
            .collect::<Vec<_>>())
    })
    .await?;
    let body = page(
        "snapshots",
        &format!("{base}/volume/v3/snapshots"),
        items,
        &q,
        Value::clone,
    )?;
    Ok(reply(mv, StatusCode::OK, body))
}

async fn show_snapshot(
    State(state): State<AppState>,
    caller: Caller,
    mv: Microversion,
    Path(p): Params,
) -> CResult<Response> {
    let ctx = ctx_of(caller).await;
    let id = param(&p, "id");
    let s = run(&state, move |s, _| {
        ops::find_snapshot(&*s.read()?, &ctx, &id)
    })
    .await?;
    Ok(reply(
        mv,
        StatusCode::OK,
        json!({"snapshot": views::snapshot(&s, mv.0)}),
    ))
}

async fn create_snapshot(
    State(state): State<AppState>,
    caller: Caller,
    mv: Microversion,
    bytes: Bytes,
) -> CResult<Response> {
    let ctx = ctx_of(caller).await;
    let b: ops::SnapshotCreate = body(&bytes, "snapshot")?;
    let s = run(&state, move |s, be| ops::create_snapshot(s, be, &ctx, b)).await?;
    Ok(reply(
        mv,
        StatusCode::ACCEPTED,
        json!({"snapshot": views::snapshot(&s, mv.0)}),
    ))
}

async fn update_snapshot(
    State(state): State<AppState>,
    caller: Caller,
    mv: Microversion,
    Path(p): Params,
    bytes: Bytes,
) -> CResult<Response> {
    let ctx = ctx_of(caller).await;
    let b: ops::SnapshotUpdate = body(&bytes, "snapshot")?;
    let id = param(&p, "id");
    let s = run(&state, move |s, _| ops::update_snapshot(s, &ctx, &id, b)).await?;
    Ok(reply(
        mv,
        StatusCode::OK,
        json!({"snapshot": views::snapshot(&s, mv.0)}),
    ))
}

async fn delete_snapshot(
    State(state): State<AppState>,
    caller: Caller,
    mv: Microversion,
    Path(p): Params,
) -> CResult<Response> {
    let ctx = ctx_of(caller).await;
    let id = param(&p, "id");
    run(&state, move |s, b| ops::delete_snapshot(s, b, &ctx, &id)).await?;
    Ok(reply_empty(mv, StatusCode::ACCEPTED))
}

// ---- types ----

async fn list_types(
    State(state): State<AppState>,
    _caller: Caller,
    mv: Microversion,
) -> CResult<Response> {
    let types = run(&state, |s, _| ops::types(s)).await?;
    let list: Vec<Value> = types.iter().map(views::vtype).collect();
    Ok(reply(mv, StatusCode::OK, json!({ "volume_types": list })))
}

async fn default_type(_caller: Caller, mv: Microversion) -> Response {
    reply(
        mv,
        StatusCode::OK,
        json!({"volume_type": views::vtype(&crate::volume::model::default_type())}),
    )
}

async fn show_type(
    State(state): State<AppState>,
    _caller: Caller,
    mv: Microversion,
    Path(p): Params,
) -> CResult<Response> {
    let id = param(&p, "id");
    let t = run(&state, move |s, _| ops::find_type(&*s.read()?, &id)).await?;
    Ok(reply(
        mv,
        StatusCode::OK,
        json!({"volume_type": views::vtype(&t)}),
    ))
}

async fn create_type(
    State(state): State<AppState>,
    caller: Caller,
    mv: Microversion,
    bytes: Bytes,
) -> CResult<Response> {
    let ctx = ctx_of(caller).await;
    let b: ops::TypeCreate = body(&bytes, "volume_type")?;
    let t = run(&state, move |s, _| ops::create_type(s, &ctx, b)).await?;
    Ok(reply(
        mv,
        StatusCode::OK,
        json!({"volume_type": views::vtype(&t)}),
    ))
}

async fn delete_type(
    State(state): State<AppState>,
    caller: Caller,
    mv: Microversion,
    Path(p): Params,
) -> CResult<Response> {
    let ctx = ctx_of(caller).await;
    let id = param(&p, "id");
    run(&state, move |s, _| ops::delete_type(s, &ctx, &id)).await?;
    Ok(reply_empty(mv, StatusCode::ACCEPTED))
}

// ---- limits, quotas, zones ----

async fn limits(State(state): State<AppState>, caller: Caller) -> CResult<axum::Json<Value>> {
    let ctx = ctx_of(caller).await;
    let (lim, used) = run(&state, move |s, _| {
        let r = s.read()?;
        Ok((
            ops::quota_limits(&*r, &ctx.project_id)?,
            ops::usage(&*r, &ctx.project_id)?,
        ))
    })
    .await?;
    let g = |m: &std::collections::BTreeMap<String, i64>, k: &str| m.get(k).copied().unwrap_or(0);
    Ok(axum::Json(json!({"limits": {"rate": [], "absolute": {
        "maxTotalVolumes": g(&lim, "volumes"),
        "maxTotalSnapshots": g(&lim, "snapshots"),
        "maxTotalVolumeGigabytes": g(&lim, "gigabytes"),
        "maxTotalBackups": g(&lim, "backups"),
        "maxTotalBackupGigabytes": g(&lim, "backup_gigabytes"),
        "totalVolumesUsed": g(&used, "volumes"),
        "totalSnapshotsUsed": g(&used, "snapshots"),
        "totalGigabytesUsed": g(&used, "gigabytes"),
        "totalBackupsUsed": 0,
        "totalBackupGigabytesUsed": 0,
    }}})))
}

fn quota_body(
    project: &str,
    lim: &std::collections::BTreeMap<String, i64>,
    used: Option<&std::collections::BTreeMap<String, i64>>,
) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(project));
    for (k, v) in lim {
        let val = match used {
            Some(u) => {
                json!({"limit": v, "in_use": u.get(k).copied().unwrap_or(0), "reserved": 0, "allocated": 0})
            }
            None => json!(v),
        };
        m.insert(k.clone(), val);
    }
    Value::Object(m)
}

async fn show_quota(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Params,
    q: QueryParams,
) -> CResult<axum::Json<Value>> {
    let ctx = ctx_of(caller).await;
    let target = param(&p, "target");
    if !ctx.admin && ctx.project_id != target {
        return Err(VolError::Forbidden(
            "Policy doesn't allow volume_extension:quotas:show to be performed.".into(),
        )
        .into());
    }
    let usage = q
        .flag("usage")
        .map_err(|e| VolError::BadRequest(e.to_string()))?
        == Some(true);
    let t2 = target.clone();
    let (lim, used) = run(&state, move |s, _| {
        let r = s.read()?;
        Ok((ops::quota_limits(&*r, &t2)?, ops::usage(&*r, &t2)?))
    })
    .await?;
    Ok(axum::Json(
        json!({"quota_set": quota_body(&target, &lim, usage.then_some(&used))}),
    ))
}

async fn default_quota(_caller: Caller, Path(p): Params) -> axum::Json<Value> {
    let lim = ops::QUOTA_DEFAULTS
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    axum::Json(json!({"quota_set": quota_body(&param(&p, "target"), &lim, None)}))
}

async fn update_quota(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Params,
    bytes: Bytes,
) -> CResult<axum::Json<Value>> {
    let ctx = ctx_of(caller).await;
    let target = param(&p, "target");
    let b: Map<String, Value> = body(&bytes, "quota_set")?;
    let t2 = target.clone();
    let lim = run(&state, move |s, _| ops::set_quotas(s, &ctx, &t2, &b)).await?;
    let mut v = quota_body(&target, &lim, None);
    if let Value::Object(m) = &mut v {
        m.remove("id");
    }
    Ok(axum::Json(json!({ "quota_set": v })))
}

async fn zones(_caller: Caller) -> axum::Json<Value> {
    axum::Json(
        json!({"availabilityZoneInfo": [{"zoneName": crate::volume::model::AVAILABILITY_ZONE, "zoneState": {"available": true}}]}),
    )
}
