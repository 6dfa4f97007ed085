//! Acceptance: the real `openstack` CLI against `kiln-node up --driver kvm` —
//! the firmware uploaded to Glance, a server booted in a real kiln-vmm, its
//! console, stop/start/reboot/pause, a kiln-node restart that keeps the guest
//! running, and delete leaving no process and no files. Needs /dev/kvm and
//! `cargo build --release -p kiln-vmm -p kiln-firmware`.
#![allow(clippy::unwrap_used)]

mod support;

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
        "build it first: cargo build --release -p kiln-vmm -p kiln-firmware"
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
