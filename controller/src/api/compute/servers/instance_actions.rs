//! `os-instance-actions`: a server's actions newest first and one action with
//! its events; from 2.58 the list pages (`limit`, `marker` = a request id,
//! `changes-since`; `changes-before` from 2.66) and answers `links`.

use axum::extract::State;
use serde_json::{json, Value};

use super::views;
use crate::api::extract::{BaseUrl, Caller, Path, QueryParams};
use crate::app::AppState;
use crate::clock::parse_rfc3339;
use crate::compute::servers::query::MAX_LIMIT;
use crate::compute::Who;
use crate::error::{ApiError, ApiResult};
use crate::microversion::Microversion;

/// The paging of the list (2.58, `changes-before` 2.66).
#[derive(Debug, Default)]
struct Paging {
    limit: Option<usize>,
    marker: Option<String>,
    since: Option<i64>,
    before: Option<i64>,
}

fn time(q: &QueryParams, key: &str) -> ApiResult<Option<i64>> {
    match q.get(key) {
        Some(t) => parse_rfc3339(t).map(Some).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Invalid input for query parameters {key}. Value: {t}. '{t}' is not a 'date-time'"
            ))
        }),
        None => Ok(None),
    }
}

fn paging(q: &QueryParams, mv: Microversion) -> ApiResult<Paging> {
    if !mv.at_least(58) {
        return Ok(Paging::default());
    }
    let limit = match q.get("limit") {
        Some(l) => Some(l.parse::<usize>().map_err(|_| {
            ApiError::BadRequest(format!(
                "Invalid input for query parameters limit. Value: {l}. '{l}' does not match '^[0-9]*$'"
            ))
        })?),
        None => None,
    };
    let since = time(q, "changes-since")?;
    let before = if mv.at_least(66) {
        time(q, "changes-before")?
    } else {
        None
    };
    if let (Some(a), Some(b)) = (since, before) {
        if a > b {
            return Err(ApiError::BadRequest(
                "The value of changes-since must be less than or equal to changes-before.".into(),
            ));
        }
    }
    Ok(Paging {
        limit,
        marker: q.get("marker").map(str::to_string),
        since,
        before,
    })
}

pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    BaseUrl(base): BaseUrl,
    mv: Microversion,
    Path(id): Path<String>,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    let p = paging(&q, mv)?;
    let who = Who::of(&caller);
    let s = state.services.compute.server(&who, &id)?;
    let mut all: Vec<_> = s
        .actions
        .iter()
        .rev()
        .filter(|a| {
            let t = views::action_updated(a);
            p.since.is_none_or(|since| t >= since) && p.before.is_none_or(|before| t <= before)
        })
        .collect();
    if let Some(m) = &p.marker {
        let at = all
            .iter()
            .position(|a| a.request_id == *m)
            .ok_or_else(|| ApiError::BadRequest(format!("Marker {m} could not be found.")))?;
        all.drain(..=at);
    }
    let limit = p.limit.unwrap_or(MAX_LIMIT).min(MAX_LIMIT);
    all.truncate(limit);
    let list: Vec<Value> = all
        .iter()
        .map(|a| views::action(&s, a, false, &who, mv))
        .collect();
    let mut out = json!({"instanceActions": list});
    if mv.at_least(58) {
        let ids: Vec<String> = all.iter().map(|a| a.request_id.clone()).collect();
        let path = format!("servers/{}/os-instance-actions", s.id);
        if let Some(l) = super::next_link(&base, &path, &q, &ids, p.limit) {
            out["links"] = l;
        }
    }
    Ok(axum::Json(out))
}

pub async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mv: Microversion,
    Path((id, req)): Path<(String, String)>,
) -> ApiResult<axum::Json<Value>> {
    let who = Who::of(&caller);
    let s = state.services.compute.server(&who, &id)?;
    let a = s
        .actions
        .iter()
        .find(|a| a.request_id == req)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "Action for request_id {req} on instance {id} not found"
            ))
        })?;
    Ok(axum::Json(
        json!({"instanceAction": views::action(&s, a, true, &who, mv)}),
    ))
}
