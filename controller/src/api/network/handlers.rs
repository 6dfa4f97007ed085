//! Handlers every Neutron resource shares: list (with the query language),
//! show (with `fields`), and the tag sub-resource.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::query::{collection, trim, NQuery};
use super::{blocking, NJson, NResult, NetCaller};
use crate::api::extract::{BaseUrl, Path};
use crate::app::AppState;
use crate::network::model::{view, Record, SecurityGroup};
use crate::network::ops::{self, TagChange};
use crate::network::{secgroups, tables, Ctx, NetResult};
use crate::store::Store;

/// The URL path segment of a collection (`security-groups`).
pub fn segment<R: Record>() -> String {
    R::COLLECTION.replace('_', "-")
}

/// The views of every visible record (security groups carry their rules).
pub fn views<R: Record>(store: &dyn Store, ctx: &Ctx) -> NetResult<Vec<Value>> {
    if R::MEMBER == "security_group" {
        secgroups::ensure_default_for(store, ctx)?;
    }
    let list: Vec<R> = ops::list(store, ctx)?;
    let mut out: Vec<Value> = list.iter().map(view).collect();
    if R::MEMBER == "security_group" {
        let r = store.read()?;
        let rules = tables::SG_RULES.values(&*r)?;
        for v in &mut out {
            let id = v["id"].clone();
            v["security_group_rules"] = Value::Array(
                rules
                    .iter()
                    .filter(|x| id == x.security_group_id.as_str())
                    .map(view)
                    .collect(),
            );
        }
    }
    Ok(out)
}

pub fn sg_view(store: &dyn Store, sg: &SecurityGroup) -> NetResult<Value> {
    let mut v = view(sg);
    v["security_group_rules"] = Value::Array(
        secgroups::rules_of(store, &sg.id)?
            .iter()
            .map(view)
            .collect(),
    );
    Ok(v)
}

pub async fn list<R: Record>(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    NetCaller(ctx): NetCaller,
    q: NQuery,
) -> NResult<axum::Json<Value>> {
    let items = blocking(&state, move |s| views::<R>(s, &ctx)).await?;
    let url = format!("{base}/network/v2.0/{}", segment::<R>());
    Ok(axum::Json(collection(R::COLLECTION, &url, items, &q)?))
}

pub async fn show<R: Record>(
    State(state): State<AppState>,
    NetCaller(ctx): NetCaller,
    Path(id): Path<String>,
    q: NQuery,
) -> NResult<axum::Json<Value>> {
    let v = blocking(&state, move |s| {
        let rec: R = ops::show(s, &ctx, &id)?;
        let mut v = view(&rec);
        if R::MEMBER == "security_group" {
            v["security_group_rules"] =
                Value::Array(secgroups::rules_of(s, &id)?.iter().map(view).collect());
        }
        Ok(v)
    })
    .await?;
    Ok(axum::Json(json!({R::MEMBER: trim(v, &q.fields())})))
}

/// A member body: `{"network": {...}}` with `code`.
pub fn member<R: Record>(code: StatusCode, rec: &R) -> (StatusCode, axum::Json<Value>) {
    (code, axum::Json(json!({R::MEMBER: view(rec)})))
}

#[derive(Deserialize)]
pub struct TagsBody {
    tags: Vec<String>,
}

pub async fn tags_get<R: Record>(
    State(state): State<AppState>,
    NetCaller(ctx): NetCaller,
    Path(id): Path<String>,
) -> NResult<axum::Json<Value>> {
    let rec: R = blocking(&state, move |s| ops::show(s, &ctx, &id)).await?;
    Ok(axum::Json(json!({"tags": view(&rec)["tags"]})))
}

pub async fn tags_put<R: Record>(
    State(state): State<AppState>,
    NetCaller(ctx): NetCaller,
    Path(id): Path<String>,
    NJson(b): NJson<TagsBody>,
) -> NResult<axum::Json<Value>> {
    let tags = blocking(&state, move |s| {
        ops::change_tags::<R>(s, &ctx, &id, TagChange::Replace(b.tags))
    })
    .await?;
    Ok(axum::Json(json!({ "tags": tags })))
}

pub async fn tags_clear<R: Record>(
    State(state): State<AppState>,
    NetCaller(ctx): NetCaller,
    Path(id): Path<String>,
) -> NResult<StatusCode> {
    blocking(&state, move |s| {
        ops::change_tags::<R>(s, &ctx, &id, TagChange::Clear)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn tag_check<R: Record>(
    State(state): State<AppState>,
    NetCaller(ctx): NetCaller,
    Path((id, tag)): Path<(String, String)>,
) -> NResult<StatusCode> {
    let rec: R = blocking(&state, move |s| ops::show(s, &ctx, &id)).await?;
    let has = view(&rec)["tags"]
        .as_array()
        .is_some_and(|t| t.iter().any(|x| x == tag.as_str()));
    if has {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(crate::network::NetError::NotFound {
            kind: "TagNotFound",
            message: format!(
                "Tag {tag} could not be found for {} {}.",
                R::MEMBER,
                rec.id()
            ),
        }
        .into())
    }
}

pub async fn tag_add<R: Record>(
    State(state): State<AppState>,
    NetCaller(ctx): NetCaller,
    Path((id, tag)): Path<(String, String)>,
) -> NResult<StatusCode> {
    blocking(&state, move |s| {
        ops::change_tags::<R>(s, &ctx, &id, TagChange::Add(tag))
    })
    .await?;
    Ok(StatusCode::CREATED)
}

pub async fn tag_remove<R: Record>(
    State(state): State<AppState>,
    NetCaller(ctx): NetCaller,
    Path((id, tag)): Path<(String, String)>,
) -> NResult<StatusCode> {
    blocking(&state, move |s| {
        ops::change_tags::<R>(s, &ctx, &id, TagChange::Remove(tag))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
