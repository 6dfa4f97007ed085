//! The pure compiler: the Neutron model to nf_tables chains, sets and
//! elements. No kernel involved; every function here is unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use super::addr::{link_local, merge, parse_mac, parse_prefix, AddrError, Range};
use super::exprs::*;
use super::layout::*;
use super::state::{Chain, Set, Table};
use crate::model::{Direction, Ethertype, Model, Port, SecurityGroup, SecurityGroupRule};
use crate::nft::sys::*;
use crate::nft::{ChainDef, CmpOp, Data, Elem, Expr, PayloadBase, Verdict};

/// Why (part of) the model could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("port {port}: {source}")]
    Address { port: String, source: AddrError },
    #[error("port {port}: network {network} is not in the model")]
    UnknownNetwork { port: String, network: String },
    #[error("port {port}: interface name {ifname:?} must be 1..=15 bytes")]
    Ifname { port: String, ifname: String },
    #[error("security group rule {rule}: {reason}")]
    Rule { rule: String, reason: String },
    #[error("port {port}: no packet mark assigned")]
    NoMark { port: String },
}

/// What one port contributes: its elements in shared sets (ports own no
/// chains; their groups do).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortRules {
    pub bridge_elems: Vec<(&'static str, Elem)>,
    pub inet_elems: Vec<(&'static str, Elem)>,
    /// Groups whose member and remote-group sets hold this port.
    pub member_of: Vec<String>,
    /// The port's mark (port security on) or `None`.
    pub mark: Option<u32>,
    /// The port's conntrack zone and addresses (for conntrack cleanup).
    pub zone: Option<u16>,
    pub addrs: Vec<Range>,
}

fn rule_err(r: &SecurityGroupRule, reason: impl Into<String>) -> CompileError {
    CompileError::Rule {
        rule: r.id.clone(),
        reason: reason.into(),
    }
}

/// IP protocol number for a Neutron protocol name or number.
pub fn protocol_number(p: &str, v6: bool) -> Option<u8> {
    let n = match p.to_ascii_lowercase().as_str() {
        "icmp" if v6 => 58,
        "icmp" => 1,
        "igmp" => 2,
        "ipip" => 4,
        "tcp" => 6,
        "egp" => 8,
        "udp" => 17,
        "ipv6-encap" => 41,
        "ipv6-route" => 43,
        "ipv6-frag" => 44,
        "rsvp" => 46,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "icmpv6" | "ipv6-icmp" => 58,
        "ipv6-nonxt" => 59,
        "ipv6-opts" => 60,
        "ospf" => 89,
        "vrrp" => 112,
        "pgm" => 113,
        "sctp" => 132,
        "udplite" => 136,
        "dccp" => 33,
        other => other.parse::<u8>().ok()?,
    };
    Some(n)
}

fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 33 | 132 | 136)
}

