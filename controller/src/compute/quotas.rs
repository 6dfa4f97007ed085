//! Quotas (os-quota-sets): Nova's defaults, per-project overrides, and the usage
//! counted for limits.

use std::collections::BTreeMap;

use serde_json::Value;

use super::model::QUOTA_DEFAULTS;
use super::tables::{KEYPAIRS, QUOTAS};
use super::{Compute, Who};
use crate::error::{ApiError, ApiResult};

/// name → limit, every name present.
pub type QuotaSet = BTreeMap<String, i64>;

pub fn defaults() -> QuotaSet {
    QUOTA_DEFAULTS
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect()
}

impl Compute {
    fn require_project(&self, who: &Who, project: &str) -> ApiResult<()> {
        if who.admin || who.project.as_deref() == Some(project) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "Policy doesn't allow os_compute_api:os-quota-sets:show to be performed.".into(),
            ))
        }
    }

    /// The effective quotas of a project.
    pub fn quotas(&self, who: &Who, project: &str) -> ApiResult<QuotaSet> {
        self.require_project(who, project)?;
        let r = self.store.read()?;
        let mut q = defaults();
        if let Some(o) = QUOTAS.get(&*r, project)? {
            q.extend(o);
        }
        Ok(q)
    }

    /// The effective limit of one quota for a project (no policy check; internal).
    pub fn quota_limit(&self, project: Option<&str>, name: &str) -> ApiResult<i64> {
        let r = self.store.read()?;
        let over = match project {
            Some(p) => QUOTAS.get(&*r, p)?.and_then(|o| o.get(name).copied()),
            None => None,
        };
        Ok(over.unwrap_or_else(|| defaults().get(name).copied().unwrap_or(-1)))
    }

    /// Admin: sets overrides from `{name: int}`; unknown names or bad values are 400.
    pub fn update_quotas(
        &self,
        who: &Who,
        project: &str,
        body: &serde_json::Map<String, Value>,
    ) -> ApiResult<QuotaSet> {
        if !who.admin {
            return Err(ApiError::Forbidden(
                "Policy doesn't allow os_compute_api:os-quota-sets:update to be performed.".into(),
            ));
        }
        let known = defaults();
        let mut w = self.store.write()?;
        let mut over = QUOTAS.get(w.as_read(), project)?.unwrap_or_default();
        for (k, v) in body {
            if k == "force" {
                continue;
            }
            if !known.contains_key(k) {
                return Err(ApiError::BadRequest(format!(
                    "Invalid input for field/attribute quota_set. Additional properties are not allowed ('{k}' was unexpected)"
                )));
            }
            let n = v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .filter(|n| *n >= -1)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "Invalid input for field/attribute {k}. Value: {v}. {v} is less than the minimum of -1"
                    ))
                })?;
            over.insert(k.clone(), n);
        }
        QUOTAS.put(&mut *w, project, &over)?;
        w.commit()?;
        let mut q = known;
        q.extend(over);
        Ok(q)
    }

    pub fn reset_quotas(&self, who: &Who, project: &str) -> ApiResult<()> {
        if !who.admin {
            return Err(ApiError::Forbidden(
                "Policy doesn't allow os_compute_api:os-quota-sets:delete to be performed.".into(),
            ));
        }
        let mut w = self.store.write()?;
        QUOTAS.delete(&mut *w, project)?;
        w.commit()?;
        Ok(())
    }

    /// What the caller uses now: key pairs, server groups, and the servers'
    /// instances/cores/ram.
    pub fn usage(&self, who: &Who) -> ApiResult<BTreeMap<String, i64>> {
        let r = self.store.read()?;
        let keypairs = KEYPAIRS.scan(&*r, &format!("{}|", who.user_id))?.len() as i64;
        let mut u: BTreeMap<String, i64> = QUOTA_DEFAULTS
            .iter()
            .map(|(k, _)| (k.to_string(), 0))
            .collect();
        u.insert("key_pairs".into(), keypairs);
        if let Some(p) = &who.project {
            let used = super::servers::tables::USAGE
                .get(&*r, p)?
                .unwrap_or_default();
            u.insert("instances".into(), used.instances);
            u.insert("cores".into(), used.cores);
            u.insert("ram".into(), used.ram);
            let groups = super::tables::SERVER_GROUPS
                .values(&*r)?
                .iter()
                .filter(|g| &g.project_id == p)
                .count() as i64;
            u.insert("server_groups".into(), groups);
        }
        Ok(u)
    }
}
