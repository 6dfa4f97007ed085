//! Two "nodes" (namespaces) joined by a veth underlay carry one tenant network over VXLAN, set up by converge; FDB remotes decide reachability.
#![allow(clippy::unwrap_used)]

mod link_support;

use std::net::{IpAddr, Ipv4Addr};

use kiln_netdp::link::{converge, Change, Links, NetworkLinks, PortFlags, VxlanLinks};
use link_support::{can_run, namespace, ping, ping_eventually, veth_guest};

fn network(local: Ipv4Addr, remotes: Vec<Ipv4Addr>) -> NetworkLinks {
    NetworkLinks {
        bridge: "kbr-net".into(),
        mtu: 1450,
        addresses: vec![],
        vxlan: Some(VxlanLinks {
            name: "kvx-net".into(),
            vni: 4242,
            local,
            dstport: 4789,
            underlay: Some("ul".into()),
            remotes,
            flags: PortFlags::default(),
        }),
        ports: vec![],
    }
}

#[tokio::test]
async fn guests_on_two_nodes_ping_across_vxlan() {
    if !can_run("guests_on_two_nodes_ping_across_vxlan") {
        return;
    }
    let node_a = namespace().await;
    let node_b = namespace().await;
    let guest_a = namespace().await;
    let guest_b = namespace().await;
    let a = Links::open_in(node_a.name()).unwrap();
    let b = Links::open_in(node_b.name()).unwrap();
    let ip_a = Ipv4Addr::new(192, 168, 77, 1);
    let ip_b = Ipv4Addr::new(192, 168, 77, 2);

    // Underlay: a veth between the nodes, named "ul" on both sides.
    a.add_veth("ul", "ulb").await.unwrap();
    a.move_to_netns("ulb", node_b.name(), Some("ul"))
        .await
        .unwrap();
    a.add_address("ul", IpAddr::V4(ip_a), 24).await.unwrap();
    b.add_address("ul", IpAddr::V4(ip_b), 24).await.unwrap();
    a.set_up("ul", true).await.unwrap();
    b.set_up("ul", true).await.unwrap();
    assert!(ping_eventually(node_a.name(), "192.168.77.2"), "underlay");

    // The tenant network on each node, by converge.
    let na = [network(ip_a, vec![ip_b])];
    let nb = [network(ip_b, vec![ip_a])];
    let first = converge(&a, &na).await.unwrap();
    assert!(first.contains(&Change::CreateBridge("kbr-net".into())));
    assert!(first.contains(&Change::CreateVxlan("kvx-net".into())));
    assert!(first.contains(&Change::AddRemote("kvx-net".into(), ip_b)));
    converge(&b, &nb).await.unwrap();
    assert_eq!(
        a.fdb_remotes("kvx-net").await.unwrap(),
        vec![IpAddr::V4(ip_b)]
    );

    // Guests behind veths on each node's bridge.
    let g1: IpAddr = "10.99.0.1".parse().unwrap();
    veth_guest(&a, "gva", guest_a.name(), Some((g1, 24)), 1450)
        .await
        .unwrap();
    veth_guest(
        &b,
        "gvb",
        guest_b.name(),
        Some(("10.99.0.2".parse().unwrap(), 24)),
        1450,
    )
    .await
    .unwrap();
    for (l, port) in [(&a, "gva"), (&b, "gvb")] {
        l.enslave(port, "kbr-net").await.unwrap();
        l.set_up(port, true).await.unwrap();
    }
    assert!(
        ping_eventually(guest_a.name(), "10.99.0.2"),
        "guests cannot reach each other"
    );
    assert!(ping(guest_b.name(), "10.99.0.1"));

    // Converge is idempotent (the hand-made guest veths are not kiln's).
    assert_eq!(converge(&a, &na).await.unwrap(), vec![]);
    assert_eq!(converge(&b, &nb).await.unwrap(), vec![]);

    // Several remotes coexist; removing one leaves the others.
    let extra = Ipv4Addr::new(192, 168, 77, 9);
    a.fdb_append("kvx-net", IpAddr::V4(extra)).await.unwrap();
    assert_eq!(
        a.fdb_remotes("kvx-net").await.unwrap(),
        vec![IpAddr::V4(ip_b), IpAddr::V4(extra)]
    );
    assert_eq!(
        converge(&a, &na).await.unwrap(),
        vec![Change::RemoveRemote("kvx-net".into(), IpAddr::V4(extra))]
    );

    // Without node B as a remote on node A, the guests are cut off.
    let cut = converge(&a, &[network(ip_a, vec![])]).await.unwrap();
    assert_eq!(
        cut,
        vec![Change::RemoveRemote("kvx-net".into(), IpAddr::V4(ip_b))]
    );
    assert!(a.fdb_remotes("kvx-net").await.unwrap().is_empty());
    assert!(
        !ping(guest_a.name(), "10.99.0.2"),
        "ping crossed without an FDB remote"
    );

    // Restoring it restores the path.
    converge(&a, &na).await.unwrap();
    assert!(ping_eventually(guest_a.name(), "10.99.0.2"));
}
