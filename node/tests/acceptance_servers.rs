//! Acceptance: the real `openstack` CLI against `kiln-node up --driver sim` —
//! servers through their life: create (--wait), list/show, actions and their
//! states, console log, metadata, quotas, names in ID slots, a restart mid-life,
//! delete.
#![allow(clippy::unwrap_used)]

mod support;

use support::{Cloud, ScratchDir};

fn status(cloud: &Cloud, server: &str) -> String {
    cloud.status(server)
}

fn wait_for(cloud: &Cloud, server: &str, want: &str) {
    cloud.wait_for(server, want)
}

#[test]
fn servers_through_their_life() {
    let dir = ScratchDir::new("acc-servers");
    let mut cloud = Cloud::start(&dir.0, &["--driver", "sim", "--sim-delay-ms", "60"]);
    let raw = dir.0.join("disk.raw");
    std::fs::write(&raw, vec![0u8; 64 * 1024]).unwrap();
    let raw = raw.to_str().unwrap().to_string();
    cloud
        .admin(&[
            "image",
            "create",
            "--file",
            &raw,
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "cirros",
        ])
        .ok();
    cloud.admin(&["network", "create", "net1"]).ok();
    cloud
        .admin(&[
            "subnet",
            "create",
            "--network",
            "net1",
            "--subnet-range",
            "10.9.0.0/24",
            "sub1",
        ])
        .ok();

    let s = cloud
        .admin(&[
            "server",
            "create",
            "--image",
            "cirros",
            "--flavor",
            "m1.tiny",
            "--network",
            "net1",
            "--property",
            "role=web",
            "--wait",
            "vm1",
            "-f",
            "json",
        ])
        .json();
    assert_eq!(s["status"], "ACTIVE", "{s}");
    assert_eq!(s["OS-EXT-STS:vm_state"], "active");
    assert_eq!(s["OS-EXT-STS:power_state"], 1);
    assert_eq!(s["OS-EXT-SRV-ATTR:host"], "sim-0");
    let addresses = s["addresses"].to_string();
    assert!(addresses.contains("10.9.0."), "{s}");
    let id = s["id"].as_str().unwrap().to_string();

    let list = cloud.admin(&["server", "list", "-f", "json"]).json();
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ID"] == id.as_str())
        .unwrap();
    assert_eq!(row["Name"], "vm1");
    assert_eq!(row["Status"], "ACTIVE");
    assert!(row["Networks"].to_string().contains("net1"), "{row}");

    // Stop, a second stop is Nova's 409, start.
    cloud.admin(&["server", "stop", "vm1"]).ok();
    wait_for(&cloud, "vm1", "SHUTOFF");
    cloud.admin(&["server", "stop", "vm1"]).fails_with(&format!(
        "Cannot 'stop' instance {id} while it is in vm_state stopped"
    ));
    cloud.admin(&["server", "start", "vm1"]).ok();
    wait_for(&cloud, "vm1", "ACTIVE");
    cloud
        .admin(&["server", "reboot", "--hard", "--wait", "vm1"])
        .ok();
    assert_eq!(status(&cloud, "vm1"), "ACTIVE");
    cloud.admin(&["server", "pause", "vm1"]).ok();
    wait_for(&cloud, "vm1", "PAUSED");
    cloud.admin(&["server", "unpause", "vm1"]).ok();
    wait_for(&cloud, "vm1", "ACTIVE");
    cloud.admin(&["server", "suspend", "vm1"]).ok();
    wait_for(&cloud, "vm1", "SUSPENDED");
    cloud.admin(&["server", "resume", "vm1"]).ok();
    wait_for(&cloud, "vm1", "ACTIVE");
    cloud
        .admin(&["server", "resize", "--flavor", "m1.small", "--wait", "vm1"])
        .ok();
    assert_eq!(status(&cloud, "vm1"), "VERIFY_RESIZE");
    cloud.admin(&["server", "resize", "confirm", "vm1"]).ok();
    wait_for(&cloud, "vm1", "ACTIVE");
    let shown = cloud.admin(&["server", "show", "vm1", "-f", "json"]).json();
    assert!(shown["flavor"].to_string().contains("m1.small"), "{shown}");
    cloud
        .admin(&["server", "rebuild", "--image", "cirros", "--wait", "vm1"])
        .ok();
    assert_eq!(status(&cloud, "vm1"), "ACTIVE");

    // Lock: the admin may still act; the state is shown.
    cloud.admin(&["server", "lock", "vm1"]).ok();
    cloud.admin(&["server", "unlock", "vm1"]).ok();

    let log = cloud
        .admin(&["console", "log", "show", "vm1"])
        .ok()
        .to_string();
    assert!(log.contains("vm1 login:"), "{log}");
    let tail = cloud
        .admin(&["console", "log", "show", "--lines", "1", "vm1"])
        .ok()
        .to_string();
    assert_eq!(tail.trim(), "vm1 login:", "{tail}");

    // Metadata: set, see, unset.
    cloud
        .admin(&["server", "set", "--property", "tier=gold", "vm1"])
        .ok();
    let shown = cloud.admin(&["server", "show", "vm1", "-f", "json"]).json();
    assert_eq!(shown["properties"]["tier"], "gold", "{shown}");
    assert_eq!(shown["properties"]["role"], "web", "{shown}");
    cloud
        .admin(&["server", "unset", "--property", "tier", "vm1"])
        .ok();
    let shown = cloud.admin(&["server", "show", "vm1", "-f", "json"]).json();
    assert!(shown["properties"].get("tier").is_none(), "{shown}");

    // Names in ID slots.
    cloud
        .admin(&["server", "show", "no-such-name"])
        .fails_with("No Server found");

    // Quota: two instances allowed, one used.
    cloud
        .admin(&["quota", "set", "--instances", "2", "admin"])
        .ok();
    cloud
        .admin(&[
            "server", "create", "--image", "cirros", "--flavor", "m1.tiny", "--wait", "vm2",
        ])
        .ok();
    cloud
        .admin(&[
            "server", "create", "--image", "cirros", "--flavor", "m1.tiny", "vm3",
        ])
        .fails_with("Quota exceeded for instances: Requested 1, but already used 2 of 2 instances");

    // A restart keeps servers and their claims; the node takes them back.
    cloud.stop();
    let cloud2 = Cloud::start(&dir.0, &["--driver", "sim", "--sim-delay-ms", "60"]);
    cloud = cloud2;
    assert_eq!(status(&cloud, "vm1"), "ACTIVE");
    assert_eq!(status(&cloud, "vm2"), "ACTIVE");
    let log = cloud
        .admin(&["console", "log", "show", "vm1"])
        .ok()
        .to_string();
    assert!(log.contains("adopted"), "{log}");
    cloud.admin(&["server", "stop", "vm2"]).ok();
    wait_for(&cloud, "vm2", "SHUTOFF");

    // Shelve and unshelve.
    cloud.admin(&["server", "shelve", "vm2"]).ok();
    wait_for(&cloud, "vm2", "SHELVED_OFFLOADED");
    cloud.admin(&["server", "unshelve", "vm2"]).ok();
    wait_for(&cloud, "vm2", "ACTIVE");

    cloud
        .admin(&["server", "delete", "--wait", "vm1", "vm2"])
        .ok();
    let list = cloud.admin(&["server", "list", "-f", "json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 0, "{list}");
    // The quota is free again: a new server fits.
    cloud
        .admin(&[
            "server", "create", "--image", "cirros", "--flavor", "m1.tiny", "--wait", "vm4",
        ])
        .ok();
    cloud.admin(&["server", "delete", "--wait", "vm4"]).ok();
}

#[test]
fn soft_delete_restore_and_force_delete() {
    let dir = ScratchDir::new("acc-soft-delete");
    let cloud = Cloud::start(
        &dir.0,
        &["--driver", "sim", "--reclaim-instance-interval", "3600"],
    );
    let raw = dir.0.join("disk.raw");
    std::fs::write(&raw, vec![0u8; 4096]).unwrap();
    let raw = raw.to_str().unwrap().to_string();
    cloud
        .admin(&[
            "image",
            "create",
            "--file",
            &raw,
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "cirros",
        ])
        .ok();
    let s = cloud
        .admin(&[
            "server", "create", "--image", "cirros", "--flavor", "m1.tiny", "--wait", "-f", "json",
            "vm",
        ])
        .json();
    let id = s["id"].as_str().unwrap().to_string();
    // Soft-deleted servers leave lists (so the CLI finds them by ID only).
    cloud.admin(&["server", "delete", &id]).ok();
    wait_for(&cloud, &id, "SOFT_DELETED");
    let list = cloud.admin(&["server", "list", "-f", "json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 0, "{list}");
    cloud.admin(&["server", "restore", &id]).ok();
    wait_for(&cloud, &id, "ACTIVE");
    cloud.admin(&["server", "delete", &id]).ok();
    wait_for(&cloud, &id, "SOFT_DELETED");
    cloud
        .admin(&["server", "delete", "--force", "--wait", &id])
        .ok();
    cloud
        .admin(&["server", "show", &id])
        .fails_with(&format!("No Server found for {id}"));
}
