//! Per tenant network on this host, as Neutron's DHCP agent does it: a
//! namespace `kdhcp-<node>-<network>` joined to the network's bridge by a veth
//! (`kdh-<id>` on the bridge, `ns-dhcp` inside), holding the network's DHCP
//! address (a Neutron port owned by `network:dhcp`) and 169.254.169.254/32 on
//! its loopback. The DHCP server (static leases of the network's ports) and the
//! metadata server listen there, so no tenant address is ever in the root
//! namespace and overlapping CIDRs of different projects do not meet.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use kiln_netdp::dhcp::{DhcpServer, Lease, NetworkOptions, ServerConfig, StaticRoute};
use kiln_netdp::link::{names, Links};
use kiln_netdp::netns;
use kiln_netdp::secgroup::addr::parse_mac;

use super::desired::{Desired, Network, Port, Subnet};
use super::metadata::{self, Registry};
use super::NetError;

/// Prefix of the namespaces this module owns.
pub const NS_PREFIX: &str = "kdhcp-";
/// Prefix of the bridge-side veth ends this module owns.
pub const VETH_PREFIX: &str = "kdh-";
/// The namespace side of the veth.
pub const NS_DEV: &str = "ns-dhcp";
/// The metadata address.
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// Lease time handed to guests.
pub const LEASE_SECS: u32 = 86_400;

fn suffix(network_id: &str) -> String {
    network_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(11)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The node's tag in namespace names, which are global to the host while
/// several nodes may run on it: the id itself when it is at most 16
/// lowercase letters and digits, else its first 7 letters and digits and a
/// 32-bit FNV-1a hash of the whole id (so `sim-0` and `sim0` differ).
pub fn node_tag(node_id: &str) -> String {
    let plain = node_id.len() <= 16
        && node_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if plain && !node_id.is_empty() {
        return node_id.to_string();
    }
    let hash = node_id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let head: String = node_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(7)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("{head}{hash:08x}")
}

/// The namespace of a network on the node tagged `tag`.
pub fn ns_name(tag: &str, network_id: &str) -> String {
    format!("{NS_PREFIX}{tag}-{}", suffix(network_id))
}

/// The bridge-side veth end of a namespace.
pub fn veth_of_ns(ns: &str) -> String {
    let tail = ns.rsplit('-').next().unwrap_or(ns);
    format!("{VETH_PREFIX}{tail}")
}

fn peer_of(veth: &str) -> String {
    format!("kdp-{}", veth.trim_start_matches(VETH_PREFIX))
}

/// A subnet's prefix length and address.
fn cidr(s: &Subnet) -> Option<(Ipv4Addr, u8)> {
    let (a, l) = s.cidr.split_once('/')?;
    Some((a.parse().ok()?, l.parse().ok().filter(|l: &u8| *l <= 32)?))
}

fn route(dest: &str, via: &str) -> Option<StaticRoute> {
    let (a, l) = dest.split_once('/')?;
    Some(StaticRoute {
        dest: a.parse().ok()?,
        prefix: l.parse().ok().filter(|l: &u8| *l <= 32)?,
        gateway: via.parse().ok()?,
    })
}

/// The DHCP options of a subnet served from `dhcp_ip`: router, DNS, MTU,
/// host routes and `169.254.169.254/32 via dhcp_ip` (Neutron's metadata route).
pub fn options(net: &Network, s: &Subnet, dhcp_ip: Ipv4Addr) -> Option<NetworkOptions> {
    let (_, prefix) = cidr(s)?;
    let mut routes: Vec<StaticRoute> = s
        .host_routes
        .iter()
        .filter_map(|r| route(&r.destination, &r.nexthop))
        .collect();
    routes.push(StaticRoute {
        dest: METADATA_IP,
        prefix: 32,
        gateway: dhcp_ip,
    });
    Some(NetworkOptions {
        prefix,
        router: s.gateway_ip.as_deref().and_then(|g| g.parse().ok()),
        dns: s
            .dns_nameservers
            .iter()
            .filter_map(|d| d.parse().ok())
            .collect(),
        domain: None,
        mtu: u16::try_from(net.mtu).ok().filter(|m| *m >= 576),
        routes,
        lease_secs: LEASE_SECS,
    })
}

/// The static leases of a network: its guest ports' addresses in the subnet.
pub fn leases(d: &Desired, net: &Network, s: &Subnet) -> Vec<Lease> {
    let Some((base, prefix)) = cidr(s) else {
        return vec![];
    };
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    d.guest_ports()
        .filter(|p| p.network_id == net.id)
        .filter_map(|p| {
            let mac = parse_mac(&p.mac_address).ok()?;
            let ip = p.fixed_ips.iter().find_map(|f| {
                let ip: Ipv4Addr = f.ip_address.parse().ok()?;
                (u32::from(ip) & mask == u32::from(base) & mask).then_some(ip)
            })?;
            let o = ip.octets();
            Some(Lease {
                mac,
                ip,
                hostname: Some(format!("host-{}-{}-{}-{}", o[0], o[1], o[2], o[3])),
            })
        })
        .collect()
}

/// One network's namespace with its DHCP and metadata servers.
pub struct DhcpNamespace {
    pub ns: String,
    dhcp_ip: Ipv4Addr,
    dhcp: DhcpServer,
    metadata: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for DhcpNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhcpNamespace")
            .field("ns", &self.ns)
            .field("dhcp_ip", &self.dhcp_ip)
            .finish()
    }
}

