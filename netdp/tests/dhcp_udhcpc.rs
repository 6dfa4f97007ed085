//! The DHCP server end to end: busybox udhcpc in guest namespaces behind a bridge gets exactly its static lease; unknown MACs get nothing; leases change at run time; a wrong REQUEST is NAKed.
#![allow(clippy::unwrap_used)]

mod link_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use kiln_netdp::dhcp::packet::{
    code, Message, MessageType, FLAG_BROADCAST, HTYPE_ETHERNET, OP_REQUEST,
};
use kiln_netdp::dhcp::{
    parse, DhcpError, DhcpServer, Lease, NetworkOptions, ServerConfig, StaticRoute,
};
use kiln_netdp::link::Links;
use kiln_netdp::netns::{self, OwnedNetns};
use link_support::{can_run, namespace, veth_guest};

const MAC1: [u8; 6] = [0x02, 0x6b, 0, 0, 0, 0x10];
const MAC2: [u8; 6] = [0x02, 0x6b, 0, 0, 0, 0x11];

fn busybox_present(test: &str) -> bool {
    if Command::new("busybox").arg("true").output().is_err() {
        eprintln!("skipping {test}: needs busybox (apt busybox-static) for udhcpc");
        return false;
    }
    true
}

fn options() -> NetworkOptions {
    NetworkOptions {
        prefix: 24,
        router: Some(Ipv4Addr::new(10, 44, 0, 1)),
        dns: vec![Ipv4Addr::new(10, 44, 0, 53), Ipv4Addr::new(10, 44, 0, 54)],
        domain: Some("kiln.test".into()),
        mtu: Some(1400),
        routes: vec![StaticRoute {
            dest: Ipv4Addr::new(172, 16, 0, 0),
            prefix: 12,
            gateway: Ipv4Addr::new(10, 44, 0, 254),
        }],
        lease_secs: 600,
    }
}

fn lease(mac: [u8; 6], last: u8, host: &str) -> Lease {
    Lease {
        mac,
        ip: Ipv4Addr::new(10, 44, 0, last),
        hostname: Some(host.into()),
    }
}

