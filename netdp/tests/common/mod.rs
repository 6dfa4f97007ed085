//! Namespace fixture for security-group tests: a "host" namespace with a
//! bridge and "guest" namespaces behind veths on it. Everything is deleted on
//! drop, even when the test fails. Fixtures may use the `ip` command; the
//! runtime code under test does not.
#![allow(dead_code, clippy::unwrap_used)]

pub mod rules;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kiln_netdp::model::{FixedIp, Model, Network, Port};
use kiln_netdp::netns;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Why the test cannot run here, if it cannot.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces)".into());
    }
    for tool in ["ip", "ping"] {
        let ok = Command::new(tool).arg("-V").output().is_ok();
        if !ok {
            return Some(format!(
                "needs the `{tool}` command (apt: iproute2, iputils-ping)"
            ));
        }
    }
    None
}

/// Skip the calling test (return) with a message when capabilities are missing.
#[macro_export]
macro_rules! require_env {
    () => {
        if let Some(why) = common::skip_reason() {
            eprintln!("skipping: {why}");
            return;
        }
    };
}

pub fn run(args: &[&str]) -> std::process::Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

pub fn must(args: &[&str]) {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One guest: its namespace, host-side interface, MAC and address.
#[derive(Debug, Clone)]
pub struct Guest {
    pub ns: String,
    pub ifname: String,
    pub mac: String,
    pub ip: Ipv4Addr,
}

/// A host namespace with one bridge per network and guests behind veths.
pub struct Fixture {
    pub host: String,
    pub tag: String,
    namespaces: Vec<String>,
}

impl Fixture {
    /// A new host namespace named `ksg-<pid>-<n>-h`.
    pub fn new() -> Fixture {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let tag = format!("ksg-{}-{n}", std::process::id());
        let host = format!("{tag}-h");
        let mut f = Fixture {
            host: host.clone(),
            tag,
            namespaces: Vec::new(),
        };
        f.add_ns(&host);
        f.host(&["ip", "link", "set", "lo", "up"]);
        f
    }

    fn add_ns(&mut self, name: &str) {
        must(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_string());
    }

    /// Run a command in the host namespace; panics on failure.
    pub fn host(&self, args: &[&str]) {
        let mut v = vec!["ip", "netns", "exec", &self.host];
        v.extend_from_slice(args);
        must(&v);
    }

    /// Run a command in a namespace and return its output.
    pub fn exec(ns: &str, args: &[&str]) -> std::process::Output {
        let mut v = vec!["ip", "netns", "exec", ns];
        v.extend_from_slice(args);
        run(&v)
    }

    /// Add a bridge in the host namespace.
    pub fn bridge(&self, name: &str) {
        self.host(&["ip", "link", "add", name, "type", "bridge"]);
        self.host(&["ip", "link", "set", name, "up"]);
    }

    /// Add a guest namespace on `bridge` with address `ip/24` and MAC `mac`.
    pub fn guest(&mut self, bridge: &str, idx: usize, ip: &str, mac: &str) -> Guest {
        let ns = format!("{}-g{idx}", self.tag);
        self.add_ns(&ns);
        let ifname = format!("ksgv{idx}");
        must(&[
            "ip", "link", "add", &ifname, "netns", &self.host, "type", "veth", "peer", "name",
            "eth0", "netns", &ns,
        ]);
        self.host(&["ip", "link", "set", &ifname, "master", bridge, "up"]);
        let g = |a: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", ns.as_str()];
            v.extend_from_slice(a);
            must(&v);
        };
        g(&["ip", "link", "set", "lo", "up"]);
        g(&["ip", "link", "set", "eth0", "address", mac]);
        g(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        // No IPv6 duplicate address detection delays in the guest.
        g(&["sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"]);
        g(&["ip", "link", "set", "eth0", "up"]);
        Guest {
            ns,
            ifname,
            mac: mac.to_string(),
            ip: ip.parse().unwrap(),
        }
    }

    /// `ping -c 1` from a guest; true when answered.
    pub fn ping(from: &Guest, to: Ipv4Addr) -> bool {
        let to = to.to_string();
        Self::exec(&from.ns, &["ping", "-n", "-q", "-c", "1", "-W", "1", &to])
            .status
            .success()
    }

    /// Run `f` inside a namespace.
    pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
        netns::run_in(ns, f).unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Deleting a namespace deletes its interfaces (veth peers go with them)
        // and its nftables tables.
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A TCP listener inside `ns` that accepts and answers "ok" on each connection.
pub struct TcpServer {
    pub port: u16,
}

pub fn tcp_server(ns: &str, ip: Ipv4Addr, port: u16) -> TcpServer {
    let l = Fixture::in_ns(ns, || TcpListener::bind((ip, port))).unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(b"ok");
        }
    });
    TcpServer { port }
}

