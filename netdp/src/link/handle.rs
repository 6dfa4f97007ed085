//! `Links`: an async rtnetlink handle bound to one network namespace, with the link, address, route and FDB operations kiln uses.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};

use futures::TryStreamExt;
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::RouteType;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, TokioSocket};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan,
    RouteMessageBuilder,
};

use super::state::{LinkState, PortFlags};
use super::tap::{self, Tap, TapConfig};
use super::LinkError;
use crate::netns;

/// The all-zero MAC of a VXLAN "flood to this remote" FDB entry.
const ZERO_MAC: [u8; 6] = [0; 6];

/// How a VXLAN device is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    /// Link name.
    pub name: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// Local tunnel endpoint address.
    pub local: Ipv4Addr,
    /// UDP destination port (4789 is the IANA port).
    pub dstport: u16,
    /// Underlay device to send through, if pinned to one.
    pub underlay: Option<String>,
    /// MTU for the VXLAN device.
    pub mtu: Option<u32>,
}

/// An rtnetlink connection to one network namespace.
///
/// Every method is async and needs a tokio runtime (the connection task runs
/// on it). Sync callers wrap the work in [`super::block_on`].
pub struct Links {
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
    netns: Option<String>,
}

impl Drop for Links {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn op_err(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let op = op.into();
    move |source| LinkError::Netlink { op, source }
}

/// The errno a netlink error carries (positive), if any.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

impl Links {
    /// Connect to the namespace the calling thread is in.
    pub fn open() -> Result<Self, LinkError> {
        let socket = Socket::new(NETLINK_ROUTE).map_err(LinkError::Io)?;
        Self::from_socket(socket, None)
    }

    /// Connect to the named namespace (`/run/netns/NAME`). The socket is
    /// opened on a thread inside the namespace and keeps working there.
    pub fn open_in(netns_name: &str) -> Result<Self, LinkError> {
        let socket = netns::run_in(netns_name, || Socket::new(NETLINK_ROUTE))
            .map_err(LinkError::Io)?
            .map_err(LinkError::Io)?;
        Self::from_socket(socket, Some(netns_name.to_string()))
    }

    /// Connect to `netns_name` if given, else to the caller's namespace.
    pub fn open_maybe_in(netns_name: Option<&str>) -> Result<Self, LinkError> {
        match netns_name {
            Some(n) => Self::open_in(n),
            None => Self::open(),
        }
    }

