//! The network records as stored. Field names are Neutron's JSON keys, so a
//! record's view is its serialisation minus the internal `kiln_*` fields.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::NetError;
use super::tables;
use crate::store::Table;

/// What every Neutron resource shares: an id, an owner, tags, timestamps and a
/// revision number; a table; a 404.
pub trait Record: Serialize + DeserializeOwned + Clone + Send + 'static {
    /// The collection name (`networks`) and the member name (`network`).
    const COLLECTION: &'static str;
    const MEMBER: &'static str;
    fn table() -> Table<Self>;
    fn id(&self) -> &str;
    fn project_id(&self) -> &str;
    fn std(&mut self) -> &mut StdAttrs;
    fn not_found(id: &str) -> NetError;
}

/// Neutron's standard attributes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StdAttrs {
    pub tags: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub revision_number: u64,
}

impl StdAttrs {
    pub fn new() -> Self {
        let now = super::now();
        StdAttrs {
            tags: Vec::new(),
            created_at: now.clone(),
            updated_at: now,
            revision_number: 0,
        }
    }

    /// Marks a change: a new revision, a new `updated_at`.
    pub fn bump(&mut self) {
        self.revision_number += 1;
        self.updated_at = super::now();
    }
}

/// The JSON view of a record: its fields minus `kiln_*`, plus `tenant_id`.
pub fn view<R: Record>(r: &R) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.retain(|k, _| !k.starts_with("kiln_"));
        let project = m.get("project_id").cloned().unwrap_or(Value::Null);
        m.insert("tenant_id".into(), project);
    }
    v
}

macro_rules! record {
    ($t:ty, $coll:literal, $member:literal, $table:path, $nf:path) => {
        impl Record for $t {
            const COLLECTION: &'static str = $coll;
            const MEMBER: &'static str = $member;
            fn table() -> Table<Self> {
                $table
            }
            fn id(&self) -> &str {
                &self.id
            }
            fn project_id(&self) -> &str {
                &self.project_id
            }
            fn std(&mut self) -> &mut StdAttrs {
                &mut self.std
            }
            fn not_found(id: &str) -> NetError {
                $nf(id)
            }
        }
    };
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub description: String,
    pub project_id: String,
    pub admin_state_up: bool,
    pub shared: bool,
    pub status: String,
    pub subnets: Vec<String>,
    pub mtu: u32,
    #[serde(rename = "router:external")]
    pub router_external: bool,
    pub port_security_enabled: bool,
    #[serde(flatten)]
    pub std: StdAttrs,
    /// The VXLAN network identifier the data plane uses.
    pub kiln_vni: u32,
}
record!(
    Network,
    "networks",
    "network",
    tables::NETWORKS,
    NetError::network_not_found
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    pub destination: String,
    pub nexthop: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subnet {
    pub id: String,
    pub name: String,
    pub description: String,
    pub project_id: String,
    pub network_id: String,
    pub ip_version: u8,
    pub cidr: String,
    pub gateway_ip: Option<String>,
    pub allocation_pools: Vec<Pool>,
    pub enable_dhcp: bool,
    pub dns_nameservers: Vec<String>,
    pub host_routes: Vec<HostRoute>,
    pub ipv6_ra_mode: Option<String>,
    pub ipv6_address_mode: Option<String>,
    pub subnetpool_id: Option<String>,
    pub service_types: Vec<String>,
    #[serde(flatten)]
    pub std: StdAttrs,
}
record!(
    Subnet,
    "subnets",
    "subnet",
    tables::SUBNETS,
    NetError::subnet_not_found
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedIp {
    pub subnet_id: String,
    pub ip_address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPair {
    pub ip_address: String,
    pub mac_address: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Port {
    pub id: String,
    pub name: String,
    pub description: String,
    pub project_id: String,
    pub network_id: String,
    pub admin_state_up: bool,
    pub mac_address: String,
    pub fixed_ips: Vec<FixedIp>,
    pub device_id: String,
    pub device_owner: String,
    pub status: String,
    pub security_groups: Vec<String>,
    pub port_security_enabled: bool,
    pub allowed_address_pairs: Vec<AddressPair>,
    #[serde(rename = "binding:host_id")]
    pub binding_host_id: String,
    #[serde(rename = "binding:vif_type")]
    pub binding_vif_type: String,
    #[serde(rename = "binding:vnic_type")]
    pub binding_vnic_type: String,
    #[serde(rename = "binding:vif_details")]
    pub binding_vif_details: Map<String, Value>,
    #[serde(rename = "binding:profile")]
    pub binding_profile: Map<String, Value>,
    #[serde(flatten)]
    pub std: StdAttrs,
}
record!(
    Port,
    "ports",
    "port",
    tables::PORTS,
    NetError::port_not_found
);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub id: String,
    pub name: String,
    pub description: String,
    pub project_id: String,
    #[serde(flatten)]
    pub std: StdAttrs,
}
record!(
    SecurityGroup,
    "security_groups",
    "security_group",
    tables::SECURITY_GROUPS,
    NetError::sg_not_found
);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecurityGroupRule {
    pub id: String,
    pub security_group_id: String,
    pub project_id: String,
    pub direction: String,
    pub ethertype: String,
    pub protocol: Option<String>,
    pub port_range_min: Option<u32>,
    pub port_range_max: Option<u32>,
    pub remote_ip_prefix: Option<String>,
    pub remote_group_id: Option<String>,
    pub description: String,
    #[serde(flatten)]
    pub std: StdAttrs,
}
record!(
    SecurityGroupRule,
    "security_group_rules",
    "security_group_rule",
    tables::SG_RULES,
    NetError::rule_not_found
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayInfo {
    pub network_id: String,
    pub enable_snat: bool,
    pub external_fixed_ips: Vec<FixedIp>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Router {
    pub id: String,
    pub name: String,
    pub description: String,
    pub project_id: String,
    pub admin_state_up: bool,
    pub status: String,
    pub external_gateway_info: Option<GatewayInfo>,
    pub routes: Vec<HostRoute>,
    #[serde(flatten)]
    pub std: StdAttrs,
    /// The gateway port on the external network, if any.
    pub kiln_gw_port_id: Option<String>,
}
record!(
    Router,
    "routers",
    "router",
    tables::ROUTERS,
    NetError::router_not_found
);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloatingIp {
    pub id: String,
    pub description: String,
    pub project_id: String,
    pub floating_network_id: String,
    pub floating_ip_address: String,
    pub fixed_ip_address: Option<String>,
    pub port_id: Option<String>,
    pub router_id: Option<String>,
    pub status: String,
    #[serde(flatten)]
    pub std: StdAttrs,
    /// The port holding the floating address on the external network.
    pub kiln_fip_port_id: String,
}
record!(
    FloatingIp,
    "floatingips",
    "floatingip",
    tables::FLOATING_IPS,
    NetError::fip_not_found
);

/// Device owners Neutron uses for ports it creates itself.
pub mod owners {
    pub const ROUTER_INTERFACE: &str = "network:router_interface";
    pub const ROUTER_GATEWAY: &str = "network:router_gateway";
    pub const FLOATING_IP: &str = "network:floatingip";

    /// Ports the port API may not delete directly.
    pub fn is_l3(owner: &str) -> bool {
        owner == ROUTER_INTERFACE || owner == ROUTER_GATEWAY || owner == FLOATING_IP
    }
}
