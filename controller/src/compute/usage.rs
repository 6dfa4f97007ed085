//! What the compute extras read about servers, behind [`ServerDirectory`] (the
//! servers module implements it; until it is wired, [`NoServers`] answers "none"),
//! and os-simple-tenant-usage: per-project totals of the hours each server ran
//! inside a `[start, end)` window.

use std::collections::BTreeMap;

use super::{Compute, Who};
use crate::error::{ApiError, ApiResult};

/// A server as the hypervisor views list it (`?with_servers=true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRef {
    pub uuid: String,
    pub name: String,
}

/// One server's life, as usage reports need it (times in microseconds).
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    pub instance_id: String,
    pub name: String,
    pub tenant_id: String,
    pub flavor: String,
    pub vcpus: u64,
    pub memory_mb: u64,
    pub local_gb: u64,
    pub started_at: i64,
    /// When it was deleted; `None` while it exists.
    pub ended_at: Option<i64>,
    /// Nova's vm_state (`active`, `stopped`, ..., `deleted`).
    pub state: String,
}

/// The servers the compute extras need to see. The servers module implements it
/// over its tables and installs it once with [`Compute::set_server_directory`].
///
/// Contract: `servers_on_node` lists the live servers placed on a node id (as
/// claimed through [`Compute::claim`]); `usage_records` yields every server of
/// `project` (every project when `None`), deleted ones included (with
/// `ended_at`), whose life overlaps `[start, end)`.
pub trait ServerDirectory: Send + Sync {
    fn servers_on_node(&self, node_id: &str) -> ApiResult<Vec<ServerRef>>;
    fn usage_records(
        &self,
        project: Option<&str>,
        start: i64,
        end: i64,
    ) -> ApiResult<Vec<UsageRecord>>;
}

/// The directory before servers exist: no servers anywhere.
pub struct NoServers;

impl ServerDirectory for NoServers {
    fn servers_on_node(&self, _node_id: &str) -> ApiResult<Vec<ServerRef>> {
        Ok(Vec::new())
    }
    fn usage_records(&self, _: Option<&str>, _: i64, _: i64) -> ApiResult<Vec<UsageRecord>> {
        Ok(Vec::new())
    }
}

/// One server's share of a window.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerUsage {
    pub record: UsageRecord,
    /// Hours inside the window.
    pub hours: f64,
    /// Seconds it has been up (to the window's end, or to its deletion).
    pub uptime_secs: i64,
}

/// A project's totals over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantUsage {
    pub tenant_id: String,
    pub total_hours: f64,
    pub total_vcpus_usage: f64,
    pub total_memory_mb_usage: f64,
    pub total_local_gb_usage: f64,
    pub servers: Vec<ServerUsage>,
}

const MICROS_PER_HOUR: f64 = 3_600_000_000.0;

/// Folds records into per-project totals for `[start, end)`, ordered by project id
/// and, inside a project, by start time then id.
pub fn summarise(records: Vec<UsageRecord>, start: i64, end: i64, now: i64) -> Vec<TenantUsage> {
    let mut by: BTreeMap<String, TenantUsage> = BTreeMap::new();
    let mut records = records;
    records.sort_by(|a, b| (a.started_at, &a.instance_id).cmp(&(b.started_at, &b.instance_id)));
    for r in records {
        let from = r.started_at.max(start);
        let to = r.ended_at.unwrap_or(i64::MAX).min(end).min(now.max(start));
        if to <= from {
            continue;
        }
        let hours = (to - from) as f64 / MICROS_PER_HOUR;
        let uptime_secs = (r.ended_at.unwrap_or(now).min(now) - r.started_at).max(0) / 1_000_000;
        let t = by
            .entry(r.tenant_id.clone())
            .or_insert_with(|| TenantUsage {
                tenant_id: r.tenant_id.clone(),
                total_hours: 0.0,
                total_vcpus_usage: 0.0,
                total_memory_mb_usage: 0.0,
                total_local_gb_usage: 0.0,
                servers: Vec::new(),
            });
        t.total_hours += hours;
        t.total_vcpus_usage += hours * r.vcpus as f64;
        t.total_memory_mb_usage += hours * r.memory_mb as f64;
        t.total_local_gb_usage += hours * r.local_gb as f64;
        t.servers.push(ServerUsage {
            record: r,
            hours,
            uptime_secs,
        });
    }
    by.into_values().collect()
}

impl Compute {
    /// Installs the servers' directory (called once by whoever builds servers).
    pub fn set_server_directory(&self, dir: std::sync::Arc<dyn ServerDirectory>) {
        if let Ok(mut d) = self.directory.write() {
            *d = dir;
        }
    }

    pub fn directory(&self) -> std::sync::Arc<dyn ServerDirectory> {
        match self.directory.read() {
            Ok(d) => d.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Usage of every project (admin) over `[start, end)`.
    pub fn tenant_usages(
        &self,
        who: &Who,
        start: i64,
        end: i64,
        now: i64,
    ) -> ApiResult<Vec<TenantUsage>> {
        if !who.admin {
            return Err(ApiError::Forbidden(
                "Policy doesn't allow os_compute_api:os-simple-tenant-usage:list to be performed."
                    .into(),
            ));
        }
        Ok(summarise(
            self.directory().usage_records(None, start, end)?,
            start,
            end,
            now,
        ))
    }

    /// Usage of one project (its members or an admin).
    pub fn tenant_usage(
        &self,
        who: &Who,
        project: &str,
        start: i64,
        end: i64,
        now: i64,
    ) -> ApiResult<Option<TenantUsage>> {
        if !who.admin && who.project.as_deref() != Some(project) {
            return Err(ApiError::Forbidden(
                "Policy doesn't allow os_compute_api:os-simple-tenant-usage:show to be performed."
                    .into(),
            ));
        }
        let records = self.directory().usage_records(Some(project), start, end)?;
        Ok(summarise(records, start, end, now).into_iter().next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000;

    fn rec(id: &str, tenant: &str, start: i64, end: Option<i64>) -> UsageRecord {
        UsageRecord {
            instance_id: id.into(),
            name: id.into(),
            tenant_id: tenant.into(),
            flavor: "m1.small".into(),
            vcpus: 2,
            memory_mb: 512,
            local_gb: 10,
            started_at: start,
            ended_at: end,
            state: if end.is_some() { "deleted" } else { "active" }.into(),
        }
    }

    #[test]
    fn hours_are_clipped_to_the_window_and_totalled_per_project() {
        let recs = vec![
            rec("b", "p1", 0, None),
            rec("a", "p1", 5 * H, Some(6 * H)),
            rec("c", "p2", 20 * H, None),
            rec("d", "p2", 0, Some(H)),
        ];
        let out = summarise(recs, 2 * H, 10 * H, 100 * H);
        assert_eq!(out.len(), 1, "p2's servers are outside the window: {out:?}");
        let p1 = &out[0];
        assert_eq!(p1.tenant_id, "p1");
        assert_eq!(p1.servers.len(), 2);
        assert_eq!(p1.servers[0].record.instance_id, "b");
        assert!((p1.total_hours - 9.0).abs() < 1e-9, "{}", p1.total_hours);
        assert!((p1.total_vcpus_usage - 18.0).abs() < 1e-9);
        assert!((p1.total_local_gb_usage - 90.0).abs() < 1e-9);
        assert_eq!(p1.servers[1].uptime_secs, 3600);
        // A window ending in the future counts only up to now.
        let out = summarise(vec![rec("x", "p", 0, None)], 0, 10 * H, 3 * H);
        assert!((out[0].total_hours - 3.0).abs() < 1e-9);
    }
}