/// Run udhcpc once in `ns`; the variables its script saw on "bound", or
/// None if it got no lease after `tries` DISCOVERs one second apart.
fn udhcpc(ns: &str, tries: u32) -> Option<Vec<(String, String)>> {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script");
    let out = dir.path().join("bound.env");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = bound ] && env > \"$OUT\"\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let status = Command::new("ip")
        .args([
            "netns", "exec", ns, "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n",
        ])
        .args(["-t", &tries.to_string(), "-T", "1"])
        .args(["-O", "mtu", "-O", "staticroutes", "-s"])
        .arg(&script)
        .env("OUT", &out)
        .output()
        .unwrap();
    let env = std::fs::read_to_string(&out).ok()?;
    assert!(status.status.success(), "bound but failed: {status:?}");
    Some(
        env.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn var<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
    env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

struct Net {
    host: OwnedNetns,
    guests: Vec<OwnedNetns>,
}

/// A bridge with 10.44.0.1/24 in a host namespace and one guest per MAC.
async fn network(macs: &[[u8; 6]]) -> Net {
    let host = namespace().await;
    let links = Links::open_in(host.name()).unwrap();
    links.add_bridge("kbr-d", None).await.unwrap();
    links
        .add_address("kbr-d", IpAddr::V4(Ipv4Addr::new(10, 44, 0, 1)), 24)
        .await
        .unwrap();
    let mut guests = Vec::new();
    for (i, mac) in macs.iter().enumerate() {
        let g = namespace().await;
        let port = format!("gv{i}");
        veth_guest(&links, &port, g.name(), None, 1500)
            .await
            .unwrap();
        Links::open_in(g.name())
            .unwrap()
            .set_mac("eth0", *mac)
            .await
            .unwrap();
        links.enslave(&port, "kbr-d").await.unwrap();
        links.set_up(&port, true).await.unwrap();
        guests.push(g);
    }
    Net { host, guests }
}

fn config(host: &str) -> ServerConfig {
    ServerConfig {
        bridge: "kbr-d".into(),
        netns: Some(host.into()),
        options: options(),
    }
}

#[tokio::test]
async fn udhcpc_gets_exactly_its_lease_and_unknown_macs_get_nothing() {
    let name = "udhcpc_gets_exactly_its_lease_and_unknown_macs_get_nothing";
    if !can_run(name) || !busybox_present(name) {
        return;
    }
    let net = network(&[MAC1, MAC2]).await;
    let server =
        DhcpServer::start(config(net.host.name()), vec![lease(MAC1, 10, "vm-one")]).unwrap();
    assert_eq!(server.server_id(), Ipv4Addr::new(10, 44, 0, 1));
    let (g1, g2) = (
        net.guests[0].name().to_string(),
        net.guests[1].name().to_string(),
    );

    let env = tokio::task::spawn_blocking({
        let g1 = g1.clone();
        move || udhcpc(&g1, 5)
    })
    .await
    .unwrap()
    .expect("known MAC got no lease");
    for (k, v) in [
        ("ip", "10.44.0.10"),
        ("subnet", "255.255.255.0"),
        ("router", "10.44.0.1"),
        ("dns", "10.44.0.53 10.44.0.54"),
        ("mtu", "1400"),
        ("hostname", "vm-one"),
        ("domain", "kiln.test"),
        ("serverid", "10.44.0.1"),
        ("lease", "600"),
        (
            "staticroutes",
            "172.16.0.0/12 10.44.0.254 0.0.0.0/0 10.44.0.1",
        ),
    ] {
        assert_eq!(var(&env, k), Some(v), "{k} in {env:?}");
    }

    // The unknown MAC times out without an answer.
    let none = tokio::task::spawn_blocking({
        let g2 = g2.clone();
        move || udhcpc(&g2, 2)
    })
    .await
    .unwrap();
    assert_eq!(none, None, "unknown MAC got a lease");

    // Leases change at run time: the second guest is added, the first removed.
    server.add_lease(lease(MAC2, 11, "vm-two"));
    assert!(server.remove_lease(&MAC1).is_some());
    assert_eq!(server.leases(), vec![lease(MAC2, 11, "vm-two")]);
    let (env2, env1) = tokio::task::spawn_blocking(move || (udhcpc(&g2, 5), udhcpc(&g1, 2)))
        .await
        .unwrap();
    let env2 = env2.expect("added lease not served");
    assert_eq!(var(&env2, "ip"), Some("10.44.0.11"));
    assert_eq!(var(&env2, "hostname"), Some("vm-two"));
    assert_eq!(env1, None, "removed lease still served");
    server.stop();
}

/// Send one DHCP message from inside `ns` (no address yet, port 68, broadcast)
/// and return the first answer, if any comes (three tries, a second each).
fn exchange(ns: &str, msg: &Message) -> Option<Message> {
    exchange_raw(ns, &msg.encode(), msg.xid, Ipv4Addr::UNSPECIFIED)
}

/// Send `wire` from `local`:68 and wait for the answer to `xid`. A socket
/// bound to a unicast `local` address does not receive broadcasts.
fn exchange_raw(ns: &str, wire: &[u8], xid: u32, local: Ipv4Addr) -> Option<Message> {
    let sock = netns::run_in(ns, || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.set_broadcast(true).unwrap();
        s.bind_device(Some(b"eth0")).unwrap();
        s.bind(&SocketAddrV4::new(local, 68).into()).unwrap();
        std::net::UdpSocket::from(s)
    })
    .unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 1500];
    // Like a real client, retransmit: the first frames can be lost while the
    // fresh veth's carrier comes up.
    for _ in 0..3 {
        sock.send_to(wire, SocketAddrV4::new(Ipv4Addr::BROADCAST, 67))
            .unwrap();
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            let m = parse(&buf[..n]).unwrap();
            if m.xid == xid {
                return Some(m);
            }
        }
    }
    None
}

fn request(mac: [u8; 6], xid: u32, opts: Vec<(u8, Vec<u8>)>) -> Message {
    let mut chaddr = [0u8; 16];
    chaddr[..6].copy_from_slice(&mac);
    let mut options = vec![(code::MESSAGE_TYPE, vec![MessageType::Request.to_u8()])];
    options.extend(opts);
    Message {
        op: OP_REQUEST,
        htype: HTYPE_ETHERNET,
        hlen: 6,
        hops: 0,
        xid,
        secs: 0,
        flags: FLAG_BROADCAST,
        ciaddr: Ipv4Addr::UNSPECIFIED,
        yiaddr: Ipv4Addr::UNSPECIFIED,
        siaddr: Ipv4Addr::UNSPECIFIED,
        giaddr: Ipv4Addr::UNSPECIFIED,
        chaddr,
        options,
    }
}

