//! `kiln.mode=serve` end to end on the real /dev/kvm: disks hot-plugged
//! into an empty slot through the control socket (and hostile swaps
//! refused), and an address taken by DHCP from netdp's real server on a
//! bridge inside a namespace this test creates, then pinged from there.
//! Drop guards stop the VMM and delete the namespace (bridge, TAP) even
//! when a test fails.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::Ipv4Addr;
use std::process::Command;

use kiln_netdp::dhcp::{DhcpServer, Lease, NetworkOptions, ServerConfig};
use serde_json::{json, Value};
use support::{ask, finish, firmware, kvm_available, wait_socket, Guest, Netns, Vmm};

const MIB: usize = 1 << 20;

fn disks(state: &Value) -> &Vec<Value> {
    state["disks"].as_array().unwrap()
}

#[test]
fn disks_hot_plug_into_an_empty_slot_and_leave_again() {
    if !kvm_available() {
        return;
    }
    let g = Guest::new();
    let root = g.disk("root.raw", 2 * MIB, 0xab);
    let volume = g.disk("volume.raw", 4 * MIB, 0x5a);
    std::fs::create_dir(g.path("a-directory")).unwrap();
    let mut vmm = Vmm(Some(g.spawn(
        "kiln.mode=serve",
        json!([{"path": root, "id": "root"}, {"path": null, "id": "vol-1"}]),
    )));
    let child = vmm.0.as_mut().unwrap();
    g.wait_console(child, "kiln-firmware: disk 0 present 2097152\n");
    // The guest has read slot 1's capacity: an attach from now on is hot.
    g.wait_console(child, "kiln-firmware: disk 1 empty\n");
    wait_socket(&g.sock());

    let state = ask(&g.sock(), json!({"action": "state"}));
    assert_eq!(state["ok"], true, "{state}");
    assert_eq!(
        disks(&state)[1],
        json!({"id": "vol-1", "path": null, "bytes": 0, "read_only": false})
    );
    assert_eq!(disks(&state)[0]["path"], json!(root), "{state}");

    // Hostile swaps fail with a clear error and change nothing.
    let missing = ask(
        &g.sock(),
        json!({"action": "swap-disk", "id": "vol-1", "path": g.path("missing.raw")}),
    );
    assert_eq!(missing["ok"], false, "{missing}");
    assert!(
        missing["error"].as_str().unwrap().contains("missing.raw"),
        "{missing}"
    );
    let dir = ask(
        &g.sock(),
        json!({"action": "swap-disk", "id": "vol-1", "path": g.path("a-directory")}),
    );
    assert_eq!(dir["ok"], false, "{dir}");
    assert!(
        dir["error"]
            .as_str()
            .unwrap()
            .contains("not a regular file or block device"),
        "{dir}"
    );
    let nobody = ask(
        &g.sock(),
        json!({"action": "swap-disk", "id": "vol-9", "path": volume}),
    );
    assert_eq!(nobody["ok"], false, "{nobody}");
    let state = ask(&g.sock(), json!({"action": "state"}));
    assert_eq!(disks(&state)[1]["bytes"], 0, "{state}");

    // Attach: the guest sees the new capacity and checks the disk's last MiB,
    // putting the bytes it overwrote back afterwards.
    let ok = ask(
        &g.sock(),
        json!({"action": "swap-disk", "id": "vol-1", "path": volume}),
    );
    assert_eq!(ok["ok"], true, "{ok}");
    g.wait_console(child, "kiln-firmware: disk 1 attached 4194304\n");
    g.wait_console(child, "blk-check ok 1048576\n");
    let state = ask(&g.sock(), json!({"action": "state"}));
    assert_eq!(
        disks(&state)[1],
        json!({"id": "vol-1", "path": volume, "bytes": 4 * MIB, "read_only": false})
    );

    // Detach (the explicit action; `swap-disk` without a path is the same).
    let ok = ask(&g.sock(), json!({"action": "detach-disk", "id": "vol-1"}));
    assert_eq!(ok["ok"], true, "{ok}");
    g.wait_console(child, "kiln-firmware: disk 1 detached\n");
    let metrics = ask(&g.sock(), json!({"action": "metrics"}));
    assert_eq!(disks(&metrics)[1]["path"], Value::Null, "{metrics}");

    // Attach again through swap-disk, empty through swap-disk without a path.
    let ok = ask(
        &g.sock(),
        json!({"action": "swap-disk", "id": "vol-1", "path": volume}),
    );
    assert_eq!(ok["ok"], true, "{ok}");
    g.wait_console_times(child, "blk-check ok 1048576\n", 2);
    let ok = ask(&g.sock(), json!({"action": "swap-disk", "id": "vol-1"}));
    assert_eq!(ok["ok"], true, "{ok}");
    let state = ask(&g.sock(), json!({"action": "state"}));
    assert_eq!(disks(&state)[1]["bytes"], 0, "{state}");

    let ok = ask(&g.sock(), json!({"action": "shutdown"}));
    assert_eq!(ok["ok"], true, "{ok}");
    let out = finish(vmm.0.take().unwrap());
    assert!(out.status.success(), "{out:?}\n{}", g.console());
    assert!(g.console().contains("ctrl-alt-del, powering off"));

    // The user's data is where it was, all of it: the check restored its region.
    let v = std::fs::read(&volume).unwrap();
    assert!(
        v.iter().all(|b| *b == 0x5a),
        "the volume's data was not restored after the check"
    );
    let r = std::fs::read(&root).unwrap();
    assert!(r.iter().all(|b| *b == 0xab), "the present disk was written");
}

