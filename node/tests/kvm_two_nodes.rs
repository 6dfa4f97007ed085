//! Acceptance: two kiln nodes on one machine, the second in a network
//! namespace of its own as if it were another host. `kiln-node up` (the
//! controller and node 1, in the root namespace) and a `kiln-node serve`
//! (node 2) inside namespace `kn2-<pid>`, joined by a veth that carries
//! their VXLAN. One tenant network spans both: server B is forced onto
//! node 2 (`--availability-zone nova:<host>`), server A lands on node 1
//! and pings B once a second (`kiln.ping=`), so A's replies crossed the
//! VXLAN between the namespaces. Node 2's process is then killed with
//! SIGKILL: B's kiln-vmm keeps running, the controller shows the node down
//! and B's `host_status` UNKNOWN; a new node 2 re-adopts B (same pid) and
//! is up again while A still gets replies. Deleting both servers leaves no
//! kiln-vmm; the namespaces, links and tables go on drop.
//!
//! Needs root, /dev/kvm, iproute2, nftables and util-linux (`nsenter`), and
//! `cargo build --release -p kiln-vmm && cargo firmware`. Node 2 enters its
//! namespace with `nsenter --net` rather than `ip netns exec`: the latter
//! gives it a private mount namespace, where the DHCP namespaces it names
//! under /run/netns would die with its process.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use kiln_netdp::link::names;
use kiln_node::net::dhcpns;
use serde_json::Value;
use support::{
    alive, field, kvm_usable, missing_root_or_tools, must, must_in, pids_under, run, wait_until,
    workspace_root, Cloud, Reaper, ScratchDir,
};

const NODE1: &str = "kn-one";
const NODE2: &str = "kn-two";
/// B's fixed address, the one A pings.
const B_IP: &str = "10.77.0.50";

fn skip_reason() -> Option<String> {
    if !kvm_usable() {
        return Some("needs a usable /dev/kvm".into());
    }
    missing_root_or_tools(&[
        ("ip", "-V", "iproute2"),
        ("nft", "-v", "nftables"),
        ("nsenter", "--version", "util-linux"),
    ])
}

/// What the test made on the host and what the nodes derive from its
/// network, removed on drop even after a failure: node 2's namespace (its
/// bridges, TAPs and tables go with it), the veth, node 1's links, both
/// nodes' DHCP namespaces and node 1's nf_tables tables when the test
/// created them.
struct Host {
    ns: String,
    veth: String,
    links: Vec<String>,
    dhcp_namespaces: Vec<String>,
    tables: bool,
}

