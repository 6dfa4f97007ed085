//! The compute service's tables.

use super::model::{Flavor, Keypair, QuotaOverrides};
use super::server_groups::ServerGroup;
use super::services::ServiceRecord;
use crate::scheduler::NodeState;
use crate::store::Table;

pub const FLAVORS: Table<Flavor> = Table::new("compute.flavors");
/// name → flavor id (names are unique).
pub const FLAVOR_NAMES: Table<String> = Table::new("compute.flavor_names");
/// `flavor_id|project_id` → ().
pub const FLAVOR_ACCESS: Table<()> = Table::new("compute.flavor_access");
/// `user_id|name` → keypair.
pub const KEYPAIRS: Table<Keypair> = Table::new("compute.keypairs");
/// project id → overrides.
pub const QUOTAS: Table<QuotaOverrides> = Table::new("compute.quotas");
/// Service facts: `flavors_seeded`, `next_keypair_id`.
pub const META: Table<String> = Table::new("compute.meta");
/// node id → capacity, claims and last heartbeat.
pub const NODES: Table<NodeState> = Table::new("compute.nodes");
/// `binary|host` → service record (ids, disabled reason, forced down).
pub const SERVICES: Table<ServiceRecord> = Table::new("compute.services");
/// group id → server group.
pub const SERVER_GROUPS: Table<ServerGroup> = Table::new("compute.server_groups");
