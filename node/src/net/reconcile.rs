//! One reconcile pass: the controller's desired state for this host made
//! true in the kernel — links (bridges, VXLAN, port interfaces), security
//! groups (one atomic nf_tables batch), the DHCP/metadata namespaces — with
//! leftovers removed and port status reported back. A pass on an unchanged
//! state changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use kiln_netdp::link::{converge, names, Change, Links};
use kiln_netdp::secgroup::SecurityGroups;

use super::client::Controller;
use super::desired::{network_links, security_model, Desired};
use super::dhcpns::{self, DhcpNamespace};
use super::metadata::Registry;
use super::NetError;

/// What a pass did (for logs and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// False when the desired state was unchanged and nothing was done.
    pub ran: bool,
    pub link_changes: Vec<String>,
    /// nf_tables messages sent (0: the rules were already right).
    pub nft_messages: usize,
    pub namespaces_started: Vec<String>,
    pub namespaces_removed: Vec<String>,
    pub status_reports: usize,
}

/// The node's network state between passes.
pub struct State {
    /// This node's tag in namespace names ([`dhcpns::node_tag`]).
    pub tag: String,
    pub links: Links,
    pub sg: SecurityGroups,
    pub namespaces: BTreeMap<String, DhcpNamespace>,
    /// Ports of unplugged servers: not wired while the controller still
    /// binds them here.
    pub unplugged: BTreeSet<String>,
    /// The desired state last realised in full.
    pub last: Option<String>,
    pub desired: Desired,
}

impl State {
    pub fn new(tag: String, links: Links, sg: SecurityGroups) -> State {
        State {
            tag,
            links,
            sg,
            namespaces: BTreeMap::new(),
            unplugged: BTreeSet::new(),
            last: None,
            desired: Desired::default(),
        }
    }
}

/// Run one pass. `force`: even when the desired state is unchanged.
pub async fn pass(
    st: &mut State,
    client: &Controller,
    registry: &Arc<Registry>,
    tunnel: Option<Ipv4Addr>,
    force: bool,
) -> Result<Pass, NetError> {
    let (fetched, text) = client.desired().await?;
    let mut out = Pass::default();
    if !force && st.last.as_deref() == Some(text.as_str()) {
        return Ok(out);
    }
    out.ran = true;
    st.unplugged
        .retain(|id| fetched.ports.iter().any(|p| &p.id == id));
    let mut d = fetched.clone();
    d.ports.retain(|p| !st.unplugged.contains(&p.id));
    let active: BTreeSet<String> = d.active_networks().into_iter().map(String::from).collect();

    // This host's DHCP port of every active network with a DHCP subnet.
    for net in d.networks.clone() {
        if !active.contains(&net.id) || net.dhcp_subnet().is_none() {
            continue;
        }
        if d.dhcp_port(&net.id).is_none() {
            let p = client.claim_dhcp_port(&net.id).await?;
            d.ports.push(p);
        }
    }
    for n in &d.networks {
        registry.set_mtu(&n.id, n.mtu);
    }

    // Links, then the rules that name them.
    let changes: Vec<Change> = match converge(&st.links, &network_links(&d, tunnel)).await {
        Ok(c) => c,
        Err(e) => return Err(e.into()),
    };
    out.link_changes = changes.iter().map(ToString::to_string).collect();
    let model = security_model(&d);
    let applied = if model.ports.is_empty() {
        st.sg.remove()?
    } else {
        st.sg.reconcile(&model)?
    };
    out.nft_messages = applied.messages;

    // DHCP and metadata namespaces.
    let mut wanted_ns = BTreeSet::new();
    for net in d.networks.iter().filter(|n| active.contains(&n.id)) {
        let (Some(subnet), Some(dport)) = (net.dhcp_subnet(), d.dhcp_port(&net.id)) else {
            continue;
        };
        wanted_ns.insert(dhcpns::ns_name(&st.tag, &net.id));
        let stale = st
            .namespaces
            .get(&net.id)
            .is_some_and(|n| !n.serves(net, subnet, dport));
        if stale {
            if let Some(n) = st.namespaces.remove(&net.id) {
                n.stop(&st.links).await?;
            }
        }
        match st.namespaces.get(&net.id) {
            Some(n) => n.update(&d, net, subnet),
            None => {
                let n = DhcpNamespace::start(
                    &st.links,
                    &st.tag,
                    &d,
                    net,
                    subnet,
                    dport,
                    registry.clone(),
                )
                .await?;
                out.namespaces_started.push(n.ns.clone());
                st.namespaces.insert(net.id.clone(), n);
            }
        }
    }
    let gone: Vec<String> = st
        .namespaces
        .keys()
        .filter(|id| !active.contains(*id))
        .cloned()
        .collect();
    for id in gone {
        if let Some(n) = st.namespaces.remove(&id) {
            out.namespaces_removed.push(n.ns.clone());
            n.stop(&st.links).await?;
        }
    }
    for ns in dhcpns::existing(&st.tag)? {
        if !wanted_ns.contains(&ns) {
            dhcpns::remove_namespace(&st.links, &ns).await?;
            out.namespaces_removed.push(ns);
        }
    }

    // DHCP ports of networks this host no longer serves go back to IPAM.
    for p in fetched.ports.iter().filter(|p| p.is_dhcp()) {
        if !active.contains(&p.network_id) {
            client.release_dhcp_port(&p.network_id).await?;
        }
    }

    // Port status: ACTIVE once wired, DOWN once unplugged.
    for p in d.guest_ports() {
        if p.status != "ACTIVE" && st.links.get(&names::tap(&p.id)).await?.is_some() {
            client.port_status(&p.id, "ACTIVE").await?;
            out.status_reports += 1;
        }
    }
    for p in fetched.guest_ports() {
        if st.unplugged.contains(&p.id) && p.status == "ACTIVE" {
            client.port_status(&p.id, "DOWN").await?;
            out.status_reports += 1;
        }
    }

    st.desired = d;
    // Our own reports change the desired state; the next pass sees them.
    st.last = if out.status_reports == 0 {
        Some(text)
    } else {
        None
    };
    Ok(out)
}
