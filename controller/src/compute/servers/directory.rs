//! The servers as the compute extras see them: [`ServerDirectory`] over the
//! servers' tables, for `os-hypervisors?with_servers` and
//! `os-simple-tenant-usage`. Installed when the services open.

use std::sync::Arc;

use super::query::indexed_servers;
use super::tables::{BY_NODE, BY_PROJECT, SERVERS};
use crate::compute::usage::{ServerDirectory, ServerRef, UsageRecord};
use crate::error::ApiResult;
use crate::store::Store;

pub struct Directory {
    store: Arc<dyn Store>,
}

impl Directory {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Directory { store }
    }
}

impl ServerDirectory for Directory {
    fn servers_on_node(&self, node_id: &str) -> ApiResult<Vec<ServerRef>> {
        let r = self.store.read()?;
        Ok(indexed_servers(&*r, &BY_NODE, node_id)?
            .into_iter()
            .filter(|s| s.deleted_at.is_none())
            .map(|s| ServerRef {
                uuid: s.id,
                name: s.name,
            })
            .collect())
    }

    fn usage_records(
        &self,
        project: Option<&str>,
        start: i64,
        end: i64,
    ) -> ApiResult<Vec<UsageRecord>> {
        let r = self.store.read()?;
        let servers = match project {
            Some(p) => indexed_servers(&*r, &BY_PROJECT, p)?,
            None => SERVERS.values(&*r)?,
        };
        Ok(servers
            .into_iter()
            .filter_map(|s| {
                let started = s.launched_at.unwrap_or(s.created_at);
                let ended = s.deleted_at.or(s.terminated_at);
                let overlaps = started < end && ended.is_none_or(|e| e > start);
                overlaps.then(|| UsageRecord {
                    instance_id: s.id,
                    name: s.name,
                    tenant_id: s.project_id,
                    flavor: s.flavor.name,
                    vcpus: s.flavor.vcpus,
                    memory_mb: s.flavor.ram,
                    local_gb: s.flavor.disk,
                    started_at: started,
                    ended_at: ended,
                    state: s.vm_state.as_str().to_string(),
                })
            })
            .collect())
    }
}
