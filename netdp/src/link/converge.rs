//! Converging the kernel's links to the desired links of this node's networks: create what is missing, fix what differs, delete kiln-owned leftovers.
//!
//! The desired state is plain data (one [`NetworkLinks`] per tenant network
//! present on the node). [`converge`] reads the kernel, applies the smallest
//! set of changes and returns them; running it again on an unchanged kernel
//! returns no changes. Only links with kiln's name prefixes
//! (see [`super::names`]) are ever deleted.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use super::names;
use super::state::{LinkKind, LinkState, PortFlags, VxlanState};
use super::tap::TapConfig;
use super::{LinkError, Links, VxlanConfig};

/// Desired links of one tenant network on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkLinks {
    /// Bridge name (`kbr-...`).
    pub bridge: String,
    /// MTU of the bridge and of every port on it.
    pub mtu: u32,
    /// Addresses on the bridge (e.g. the DHCP server's), as (address, prefix).
    pub addresses: Vec<(IpAddr, u8)>,
    /// The VXLAN joining this network to other nodes, if any.
    pub vxlan: Option<VxlanLinks>,
    /// Guest ports (TAPs) on the bridge.
    pub ports: Vec<PortLinks>,
}

/// Desired VXLAN device of a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanLinks {
    /// Device name (`kvx-...`).
    pub name: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// This node's tunnel endpoint address.
    pub local: Ipv4Addr,
    /// UDP destination port.
    pub dstport: u16,
    /// Underlay device, if pinned to one.
    pub underlay: Option<String>,
    /// Tunnel endpoints of the other nodes that carry this network.
    pub remotes: Vec<Ipv4Addr>,
    /// Bridge-port flags of the VXLAN port.
    pub flags: PortFlags,
}

/// Desired guest port (a persistent TAP the VMM attaches to by name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortLinks {
    /// TAP name (`ktap-...`).
    pub tap: String,
    /// Queues (more than one: multi-queue TAP).
    pub queues: u16,
    /// User allowed to attach (the VMM's uid), if not root only.
    pub owner: Option<u32>,
    /// Bridge-port flags.
    pub flags: PortFlags,
    /// Keep an existing link of this name whatever its kind (e.g. a veth a
    /// test plugged in as the port) instead of replacing it with a TAP; a TAP
    /// is still created when no link has the name, and a TAP with other flags
    /// that no process holds a queue of is still replaced.
    pub adopt_existing: bool,
}

impl PortLinks {
    /// The TAP configuration converge creates a missing port with (persistent,
    /// vnet header of virtio 1.0 size); a VMM attaches with the same config.
    pub fn tap_config(&self) -> TapConfig {
        TapConfig {
            name: self.tap.clone(),
            queues: self.queues.max(1),
            vnet_hdr: true,
            vnet_hdr_size: Some(super::tap::VNET_HDR_V1_LEN),
            offloads: None,
            persist: true,
            owner: self.owner,
            group: None,
        }
    }
}

/// One change converge made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Created a bridge.
    CreateBridge(String),
    /// Created a VXLAN device.
    CreateVxlan(String),
    /// Created a persistent TAP.
    CreateTap(String),
    /// Deleted a link whose kind or parameters could not be fixed in place.
    Replace(String),
    /// Set a link's MTU.
    SetMtu(String, u32),
    /// Enslaved a link to a bridge.
    Enslave(String, String),
    /// Brought a link up.
    SetUp(String),
    /// Set a bridge port's flags.
    SetPortFlags(String, PortFlags),
    /// Added an address to a bridge.
    AddAddress(String, IpAddr, u8),
    /// Removed an address from a bridge.
    RemoveAddress(String, IpAddr, u8),
    /// Added a VXLAN remote endpoint.
    AddRemote(String, Ipv4Addr),
    /// Removed a VXLAN remote endpoint.
    RemoveRemote(String, IpAddr),
    /// Deleted a kiln-owned link no network wants.
    DeleteLeftover(String),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::CreateBridge(n) => write!(f, "create bridge {n}"),
            Change::CreateVxlan(n) => write!(f, "create vxlan {n}"),
            Change::CreateTap(n) => write!(f, "create tap {n}"),
            Change::Replace(n) => write!(f, "replace {n}"),
            Change::SetMtu(n, m) => write!(f, "set {n} mtu {m}"),
            Change::Enslave(n, b) => write!(f, "enslave {n} to {b}"),
            Change::SetUp(n) => write!(f, "set {n} up"),
            Change::SetPortFlags(n, p) => write!(f, "set {n} port flags {p:?}"),
            Change::AddAddress(n, a, p) => write!(f, "add {a}/{p} to {n}"),
            Change::RemoveAddress(n, a, p) => write!(f, "remove {a}/{p} from {n}"),
            Change::AddRemote(n, r) => write!(f, "add remote {r} to {n}"),
            Change::RemoveRemote(n, r) => write!(f, "remove remote {r} from {n}"),
            Change::DeleteLeftover(n) => write!(f, "delete leftover {n}"),
        }
    }
}

