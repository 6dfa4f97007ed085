//! `/os-hypervisors`: list and detail (`?with_servers`, `?hypervisor_hostname_pattern`
//! from 2.53; `limit`/`marker` from 2.33), show (with `uptime` from 2.88),
//! statistics and `/{id}/uptime` (both gone at 2.88), and the 2.1 search and
//! servers forms (gone at 2.53). The capacity fields disappear at 2.88.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::api::extract::{BaseUrl, Caller, Path, QueryParams};
use crate::app::AppState;
use crate::compute::services::ServiceView;
use crate::compute::usage::ServerRef;
use crate::compute::Who;
use crate::error::{ApiError, ApiResult};
use crate::microversion::Microversion;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/compute/v2.1/os-hypervisors", get(list))
        .route("/compute/v2.1/os-hypervisors/detail", get(detail))
        .route("/compute/v2.1/os-hypervisors/statistics", get(statistics))
        .route("/compute/v2.1/os-hypervisors/{id}", get(show))
        .route("/compute/v2.1/os-hypervisors/{id}/uptime", get(uptime))
        .route("/compute/v2.1/os-hypervisors/{id}/search", get(search))
        .route("/compute/v2.1/os-hypervisors/{id}/servers", get(servers))
}

/// The hypervisor type kiln reports (its own VMM).
pub const HYPERVISOR_TYPE: &str = "kiln";
pub const HYPERVISOR_VERSION: u64 = 1000;

/// The host's uptime line, as `uptime` prints it (from `/proc/uptime`).
fn uptime_text() -> String {
    let secs = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0) as u64;
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|| "0.00, 0.00, 0.00".into());
    format!(
        " up {} days, {:02}:{:02},  0 users,  load average: {load}",
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60
    )
}

fn short(s: &ServiceView, mv: Microversion) -> Value {
    let r = &s.record;
    json!({
        "id": if mv.at_least(53) { json!(r.hv_uuid) } else { json!(r.hv_num) },
        "hypervisor_hostname": r.host,
        "state": if s.up { "up" } else { "down" },
        "status": if r.disabled { "disabled" } else { "enabled" },
    })
}

fn full(s: &ServiceView, mv: Microversion, running: usize) -> Value {
    let mut v = short(s, mv);
    let r = &s.record;
    v["hypervisor_type"] = json!(HYPERVISOR_TYPE);
    v["hypervisor_version"] = json!(HYPERVISOR_VERSION);
    v["host_ip"] = json!("127.0.0.1");
    v["service"] = json!({
        "host": r.host,
        "id": if mv.at_least(53) { json!(r.uuid) } else { json!(r.num) },
        "disabled_reason": r.disabled_reason,
    });
    let vcpus = s.node.as_ref().map_or(0, |n| n.vcpus);
    let cpu = json!({"arch": std::env::consts::ARCH, "model": "host", "vendor": "kiln",
        "features": [], "topology": {"cells": 1, "sockets": 1, "cores": vcpus, "threads": 1}});
    v["cpu_info"] = if mv.at_least(28) {
        cpu
    } else {
        json!(cpu.to_string())
    };
    if !mv.at_least(88) {
        if let Some(n) = &s.node {
            v["vcpus"] = json!(n.vcpus);
            v["memory_mb"] = json!(n.ram_mb);
            v["local_gb"] = json!(n.disk_gb);
            v["vcpus_used"] = json!(n.used_vcpus);
            v["memory_mb_used"] = json!(n.used_ram_mb);
            v["local_gb_used"] = json!(n.used_disk_gb);
            v["free_ram_mb"] = json!(n.ram_mb as i64 - n.used_ram_mb as i64);
            v["free_disk_gb"] = json!(n.disk_gb as i64 - n.used_disk_gb as i64);
            v["current_workload"] = json!(0);
            v["running_vms"] = json!(running);
            v["disk_available_least"] = json!(n.disk_gb as i64 - n.used_disk_gb as i64);
        }
    }
    v
}

fn with_servers_list(v: &mut Value, servers: &[ServerRef], asked: bool, mv: Microversion) {
    if !servers.is_empty() {
        v["servers"] = servers
            .iter()
            .map(|s| json!({"name": s.name, "uuid": s.uuid}))
            .collect();
    } else if asked && mv.at_least(75) {
        v["servers"] = json!([]);
    }
}

