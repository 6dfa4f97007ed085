//! Acceptance, end to end on one host: multi-queue NICs as Nova users ask for
//! them, through the real `openstack` CLI against `kiln-node up --driver kvm`.
//! A 2-vCPU flavor with `hw:vif_multiqueue_enabled=true` boots the firmware
//! guest: its TAP is multi-queue, kiln-vmm is configured with two queue
//! pairs and holds both TAP queues, and the guest — whose driver does not
//! negotiate MQ, so kiln-vmm detaches the second queue — still gets its
//! DHCP lease and answers ping from a test namespace. An invalid extra-spec
//! value (2.86) and a flavor/image conflict are refused with 400.
//!
//! Needs root, /dev/kvm, iproute2 and iputils-ping, and
//! `cargo build --release -p kiln-vmm && cargo firmware`. Everything the
//! node creates is derived from the test's own network and ports and removed
//! even when the test fails.
#![allow(clippy::unwrap_used)]

mod support;

use kiln_netdp::link::names;
use serde_json::Value;
use support::hostnet::{ping, plug_probe, port_ip, KvmCloud};
use support::{field, must, run, wait_until};

/// The all-in-one's node (its id and host name, `--node-id`).
const NODE: &str = "kvm-mq-node";

/// `(attached, detached)` queues of TAP `ifname`, as `ip -d link` shows the
/// kernel's counts.
fn tap_queue_counts(ifname: &str) -> (u32, u32) {
    let details = must(&["ip", "-d", "link", "show", ifname]);
    let count = |key: &str| -> u32 {
        let mut words = details.split_whitespace();
        words
            .find(|w| *w == key)
            .and_then(|_| words.next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in: {details}"))
    };
    (count("numqueues"), count("numdisabled"))
}

#[test]
fn a_multiqueue_flavor_gives_the_guest_a_multiqueue_tap_and_nic() {
    let Some(mut kc) = KvmCloud::start("kvm-mq", NODE) else {
        return;
    };
    kc.network("mqn", "10.94.0.0/24");
    let (cloud, host, dir) = (&kc.cloud, &mut kc.host, &kc.dir);
    let admin = |args: &[&str]| cloud.admin(args);

    // The flavor: 2 vCPUs, multi-queue on. From 2.86 the value is validated.
    admin(&[
        "flavor", "create", "--vcpus", "2", "--ram", "128", "--disk", "1", "mq2",
    ])
    .ok();
    let set_mq = |value: &str| {
        let property = format!("hw:vif_multiqueue_enabled={value}");
        let spec = ["flavor", "set", "--property", &property, "mq2"];
        admin(&[&["--os-compute-api-version", "2.86"], &spec[..]].concat())
    };
    set_mq("maybe").fails_with("is not a valid boolean value for 'hw:vif_multiqueue_enabled'");
    set_mq("true").ok();

    cloud.icmp_security_group("mqsg");

    // `server create` of flavor mq2 and image fw on network mqn.
    let create = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "server",
            "create",
            "--flavor",
            "mq2",
            "--image",
            "fw",
            "--network",
            "mqn",
        ];
        args.extend_from_slice(extra);
        args.push(name);
        admin(&args)
    };
    let created = create("mq1", &["--security-group", "mqsg", "--wait", "-f", "json"]).json();
    assert_eq!(created["status"], "ACTIVE", "{created}");
    let id = field(&created, "id");
    let ports = admin(&["port", "list", "--server", &id, "-f", "json"]).json();
    let port_id = field(&ports[0], "ID");
    let tap = names::tap(&port_id);
    host.links.push(tap.clone());

    // The host TAP is multi-queue and kiln-vmm was told two pairs.
    let details = must(&["ip", "-d", "link", "show", &tap]);
    assert!(details.contains("multi_queue"), "{details}");
    let inst = dir.0.join(format!("node/instances/{id}"));
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(inst.join("vmm.json")).unwrap()).unwrap();
    assert_eq!(cfg["nics"][0]["queue_pairs"], 2, "{cfg}");

    // The guest's driver does not negotiate MQ: once it is up (its DHCP
    // lease), kiln-vmm holds both TAP queues with the second detached.
    let port = admin(&["port", "show", &port_id, "-f", "json"]).json();
    let vm_ip = port_ip(&port);
    let console = inst.join("console.log");
    let leased = format!("kiln-firmware: dhcp {vm_ip}/24");
    wait_until("the guest's DHCP lease", 30, || {
        std::fs::read_to_string(&console)
            .unwrap_or_default()
            .contains(&leased)
    });
    assert_eq!(
        tap_queue_counts(&tap),
        (1, 1),
        "(attached, detached) queues of {tap}"
    );

    let probe = plug_probe(
        cloud,
        host,
        "mqn",
        NODE,
        "mqprobe",
        &format!("kvmmq-{}", std::process::id()),
    );
    wait_until("ping to the guest", 30, || ping(&probe.ns, &vm_ip));

    // An image that says no, with a flavor that says yes: Nova's 400.
    admin(&[
        "image",
        "set",
        "--property",
        "hw_vif_multiqueue_enabled=false",
        "fw",
    ])
    .ok();
    let refused = create("mq2", &[]);
    refused.fails_with("400: Client Error");
    refused.fails_with(
        "conflicting with image fw which has hw_vif_multiqueue_enabled explicitly set to False",
    );

    // Delete: the TAP goes with the server.
    admin(&["server", "delete", "--wait", "mq1"]).ok();
    wait_until("the server's TAP to go", 30, || {
        !run(&["ip", "link", "show", &tap]).status.success()
    });
    must(&["ip", "netns", "del", &probe.ns]);
    admin(&["port", "delete", &probe.port_id]).ok();
}