/// Compile one Neutron rule to the expressions of one rule in a per-port chain.
pub fn compile_rule(r: &SecurityGroupRule) -> Result<Vec<Expr>, CompileError> {
    let v6 = r.ethertype == Ethertype::IPv6;
    let mut out = nfproto(v6);
    let proto = match r.protocol.as_deref() {
        None | Some("any") | Some("") => None,
        Some(p) => Some(
            protocol_number(p, v6).ok_or_else(|| rule_err(r, format!("unknown protocol {p:?}")))?,
        ),
    };
    if let Some(p) = proto {
        out.extend(l4proto(p));
    }
    match (proto, r.port_range_min, r.port_range_max) {
        (_, None, None) => {}
        (Some(1) | Some(58), min, max) => {
            let ty = min.ok_or_else(|| rule_err(r, "ICMP code given without a type"))?;
            let ty = u8::try_from(ty).map_err(|_| rule_err(r, "ICMP type out of range"))?;
            out.extend(payload_eq(PayloadBase::Transport, 0, &[ty]));
            if let Some(code) = max {
                let code = u8::try_from(code).map_err(|_| rule_err(r, "ICMP code out of range"))?;
                out.extend(payload_eq(PayloadBase::Transport, 1, &[code]));
            }
        }
        (Some(p), min, max) if has_ports(p) => {
            let min = min.unwrap_or(1);
            let max = max.unwrap_or(min);
            let (lo, hi) = match (u16::try_from(min), u16::try_from(max)) {
                (Ok(lo), Ok(hi)) if lo <= hi => (lo, hi),
                _ => return Err(rule_err(r, "invalid port range")),
            };
            if lo <= 1 && hi == u16::MAX {
                // 1-65535: every port; nothing to match.
            } else if lo == hi {
                out.push(load(PayloadBase::Transport, 2, 2, R0));
                out.push(cmp(CmpOp::Eq, &lo.to_be_bytes()));
            } else {
                out.push(load(PayloadBase::Transport, 2, 2, R0));
                if lo > 0 {
                    out.push(cmp(CmpOp::Gte, &lo.to_be_bytes()));
                }
                if hi < u16::MAX {
                    out.push(cmp(CmpOp::Lte, &hi.to_be_bytes()));
                }
            }
        }
        _ => {
            return Err(rule_err(
                r,
                "port ranges need tcp, udp, sctp, dccp, udplite or icmp",
            ))
        }
    }
    // The remote side is the source of ingress traffic and the destination of egress.
    let (off4, off6) = match r.direction {
        Direction::Ingress => (12, 8),
        Direction::Egress => (16, 24),
    };
    let (off, width) = if v6 { (off6, 16) } else { (off4, 4) };
    if let Some(p) = &r.remote_ip_prefix {
        let pre = parse_prefix(p).map_err(|e| rule_err(r, e.to_string()))?;
        if pre.addr.is_ipv6() != v6 {
            return Err(rule_err(r, "remote_ip_prefix does not match the ethertype"));
        }
        if pre.len > 0 {
            let range = pre.range();
            out.push(load(PayloadBase::Network, off, width, R0));
            if usize::from(pre.len) < width as usize * 8 {
                out.push(Expr::Bitwise {
                    sreg: R0,
                    dreg: R0,
                    mask: pre.mask(),
                    xor: vec![0; width as usize],
                });
            }
            out.push(cmp(CmpOp::Eq, &range.bytes(range.start)));
        }
    }
    if let Some(g) = &r.remote_group_id {
        out.push(load(PayloadBase::Network, off, width, R0));
        out.push(lookup(&group_set(g, v6), R0, false));
    }
    out.push(accept());
    Ok(out)
}

/// The head of a filtering base chain: replies and established flows
/// accepted first (every packet after a connection's first takes this one
/// rule), then only kiln ports' traffic is filtered: invalid dropped, DHCP and
/// neighbour discovery always allowed.
fn common_head(dir: Direction) -> Vec<Vec<Expr>> {
    let (dhcp4, dhcp6, nd, ports) = match dir {
        Direction::Egress => ([0, 68, 0, 67], [2, 34, 2, 35], ND_OUT, FROM_PORTS),
        Direction::Ingress => ([0, 67, 0, 68], [2, 35, 2, 34], ND_IN, TO_PORTS),
    };
    vec![
        rule([
            ct_state_any(NF_CT_STATE_ESTABLISHED | NF_CT_STATE_RELATED),
            vec![accept()],
        ]),
        vec![
            load_meta(NFT_META_MARK, R0),
            lookup(ports, R0, true),
            accept(),
        ],
        rule([
            ct_state_any(NF_CT_STATE_INVALID),
            vec![Expr::Counter, drop()],
        ]),
        rule([
            nfproto(false),
            l4proto(17),
            payload_eq(PayloadBase::Transport, 0, &dhcp4),
            vec![accept()],
        ]),
        rule([
            nfproto(true),
            l4proto(17),
            payload_eq(PayloadBase::Transport, 0, &dhcp6),
            vec![accept()],
        ]),
        rule([
            nfproto(true),
            l4proto(58),
            vec![
                load(PayloadBase::Transport, 0, 1, R0),
                lookup(nd, R0, false),
                accept(),
            ],
        ]),
    ]
}

