//! Compute services (os-services) and hypervisors (os-hypervisors) as views of
//! the node registry: one `nova-compute` service per registered node plus
//! `nova-scheduler` and `nova-conductor` on the controller host. A service record
//! keeps what the node registry does not: stable ids (an integer for 2.1, a UUID
//! from 2.53), the disabled reason and forced-down. Disabling or forcing down a
//! compute service clears the node's `enabled` flag, which the scheduler filters on.

use serde::{Deserialize, Serialize};

use super::tables::{META, NODES, SERVICES};
use super::{Compute, Who};
use crate::clock::now_micros;
use crate::error::{ApiError, ApiResult};
use crate::scheduler::{is_up, NodeState};

pub const COMPUTE_BINARY: &str = "nova-compute";
/// The services the controller itself runs (zone `internal`).
pub const CONTROLLER_BINARIES: &[&str] = &["nova-scheduler", "nova-conductor"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Integer id (shown before 2.53).
    pub num: u64,
    /// UUID (shown from 2.53).
    pub uuid: String,
    pub binary: String,
    pub host: String,
    /// The node behind a `nova-compute` service.
    pub node_id: Option<String>,
    /// The hypervisor's integer id and UUID (compute services only).
    pub hv_num: u64,
    pub hv_uuid: String,
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    pub forced_down: bool,
    pub updated_at: i64,
}

/// A service as shown: the record plus its computed state.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceView {
    pub record: ServiceRecord,
    pub up: bool,
    pub zone: String,
    pub node: Option<NodeState>,
}

/// What an update (PUT, or the pre-2.53 actions) changes; `None` keeps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceChange {
    pub disabled: Option<bool>,
    pub disabled_reason: Option<Option<String>>,
    pub forced_down: Option<bool>,
}

fn admin_only(who: &Who, rule: &str) -> ApiResult<()> {
    if who.admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "Policy doesn't allow os_compute_api:{rule} to be performed."
        )))
    }
}

/// The controller's host name (`/proc/sys/kernel/hostname`, else `localhost`).
pub fn controller_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn next_num(w: &mut dyn crate::store::WriteTxn, key: &str) -> ApiResult<u64> {
    let next: u64 = META
        .get(w.as_read(), key)?
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    META.put(w, key, &(next + 1).to_string())?;
    Ok(next)
}

fn service_key(binary: &str, host: &str) -> String {
    format!("{binary}|{host}")
}

impl Compute {
    /// Makes sure every node has its compute service and the controller its
    /// services (one write transaction, only when something is missing).
    fn ensure_services(&self) -> ApiResult<()> {
        {
            let r = self.store.read()?;
            let have = SERVICES.values(&*r)?;
            let nodes = NODES.values(&*r)?;
            let seeded = META.contains(&*r, "controller_services_seeded")?;
            if seeded
                && nodes.iter().all(|n| {
                    have.iter()
                        .any(|s| s.node_id.as_deref() == Some(n.id.as_str()))
                })
            {
                return Ok(());
            }
        }
        let mut w = self.store.write()?;
        let now = now_micros();
        if !META.contains(w.as_read(), "controller_services_seeded")? {
            let host = controller_host();
            for b in CONTROLLER_BINARIES {
                let num = next_num(&mut *w, "next_service_id")?;
                let rec = ServiceRecord {
                    num,
                    uuid: uuid::Uuid::new_v4().to_string(),
                    binary: b.to_string(),
                    host: host.clone(),
                    node_id: None,
                    hv_num: 0,
                    hv_uuid: String::new(),
                    disabled: false,
                    disabled_reason: None,
                    forced_down: false,
                    updated_at: now,
                };
                SERVICES.put(&mut *w, &service_key(b, &host), &rec)?;
            }
            META.put(&mut *w, "controller_services_seeded", &"true".into())?;
        }
        let have = SERVICES.values(w.as_read())?;
        for n in NODES.values(w.as_read())? {
            if have
                .iter()
                .any(|s| s.node_id.as_deref() == Some(n.id.as_str()))
            {
                continue;
            }
            let rec = ServiceRecord {
                num: next_num(&mut *w, "next_service_id")?,
                uuid: uuid::Uuid::new_v4().to_string(),
                binary: COMPUTE_BINARY.into(),
                host: n.host.clone(),
                node_id: Some(n.id.clone()),
                hv_num: next_num(&mut *w, "next_hypervisor_id")?,
                hv_uuid: uuid::Uuid::new_v4().to_string(),
                disabled: !n.enabled,
                disabled_reason: None,
                forced_down: false,
                updated_at: n.last_seen,
            };
            SERVICES.put(&mut *w, &service_key(COMPUTE_BINARY, &n.host), &rec)?;
        }
        w.commit()?;
        Ok(())
    }

