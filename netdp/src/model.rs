//! The desired state of the host network, as plain data in Neutron's vocabulary:
//! networks, ports (with fixed IPs, allowed address pairs, port security and
//! security groups), security groups and their rules.
//!
//! Values arrive as the controller holds them (strings for MACs and CIDRs);
//! the security-group compiler validates them and reports bad ones as errors.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// A tenant network as seen on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub id: String,
    /// The Linux bridge carrying this network on this host.
    pub bridge: String,
    /// The conntrack zone of this network (one per network, unique on the host).
    pub ct_zone: u16,
}

/// A fixed IP of a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedIp {
    pub subnet_id: Option<String>,
    pub ip_address: IpAddr,
}

/// Neutron's allowed address pair: an IP or CIDR, optionally with its own MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedAddressPair {
    /// An address (`10.0.0.7`) or a prefix (`10.0.0.0/24`, `2001:db8::/64`).
    pub ip_address: String,
    /// Defaults to the port's MAC when absent.
    pub mac_address: Option<String>,
}

/// A port: one guest interface plugged into a network on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub id: String,
    pub network_id: String,
    /// The host-side interface (TAP or veth) enslaved to the network's bridge.
    pub ifname: String,
    pub mac_address: String,
    pub fixed_ips: Vec<FixedIp>,
    pub allowed_address_pairs: Vec<AllowedAddressPair>,
    pub port_security_enabled: bool,
    pub security_groups: Vec<String>,
}

/// `ingress` (to the port) or `egress` (from the port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Ingress,
    Egress,
}

/// `IPv4` or `IPv6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ethertype {
    IPv4,
    IPv6,
}

/// One security group rule, as Neutron defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroupRule {
    pub id: String,
    pub direction: Direction,
    pub ethertype: Ethertype,
    /// A protocol name (`tcp`, `udp`, `icmp`, `ipv6-icmp`, ...) or number (`"47"`);
    /// `None` or `"any"` for every protocol.
    pub protocol: Option<String>,
    /// TCP/UDP/SCTP: the port range; ICMP: `port_range_min` is the type and
    /// `port_range_max` the code.
    pub port_range_min: Option<u32>,
    pub port_range_max: Option<u32>,
    pub remote_ip_prefix: Option<String>,
    pub remote_group_id: Option<String>,
}

/// A security group: its rules allow traffic; everything else is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroup {
    pub id: String,
    pub rules: Vec<SecurityGroupRule>,
}

/// Everything this host's data plane should enforce, keyed by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub networks: BTreeMap<String, Network>,
    pub ports: BTreeMap<String, Port>,
    pub security_groups: BTreeMap<String, SecurityGroup>,
    /// Addresses (or prefixes) of remote-group members that are not ports of
    /// this model, e.g. ports on other hosts, by group id. They join the
    /// group's remote-group sets next to the addresses of the model's ports.
    pub remote_members: BTreeMap<String, Vec<String>>,
}

impl Model {
    pub fn add_network(&mut self, n: Network) {
        self.networks.insert(n.id.clone(), n);
    }

    pub fn add_port(&mut self, p: Port) {
        self.ports.insert(p.id.clone(), p);
    }

    pub fn add_security_group(&mut self, g: SecurityGroup) {
        self.security_groups.insert(g.id.clone(), g);
    }
}