#[tokio::test]
async fn wrong_request_is_naked_and_right_one_acked_over_the_bridge() {
    if !can_run("wrong_request_is_naked_and_right_one_acked_over_the_bridge") {
        return;
    }
    let net = network(&[MAC1]).await;
    let _server =
        DhcpServer::start(config(net.host.name()), vec![lease(MAC1, 10, "vm-one")]).unwrap();
    let g = net.guests[0].name().to_string();
    let (nak, ack, garbage) = tokio::task::spawn_blocking(move || {
        let nak = exchange(
            &g,
            &request(MAC1, 7, vec![(code::REQUESTED_IP, vec![10, 44, 0, 99])]),
        );
        let ack = exchange(
            &g,
            &request(MAC1, 8, vec![(code::REQUESTED_IP, vec![10, 44, 0, 10])]),
        );
        // A truncated packet gets no answer and does not stop the server.
        let wire = request(MAC1, 9, vec![(code::REQUESTED_IP, vec![10, 44, 0, 10])]).encode();
        let garbage = exchange_raw(&g, &wire[..200], 9, Ipv4Addr::UNSPECIFIED);
        let after = exchange(
            &g,
            &request(MAC1, 10, vec![(code::REQUESTED_IP, vec![10, 44, 0, 10])]),
        );
        assert!(after.is_some(), "server stopped answering");
        (nak, ack, garbage)
    })
    .await
    .unwrap();
    let nak = nak.expect("no answer to a wrong REQUEST");
    assert_eq!(nak.message_type(), Some(MessageType::Nak));
    let ack = ack.expect("no answer to a right REQUEST");
    assert_eq!(ack.message_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr, Ipv4Addr::new(10, 44, 0, 10));
    assert_eq!(garbage, None);
}

#[tokio::test]
async fn inform_from_a_configured_guest_is_answered_by_unicast() {
    if !can_run("inform_from_a_configured_guest_is_answered_by_unicast") {
        return;
    }
    let net = network(&[MAC1]).await;
    let _server =
        DhcpServer::start(config(net.host.name()), vec![lease(MAC1, 10, "vm-one")]).unwrap();
    let g = net.guests[0].name().to_string();
    let guest = Links::open_in(&g).unwrap();
    let own = Ipv4Addr::new(10, 44, 0, 10);
    guest
        .add_address("eth0", IpAddr::V4(own), 24)
        .await
        .unwrap();
    let mut inform = request(MAC1, 21, vec![]);
    inform.options = vec![(code::MESSAGE_TYPE, vec![MessageType::Inform.to_u8()])];
    inform.ciaddr = own;
    inform.flags = 0; // no broadcast bit: the answer comes to ciaddr
                      // Bound to the guest's own address, the socket sees only unicast answers.
    let ack = tokio::task::spawn_blocking(move || exchange_raw(&g, &inform.encode(), 21, own))
        .await
        .unwrap()
        .expect("no answer to INFORM");
    assert_eq!(ack.message_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(ack.option(code::LEASE_TIME), None);
    assert_eq!(ack.option(code::ROUTER), Some(&[10, 44, 0, 1][..]));
    assert_eq!(ack.option(code::MTU), Some(&1400u16.to_be_bytes()[..]));
}

#[tokio::test]
async fn a_bridge_without_an_address_or_a_missing_bridge_is_refused() {
    if !can_run("a_bridge_without_an_address_or_a_missing_bridge_is_refused") {
        return;
    }
    let host = namespace().await;
    Links::open_in(host.name())
        .unwrap()
        .add_bridge("kbr-n", None)
        .await
        .unwrap();
    let mut cfg = config(host.name());
    cfg.bridge = "kbr-n".into();
    assert!(matches!(
        DhcpServer::start(cfg.clone(), vec![]),
        Err(DhcpError::NoAddress(..))
    ));
    cfg.bridge = "kbr-missing".into();
    assert!(matches!(
        DhcpServer::start(cfg, vec![]),
        Err(DhcpError::Device(..))
    ));
}
