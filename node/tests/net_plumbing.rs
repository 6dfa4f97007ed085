//! The node's network side end to end without KVM: a real `kiln-node up`
//! (sim driver) holds the desired state; ports, a subnet and a security group
//! are made with the real `openstack` CLI; [`NodeNet`] wires them in a "host"
//! namespace the test owns, where each "guest" is a namespace behind a veth
//! named like the port's TAP. From the guests: DHCP (busybox udhcpc) against
//! the real server, ping and TCP as the rules say (and not after a rule is
//! deleted), spoofing dropped, each guest's own metadata. Unplugging and
//! deleting the ports leaves no link, namespace, nf_tables table or lease.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use kiln_controller::protocol::{FlavorSpec, InstanceMeta, PortSpec, Spawn};
use kiln_netdp::link::names;
use kiln_netdp::netns;
use kiln_node::net::{dhcpns, NetConfig, NodeNet};
use kiln_node::plumbing::Plumbing;
use serde_json::Value;
use support::{in_ns, missing_root_or_tools, must, must_in, Cloud, ScratchDir};

const NODE: &str = "sim-0";

fn skip_reason() -> Option<String> {
    missing_root_or_tools(&[
        ("ip", "-V", "iproute2"),
        ("ping", "-V", "iputils-ping"),
        ("busybox", "true", "busybox-static"),
        ("nft", "-v", "nftables"),
    ])
}

/// Namespaces deleted on drop, even when the test fails (deleting the host
/// namespace deletes its bridges, TAPs, veths and nf_tables tables).
#[derive(Default)]
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: &str) -> String {
        must(&["ip", "netns", "add", name]);
        self.0.push(name.to_string());
        must_in(name, &["ip", "link", "set", "lo", "up"]);
        name.to_string()
    }

    /// Delete `name` on drop too (made by the code under test).
    fn adopt(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in self.0.iter().rev() {
            if netns::exists(ns) {
                let _ = Command::new("ip").args(["netns", "del", ns]).output();
            }
        }
    }
}

/// A guest: namespace `ns` whose `eth0` is the peer of `ifname` in `host`.
fn guest(host: &str, ns: &str, ifname: &str, mac: &str) {
    must(&[
        "ip", "link", "add", ifname, "netns", host, "type", "veth", "peer", "name", "eth0",
        "netns", ns,
    ]);
    must_in(ns, &["ip", "link", "set", "eth0", "address", mac]);
    must_in(ns, &["ip", "link", "set", "eth0", "up"]);
}

/// busybox udhcpc once in `ns`: the variables of the "bound" event.
fn udhcpc(ns: &str) -> Vec<(String, String)> {
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
        .args(["netns", "exec", ns, "busybox", "udhcpc", "-i", "eth0"])
        .args(["-f", "-q", "-n", "-t", "5", "-T", "1"])
        .args(["-O", "mtu", "-O", "staticroutes", "-s"])
        .arg(&script)
        .env("OUT", &out)
        .output()
        .unwrap();
    let env = std::fs::read_to_string(&out)
        .unwrap_or_else(|_| panic!("udhcpc in {ns} got no lease: {status:?}"));
    env.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn var<'a>(env: &'a [(String, String)], k: &str) -> &'a str {
    env.iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("udhcpc gave no {k}: {env:?}"))
}

/// Configure the lease like a DHCP client would: the address and the
/// classless routes (`dest/len gw` pairs).
fn configure(ns: &str, env: &[(String, String)]) -> Ipv4Addr {
    let ip = var(env, "ip");
    must_in(
        ns,
        &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
    );
    let routes: Vec<&str> = var(env, "staticroutes").split_whitespace().collect();
    for pair in routes.chunks(2) {
        if let [dest, gw] = pair {
            if *dest != "0.0.0.0/0" {
                must_in(ns, &["ip", "route", "add", dest, "via", gw]);
            }
        }
    }
    ip.parse().unwrap()
}

