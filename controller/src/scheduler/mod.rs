//! Scheduling as pure functions over data: filters (enabled/up, vCPU, RAM, disk with
//! allocation ratios, availability zone, a requested host, image properties —
//! [`image_props`]) and weighers (spread by default, pack as
//! an option). The claim that applies the choice lives in
//! [`crate::compute::nodes`], in the same write transaction that reads the nodes.

pub mod affinity;
pub mod image_props;

use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};

/// A node's capacity and what is claimed on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    pub id: String,
    pub host: String,
    pub az: String,
    pub enabled: bool,
    pub vcpus: u64,
    pub ram_mb: u64,
    pub disk_gb: u64,
    pub used_vcpus: u64,
    pub used_ram_mb: u64,
    pub used_disk_gb: u64,
    /// Microseconds since the epoch of the last heartbeat.
    pub last_seen: i64,
    /// What it runs (the image-properties filter); a KVM host's when unknown.
    #[serde(default)]
    pub caps: image_props::Capabilities,
}

/// What one server needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Demand {
    pub vcpus: u64,
    pub ram_mb: u64,
    pub disk_gb: u64,
    pub az: Option<String>,
    /// A host the request names (unshelve at 2.91); any when `None`.
    pub host: Option<String>,
    /// What the server's image asks of the host.
    pub image: image_props::ImageReqs,
}

/// Nova's allocation ratios (its defaults: 16 vCPU, 1.5 RAM, 1.0 disk).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratios {
    pub cpu: f64,
    pub ram: f64,
    pub disk: f64,
}

impl Default for Ratios {
    fn default() -> Self {
        Ratios {
            cpu: 16.0,
            ram: 1.5,
            disk: 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Weigher {
    /// Most free RAM first (Nova's default).
    #[default]
    Spread,
    /// Least free RAM first.
    Pack,
}

/// A node counts as down when silent longer than this (by default).
pub const DOWN_AFTER_MICROS: i64 = 60 * 1_000_000;

static DOWN_AFTER: AtomicI64 = AtomicI64::new(DOWN_AFTER_MICROS);

/// How long a node may be silent before it counts as down, for the whole
/// process (`kiln-node up --node-down-after`); at least 3 s.
pub fn set_down_after_secs(secs: u64) {
    let micros = i64::try_from(secs.max(3).saturating_mul(1_000_000)).unwrap_or(i64::MAX);
    DOWN_AFTER.store(micros, Ordering::Relaxed);
}

/// The heartbeat period nodes are told to keep: a third of the down time,
/// at most `max_secs`.
pub fn heartbeat_secs(max_secs: u64) -> u64 {
    let down = DOWN_AFTER.load(Ordering::Relaxed) / 3_000_000;
    u64::try_from(down).unwrap_or(1).clamp(1, max_secs.max(1))
}

pub fn is_up(node: &NodeState, now: i64) -> bool {
    now - node.last_seen <= DOWN_AFTER.load(Ordering::Relaxed)
}

fn capacity(total: u64, ratio: f64) -> u64 {
    (total as f64 * ratio).floor() as u64
}

/// Whether `node` can take `demand` now.
pub fn fits(node: &NodeState, demand: &Demand, ratios: Ratios, now: i64) -> bool {
    node.enabled
        && is_up(node, now)
        && demand.az.as_deref().is_none_or(|az| az == node.az)
        && demand.host.as_deref().is_none_or(|h| h == node.host)
        && demand.image.passes(&node.caps)
        && node.used_vcpus + demand.vcpus <= capacity(node.vcpus, ratios.cpu)
        && node.used_ram_mb + demand.ram_mb <= capacity(node.ram_mb, ratios.ram)
        && node.used_disk_gb + demand.disk_gb <= capacity(node.disk_gb, ratios.disk)
}

fn free_ram(node: &NodeState, ratios: Ratios) -> i128 {
    capacity(node.ram_mb, ratios.ram) as i128 - node.used_ram_mb as i128
}

/// The best node for `demand`, if any fits (ties broken by id, so the choice is
/// deterministic).
pub fn choose<'a>(
    nodes: &'a [NodeState],
    demand: &Demand,
    ratios: Ratios,
    weigher: Weigher,
    now: i64,
) -> Option<&'a NodeState> {
    nodes
        .iter()
        .filter(|n| fits(n, demand, ratios, now))
        .max_by(|a, b| {
            let (fa, fb) = (free_ram(a, ratios), free_ram(b, ratios));
            let ord = match weigher {
                Weigher::Spread => fa.cmp(&fb),
                Weigher::Pack => fb.cmp(&fa),
            };
            ord.then_with(|| b.id.cmp(&a.id))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, ram: u64, used_ram: u64) -> NodeState {
        NodeState {
            id: id.into(),
            host: id.into(),
            az: "nova".into(),
            enabled: true,
            vcpus: 4,
            ram_mb: ram,
            disk_gb: 100,
            used_vcpus: 0,
            used_ram_mb: used_ram,
            used_disk_gb: 0,
            last_seen: 0,
            caps: Default::default(),
        }
    }

    fn demand(ram: u64) -> Demand {
        Demand {
            vcpus: 1,
            ram_mb: ram,
            disk_gb: 1,
            ..Demand::default()
        }
    }

    #[test]
    fn filters_apply_ratios_state_and_az() {
        let r = Ratios::default();
        let n = node("a", 1000, 0);
        assert!(fits(&n, &demand(1500), r, 0));
        assert!(!fits(&n, &demand(1501), r, 0));
        let exact = Ratios {
            cpu: 1.0,
            ram: 1.0,
            disk: 1.0,
        };
        let mut busy = node("a", 1000, 0);
        busy.used_vcpus = 4;
        assert!(!fits(&busy, &demand(1), exact, 0));
        assert!(fits(&busy, &demand(1), r, 0));
        let mut off = node("a", 1000, 0);
        off.enabled = false;
        assert!(!fits(&off, &demand(1), r, 0));
        assert!(!fits(&n, &demand(1), r, DOWN_AFTER_MICROS + 1));
        let mut d = demand(1);
        d.az = Some("other".into());
        assert!(!fits(&n, &d, r, 0));
        d.az = Some("nova".into());
        assert!(fits(&n, &d, r, 0));
    }

    #[test]
    fn spread_and_pack_pick_opposite_ends() {
        let nodes = vec![
            node("a", 4000, 1000),
            node("b", 4000, 3000),
            node("c", 4000, 0),
        ];
        let r = Ratios {
            cpu: 1.0,
            ram: 1.0,
            disk: 1.0,
        };
        assert_eq!(
            choose(&nodes, &demand(500), r, Weigher::Spread, 0)
                .unwrap()
                .id,
            "c"
        );
        assert_eq!(
            choose(&nodes, &demand(500), r, Weigher::Pack, 0)
                .unwrap()
                .id,
            "b"
        );
        assert_eq!(
            choose(&nodes, &demand(3500), r, Weigher::Pack, 0)
                .unwrap()
                .id,
            "c"
        );
        assert!(choose(&nodes, &demand(4500), r, Weigher::Spread, 0).is_none());
        // Ties: the smallest id wins.
        let twins = vec![node("y", 4000, 0), node("x", 4000, 0)];
        assert_eq!(
            choose(&twins, &demand(1), r, Weigher::Spread, 0)
                .unwrap()
                .id,
            "x"
        );
    }
}
