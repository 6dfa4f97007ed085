//! kiln-netdp: the host network data plane.
//!
//! Desired state (plain data from the controller) goes in; kernel operations
//! come out: links and TAPs through rtnetlink and `/dev/net/tun`, security
//! groups and anti-spoofing as nf_tables netlink batches, DHCPv4 for guests.

pub mod dhcp;
pub mod link;
pub mod model;
pub mod netns;
pub mod nft;
pub mod probe;
pub mod secgroup;
