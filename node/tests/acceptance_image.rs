//! Acceptance: the real `openstack` CLI against `kiln-node up` — Glance v2 as
//! users drive it (create with a file, save, list, show, set, delete).
#![allow(clippy::unwrap_used)]

mod support;

use support::{Cloud, ScratchDir};

#[test]
fn image_create_save_set_delete() {
    let dir = ScratchDir::new("acc-image");
    let mut cloud = Cloud::start(&dir.0, &[]);
    let src = dir.0.join("disk.raw");
    let data: Vec<u8> = (0..1_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let src_s = src.to_str().unwrap();

    let img = cloud
        .admin(&[
            "image",
            "create",
            "--file",
            src_s,
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "--property",
            "os_command_line=console=ttyS0",
            "cirros",
            "-f",
            "json",
        ])
        .json();
    assert_eq!(img["status"], "active", "{img}");
    assert_eq!(img["size"], data.len());
    let id = img["id"].as_str().unwrap().to_string();

    let out = dir.0.join("saved.raw");
    cloud
        .admin(&["image", "save", "--file", out.to_str().unwrap(), "cirros"])
        .ok();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        data,
        "image save returns the uploaded bytes"
    );

    // A restart keeps the image record and its data.
    cloud.stop();
    let cloud = Cloud::start(&dir.0, &[]);
    std::fs::remove_file(&out).unwrap();
    cloud
        .admin(&["image", "save", "--file", out.to_str().unwrap(), "cirros"])
        .ok();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        data,
        "same bytes after a restart"
    );

    let list = cloud.admin(&["image", "list", "-f", "json"]).json();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|i| i["ID"] == id.as_str() && i["Name"] == "cirros"),
        "{list}"
    );

    cloud
        .admin(&[
            "image",
            "set",
            "--name",
            "cirros2",
            "--property",
            "kernel_id=k1",
            "--tag",
            "boot",
            &id,
        ])
        .ok();
    let shown = cloud
        .admin(&["image", "show", "cirros2", "-f", "json"])
        .json();
    assert_eq!(shown["id"], id.as_str());
    let text = shown.to_string();
    assert!(
        text.contains("kernel_id") && text.contains("boot"),
        "{shown}"
    );
    assert!(
        shown["checksum"].as_str().is_some_and(|c| c.len() == 32),
        "{shown}"
    );

    cloud
        .admin(&["image", "show", "no-such-image"])
        .fails_with("No Image found");
    cloud.admin(&["image", "delete", &id]).ok();
    let list = cloud.admin(&["image", "list", "-f", "json"]).json();
    assert!(list.as_array().unwrap().is_empty(), "{list}");
}