    /// Every service, ordered by integer id (admin only).
    pub fn services(&self, who: &Who) -> ApiResult<Vec<ServiceView>> {
        admin_only(who, "os-services:list")?;
        self.all_services()
    }

    fn all_services(&self) -> ApiResult<Vec<ServiceView>> {
        self.ensure_services()?;
        let r = self.store.read()?;
        let nodes = NODES.values(&*r)?;
        let now = now_micros();
        let mut out: Vec<ServiceView> = SERVICES
            .values(&*r)?
            .into_iter()
            .map(|rec| {
                let node = rec
                    .node_id
                    .as_ref()
                    .and_then(|id| nodes.iter().find(|n| &n.id == id))
                    .cloned();
                let (up, zone, updated) = match &node {
                    Some(n) => (is_up(n, now) && !rec.forced_down, n.az.clone(), n.last_seen),
                    None if rec.node_id.is_some() => (false, "nova".into(), rec.updated_at),
                    None => (!rec.forced_down, "internal".into(), now),
                };
                let mut record = rec;
                record.updated_at = updated;
                ServiceView {
                    record,
                    up,
                    zone,
                    node,
                }
            })
            .collect();
        out.sort_by_key(|s| s.record.num);
        Ok(out)
    }

    /// Nova's `host_status` (2.16) of a server on `host`: `DOWN` when its
    /// compute service is forced down, `UNKNOWN` when it stopped sending
    /// heartbeats (or is not known), `MAINTENANCE` when disabled, else `UP`.
    pub fn host_status(&self, host: &str) -> ApiResult<&'static str> {
        Ok(self
            .host_statuses()?
            .get(host)
            .copied()
            .unwrap_or("UNKNOWN"))
    }

    /// [`Self::host_status`] of every compute host, from one read (lists).
    pub fn host_statuses(&self) -> ApiResult<std::collections::HashMap<String, &'static str>> {
        let all = self.all_services()?;
        Ok(all
            .iter()
            .filter(|s| s.record.binary == COMPUTE_BINARY)
            .map(|s| {
                let status = if s.record.forced_down {
                    "DOWN"
                } else if !s.up {
                    "UNKNOWN"
                } else if s.record.disabled {
                    "MAINTENANCE"
                } else {
                    "UP"
                };
                (s.record.host.clone(), status)
            })
            .collect())
    }

    /// A service by UUID (2.53+) or integer id.
    pub fn service(&self, who: &Who, id: &str) -> ApiResult<ServiceView> {
        admin_only(who, "os-services:list")?;
        self.all_services()?
            .into_iter()
            .find(|s| s.record.uuid == id || s.record.num.to_string() == id)
            .ok_or_else(|| ApiError::NotFound(format!("Service {id} could not be found.")))
    }

    /// A service by host and binary (the pre-2.53 action forms).
    pub fn service_by_host(&self, who: &Who, host: &str, binary: &str) -> ApiResult<ServiceView> {
        admin_only(who, "os-services:update")?;
        self.all_services()?
            .into_iter()
            .find(|s| s.record.host == host && s.record.binary == binary)
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "Service {binary} on host {host} could not be found."
                ))
            })
    }

    /// Applies a change to the service with UUID or integer id `id`; a compute
    /// service's node becomes unschedulable while disabled or forced down.
    pub fn update_service(
        &self,
        who: &Who,
        id: &str,
        change: ServiceChange,
    ) -> ApiResult<ServiceView> {
        admin_only(who, "os-services:update")?;
        let view = self.service(who, id)?;
        let key = service_key(&view.record.binary, &view.record.host);
        let mut w = self.store.write()?;
        let mut rec = SERVICES
            .get(w.as_read(), &key)?
            .ok_or_else(|| ApiError::NotFound(format!("Service {id} could not be found.")))?;
        if let Some(d) = change.disabled {
            rec.disabled = d;
            if !d {
                rec.disabled_reason = None;
            }
        }
        if let Some(reason) = change.disabled_reason {
            rec.disabled_reason = reason;
        }
        if let Some(f) = change.forced_down {
            rec.forced_down = f;
        }
        rec.updated_at = now_micros();
        if let Some(node_id) = &rec.node_id {
            if let Some(mut node) = NODES.get(w.as_read(), node_id)? {
                node.enabled = !rec.disabled && !rec.forced_down;
                NODES.put(&mut *w, node_id, &node)?;
            }
        }
        SERVICES.put(&mut *w, &key, &rec)?;
        w.commit()?;
        self.service(who, id)
    }

    /// Deletes a service; a compute service takes its node (hypervisor) with it.
    /// A compute service whose node still hosts servers is refused (409).
    pub fn delete_service(&self, who: &Who, id: &str) -> ApiResult<()> {
        admin_only(who, "os-services:delete")?;
        let view = self.service(who, id)?;
        if let Some(node_id) = &view.record.node_id {
            if !self.directory().servers_on_node(node_id)?.is_empty() {
                return Err(ApiError::Conflict(format!(
                    "Unable to delete compute service that is hosting instances. Migrate or delete the instances first on host {}.",
                    view.record.host
                )));
            }
        }
        let mut w = self.store.write()?;
        SERVICES.delete(
            &mut *w,
            &service_key(&view.record.binary, &view.record.host),
        )?;
        if let Some(node_id) = &view.record.node_id {
            NODES.delete(&mut *w, node_id)?;
        }
        w.commit()?;
        Ok(())
    }

    /// The hypervisors (compute services with a live node record), admin only.
    pub fn hypervisors(&self, who: &Who) -> ApiResult<Vec<ServiceView>> {
        admin_only(who, "os-hypervisors:list")?;
        Ok(self
            .all_services()?
            .into_iter()
            .filter(|s| s.node.is_some())
            .collect())
    }

    /// A hypervisor by UUID (2.53+) or integer id; `uuid_ids` says which the
    /// request's version uses (the other spelling is 404, as in Nova).
    pub fn hypervisor(&self, who: &Who, id: &str, uuid_ids: bool) -> ApiResult<ServiceView> {
        admin_only(who, "os-hypervisors:show")?;
        self.hypervisors(who)?
            .into_iter()
            .find(|s| {
                if uuid_ids {
                    s.record.hv_uuid == id
                } else {
                    s.record.hv_num.to_string() == id
                }
            })
            .ok_or_else(|| {
                ApiError::NotFound(format!("Hypervisor with ID {id} could not be found."))
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::compute::nodes::Registration;
    use crate::scheduler::{Demand, Ratios, Weigher};
    use crate::store::RedbStore;

    fn open() -> (tempfile::TempDir, Compute) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
        (dir, Compute::open(Arc::new(store)).unwrap())
    }

    fn admin() -> Who {
        Who {
            user_id: "u".into(),
            project: Some("p".into()),
            admin: true,
        }
    }

    #[test]
    fn disabled_service_is_not_scheduled_and_delete_takes_the_node() {
        let (_d, c) = open();
        c.register_node(Registration {
            id: "n1".into(),
            host: "h1".into(),
            az: "nova".into(),
            vcpus: 4,
            ram_mb: 4096,
            disk_gb: 100,
        })
        .unwrap();
        let all = c.services(&admin()).unwrap();
        assert_eq!(all.len(), 3);
        let compute = all
            .iter()
            .find(|s| s.record.binary == COMPUTE_BINARY)
            .unwrap();
        assert!(compute.up);
        assert_eq!(compute.zone, "nova");
        let demand = Demand {
            vcpus: 1,
            ram_mb: 1,
            disk_gb: 1,
            ..Demand::default()
        };
        let off = ServiceChange {
            disabled: Some(true),
            disabled_reason: Some(Some("maintenance".into())),
            forced_down: None,
        };
        let v = c
            .update_service(&admin(), &compute.record.uuid, off)
            .unwrap();
        assert!(v.record.disabled);
        assert_eq!(
            c.claim(&demand, Ratios::default(), Weigher::Spread)
                .unwrap(),
            None
        );
        let on = ServiceChange {
            disabled: Some(false),
            ..Default::default()
        };
        let v = c
            .update_service(&admin(), &compute.record.num.to_string(), on)
            .unwrap();
        assert_eq!(v.record.disabled_reason, None);
        assert!(c
            .claim(&demand, Ratios::default(), Weigher::Spread)
            .unwrap()
            .is_some());
        let down = ServiceChange {
            forced_down: Some(true),
            ..Default::default()
        };
        assert!(
            !c.update_service(&admin(), &compute.record.uuid, down)
                .unwrap()
                .up
        );
        let user = Who {
            admin: false,
            ..admin()
        };
        assert!(c.services(&user).is_err());
        assert_eq!(c.hypervisors(&admin()).unwrap().len(), 1);
        c.delete_service(&admin(), &compute.record.uuid).unwrap();
        assert!(c.hypervisors(&admin()).unwrap().is_empty());
        assert_eq!(c.services(&admin()).unwrap().len(), 2);
        assert!(c.service(&admin(), &compute.record.uuid).is_err());
    }
}