/// Check names and values before touching the kernel.
pub fn validate(desired: &[NetworkLinks]) -> Result<(), LinkError> {
    let mut seen = HashSet::new();
    let mut check = |name: &str, prefix: &str| -> Result<(), LinkError> {
        if !name.starts_with(prefix) || !names::is_valid(name) {
            return Err(LinkError::InvalidSpec(format!(
                "link name {name:?} must start with {prefix} and fit 15 bytes"
            )));
        }
        if !seen.insert(name.to_string()) {
            return Err(LinkError::InvalidSpec(format!(
                "link name {name:?} used twice"
            )));
        }
        Ok(())
    };
    for n in desired {
        check(&n.bridge, names::BRIDGE_PREFIX)?;
        if !(68..=65535).contains(&n.mtu) {
            return Err(LinkError::InvalidSpec(format!(
                "MTU {} of {}",
                n.mtu, n.bridge
            )));
        }
        if let Some(v) = &n.vxlan {
            check(&v.name, names::VXLAN_PREFIX)?;
            if v.vni == 0 || v.vni >= 1 << 24 {
                return Err(LinkError::InvalidSpec(format!(
                    "VNI {} of {}",
                    v.vni, v.name
                )));
            }
        }
        for p in &n.ports {
            check(&p.tap, names::TAP_PREFIX)?;
        }
    }
    Ok(())
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        IpAddr::V4(_) => false,
    }
}

/// Make the kernel (in `links`' namespace) match `desired`; return what changed.
///
/// An invalid desired state is refused before anything is touched. A network
/// that fails (e.g. its underlay device is missing) is reported in
/// [`LinkError::Converge`] together with the changes made to the others.
pub async fn converge(links: &Links, desired: &[NetworkLinks]) -> Result<Vec<Change>, LinkError> {
    validate(desired)?;
    let mut changes = Vec::new();
    let mut failures = Vec::new();
    for net in desired {
        // One broken network does not hold the others back.
        if let Err(e) = converge_network(links, net, &mut changes).await {
            failures.push((net.bridge.clone(), e));
        }
    }
    if let Err(e) = remove_leftovers(links, desired, &mut changes).await {
        failures.push(("leftovers".to_string(), e));
    }
    if failures.is_empty() {
        Ok(changes)
    } else {
        Err(LinkError::Converge { failures, changes })
    }
}

async fn converge_network(
    links: &Links,
    net: &NetworkLinks,
    changes: &mut Vec<Change>,
) -> Result<(), LinkError> {
    // The bridge.
    let mut br = links.get(&net.bridge).await?;
    if let Some(b) = &br {
        if b.kind != LinkKind::Bridge {
            links.delete(&net.bridge).await?;
            changes.push(Change::Replace(net.bridge.clone()));
            br = None;
        }
    }
    if br.is_none() {
        links.add_bridge(&net.bridge, None).await?;
        changes.push(Change::CreateBridge(net.bridge.clone()));
    }
    let br = links.require(&net.bridge).await?;
    if br.mtu != net.mtu {
        links.set_mtu(&net.bridge, net.mtu).await?;
        changes.push(Change::SetMtu(net.bridge.clone(), net.mtu));
    }
    if !br.up {
        links.set_up(&net.bridge, true).await?;
        changes.push(Change::SetUp(net.bridge.clone()));
    }

    // Bridge addresses.
    let have = links.addresses(&net.bridge).await?;
    for &(ip, p) in &net.addresses {
        if !have.contains(&(ip, p)) {
            links.add_address(&net.bridge, ip, p).await?;
            changes.push(Change::AddAddress(net.bridge.clone(), ip, p));
        }
    }
    for &(ip, p) in &have {
        if !is_link_local(&ip) && !net.addresses.contains(&(ip, p)) {
            links.del_address(&net.bridge, ip, p).await?;
            changes.push(Change::RemoveAddress(net.bridge.clone(), ip, p));
        }
    }

    // The VXLAN device and its remotes.
    if let Some(vx) = &net.vxlan {
        converge_vxlan(links, net, vx, br.index, changes).await?;
    }

    // Guest ports.
    for port in &net.ports {
        if let Some(cur) = links.get(&port.tap).await? {
            if must_replace(&cur.kind, port) {
                links.delete(&port.tap).await?;
                changes.push(Change::Replace(port.tap.clone()));
            }
        }
        if links.get(&port.tap).await?.is_none() {
            drop(links.create_tap(&port.tap_config())?);
            changes.push(Change::CreateTap(port.tap.clone()));
        }
        let state = links.require(&port.tap).await?;
        converge_port(links, &state, net, br.index, port.flags, changes).await?;
    }
    Ok(())
}

