//! `/servers/{id}/os-volume_attachments`: list (limit/offset), attach, show,
//! update (`delete_on_termination` at 2.85, or a volume swap, admin only), detach —
//! with the view of each microversion (tag 2.70, delete_on_termination 2.79,
//! attachment_id/bdm_uuid instead of id 2.89), and
//! [`volumes_attached`] for the server views.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use super::parse::{bad, is_uuid};
use crate::api::extract::{Caller, Json, Path, QueryParams};
use crate::app::AppState;
use crate::compute::servers::attachments::AttachVolume;
use crate::compute::servers::bdm::{Bdm, BdmReq, BdmSource};
use crate::compute::servers::link::deliver_later;
use crate::compute::servers::query::check_tag;
use crate::compute::Who;
use crate::error::{ApiError, ApiResult};
use crate::microversion::Microversion;
use crate::services::blocking;

const A: &str = "/compute/v2.1/servers/{id}/os-volume_attachments";

pub fn router() -> Router<AppState> {
    Router::new().route(A, get(list).post(attach)).route(
        &format!("{A}/{{volume}}"),
        get(show).put(update).delete(detach),
    )
}

/// One attachment as Nova shows it at `mv` (`listing`: list and show, which
/// trade `id` for `attachment_id`/`bdm_uuid` at 2.89).
pub fn view(server_id: &str, b: &Bdm, mv: Microversion, listing: bool) -> Value {
    let mut m = Map::new();
    let new_ids = listing && mv.at_least(89);
    if !new_ids {
        m.insert("id".into(), json!(b.volume_id));
    }
    m.insert("volumeId".into(), json!(b.volume_id));
    m.insert("serverId".into(), json!(server_id));
    m.insert("device".into(), json!(b.device));
    if mv.at_least(70) {
        m.insert("tag".into(), json!(b.tag));
    }
    if mv.at_least(79) {
        m.insert(
            "delete_on_termination".into(),
            json!(b.delete_on_termination),
        );
    }
    if new_ids {
        m.insert("attachment_id".into(), json!(b.attachment_id));
        m.insert("bdm_uuid".into(), json!(b.id));
    }
    Value::Object(m)
}

fn query_int(q: &QueryParams, k: &str) -> ApiResult<Option<usize>> {
    match q.get(k) {
        None => Ok(None),
        Some(v) => v.parse::<usize>().map(Some).map_err(|_| {
            ApiError::BadRequest(format!(
                "Invalid input for query parameters {k}. Value: {v}. '{v}' does not match '^[0-9]*$'"
            ))
        }),
    }
}

async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path(id): Path<String>,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    let limit = query_int(&q, "limit")?;
    let offset = query_int(&q, "offset")?.unwrap_or(0);
    let s = state.services.compute.server(&Who::of(&caller), &id)?;
    let items: Vec<Value> = s
        .bdms
        .iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .map(|b| view(&s.id, b, mv, true))
        .collect();
    Ok(axum::Json(json!({"volumeAttachments": items})))
}

fn body_of(body: &Map<String, Value>) -> ApiResult<&Map<String, Value>> {
    match body.get("volumeAttachment") {
        Some(Value::Object(o)) => Ok(o),
        Some(v) => Err(bad(
            "volumeAttachment",
            &format!("{v}. {v} is not of type 'object'"),
        )),
        None => Err(bad(
            "volumeAttachment",
            "'volumeAttachment' is a required property",
        )),
    }
}

fn volume_id(o: &Map<String, Value>) -> ApiResult<String> {
    match o.get("volumeId") {
        Some(Value::String(v)) if is_uuid(v) => Ok(v.clone()),
        Some(v) => Err(bad("volumeId", &format!("{v}. {v} is not a 'uuid'"))),
        None => Err(bad("volumeAttachment", "'volumeId' is a required property")),
    }
}