const TAP: &str = "ktap0";
const BRIDGE: &str = "kbr0";
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x6b, 0x69, 0x0d];

#[test]
fn serve_takes_a_dhcp_lease_and_answers_ping() {
    if !kvm_available() {
        return;
    }
    let Some(ns) = Netns::new("serve") else {
        return;
    };
    ns.ip(&["link", "add", BRIDGE, "type", "bridge"]);
    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", BRIDGE]);
    ns.ip(&["link", "set", BRIDGE, "up"]);
    ns.ip(&["tuntap", "add", "dev", TAP, "mode", "tap", "vnet_hdr"]);
    ns.ip(&["link", "set", TAP, "master", BRIDGE]);
    ns.ip(&["link", "set", TAP, "up"]);
    let server = DhcpServer::start(
        ServerConfig {
            bridge: BRIDGE.into(),
            netns: Some(ns.name.clone()),
            options: NetworkOptions {
                prefix: 24,
                router: Some(Ipv4Addr::new(10, 77, 0, 1)),
                dns: vec![],
                domain: None,
                mtu: Some(1450),
                routes: vec![],
                lease_secs: 600,
            },
        },
        vec![Lease {
            mac: MAC,
            ip: Ipv4Addr::new(10, 77, 0, 42),
            hostname: None,
        }],
    )
    .unwrap();

    let g = Guest::new();
    let mac = MAC.map(|b| format!("{b:02x}")).join(":");
    let mut vmm = g.spawn_in(
        &ns,
        json!({
            "firmware": {"path": firmware(), "cmdline": "kiln.mode=serve"},
            "nics": [{"tap": TAP, "mac": mac, "id": "eth0"}],
        }),
    );
    let child = vmm.0.as_mut().unwrap();
    g.wait_console(
        child,
        "kiln-firmware: dhcp 10.77.0.42/24 router 10.77.0.1\n",
    );
    g.wait_console(child, "kiln-firmware: dhcp mtu 1450 lease 600s\n");

    let ping = Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "ping", "-c", "3", "-i", "0.2", "-W", "5",
        ])
        .arg("10.77.0.42")
        .output()
        .unwrap();
    assert!(ping.status.success(), "ping: {ping:?}\n{}", g.console());

    wait_socket(&g.sock());
    let ok = ask(&g.sock(), json!({"action": "shutdown"}));
    assert_eq!(ok["ok"], true, "{ok}");
    let out = finish(vmm.0.take().unwrap());
    assert!(out.status.success(), "{out:?}\n{}", g.console());
    server.stop();
}

#[test]
fn without_a_dhcp_answer_serve_says_so_and_carries_on() {
    if !kvm_available() {
        return;
    }
    let Some(ns) = Netns::new("nodhcp") else {
        return;
    };
    let g = Guest::new();
    let volume = g.disk("volume.raw", 2 * MIB, 0);
    let mut vmm = g.spawn_in(
        &ns,
        json!({
            "firmware": {"path": firmware(), "cmdline": "kiln.mode=serve dhcp_secs=1"},
            "disks": [{"path": null, "id": "vol-1"}],
            "nics": [{"tap": TAP, "id": "eth0"}],
        }),
    );
    let child = vmm.0.as_mut().unwrap();
    g.wait_console(child, "kiln-firmware: disk 0 empty\n");
    g.wait_console(child, "kiln-firmware: dhcp failed\n");
    wait_socket(&g.sock());
    let ok = ask(
        &g.sock(),
        json!({"action": "swap-disk", "id": "vol-1", "path": volume}),
    );
    assert_eq!(ok["ok"], true, "{ok}");
    g.wait_console(child, "kiln-firmware: disk 0 attached 2097152\n");
    g.wait_console(child, "blk-check ok 1048576\n");
    let ok = ask(&g.sock(), json!({"action": "shutdown"}));
    assert_eq!(ok["ok"], true, "{ok}");
    let out = finish(vmm.0.take().unwrap());
    assert!(out.status.success(), "{out:?}\n{}", g.console());
}
