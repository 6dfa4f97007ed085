//! Compute nodes in the store: registration, heartbeats, and the claim — the
//! scheduler's choice applied in the SAME write transaction that read the nodes,
//! so concurrent claims never over-commit (redb serialises writers).

use super::tables::NODES;
use super::Compute;
use crate::clock::now_micros;
use crate::error::{ApiError, ApiResult};
use crate::scheduler::{choose, Demand, NodeState, Ratios, Weigher};

/// What a node reports when it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub id: String,
    pub host: String,
    pub az: String,
    pub vcpus: u64,
    pub ram_mb: u64,
    pub disk_gb: u64,
}

impl Compute {
    /// Registers (or re-registers) a node; claims already made on it are kept.
    pub fn register_node(&self, reg: Registration) -> ApiResult<NodeState> {
        let mut w = self.store.write()?;
        let old = NODES.get(w.as_read(), &reg.id)?;
        let node = NodeState {
            id: reg.id.clone(),
            host: reg.host,
            az: reg.az,
            enabled: old.as_ref().is_none_or(|o| o.enabled),
            vcpus: reg.vcpus,
            ram_mb: reg.ram_mb,
            disk_gb: reg.disk_gb,
            used_vcpus: old.as_ref().map_or(0, |o| o.used_vcpus),
            used_ram_mb: old.as_ref().map_or(0, |o| o.used_ram_mb),
            used_disk_gb: old.as_ref().map_or(0, |o| o.used_disk_gb),
            last_seen: now_micros(),
            caps: old.map(|o| o.caps).unwrap_or_default(),
        };
        NODES.put(&mut *w, &reg.id, &node)?;
        w.commit()?;
        Ok(node)
    }

    pub fn heartbeat(&self, id: &str) -> ApiResult<()> {
        let mut w = self.store.write()?;
        let mut node = NODES
            .get(w.as_read(), id)?
            .ok_or_else(|| ApiError::NotFound(format!("Compute host {id} could not be found.")))?;
        node.last_seen = now_micros();
        NODES.put(&mut *w, id, &node)?;
        w.commit()?;
        Ok(())
    }

    pub fn nodes(&self) -> ApiResult<Vec<NodeState>> {
        let r = self.store.read()?;
        Ok(NODES.values(&*r)?)
    }

    /// Chooses a node for `demand` and records the claim on it, atomically.
    /// `None` when no node fits (Nova's "No valid host was found.").
    pub fn claim(
        &self,
        demand: &Demand,
        ratios: Ratios,
        weigher: Weigher,
    ) -> ApiResult<Option<String>> {
        let mut w = self.store.write()?;
        let nodes = NODES.values(w.as_read())?;
        let Some(chosen) = choose(&nodes, demand, ratios, weigher, now_micros()) else {
            return Ok(None);
        };
        let mut node = chosen.clone();
        node.used_vcpus += demand.vcpus;
        node.used_ram_mb += demand.ram_mb;
        node.used_disk_gb += demand.disk_gb;
        NODES.put(&mut *w, &node.id, &node)?;
        w.commit()?;
        Ok(Some(node.id))
    }

    /// Gives a claim back (server deleted or failed to spawn).
    pub fn release(&self, node_id: &str, demand: &Demand) -> ApiResult<()> {
        let mut w = self.store.write()?;
        if let Some(mut node) = NODES.get(w.as_read(), node_id)? {
            node.used_vcpus = node.used_vcpus.saturating_sub(demand.vcpus);
            node.used_ram_mb = node.used_ram_mb.saturating_sub(demand.ram_mb);
            node.used_disk_gb = node.used_disk_gb.saturating_sub(demand.disk_gb);
            NODES.put(&mut *w, node_id, &node)?;
        }
        w.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::RedbStore;

    fn open() -> (tempfile::TempDir, Arc<Compute>) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
        (dir, Arc::new(Compute::open(Arc::new(store)).unwrap()))
    }

    fn reg(id: &str, vcpus: u64) -> Registration {
        Registration {
            id: id.into(),
            host: format!("{id}.local"),
            az: "nova".into(),
            vcpus,
            ram_mb: 1 << 20,
            disk_gb: 1 << 20,
        }
    }

    const EXACT: Ratios = Ratios {
        cpu: 1.0,
        ram: 1.0,
        disk: 1.0,
    };

    #[test]
    fn concurrent_claims_never_over_commit() {
        let (_d, c) = open();
        c.register_node(reg("n1", 4)).unwrap();
        c.register_node(reg("n2", 3)).unwrap();
        let demand = Demand {
            vcpus: 1,
            ram_mb: 1,
            disk_gb: 1,
            ..Demand::default()
        };
        let handles: Vec<_> = (0..24)
            .map(|_| {
                let c = c.clone();
                let demand = demand.clone();
                std::thread::spawn(move || c.claim(&demand, EXACT, Weigher::Spread).unwrap())
            })
            .collect();
        let won: Vec<String> = handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(won.len(), 7, "exactly the capacity is claimed: {won:?}");
        assert_eq!(won.iter().filter(|n| *n == "n1").count(), 4);
        let nodes = c.nodes().unwrap();
        assert!(nodes.iter().all(|n| n.used_vcpus == n.vcpus), "{nodes:?}");
        // Release one; the next claim lands there; re-registering keeps claims.
        c.release("n2", &demand).unwrap();
        assert_eq!(
            c.claim(&demand, EXACT, Weigher::Pack).unwrap().as_deref(),
            Some("n2")
        );
        c.register_node(reg("n1", 4)).unwrap();
        assert_eq!(c.claim(&demand, EXACT, Weigher::Spread).unwrap(), None);
        c.heartbeat("n1").unwrap();
        assert!(c.heartbeat("nope").is_err());
    }
}
