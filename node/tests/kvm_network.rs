//! Acceptance, end to end on one host: the real `openstack` CLI against
//! `kiln-node up --driver kvm` with the host network wired by the node. A
//! server on a tenant network boots in a real kiln-vmm and gets its address by
//! DHCP from the node; a test namespace plugged into the same network as a
//! Neutron port pings it while a security-group rule allows ICMP and fails
//! after the rule is deleted; TCP to an allowed port answers; a volume
//! attached to the running server is seen and checked by the guest; delete
//! leaves no process, TAP, bridge or DHCP namespace behind.
//!
//! Needs root, /dev/kvm, iproute2 and iputils-ping, and
//! `cargo build --release -p kiln-vmm && cargo firmware`. The node's network
//! lives in the host's root namespace here, as in production; everything it
//! creates is derived from the test's own network and ports and removed even
//! when the test fails.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use kiln_netdp::link::names;
use serde_json::Value;
use support::{
    alive, field, in_ns, kvm_usable, missing_root_or_tools, must, pids_under, run, wait_until,
    workspace_root, Cloud, Reaper, ScratchDir,
};

/// The all-in-one's node (its id and host name, `--node-id`).
const NODE: &str = "kvm-net-node";

fn skip_reason() -> Option<String> {
    if !kvm_usable() {
        return Some("needs a usable /dev/kvm".into());
    }
    missing_root_or_tools(&[
        ("ip", "-V", "iproute2"),
        ("ping", "-V", "iputils-ping"),
        ("nft", "-v", "nftables"),
    ])
}

/// What the test and the node created on the host, removed on drop: the
/// probe namespace, and the links and namespace the node derives from the
/// test's network and ports (left only if the test failed half-way).
struct HostLeftovers {
    namespaces: Vec<String>,
    links: Vec<String>,
    /// Whether the node's nf_tables tables were absent when the test began
    /// (then they are the test's to remove).
    tables: bool,
}

