//! Converge on the real kernel: creates, fixes drift, removes kiln-owned leftovers, and a second run changes nothing.
#![allow(clippy::unwrap_used)]

mod link_support;

use std::net::{IpAddr, Ipv4Addr};

use kiln_netdp::link::tap::TapConfig;
use kiln_netdp::link::{
    converge, names, Change, LinkError, LinkKind, Links, NetworkLinks, PortFlags, PortLinks,
    VxlanLinks,
};
use link_support::{can_run, namespace};

const NET: &str = "6f1c2d3e-0000-4000-8000-000000000001";
const PORT1: &str = "aa11bb22-0000-4000-8000-000000000001";
const PORT2: &str = "cc33dd44-0000-4000-8000-000000000002";

fn port(id: &str, queues: u16, flags: PortFlags) -> PortLinks {
    PortLinks {
        tap: names::tap(id),
        queues,
        owner: None,
        flags,
        adopt_existing: false,
    }
}

fn desired(ports: Vec<PortLinks>) -> Vec<NetworkLinks> {
    vec![NetworkLinks {
        bridge: names::bridge(NET),
        mtu: 1450,
        addresses: vec![("10.5.0.1".parse().unwrap(), 24)],
        vxlan: Some(VxlanLinks {
            name: names::vxlan(NET),
            vni: 77,
            local: Ipv4Addr::new(127, 0, 0, 1),
            dstport: 4789,
            underlay: None,
            remotes: vec![Ipv4Addr::new(127, 0, 0, 2)],
            flags: PortFlags {
                learning: true,
                flood: true,
                neigh_suppress: false,
            },
        }),
        ports,
    }]
}

#[tokio::test]
async fn converge_creates_fixes_and_cleans_up_idempotently() {
    if !can_run("converge_creates_fixes_and_cleans_up_idempotently") {
        return;
    }
    let ns = namespace().await;
    let links = Links::open_in(ns.name()).unwrap();
    let (br, vx) = (names::bridge(NET), names::vxlan(NET));
    let (tap1, tap2) = (names::tap(PORT1), names::tap(PORT2));
    let quiet = PortFlags {
        learning: false,
        flood: false,
        neigh_suppress: true,
    };

    // Leftovers of a deleted network and port, and a foreign bridge.
    links.add_bridge("kbr-old", None).await.unwrap();
    let mut stale = TapConfig::new("ktap-old");
    stale.persist = true;
    drop(links.create_tap(&stale).unwrap());
    links.add_bridge("br-foreign", None).await.unwrap();

    let want = desired(vec![
        port(PORT1, 1, PortFlags::default()),
        port(PORT2, 2, quiet),
    ]);
    let first = converge(&links, &want).await.unwrap();
    for c in [
        Change::CreateBridge(br.clone()),
        Change::CreateVxlan(vx.clone()),
        Change::CreateTap(tap1.clone()),
        Change::CreateTap(tap2.clone()),
        Change::AddAddress(br.clone(), "10.5.0.1".parse().unwrap(), 24),
        Change::AddRemote(vx.clone(), Ipv4Addr::new(127, 0, 0, 2)),
        Change::SetPortFlags(tap2.clone(), quiet),
        Change::DeleteLeftover("kbr-old".into()),
        Change::DeleteLeftover("ktap-old".into()),
    ] {
        assert!(first.contains(&c), "missing {c} in {first:?}");
    }
    assert!(
        links.get("br-foreign").await.unwrap().is_some(),
        "foreign link touched"
    );

    let b = links.require(&br).await.unwrap();
    for name in [&vx, &tap1, &tap2] {
        let l = links.require(name).await.unwrap();
        assert_eq!(
            (l.controller, l.mtu, l.up),
            (Some(b.index), 1450, true),
            "{name}"
        );
    }
    assert_eq!(links.require(&tap2).await.unwrap().port_flags, Some(quiet));

    // Second run: nothing to do.
    assert_eq!(converge(&links, &want).await.unwrap(), vec![]);

    // Drift is repaired with exactly the needed changes.
    links.set_mtu(&tap1, 1500).await.unwrap();
    links.release(&tap2).await.unwrap();
    links.set_up(&br, false).await.unwrap();
    links
        .add_address(&br, "10.6.0.1".parse().unwrap(), 24)
        .await
        .unwrap();
    let fixed = converge(&links, &want).await.unwrap();
    let expect = [
        Change::SetUp(br.clone()),
        Change::RemoveAddress(br.clone(), "10.6.0.1".parse::<IpAddr>().unwrap(), 24),
        Change::SetMtu(tap1.clone(), 1450),
        Change::Enslave(tap2.clone(), br.clone()),
        Change::SetPortFlags(tap2.clone(), quiet),
    ];
    for c in &expect {
        assert!(fixed.contains(c), "missing {c} in {fixed:?}");
    }
    assert_eq!(fixed.len(), expect.len(), "{fixed:?}");
    assert_eq!(converge(&links, &want).await.unwrap(), vec![]);

    // A TAP whose queue count changed (single to multi-queue) is replaced.
    let requeued = desired(vec![
        port(PORT1, 2, PortFlags::default()),
        port(PORT2, 2, quiet),
    ]);
    let re = converge(&links, &requeued).await.unwrap();
    assert!(re.contains(&Change::Replace(tap1.clone())), "{re:?}");
    assert!(re.contains(&Change::CreateTap(tap1.clone())), "{re:?}");
    assert!(!re.contains(&Change::Replace(tap2.clone())), "{re:?}");
    assert_eq!(converge(&links, &requeued).await.unwrap(), vec![]);
    assert_eq!(
        converge(&links, &want).await.unwrap(),
        vec![
            Change::Replace(tap1.clone()),
            Change::CreateTap(tap1.clone()),
            Change::SetMtu(tap1.clone(), 1450),
            Change::Enslave(tap1.clone(), br.clone()),
            Change::SetUp(tap1.clone()),
        ]
    );

    // A VXLAN whose VNI changed is replaced.
    let mut renumbered = want.clone();
    if let Some(v) = renumbered[0].vxlan.as_mut() {
        v.vni = 78;
    }
    let re = converge(&links, &renumbered).await.unwrap();
    assert!(
        re.contains(&Change::Replace(vx.clone())) && re.contains(&Change::CreateVxlan(vx.clone()))
    );
    assert_eq!(converge(&links, &renumbered).await.unwrap(), vec![]);

    // A port removed from the desired state goes (the VNI returns to 77 too).
    let fewer = desired(vec![port(PORT1, 1, PortFlags::default())]);
    let shrunk = converge(&links, &fewer).await.unwrap();
    for c in [
        Change::Replace(vx.clone()),
        Change::CreateVxlan(vx.clone()),
        Change::Enslave(vx.clone(), br.clone()),
        Change::DeleteLeftover(tap2.clone()),
    ] {
        assert!(shrunk.contains(&c), "missing {c} in {shrunk:?}");
    }
    assert!(links.get(&tap2).await.unwrap().is_none());
    assert_eq!(converge(&links, &fewer).await.unwrap(), vec![]);

    // No networks left: every kiln link goes, the foreign bridge stays.
    let gone = converge(&links, &[]).await.unwrap();
    assert_eq!(gone.len(), 3, "{gone:?}");
    for name in [&br, &vx, &tap1] {
        assert!(
            links.get(name).await.unwrap().is_none(),
            "{name} left behind"
        );
    }
    assert!(links.get("br-foreign").await.unwrap().is_some());
    assert_eq!(converge(&links, &[]).await.unwrap(), vec![]);
}

