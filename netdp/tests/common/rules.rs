//! Building Neutron security groups for tests.
#![allow(dead_code)]

use kiln_netdp::model::{Direction, Ethertype, SecurityGroup, SecurityGroupRule};

pub fn rule(
    id: &str,
    direction: Direction,
    proto: Option<&str>,
    ports: Option<(u32, u32)>,
    prefix: Option<&str>,
    group: Option<&str>,
) -> SecurityGroupRule {
    SecurityGroupRule {
        id: id.to_string(),
        direction,
        ethertype: Ethertype::IPv4,
        protocol: proto.map(str::to_string),
        port_range_min: ports.map(|p| p.0),
        port_range_max: ports.map(|p| p.1),
        remote_ip_prefix: prefix.map(str::to_string),
        remote_group_id: group.map(str::to_string),
    }
}

/// Neutron's default egress rules (IPv4 and IPv6, anything).
pub fn egress_any(gid: &str) -> SecurityGroup {
    let mut v6 = rule(
        &format!("{gid}-e6"),
        Direction::Egress,
        None,
        None,
        None,
        None,
    );
    v6.ethertype = Ethertype::IPv6;
    SecurityGroup {
        id: gid.to_string(),
        rules: vec![
            rule(
                &format!("{gid}-e4"),
                Direction::Egress,
                None,
                None,
                None,
                None,
            ),
            v6,
        ],
    }
}
