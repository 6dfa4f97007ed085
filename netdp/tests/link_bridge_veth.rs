//! Bridges, veths, addresses, routes, MTU, MAC and port flags on the real kernel, inside namespaces the test creates.
#![allow(clippy::unwrap_used)]

mod link_support;

use std::net::IpAddr;

use kiln_netdp::link::{LinkKind, Links, PortFlags};
use link_support::{can_run, exec, namespace, ping, ping_eventually, veth_guest};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn bridge_veth_address_and_ping_across() {
    if !can_run("bridge_veth_address_and_ping_across") {
        return;
    }
    let host_ns = namespace().await;
    let guest_ns = namespace().await;
    let host = Links::open_in(host_ns.name()).unwrap();

    host.add_bridge("kbr-t", Some(1500)).await.unwrap();
    host.add_address("kbr-t", ip("10.77.0.1"), 24)
        .await
        .unwrap();
    veth_guest(
        &host,
        "gv1",
        guest_ns.name(),
        Some((ip("10.77.0.2"), 24)),
        1500,
    )
    .await
    .unwrap();
    host.enslave("gv1", "kbr-t").await.unwrap();
    host.set_up("gv1", true).await.unwrap();

    let br = host.require("kbr-t").await.unwrap();
    assert_eq!(br.kind, LinkKind::Bridge);
    assert!(br.up);
    let port = host.require("gv1").await.unwrap();
    assert_eq!(port.kind, LinkKind::Veth);
    assert_eq!(port.controller, Some(br.index));
    assert_eq!(port.port_flags, Some(PortFlags::default()));
    assert!(host.get("gv1p").await.unwrap().is_none(), "peer moved away");
    assert_eq!(
        host.addresses("kbr-t")
            .await
            .unwrap()
            .into_iter()
            .filter(|(a, _)| a.is_ipv4())
            .collect::<Vec<_>>(),
        vec![(ip("10.77.0.1"), 24)]
    );

    assert!(
        ping_eventually(guest_ns.name(), "10.77.0.1"),
        "guest cannot reach the bridge"
    );

    // Port flags round-trip through the kernel.
    let flags = PortFlags {
        learning: false,
        flood: false,
        neigh_suppress: true,
    };
    host.set_port_flags("gv1", flags).await.unwrap();
    assert_eq!(host.require("gv1").await.unwrap().port_flags, Some(flags));

    // A route in the guest through the bridge address.
    let guest = Links::open_in(guest_ns.name()).unwrap();
    guest
        .add_route(ip("10.88.0.0"), 16, Some(ip("10.77.0.1")), Some("eth0"))
        .await
        .unwrap();
    let routes = exec(guest_ns.name(), &["ip", "route", "show", "10.88.0.0/16"]);
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        routes.contains("via 10.77.0.1 dev eth0"),
        "route missing: {routes}"
    );
    assert!(guest
        .add_route(ip("10.88.0.0"), 40, None, None)
        .await
        .is_err());

    // MTU and MAC.
    guest.set_mtu("eth0", 1400).await.unwrap();
    guest
        .set_mac("eth0", [0x02, 0x6b, 0, 0, 0, 9])
        .await
        .unwrap();
    let e = guest.require("eth0").await.unwrap();
    assert_eq!((e.mtu, e.mac), (1400, Some([0x02, 0x6b, 0, 0, 0, 9])));

    // Removing the bridge address breaks the ping; releasing the port keeps it gone.
    host.del_address("kbr-t", ip("10.77.0.1"), 24)
        .await
        .unwrap();
    assert!(!ping(guest_ns.name(), "10.77.0.1"));
    host.release("gv1").await.unwrap();
    assert_eq!(host.require("gv1").await.unwrap().controller, None);

    // Down, then delete.
    host.set_up("kbr-t", false).await.unwrap();
    assert!(!host.require("kbr-t").await.unwrap().up);
    host.delete("kbr-t").await.unwrap();
    host.delete("gv1").await.unwrap();
    assert!(host.get("kbr-t").await.unwrap().is_none());
    assert!(host.get("gv1").await.unwrap().is_none());
    assert!(matches!(
        host.delete("kbr-t").await,
        Err(kiln_netdp::link::LinkError::NotFound(_))
    ));
}

#[test]
fn namespaces_are_created_listed_and_deleted() {
    if !can_run("namespaces_are_created_listed_and_deleted") {
        return;
    }
    let name = link_support::unique();
    kiln_netdp::netns::create(&name).unwrap();
    assert!(kiln_netdp::netns::list().unwrap().contains(&name));
    assert!(kiln_netdp::netns::exists(&name));
    let again = kiln_netdp::netns::create(&name);
    assert_eq!(again.unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
    // Code run inside sees its own, empty namespace: only lo.
    let links = kiln_netdp::netns::run_in(&name, || {
        std::fs::read_to_string("/proc/thread-self/net/dev")
            .map(|s| s.lines().filter(|l| l.contains(':')).count())
            .unwrap_or(0)
            == 1
    })
    .unwrap();
    assert!(links, "a new namespace has exactly one link (lo)");
    kiln_netdp::netns::delete(&name).unwrap();
    assert!(!kiln_netdp::netns::exists(&name));
    assert_eq!(
        kiln_netdp::netns::delete(&name).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
}
