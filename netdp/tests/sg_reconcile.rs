//! Reconciliation against the kernel: converging from nothing, from a
//! simulated restart (in-memory state dropped), from a changed model and from
//! outside damage; a second run changes nothing. `nft -j` is the oracle.
#![allow(clippy::unwrap_used)]

mod common;

use common::rules::{egress_any, rule};
use common::*;
use kiln_netdp::model::{Direction, Network, SecurityGroup};
use kiln_netdp::secgroup::SecurityGroups;

#[test]
fn reconcile_converges_after_restart_and_is_idempotent() {
    require_env!();
    let mut f = Fixture::new();
    f.bridge("br0");
    f.bridge("br1");
    let a = f.guest("br0", 1, "10.57.0.1", "02:00:00:00:08:01");
    let b = f.guest("br0", 2, "10.57.0.2", "02:00:00:00:08:02");
    let c = f.guest("br0", 3, "10.57.0.3", "02:00:00:00:08:03");
    let mut m = model_for("br0", 17, &[&a, &c], &["base"]);
    m.add_port(port_for("net-br0", &b, &["base", "ssh"]));
    m.add_network(Network {
        id: "net-br1".into(),
        bridge: "br1".into(),
        ct_zone: 18,
    });
    m.add_security_group(egress_any("base"));
    m.add_security_group(SecurityGroup {
        id: "old".into(),
        rules: vec![rule(
            "o",
            Direction::Ingress,
            Some("udp"),
            Some((53, 53)),
            None,
            None,
        )],
    });
    m.add_security_group(SecurityGroup {
        id: "ssh".into(),
        rules: vec![rule(
            "22",
            Direction::Ingress,
            Some("tcp"),
            Some((22, 22)),
            None,
            Some("base"),
        )],
    });

    let mut sg = Fixture::in_ns(&f.host, SecurityGroups::open).unwrap();
    assert!(
        sg.reconcile(&m).unwrap().messages > 0,
        "first run builds everything"
    );
    assert_eq!(
        sg.reconcile(&m).unwrap().messages,
        0,
        "second run sends nothing"
    );
    let mark_b = sg.mark_of("port-ksgv2");
    drop(sg);

    tcp_server(&b.ns, b.ip, 22);
    assert!(tcp_ok(&a.ns, b.ip, 22));

    // Restart: a new instance knows nothing; the kernel already matches.
    let mut sg = Fixture::in_ns(&f.host, SecurityGroups::open).unwrap();
    assert_eq!(
        sg.reconcile(&m).unwrap().messages,
        0,
        "restart with same model: no change"
    );
    assert_eq!(
        sg.mark_of("port-ksgv2"),
        mark_b,
        "marks are taken over from the kernel"
    );
    drop(sg);

    // While "down", port c and network br1 are deleted and the ssh rule narrows.
    m.ports.remove("port-ksgv3");
    m.networks.remove("net-br1");
    m.security_groups.remove("old");
    if let Some(g) = m.security_groups.get_mut("ssh") {
        g.rules[0].port_range_min = Some(2222);
        g.rules[0].port_range_max = Some(2222);
    }
    let mut sg = Fixture::in_ns(&f.host, SecurityGroups::open).unwrap();
    assert!(sg.reconcile(&m).unwrap().messages > 0);
    assert_eq!(sg.reconcile(&m).unwrap().messages, 0);
    tcp_server(&b.ns, b.ip, 2222);
    assert!(
        !tcp_ok(&a.ns, b.ip, 22),
        "the narrowed rule holds after reconcile"
    );
    assert!(
        tcp_ok(&a.ns, b.ip, 2222),
        "the new port is open to the remote group"
    );
    assert!(
        !tcp_ok(&c.ns, b.ip, 2222),
        "deleted port is no longer in the remote group"
    );

    if let Some(j) = nft_json(&f.host) {
        let chains = nft_chains(&j, "inet", "kiln");
        assert!(chains.contains(&"gi-ssh".to_string()), "{chains:?}");
        assert!(
            !chains.iter().any(|c| c.ends_with("-old")),
            "leftover chains removed: {chains:?}"
        );
        assert_eq!(
            nft_elem_count(&j, "inet", "kiln", "zone_of"),
            1,
            "leftover network removed"
        );
        assert_eq!(
            nft_elem_count(&j, "inet", "kiln", "to_ports"),
            2,
            "leftover port removed"
        );
        assert_eq!(nft_elem_count(&j, "inet", "kiln", "pg-base"), 2);
        assert_eq!(nft_elem_count(&j, "bridge", "kiln", "as_mac"), 2);
        assert_eq!(nft_elem_count(&j, "bridge", "kiln", "as_ip4_host"), 2);
        assert_eq!(nft_elem_count(&j, "bridge", "kiln", "as_ip4"), 0);
    }

    // Outside damage: a whole table deleted; reconcile rebuilds it, once.
    Fixture::exec(&f.host, &["nft", "delete", "table", "inet", "kiln"]);
    let mut sg = Fixture::in_ns(&f.host, SecurityGroups::open).unwrap();
    assert!(sg.reconcile(&m).unwrap().messages > 0);
    assert_eq!(sg.reconcile(&m).unwrap().messages, 0);
    assert!(!tcp_ok(&a.ns, b.ip, 22));
    assert!(tcp_ok(&a.ns, b.ip, 2222));
    // Elements removed behind our back (every port's MAC, and its exact
    // MAC . address pairs, which hold the MAC too) are put back.
    for set in ["as_mac", "as_ip4_host"] {
        Fixture::exec(&f.host, &["nft", "flush", "set", "bridge", "kiln", set]);
    }
    assert!(
        !tcp_ok(&a.ns, b.ip, 2222),
        "without its MAC element a is dropped"
    );
    let mut sg = Fixture::in_ns(&f.host, SecurityGroups::open).unwrap();
    assert!(sg.reconcile(&m).unwrap().messages > 0);
    assert_eq!(sg.reconcile(&m).unwrap().messages, 0);
    assert!(tcp_ok(&a.ns, b.ip, 2222), "restored");
}
