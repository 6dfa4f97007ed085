//! What the kernel says a link is: a plain snapshot decoded from an rtnetlink link message.

use std::net::Ipv4Addr;

use rtnetlink::packet_core::Nla;
use rtnetlink::packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoTun, InfoVxlan, LinkAttribute, LinkFlags,
    LinkInfo, LinkMessage,
};

/// Bridge-port behaviour kiln sets per port (`ip link set DEV type bridge_slave ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortFlags {
    /// Learn source MACs seen on this port.
    pub learning: bool,
    /// Flood unknown-unicast frames to this port.
    pub flood: bool,
    /// Answer ARP/ND for this port from the bridge's neighbour table.
    pub neigh_suppress: bool,
}

impl Default for PortFlags {
    /// The kernel's defaults for a new bridge port.
    fn default() -> Self {
        Self {
            learning: true,
            flood: true,
            neigh_suppress: false,
        }
    }
}

/// VXLAN parameters as the kernel reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanState {
    /// VXLAN network identifier.
    pub vni: u32,
    /// Local tunnel endpoint address, if set.
    pub local: Option<Ipv4Addr>,
    /// UDP destination port.
    pub dstport: u16,
    /// Whether the VXLAN device learns remote MACs by itself.
    pub learning: bool,
    /// Underlay device index, if one was given.
    pub underlay: Option<u32>,
}

/// TUN/TAP parameters as the kernel reports them (IFLA_TUN_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TunState {
    /// A TAP (Ethernet frames) rather than a TUN (IP packets).
    pub tap: bool,
    /// Frames carry a virtio-net header.
    pub vnet_hdr: bool,
    /// Several queues may attach.
    pub multi_queue: bool,
    /// Survives the last fd closing.
    pub persist: bool,
    /// User allowed to attach.
    pub owner: Option<u32>,
    /// Group allowed to attach.
    pub group: Option<u32>,
    /// Queues attached now.
    pub queues: u32,
}

/// The kind of a link, as far as kiln cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// A Linux bridge.
    Bridge,
    /// One end of a veth pair.
    Veth,
    /// A VXLAN device.
    Vxlan(VxlanState),
    /// A TUN/TAP device.
    Tun(TunState),
    /// Anything else, by its kernel kind name (empty for kind-less links like `lo`).
    Other(String),
}

/// A snapshot of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// What the link is.
    pub kind: LinkKind,
    /// Administratively up.
    pub up: bool,
    /// MTU in bytes.
    pub mtu: u32,
    /// Hardware address (six bytes for Ethernet-like links).
    pub mac: Option<[u8; 6]>,
    /// Index of the bridge (or other controller) this link is enslaved to.
    pub controller: Option<u32>,
    /// Bridge-port flags when the link is a bridge port.
    pub port_flags: Option<PortFlags>,
}

impl LinkState {
    /// Decode a link message from a dump or a get. Unknown attributes are ignored.
    pub fn from_message(msg: &LinkMessage) -> Self {
        let mut state = LinkState {
            index: msg.header.index,
            name: String::new(),
            kind: LinkKind::Other(String::new()),
            up: msg.header.flags.contains(LinkFlags::Up),
            mtu: 0,
            mac: None,
            controller: None,
            port_flags: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => state.name = n.clone(),
                LinkAttribute::Mtu(m) => state.mtu = *m,
                LinkAttribute::Address(a) => state.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                LinkAttribute::Controller(c) if *c != 0 => state.controller = Some(*c),
                LinkAttribute::LinkInfo(infos) => decode_info(infos, &mut state),
                _ => {}
            }
        }
        state
    }
}

fn decode_info(infos: &[LinkInfo], state: &mut LinkState) {
    let mut kind = None;
    let mut vxlan = None;
    let mut tun = TunState::default();
    for info in infos {
        match info {
            LinkInfo::Kind(k) => kind = Some(k.clone()),
            LinkInfo::Data(InfoData::Vxlan(v)) => vxlan = Some(decode_vxlan(v)),
            LinkInfo::Data(InfoData::Tun(t)) => tun = decode_tun(t),
            LinkInfo::PortData(InfoPortData::BridgePort(p)) => {
                state.port_flags = Some(decode_port(p));
            }
            _ => {}
        }
    }
    state.kind = match kind {
        Some(InfoKind::Bridge) => LinkKind::Bridge,
        Some(InfoKind::Veth) => LinkKind::Veth,
        Some(InfoKind::Tun) => LinkKind::Tun(tun),
        Some(InfoKind::Vxlan) => LinkKind::Vxlan(vxlan.unwrap_or(VxlanState {
            vni: 0,
            local: None,
            dstport: 0,
            learning: true,
            underlay: None,
        })),
        Some(other) => LinkKind::Other(other.to_string()),
        None => LinkKind::Other(String::new()),
    };
}

fn decode_vxlan(attrs: &[InfoVxlan]) -> VxlanState {
    let mut v = VxlanState {
        vni: 0,
        local: None,
        dstport: 0,
        learning: true,
        underlay: None,
    };
    for a in attrs {
        match a {
            InfoVxlan::Id(id) => v.vni = *id,
            InfoVxlan::Local(ip) => v.local = Some(*ip),
            InfoVxlan::Port(p) => v.dstport = *p,
            InfoVxlan::Learning(l) => v.learning = *l,
            InfoVxlan::Link(i) if *i != 0 => v.underlay = Some(*i),
            _ => {}
        }
    }
    v
}