fn ifname_ok(p: &Port) -> Result<[u8; 16], CompileError> {
    if p.ifname.is_empty() || p.ifname.len() > 15 || p.ifname.contains('\0') {
        return Err(CompileError::Ifname {
            port: p.id.clone(),
            ifname: p.ifname.clone(),
        });
    }
    Ok(ifname_key(&p.ifname))
}

/// The port's addresses per MAC: fixed IPs on the port MAC, pairs on theirs.
fn port_addresses(p: &Port) -> Result<BTreeMap<[u8; 6], Vec<Range>>, CompileError> {
    let addr_err = |source| CompileError::Address {
        port: p.id.clone(),
        source,
    };
    let mac = parse_mac(&p.mac_address).map_err(addr_err)?;
    let mut by_mac: BTreeMap<[u8; 6], Vec<Range>> = BTreeMap::new();
    by_mac
        .entry(mac)
        .or_default()
        .extend(p.fixed_ips.iter().map(|f| Range::host(f.ip_address)));
    for pair in &p.allowed_address_pairs {
        let m = match &pair.mac_address {
            Some(m) => parse_mac(m).map_err(addr_err)?,
            None => mac,
        };
        let pre = parse_prefix(&pair.ip_address).map_err(addr_err)?;
        by_mac.entry(m).or_default().push(pre.range());
    }
    Ok(by_mac)
}

/// All addresses of a port (fixed IPs and allowed pairs), merged.
pub fn port_ranges(p: &Port) -> Result<Vec<Range>, CompileError> {
    let all = port_addresses(p)?.into_values().flatten().collect();
    Ok(merge(all))
}

/// Compile one port. `mark` is its packet mark (1..0x7fffffff).
pub fn compile_port(model: &Model, p: &Port, mark: Option<u32>) -> Result<PortRules, CompileError> {
    let net = model
        .networks
        .get(&p.network_id)
        .ok_or_else(|| CompileError::UnknownNetwork {
            port: p.id.clone(),
            network: p.network_id.clone(),
        })?;
    let ifk = ifname_ok(p)?;
    let by_mac = port_addresses(p)?;
    let mut out = PortRules {
        zone: Some(net.ct_zone),
        addrs: merge(by_mac.values().flatten().copied().collect()),
        ..Default::default()
    };
    if !p.port_security_enabled {
        return Ok(out);
    }
    let mark = mark.ok_or_else(|| CompileError::NoMark { port: p.id.clone() })?;
    out.mark = Some(mark);
    out.member_of = p.security_groups.clone();

    // Anti-spoofing elements (bridge table).
    out.bridge_elems
        .push((SPOOF_PORTS, Elem::key(ifk.to_vec())));
    let mut m = Elem::key(ifk.to_vec());
    m.data = Some(Data::Value(mark.to_ne_bytes().to_vec()));
    out.bridge_elems.push((PORT_MARK, m));
    for (mac, ranges) in &by_mac {
        let mut prefix = ifk.to_vec();
        prefix.extend_from_slice(mac);
        prefix.extend_from_slice(&[0, 0]);
        out.bridge_elems.push((AS_MAC, Elem::key(prefix.clone())));
        // Single addresses go to the hash sets every packet is checked
        // against; prefixes to the interval sets of the slow path.
        let (hosts, prefixes): (Vec<Range>, Vec<Range>) =
            ranges.iter().partition(|r| r.start == r.end);
        let mut hosts: BTreeSet<Range> = hosts.into_iter().collect();
        hosts.insert(Range::host(link_local(*mac).into()));
        for h in hosts {
            let mut key = prefix.clone();
            key.extend(h.bytes(h.start));
            out.bridge_elems
                .push((if h.v6 { AS_IP6_HOST } else { AS_IP4_HOST }, Elem::key(key)));
        }
        for r in merge(prefixes) {
            let mut key = prefix.clone();
            key.extend(r.bytes(r.start));
            let mut end = prefix.clone();
            end.extend(r.bytes(r.end));
            let mut e = Elem::key(key);
            e.key_end = Some(end);
            out.bridge_elems
                .push((if r.v6 { AS_IP6 } else { AS_IP4 }, e));
        }
    }
    // Filtered ports (inet table): its marks in both directions.
    out.inet_elems.push((
        FROM_PORTS,
        Elem::key((mark | FROM_PORT_BIT).to_ne_bytes().to_vec()),
    ));
    out.inet_elems
        .push((TO_PORTS, Elem::key(mark.to_ne_bytes().to_vec())));
    Ok(out)
}