/// Whether an existing link of `port`'s name must make way for a new TAP:
/// any link that does not fit; with `adopt_existing`, only a TAP with other
/// flags (e.g. single- vs multi-queue) that no process has a queue of — a
/// TAP a guest holds is never torn down under it.
fn must_replace(kind: &LinkKind, port: &PortLinks) -> bool {
    if tap_matches(kind, port) {
        return false;
    }
    if !port.adopt_existing {
        return true;
    }
    matches!(kind, LinkKind::Tun(t) if t.queues == 0)
}

/// Whether an existing link can serve as `port`'s TAP: a TAP with the flags a
/// VMM will attach with (vnet header, multi-queue iff several queues, owner).
fn tap_matches(kind: &LinkKind, port: &PortLinks) -> bool {
    let want = port.tap_config();
    match kind {
        LinkKind::Tun(t) => {
            t.tap
                && t.vnet_hdr == want.vnet_hdr
                && t.multi_queue == (want.queues > 1)
                && t.owner == want.owner
        }
        _ => false,
    }
}

async fn converge_vxlan(
    links: &Links,
    net: &NetworkLinks,
    vx: &VxlanLinks,
    bridge_index: u32,
    changes: &mut Vec<Change>,
) -> Result<(), LinkError> {
    let underlay = match &vx.underlay {
        Some(u) => Some(links.require(u).await?.index),
        None => None,
    };
    let want = VxlanState {
        vni: vx.vni,
        local: Some(vx.local),
        dstport: vx.dstport,
        learning: false,
        underlay,
    };
    let mut cur = links.get(&vx.name).await?;
    if let Some(c) = &cur {
        if c.kind != LinkKind::Vxlan(want) {
            links.delete(&vx.name).await?;
            changes.push(Change::Replace(vx.name.clone()));
            cur = None;
        }
    }
    if cur.is_none() {
        links
            .add_vxlan(&VxlanConfig {
                name: vx.name.clone(),
                vni: vx.vni,
                local: vx.local,
                dstport: vx.dstport,
                underlay: vx.underlay.clone(),
                mtu: Some(net.mtu),
            })
            .await?;
        changes.push(Change::CreateVxlan(vx.name.clone()));
    }
    let state = links.require(&vx.name).await?;
    converge_port(links, &state, net, bridge_index, vx.flags, changes).await?;

    let have = links.fdb_remotes(&vx.name).await?;
    for r in &vx.remotes {
        if !have.contains(&IpAddr::V4(*r)) {
            links.fdb_append(&vx.name, IpAddr::V4(*r)).await?;
            changes.push(Change::AddRemote(vx.name.clone(), *r));
        }
    }
    for r in &have {
        let wanted = matches!(r, IpAddr::V4(v4) if vx.remotes.contains(v4));
        if !wanted {
            links.fdb_remove(&vx.name, *r).await?;
            changes.push(Change::RemoveRemote(vx.name.clone(), *r));
        }
    }
    Ok(())
}