    fn from_socket(socket: Socket, netns: Option<String>) -> Result<Self, LinkError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| LinkError::NoRuntime)?;
        socket.set_non_blocking(true).map_err(LinkError::Io)?;
        let fd = socket.into_raw_fd();
        let _guard = rt.enter();
        // SAFETY: `fd` is a netlink socket we own (just released from `Socket`),
        // already non-blocking; a runtime is entered, so registering it with
        // the reactor inside `from_raw_fd` succeeds.
        let tokio_socket = unsafe { TokioSocket::from_raw_fd(fd) };
        let (conn, handle, _) = rtnetlink::from_socket(tokio_socket);
        let task = rt.spawn(conn);
        Ok(Self {
            handle,
            task,
            netns,
        })
    }

    /// The named namespace this connection works on (`None`: the one the
    /// connection was opened in by [`Links::open`]).
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// Create a TAP in this connection's namespace (see [`tap::create`]).
    pub fn create_tap(&self, cfg: &TapConfig) -> Result<Tap, LinkError> {
        match &self.netns {
            Some(ns) => Ok(netns::run_in(ns, || tap::create(cfg)).map_err(LinkError::Io)??),
            None => Ok(tap::create(cfg)?),
        }
    }

    /// The raw rtnetlink handle, for operations this type does not wrap.
    pub fn raw(&self) -> &Handle {
        &self.handle
    }

    // ---------------------------------------------------------------- links

    /// Every link in the namespace.
    pub async fn list(&self) -> Result<Vec<LinkState>, LinkError> {
        let msgs: Vec<_> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(op_err("dump links"))?;
        Ok(msgs.iter().map(LinkState::from_message).collect())
    }

    /// The named link, or `None` if there is none.
    pub async fn get(&self, name: &str) -> Result<Option<LinkState>, LinkError> {
        let res: Result<Vec<_>, _> = self
            .handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_collect()
            .await;
        match res {
            Ok(msgs) => Ok(msgs.first().map(LinkState::from_message)),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(op_err(format!("get link {name}"))(e)),
        }
    }

    /// The named link; `NotFound` if it does not exist.
    pub async fn require(&self, name: &str) -> Result<LinkState, LinkError> {
        self.get(name)
            .await?
            .ok_or_else(|| LinkError::NotFound(name.to_string()))
    }

    async fn index(&self, name: &str) -> Result<u32, LinkError> {
        Ok(self.require(name).await?.index)
    }

    async fn change(
        &self,
        op: String,
        msg: LinkMessageBuilder<LinkUnspec>,
    ) -> Result<(), LinkError> {
        self.handle
            .link()
            .change(msg.build())
            .execute()
            .await
            .map_err(op_err(op))
    }

    /// Create a bridge, up, with the given MTU.
    pub async fn add_bridge(&self, name: &str, mtu: Option<u32>) -> Result<(), LinkError> {
        let mut b = LinkBridge::new(name);
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        self.handle
            .link()
            .add(b.build())
            .execute()
            .await
            .map_err(op_err(format!("create bridge {name}")))
    }

    /// Create a veth pair `name` <-> `peer` (both down).
    pub async fn add_veth(&self, name: &str, peer: &str) -> Result<(), LinkError> {
        self.handle
            .link()
            .add(LinkVeth::new(name, peer).build())
            .execute()
            .await
            .map_err(op_err(format!("create veth {name}/{peer}")))
    }

    /// Create a VXLAN device, up, with MAC learning off (remotes come from
    /// FDB entries, see [`Links::fdb_append`]).
    pub async fn add_vxlan(&self, cfg: &VxlanConfig) -> Result<(), LinkError> {
        let mut b = LinkVxlan::new(&cfg.name, cfg.vni)
            .local(cfg.local)
            .port(cfg.dstport)
            .learning(false);
        if let Some(dev) = &cfg.underlay {
            b = b.dev(self.index(dev).await?);
        }
        if let Some(m) = cfg.mtu {
            b = b.mtu(m);
        }
        self.handle
            .link()
            .add(b.up().build())
            .execute()
            .await
            .map_err(op_err(format!("create vxlan {}", cfg.name)))
    }

    /// Set a link administratively up or down.
    pub async fn set_up(&self, name: &str, up: bool) -> Result<(), LinkError> {
        let idx = self.index(name).await?;
        let m = LinkUnspec::new_with_index(idx);
        let m = if up { m.up() } else { m.down() };
        self.change(format!("set {name} up={up}"), m).await
    }

    /// Set a link's MTU.
    pub async fn set_mtu(&self, name: &str, mtu: u32) -> Result<(), LinkError> {
        let idx = self.index(name).await?;
        self.change(
            format!("set {name} mtu {mtu}"),
            LinkUnspec::new_with_index(idx).mtu(mtu),
        )
        .await
    }

    /// Set a link's MAC address.
    pub async fn set_mac(&self, name: &str, mac: [u8; 6]) -> Result<(), LinkError> {
        let idx = self.index(name).await?;
        self.change(
            format!("set {name} address"),
            LinkUnspec::new_with_index(idx).address(mac.to_vec()),
        )
        .await
    }

    /// Enslave `name` to `bridge`.
    pub async fn enslave(&self, name: &str, bridge: &str) -> Result<(), LinkError> {
        let idx = self.index(name).await?;
        let br = self.index(bridge).await?;
        self.change(
            format!("enslave {name} to {bridge}"),
            LinkUnspec::new_with_index(idx).controller(br),
        )
        .await
    }

    /// Release `name` from its bridge.
    pub async fn release(&self, name: &str) -> Result<(), LinkError> {
        let idx = self.index(name).await?;
        self.change(
            format!("release {name}"),
            LinkUnspec::new_with_index(idx).nocontroller(),
        )
        .await
    }

    /// Set the bridge-port flags of an enslaved link.
    pub async fn set_port_flags(&self, name: &str, flags: PortFlags) -> Result<(), LinkError> {
        let idx = self.index(name).await?;
        let msg = LinkBridgePort::new(idx)
            .learning(flags.learning)
            .flood(flags.flood)
            .neigh_suppress(flags.neigh_suppress)
            .build();
        self.handle
            .link()
            .set_port(msg)
            .execute()
            .await
            .map_err(op_err(format!("set port flags of {name}")))
    }

    /// Delete a link (for a veth, both ends go).
    pub async fn delete(&self, name: &str) -> Result<(), LinkError> {
        let idx = self.index(name).await?;
        self.handle
            .link()
            .del(idx)
            .execute()
            .await
            .map_err(op_err(format!("delete {name}")))
    }

    /// Move a link into the named namespace, optionally renaming it on the way
    /// (e.g. a guest's veth end becomes `eth0`).
    pub async fn move_to_netns(
        &self,
        name: &str,
        netns_name: &str,
        new_name: Option<&str>,
    ) -> Result<(), LinkError> {
        let idx = self.index(name).await?;
        let ns = File::open(netns::path(netns_name)).map_err(LinkError::Io)?;
        let mut m = LinkUnspec::new_with_index(idx).setns_by_fd(ns.as_raw_fd());
        if let Some(n) = new_name {
            m = m.name(n);
        }
        self.change(format!("move {name} to netns {netns_name}"), m)
            .await
    }

    // ------------------------------------------------------------ addresses

    /// Add an address to a link.
    pub async fn add_address(&self, name: &str, ip: IpAddr, prefix: u8) -> Result<(), LinkError> {
        let idx = self.index(name).await?;
        self.handle
            .address()
            .add(idx, ip, prefix)
            .execute()
            .await
            .map_err(op_err(format!("add address {ip}/{prefix} to {name}")))
    }

    async fn address_messages(&self, idx: u32) -> Result<Vec<AddressMessage>, LinkError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(idx)
            .execute()
            .try_collect()
            .await
            .map_err(op_err("dump addresses"))?;
        // The filter is applied in user space by rtnetlink only for some
        // kernels; filter again.
        Ok(msgs.into_iter().filter(|m| m.header.index == idx).collect())
    }

    /// The addresses on a link, as (address, prefix length).
    pub async fn addresses(&self, name: &str) -> Result<Vec<(IpAddr, u8)>, LinkError> {
        let idx = self.index(name).await?;
        Ok(self
            .address_messages(idx)
            .await?
            .iter()
            .filter_map(address_of)
            .collect())
    }

    /// Remove one address from a link (no error if it is not there).
    pub async fn del_address(&self, name: &str, ip: IpAddr, prefix: u8) -> Result<(), LinkError> {
        let idx = self.index(name).await?;
        for m in self.address_messages(idx).await? {
            if address_of(&m) == Some((ip, prefix)) {
                self.handle
                    .address()
                    .del(m)
                    .execute()
                    .await
                    .map_err(op_err(format!("delete address {ip}/{prefix} from {name}")))?;
            }
        }
        Ok(())
    }

    // --------------------------------------------------------------- routes

    /// Add a route to `dest/prefix`, through `gateway` and/or out of `dev`.
    pub async fn add_route(
        &self,
        dest: IpAddr,
        prefix: u8,
        gateway: Option<IpAddr>,
        dev: Option<&str>,
    ) -> Result<(), LinkError> {
        let op = format!("add route {dest}/{prefix}");
        fn bad(e: impl std::fmt::Display) -> LinkError {
            LinkError::InvalidRoute(e.to_string())
        }
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dest, prefix)
            .map_err(bad)?;
        if let Some(gw) = gateway {
            b = b.gateway(gw).map_err(bad)?;
        }
        if let Some(d) = dev {
            b = b.output_interface(self.index(d).await?);
        }
        self.handle
            .route()
            .add(b.build())
            .execute()
            .await
            .map_err(op_err(op))
    }

    // ------------------------------------------------------------------ FDB

    async fn fdb_request(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: String,
    ) -> Result<(), LinkError> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        let mut handle = self.handle.clone();
        let mut resp = handle.request(req).map_err(op_err(op.clone()))?;
        use futures::StreamExt;
        while let Some(m) = resp.next().await {
            if let NetlinkPayload::Error(e) = m.payload {
                return Err(op_err(op)(rtnetlink::Error::NetlinkError(e)));
            }
        }
        Ok(())
    }

    fn fdb_message(idx: u32, remote: IpAddr) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = idx;
        m.header.state = NeighbourState::Permanent;
        m.header.flags = NeighbourFlags::Own;
        m.header.kind = RouteType::Unspec;
        m.attributes = vec![
            NeighbourAttribute::LinkLayerAddress(ZERO_MAC.to_vec()),
            NeighbourAttribute::Destination(match remote {
                IpAddr::V4(v) => NeighbourAddress::Inet(v),
                IpAddr::V6(v) => NeighbourAddress::Inet6(v),
            }),
        ];
        m
    }

    /// Add a remote endpoint to a VXLAN device: broadcast, unknown-unicast and
    /// multicast frames are also sent to it (`bridge fdb append
    /// 00:00:00:00:00:00 dev VX dst REMOTE`). Several remotes coexist.
    pub async fn fdb_append(&self, vxlan: &str, remote: IpAddr) -> Result<(), LinkError> {
        let idx = self.index(vxlan).await?;
        self.fdb_request(
            RouteNetlinkMessage::NewNeighbour(Self::fdb_message(idx, remote)),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND,
            format!("fdb append {remote} on {vxlan}"),
        )
        .await
    }

    /// Remove one remote endpoint from a VXLAN device.
    pub async fn fdb_remove(&self, vxlan: &str, remote: IpAddr) -> Result<(), LinkError> {
        let idx = self.index(vxlan).await?;
        self.fdb_request(
            RouteNetlinkMessage::DelNeighbour(Self::fdb_message(idx, remote)),
            NLM_F_REQUEST | NLM_F_ACK,
            format!("fdb remove {remote} on {vxlan}"),
        )
        .await
    }

    /// The remote endpoints (all-zero-MAC FDB entries) of a VXLAN device.
    pub async fn fdb_remotes(&self, vxlan: &str) -> Result<Vec<IpAddr>, LinkError> {
        let idx = self.index(vxlan).await?;
        let msgs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(op_err("dump fdb"))?;
        let mut out = Vec::new();
        for m in msgs.iter().filter(|m| m.header.ifindex == idx) {
            let mut zero = false;
            let mut dst = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(l) => zero = l.as_slice() == ZERO_MAC,
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => {
                        dst = Some(IpAddr::V4(*v))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => {
                        dst = Some(IpAddr::V6(*v))
                    }
                    // In AF_BRIDGE messages the address family of NDA_DST is
                    // not in the header, so it arrives as raw bytes.
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                        dst = ip_from_bytes(b)
                    }
                    _ => {}
                }
            }
            if let (true, Some(d)) = (zero, dst) {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(b) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(b).ok().map(IpAddr::from)
}

fn address_of(m: &AddressMessage) -> Option<(IpAddr, u8)> {
    let prefix = m.header.prefix_len;
    // IFA_LOCAL is the interface's own address on point-to-point links; on
    // Ethernet-like links IFA_ADDRESS and IFA_LOCAL agree.
    let mut addr = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => return Some((*ip, prefix)),
            AddressAttribute::Address(ip) => addr = Some(*ip),
            _ => {}
        }
    }
    addr.map(|ip| (ip, prefix))
}