/// A group's two chains (its Neutron rules by direction).
pub fn group_chains(g: &SecurityGroup) -> Result<[Chain; 2], CompileError> {
    let mut out = Vec::with_capacity(2);
    for dir in [Direction::Egress, Direction::Ingress] {
        let mut rules = Vec::new();
        for r in g.rules.iter().filter(|r| r.direction == dir) {
            let exprs = compile_rule(r)?;
            if !rules.contains(&exprs) {
                rules.push(exprs);
            }
        }
        let def = ChainDef {
            name: group_chain(&g.id, dir == Direction::Ingress),
            hook: None,
            userdata: None,
        };
        out.push(Chain::new(def, rules));
    }
    let ingress = out.pop();
    let egress = out.pop();
    match (egress, ingress) {
        (Some(e), Some(i)) => Ok([e, i]),
        _ => unreachable!("two directions were pushed"),
    }
}

/// A filtering base chain: the head, one dispatch rule per group with rules
/// in that direction, and the final drop.
pub fn dispatch_chain(model: &Model, dir: Direction) -> Chain {
    let ingress = dir == Direction::Ingress;
    let skeleton = inet_skeleton();
    let name = if ingress { FWD_INGRESS } else { PRE_EGRESS };
    let def = match skeleton.chains.get(name) {
        Some(c) => c.def.clone(),
        None => unreachable!("the skeleton has both filtering chains"),
    };
    let mut rules = common_head(dir);
    for g in model.security_groups.values() {
        if !g.rules.iter().any(|r| r.direction == dir) {
            continue;
        }
        rules.push(vec![
            load_meta(NFT_META_MARK, R0),
            Expr::Bitwise {
                sreg: R0,
                dreg: R0,
                mask: (!FROM_PORT_BIT).to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            },
            lookup(&group_ports(&g.id), R0, false),
            Expr::verdict(Verdict::Jump(group_chain(&g.id, ingress))),
        ]);
    }
    rules.push(vec![Expr::Counter, drop()]);
    Chain::new(def, rules)
}

/// The `chain_hash` element recording a chain's fingerprint.
pub fn chain_hash_elem(c: &Chain) -> Elem {
    let mut e = Elem::key(chain_key(&c.def.name));
    e.data = Some(Data::Value(c.hash.to_be_bytes().to_vec()));
    e
}

/// A chain name as a `chain_hash` key (zero-padded).
pub fn chain_key(name: &str) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.truncate(CHAIN_KEY_LEN - 1);
    k.resize(CHAIN_KEY_LEN, 0);
    k
}