impl Drop for Host {
    fn drop(&mut self) {
        for l in &self.links {
            let _ = run(&["ip", "link", "del", l]);
        }
        for ns in self.dhcp_namespaces.iter().chain([&self.ns]) {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = run(&["ip", "link", "del", &self.veth]);
        if self.tables {
            for family in ["inet", "bridge"] {
                let _ = run(&[
                    "nft",
                    "delete",
                    "table",
                    family,
                    kiln_netdp::secgroup::layout::TABLE,
                ]);
            }
        }
    }
}

/// Node 2: `kiln-node serve` inside the namespace; killed on drop.
struct Node2 {
    child: Child,
}

impl Node2 {
    fn start(ns: &str, controller: &str, ns_ip: &str, dir: &Path, secret: &Path) -> Node2 {
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .arg(env!("CARGO_BIN_EXE_kiln-node"))
            .arg("serve")
            .args(["--controller", controller])
            .args(["--tunnel-ip", ns_ip])
            .args(["--listen", &format!("{ns_ip}:0")])
            .arg("--node-dir")
            .arg(dir)
            .arg("--secret-file")
            .arg(secret)
            .args(["--driver", "kvm", "--node-id", NODE2])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn node 2");
        Node2 { child }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node2 {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `openstack server show ID|NAME` at 2.16, where admins see `host_status`
/// (a name is looked up through the detail list, an id is shown directly).
fn show_216(cloud: &Cloud, server: &str) -> Value {
    cloud
        .admin(&[
            "--os-compute-api-version",
            "2.16",
            "server",
            "show",
            server,
            "-f",
            "json",
        ])
        .json()
}

fn console(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Lines of A's console saying B answered.
fn replies(path: &Path) -> usize {
    let want = format!("kiln-firmware: ping {B_IP} reply");
    console(path).lines().filter(|l| l.contains(&want)).count()
}

fn vmm_pid(instance_dir: &Path) -> u32 {
    std::fs::read_to_string(instance_dir.join("vmm.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `State` of `host`'s nova-compute service as the CLI lists it.
fn service_state(cloud: &Cloud, host: &str) -> String {
    let list = cloud
        .admin(&[
            "compute",
            "service",
            "list",
            "--service",
            "nova-compute",
            "-f",
            "json",
        ])
        .json();
    list.as_array()
        .into_iter()
        .flatten()
        .find(|s| s["Host"] == host)
        .map(|s| field(s, "State"))
        .unwrap_or_default()
}

#[test]
fn a_network_spanning_two_nodes_and_a_node_restart() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let firmware = workspace_root().join("target/release/kiln-firmware");
    assert!(
        firmware.is_file(),
        "build it first: cargo build --release -p kiln-vmm && cargo firmware"
    );
    let began = Instant::now();
    let dir = ScratchDir::new("kvm-two");
    let _reaper = Reaper(dir.0.clone());
    let pid = std::process::id();
    let x = pid % 250 + 1;
    let (root_ip, ns_ip) = (format!("10.251.{x}.1"), format!("10.251.{x}.2"));
    let tables_before = String::from_utf8_lossy(&run(&["nft", "list", "tables"]).stdout)
        .contains(kiln_netdp::secgroup::layout::TABLE);
    let mut host = Host {
        ns: format!("kn2-{pid}"),
        veth: format!("kn2h{pid}"),
        links: Vec::new(),
        dhcp_namespaces: Vec::new(),
        tables: !tables_before,
    };

    // "Host 2": a namespace joined to the root namespace by a veth /30.
    must(&["ip", "netns", "add", &host.ns]);
    must(&[
        "ip", "link", "add", &host.veth, "type", "veth", "peer", "name", "eth0", "netns", &host.ns,
    ]);
    must(&[
        "ip",
        "addr",
        "add",
        &format!("{root_ip}/30"),
        "dev",
        &host.veth,
    ]);
    must(&["ip", "link", "set", &host.veth, "up"]);
    must_in(
        &host.ns,
        &["ip", "addr", "add", &format!("{ns_ip}/30"), "dev", "eth0"],
    );
    must_in(&host.ns, &["ip", "link", "set", "eth0", "up"]);
    must_in(&host.ns, &["ip", "link", "set", "lo", "up"]);

    // Node 1 and the controller on the veth's root address (reachable from
    // both sides); node 2 inside. A node silent 6 s counts as down.
    let cloud = Cloud::start(
        &dir.0,
        &[
            "--driver",
            "kvm",
            "--node-id",
            NODE1,
            "--listen",
            &format!("{root_ip}:0"),
            "--tunnel-ip",
            &root_ip,
            "--node-down-after",
            "6",
        ],
    );
    let controller = format!("http://{}", cloud.addr);
    let n2_dir = dir.0.join("n2");
    let secret = dir.0.join("node-secret");
    let mut node2 = Node2::start(&host.ns, &controller, &ns_ip, &n2_dir, &secret);
    wait_until("both nodes up", 30, || {
        service_state(&cloud, NODE1) == "up" && service_state(&cloud, NODE2) == "up"
    });
    let hypervisors = cloud
        .admin(&["hypervisor", "list", "-f", "json"])
        .json()
        .to_string();
    assert!(
        hypervisors.contains(NODE1) && hypervisors.contains(NODE2),
        "{hypervisors}"
    );

    // Images: B serves; A also pings B.
    cloud.upload_image(&firmware, "fw", &["kiln_firmware=true"]);
    let ping_cmdline = format!("os_command_line=kiln.mode=serve kiln.ping={B_IP}");
    cloud.upload_image(&firmware, "fw-ping", &["kiln_firmware=true", &ping_cmdline]);

    let admin = |args: &[&str]| cloud.admin(args);
    let net = admin(&["network", "create", "tn2", "-f", "json"]).json();
    let net_id = field(&net, "id");
    host.links.push(names::bridge(&net_id));
    for node in [NODE1, NODE2] {
        host.dhcp_namespaces
            .push(dhcpns::ns_name(&dhcpns::node_tag(node), &net_id));
    }
    admin(&[
        "subnet",
        "create",
        "--network",
        "tn2",
        "--subnet-range",
        "10.77.0.0/24",
        "ts2",
    ])
    .ok();
    cloud.icmp_security_group("icmp");

    let create = |name: &str, image: &str, nic: &str, az: &str| -> Value {
        let s = admin(&[
            "server",
            "create",
            "--flavor",
            "m1.tiny",
            "--image",
            image,
            "--nic",
            nic,
            "--security-group",
            "icmp",
            "--availability-zone",
            az,
            "--wait",
            "-f",
            "json",
            name,
        ])
        .json();
        assert_eq!(s["status"], "ACTIVE", "{s}");
        s
    };
    let b = create(
        "b",
        "fw",
        &format!("net-id={net_id},v4-fixed-ip={B_IP}"),
        &format!("nova:{NODE2}"),
    );
    let a = create(
        "a",
        "fw-ping",
        &format!("net-id={net_id}"),
        &format!("nova:{NODE1}"),
    );
    assert_eq!(b["OS-EXT-SRV-ATTR:host"], NODE2, "{b}");
    assert_eq!(a["OS-EXT-SRV-ATTR:host"], NODE1, "{a}");
    let (a_id, b_id) = (field(&a, "id"), field(&b, "id"));
    for p in admin(&["port", "list", "--network", "tn2", "-f", "json"])
        .json()
        .as_array()
        .into_iter()
        .flatten()
    {
        host.links.push(names::tap(&field(p, "ID")));
    }
    let a_dir = dir.0.join(format!("node/instances/{a_id}"));
    let b_dir = n2_dir.join(format!("instances/{b_id}"));
    let (a_console, b_console) = (a_dir.join("console.log"), b_dir.join("console.log"));
    wait_until("B's DHCP lease from node 2", 30, || {
        console(&b_console).contains(&format!("kiln-firmware: dhcp {B_IP}/24"))
    });
    wait_until("A's DHCP lease from node 1", 30, || {
        console(&a_console).contains("kiln-firmware: dhcp 10.77.0.")
    });
    // A's echoes reach B on the other node and come back over VXLAN.
    wait_until("A's pings of B answered", 30, || replies(&a_console) > 0);
    let b_vmm = vmm_pid(&b_dir);

    // Node 2 dies: its guest does not; the controller notices.
    node2.kill();
    assert!(alive(b_vmm), "B's kiln-vmm outlives its node");
    wait_until("node 2 down", 30, || service_state(&cloud, NODE2) == "down");
    let b_now = show_216(&cloud, &b_id);
    assert_eq!(b_now["host_status"], "UNKNOWN", "{b_now}");
    assert_eq!(show_216(&cloud, "b")["host_status"], "UNKNOWN");
    assert_eq!(b_now["status"], "ACTIVE", "{b_now}");
    // The data path is the kernel's: A still gets answers.
    let before = replies(&a_console);
    wait_until("replies while node 2 is down", 15, || {
        replies(&a_console) > before
    });

    // A new node 2 adopts B: same kiln-vmm, node up, B ACTIVE, pings answered.
    let node2_again = Node2::start(&host.ns, &controller, &ns_ip, &n2_dir, &secret);
    wait_until("node 2 up again", 30, || {
        service_state(&cloud, NODE2) == "up"
    });
    assert_eq!(vmm_pid(&b_dir), b_vmm, "B re-adopted, not restarted");
    assert!(alive(b_vmm));
    assert_eq!(cloud.status("b"), "ACTIVE");
    let b_now = show_216(&cloud, &b_id);
    assert_eq!(b_now["host_status"], "UP", "{b_now}");
    assert_eq!(show_216(&cloud, "b")["host_status"], "UP");
    let before = replies(&a_console);
    wait_until("replies after node 2's restart", 15, || {
        replies(&a_console) > before
    });

    // Delete: no kiln-vmm left on either node.
    let a_vmm = vmm_pid(&a_dir);
    admin(&["server", "delete", "--wait", "a", "b"]).ok();
    assert!(!alive(a_vmm) && !alive(b_vmm), "both kiln-vmm gone");
    let vmms: Vec<PathBuf> = pids_under(&dir.0)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("kiln-vmm"))
                .unwrap_or(false)
        })
        .map(|p| PathBuf::from(format!("/proc/{p}")))
        .collect();
    assert!(vmms.is_empty(), "kiln-vmm left: {vmms:?}");
    drop(node2_again);
    eprintln!(
        "two nodes: whole test took {:.1} s",
        began.elapsed().as_secs_f64()
    );
}
