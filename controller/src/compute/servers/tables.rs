//! The servers' tables and indexes (kept in step in every write transaction).

use serde::{Deserialize, Serialize};

use super::model::Server;
use crate::store::Table;

/// id → server.
pub const SERVERS: Table<Server> = Table::new("compute.servers");
/// `project|id` → () — a project's servers without scanning everyone's.
pub const BY_PROJECT: Table<()> = Table::new("compute.servers_by_project");
/// `node|id` → () — a node's servers (resync, node views).
pub const BY_NODE: Table<()> = Table::new("compute.servers_by_node");
/// project id → what its servers use (instances, cores, ram), for O(1) quota checks.
pub const USAGE: Table<Usage> = Table::new("compute.server_usage");
/// node id → the node's API URL (from its registration).
pub const NODE_URLS: Table<String> = Table::new("compute.node_urls");

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub instances: i64,
    pub cores: i64,
    pub ram: i64,
}

pub fn project_key(project: &str, id: &str) -> String {
    format!("{project}|{id}")
}