async fn ensure_address(
    links: &Links,
    dev: &str,
    ip: Ipv4Addr,
    prefix: u8,
) -> Result<(), NetError> {
    let have = links.addresses(dev).await?;
    if !have.contains(&(IpAddr::V4(ip), prefix)) {
        links.add_address(dev, IpAddr::V4(ip), prefix).await?;
    }
    for (a, p) in have {
        if a.is_ipv4() && (a, p) != (IpAddr::V4(ip), prefix) {
            links.del_address(dev, a, p).await?;
        }
    }
    Ok(())
}

/// Make the namespace, veth and addresses of `net` exist (idempotent).
async fn plumb(
    root: &Links,
    tag: &str,
    net: &Network,
    dhcp_port: &Port,
    dhcp_ip: Ipv4Addr,
    prefix: u8,
) -> Result<String, NetError> {
    let ns = ns_name(tag, &net.id);
    let veth = veth_of_ns(&ns);
    if !netns::exists(&ns) {
        netns::create(&ns).map_err(NetError::Io)?;
    }
    let inner = Links::open_in(&ns)?;
    if root.get(&veth).await?.is_none() || inner.get(NS_DEV).await?.is_none() {
        let peer = peer_of(&veth);
        for stale in [&veth, &peer] {
            if root.get(stale).await?.is_some() {
                root.delete(stale).await?;
            }
        }
        if inner.get(NS_DEV).await?.is_some() {
            inner.delete(NS_DEV).await?;
        }
        root.add_veth(&veth, &peer).await?;
        root.move_to_netns(&peer, &ns, Some(NS_DEV)).await?;
    }
    let bridge = names::bridge(&net.id);
    let br = root.require(&bridge).await?;
    let v = root.require(&veth).await?;
    if v.mtu != br.mtu {
        root.set_mtu(&veth, br.mtu).await?;
    }
    if v.controller != Some(br.index) {
        root.enslave(&veth, &bridge).await?;
    }
    if !v.up {
        root.set_up(&veth, true).await?;
    }
    let dev = inner.require(NS_DEV).await?;
    if let Ok(mac) = parse_mac(&dhcp_port.mac_address) {
        if dev.mac != Some(mac) {
            inner.set_mac(NS_DEV, mac).await?;
        }
    }
    if dev.mtu != br.mtu {
        inner.set_mtu(NS_DEV, br.mtu).await?;
    }
    inner.set_up(NS_DEV, true).await?;
    inner.set_up("lo", true).await?;
    ensure_address(&inner, NS_DEV, dhcp_ip, prefix).await?;
    ensure_address(&inner, "lo", METADATA_IP, 32).await?;
    Ok(ns)
}

fn metadata_listener(ns: &str) -> Result<tokio::net::TcpListener, NetError> {
    let std_listener = netns::run_in(ns, || {
        let l = std::net::TcpListener::bind(SocketAddr::from((METADATA_IP, 80)))?;
        l.set_nonblocking(true)?;
        Ok::<_, std::io::Error>(l)
    })
    .map_err(NetError::Io)?
    .map_err(NetError::Io)?;
    tokio::net::TcpListener::from_std(std_listener).map_err(NetError::Io)
}

