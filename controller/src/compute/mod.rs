//! Compute (Nova v2.1): flavors, keypairs, quotas and compute nodes (registration,
//! heartbeats, atomic claims) over the store. Servers and the node protocol come
//! next (their routes answer 501 for now).
//!
//! Every operation that changes several records does it in one write transaction.

pub mod flavors;
pub mod keypairs;
pub mod model;
pub mod multiqueue;
pub mod nodes;
pub mod quotas;
pub mod server_groups;
pub mod servers;
pub mod services;
pub mod tables;
pub mod usage;

use std::sync::Arc;

use crate::clock::now_micros;
use crate::error::ApiResult;
use crate::identity::model::TokenRecord;
use crate::identity::policy::is_admin;
use crate::store::Store;
use model::{Flavor, DEFAULT_FLAVORS};
use tables::{FLAVORS, FLAVOR_NAMES, META};

/// Who is asking, as far as compute cares.
#[derive(Debug, Clone)]
pub struct Who {
    pub user_id: String,
    pub project: Option<String>,
    pub admin: bool,
}

impl Who {
    pub fn of(caller: &TokenRecord) -> Self {
        Who {
            user_id: caller.user_id.clone(),
            project: caller.scope.project_id().map(str::to_string),
            admin: is_admin(caller),
        }
    }
}

pub struct Compute {
    store: Arc<dyn Store>,
    /// What the extras (usage, hypervisor servers) read about servers.
    directory: std::sync::RwLock<Arc<dyn usage::ServerDirectory>>,
    /// Where volume bytes live (nodes are told the files; see `servers::attachments`).
    volume_backend: std::sync::RwLock<Option<Arc<dyn crate::volume::VolumeBackend>>>,
    /// Nova's `reclaim_instance_interval` in seconds: 0 deletes at once, more
    /// soft-deletes (see `servers::soft_delete`).
    reclaim_interval_secs: std::sync::atomic::AtomicU64,
}

impl Compute {
    /// Opens the service; a new cloud gets the default flavors (m1.tiny ..
    /// m1.xlarge) in one transaction.
    pub fn open(store: Arc<dyn Store>) -> ApiResult<Self> {
        let c = Compute {
            store,
            directory: std::sync::RwLock::new(Arc::new(usage::NoServers)),
            volume_backend: std::sync::RwLock::new(None),
            reclaim_interval_secs: std::sync::atomic::AtomicU64::new(0),
        };
        c.seed_flavors()?;
        Ok(c)
    }

    fn seed_flavors(&self) -> ApiResult<()> {
        {
            let r = self.store.read()?;
            if META.contains(&*r, "flavors_seeded")? {
                return Ok(());
            }
        }
        let mut w = self.store.write()?;
        let now = now_micros();
        for (id, name, ram, vcpus, disk) in DEFAULT_FLAVORS {
            let f = Flavor {
                id: id.to_string(),
                name: name.to_string(),
                ram: *ram,
                vcpus: *vcpus,
                disk: *disk,
                ephemeral: 0,
                swap: 0,
                rxtx_factor: 1.0,
                is_public: true,
                disabled: false,
                description: None,
                extra_specs: Default::default(),
                created_at: now,
            };
            FLAVORS.put(&mut *w, id, &f)?;
            FLAVOR_NAMES.put(&mut *w, name, &id.to_string())?;
        }
        META.put(&mut *w, "flavors_seeded", &"true".to_string())?;
        w.commit()?;
        Ok(())
    }
}
