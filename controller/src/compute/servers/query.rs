//! Reading servers: show (with visibility), list with Nova's filters and
//! pagination over the per-project index, and the small in-place updates (name,
//! description, metadata, tags).

use std::collections::BTreeMap;

use super::model::{vm_states_for_status, Server};
use super::not_found;
use super::tables::{BY_PROJECT, SERVERS};
use crate::clock::now_micros;
use crate::compute::{Compute, Who};
use crate::error::{ApiError, ApiResult};
use crate::protocol::VmState;
use crate::store::{ReadTxn, Table};

/// Nova's `max_limit`.
pub const MAX_LIMIT: usize = 1000;

/// List filters as Nova reads them from the query string.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub name: Option<String>,
    pub status: Option<String>,
    pub image: Option<String>,
    pub flavor: Option<String>,
    pub changes_since: Option<i64>,
    /// `changes-before` (2.66).
    pub changes_before: Option<i64>,
    /// `locked` (2.73).
    pub locked: Option<bool>,
    pub all_tenants: bool,
    pub project: Option<String>,
    pub host: Option<String>,
    pub ip: Option<String>,
    pub reservation_id: Option<String>,
    pub tags: Vec<String>,
    pub tags_any: Vec<String>,
    pub not_tags: Vec<String>,
    pub not_tags_any: Vec<String>,
    pub limit: Option<usize>,
    pub marker: Option<String>,
    /// `deleted` (admins): `true` lists only the (soft-)deleted servers.
    pub deleted: Option<bool>,
}

pub(crate) fn visible(who: &Who, s: &Server) -> bool {
    who.admin || who.project.as_deref() == Some(s.project_id.as_str())
}

pub(crate) fn load(r: &dyn ReadTxn, who: &Who, id: &str) -> ApiResult<Server> {
    SERVERS
        .get(r, id)?
        .filter(|s| visible(who, s))
        .ok_or_else(|| not_found(id))
}

fn matches(s: &Server, q: &ListQuery, name_re: Option<&fancy_regex::Regex>) -> bool {
    // Nova leaves soft-deleted servers out unless `deleted=true` asks for the
    // deleted ones, or `changes-since`/`changes-before` (without `deleted`) ask
    // for everything that changed.
    let soft = s.vm_state == VmState::SoftDeleted;
    let shown = match q.deleted {
        Some(d) => d == soft,
        None => !soft || q.changes_since.is_some() || q.changes_before.is_some(),
    };
    if !shown {
        return false;
    }
    if let Some(re) = name_re {
        if !re.is_match(&s.name).unwrap_or(false) {
            return false;
        }
    }
    if let Some(st) = &q.status {
        match vm_states_for_status(st) {
            Some(states) if states.contains(&s.vm_state) => {}
            _ => return false,
        }
    }
    if q.image.as_ref().is_some_and(|i| *i != s.image_ref) {
        return false;
    }
    if q.flavor.as_ref().is_some_and(|f| *f != s.flavor.id) {
        return false;
    }
    if q.changes_since.is_some_and(|t| s.updated_at < t) {
        return false;
    }
    if q.changes_before.is_some_and(|t| s.updated_at > t) {
        return false;
    }
    if q.locked.is_some_and(|l| s.locked != l) {
        return false;
    }
    if q.host.as_ref().is_some_and(|h| s.host.as_ref() != Some(h)) {
        return false;
    }
    if q.reservation_id
        .as_ref()
        .is_some_and(|r| *r != s.reservation_id)
    {
        return false;
    }
    if let Some(ip) = &q.ip {
        let re = fancy_regex::Regex::new(ip).ok();
        let hit = s.vifs.iter().flat_map(|v| v.ips.iter()).any(|a| match &re {
            Some(re) => re.is_match(a).unwrap_or(false),
            None => a.contains(ip.as_str()),
        });
        if !hit {
            return false;
        }
    }
    let has = |t: &String| s.tags.contains(t);
    if !q.tags.iter().all(has) {
        return false;
    }
    if !q.tags_any.is_empty() && !q.tags_any.iter().any(has) {
        return false;
    }
    if !q.not_tags.is_empty() && q.not_tags.iter().all(has) {
        return false;
    }
    if q.not_tags_any.iter().any(has) {
        return false;
    }
    true
}

impl Compute {
    pub fn server(&self, who: &Who, id: &str) -> ApiResult<Server> {
        let r = self.store.read()?;
        load(&*r, who, id)
    }

