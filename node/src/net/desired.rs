//! The controller's desired network state for this host, as the node reads it
//! (`GET /compute/kiln/v1/nodes/{node}/network`), and its translation into
//! netdp's security-group model and the links of each network.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use kiln_controller::compute::multiqueue::MAX_QUEUE_PAIRS;
use kiln_netdp::link::{names, NetworkLinks, PortFlags, PortLinks, VxlanLinks};
use kiln_netdp::model as m;
use serde::Deserialize;

/// `device_owner` of the port holding a network's DHCP address on a host.
pub const DHCP_OWNER: &str = "network:dhcp";
/// The IANA VXLAN port.
pub const VXLAN_PORT: u16 = 4789;

#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    pub desired: Desired,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Desired {
    #[serde(default)]
    pub revision: u64,
    #[serde(default)]
    pub networks: Vec<Network>,
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub security_groups: Vec<Group>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Network {
    pub id: String,
    #[serde(default)]
    pub project_id: String,
    #[serde(default)]
    pub vni: u32,
    #[serde(default)]
    pub mtu: u32,
    #[serde(default)]
    pub subnets: Vec<Subnet>,
    /// Tunnel addresses of the other nodes with ports on this network.
    #[serde(default)]
    pub vteps: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HostRoute {
    pub destination: String,
    pub nexthop: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Subnet {
    pub id: String,
    pub ip_version: u8,
    pub cidr: String,
    #[serde(default)]
    pub gateway_ip: Option<String>,
    #[serde(default)]
    pub enable_dhcp: bool,
    #[serde(default)]
    pub dns_nameservers: Vec<String>,
    #[serde(default)]
    pub host_routes: Vec<HostRoute>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FixedIp {
    #[serde(default)]
    pub subnet_id: String,
    pub ip_address: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Pair {
    pub ip_address: String,
    #[serde(default)]
    pub mac_address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Port {
    pub id: String,
    pub network_id: String,
    pub mac_address: String,
    #[serde(default)]
    pub fixed_ips: Vec<FixedIp>,
    #[serde(default = "yes")]
    pub admin_state_up: bool,
    #[serde(default)]
    pub device_id: String,
    #[serde(default)]
    pub device_owner: String,
    #[serde(default)]
    pub port_security_enabled: bool,
    #[serde(default)]
    pub allowed_address_pairs: Vec<Pair>,
    #[serde(default)]
    pub security_groups: Vec<String>,
    #[serde(default)]
    pub status: String,
    /// virtio-net queue pairs of the guest's NIC (more than one: the TAP is
    /// multi-queue); 1 when the controller leaves it out.
    #[serde(default = "kiln_controller::protocol::one_queue")]
    pub queues: u16,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Group {
    pub id: String,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Rule {
    pub id: String,
    pub direction: String,
    pub ethertype: String,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub port_range_min: Option<u32>,
    #[serde(default)]
    pub port_range_max: Option<u32>,
    #[serde(default)]
    pub remote_ip_prefix: Option<String>,
    #[serde(default)]
    pub remote_group_id: Option<String>,
    #[serde(default)]
    pub remote_group_ips: Option<Vec<String>>,
}

impl Port {
    /// The port holding the network's DHCP address on this host.
    pub fn is_dhcp(&self) -> bool {
        self.device_owner == DHCP_OWNER
    }

    /// A guest port (not DHCP, router or floating-IP plumbing).
    pub fn is_guest(&self) -> bool {
        !self.device_owner.starts_with("network:")
    }

    /// The first IPv4 fixed address.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.fixed_ips
            .iter()
            .find_map(|f| f.ip_address.parse::<Ipv4Addr>().ok())
    }
}

impl Network {
    /// The first IPv4 subnet with DHCP enabled.
    pub fn dhcp_subnet(&self) -> Option<&Subnet> {
        self.subnets
            .iter()
            .find(|s| s.ip_version == 4 && s.enable_dhcp)
    }
}

impl Desired {
    pub fn network(&self, id: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.id == id)
    }

    /// Guest ports bound to this host (every one gets an interface and rules).
    pub fn guest_ports(&self) -> impl Iterator<Item = &Port> {
        self.ports.iter().filter(|p| p.is_guest())
    }

    /// Networks with at least one guest port here.
    pub fn active_networks(&self) -> BTreeSet<&str> {
        self.guest_ports().map(|p| p.network_id.as_str()).collect()
    }

    /// This host's DHCP port of a network, if the controller has one.
    pub fn dhcp_port(&self, network_id: &str) -> Option<&Port> {
        self.ports
            .iter()
            .find(|p| p.is_dhcp() && p.network_id == network_id)
    }
}

/// Conntrack zone of a network on this host: from its VNI (unique per
/// network), folded into 1..=65535.
pub fn ct_zone(vni: u32) -> u16 {
    u16::try_from(vni % 65535).map_or(1, |z| z.max(1))
}

fn direction(s: &str) -> m::Direction {
    if s == "egress" {
        m::Direction::Egress
    } else {
        m::Direction::Ingress
    }
}

fn ethertype(s: &str) -> m::Ethertype {
    if s == "IPv6" {
        m::Ethertype::IPv6
    } else {
        m::Ethertype::IPv4
    }
}

/// netdp's model of the guest ports of `d` on active networks. Addresses of
/// remote-group members that are not local ports become `remote_members`.
pub fn security_model(d: &Desired) -> m::Model {
    let mut model = m::Model::default();
    let active = d.active_networks();
    for n in d.networks.iter().filter(|n| active.contains(n.id.as_str())) {
        model.add_network(m::Network {
            id: n.id.clone(),
            bridge: names::bridge(&n.id),
            ct_zone: ct_zone(n.vni),
        });
    }
    let mut local: BTreeSet<String> = BTreeSet::new();
    for p in d.guest_ports() {
        let fixed_ips = p
            .fixed_ips
            .iter()
            .filter_map(|f| {
                f.ip_address.parse::<IpAddr>().ok().map(|ip| m::FixedIp {
                    subnet_id: Some(f.subnet_id.clone()),
                    ip_address: ip,
                })
            })
            .collect::<Vec<_>>();
        local.extend(fixed_ips.iter().map(|f| f.ip_address.to_string()));
        local.extend(p.allowed_address_pairs.iter().map(|a| a.ip_address.clone()));
        model.add_port(m::Port {
            id: p.id.clone(),
            network_id: p.network_id.clone(),
            ifname: names::tap(&p.id),
            mac_address: p.mac_address.clone(),
            fixed_ips,
            allowed_address_pairs: p
                .allowed_address_pairs
                .iter()
                .map(|a| m::AllowedAddressPair {
                    ip_address: a.ip_address.clone(),
                    mac_address: a.mac_address.clone().filter(|s| !s.is_empty()),
                })
                .collect(),
            port_security_enabled: p.port_security_enabled,
            security_groups: p.security_groups.clone(),
        });
    }
    let mut remote: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for g in &d.security_groups {
        let mut rules = Vec::new();
        for r in &g.rules {
            if let (Some(rg), Some(ips)) = (&r.remote_group_id, &r.remote_group_ips) {
                let e = remote.entry(rg.clone()).or_default();
                e.extend(ips.iter().filter(|ip| !local.contains(*ip)).cloned());
            }
            rules.push(m::SecurityGroupRule {
                id: r.id.clone(),
                direction: direction(&r.direction),
                ethertype: ethertype(&r.ethertype),
                protocol: r.protocol.clone(),
                port_range_min: r.port_range_min,
                port_range_max: r.port_range_max,
                remote_ip_prefix: r.remote_ip_prefix.clone(),
                remote_group_id: r.remote_group_id.clone(),
            });
        }
        model.add_security_group(m::SecurityGroup {
            id: g.id.clone(),
            rules,
        });
    }
    model.remote_members = remote
        .into_iter()
        .map(|(g, s)| (g, s.into_iter().collect()))
        .collect();
    model
}

/// The TAP queues of a port asking for `queues` pairs: 1..=[`MAX_QUEUE_PAIRS`].
/// `NodeNet`'s plug hands kiln-vmm the same count (`Plugged::queues`).
pub fn tap_queues(queues: u16) -> u16 {
    queues.clamp(1, MAX_QUEUE_PAIRS)
}

/// The links of every active network: bridge, VXLAN when other nodes carry
/// it (local address `tunnel`), and one interface per guest port.
pub fn network_links(d: &Desired, tunnel: Option<Ipv4Addr>) -> Vec<NetworkLinks> {
    let active = d.active_networks();
    let mut out = Vec::new();
    for n in d.networks.iter().filter(|n| active.contains(n.id.as_str())) {
        let remotes: Vec<Ipv4Addr> = n
            .vteps
            .iter()
            .filter_map(|v| v.parse().ok())
            .filter(|v| Some(*v) != tunnel)
            .collect();
        let vxlan = match tunnel {
            Some(local) if !remotes.is_empty() && n.vni > 0 => Some(VxlanLinks {
                name: names::vxlan(&n.id),
                vni: n.vni,
                local,
                dstport: VXLAN_PORT,
                underlay: None,
                remotes,
                flags: PortFlags::default(),
            }),
            _ => None,
        };
        let ports = d
            .guest_ports()
            .filter(|p| p.network_id == n.id)
            .map(|p| PortLinks {
                tap: names::tap(&p.id),
                queues: tap_queues(p.queues),
                owner: None,
                flags: PortFlags::default(),
                adopt_existing: true,
            })
            .collect();
        out.push(NetworkLinks {
            bridge: names::bridge(&n.id),
            mtu: if n.mtu >= 576 { n.mtu } else { 1450 },
            addresses: vec![],
            vxlan,
            ports,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn desired() -> Desired {
        let text = r#"{"desired": {"revision": 3,
          "networks": [{"id": "n1", "vni": 70, "mtu": 1450, "vteps": ["192.0.2.9"],
             "subnets": [{"id": "s1", "ip_version": 4, "cidr": "10.0.0.0/24",
                          "gateway_ip": "10.0.0.1", "enable_dhcp": true}]}],
          "ports": [
            {"id": "p1", "network_id": "n1", "mac_address": "fa:16:3e:00:00:01",
             "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.5"}],
             "port_security_enabled": true, "security_groups": ["g"],
             "allowed_address_pairs": [], "device_owner": "compute:nova"},
            {"id": "d1", "network_id": "n1", "mac_address": "fa:16:3e:00:00:02",
             "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.2"}],
             "device_owner": "network:dhcp"}],
          "security_groups": [{"id": "g", "rules": [
             {"id": "r", "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
              "remote_group_id": "g", "remote_group_ips": ["10.0.0.5", "10.0.0.9"]}]}]}}"#;
        serde_json::from_str::<Envelope>(text).unwrap().desired
    }

    #[test]
    fn model_keeps_guest_ports_and_remote_members_from_elsewhere() {
        let d = desired();
        let m = security_model(&d);
        assert_eq!(m.ports.keys().collect::<Vec<_>>(), vec!["p1"]);
        assert_eq!(m.remote_members["g"], vec!["10.0.0.9".to_string()]);
        assert_eq!(m.networks["n1"].ct_zone, 70);
        assert_eq!(d.dhcp_port("n1").map(|p| p.id.as_str()), Some("d1"));
    }

    #[test]
    fn a_port_gets_the_queues_the_controller_asks_for() {
        let mut d = desired();
        // Left out (an older controller): one queue.
        assert_eq!(d.ports[0].queues, 1);
        assert_eq!(network_links(&d, None)[0].ports[0].queues, 1);
        for (asked, want) in [(2, 2), (8, 8), (64, 8), (0, 1)] {
            d.ports[0].queues = asked;
            let l = network_links(&d, None);
            assert_eq!(l[0].ports[0].queues, want, "{asked}");
            assert_eq!(l[0].ports[0].tap_config().queues, want);
        }
        let text = r#"{"id": "p", "network_id": "n", "mac_address": "fa:16:3e:00:00:09",
                       "queues": 4}"#;
        assert_eq!(serde_json::from_str::<Port>(text).unwrap().queues, 4);
    }

    #[test]
    fn links_add_vxlan_only_with_a_tunnel_and_remote_vteps() {
        let d = desired();
        let l = network_links(&d, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].ports.len(), 1);
        let vx = l[0].vxlan.as_ref().unwrap();
        assert_eq!((vx.vni, vx.remotes.len()), (70, 1));
        assert!(network_links(&d, None)[0].vxlan.is_none());
        assert!(network_links(&d, Some("192.0.2.9".parse().unwrap()))[0]
            .vxlan
            .is_none());
    }
}