/// Connect from `ns` to `to:port` and read the server's "ok"; true on success.
pub fn tcp_ok(ns: &str, to: Ipv4Addr, port: u16) -> bool {
    let s = Fixture::in_ns(ns, || {
        TcpStream::connect_timeout(&SocketAddr::from((to, port)), Duration::from_millis(1500))
    });
    let Ok(mut s) = s else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(1500)));
    let mut buf = [0u8; 2];
    s.read_exact(&mut buf).is_ok() && &buf == b"ok"
}

/// A UDP echo server inside `ns`.
pub fn udp_echo(ns: &str, ip: Ipv4Addr, port: u16) {
    let s = Fixture::in_ns(ns, || UdpSocket::bind((ip, port))).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
}

/// Send one datagram from `ns` (bound to `from`) and wait for the echo.
pub fn udp_ok(ns: &str, from: Ipv4Addr, to: Ipv4Addr, port: u16) -> bool {
    let s = Fixture::in_ns(ns, || UdpSocket::bind((from, 0))).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    for _ in 0..2 {
        if s.send_to(b"ping", (to, port)).is_err() {
            return false;
        }
        let mut buf = [0u8; 8];
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return &buf[..n] == b"ping";
        }
    }
    false
}

/// A UDP receiver in `ns` that counts datagrams (no reply).
pub fn udp_sink(ns: &str, ip: Ipv4Addr, port: u16) -> UdpSocket {
    let s = Fixture::in_ns(ns, || UdpSocket::bind((ip, port))).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    s
}

/// Send a datagram from `ns`, bound to source `from` (which may be a spoofed
/// address added to the guest), to `to:port`.
pub fn udp_send(ns: &str, from: Ipv4Addr, to: Ipv4Addr, port: u16) {
    let s = Fixture::in_ns(ns, || UdpSocket::bind((from, 0))).unwrap();
    for _ in 0..3 {
        let _ = s.send_to(b"x", (to, port));
    }
}

/// True when at least one datagram arrived; drains everything queued so the
/// next check starts empty.
pub fn received(sink: &UdpSocket) -> bool {
    let mut buf = [0u8; 8];
    let mut any = false;
    while sink.recv_from(&mut buf).is_ok() {
        any = true;
    }
    any
}

/// A model with one network on `bridge` (zone `zone`) and one port per guest.
pub fn model_for(bridge: &str, zone: u16, guests: &[&Guest], groups: &[&str]) -> Model {
    let mut m = Model::default();
    m.add_network(Network {
        id: format!("net-{bridge}"),
        bridge: bridge.to_string(),
        ct_zone: zone,
    });
    for g in guests {
        m.add_port(port_for(&format!("net-{bridge}"), g, groups));
    }
    m
}

pub fn port_for(network: &str, g: &Guest, groups: &[&str]) -> Port {
    Port {
        id: format!("port-{}", g.ifname),
        network_id: network.to_string(),
        ifname: g.ifname.clone(),
        mac_address: g.mac.clone(),
        fixed_ips: vec![FixedIp {
            subnet_id: None,
            ip_address: g.ip.into(),
        }],
        allowed_address_pairs: vec![],
        port_security_enabled: true,
        security_groups: groups.iter().map(|s| s.to_string()).collect(),
    }
}

/// Send datagrams from `ns`, bound to `from:sport`, to `to:port`.
pub fn udp_send_port(ns: &str, from: Ipv4Addr, sport: u16, to: Ipv4Addr, port: u16) {
    let s = Fixture::in_ns(ns, || UdpSocket::bind((from, sport))).unwrap();
    for _ in 0..3 {
        let _ = s.send_to(b"x", (to, port));
    }
}

/// Pin `ip`'s neighbour entry in `ns` (so sending needs no ARP).
pub fn static_neigh(ns: &str, ip: Ipv4Addr, mac: &str) {
    let ip = ip.to_string();
    let out = Fixture::exec(
        ns,
        &[
            "ip",
            "neigh",
            "replace",
            &ip,
            "lladdr",
            mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    );
    assert!(out.status.success());
}

/// `nft -j list ruleset` inside `ns` (the test oracle); `None` without `nft`.
pub fn nft_json(ns: &str) -> Option<serde_json::Value> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-j", "list", "ruleset"])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("nft unavailable: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Objects of one kind (`"chain"`, `"set"`, `"map"`, `"rule"`) in a family's table.
pub fn nft_objects<'a>(
    j: &'a serde_json::Value,
    kind: &str,
    family: &str,
    table: &str,
) -> Vec<&'a serde_json::Value> {
    j["nftables"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| o.get(kind))
                .filter(|o| o["family"] == family && o["table"] == table)
                .collect()
        })
        .unwrap_or_default()
}

/// Names of the chains of a table.
pub fn nft_chains(j: &serde_json::Value, family: &str, table: &str) -> Vec<String> {
    nft_objects(j, "chain", family, table)
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

/// Number of elements of a set or map.
pub fn nft_elem_count(j: &serde_json::Value, family: &str, table: &str, name: &str) -> usize {
    ["set", "map"]
        .iter()
        .flat_map(|k| nft_objects(j, k, family, table))
        .find(|s| s["name"] == name)
        .and_then(|s| s["elem"].as_array().map(Vec::len))
        .unwrap_or(0)
}
