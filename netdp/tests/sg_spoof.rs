//! Anti-spoofing in real namespaces: spoofed IP, MAC and ARP are dropped,
//! allowed address pairs are honoured, IPv6 link-local from the MAC works,
//! and guests cannot answer as DHCP servers.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;

use common::rules::rule;
use common::*;
use kiln_netdp::model::{AllowedAddressPair, Direction, Ethertype, SecurityGroup};
use kiln_netdp::secgroup::SecurityGroups;

/// A group that lets everything in and out (so only anti-spoofing filters).
fn open_group() -> SecurityGroup {
    let mut rules = Vec::new();
    for (i, et) in [Ethertype::IPv4, Ethertype::IPv6].into_iter().enumerate() {
        for dir in [Direction::Ingress, Direction::Egress] {
            let mut r = rule(&format!("open-{i}-{dir:?}"), dir, None, None, None, None);
            r.ethertype = et;
            rules.push(r);
        }
    }
    SecurityGroup {
        id: "open".into(),
        rules,
    }
}

#[test]
fn spoofed_ip_mac_and_arp_are_dropped_and_pairs_honoured() {
    require_env!();
    let mut f = Fixture::new();
    f.bridge("br0");
    let a = f.guest("br0", 1, "10.54.0.1", "02:00:00:00:05:01");
    let b = f.guest("br0", 2, "10.54.0.2", "02:00:00:00:05:02");
    let mut m = model_for("br0", 14, &[&a, &b], &["open"]);
    m.add_security_group(open_group());
    let mut sg = Fixture::in_ns(&f.host, SecurityGroups::open).unwrap();
    sg.reconcile(&m).unwrap();

    let spoof: Ipv4Addr = "10.54.0.99".parse().unwrap();
    let sink = udp_sink(&b.ns, Ipv4Addr::UNSPECIFIED, 7000);
    static_neigh(&a.ns, b.ip, &b.mac);
    udp_send(&a.ns, a.ip, b.ip, 7000);
    assert!(received(&sink), "a's own address passes");

    // Spoofed source IP (a second address on the guest).
    Fixture::exec(
        &a.ns,
        &["ip", "addr", "add", "10.54.0.99/24", "dev", "eth0"],
    );
    udp_send(&a.ns, spoof, b.ip, 7000);
    assert!(!received(&sink), "spoofed source IP dropped");
    // Spoofed ARP: a answers b's ARP for .99, but its reply is dropped.
    assert!(!Fixture::ping(&b, spoof), "spoofed ARP reply dropped");

    // Allowed address pair (port MAC): the address becomes a's.
    let port_a = "port-ksgv1";
    m.ports
        .get_mut(port_a)
        .unwrap()
        .allowed_address_pairs
        .push(AllowedAddressPair {
            ip_address: "10.54.0.96/30".into(),
            mac_address: None,
        });
    sg.apply_port(&m, port_a).unwrap();
    udp_send(&a.ns, spoof, b.ip, 7000);
    assert!(received(&sink), "allowed address pair passes");
    assert!(
        Fixture::ping(&b, spoof),
        "ARP for the pair's address passes"
    );

    // Spoofed MAC.
    Fixture::exec(
        &a.ns,
        &["ip", "link", "set", "eth0", "address", "02:00:00:00:05:99"],
    );
    udp_send(&a.ns, a.ip, b.ip, 7000);
    assert!(!received(&sink), "spoofed MAC dropped");
    // A pair with its own MAC allows that MAC with that address.
    m.ports
        .get_mut(port_a)
        .unwrap()
        .allowed_address_pairs
        .push(AllowedAddressPair {
            ip_address: "10.54.0.1".into(),
            mac_address: Some("02:00:00:00:05:99".into()),
        });
    sg.apply_port(&m, port_a).unwrap();
    udp_send(&a.ns, a.ip, b.ip, 7000);
    assert!(received(&sink), "pair with its own MAC passes");
}

#[test]
fn ipv6_link_local_from_the_mac_passes_and_other_sources_do_not() {
    require_env!();
    let mut f = Fixture::new();
    f.bridge("br0");
    let a = f.guest("br0", 1, "10.55.0.1", "02:00:00:00:06:01");
    let b = f.guest("br0", 2, "10.55.0.2", "02:00:00:00:06:02");
    let mut m = model_for("br0", 15, &[&a, &b], &["open"]);
    m.add_security_group(open_group());
    let mut sg = Fixture::in_ns(&f.host, SecurityGroups::open).unwrap();
    sg.reconcile(&m).unwrap();
    // EUI-64 of 02:00:00:00:06:02
    let b_ll = "fe80::ff:fe00:602%eth0";
    let ping6 = |src: Option<&str>| {
        let mut args = vec!["ping", "-6", "-n", "-q", "-c", "1", "-W", "1"];
        if let Some(s) = src {
            args.extend(["-I", s]);
        }
        args.push(b_ll);
        Fixture::exec(&a.ns, &args).status.success()
    };
    assert!(ping6(None), "link-local from the MAC passes (with ND)");
    Fixture::exec(
        &a.ns,
        &["ip", "addr", "add", "fe80::99/64", "dev", "eth0", "nodad"],
    );
    assert!(
        !ping6(Some("fe80::99")),
        "another link-local source is dropped"
    );
}

#[test]
fn guests_cannot_answer_as_dhcp_servers() {
    require_env!();
    let mut f = Fixture::new();
    f.bridge("br0");
    let a = f.guest("br0", 1, "10.56.0.1", "02:00:00:00:07:01");
    let b = f.guest("br0", 2, "10.56.0.2", "02:00:00:00:07:02");
    let mut m = model_for("br0", 16, &[&a, &b], &["open"]);
    m.add_security_group(open_group());
    let mut sg = Fixture::in_ns(&f.host, SecurityGroups::open).unwrap();
    sg.reconcile(&m).unwrap();
    static_neigh(&b.ns, a.ip, "02:00:00:00:07:01");
    let sink = udp_sink(&a.ns, Ipv4Addr::UNSPECIFIED, 68);
    udp_send_port(&b.ns, b.ip, 66, a.ip, 68);
    assert!(received(&sink), "ordinary udp to port 68 passes");
    udp_send_port(&b.ns, b.ip, 67, a.ip, 68);
    assert!(
        !received(&sink),
        "udp from port 67 (a DHCP server) is dropped"
    );
}
