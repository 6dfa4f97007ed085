//! Security groups in real namespaces: traffic allowed or refused exactly as
//! the rules say, statefully, with remote groups and port security off.
#![allow(clippy::unwrap_used)]

mod common;

use common::rules::{egress_any, rule};
use common::*;
use kiln_netdp::model::{Direction, SecurityGroup};
use kiln_netdp::secgroup::SecurityGroups;

fn open(f: &Fixture) -> SecurityGroups {
    Fixture::in_ns(&f.host, SecurityGroups::open).unwrap()
}

#[test]
fn rules_allow_exactly_what_they_say() {
    require_env!();
    let mut f = Fixture::new();
    f.bridge("br0");
    let a = f.guest("br0", 1, "10.50.0.1", "02:00:00:00:01:01");
    let b = f.guest("br0", 2, "10.50.0.2", "02:00:00:00:01:02");
    let c = f.guest("br0", 3, "10.50.0.3", "02:00:00:00:01:03");
    let mut m = model_for("br0", 10, &[&a, &c], &["base"]);
    m.add_port(port_for("net-br0", &b, &["base", "web"]));
    m.add_security_group(egress_any("base"));
    m.add_security_group(SecurityGroup {
        id: "web".into(),
        rules: vec![
            rule(
                "tcp80",
                Direction::Ingress,
                Some("tcp"),
                Some((80, 80)),
                None,
                None,
            ),
            rule(
                "icmp-a",
                Direction::Ingress,
                Some("icmp"),
                None,
                Some("10.50.0.1/32"),
                None,
            ),
            rule(
                "udp",
                Direction::Ingress,
                Some("udp"),
                Some((5300, 5353)),
                None,
                None,
            ),
        ],
    });
    let mut sg = open(&f);
    let applied = sg.reconcile(&m).unwrap();
    assert!(applied.messages > 0);

    tcp_server(&b.ns, b.ip, 80);
    tcp_server(&b.ns, b.ip, 81);
    tcp_server(&a.ns, a.ip, 80);
    udp_echo(&b.ns, b.ip, 5353);
    udp_echo(&b.ns, b.ip, 5354);

    assert!(tcp_ok(&a.ns, b.ip, 80), "tcp/80 is allowed to b");
    assert!(!tcp_ok(&a.ns, b.ip, 81), "tcp/81 is not");
    assert!(Fixture::ping(&a, b.ip), "icmp from a's /32 is allowed");
    assert!(!Fixture::ping(&c, b.ip), "icmp from c is not");
    // The echo comes back although a has no ingress udp rule: stateful return.
    assert!(
        udp_ok(&a.ns, a.ip, b.ip, 5353),
        "udp in range, reply returns"
    );
    assert!(!udp_ok(&a.ns, a.ip, b.ip, 5354), "udp outside the range");
    // a only has egress rules: nothing may connect to it, but its own
    // outbound connections (above) work.
    assert!(!tcp_ok(&b.ns, a.ip, 80), "a accepts no inbound tcp");
    assert!(!Fixture::ping(&b, a.ip), "a accepts no inbound icmp");

    // Remove the tcp/80 rule: one batch for the group's port.
    if let Some(g) = m.security_groups.get_mut("web") {
        g.rules.retain(|r| r.id != "tcp80");
    }
    let applied = sg.apply_port(&m, "port-ksgv2").unwrap();
    assert!(applied.messages > 0);
    assert!(
        !tcp_ok(&a.ns, b.ip, 80),
        "tcp/80 closed after the rule is removed"
    );
    assert!(Fixture::ping(&a, b.ip), "other rules still hold");
}

#[test]
fn egress_rules_restrict_the_guests_own_connections() {
    require_env!();
    let mut f = Fixture::new();
    f.bridge("br0");
    let a = f.guest("br0", 1, "10.51.0.1", "02:00:00:00:02:01");
    let b = f.guest("br0", 2, "10.51.0.2", "02:00:00:00:02:02");
    let mut m = model_for("br0", 11, &[&a], &["only22"]);
    m.add_port(port_for("net-br0", &b, &["open"]));
    m.add_security_group(SecurityGroup {
        id: "only22".into(),
        rules: vec![rule(
            "e22",
            Direction::Egress,
            Some("tcp"),
            Some((22, 22)),
            None,
            None,
        )],
    });
    m.add_security_group(SecurityGroup {
        id: "open".into(),
        rules: vec![rule("in-any", Direction::Ingress, None, None, None, None)],
    });
    let mut sg = open(&f);
    sg.reconcile(&m).unwrap();
    tcp_server(&b.ns, b.ip, 22);
    tcp_server(&b.ns, b.ip, 23);
    assert!(tcp_ok(&a.ns, b.ip, 22), "egress tcp/22 allowed");
    assert!(!tcp_ok(&a.ns, b.ip, 23), "egress tcp/23 not allowed");
    assert!(!Fixture::ping(&a, b.ip), "egress icmp not allowed");
}