async fn converge_port(
    links: &Links,
    state: &LinkState,
    net: &NetworkLinks,
    bridge_index: u32,
    flags: PortFlags,
    changes: &mut Vec<Change>,
) -> Result<(), LinkError> {
    let name = &state.name;
    if state.mtu != net.mtu {
        links.set_mtu(name, net.mtu).await?;
        changes.push(Change::SetMtu(name.clone(), net.mtu));
    }
    if state.controller != Some(bridge_index) {
        links.enslave(name, &net.bridge).await?;
        changes.push(Change::Enslave(name.clone(), net.bridge.clone()));
    }
    if !state.up {
        links.set_up(name, true).await?;
        changes.push(Change::SetUp(name.clone()));
    }
    let now = links.require(name).await?;
    if now.port_flags != Some(flags) {
        links.set_port_flags(name, flags).await?;
        changes.push(Change::SetPortFlags(name.clone(), flags));
    }
    Ok(())
}

async fn remove_leftovers(
    links: &Links,
    desired: &[NetworkLinks],
    changes: &mut Vec<Change>,
) -> Result<(), LinkError> {
    let mut wanted: HashSet<&str> = HashSet::new();
    for n in desired {
        wanted.insert(&n.bridge);
        if let Some(v) = &n.vxlan {
            wanted.insert(&v.name);
        }
        for p in &n.ports {
            wanted.insert(&p.tap);
        }
    }
    let mut leftovers: Vec<LinkState> = links
        .list()
        .await?
        .into_iter()
        .filter(|l| names::is_kiln_owned(&l.name) && !wanted.contains(l.name.as_str()))
        .collect();
    // Ports before bridges, so a bridge is never deleted under a port we
    // are about to delete anyway.
    leftovers.sort_by_key(|l| l.kind == LinkKind::Bridge);
    for l in leftovers {
        match links.delete(&l.name).await {
            Ok(()) => changes.push(Change::DeleteLeftover(l.name)),
            // Already gone (e.g. a veth peer deleted with its other end).
            Err(LinkError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> NetworkLinks {
        NetworkLinks {
            bridge: "kbr-a".into(),
            mtu: 1450,
            addresses: vec![],
            vxlan: Some(VxlanLinks {
                name: "kvx-a".into(),
                vni: 100,
                local: Ipv4Addr::new(192, 0, 2, 1),
                dstport: 4789,
                underlay: None,
                remotes: vec![],
                flags: PortFlags::default(),
            }),
            ports: vec![PortLinks {
                tap: "ktap-a".into(),
                queues: 1,
                owner: None,
                flags: PortFlags::default(),
                adopt_existing: false,
            }],
        }
    }

    #[test]
    fn an_adopted_tap_of_the_wrong_queue_mode_is_replaced_only_when_unused() {
        use super::super::state::TunState;
        let mut port = net().ports.remove(0);
        port.queues = 2;
        let tap = |multi_queue, queues| {
            LinkKind::Tun(TunState {
                tap: true,
                vnet_hdr: true,
                multi_queue,
                persist: true,
                queues,
                ..TunState::default()
            })
        };
        port.adopt_existing = true;
        assert!(!must_replace(&tap(true, 0), &port));
        assert!(must_replace(&tap(false, 0), &port));
        assert!(!must_replace(&tap(false, 1), &port), "a guest holds it");
        assert!(!must_replace(&LinkKind::Veth, &port));
        port.adopt_existing = false;
        assert!(must_replace(&tap(false, 1), &port));
        assert!(must_replace(&LinkKind::Veth, &port));
        port.queues = 1;
        assert!(!must_replace(&tap(false, 3), &port));
    }

    #[test]
    fn validation_refuses_foreign_names_duplicates_and_bad_vnis() {
        assert!(validate(&[net()]).is_ok());
        let mut n = net();
        n.bridge = "br0".into();
        assert!(validate(&[n]).is_err());
        let mut n = net();
        n.ports[0].tap = "kbr-a".into();
        assert!(validate(&[n]).is_err());
        let mut n = net();
        if let Some(v) = n.vxlan.as_mut() {
            v.vni = 1 << 24;
        }
        assert!(validate(&[n]).is_err());
        let mut n = net();
        n.mtu = 10;
        assert!(validate(&[n]).is_err());
        assert!(validate(&[net(), net()]).is_err());
    }

    #[test]
    fn link_local_v6_is_recognised() {
        assert!(is_link_local(&"fe80::1".parse().unwrap()));
        assert!(!is_link_local(&"2001:db8::1".parse().unwrap()));
        assert!(!is_link_local(&"10.0.0.1".parse().unwrap()));
    }
}