fn ping(ns: &str, to: Ipv4Addr, from: Option<&str>) -> bool {
    let to = to.to_string();
    let mut args = vec!["ping", "-n", "-q", "-c", "1", "-W", "1"];
    if let Some(f) = from {
        args.extend(["-I", f]);
    }
    args.push(&to);
    in_ns(ns, &args).status.success()
}

fn tcp_server(ns: &str, ip: Ipv4Addr, port: u16) {
    let l = netns::run_in(ns, || TcpListener::bind((ip, port)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(b"ok");
        }
    });
}

fn tcp_ok(ns: &str, to: Ipv4Addr, port: u16) -> bool {
    let s = netns::run_in(ns, || {
        TcpStream::connect_timeout(&SocketAddr::from((to, port)), Duration::from_millis(1500))
    })
    .unwrap();
    let Ok(mut s) = s else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(1500)));
    let mut buf = [0u8; 2];
    s.read_exact(&mut buf).is_ok() && &buf == b"ok"
}

/// GET `path` from the metadata service, from inside `ns`: (status, body).
fn metadata(ns: &str, path: &str) -> (u16, String) {
    let text = netns::run_in(ns, || -> std::io::Result<String> {
        let addr = SocketAddr::from((dhcpns::METADATA_IP, 80));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .unwrap()
    .unwrap_or_else(|e| panic!("metadata request from {ns} failed: {e}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

fn spawn_of(server: &str, port: &Value, project: &str) -> Spawn {
    let ips = port["fixed_ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["ip_address"].as_str().unwrap().to_string())
        .collect();
    Spawn {
        server_id: server.to_string(),
        name: format!("vm {server}"),
        flavor: FlavorSpec {
            id: "1".into(),
            vcpus: 1,
            ram_mb: 64,
            disk_gb: 1,
            ephemeral_gb: 0,
            swap_mb: 0,
        },
        image: None,
        ports: vec![PortSpec {
            port_id: port["id"].as_str().unwrap().to_string(),
            network_id: port["network_id"].as_str().unwrap().to_string(),
            mac: port["mac_address"].as_str().unwrap().to_string(),
            ips,
            queues: 1,
        }],
        volumes: vec![],
        user_data: Some(
            base64::engine::general_purpose::STANDARD.encode(format!("#!/bin/sh\necho {server}\n")),
        ),
        key: Some(format!("ssh-ed25519 AAAAC3Nza {server}")),
        metadata: [("role".to_string(), server.to_string())].into(),
        instance: InstanceMeta {
            project_id: project.to_string(),
            availability_zone: "nova".into(),
            hostname: server.to_string(),
            launch_index: 0,
            key_name: Some("k1".into()),
            created: 0,
        },
    }
}

fn ip_of(port: &Value) -> Ipv4Addr {
    port["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn field(cli_json: &Value, k: &str) -> String {
    cli_json[k].as_str().unwrap_or_default().to_string()
}

#[test]
fn node_net_wires_ports_dhcp_rules_and_metadata_and_cleans_up() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let dir = ScratchDir::new("net-plumbing");
    let cloud = Cloud::start(&dir.0, &[]);
    let mut spaces = Namespaces::default();
    let tag = format!("knp-{}", std::process::id());
    let host = spaces.add(&format!("{tag}-h"));
    let ga = spaces.add(&format!("{tag}-a"));
    let gb = spaces.add(&format!("{tag}-b"));

    let net = cloud
        .admin(&["network", "create", "pn", "-f", "json"])
        .json();
    let net_id = field(&net, "id");
    spaces.adopt(&dhcpns::ns_name(&dhcpns::node_tag(NODE), &net_id));
    cloud
        .admin(&[
            "subnet",
            "create",
            "--network",
            "pn",
            "--subnet-range",
            "10.77.0.0/24",
            "--dns-nameserver",
            "10.77.0.53",
            "ps",
            "-f",
            "json",
        ])
        .json();
    let (sg, icmp) = cloud.icmp_security_group("psg");
    let project = field(&sg, "project_id");
    cloud
        .admin(&[
            "security",
            "group",
            "rule",
            "create",
            "--ingress",
            "--protocol",
            "tcp",
            "--dst-port",
            "22",
            "psg",
            "-f",
            "json",
        ])
        .json();
    let mut ports = Vec::new();
    for name in ["pa", "pb"] {
        ports.push(
            cloud
                .admin(&[
                    "port",
                    "create",
                    "--network",
                    "pn",
                    "--host",
                    NODE,
                    "--security-group",
                    "psg",
                    name,
                    "-f",
                    "json",
                ])
                .json(),
        );
    }
    let (pa, pb) = (&ports[0], &ports[1]);
    let (ip_a, ip_b) = (ip_of(pa), ip_of(pb));
    guest(
        &host,
        &ga,
        &names::tap(&field(pa, "id")),
        &field(pa, "mac_address"),
    );
    guest(
        &host,
        &gb,
        &names::tap(&field(pb, "id")),
        &field(pb, "mac_address"),
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let secret = std::fs::read_to_string(dir.0.join("node-secret")).unwrap();
    let nn = rt
        .block_on(NodeNet::start(NetConfig {
            controller: format!("http://{}", cloud.addr),
            node_id: NODE.into(),
            secret: secret.trim().to_string(),
            tunnel_ip: None,
            period: Duration::from_secs(1),
            netns: Some(host.clone()),
            probe: true,
        }))
        .unwrap();
    let (sa, sb) = (
        spawn_of("srv-a", pa, &project),
        spawn_of("srv-b", pb, &project),
    );
    let plugged = rt.block_on(nn.plug(&sa)).unwrap();
    assert_eq!(plugged[0].ifname, names::tap(&field(pa, "id")));
    assert_eq!(plugged[0].mac, field(pa, "mac_address"));
    rt.block_on(nn.plug(&sb)).unwrap();
    // Plugging twice changes nothing.
    rt.block_on(nn.plug(&sa)).unwrap();

    // The DHCP port came from IPAM, bound to this host; the ports are ACTIVE.
    let dhcp_ports = cloud
        .admin(&[
            "port",
            "list",
            "--device-owner",
            "network:dhcp",
            "--long",
            "-f",
            "json",
        ])
        .json();
    assert_eq!(dhcp_ports.as_array().unwrap().len(), 1, "{dhcp_ports}");
    let dhcp_ip = dhcp_ports[0]["Fixed IP Addresses"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    let pa_now = cloud.admin(&["port", "show", "pa", "-f", "json"]).json();
    assert_eq!(pa_now["status"], "ACTIVE");
    assert_eq!(pa_now["binding_host_id"], NODE);

    // DHCP: each guest gets exactly its port's address and the metadata route.
    let lease_a = udhcpc(&ga);
    assert_eq!(var(&lease_a, "ip"), ip_a.to_string());
    assert_eq!(var(&lease_a, "router"), "10.77.0.1");
    assert_eq!(var(&lease_a, "dns"), "10.77.0.53");
    assert!(
        var(&lease_a, "staticroutes").contains(&format!("169.254.169.254/32 {dhcp_ip}")),
        "{lease_a:?}"
    );
    assert_eq!(configure(&ga, &lease_a), ip_a);
    assert_eq!(configure(&gb, &udhcpc(&gb)), ip_b);

    // Idempotent: a forced pass on an unchanged state changes nothing.
    let again = rt.block_on(nn.reconcile(true)).unwrap();
    assert!(again.link_changes.is_empty(), "{again:?}");
    assert_eq!(again.nft_messages, 0, "{again:?}");
    assert!(again.namespaces_started.is_empty(), "{again:?}");

    // Rules: ICMP and TCP 22 in, nothing else; spoofed sources dropped.
    tcp_server(&gb, ip_b, 22);
    tcp_server(&gb, ip_b, 2222);
    assert!(ping(&ga, ip_b, None), "ICMP is allowed");
    assert!(tcp_ok(&ga, ip_b, 22), "TCP 22 is allowed");
    assert!(!tcp_ok(&ga, ip_b, 2222), "TCP 2222 is not allowed");
    must_in(&ga, &["ip", "addr", "add", "10.77.0.199/24", "dev", "eth0"]);
    assert!(
        !ping(&ga, ip_b, Some("10.77.0.199")),
        "spoofed source passed"
    );
    must_in(&ga, &["ip", "addr", "del", "10.77.0.199/24", "dev", "eth0"]);

    // Metadata: each guest sees its own server only.
    let (st, body) = metadata(&ga, "/openstack/latest/meta_data.json");
    assert_eq!(st, 200, "{body}");
    let md: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(md["uuid"], "srv-a");
    assert_eq!(md["hostname"], "srv-a");
    assert_eq!(md["project_id"], project.as_str());
    assert_eq!(md["public_keys"]["k1"], "ssh-ed25519 AAAAC3Nza srv-a");
    assert_eq!(md["meta"]["role"], "srv-a");
    let (_, body) = metadata(&gb, "/openstack/latest/meta_data.json");
    let md: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(md["uuid"], "srv-b");
    let (st, ud) = metadata(&ga, "/openstack/latest/user_data");
    assert_eq!((st, ud.as_str()), (200, "#!/bin/sh\necho srv-a\n"));
    let (_, nd) = metadata(&ga, "/openstack/2018-08-27/network_data.json");
    let nd: Value = serde_json::from_str(&nd).unwrap();
    assert_eq!(
        nd["links"][0]["ethernet_mac_address"],
        field(pa, "mac_address")
    );
    let (_, listing) = metadata(&ga, "/openstack");
    assert!(listing.lines().any(|l| l == "latest"), "{listing}");
    assert_eq!(
        metadata(&ga, "/latest/meta-data/local-ipv4"),
        (200, ip_a.to_string())
    );
    assert_eq!(
        metadata(&gb, "/latest/meta-data/instance-id"),
        (200, "srv-b".to_string())
    );
    assert_eq!(
        metadata(&ga, "/latest/meta-data/public-keys/0/openssh-key").1,
        "ssh-ed25519 AAAAC3Nza srv-a\n"
    );

    // Deleting the ICMP rule through the API takes effect at the next pass.
    cloud
        .admin(&["security", "group", "rule", "delete", &field(&icmp, "id")])
        .ok();
    // (The background loop may have done it already; then this pass finds
    // nothing new.)
    rt.block_on(nn.reconcile(false)).unwrap();
    assert!(
        !ping(&ga, ip_b, None),
        "ICMP still passes after the rule was deleted"
    );
    assert!(tcp_ok(&ga, ip_b, 22), "TCP 22 must still pass");

    // Unplug and delete: nothing is left behind.
    rt.block_on(nn.unplug("srv-a")).unwrap();
    let pa_now = cloud.admin(&["port", "show", "pa", "-f", "json"]).json();
    assert_eq!(pa_now["status"], "DOWN");
    rt.block_on(nn.unplug("srv-b")).unwrap();
    cloud.admin(&["port", "delete", "pa", "pb"]).ok();
    rt.block_on(nn.reconcile(false)).unwrap();
    let links = must_in(&host, &["ip", "-o", "link", "show"]);
    for name in [
        names::tap(&field(pa, "id")),
        names::tap(&field(pb, "id")),
        names::bridge(&net_id),
    ] {
        assert!(!links.contains(&format!(" {name}")), "{name} left: {links}");
    }
    assert!(!links.contains(dhcpns::VETH_PREFIX), "{links}");
    let ns_left = dhcpns::ns_name(&dhcpns::node_tag(NODE), &net_id);
    assert!(!netns::exists(&ns_left), "{ns_left} left");
    let tables = must_in(&host, &["nft", "list", "tables"]);
    assert!(!tables.contains("kiln"), "{tables}");
    assert!(rt.block_on(nn.leases(&net_id)).is_empty());
    let dhcp_ports = cloud
        .admin(&[
            "port",
            "list",
            "--device-owner",
            "network:dhcp",
            "-f",
            "json",
        ])
        .json();
    assert_eq!(dhcp_ports.as_array().unwrap().len(), 0, "{dhcp_ports}");
    rt.block_on(nn.shutdown()).unwrap();
}