fn parse_attach(body: &Map<String, Value>, mv: Microversion) -> ApiResult<AttachVolume> {
    let o = body_of(body)?;
    for k in o.keys() {
        let ok = matches!(k.as_str(), "volumeId" | "device")
            || (k == "tag" && mv.at_least(49))
            || (k == "delete_on_termination" && mv.at_least(79));
        if !ok {
            return Err(bad(
                "volumeAttachment",
                &format!("Additional properties are not allowed ('{k}' was unexpected)"),
            ));
        }
    }
    let device = match o.get("device") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => Some(d.clone()),
        Some(v) => return Err(bad("device", &format!("{v}. {v} is not of type 'string'"))),
    };
    let tag = match o.get("tag") {
        None => None,
        Some(Value::String(t)) => {
            check_tag(t)?;
            Some(t.clone())
        }
        Some(v) => return Err(bad("tag", &format!("{v}. {v} is not of type 'string'"))),
    };
    let delete_on_termination = match o.get("delete_on_termination") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(bad(
                "delete_on_termination",
                &format!("{v}. {v} is not of type 'boolean'"),
            ))
        }
    };
    Ok(AttachVolume {
        volume_id: volume_id(o)?,
        device,
        tag,
        delete_on_termination,
        multiattach_ok: mv.at_least(60),
    })
}

async fn attach(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path(id): Path<String>,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<axum::Json<Value>> {
    let req = parse_attach(&body, mv)?;
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    let (s, b, calls) = blocking(move || compute.attach_volume(&who, &id, req)).await?;
    deliver_later(state.services.compute.clone(), state.nodes.clone(), calls);
    Ok(axum::Json(
        json!({"volumeAttachment": view(&s.id, &b, mv, false)}),
    ))
}

async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path((id, volume)): Path<(String, String)>,
) -> ApiResult<axum::Json<Value>> {
    let (s, b) = state
        .services
        .compute
        .volume_attachment(&Who::of(&caller), &id, &volume)?;
    Ok(axum::Json(
        json!({"volumeAttachment": view(&s.id, &b, mv, true)}),
    ))
}

async fn update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path((id, volume)): Path<(String, String)>,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<StatusCode> {
    let o = body_of(&body)?;
    let who = Who::of(&caller);
    for k in o.keys() {
        let ok = k == "volumeId"
            || (mv.at_least(85)
                && matches!(
                    k.as_str(),
                    "device" | "tag" | "delete_on_termination" | "serverId" | "id"
                ));
        if !ok {
            return Err(bad(
                "volumeAttachment",
                &format!("Additional properties are not allowed ('{k}' was unexpected)"),
            ));
        }
    }
    let new_volume = volume_id(o)?;
    if new_volume != volume && !who.admin {
        return Err(ApiError::Forbidden(
            "Policy doesn't allow os_compute_api:os-volumes-attachments:swap to be performed."
                .into(),
        ));
    }
    if new_volume == volume && !mv.at_least(85) {
        return Err(ApiError::BadRequest(format!(
            "Invalid volume: The new volume {new_volume} is the volume already attached; updating an attachment needs microversion 2.85."
        )));
    }
    let dot = match o.get("delete_on_termination") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(v) => {
            return Err(bad(
                "delete_on_termination",
                &format!("{v}. {v} is not of type 'boolean'"),
            ))
        }
    };
    let compute = state.services.compute.clone();
    let calls =
        blocking(move || compute.update_volume_attachment(&who, &id, &volume, &new_volume, dot))
            .await?;
    deliver_later(state.services.compute.clone(), state.nodes.clone(), calls);
    Ok(StatusCode::ACCEPTED)
}

async fn detach(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, volume)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    let calls = blocking(move || compute.detach_volume(&who, &id, &volume)).await?;
    deliver_later(state.services.compute.clone(), state.nodes.clone(), calls);
    Ok(StatusCode::ACCEPTED)
}