#[tokio::test]
async fn a_broken_network_does_not_hold_back_the_others() {
    if !can_run("a_broken_network_does_not_hold_back_the_others") {
        return;
    }
    let ns = namespace().await;
    let links = Links::open_in(ns.name()).unwrap();
    let good = desired(vec![port(PORT1, 1, PortFlags::default())]);
    let mut broken = desired(vec![]);
    broken[0].bridge = "kbr-broken".into();
    if let Some(v) = broken[0].vxlan.as_mut() {
        v.name = "kvx-broken".into();
        v.underlay = Some("no-such-dev".into());
    }
    let both = [broken[0].clone(), good[0].clone()];
    match converge(&links, &both).await {
        Err(LinkError::Converge { failures, changes }) => {
            assert_eq!(failures.len(), 1, "{failures:?}");
            assert_eq!(failures[0].0, "kbr-broken");
            assert!(matches!(failures[0].1, LinkError::NotFound(ref d) if d == "no-such-dev"));
            assert!(changes.contains(&Change::CreateTap(names::tap(PORT1))));
        }
        other => panic!("expected a partial failure, got {other:?}"),
    }
    // The good network is complete: converging it alone changes nothing but
    // the removal of the broken network's bridge.
    assert_eq!(
        converge(&links, &good).await.unwrap(),
        vec![Change::DeleteLeftover("kbr-broken".into())]
    );
    // Sync callers inside a runtime get an error, not a panic.
    assert!(matches!(
        kiln_netdp::link::block_on(async {}),
        Err(LinkError::InsideRuntime)
    ));
}

#[tokio::test]
async fn an_adopted_tap_of_the_wrong_queue_mode_is_replaced_only_once_released() {
    if !can_run("an_adopted_tap_of_the_wrong_queue_mode_is_replaced_only_once_released") {
        return;
    }
    let ns = namespace().await;
    let links = Links::open_in(ns.name()).unwrap();
    let tap = names::tap(PORT1);
    let adopting = |queues| {
        let mut p = port(PORT1, queues, PortFlags::default());
        p.adopt_existing = true;
        desired(vec![p])
    };
    let multi_queue = |l: &kiln_netdp::link::LinkState| match &l.kind {
        LinkKind::Tun(t) => (t.multi_queue, t.queues),
        other => panic!("{tap} is a {other:?}"),
    };
    converge(&links, &adopting(2)).await.unwrap();
    let state = links.require(&tap).await.unwrap();
    assert_eq!(multi_queue(&state), (true, 0));

    // A VMM holds two queues: a single-queue port does not tear it down.
    let held = links
        .create_tap(&port(PORT1, 2, PortFlags::default()).tap_config())
        .unwrap();
    assert_eq!(multi_queue(&links.require(&tap).await.unwrap()), (true, 2));
    let kept = converge(&links, &adopting(1)).await.unwrap();
    assert!(!kept.contains(&Change::Replace(tap.clone())), "{kept:?}");
    assert_eq!(multi_queue(&links.require(&tap).await.unwrap()), (true, 2));

    // Released, it is replaced by a single-queue TAP.
    drop(held);
    let re = converge(&links, &adopting(1)).await.unwrap();
    assert!(re.contains(&Change::Replace(tap.clone())), "{re:?}");
    assert!(re.contains(&Change::CreateTap(tap.clone())), "{re:?}");
    assert_eq!(multi_queue(&links.require(&tap).await.unwrap()), (false, 0));
    assert_eq!(converge(&links, &adopting(1)).await.unwrap(), vec![]);
    converge(&links, &[]).await.unwrap();
}