/// A group's sets: member ports (by mark) and remote-group addresses per family.
pub fn group_sets(
    model: &Model,
    gid: &str,
    mark_of: &dyn Fn(&str) -> Option<u32>,
) -> Result<[Set; 3], CompileError> {
    let mut ranges = Vec::new();
    let mut members = group_ports_def(gid);
    for p in model.ports.values() {
        if p.security_groups.iter().any(|g| g == gid) {
            ranges.extend(port_ranges(p)?);
            if p.port_security_enabled {
                if let Some(m) = mark_of(&p.id) {
                    members.insert(Elem::key(m.to_ne_bytes().to_vec()));
                }
            }
        }
    }
    for a in model.remote_members.get(gid).into_iter().flatten() {
        let pre = parse_prefix(a).map_err(|source| CompileError::Address {
            port: format!("remote member of group {gid}"),
            source,
        })?;
        ranges.push(pre.range());
    }
    let merged = merge(ranges);
    let mut sets = [group_set_def(gid, false), group_set_def(gid, true)];
    for r in merged {
        let s = &mut sets[usize::from(r.v6)];
        s.insert(Elem::key(r.bytes(r.start)));
        if r.end < r.max_addr() {
            let mut end = Elem::key(r.bytes(r.end + 1));
            end.flags = NFT_SET_ELEM_INTERVAL_END;
            s.insert(end);
        }
    }
    let [v4, v6] = sets;
    Ok([members, v4, v6])
}

/// The `zone_of` map: each network's bridge to its conntrack zone.
pub fn zone_map(model: &Model) -> Vec<Elem> {
    model
        .networks
        .values()
        .map(|n| {
            let mut e = Elem::key(ifname_key(&n.bridge).to_vec());
            e.data = Some(Data::Value(n.ct_zone.to_ne_bytes().to_vec()));
            e
        })
        .collect()
}

/// Every group that needs sets: groups in the model and groups referenced by rules.
pub fn all_groups(model: &Model) -> BTreeSet<String> {
    let mut g: BTreeSet<String> = model.security_groups.keys().cloned().collect();
    for sg in model.security_groups.values() {
        g.extend(sg.rules.iter().filter_map(|r| r.remote_group_id.clone()));
    }
    g
}

/// Groups referenced as remote groups by a group's rules.
pub fn referenced_groups(g: &SecurityGroup) -> BTreeSet<String> {
    g.rules
        .iter()
        .filter_map(|r| r.remote_group_id.clone())
        .collect()
}

/// Insert a chain and its `chain_hash` element.
pub fn put_chain(inet: &mut Table, c: Chain) {
    if let Some(h) = inet.sets.get_mut(CHAIN_HASH) {
        h.insert(chain_hash_elem(&c));
    }
    inet.chains.insert(c.def.name.clone(), c);
}

/// The whole desired state: both tables and each port's contribution.
pub fn compile(
    model: &Model,
    mark_of: &dyn Fn(&str) -> Option<u32>,
) -> Result<(Table, Table, BTreeMap<String, PortRules>), CompileError> {
    let mut bridge = bridge_skeleton();
    let mut inet = inet_skeleton();
    if let Some(z) = inet.sets.get_mut(ZONE_OF) {
        for e in zone_map(model) {
            z.insert(e);
        }
    }
    for gid in all_groups(model) {
        for s in group_sets(model, &gid, mark_of)? {
            inet.sets.insert(s.def.name.clone(), s);
        }
    }
    for g in model.security_groups.values() {
        for c in group_chains(g)? {
            put_chain(&mut inet, c);
        }
    }
    let fixed: Vec<Chain> = inet
        .chains
        .values()
        .filter(|c| c.def.name == PRE_ZONE || c.def.name == OUT_ZONE)
        .cloned()
        .collect();
    for c in fixed {
        put_chain(&mut inet, c);
    }
    put_chain(&mut inet, dispatch_chain(model, Direction::Egress));
    put_chain(&mut inet, dispatch_chain(model, Direction::Ingress));
    let mut ports = BTreeMap::new();
    for p in model.ports.values() {
        let pr = compile_port(model, p, mark_of(&p.id))?;
        add_port(&mut bridge, &mut inet, &pr);
        ports.insert(p.id.clone(), pr);
    }
    Ok((bridge, inet, ports))
}