#[test]
fn remote_group_membership_changes_take_effect() {
    require_env!();
    let mut f = Fixture::new();
    f.bridge("br0");
    let a = f.guest("br0", 1, "10.52.0.1", "02:00:00:00:03:01");
    let b = f.guest("br0", 2, "10.52.0.2", "02:00:00:00:03:02");
    let c = f.guest("br0", 3, "10.52.0.3", "02:00:00:00:03:03");
    let mut m = model_for("br0", 12, &[&c], &["base"]);
    m.add_port(port_for("net-br0", &a, &["base", "app"]));
    m.add_port(port_for("net-br0", &b, &["base", "db"]));
    m.add_security_group(egress_any("base"));
    m.add_security_group(SecurityGroup {
        id: "app".into(),
        rules: vec![],
    });
    m.add_security_group(SecurityGroup {
        id: "db".into(),
        rules: vec![rule(
            "pg",
            Direction::Ingress,
            Some("tcp"),
            Some((5432, 5432)),
            None,
            Some("app"),
        )],
    });
    let mut sg = open(&f);
    sg.reconcile(&m).unwrap();
    tcp_server(&b.ns, b.ip, 5432);
    assert!(tcp_ok(&a.ns, b.ip, 5432), "member of app reaches db");
    assert!(!tcp_ok(&c.ns, b.ip, 5432), "non-member does not");

    // c joins app: only the remote-group set changes (c's port batch).
    m.ports
        .get_mut("port-ksgv3")
        .unwrap()
        .security_groups
        .push("app".into());
    sg.apply_port(&m, "port-ksgv3").unwrap();
    assert!(tcp_ok(&c.ns, b.ip, 5432), "new member reaches db");

    // Keep a connection from a open, then a leaves app: its conntrack
    // entries are deleted with it.
    let held = Fixture::in_ns(&a.ns, || {
        std::net::TcpStream::connect((b.ip, 5432)).unwrap()
    });
    m.ports
        .get_mut("port-ksgv1")
        .unwrap()
        .security_groups
        .retain(|g| g != "app");
    let applied = sg.apply_port(&m, "port-ksgv1").unwrap();
    assert!(
        applied.conntrack_deleted >= 1,
        "a's tracked connections dropped: {applied:?}"
    );
    assert!(
        !tcp_ok(&a.ns, b.ip, 5432),
        "former member no longer reaches db"
    );
    assert!(tcp_ok(&c.ns, b.ip, 5432), "other members unaffected");
    drop(held);
}

#[test]
fn port_security_off_is_unfiltered() {
    require_env!();
    let mut f = Fixture::new();
    f.bridge("br0");
    let a = f.guest("br0", 1, "10.53.0.1", "02:00:00:00:04:01");
    let b = f.guest("br0", 2, "10.53.0.2", "02:00:00:00:04:02");
    let mut m = model_for("br0", 13, &[&a, &b], &["base"]);
    m.add_security_group(egress_any("base"));
    let mut sg = open(&f);
    sg.reconcile(&m).unwrap();
    tcp_server(&b.ns, b.ip, 8080);
    assert!(
        !tcp_ok(&a.ns, b.ip, 8080),
        "filtered while port security is on"
    );
    assert!(!Fixture::ping(&a, b.ip));

    let p = m.ports.get_mut("port-ksgv2").unwrap();
    p.port_security_enabled = false;
    p.security_groups.clear();
    sg.apply_port(&m, "port-ksgv2").unwrap();
    assert!(sg.mark_of("port-ksgv2").is_none());
    assert!(
        tcp_ok(&a.ns, b.ip, 8080),
        "unfiltered with port security off"
    );
    assert!(Fixture::ping(&a, b.ip));
    // b may now also use any source address.
    Fixture::exec(
        &b.ns,
        &["ip", "addr", "add", "10.53.0.99/24", "dev", "eth0"],
    );
    let sink = udp_sink(&a.ns, a.ip, 9999);
    udp_send(&b.ns, "10.53.0.99".parse().unwrap(), a.ip, 9999);
    // a's egress-only group allows nothing in; b spoofing is not what a's
    // ingress filter checks, so nothing arrives at a. Switch a off too:
    assert!(!received(&sink));
    let p = m.ports.get_mut("port-ksgv1").unwrap();
    p.port_security_enabled = false;
    sg.apply_port(&m, "port-ksgv1").unwrap();
    udp_send(&b.ns, "10.53.0.99".parse().unwrap(), a.ip, 9999);
    assert!(received(&sink), "unfiltered ports pass any source address");
}