impl DhcpNamespace {
    /// Build (or adopt) the namespace of `net` and start its servers.
    pub async fn start(
        root: &Links,
        tag: &str,
        d: &Desired,
        net: &Network,
        subnet: &Subnet,
        dhcp_port: &Port,
        registry: Arc<Registry>,
    ) -> Result<DhcpNamespace, NetError> {
        let (dhcp_ip, prefix, opts) = Self::addressing(net, subnet, dhcp_port)?;
        let ns = plumb(root, tag, net, dhcp_port, dhcp_ip, prefix).await?;
        let dhcp = DhcpServer::start(
            ServerConfig {
                bridge: NS_DEV.to_string(),
                netns: Some(ns.clone()),
                options: opts,
            },
            leases(d, net, subnet),
        )?;
        let listener = metadata_listener(&ns)?;
        let app = metadata::router(&net.id, registry);
        let metadata = tokio::spawn(async move {
            let svc = app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(listener, svc).await {
                tracing::warn!(error = %e, "metadata server stopped");
            }
        });
        Ok(DhcpNamespace {
            ns,
            dhcp_ip,
            dhcp,
            metadata,
        })
    }

    fn addressing(
        net: &Network,
        subnet: &Subnet,
        dhcp_port: &Port,
    ) -> Result<(Ipv4Addr, u8, NetworkOptions), NetError> {
        let bad = |what: &str| NetError::Invalid(format!("network {}: {what}", net.id));
        let (_, prefix) = cidr(subnet).ok_or_else(|| bad("subnet CIDR"))?;
        let dhcp_ip = dhcp_port
            .fixed_ips
            .iter()
            .filter(|f| f.subnet_id == subnet.id)
            .find_map(|f| f.ip_address.parse::<Ipv4Addr>().ok())
            .ok_or_else(|| bad("the DHCP port has no address in the DHCP subnet"))?;
        let opts = options(net, subnet, dhcp_ip).ok_or_else(|| bad("subnet options"))?;
        Ok((dhcp_ip, prefix, opts))
    }

    /// Whether this namespace still serves from the address `dhcp_port` holds.
    pub fn serves(&self, net: &Network, subnet: &Subnet, dhcp_port: &Port) -> bool {
        Self::addressing(net, subnet, dhcp_port).is_ok_and(|(ip, _, _)| ip == self.dhcp_ip)
            && !self.metadata.is_finished()
    }

    /// Bring the leases and options up to date.
    pub fn update(&self, d: &Desired, net: &Network, subnet: &Subnet) {
        if let Some(o) = options(net, subnet, self.dhcp_ip) {
            self.dhcp.set_options(o);
        }
        let want: BTreeMap<[u8; 6], Lease> = leases(d, net, subnet)
            .into_iter()
            .map(|l| (l.mac, l))
            .collect();
        for have in self.dhcp.leases() {
            if want.get(&have.mac) != Some(&have) {
                self.dhcp.remove_lease(&have.mac);
            }
        }
        let have: Vec<Lease> = self.dhcp.leases();
        for (mac, l) in want {
            if !have.iter().any(|h| h.mac == mac) {
                self.dhcp.add_lease(l);
            }
        }
    }

    /// The leases served now.
    pub fn leases(&self) -> Vec<Lease> {
        self.dhcp.leases()
    }

    /// Stop the servers and remove the veth and the namespace.
    pub async fn stop(self, root: &Links) -> Result<(), NetError> {
        self.metadata.abort();
        let _ = self.metadata.await;
        self.dhcp.stop();
        remove_namespace(root, &self.ns).await
    }
}

/// Remove a namespace this module made, and its veth.
pub async fn remove_namespace(root: &Links, ns: &str) -> Result<(), NetError> {
    let veth = veth_of_ns(ns);
    if root.get(&veth).await?.is_some() {
        root.delete(&veth).await?;
    }
    if netns::exists(ns) {
        netns::delete(ns).map_err(NetError::Io)?;
    }
    Ok(())
}

/// Namespaces of the node tagged `tag` that exist now.
pub fn existing(tag: &str) -> Result<Vec<String>, NetError> {
    let prefix = format!("{NS_PREFIX}{tag}-");
    Ok(netns::list()
        .map_err(NetError::Io)?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_tags_are_distinct_and_fit_a_namespace_name() {
        assert_eq!(node_tag("vm"), "vm");
        assert_eq!(node_tag("compute01"), "compute01");
        let tags = [
            node_tag("sim-0"),
            node_tag("sim0"),
            node_tag("Sim0"),
            node_tag("compute-host-0001.example.org"),
            node_tag("compute-host-0002.example.org"),
        ];
        for (i, a) in tags.iter().enumerate() {
            assert!(a.len() <= 16, "{a}");
            assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()), "{a}");
            for b in &tags[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(node_tag("sim-0"), node_tag("sim-0"));
    }
}
