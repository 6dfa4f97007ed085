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
use support::hostnet::{ping, plug_probe, port_ip, KvmCloud};
use support::{alive, field, in_ns, must, pids_under, run, wait_until};

/// The all-in-one's node (its id and host name, `--node-id`).
const NODE: &str = "kvm-net-node";

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
    let Some(mut kc) = KvmCloud::start("kvm-net", NODE) else {
        return;
    };
    let net_id = kc.network("tn", "10.93.0.0/24");
    let (cloud, host, dir) = (&kc.cloud, &mut kc.host, &kc.dir);
    let admin = |args: &[&str]| cloud.admin(args);
    let (_, icmp) = cloud.icmp_security_group("tsg");
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

    let probe = plug_probe(
        cloud,
        host,
        "tn",
        NODE,
        "probe",
        &format!("kvmnet-{}", std::process::id()),
    );
    let (ns, probe_id) = (probe.ns.clone(), probe.port_id.clone());

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
