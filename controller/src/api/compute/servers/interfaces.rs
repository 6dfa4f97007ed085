//! `/servers/{id}/os-interface`: list, attach (a port, or a network with an
//! optional fixed IP), show, detach — Nova's view (tag at 2.70).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use super::parse::{bad, is_uuid};
use crate::api::extract::{Caller, Json, Path};
use crate::app::AppState;
use crate::compute::servers::interfaces::AttachPort;
use crate::compute::servers::link::deliver_later;
use crate::compute::servers::model::Server;
use crate::compute::servers::query::check_tag;
use crate::compute::Who;
use crate::error::{ApiError, ApiResult};
use crate::microversion::Microversion;
use crate::network::model::Port;
use crate::services::blocking;

const I: &str = "/compute/v2.1/servers/{id}/os-interface";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(I, get(list).post(attach))
        .route(&format!("{I}/{{port}}"), get(show).delete(detach))
}

/// One attached port as Nova shows it.
pub fn view(s: Option<&Server>, p: &Port, mv: Microversion) -> Value {
    let mut v = json!({
        "fixed_ips": p.fixed_ips.iter().map(|f| json!({"ip_address": f.ip_address, "subnet_id": f.subnet_id})).collect::<Vec<_>>(),
        "mac_addr": p.mac_address,
        "net_id": p.network_id,
        "port_id": p.id,
        "port_state": p.status,
    });
    if mv.at_least(70) {
        let tag = s
            .and_then(|s| s.vifs.iter().find(|v| v.port_id == p.id))
            .and_then(|v| v.tag.clone());
        v["tag"] = json!(tag);
    }
    v
}

async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let (s, ports) = state.services.compute.interfaces(&Who::of(&caller), &id)?;
    let items: Vec<Value> = ports.iter().map(|p| view(Some(&s), p, mv)).collect();
    Ok(axum::Json(json!({"interfaceAttachments": items})))
}

fn uuid_field(o: &Map<String, Value>, k: &str) -> ApiResult<Option<String>> {
    match o.get(k) {
        None => Ok(None),
        Some(Value::String(v)) if is_uuid(v) => Ok(Some(v.clone())),
        Some(v) => Err(bad(k, &format!("{v}. {v} is not a 'uuid'"))),
    }
}

fn parse_attach(body: &Map<String, Value>, mv: Microversion) -> ApiResult<AttachPort> {
    let o = match body.get("interfaceAttachment") {
        None => return Ok(AttachPort::default()),
        Some(Value::Object(o)) => o,
        Some(v) => {
            return Err(bad(
                "interfaceAttachment",
                &format!("{v}. {v} is not of type 'object'"),
            ))
        }
    };
    for k in o.keys() {
        let ok = matches!(k.as_str(), "port_id" | "net_id" | "fixed_ips")
            || (k == "tag" && mv.at_least(49));
        if !ok {
            return Err(bad(
                "interfaceAttachment",
                &format!("Additional properties are not allowed ('{k}' was unexpected)"),
            ));
        }
    }
    let port_id = uuid_field(o, "port_id")?;
    let net_id = uuid_field(o, "net_id")?;
    let fixed_ip = match o.get("fixed_ips") {
        None => None,
        Some(Value::Array(a)) if a.len() <= 1 => match a.first() {
            None => None,
            Some(f) => match f.get("ip_address").and_then(Value::as_str) {
                Some(ip) if ip.parse::<std::net::IpAddr>().is_ok() => Some(ip.to_string()),
                _ => {
                    return Err(bad(
                        "fixed_ips",
                        &format!("{f}. 'ip_address' must be an IP address"),
                    ))
                }
            },
        },
        Some(v) => {
            return Err(bad(
                "fixed_ips",
                &format!("{v}. {v} is not a list of at most one fixed IP"),
            ))
        }
    };
    let tag = match o.get("tag") {
        None => None,
        Some(Value::String(t)) => {
            check_tag(t)?;
            Some(t.clone())
        }
        Some(v) => return Err(bad("tag", &format!("{v}. {v} is not of type 'string'"))),
    };
    if port_id.is_some() && net_id.is_some() {
        return Err(ApiError::BadRequest(
            "Must not input both network_id and port_id".into(),
        ));
    }
    if fixed_ip.is_some() && net_id.is_none() {
        return Err(ApiError::BadRequest(
            "Must input network_id when request IP address".into(),
        ));
    }
    Ok(AttachPort {
        port_id,
        net_id,
        fixed_ip,
        tag,
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
    let tag = req.tag.clone();
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    let (port, calls) = blocking(move || compute.attach_interface(&who, &id, req)).await?;
    deliver_later(state.services.compute.clone(), state.nodes.clone(), calls);
    let mut v = view(None, &port, mv);
    if mv.at_least(70) {
        v["tag"] = json!(tag);
    }
    Ok(axum::Json(json!({"interfaceAttachment": v})))
}

async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path((id, port)): Path<(String, String)>,
) -> ApiResult<axum::Json<Value>> {
    let who = Who::of(&caller);
    let s = state.services.compute.server(&who, &id)?;
    let p = state.services.compute.interface(&who, &id, &port)?;
    Ok(axum::Json(
        json!({"interfaceAttachment": view(Some(&s), &p, mv)}),
    ))
}

async fn detach(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, port)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let who = Who::of(&caller);
    let compute = state.services.compute.clone();
    let calls = blocking(move || compute.detach_interface(&who, &id, &port)).await?;
    deliver_later(state.services.compute.clone(), state.nodes.clone(), calls);
    Ok(StatusCode::ACCEPTED)
}
