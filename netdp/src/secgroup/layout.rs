//! The fixed layout of kiln's two tables (the "skeleton"): base chains, the
//! anti-spoofing rules, the maps that lead to per-port chains, and their names.
//!
//! ```text
//! table bridge kiln
//!   chain pre_spoof  (prerouting, -200): meta mark set iifname map @port_mark | 0x80000000
//!                    iifname != @spoof_ports accept; no DHCP server;
//!                    IPv4 iifname . ether saddr . ip saddr @as_ip4_host accept   (hot path)
//!                    no RA / DHCPv6 server;
//!                    IPv6 iifname . ether saddr . ip6 saddr @as_ip6_host accept  (hot path)
//!                    then the slow path: MAC via @as_mac, ARP via @as_ip4_host and
//!                    @as_ip4, DHCP discover, IPv4 via @as_ip4, DAD, IPv6 via @as_ip6, else drop
//!   chain fwd_mark   (forward, -200): meta mark set oifname map @port_mark
//! table inet kiln     (bridged IP traffic, seen through br_netfilter)
//!   chain pre_zone   (prerouting, raw): ct zone set iifname map @zone_of   (bridge -> zone)
//!   chain out_zone   (output, raw):     ct zone set oifname map @zone_of
//!   chain pre_egress (prerouting, -150): established,related accept;
//!                    meta mark != @from_ports accept; ct state invalid drop;
//!                    DHCP/ND accept; then one rule per group:
//!                    meta mark & 0x7fffffff @pg-<group> jump ge-<group>; drop
//!   chain fwd_ingress (forward, 0): the same with @to_ports and gi-<group> chains
//!   chain ge-<group>, gi-<group>: the group's Neutron rules, each `... accept`
//! ```
//!
//! The per-packet cost (what every packet of an established flow pays, the
//! throughput aim of `kiln-bench sg`): in the bridge table two lookups in
//! small hash sets (port mark, spoof ports) and one in a hash set of the
//! port's exact (interface, MAC, address) triples, then one mark lookup at
//! forward; in the inet table the zone map, conntrack, and one `ct state`
//! rule per hook. Address ranges (allowed address pairs with a prefix) live
//! in interval sets (`as_ip4`, `as_ip6`, which the kernel backs with pipapo,
//! its costliest lookup) that only packets missing the exact-address sets
//! reach. No counters on accepting rules.
//!
//! Why groups, not ports, own chains: on any change to a rule or to a jump in
//! a table, nf_tables re-validates every chain reachable from the table's base
//! chains before committing (measured here: 9-25 ms with 1,000 per-port chains
//! of 20 rules, 60 us for a rule without a verdict). With chains per group and
//! port membership in sets (`pg-<group>`), a port update changes set elements
//! only, and the graph the kernel validates is only as large as the groups' rules.
//!
//! Port marks are 1..0x7fffffff; the ingress-port mark set in the bridge
//! prerouting chain has bit 31 set, the egress-port mark set at bridge forward
//! does not, so the two maps never confuse them.

use super::exprs::*;
use super::state::{rules_hash, Chain, Set, Table};
use crate::nft::sys::*;
use crate::nft::{ChainDef, Elem, Expr, Hook, PayloadBase, SetDef, Verdict};

pub const TABLE: &str = "kiln";

// bridge table
pub const SPOOF_PORTS: &str = "spoof_ports";
pub const AS_MAC: &str = "as_mac";
pub const AS_IP4: &str = "as_ip4";
pub const AS_IP6: &str = "as_ip6";
pub const AS_IP4_HOST: &str = "as_ip4_host";
pub const AS_IP6_HOST: &str = "as_ip6_host";
pub const PORT_MARK: &str = "port_mark";
pub const PRE_SPOOF: &str = "pre_spoof";
pub const FWD_MARK: &str = "fwd_mark";

// inet table
pub const ZONE_OF: &str = "zone_of";
pub const FROM_PORTS: &str = "from_ports";
pub const TO_PORTS: &str = "to_ports";
pub const CHAIN_HASH: &str = "chain_hash";
pub const ND_IN: &str = "nd_in";
pub const ND_OUT: &str = "nd_out";
pub const PRE_ZONE: &str = "pre_zone";
pub const OUT_ZONE: &str = "out_zone";
pub const PRE_EGRESS: &str = "pre_egress";
pub const FWD_INGRESS: &str = "fwd_ingress";

/// Bit set on ingress-port (traffic *from* the port) marks.
pub const FROM_PORT_BIT: u32 = 0x8000_0000;

