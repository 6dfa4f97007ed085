//! Acceptance: the real `openstack` CLI against `kiln-node up` — Cinder v3 as
//! users drive it: blank volumes and volumes from an image (the image's bytes
//! at the start of the volume file), show/list/set, snapshots and volumes from
//! them, a volume type, the volumes quota, delete. (`server add volume` needs
//! servers and is added with them.)
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Cloud, ScratchDir};

fn wait_status(cloud: &Cloud, kind: &[&str], name: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut args: Vec<&str> = kind.to_vec();
        args.extend(["show", name, "-f", "json"]);
        let v = cloud.admin(&args).json();
        if v["status"] == want {
            return v;
        }
        assert!(
            v["status"] != "error" && Instant::now() < deadline,
            "{name} never became {want}: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn find(dir: &Path, file: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find(&p, file) {
                return Some(f);
            }
        } else if p.file_name().and_then(|n| n.to_str()) == Some(file) {
            return Some(p);
        }
    }
    None
}

#[test]
fn volumes_snapshots_types_and_quotas() {
    let dir = ScratchDir::new("acc-volume");
    let cloud = Cloud::start(&dir.0, &[]);

    // Blank.
    let v = cloud
        .admin(&["volume", "create", "--size", "1", "blank", "-f", "json"])
        .json();
    assert_eq!(v["size"], 1, "{v}");
    let blank = wait_status(&cloud, &["volume"], "blank", "available");
    assert_eq!(blank["bootable"], false, "{blank}");

    // From an image.
    let src = dir.0.join("disk.raw");
    let data: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    cloud
        .admin(&[
            "image",
            "create",
            "--file",
            src.to_str().unwrap(),
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "cirros",
            "-f",
            "json",
        ])
        .ok();
    cloud
        .admin(&[
            "volume", "create", "--size", "1", "--image", "cirros", "boot", "-f", "json",
        ])
        .ok();
    let boot = wait_status(&cloud, &["volume"], "boot", "available");
    assert_eq!(boot["bootable"], true, "{boot}");
    assert!(
        boot["volume_image_metadata"].to_string().contains("cirros"),
        "{boot}"
    );
    let id = boot["id"].as_str().unwrap();
    let file = find(&dir.0, &format!("{id}.raw")).expect("the volume's file");
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len(), 1 << 30);
    assert_eq!(
        &bytes[..data.len()],
        &data[..],
        "the image's bytes are in the volume"
    );

    // List, set, show.
    let list = cloud.admin(&["volume", "list", "-f", "json"]).json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["Name"].as_str())
        .collect();
    assert!(
        names.contains(&"blank") && names.contains(&"boot"),
        "{list}"
    );
    cloud
        .admin(&[
            "volume",
            "set",
            "--name",
            "data",
            "--property",
            "tier=fast",
            "--description",
            "d",
            "blank",
        ])
        .ok();
    let data_v = cloud
        .admin(&["volume", "show", "data", "-f", "json"])
        .json();
    assert_eq!(data_v["description"], "d");
    assert!(
        data_v["properties"].to_string().contains("fast"),
        "{data_v}"
    );
    cloud
        .admin(&["volume", "show", "blank"])
        .fails_with("No Volume found");

    // Snapshots and a volume from one.
    cloud
        .admin(&[
            "volume", "snapshot", "create", "--volume", "boot", "snap1", "-f", "json",
        ])
        .ok();
    wait_status(&cloud, &["volume", "snapshot"], "snap1", "available");
    let snaps = cloud
        .admin(&["volume", "snapshot", "list", "-f", "json"])
        .json();
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
    cloud
        .admin(&[
            "volume",
            "create",
            "--snapshot",
            "snap1",
            "--size",
            "2",
            "fromsnap",
            "-f",
            "json",
        ])
        .ok();
    let fs = wait_status(&cloud, &["volume"], "fromsnap", "available");
    assert_eq!(fs["size"], 2);
    assert_eq!(fs["bootable"], true, "{fs}");
    cloud.admin(&["volume", "delete", "fromsnap"]).ok();
    cloud.admin(&["volume", "snapshot", "delete", "snap1"]).ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cloud
        .admin(&["volume", "snapshot", "list", "-f", "json"])
        .json()
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "snapshot never went away");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A volume type (without --property: `/types/{id}/extra_specs` is not served yet).
    cloud
        .admin(&["volume", "type", "create", "gold", "-f", "json"])
        .ok();
    let types = cloud
        .admin(&["volume", "type", "list", "-f", "json"])
        .json();
    assert!(types.to_string().contains("gold"), "{types}");
    cloud
        .admin(&[
            "volume", "create", "--size", "1", "--type", "gold", "golden", "-f", "json",
        ])
        .ok();
    let g = wait_status(&cloud, &["volume"], "golden", "available");
    assert_eq!(g["type"], "gold", "{g}");

    // The volumes quota: 3 exist (data, boot, golden); a limit of 3 refuses a 4th.
    cloud
        .admin(&["quota", "set", "--volumes", "3", "admin"])
        .ok();
    cloud
        .admin(&["volume", "create", "--size", "1", "fourth"])
        .fails_with("413");
    cloud
        .admin(&["quota", "set", "--volumes", "10", "admin"])
        .ok();

    // Delete.
    for name in ["golden", "data", "boot"] {
        cloud.admin(&["volume", "delete", name]).ok();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cloud
        .admin(&["volume", "list", "-f", "json"])
        .json()
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "volumes never went away");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!file.exists(), "the volume's file is removed");
    cloud.admin(&["volume", "type", "delete", "gold"]).ok();
    cloud
        .admin(&["volume", "show", "golden"])
        .fails_with("No Volume found");
}