impl Drop for HostLeftovers {
    fn drop(&mut self) {
        for l in &self.links {
            let _ = run(&["ip", "link", "del", l]);
        }
        for ns in &self.namespaces {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        // The node's tables go when its last port goes; after a failure
        // half-way they may still be there.
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

/// The first IPv4 address of a port as the CLI shows it.
fn port_ip(port: &Value) -> String {
    let ips = &port["fixed_ips"];
    let first = ips
        .as_array()
        .and_then(|a| a.first())
        .unwrap_or_else(|| panic!("port has no fixed IP: {port}"));
    field(first, "ip_address")
}

fn ping(ns: &str, to: &str) -> bool {
    in_ns(ns, &["ping", "-n", "-q", "-c", "1", "-W", "1", to])
        .status
        .success()
}

fn tcp_answers(ns: &str, to: &str, port: u16) -> bool {
    // bash's /dev/tcp keeps the test free of an extra package.
    in_ns(
        ns,
        &[
            "timeout",
            "3",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{to}/{port}"),
        ],
    )
    .status
    .success()
}

#[test]
fn a_networked_guest_with_dhcp_security_groups_and_a_volume() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let firmware = workspace_root().join("target/release/kiln-firmware");
    assert!(
        firmware.is_file(),
        "build it first: cargo build --release -p kiln-vmm && cargo firmware"
    );
    let dir = ScratchDir::new("kvm-net");
    let _reaper = Reaper(dir.0.clone());
    let tables_before = run(&["nft", "list", "tables"]).stdout;
    let mut host = HostLeftovers {
        namespaces: Vec::new(),
        links: Vec::new(),
        tables: !String::from_utf8_lossy(&tables_before).contains(" kiln"),
    };
    let cloud = Cloud::start(&dir.0, &["--driver", "kvm", "--node-id", NODE]);
    let admin = |args: &[&str]| cloud.admin(args);
    cloud.upload_image(&firmware, "fw", &["kiln_firmware=true"]);
    let net = admin(&["network", "create", "tn", "-f", "json"]).json();
    let net_id = field(&net, "id");
    host.links.push(names::bridge(&net_id));
    host.namespaces.push(kiln_node::net::dhcpns::ns_name(
        &kiln_node::net::dhcpns::node_tag(NODE),
        &net_id,
    ));
    admin(&[
        "subnet",
        "create",
        "--network",
        "tn",
        "--subnet-range",
        "10.93.0.0/24",
        "ts",
    ])
    .ok();
    admin(&["security", "group", "create", "tsg"]).ok();
    let icmp = admin(&[
        "security",
        "group",
        "rule",
        "create",
        "--ingress",
        "--protocol",
        "icmp",
        "tsg",
        "-f",
        "json",
    ])
    .json();
    admin(&[
        "security",
        "group",
        "rule",
        "create",
        "--ingress",
        "--protocol",
        "tcp",
        "--dst-port",
        "22",
        "tsg",
    ])
    .ok();

    // The server: ACTIVE means its guest booted; then DHCP gives it its port's address.
    let created = admin(&[
        "server",
        "create",
        "--flavor",
        "m1.tiny",
        "--image",
        "fw",
        "--network",
        "tn",
        "--security-group",
        "tsg",
        "--wait",
        "-f",
        "json",
        "vm1",
    ])
    .json();
    assert_eq!(created["status"], "ACTIVE", "{created}");
    let id = field(&created, "id");
    let ports = admin(&["port", "list", "--server", &id, "-f", "json"]).json();
    let vm_port = ports[0].clone();
    let vm_port_id = field(&vm_port, "ID");
    host.links.push(names::tap(&vm_port_id));
    let vm_port = admin(&["port", "show", &vm_port_id, "-f", "json"]).json();
    let vm_ip = port_ip(&vm_port);
    let console_file = dir.0.join(format!("node/instances/{id}/console.log"));
    let leased = format!("kiln-firmware: dhcp {vm_ip}/24");
    wait_until("the guest's DHCP lease", 30, || {
        std::fs::read_to_string(&console_file)
            .unwrap_or_default()
            .contains(&leased)
    });

    // A probe namespace plugged into the network as a Neutron port bound to
    // this node: a veth whose host end carries the port's TAP name. The port
    // is bound only once the veth exists, or the node would make a TAP first.
    let probe = admin(&[
        "port",
        "create",
        "--network",
        "tn",
        "--device-owner",
        "compute:probe",
        "-f",
        "json",
        "probe",
    ])
    .json();
    let probe_id = field(&probe, "id");
    let probe_ip = port_ip(&probe);
    let probe_tap = names::tap(&probe_id);
    host.links.push(probe_tap.clone());
    let ns = format!("kvmnet-{}", std::process::id());
    must(&["ip", "netns", "add", &ns]);
    host.namespaces.push(ns.clone());
    must(&[
        "ip", "link", "add", &probe_tap, "type", "veth", "peer", "name", "eth0", "netns", &ns,
    ]);
    let probe_mac = field(&probe, "mac_address");
    must(&[
        "ip", "netns", "exec", &ns, "ip", "link", "set", "eth0", "address", &probe_mac,
    ]);
    must(&[
        "ip",
        "netns",
        "exec",
        &ns,
        "ip",
        "addr",
        "add",
        &format!("{probe_ip}/24"),
        "dev",
        "eth0",
    ]);
    must(&[
        "ip", "netns", "exec", &ns, "ip", "link", "set", "eth0", "up",
    ]);
    must(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
    admin(&["port", "set", "--host", NODE, &probe_id]).ok();

    // ICMP allowed: the guest answers. TCP 22 allowed: SYN-ACK.
    wait_until("ping to the guest", 30, || ping(&ns, &vm_ip));
    assert!(tcp_answers(&ns, &vm_ip, 22), "TCP 22 to the guest");
    // The rule goes: within a reconcile period, ping fails; TCP still answers.
    admin(&["security", "group", "rule", "delete", &field(&icmp, "id")]).ok();
    let stopped = (0..150).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        !ping(&ns, &vm_ip)
    });
    if !stopped {
        let rules = run(&["nft", "list", "ruleset"]);
        panic!(
            "ping still answered 30 s after the rule's delete; ruleset:\n{}",
            String::from_utf8_lossy(&rules.stdout)
        );
    }
    assert!(
        tcp_answers(&ns, &vm_ip, 22),
        "TCP 22 after the ICMP rule went"
    );

    // A volume attached to the running guest: the guest sees and checks it.
    admin(&["volume", "create", "--size", "1", "vol1"]).ok();
    cloud.wait_for_volume("vol1", "available");
    admin(&["server", "add", "volume", "vm1", "vol1"]).ok();
    cloud.wait_for_volume("vol1", "in-use");
    wait_until("the guest's check of the new disk", 30, || {
        let c = std::fs::read_to_string(&console_file).unwrap_or_default();
        c.contains(" attached 1073741824") && c.contains("blk-check ok")
    });
    admin(&["server", "remove", "volume", "vm1", "vol1"]).ok();
    cloud.wait_for_volume("vol1", "available");
    wait_until("the guest to see the disk go", 30, || {
        std::fs::read_to_string(&console_file)
            .unwrap_or_default()
            .contains(" detached")
    });

    // Delete: no kiln-vmm, no TAP, and once the probe port goes too, no
    // bridge and no DHCP namespace.
    let pid: u32 = std::fs::read_to_string(dir.0.join(format!("node/instances/{id}/vmm.pid")))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    admin(&["server", "delete", "--wait", "vm1"]).ok();
    assert!(!alive(pid), "kiln-vmm is gone");
    assert!(
        pids_under(&dir.0)
            .iter()
            .all(|p| !std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("kiln-vmm"))
                .unwrap_or(false)),
        "no kiln-vmm left"
    );
    let vm_tap = names::tap(&vm_port_id);
    wait_until("the server's TAP to go", 30, || {
        !run(&["ip", "link", "show", &vm_tap]).status.success()
    });
    must(&["ip", "netns", "del", &ns]);
    admin(&["port", "delete", &probe_id]).ok();
    let bridge = names::bridge(&net_id);
    wait_until("the network's bridge to go", 30, || {
        !run(&["ip", "link", "show", &bridge]).status.success()
    });
    let dhcp_ns = host.namespaces[0].clone();
    wait_until("the DHCP namespace to go", 30, || {
        !run(&["ip", "netns", "list"])
            .stdout
            .windows(dhcp_ns.len())
            .any(|w| w == dhcp_ns.as_bytes())
    });
}