/// A group's chain for one direction.
pub fn group_chain(group_id: &str, ingress: bool) -> String {
    format!("{}-{group_id}", if ingress { "gi" } else { "ge" })
}

/// The set of a group's member ports (their marks).
pub fn group_ports(group_id: &str) -> String {
    format!("pg-{group_id}")
}

/// Key length of the `chain_hash` map: a chain name, zero-padded.
pub const CHAIN_KEY_LEN: usize = 64;

/// Remote-group set name per family.
pub fn group_set(group_id: &str, v6: bool) -> String {
    format!("rg{}-{group_id}", if v6 { 6 } else { 4 })
}

// nft datatype ids (userspace metadata so `nft list` can print elements).
const T_IPADDR: u32 = 7;
const T_IP6ADDR: u32 = 8;
const T_ETHERADDR: u32 = 9;
const T_MARK: u32 = 19;
const T_INTEGER: u32 = 4;
const T_ICMP6_TYPE: u32 = 29;
const T_IFNAME: u32 = 41;
const T_STRING: u32 = 5;

fn concat_type(types: &[u32]) -> u32 {
    types.iter().fold(0, |acc, t| (acc << 6) | t)
}

fn set(
    name: &str,
    flags: u32,
    key_type: u32,
    key_len: u32,
    data: Option<(u32, u32)>,
    concat: Vec<u32>,
) -> Set {
    Set::new(SetDef {
        name: name.to_string(),
        flags,
        key_type,
        key_len,
        data,
        concat,
    })
}

/// The set definition of a group's member-port set.
pub fn group_ports_def(group_id: &str) -> Set {
    set(&group_ports(group_id), 0, T_MARK, 4, None, vec![])
}

/// The set definition of a remote-group set.
pub fn group_set_def(group_id: &str, v6: bool) -> Set {
    let (t, len) = if v6 { (T_IP6ADDR, 16) } else { (T_IPADDR, 4) };
    set(
        &group_set(group_id, v6),
        NFT_SET_INTERVAL,
        t,
        len,
        None,
        vec![],
    )
}