/// An integer Nova's schema also takes as a string (`"0"`).
fn int_of(b: &Map<String, Value>, k: &str) -> ApiResult<Option<i64>> {
    match b.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| bad(k, &format!("{n}. {n} is not of type 'integer'"))),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| bad(k, &format!("{s}. '{s}' is not of type 'integer'"))),
        Some(v) => Err(bad(k, &format!("{v}. {v} is not of type 'integer'"))),
    }
}

fn bool_of(b: &Map<String, Value>, k: &str) -> ApiResult<bool> {
    match b.get(k) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(x)) => Ok(*x),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "t" | "y" => Ok(true),
            "false" | "0" | "no" | "off" | "f" | "n" => Ok(false),
            _ => Err(bad(k, &format!("{s}. '{s}' is not of type 'boolean'"))),
        },
        Some(v) => Err(bad(k, &format!("{v}. {v} is not of type 'boolean'"))),
    }
}

/// The volume entries of `block_device_mapping_v2` (local image disks give
/// none; snapshots and local blank disks answer 501). An image's data file is
/// filled in by the caller.
pub(super) fn block_devices(list: &[Value]) -> ApiResult<Vec<BdmReq>> {
    let mut out = Vec::new();
    for item in list {
        let Value::Object(b) = item else {
            return Err(bad(
                "block_device_mapping_v2",
                &format!("{item}. {item} is not of type 'object'"),
            ));
        };
        let text = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or_default();
        let (source, dest) = (text("source_type"), text("destination_type"));
        let dest = if dest.is_empty() { "volume" } else { dest };
        let uuid = match b.get("uuid") {
            None | Some(Value::Null) => None,
            Some(Value::String(u)) if is_uuid(u) => Some(u.clone()),
            Some(v) => return Err(bad("uuid", &format!("{v}. {v} is not a 'uuid'"))),
        };
        let size_gb = int_of(b, "volume_size")?;
        if size_gb.is_some_and(|n| n < 0) {
            return Err(bad("volume_size", "volume_size must not be negative"));
        }
        let src = match (source, dest) {
            ("image", "local") => continue,
            ("volume", "volume") => BdmSource::Volume(uuid.clone().ok_or_else(|| {
                ApiError::BadRequest("Block Device Mapping is Invalid: Missing device UUID.".into())
            })?),
            ("image", "volume") => BdmSource::Image {
                id: uuid.clone().ok_or_else(|| {
                    ApiError::BadRequest(
                        "Block Device Mapping is Invalid: Missing device UUID.".into(),
                    )
                })?,
                path: std::path::PathBuf::new(),
            },
            ("blank", "volume") => BdmSource::Blank,
            ("snapshot", _) | ("blank", "local") => {
                return Err(ApiError::NotImplemented(
                    "Block device mappings from snapshots and local ephemeral/swap disks are not implemented in kiln."
                        .into(),
                ))
            }
            (s, d) => {
                return Err(ApiError::BadRequest(format!(
                    "Block Device Mapping is Invalid: source_type '{s}' with destination_type '{d}' is not a valid combination."
                )))
            }
        };
        let device = b
            .get("device_name")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
            .map(|d| {
                if d.starts_with("/dev/") {
                    d.to_string()
                } else {
                    format!("/dev/{d}")
                }
            });
        out.push(BdmReq {
            source: src,
            size_gb: size_gb.map(|n| n as u64),
            boot_index: int_of(b, "boot_index")?,
            delete_on_termination: bool_of(b, "delete_on_termination")?,
            device,
            tag: b.get("tag").and_then(Value::as_str).map(str::to_string),
        });
    }
    if out.iter().filter(|b| b.boot_index == Some(0)).count() > 1 {
        return Err(ApiError::BadRequest(
            "Block Device Mapping is Invalid: Boot sequence for the instance and image/block device mapping combination is not valid.".into(),
        ));
    }
    Ok(out)
}