/// Shared by list and detail: filters, pagination and `with_servers`.
fn listing(
    state: &AppState,
    base: &str,
    who: &Who,
    mv: Microversion,
    q: &QueryParams,
    detail: bool,
) -> ApiResult<Value> {
    let compute = &state.services.compute;
    let mut all = compute.hypervisors(who)?;
    let with_servers = if mv.at_least(53) {
        q.flag("with_servers")
            .map_err(|e| ApiError::BadRequest(e.to_string()))?
            .unwrap_or(false)
    } else {
        false
    };
    if mv.at_least(53) {
        if let Some(p) = q.get("hypervisor_hostname_pattern") {
            all.retain(|s| s.record.host.contains(p));
            if all.is_empty() {
                return Err(ApiError::NotFound(format!(
                    "No hypervisor matching '{p}' could be found."
                )));
            }
        }
    }
    let mut links = None;
    if mv.at_least(33) {
        if let Some(m) = q.get("marker") {
            let pos = all
                .iter()
                .position(|s| {
                    if mv.at_least(53) {
                        s.record.hv_uuid == m
                    } else {
                        s.record.hv_num.to_string() == m
                    }
                })
                .ok_or_else(|| ApiError::BadRequest(format!("marker [{m}] not found")))?;
            all.drain(..=pos);
        }
        if let Some(l) = q.get("limit") {
            let l: usize = l
                .parse()
                .map_err(|_| ApiError::BadRequest(format!("Invalid limit [{l}]")))?;
            if all.len() > l {
                all.truncate(l);
            }
            if l > 0 && all.len() == l {
                if let Some(last) = all.last() {
                    let id = short(last, mv)["id"].clone();
                    let id = id.as_str().map(str::to_string).unwrap_or(id.to_string());
                    let path = if detail {
                        "os-hypervisors/detail"
                    } else {
                        "os-hypervisors"
                    };
                    links = Some(json!([{"rel": "next",
                        "href": format!("{base}/compute/v2.1/{path}?limit={l}&marker={id}")}]));
                }
            }
        }
    }
    let dir = compute.directory();
    let mut items = Vec::new();
    for s in &all {
        let servers = match &s.node {
            Some(n) => dir.servers_on_node(&n.id)?,
            None => Vec::new(),
        };
        let mut v = if detail {
            full(s, mv, servers.len())
        } else {
            short(s, mv)
        };
        with_servers_list(
            &mut v,
            if with_servers { &servers } else { &[] },
            with_servers,
            mv,
        );
        items.push(v);
    }
    let mut out = json!({"hypervisors": items});
    if let Some(l) = links {
        out["hypervisors_links"] = l;
    }
    Ok(out)
}

async fn list(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    mv: Microversion,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(listing(
        &state,
        &base,
        &Who::of(&caller),
        mv,
        &q,
        false,
    )?))
}

async fn detail(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    mv: Microversion,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(listing(
        &state,
        &base,
        &Who::of(&caller),
        mv,
        &q,
        true,
    )?))
}

async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path(id): Path<String>,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    let compute = &state.services.compute;
    let s = compute.hypervisor(&Who::of(&caller), &id, mv.at_least(53))?;
    let with_servers = mv.at_least(53)
        && q.flag("with_servers")
            .map_err(|e| ApiError::BadRequest(e.to_string()))?
            .unwrap_or(false);
    let servers = match &s.node {
        Some(n) => compute.directory().servers_on_node(&n.id)?,
        None => Vec::new(),
    };
    let mut v = full(&s, mv, servers.len());
    with_servers_list(
        &mut v,
        if with_servers { &servers } else { &[] },
        with_servers,
        mv,
    );
    if mv.at_least(88) {
        v["uptime"] = json!(uptime_text());
    }
    Ok(axum::Json(json!({"hypervisor": v})))
}

fn gone() -> ApiError {
    ApiError::NotFound("The resource could not be found.".into())
}

async fn uptime(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    if mv.at_least(88) {
        return Err(gone());
    }
    let s = state
        .services
        .compute
        .hypervisor(&Who::of(&caller), &id, mv.at_least(53))?;
    let mut v = short(&s, mv);
    v["uptime"] = json!(uptime_text());
    Ok(axum::Json(json!({"hypervisor": v})))
}

async fn statistics(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
) -> ApiResult<axum::Json<Value>> {
    if mv.at_least(88) {
        return Err(gone());
    }
    let compute = &state.services.compute;
    let all = compute.hypervisors(&Who::of(&caller))?;
    let dir = compute.directory();
    let (mut vc, mut vu, mut mm, mut mu, mut lg, mut lu, mut run) = (0u64, 0, 0, 0, 0, 0, 0usize);
    for s in &all {
        if let Some(n) = &s.node {
            vc += n.vcpus;
            vu += n.used_vcpus;
            mm += n.ram_mb;
            mu += n.used_ram_mb;
            lg += n.disk_gb;
            lu += n.used_disk_gb;
            run += dir.servers_on_node(&n.id)?.len();
        }
    }
    Ok(axum::Json(json!({"hypervisor_statistics": {
        "count": all.len(),
        "current_workload": 0,
        "disk_available_least": lg as i64 - lu as i64,
        "free_disk_gb": lg as i64 - lu as i64,
        "free_ram_mb": mm as i64 - mu as i64,
        "local_gb": lg,
        "local_gb_used": lu,
        "memory_mb": mm,
        "memory_mb_used": mu,
        "running_vms": run,
        "vcpus": vc,
        "vcpus_used": vu,
    }})))
}

/// 2.1–2.52: hypervisors whose host name contains `pattern`.
fn matching(state: &AppState, who: &Who, pattern: &str) -> ApiResult<Vec<ServiceView>> {
    let all: Vec<ServiceView> = state
        .services
        .compute
        .hypervisors(who)?
        .into_iter()
        .filter(|s| s.record.host.contains(pattern))
        .collect();
    if all.is_empty() {
        return Err(ApiError::NotFound(format!(
            "No hypervisor matching '{pattern}' could be found."
        )));
    }
    Ok(all)
}

async fn search(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path(pattern): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    if mv.at_least(53) {
        return Err(gone());
    }
    let items: Vec<Value> = matching(&state, &Who::of(&caller), &pattern)?
        .iter()
        .map(|s| short(s, mv))
        .collect();
    Ok(axum::Json(json!({"hypervisors": items})))
}

async fn servers(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path(pattern): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    if mv.at_least(53) {
        return Err(gone());
    }
    let dir = state.services.compute.directory();
    let mut items = Vec::new();
    for s in matching(&state, &Who::of(&caller), &pattern)? {
        let mut v = short(&s, mv);
        let list = match &s.node {
            Some(n) => dir.servers_on_node(&n.id)?,
            None => Vec::new(),
        };
        with_servers_list(&mut v, &list, false, mv);
        items.push(v);
    }
    Ok(axum::Json(json!({"hypervisors": items})))
}