fn base(name: &str, hooknum: u32, priority: i32, rules: Vec<Vec<Expr>>) -> Chain {
    let def = ChainDef {
        name: name.to_string(),
        hook: Some(Hook {
            hooknum,
            priority,
            chain_type: "filter",
            policy: Some(Verdict::Accept),
        }),
        userdata: None,
    };
    Chain::new(def, rules)
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const UDP: u8 = 17;
const ICMPV6: u8 = 58;

fn iif_r0() -> Vec<Expr> {
    vec![load_meta(NFT_META_IIFNAME, R0)]
}

fn ether_src_r4() -> Vec<Expr> {
    vec![load(PayloadBase::Link, 6, 6, R4)]
}

/// `ether type T iifname . ether saddr . <network header source> @set accept`.
fn ip_source_rule(ether: u16, offset: u32, len: u32, set_name: &str) -> Vec<Expr> {
    rule([
        ether_type(ether),
        iif_r0(),
        ether_src_r4(),
        vec![
            load(PayloadBase::Network, offset, len, R6),
            lookup(set_name, R0, false),
            accept(),
        ],
    ])
}

/// `arp iifname . arp sha . arp spa @set accept`.
fn arp_sender_rule(set_name: &str) -> Vec<Expr> {
    rule([
        ether_type(ETH_P_ARP),
        iif_r0(),
        vec![
            load(PayloadBase::Network, 8, 6, R4),
            load(PayloadBase::Network, 14, 4, R6),
            lookup(set_name, R0, false),
            accept(),
        ],
    ])
}

/// An anti-spoofing set keyed by interface . MAC . address (v4 or v6);
/// `flags` adds `NFT_SET_INTERVAL` for prefixes.
fn addr_set(name: &str, flags: u32, v6: bool) -> Set {
    let (t, len) = if v6 { (T_IP6ADDR, 16) } else { (T_IPADDR, 4) };
    set(
        name,
        flags | NFT_SET_CONCAT,
        concat_type(&[T_IFNAME, T_ETHERADDR, t]),
        16 + 8 + len,
        None,
        vec![16, 6, len],
    )
}

/// The bridge table's skeleton (empty sets, base chains).
pub fn bridge_skeleton() -> Table {
    let mut t = Table::absent(NFPROTO_BRIDGE, TABLE);
    t.present = true;
    let sets = [
        set(SPOOF_PORTS, 0, T_IFNAME, 16, None, vec![]),
        set(
            AS_MAC,
            NFT_SET_CONCAT,
            concat_type(&[T_IFNAME, T_ETHERADDR]),
            24,
            None,
            vec![16, 6],
        ),
        addr_set(AS_IP4, NFT_SET_INTERVAL, false),
        addr_set(AS_IP6, NFT_SET_INTERVAL, true),
        addr_set(AS_IP4_HOST, 0, false),
        addr_set(AS_IP6_HOST, 0, true),
        set(
            PORT_MARK,
            NFT_SET_MAP,
            T_IFNAME,
            16,
            Some((T_MARK, 4)),
            vec![],
        ),
    ];
    for s in sets {
        t.sets.insert(s.def.name.clone(), s);
    }
    let drop_counted = || vec![Expr::Counter, drop()];
    let pre = vec![
        // Remember the ingress port: mark = port_mark[iifname] | FROM_PORT_BIT.
        rule([
            iif_r0(),
            vec![
                map(PORT_MARK, R0, R4),
                Expr::Bitwise {
                    sreg: R4,
                    dreg: R4,
                    mask: u32::MAX.to_ne_bytes().to_vec(),
                    xor: FROM_PORT_BIT.to_ne_bytes().to_vec(),
                },
                Expr::MetaSet {
                    key: NFT_META_MARK,
                    sreg: R4,
                },
            ],
        ]),
        // Uplinks and ports without port security are not checked.
        rule([iif_r0(), vec![lookup(SPOOF_PORTS, R0, true), accept()]]),
        // Guests are not DHCP servers.
        rule([
            ether_type(ETH_P_IP),
            l4proto(UDP),
            payload_eq(PayloadBase::Transport, 0, &67u16.to_be_bytes()),
            drop_counted(),
        ]),
        // The hot path: IPv4 from one of the port's exact (MAC, address)
        // pairs, one hash lookup (the key holds the MAC, so no MAC check).
        ip_source_rule(ETH_P_IP, 12, 4, AS_IP4_HOST),
        // Guests send no router advertisements and are no DHCPv6 servers.
        rule([
            ether_type(ETH_P_IPV6),
            l4proto(ICMPV6),
            payload_eq(PayloadBase::Transport, 0, &[134]),
            drop_counted(),
        ]),
        rule([
            ether_type(ETH_P_IPV6),
            l4proto(UDP),
            payload_eq(PayloadBase::Transport, 0, &547u16.to_be_bytes()),
            drop_counted(),
        ]),
        ip_source_rule(ETH_P_IPV6, 8, 16, AS_IP6_HOST),
        // The slow path. Source MAC must be the port's (or an allowed pair's).
        rule([
            iif_r0(),
            ether_src_r4(),
            vec![lookup(AS_MAC, R0, true)],
            drop_counted(),
        ]),
        // ARP: sender MAC . sender IP must be allowed for the port.
        arp_sender_rule(AS_IP4_HOST),
        arp_sender_rule(AS_IP4),
        rule([ether_type(ETH_P_ARP), drop_counted()]),
        // DHCP discover/request before the guest has an address.
        rule([
            ether_type(ETH_P_IP),
            payload_eq(PayloadBase::Network, 12, &[0, 0, 0, 0, 255, 255, 255, 255]),
            l4proto(UDP),
            payload_eq(PayloadBase::Transport, 0, &[0, 68, 0, 67]),
            vec![accept()],
        ]),
        // Sources inside an allowed address pair's prefix.
        ip_source_rule(ETH_P_IP, 12, 4, AS_IP4),
        // Duplicate address detection comes from the unspecified address.
        rule([
            ether_type(ETH_P_IPV6),
            payload_eq(PayloadBase::Network, 8, &[0; 16]),
            l4proto(ICMPV6),
            vec![accept()],
        ]),
        ip_source_rule(ETH_P_IPV6, 8, 16, AS_IP6),
        drop_counted(),
    ];
    let fwd = vec![vec![
        load_meta(NFT_META_OIFNAME, R0),
        map(PORT_MARK, R0, R4),
        Expr::MetaSet {
            key: NFT_META_MARK,
            sreg: R4,
        },
    ]];
    for c in [
        base(PRE_SPOOF, NF_HOOK_PREROUTING, -200, pre),
        base(FWD_MARK, NF_HOOK_FORWARD, -200, fwd),
    ] {
        t.chains.insert(c.def.name.clone(), c);
    }
    t.skeleton = skeleton_hash(&t);
    t
}

/// ICMPv6 types a port always receives (MLD, RA, NS, NA) and sends (RS, NS, NA, MLDv2).
pub const ND_IN_TYPES: [u8; 7] = [130, 131, 132, 134, 135, 136, 143];
pub const ND_OUT_TYPES: [u8; 4] = [133, 135, 136, 143];

/// The inet table's skeleton (empty maps, base chains, the ND type sets).
pub fn inet_skeleton() -> Table {
    let mut t = Table::absent(NFPROTO_INET, TABLE);
    t.present = true;
    let mut nd_in = set(ND_IN, 0, T_ICMP6_TYPE, 1, None, vec![]);
    for ty in ND_IN_TYPES {
        nd_in.insert(Elem::key(vec![ty]));
    }
    let mut nd_out = set(ND_OUT, 0, T_ICMP6_TYPE, 1, None, vec![]);
    for ty in ND_OUT_TYPES {
        nd_out.insert(Elem::key(vec![ty]));
    }
    let sets = [
        set(
            ZONE_OF,
            NFT_SET_MAP,
            T_IFNAME,
            16,
            Some((T_INTEGER, 2)),
            vec![],
        ),
        set(FROM_PORTS, 0, T_MARK, 4, None, vec![]),
        set(TO_PORTS, 0, T_MARK, 4, None, vec![]),
        set(
            CHAIN_HASH,
            NFT_SET_MAP,
            T_STRING,
            CHAIN_KEY_LEN as u32,
            Some((T_INTEGER, 8)),
            vec![],
        ),
        nd_in,
        nd_out,
    ];
    for s in sets {
        t.sets.insert(s.def.name.clone(), s);
    }
    let zone = |key: u32| {
        vec![vec![
            load_meta(key, R0),
            map(ZONE_OF, R0, R4),
            Expr::CtSet {
                key: NFT_CT_ZONE,
                sreg: R4,
            },
        ]]
    };
    for c in [
        base(PRE_ZONE, NF_HOOK_PREROUTING, -300, zone(NFT_META_IIFNAME)),
        base(OUT_ZONE, NF_HOOK_OUTPUT, -300, zone(NFT_META_OIFNAME)),
        // Filled by the compiler (head rules, one dispatch rule per group).
        base(PRE_EGRESS, NF_HOOK_PREROUTING, -150, vec![]),
        base(FWD_INGRESS, NF_HOOK_FORWARD, 0, vec![]),
    ] {
        t.chains.insert(c.def.name.clone(), c);
    }
    t.skeleton = skeleton_hash(&t);
    t
}

/// Fingerprint of the fixed parts: base chains' hooks and rules, set shapes,
/// and the elements of the constant sets.
fn skeleton_hash(t: &Table) -> u64 {
    let mut parts: Vec<Vec<Expr>> = Vec::new();
    for c in t.chains.values() {
        parts.push(vec![Expr::Immediate {
            dreg: 0,
            data: crate::nft::Data::Value(format!("{:?}", c.def).into_bytes()),
        }]);
        parts.extend(c.rules.iter().cloned());
    }
    for s in t.sets.values() {
        let shape = format!("{:?}{:?}", s.def, s.elems.keys().collect::<Vec<_>>());
        parts.push(vec![Expr::Immediate {
            dreg: 0,
            data: crate::nft::Data::Value(shape.into_bytes()),
        }]);
    }
    rules_hash(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skeletons_are_stable_and_distinct() {
        assert_eq!(bridge_skeleton().skeleton, bridge_skeleton().skeleton);
        assert_ne!(bridge_skeleton().skeleton, inet_skeleton().skeleton);
        assert_eq!(inet_skeleton().chains.len(), 4);
    }

    fn uses_set(r: &[Expr], name: &str) -> bool {
        r.iter()
            .any(|e| matches!(e, Expr::Lookup { set, .. } if set == name))
    }

    #[test]
    fn exact_addresses_are_checked_before_the_slow_path() {
        let t = bridge_skeleton();
        let pre = &t.chains[PRE_SPOOF].rules;
        let at = |name: &str| pre.iter().position(|r| uses_set(r, name)).unwrap();
        for slow in [AS_MAC, AS_IP4, AS_IP6] {
            assert!(at(AS_IP4_HOST) < at(slow), "{slow}");
            assert!(at(AS_IP6_HOST) < at(slow), "{slow}");
        }
        // nothing before the hot path counts or drops but the DHCP server rule
        let hot = at(AS_IP4_HOST);
        let drops = pre[..hot]
            .iter()
            .filter(|r| r.contains(&Expr::Counter))
            .count();
        assert_eq!(drops, 1);
    }

    #[test]
    fn concat_types_pack_six_bits_each() {
        assert_eq!(concat_type(&[T_IFNAME, T_ETHERADDR]), (41 << 6) | 9);
    }
}