    /// Servers newest first, filtered, one page (`limit` capped at [`MAX_LIMIT`]).
    pub fn servers(&self, who: &Who, q: &ListQuery) -> ApiResult<Vec<Server>> {
        let name_re = match &q.name {
            Some(n) => Some(
                fancy_regex::Regex::new(n)
                    .or_else(|_| fancy_regex::Regex::new(&fancy_regex::escape(n)))
                    .map_err(|e| ApiError::BadRequest(format!("Invalid name filter: {e}")))?,
            ),
            None => None,
        };
        if let Some(st) = &q.status {
            if vm_states_for_status(st).is_none() {
                // Nova answers an unknown status with an empty list.
                return Ok(vec![]);
            }
        }
        let r = self.store.read()?;
        let mut all: Vec<Server> = if who.admin && q.all_tenants {
            match &q.project {
                Some(p) => self.project_servers(&*r, p)?,
                None => SERVERS.values(&*r)?,
            }
        } else {
            match &who.project {
                Some(p) => self.project_servers(&*r, p)?,
                None => vec![],
            }
        };
        all.retain(|s| matches(s, q, name_re.as_ref()));
        all.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        let start = match &q.marker {
            Some(m) => {
                all.iter()
                    .position(|s| s.id == *m)
                    .ok_or_else(|| ApiError::BadRequest(format!("marker [{m}] not found")))?
                    + 1
            }
            None => 0,
        };
        let limit = q.limit.unwrap_or(MAX_LIMIT).min(MAX_LIMIT);
        Ok(all.into_iter().skip(start).take(limit).collect())
    }

    fn project_servers(&self, r: &dyn ReadTxn, project: &str) -> ApiResult<Vec<Server>> {
        indexed_servers(r, &BY_PROJECT, project)
    }

    /// Changes a server record in place (owner or admin; not while locked for
    /// a non-admin when `lock_checked`).
    pub fn modify_server<R>(
        &self,
        who: &Who,
        id: &str,
        f: impl FnOnce(&mut Server) -> ApiResult<R>,
    ) -> ApiResult<(Server, R)> {
        let mut w = self.store.write()?;
        let mut s = load(w.as_read(), who, id)?;
        let out = f(&mut s)?;
        s.updated_at = now_micros();
        SERVERS.put(&mut *w, id, &s)?;
        w.commit()?;
        Ok((s, out))
    }

    /// Server metadata: replace (`PUT`) or merge (`POST`), within the quota.
    pub fn set_server_metadata(
        &self,
        who: &Who,
        id: &str,
        items: BTreeMap<String, String>,
        replace: bool,
    ) -> ApiResult<BTreeMap<String, String>> {
        let limit = self.quota_limit(who.project.as_deref(), "metadata_items")?;
        let (_, md) = self.modify_server(who, id, |s| {
            check_locked(who, s)?;
            if replace {
                s.metadata = items;
            } else {
                s.metadata.extend(items);
            }
            if limit >= 0 && s.metadata.len() as i64 > limit {
                return Err(ApiError::Forbidden(format!(
                    "Quota exceeded for metadata_items: Requested {}, but already used 0 of {limit} metadata_items",
                    s.metadata.len()
                )));
            }
            Ok(s.metadata.clone())
        })?;
        Ok(md)
    }

    pub fn delete_server_metadata(&self, who: &Who, id: &str, key: &str) -> ApiResult<()> {
        self.modify_server(who, id, |s| {
            check_locked(who, s)?;
            s.metadata
                .remove(key)
                .map(|_| ())
                .ok_or_else(|| ApiError::NotFound("Metadata item was not found".into()))
        })?;
        Ok(())
    }
}

/// Nova's lock: only admins (or the locker) act on a locked server.
/// The servers an `owner|id` index (by project, by node) lists for `owner`.
pub(crate) fn indexed_servers(
    r: &dyn ReadTxn,
    index: &Table<()>,
    owner: &str,
) -> ApiResult<Vec<Server>> {
    let keys = index.scan(r, &format!("{owner}|"))?;
    let mut out = Vec::with_capacity(keys.len());
    for (k, ()) in keys {
        let id = k.rsplit('|').next().unwrap_or_default();
        if let Some(s) = SERVERS.get(r, id)? {
            out.push(s);
        }
    }
    Ok(out)
}

pub fn check_locked(who: &Who, s: &Server) -> ApiResult<()> {
    if s.locked && !who.admin && s.locked_by.as_deref() != Some(who.user_id.as_str()) {
        return Err(ApiError::Conflict(format!("Instance {} is locked", s.id)));
    }
    Ok(())
}

/// The server-tags limit (Nova's `MAX_TAG_COUNT`) and tag checks.
pub const MAX_TAGS: usize = 50;

pub fn check_tag(tag: &str) -> ApiResult<()> {
    if tag.is_empty() || tag.chars().count() > 60 || tag.contains('/') || tag.contains(',') {
        return Err(ApiError::BadRequest(format!(
            "Invalid input for field/attribute tag. Value: {tag}."
        )));
    }
    Ok(())
}
