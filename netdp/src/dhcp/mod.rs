//! DHCPv4 server for guests: static leases for a network's ports only (Neutron semantics), answering on the network's bridge only.
//!
//! - [`packet`]: the wire format, a pure parser that never panics.
//! - [`lease`]: leases, network options and the pure reply decision.
//! - [`server`]: the socket (port 67, SO_BINDTODEVICE to the bridge,
//!   broadcast replies) and its serving thread.

pub mod lease;
pub mod packet;
pub mod server;

pub use lease::{respond, Destination, Lease, LeaseTable, NetworkOptions, Reply, StaticRoute};
pub use packet::{parse, Message, MessageType, PacketError};
pub use server::{DhcpServer, ServerConfig};

/// What can stop a DHCP server from starting.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// Creating, configuring or binding the socket failed.
    #[error("DHCP socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The socket could not be bound to the bridge.
    #[error("bind DHCP socket to {0}: {1}")]
    Device(String, #[source] std::io::Error),
    /// The bridge has no IPv4 address to serve from.
    #[error("bridge {0} has no IPv4 address for the DHCP server identifier: {1}")]
    NoAddress(String, #[source] std::io::Error),
}