/// Add a port's elements to the tables.
pub fn add_port(bridge: &mut Table, inet: &mut Table, pr: &PortRules) {
    for (set, e) in &pr.bridge_elems {
        if let Some(s) = bridge.sets.get_mut(*set) {
            s.insert(e.clone());
        }
    }
    for (set, e) in &pr.inet_elems {
        if let Some(s) = inet.sets.get_mut(*set) {
            s.insert(e.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn rule(
        dir: Direction,
        et: Ethertype,
        proto: Option<&str>,
        min: Option<u32>,
        max: Option<u32>,
    ) -> SecurityGroupRule {
        SecurityGroupRule {
            id: "r1".into(),
            direction: dir,
            ethertype: et,
            protocol: proto.map(str::to_string),
            port_range_min: min,
            port_range_max: max,
            remote_ip_prefix: None,
            remote_group_id: None,
        }
    }

    #[test]
    fn tcp_port_range_compiles_to_two_comparisons() {
        let r = rule(
            Direction::Ingress,
            Ethertype::IPv4,
            Some("tcp"),
            Some(80),
            Some(90),
        );
        let e = compile_rule(&r).unwrap();
        assert!(e.contains(&cmp(CmpOp::Gte, &[0, 80])));
        assert!(e.contains(&cmp(CmpOp::Lte, &[0, 90])));
        assert!(e.contains(&cmp(CmpOp::Eq, &[6])));
        assert_eq!(e.last(), Some(&accept()));
    }

    #[test]
    fn single_port_is_one_equality_and_full_range_is_no_match() {
        let one = compile_rule(&rule(
            Direction::Ingress,
            Ethertype::IPv4,
            Some("udp"),
            Some(53),
            None,
        ))
        .unwrap();
        assert!(one.contains(&cmp(CmpOp::Eq, &[0, 53])));
        let all = compile_rule(&rule(
            Direction::Ingress,
            Ethertype::IPv4,
            Some("tcp"),
            Some(1),
            Some(65535),
        ))
        .unwrap();
        assert!(!all
            .iter()
            .any(|e| matches!(e, Expr::Payload { offset: 2, .. })));
    }

    #[test]
    fn icmp_type_and_code_and_v6_icmp_mapping() {
        let r = rule(
            Direction::Ingress,
            Ethertype::IPv6,
            Some("icmp"),
            Some(128),
            Some(0),
        );
        let e = compile_rule(&r).unwrap();
        assert!(e.contains(&cmp(CmpOp::Eq, &[58])));
        assert!(e.contains(&cmp(CmpOp::Eq, &[128])));
        assert!(e.contains(&cmp(CmpOp::Eq, &[0])));
    }

    #[test]
    fn protocol_numbers_and_bad_input() {
        assert_eq!(protocol_number("47", false), Some(47));
        assert_eq!(protocol_number("GRE", false), Some(47));
        assert_eq!(protocol_number("bogus", false), None);
        let bad = [
            (Some("bogus"), None, None),
            (Some("tcp"), Some(90), Some(80)),
            (Some("gre"), Some(1), None),
            (Some("tcp"), Some(70000), None),
        ];
        for (proto, min, max) in bad {
            let r = rule(Direction::Ingress, Ethertype::IPv4, proto, min, max);
            assert!(compile_rule(&r).is_err(), "{proto:?} {min:?} {max:?}");
        }
    }

    #[test]
    fn remote_prefix_direction_picks_source_or_destination() {
        let mut r = rule(Direction::Egress, Ethertype::IPv4, None, None, None);
        r.remote_ip_prefix = Some("10.1.0.0/16".into());
        let e = compile_rule(&r).unwrap();
        assert!(e.contains(&load(PayloadBase::Network, 16, 4, R0)));
        assert!(e.contains(&cmp(CmpOp::Eq, &[10, 1, 0, 0])));
        r.ethertype = Ethertype::IPv6;
        assert!(
            compile_rule(&r).is_err(),
            "an IPv4 prefix on an IPv6 rule is refused"
        );
    }

    #[test]
    fn remote_group_is_a_set_lookup() {
        let mut r = rule(
            Direction::Ingress,
            Ethertype::IPv4,
            Some("tcp"),
            Some(22),
            Some(22),
        );
        r.remote_group_id = Some("g2".into());
        let e = compile_rule(&r).unwrap();
        assert!(e.contains(&lookup("rg4-g2", R0, false)));
    }

    fn model() -> Model {
        let mut m = Model::default();
        m.add_network(Network {
            id: "n".into(),
            bridge: "br-n".into(),
            ct_zone: 5,
        });
        m.add_security_group(SecurityGroup {
            id: "g".into(),
            rules: vec![rule(
                Direction::Ingress,
                Ethertype::IPv4,
                Some("tcp"),
                Some(22),
                Some(22),
            )],
        });
        for (i, ip) in ["10.0.0.1", "10.0.0.2"].iter().enumerate() {
            m.add_port(Port {
                id: format!("p{i}"),
                network_id: "n".into(),
                ifname: format!("tap{i}"),
                mac_address: format!("fa:16:3e:00:00:0{i}"),
                fixed_ips: vec![FixedIp {
                    subnet_id: None,
                    ip_address: ip.parse().unwrap(),
                }],
                allowed_address_pairs: vec![],
                port_security_enabled: true,
                security_groups: vec!["g".into()],
            });
        }
        m
    }

    #[test]
    fn remote_members_join_the_group_sets() {
        let mut m = model();
        m.remote_members
            .insert("g".into(), vec!["10.9.0.7".into(), "2001:db8::7".into()]);
        let [_, v4, v6] = group_sets(&m, "g", &|_| None).unwrap();
        let has = |s: &Set, b: Vec<u8>| s.elems.values().any(|e| e.key == b);
        assert!(has(&v4, vec![10, 9, 0, 7]));
        assert!(has(&v4, vec![10, 0, 0, 1]));
        let mut six = vec![0x20, 0x01, 0x0d, 0xb8];
        six.extend([0; 11]);
        six.push(7);
        assert!(has(&v6, six));
        m.remote_members.insert("g".into(), vec!["bogus".into()]);
        assert!(group_sets(&m, "g", &|_| None).is_err());
    }

    #[test]
    fn port_contributes_marks_and_antispoofing() {
        let m = model();
        let pr = compile_port(&m, &m.ports["p0"], Some(7)).unwrap();
        let sets: Vec<&str> = pr.bridge_elems.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            sets,
            vec![SPOOF_PORTS, PORT_MARK, AS_MAC, AS_IP4_HOST, AS_IP6_HOST]
        );
        let eg = &pr.inet_elems[0];
        assert_eq!(eg.0, FROM_PORTS);
        assert_eq!(eg.1.key, (7 | FROM_PORT_BIT).to_ne_bytes().to_vec());
        assert_eq!(pr.member_of, vec!["g".to_string()]);
    }

    #[test]
    fn single_addresses_are_hashed_and_prefixes_are_intervals() {
        let mut m = model();
        if let Some(p) = m.ports.get_mut("p0") {
            p.allowed_address_pairs = vec![
                AllowedAddressPair {
                    ip_address: "10.0.9.4/30".into(),
                    mac_address: None,
                },
                AllowedAddressPair {
                    ip_address: "10.0.0.3/32".into(),
                    mac_address: None,
                },
            ];
        }
        let pr = compile_port(&m, &m.ports["p0"], Some(7)).unwrap();
        let keys = |set: &str| -> Vec<Vec<u8>> {
            pr.bridge_elems
                .iter()
                .filter(|(s, _)| *s == set)
                .map(|(_, e)| e.key[24..].to_vec())
                .collect()
        };
        // the fixed IP and the /32 pair: exact, one hash lookup per packet
        assert_eq!(
            keys(AS_IP4_HOST),
            vec![vec![10, 0, 0, 1], vec![10, 0, 0, 3]]
        );
        assert_eq!(keys(AS_IP4), vec![vec![10, 0, 9, 4]]);
        let range = pr.bridge_elems.iter().find(|(s, _)| *s == AS_IP4);
        let end = range.and_then(|(_, e)| e.key_end.clone()).unwrap();
        assert_eq!(end[24..], [10, 0, 9, 7]);
        // the link-local address from the MAC is exact too
        assert_eq!(keys(AS_IP6_HOST).len(), 1);
        assert!(keys(AS_IP6).is_empty());
    }

    #[test]
    fn established_flows_take_the_first_rule() {
        let m = model();
        for dir in [Direction::Ingress, Direction::Egress] {
            let d = dispatch_chain(&m, dir);
            assert_eq!(
                d.rules[0],
                rule_of(ct_state_any(NF_CT_STATE_ESTABLISHED | NF_CT_STATE_RELATED))
            );
            assert!(!d.rules[0].contains(&Expr::Counter));
        }
    }

    fn rule_of(mut exprs: Vec<Expr>) -> Vec<Expr> {
        exprs.push(accept());
        exprs
    }

    #[test]
    fn groups_own_chains_and_dispatch_by_membership() {
        let m = model();
        let [e, i] = group_chains(&m.security_groups["g"]).unwrap();
        assert_eq!((e.def.name.as_str(), e.rules.len()), ("ge-g", 0));
        assert_eq!((i.def.name.as_str(), i.rules.len()), ("gi-g", 1));
        let d = dispatch_chain(&m, Direction::Ingress);
        // head (6 rules), one dispatch rule for g, the final drop
        assert_eq!(d.rules.len(), 8);
        assert!(d.rules[6].contains(&lookup("pg-g", R0, false)));
        // no egress rules in g: no egress dispatch rule
        assert_eq!(dispatch_chain(&m, Direction::Egress).rules.len(), 7);
    }

    #[test]
    fn port_security_off_contributes_nothing_to_filter() {
        let mut m = model();
        if let Some(p) = m.ports.get_mut("p1") {
            p.port_security_enabled = false;
        }
        let pr = compile_port(&m, &m.ports["p1"], None).unwrap();
        assert!(pr.bridge_elems.is_empty() && pr.inet_elems.is_empty() && pr.mark.is_none());
    }

    #[test]
    fn group_sets_hold_members_and_merged_addresses() {
        let m = model();
        let marks = |p: &str| if p == "p0" { Some(1) } else { Some(2) };
        let [pg, v4, v6] = group_sets(&m, "g", &marks).unwrap();
        assert_eq!(pg.elems.len(), 2);
        // 10.0.0.1-10.0.0.2 merged: start, end marker at .3
        assert_eq!(v4.elems.len(), 2);
        assert!(v4
            .elems
            .values()
            .any(|e| e.key == vec![10, 0, 0, 3] && e.flags == NFT_SET_ELEM_INTERVAL_END));
        assert!(v6.elems.is_empty());
    }

    #[test]
    fn bad_mac_or_missing_network_is_an_error() {
        let mut m = model();
        if let Some(p) = m.ports.get_mut("p0") {
            p.mac_address = "nope".into();
        }
        assert!(matches!(
            compile_port(&m, &m.ports["p0"], Some(1)),
            Err(CompileError::Address { .. })
        ));
        let mut m = model();
        m.networks.clear();
        assert!(matches!(
            compile_port(&m, &m.ports["p0"], Some(1)),
            Err(CompileError::UnknownNetwork { .. })
        ));
    }

    #[test]
    fn full_compile_is_deterministic() {
        let m = model();
        let marks = |p: &str| if p == "p0" { Some(1) } else { Some(2) };
        let a = compile(&m, &marks).unwrap();
        let b = compile(&m, &marks).unwrap();
        assert_eq!(a, b);
        // 4 base chains, 2 chains of group g
        assert_eq!(a.1.chains.len(), 4 + 2);
    }
}
