//! Two tenant networks on one host stay apart, even with overlapping
//! addresses: each has its own bridge and its own conntrack zone.
#![allow(clippy::unwrap_used)]

mod common;

use common::rules::{egress_any, rule};
use common::*;
use kiln_netdp::model::{Direction, Network, SecurityGroup};
use kiln_netdp::secgroup::SecurityGroups;

#[test]
fn two_networks_on_one_host_are_isolated() {
    require_env!();
    let mut f = Fixture::new();
    f.bridge("br0");
    f.bridge("br1");
    // Network 1: a and b. Network 2: c, and d holding b's address.
    let a = f.guest("br0", 1, "10.60.0.1", "02:00:00:00:06:01");
    let b = f.guest("br0", 2, "10.60.0.2", "02:00:00:00:06:02");
    let c = f.guest("br1", 3, "10.60.0.3", "02:00:00:00:06:03");
    let d = f.guest("br1", 4, "10.60.0.2", "02:00:00:00:06:04");

    let mut m = model_for("br0", 20, &[&a, &b], &["base", "open"]);
    m.add_network(Network {
        id: "net-br1".into(),
        bridge: "br1".into(),
        ct_zone: 21,
    });
    m.add_port(port_for("net-br1", &c, &["base", "open"]));
    m.add_port(port_for("net-br1", &d, &["base", "open"]));
    m.add_security_group(egress_any("base"));
    // Everything a port could be reached by is allowed: only the network
    // boundary can keep traffic apart.
    m.add_security_group(SecurityGroup {
        id: "open".into(),
        rules: vec![
            rule("icmp", Direction::Ingress, Some("icmp"), None, None, None),
            rule(
                "tcp",
                Direction::Ingress,
                Some("tcp"),
                Some((1, 65535)),
                None,
                None,
            ),
        ],
    });
    let mut sg = Fixture::in_ns(&f.host, SecurityGroups::open).unwrap();
    sg.reconcile(&m).unwrap();

    assert!(Fixture::ping(&a, b.ip), "a reaches b on its own network");
    assert!(
        Fixture::ping(&c, d.ip),
        "c reaches d, which has b's address, on its network"
    );
    assert!(
        !Fixture::ping(&a, c.ip),
        "a cannot reach c on the other network"
    );
    assert!(!Fixture::ping(&c, a.ip), "nor c a");

    // Only d listens on 10.60.0.2:7000: from network 1 that address is b, so
    // the connection must fail; from network 2 it reaches d.
    tcp_server(&d.ns, d.ip, 7000);
    assert!(tcp_ok(&c.ns, d.ip, 7000), "c connects to d");
    assert!(!tcp_ok(&a.ns, d.ip, 7000), "a's 10.60.0.2 is b, not d");
}
