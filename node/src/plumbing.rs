//! The seam between the KVM driver and the host network: what a driver asks of
//! the node's network side before a guest starts and after it is gone.
//!
//! The network side (netdp wired to the controller's desired state) puts each
//! port's host interface on its network's bridge, installs the port's security
//! groups and anti-spoofing rules, registers its DHCP lease and serves the
//! guest's metadata. The driver only needs the interface names back, to hand
//! them to `kiln-vmm`.

use kiln_controller::protocol::Spawn;

use crate::driver::DriverFuture;

/// One port made ready on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugged {
    pub port_id: String,
    /// The host-side TAP (persistent, `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`,
    /// plus `IFF_MULTI_QUEUE` when `queues` > 1) that `kiln-vmm` opens by name.
    pub ifname: String,
    /// The guest's MAC, as Neutron allocated it.
    pub mac: String,
    /// Queue pairs kiln-vmm must open the TAP with (the TAP is multi-queue
    /// exactly when this is more than one).
    pub queues: u16,
}

pub trait Plumbing: Send + Sync + 'static {
    /// Makes every port of `spec` ready (idempotent: a port already plugged is
    /// left as it is) and records the server's metadata for the metadata
    /// service. Returns the ports in `spec.ports` order.
    fn plug<'a>(&'a self, spec: &'a Spawn) -> DriverFuture<'a, Vec<Plugged>>;
    /// Removes the interfaces, rules, leases and metadata of a server's ports.
    /// Unknown servers are not an error.
    fn unplug<'a>(&'a self, server_id: &'a str) -> DriverFuture<'a, ()>;
}
