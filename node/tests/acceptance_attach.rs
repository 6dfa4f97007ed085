//! Acceptance: the real `openstack` CLI against `kiln-node up --driver sim` —
//! volumes and ports on servers: `server add/remove volume` (volume in-use with
//! its attachment, available again), boot from volume, `server add/remove port`
//! and `server add network`, `port list --server`, and a server delete that
//! gives its volumes back (or deletes them with delete_on_termination).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Cloud, ScratchDir};

/// Polls `show` until `field` is `want` (the CLI does not wait for these).
fn wait_field(cloud: &Cloud, kind: &[&str], name: &str, field: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut args: Vec<&str> = kind.to_vec();
        args.extend(["show", name, "-f", "json"]);
        let v = cloud.admin(&args).json();
        if v[field] == want {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {field} never became {want}: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn port_count(cloud: &Cloud, server: &str) -> usize {
    let v = cloud
        .admin(&["port", "list", "--server", server, "-f", "json"])
        .json();
    v.as_array().unwrap().len()
}

#[test]
fn volumes_and_ports_on_servers() {
    let dir = ScratchDir::new("acc-attach");
    let cloud = Cloud::start(&dir.0, &["--driver", "sim", "--sim-delay-ms", "30"]);
    let raw = dir.0.join("fw.raw");
    std::fs::write(&raw, vec![7u8; 64 * 1024]).unwrap();
    cloud.upload_image(&raw, "fw", &[]);
    for (net, cidr) in [("net1", "10.9.0.0/24"), ("net2", "10.10.0.0/24")] {
        cloud.admin(&["network", "create", net]).ok();
        let sub = format!("{net}-sub");
        cloud
            .admin(&[
                "subnet",
                "create",
                "--network",
                net,
                "--subnet-range",
                cidr,
                &sub,
            ])
            .ok();
    }
    cloud
        .admin(&[
            "server",
            "create",
            "--image",
            "fw",
            "--flavor",
            "m1.tiny",
            "--network",
            "net1",
            "--wait",
            "vm1",
        ])
        .ok();
    cloud
        .admin(&["volume", "create", "--size", "1", "data"])
        .ok();
    wait_field(&cloud, &["volume"], "data", "status", "available");

    // server add volume → in-use, shown on both sides.
    cloud
        .admin(&["server", "add", "volume", "vm1", "data"])
        .ok();
    let v = wait_field(&cloud, &["volume"], "data", "status", "in-use");
    let vm1 = cloud.admin(&["server", "show", "vm1", "-f", "json"]).json();
    let vm1_id = vm1["id"].as_str().unwrap().to_string();
    assert_eq!(v["attachments"][0]["server_id"], vm1_id.as_str(), "{v}");
    assert_eq!(v["attachments"][0]["device"], "/dev/vdb", "{v}");
    let shown = serde_json::to_string(&vm1).unwrap();
    assert!(shown.contains(v["id"].as_str().unwrap()), "{vm1}");
    cloud.admin(&["volume", "delete", "data"]).fails_with("400");

    // server remove volume → available.
    cloud
        .admin(&["server", "remove", "volume", "vm1", "data"])
        .ok();
    let v = wait_field(&cloud, &["volume"], "data", "status", "available");
    assert_eq!(v["attachments"], serde_json::json!([]), "{v}");

    // Ports: add a port, add a network, remove the port.
    assert_eq!(port_count(&cloud, "vm1"), 1);
    let p = cloud
        .admin(&["port", "create", "--network", "net2", "extra", "-f", "json"])
        .json();
    let port = p["id"].as_str().unwrap().to_string();
    cloud.admin(&["server", "add", "port", "vm1", &port]).ok();
    cloud
        .admin(&["server", "add", "network", "vm1", "net2"])
        .ok();
    assert_eq!(port_count(&cloud, "vm1"), 3);
    let addrs = cloud
        .admin(&["server", "show", "vm1", "-c", "addresses", "-f", "json"])
        .json();
    assert!(addrs.to_string().contains("net2"), "{addrs}");
    cloud
        .admin(&["server", "remove", "port", "vm1", &port])
        .ok();
    assert_eq!(port_count(&cloud, "vm1"), 2);
    let p = cloud.admin(&["port", "show", &port, "-f", "json"]).json();
    assert_eq!(p["device_id"], "", "{p}");

    // Boot from volume: an image copied to a new root volume.
    cloud
        .admin(&[
            "server",
            "create",
            "--image",
            "fw",
            "--boot-from-volume",
            "1",
            "--flavor",
            "m1.tiny",
            "--network",
            "net1",
            "--wait",
            "bfv",
        ])
        .ok();
    let bfv = cloud.admin(&["server", "show", "bfv", "-f", "json"]).json();
    let root = bfv["volumes_attached"].to_string();
    let vols = cloud.admin(&["volume", "list", "-f", "json"]).json();
    let root_vol = vols
        .as_array()
        .unwrap()
        .iter()
        .find(|v| root.contains(v["ID"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("no root volume in {vols} for {bfv}"))
        .clone();
    let root_id = root_vol["ID"].as_str().unwrap().to_string();
    let rv = wait_field(&cloud, &["volume"], &root_id, "status", "in-use");
    assert_eq!(rv["bootable"], true, "{rv}");

    // Deleting the servers gives their volumes back.
    cloud
        .admin(&["server", "add", "volume", "vm1", "data"])
        .ok();
    wait_field(&cloud, &["volume"], "data", "status", "in-use");
    cloud
        .admin(&["server", "delete", "--wait", "vm1", "bfv"])
        .ok();
    wait_field(&cloud, &["volume"], "data", "status", "available");
    wait_field(&cloud, &["volume"], &root_id, "status", "available");
    // kiln's ports went with the servers; the user's own port stays.
    let p = cloud.admin(&["port", "list", "-f", "json"]).json();
    let ids: Vec<&str> = p
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["ID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [port.as_str()], "{p}");
}
