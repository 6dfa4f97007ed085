//! `/os-simple-tenant-usage`: every project's usage over `[start, end)` (admin),
//! one project's usage; `detailed=1` adds `server_usages` to the list; `limit` /
//! `marker` (instance ids) from 2.40 with `tenant_usages_links`.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use time::macros::format_description;
use time::PrimitiveDateTime;

use super::views::nova_time;
use crate::api::extract::{BaseUrl, Caller, Path, QueryParams};
use crate::app::AppState;
use crate::clock::now_micros;
use crate::compute::usage::{ServerUsage, TenantUsage};
use crate::compute::Who;
use crate::error::{ApiError, ApiResult};
use crate::microversion::Microversion;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/compute/v2.1/os-simple-tenant-usage", get(list))
        .route("/compute/v2.1/os-simple-tenant-usage/{project}", get(show))
}

/// Nova's accepted spellings: `YYYY-MM-DDTHH:MM:SS[.ffffff]` or with a space.
fn parse_time(v: &str) -> ApiResult<i64> {
    let v = v.trim().replace(' ', "T");
    let with_frac =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond]");
    let plain = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let t = PrimitiveDateTime::parse(&v, &with_frac)
        .or_else(|_| PrimitiveDateTime::parse(&v, &plain))
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "Invalid start time. The start time {v} is not in a valid format."
            ))
        })?;
    Ok((t.assume_utc().unix_timestamp_nanos() / 1000) as i64)
}

fn window(q: &QueryParams) -> ApiResult<(i64, i64)> {
    let now = now_micros();
    let start = q.get("start").map(parse_time).transpose()?.unwrap_or(now);
    let end = q.get("end").map(parse_time).transpose()?.unwrap_or(now + 1);
    if start >= end {
        return Err(ApiError::BadRequest(
            "Invalid start time. The start time cannot occur after the end time.".into(),
        ));
    }
    Ok((start, end))
}

fn server_view(s: &ServerUsage) -> Value {
    let r = &s.record;
    json!({
        "instance_id": r.instance_id,
        "name": r.name,
        "tenant_id": r.tenant_id,
        "flavor": r.flavor,
        "vcpus": r.vcpus,
        "memory_mb": r.memory_mb,
        "local_gb": r.local_gb,
        "hours": s.hours,
        "started_at": nova_time(r.started_at),
        "ended_at": r.ended_at.map(nova_time),
        "state": r.state,
        "uptime": s.uptime_secs,
    })
}

fn tenant_view(t: &TenantUsage, start: i64, end: i64, detailed: bool) -> Value {
    let mut v = json!({
        "tenant_id": t.tenant_id,
        "start": nova_time(start),
        "stop": nova_time(end),
        "total_hours": t.total_hours,
        "total_vcpus_usage": t.total_vcpus_usage,
        "total_memory_mb_usage": t.total_memory_mb_usage,
        "total_local_gb_usage": t.total_local_gb_usage,
    });
    if detailed {
        v["server_usages"] = t.servers.iter().map(server_view).collect();
    }
    v
}

/// 2.40's paging over server records (ordered as summarised): drops through the
/// marker, keeps `limit`, and says which instance id the next page starts after.
fn page(
    usages: &mut Vec<TenantUsage>,
    q: &QueryParams,
    mv: Microversion,
) -> ApiResult<Option<(usize, String)>> {
    if !mv.at_least(40) {
        return Ok(None);
    }
    let mut flat: Vec<(usize, ServerUsage)> = Vec::new();
    for (i, t) in usages.iter_mut().enumerate() {
        for s in t.servers.drain(..) {
            flat.push((i, s));
        }
    }
    if let Some(m) = q.get("marker") {
        let pos = flat
            .iter()
            .position(|(_, s)| s.record.instance_id == m)
            .ok_or_else(|| ApiError::BadRequest(format!("Marker {m} could not be found.")))?;
        flat.drain(..=pos);
    }
    let mut next = None;
    if let Some(l) = q.get("limit") {
        let l: usize = l
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("Invalid limit [{l}]")))?;
        flat.truncate(l);
        if l > 0 && flat.len() == l {
            next = flat.last().map(|(_, s)| (l, s.record.instance_id.clone()));
        }
    }
    for t in usages.iter_mut() {
        t.total_hours = 0.0;
        t.total_vcpus_usage = 0.0;
        t.total_memory_mb_usage = 0.0;
        t.total_local_gb_usage = 0.0;
    }
    for (i, s) in flat {
        let t = &mut usages[i];
        t.total_hours += s.hours;
        t.total_vcpus_usage += s.hours * s.record.vcpus as f64;
        t.total_memory_mb_usage += s.hours * s.record.memory_mb as f64;
        t.total_local_gb_usage += s.hours * s.record.local_gb as f64;
        t.servers.push(s);
    }
    usages.retain(|t| !t.servers.is_empty());
    Ok(next)
}

fn link(base: &str, path: &str, q: &QueryParams, next: &(usize, String)) -> Value {
    let mut href = format!(
        "{base}/compute/v2.1/{path}?limit={}&marker={}",
        next.0, next.1
    );
    for k in ["start", "end", "detailed"] {
        if let Some(v) = q.get(k) {
            href.push_str(&format!("&{k}={v}"));
        }
    }
    json!([{"rel": "next", "href": href}])
}

async fn list(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    mv: Microversion,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    let (start, end) = window(&q)?;
    let detailed = matches!(q.get("detailed"), Some("1" | "true" | "True"));
    let mut usages =
        state
            .services
            .compute
            .tenant_usages(&Who::of(&caller), start, end, now_micros())?;
    let next = page(&mut usages, &q, mv)?;
    let items: Vec<Value> = usages
        .iter()
        .map(|t| tenant_view(t, start, end, detailed))
        .collect();
    let mut out = json!({"tenant_usages": items});
    if let Some(n) = next {
        out["tenant_usages_links"] = link(&base, "os-simple-tenant-usage", &q, &n);
    }
    Ok(axum::Json(out))
}

async fn show(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    mv: Microversion,
    Path(project): Path<String>,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    let (start, end) = window(&q)?;
    let mut usages: Vec<TenantUsage> = state
        .services
        .compute
        .tenant_usage(&Who::of(&caller), &project, start, end, now_micros())?
        .into_iter()
        .collect();
    let next = page(&mut usages, &q, mv)?;
    let body = usages
        .first()
        .map(|t| tenant_view(t, start, end, true))
        .unwrap_or_else(|| json!({}));
    let mut out = json!({"tenant_usage": body});
    if let Some(n) = next {
        out["tenant_usage_links"] =
            link(&base, &format!("os-simple-tenant-usage/{project}"), &q, &n);
    }
    Ok(axum::Json(out))
}
