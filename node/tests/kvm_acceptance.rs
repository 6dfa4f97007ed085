//! Acceptance: the real `openstack` CLI against `kiln-node up --driver kvm` —
//! the firmware uploaded to Glance, a server booted in a real kiln-vmm, its
//! console, stop/start/reboot/pause, createImage (the root disk's bytes in
//! Glance, `image save`, a second server booted from the snapshot), a
//! kiln-node restart that keeps the guest running, and delete leaving no
//! process and no files. Needs /dev/kvm and
//! `cargo build --release -p kiln-vmm && cargo firmware`.
#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::FileExt;
use std::path::Path;

use support::{alive, kvm_usable, pids_under, workspace_root, Cloud, Reaper, ScratchDir};

fn vmm_pid(dir: &Path, server: &str) -> u32 {
    let pid: u32 = std::fs::read_to_string(dir.join(format!("node/instances/{server}/vmm.pid")))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("kiln-vmm"),
        "pid {pid} is a kiln-vmm"
    );
    pid
}

#[test]
fn a_real_guest_through_its_life() {
    if !kvm_usable() {
        return;
    }
    let firmware = workspace_root().join("target/release/kiln-firmware");
    assert!(
        firmware.is_file(),
        "build it first: cargo build --release -p kiln-vmm && cargo firmware"
    );
    let dir = ScratchDir::new("kvm-acc");
    let _reaper = Reaper(dir.0.clone());
    let mut cloud = Cloud::start(&dir.0, &["--driver", "kvm"]);
    cloud.upload_image(&firmware, "fw", &["kiln_firmware=true"]);
    // No network exists, so the server gets no ports (the net side lands later).
    let created = cloud
        .admin(&[
            "server", "create", "--flavor", "m1.tiny", "--image", "fw", "--wait", "-f", "json",
            "vm1",
        ])
        .json();
    assert_eq!(created["status"], "ACTIVE", "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let pid = vmm_pid(&dir.0, &id);
    assert!(alive(pid));
    let console = cloud
        .admin(&["console", "log", "show", "vm1"])
        .ok()
        .to_string();
    assert!(console.contains("kiln-firmware: booted"), "{console}");

    cloud.admin(&["server", "stop", "vm1"]).ok();
    cloud.wait_for("vm1", "SHUTOFF");
    assert!(!alive(pid), "stop ends kiln-vmm");
    cloud.admin(&["server", "start", "vm1"]).ok();
    cloud.wait_for("vm1", "ACTIVE");
    let pid = vmm_pid(&dir.0, &id);
    cloud.admin(&["server", "reboot", "--wait", "vm1"]).ok();
    cloud.wait_for("vm1", "ACTIVE");
    cloud
        .admin(&["server", "reboot", "--hard", "--wait", "vm1"])
        .ok();
    cloud.wait_for("vm1", "ACTIVE");
    assert!(!alive(pid), "reboots start a new kiln-vmm");
    let pid = vmm_pid(&dir.0, &id);
    cloud.admin(&["server", "pause", "vm1"]).ok();
    cloud.wait_for("vm1", "PAUSED");
    cloud.admin(&["server", "unpause", "vm1"]).ok();
    cloud.wait_for("vm1", "ACTIVE");
    let console = cloud
        .admin(&["console", "log", "show", "vm1"])
        .ok()
        .to_string();
    assert_eq!(
        console.matches("kiln-firmware: booted").count(),
        4,
        "{console}"
    );

    // createImage: the root disk copied with the guest paused for the copy
    // only, uploaded to Glance; the snapshot boots another server.
    let root = dir.0.join(format!("node/instances/{id}/root.raw"));
    let marker = b"kiln snapshot marker";
    std::fs::OpenOptions::new()
        .write(true)
        .open(&root)
        .unwrap()
        .write_all_at(marker, 1 << 20)
        .unwrap();
    let root_len = std::fs::metadata(&root).unwrap().len();
    cloud
        .admin(&[
            "server", "image", "create", "--wait", "--name", "snap1", "vm1",
        ])
        .ok();
    let img = cloud
        .admin(&["image", "show", "-f", "json", "snap1"])
        .json();
    assert_eq!(img["status"], "active", "{img}");
    assert_eq!(img["size"], root_len, "{img}");
    assert_eq!(img["disk_format"], "raw", "{img}");
    assert_eq!(img["properties"]["image_type"], "snapshot", "{img}");
    assert_eq!(img["properties"]["instance_uuid"], id.as_str(), "{img}");
    assert_eq!(cloud.status("vm1"), "ACTIVE");
    assert_eq!(
        vmm_pid(&dir.0, &id),
        pid,
        "the guest ran on (paused, not restarted)"
    );
    assert!(
        !dir.0
            .join(format!("node/instances/{id}/snapshot.raw"))
            .exists(),
        "the disk copy is gone after the upload"
    );
    let saved = dir.0.join("snap1.raw");
    cloud
        .admin(&["image", "save", "--file", saved.to_str().unwrap(), "snap1"])
        .ok();
    let file = std::fs::File::open(&saved).unwrap();
    assert_eq!(file.metadata().unwrap().len(), root_len);
    let mut got = [0u8; 20];
    file.read_exact_at(&mut got, 1 << 20).unwrap();
    assert_eq!(&got, marker, "image save gives the disk's bytes");
    drop(file);
    std::fs::remove_file(&saved).unwrap();
    let vm2 = cloud
        .admin(&[
            "server", "create", "--flavor", "m1.tiny", "--image", "snap1", "--wait", "-f", "json",
            "vm2",
        ])
        .json();
    assert_eq!(vm2["status"], "ACTIVE", "{vm2}");
    let id2 = vm2["id"].as_str().unwrap().to_string();
    let console = cloud
        .admin(&["console", "log", "show", "vm2"])
        .ok()
        .to_string();
    assert!(console.contains("kiln-firmware: booted"), "{console}");
    let root2 = std::fs::File::open(dir.0.join(format!("node/instances/{id2}/root.raw"))).unwrap();
    root2.read_exact_at(&mut got, 1 << 20).unwrap();
    assert_eq!(&got, marker, "vm2's root disk is the snapshot");
    drop(root2);
    cloud.admin(&["server", "delete", "--wait", "vm2"]).ok();
    cloud.admin(&["image", "delete", "snap1"]).ok();

    // kiln-node goes away and comes back: the guest runs on, adopted.
    cloud.stop();
    assert!(alive(pid), "the guest outlives kiln-node");
    let cloud = Cloud::start(&dir.0, &["--driver", "kvm"]);
    cloud.wait_for("vm1", "ACTIVE");
    assert_eq!(vmm_pid(&dir.0, &id), pid, "the same kiln-vmm was adopted");

    cloud.admin(&["server", "delete", "--wait", "vm1"]).ok();
    assert!(!alive(pid));
    assert!(!dir.0.join(format!("node/instances/{id}")).exists());
    assert!(pids_under(&dir.0)
        .iter()
        .all(|p| !std::fs::read(format!("/proc/{p}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains("kiln-vmm"))
            .unwrap_or(false)));
}
