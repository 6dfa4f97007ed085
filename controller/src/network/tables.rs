//! The network service's tables and indexes.

use super::model::{FloatingIp, Network, Port, Router, SecurityGroup, SecurityGroupRule, Subnet};
use crate::store::Table;

pub const NETWORKS: Table<Network> = Table::new("network.networks");
pub const SUBNETS: Table<Subnet> = Table::new("network.subnets");
pub const PORTS: Table<Port> = Table::new("network.ports");
pub const SECURITY_GROUPS: Table<SecurityGroup> = Table::new("network.security_groups");
pub const SG_RULES: Table<SecurityGroupRule> = Table::new("network.security_group_rules");
pub const ROUTERS: Table<Router> = Table::new("network.routers");
pub const FLOATING_IPS: Table<FloatingIp> = Table::new("network.floatingips");
/// `subnet_id|address` → port id: the IPAM ledger. An address is taken exactly
/// when its key exists; allocation checks and writes it in one transaction.
pub const IP_ALLOCATIONS: Table<String> = Table::new("network.ip_allocations");
/// `network_id|mac` → port id.
pub const MACS: Table<String> = Table::new("network.macs");
/// project id → the id of its `default` security group.
pub const DEFAULT_SG: Table<String> = Table::new("network.default_sg");
/// project id → quota overrides (resource → limit, -1 unlimited).
pub const QUOTAS: Table<std::collections::BTreeMap<String, i64>> = Table::new("network.quotas");
/// Service facts, e.g. the last VNI handed out.
pub const META: Table<u64> = Table::new("network.meta");

/// The key of an IPAM ledger entry.
pub fn ip_key(subnet_id: &str, address: &str) -> String {
    format!("{subnet_id}|{address}")
}