// IFLA_TUN_* attribute numbers (linux/if_link.h).
const IFLA_TUN_OWNER: u16 = 1;
const IFLA_TUN_GROUP: u16 = 2;
const IFLA_TUN_TYPE: u16 = 3;
const IFLA_TUN_VNET_HDR: u16 = 5;
const IFLA_TUN_PERSIST: u16 = 6;
const IFLA_TUN_MULTI_QUEUE: u16 = 7;
const IFLA_TUN_NUM_QUEUES: u16 = 8;
/// IFF_TAP as IFLA_TUN_TYPE reports it.
const TUN_TYPE_TAP: u8 = 2;

fn decode_tun(attrs: &[InfoTun]) -> TunState {
    let mut t = TunState::default();
    for a in attrs {
        let InfoTun::Other(nla) = a else { continue };
        let mut v = vec![0u8; nla.value_len()];
        nla.emit_value(&mut v);
        let byte = v.first().copied().unwrap_or(0);
        let word = <[u8; 4]>::try_from(v.as_slice())
            .map(u32::from_ne_bytes)
            .ok();
        // The kernel reports "no owner/group" as -1.
        let id = word.filter(|&w| w != u32::MAX);
        match nla.kind() {
            IFLA_TUN_OWNER => t.owner = id,
            IFLA_TUN_GROUP => t.group = id,
            IFLA_TUN_TYPE => t.tap = byte == TUN_TYPE_TAP,
            IFLA_TUN_VNET_HDR => t.vnet_hdr = byte != 0,
            IFLA_TUN_PERSIST => t.persist = byte != 0,
            IFLA_TUN_MULTI_QUEUE => t.multi_queue = byte != 0,
            IFLA_TUN_NUM_QUEUES => t.queues = word.unwrap_or(0),
            _ => {}
        }
    }
    t
}

fn decode_port(attrs: &[InfoBridgePort]) -> PortFlags {
    let mut f = PortFlags::default();
    for a in attrs {
        match a {
            InfoBridgePort::Learning(b) => f.learning = *b,
            InfoBridgePort::UnicastFlood(b) => f.flood = *b,
            InfoBridgePort::NeighSupress(b) => f.neigh_suppress = *b,
            _ => {}
        }
    }
    f
}

/// Format a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = *mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::link::InfoPortKind;

    #[test]
    fn decodes_a_vxlan_bridge_port() {
        let mut msg = LinkMessage::default();
        msg.header.index = 7;
        msg.header.flags = LinkFlags::Up;
        msg.attributes = vec![
            LinkAttribute::IfName("kvx-abc".into()),
            LinkAttribute::Mtu(1450),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
            LinkAttribute::Controller(3),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Vxlan),
                LinkInfo::Data(InfoData::Vxlan(vec![
                    InfoVxlan::Id(42),
                    InfoVxlan::Local(Ipv4Addr::new(10, 0, 0, 1)),
                    InfoVxlan::Port(4789),
                    InfoVxlan::Learning(false),
                ])),
                LinkInfo::PortKind(InfoPortKind::Bridge),
                LinkInfo::PortData(InfoPortData::BridgePort(vec![
                    InfoBridgePort::Learning(false),
                    InfoBridgePort::UnicastFlood(true),
                    InfoBridgePort::NeighSupress(true),
                ])),
            ]),
        ];
        let s = LinkState::from_message(&msg);
        assert_eq!(s.index, 7);
        assert_eq!(s.name, "kvx-abc");
        assert!(s.up);
        assert_eq!(s.mtu, 1450);
        assert_eq!(s.mac, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(s.controller, Some(3));
        assert_eq!(
            s.kind,
            LinkKind::Vxlan(VxlanState {
                vni: 42,
                local: Some(Ipv4Addr::new(10, 0, 0, 1)),
                dstport: 4789,
                learning: false,
                underlay: None,
            })
        );
        assert_eq!(
            s.port_flags,
            Some(PortFlags {
                learning: false,
                flood: true,
                neigh_suppress: true
            })
        );
    }

    #[test]
    fn decodes_tun_attributes() {
        use rtnetlink::packet_core::DefaultNla;
        let nla = |k, v: Vec<u8>| InfoTun::Other(DefaultNla::new(k, v));
        let t = decode_tun(&[
            nla(IFLA_TUN_OWNER, 1000u32.to_ne_bytes().to_vec()),
            nla(IFLA_TUN_GROUP, u32::MAX.to_ne_bytes().to_vec()),
            nla(IFLA_TUN_TYPE, vec![TUN_TYPE_TAP]),
            nla(IFLA_TUN_VNET_HDR, vec![1]),
            nla(IFLA_TUN_PERSIST, vec![0]),
            nla(IFLA_TUN_MULTI_QUEUE, vec![1]),
            nla(IFLA_TUN_NUM_QUEUES, 3u32.to_ne_bytes().to_vec()),
            nla(IFLA_TUN_OWNER + 100, vec![]),
        ]);
        assert_eq!(
            t,
            TunState {
                tap: true,
                vnet_hdr: true,
                multi_queue: true,
                persist: false,
                owner: Some(1000),
                group: None,
                queues: 3,
            }
        );
        // Short values read as absent, not as a panic.
        assert_eq!(decode_tun(&[nla(IFLA_TUN_OWNER, vec![1])]).owner, None);
    }

    #[test]
    fn a_link_without_info_is_other_and_down() {
        let mut msg = LinkMessage::default();
        msg.attributes = vec![LinkAttribute::IfName("lo".into())];
        let s = LinkState::from_message(&msg);
        assert_eq!(s.kind, LinkKind::Other(String::new()));
        assert!(!s.up);
        assert_eq!(s.controller, None);
        assert_eq!(
            format_mac(&[0xde, 0xad, 0, 1, 2, 0xff]),
            "de:ad:00:01:02:ff"
        );
    }
}
