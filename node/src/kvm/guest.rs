//! What a server boots as: the kiln-vmm configuration (`vmm.json`) built from
//! the spawn spec — the boot source chosen from the image's properties, vCPUs
//! and RAM from the flavor, the root disk and volumes as virtio-blk, the
//! plugged ports as virtio-net (with the queue pairs their TAPs were made for).

use std::path::{Path, PathBuf};

use kiln_controller::protocol::{ImageSpec, Spawn};
use serde_json::{json, Value};

use super::process::{CONSOLE_FILE, SOCKET_FILE};
use crate::plumbing::Plugged;

/// The firmware command line when the image sets no `os_command_line`.
pub const DEFAULT_FIRMWARE_CMDLINE: &str = "kiln.mode=serve";

/// Empty disk slots every guest gets for volumes attached while it runs
/// (kiln-vmm fills one with `swap-disk`).
pub const HOTPLUG_SLOTS: usize = 4;
/// The id prefix of those slots (`hp0`, `hp1`, ...).
const HOTPLUG_PREFIX: &str = "hp";
/// The image property naming the firmware a snapshot of a firmware guest
/// boots (the controller sets it on such snapshots).
pub const FIRMWARE_ID_PROPERTY: &str = "kiln_firmware_id";
/// The root disk's file in the instance directory.
pub const ROOT_DISK: &str = "root.raw";
/// Root disk size when the flavor says 0 GiB (a firmware's scratch disk).
pub const MIN_ROOT_BYTES: u64 = 1 << 30;
/// CPUID features hidden from Linux guests (the set vmm/README.md boots
/// Linux with: KVM's emulator of this host's ring 0 cannot run them).
const LINUX_CPUID_MASK: &[&str] = &[
    "cx16", "xsave", "osxsave", "avx", "avx2", "xsaveopt", "xsavec", "xsaves",
];
/// How long a graceful stop waits before kiln-vmm stops the guest hard.
pub const SHUTDOWN_TIMEOUT_MS: u64 = 1500;

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("the server has no image (boot from volume is not supported by the kvm driver yet)")]
    NoImage,
    #[error("image {0} is neither a kiln firmware (property kiln_firmware=true or kiln_firmware_id) nor a Linux image with kernel_id; kiln cannot boot disk images with their own boot loader yet")]
    Unbootable(String),
}

/// How an image boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// A kiln firmware ELF: the image itself, with an empty root disk; or,
    /// for a snapshot of a firmware guest (`kiln_firmware_id`), the image
    /// named there, with the snapshot as the root disk.
    Firmware {
        cmdline: String,
        firmware_id: Option<String>,
    },
    /// Direct kernel boot; the image is the root disk.
    Linux {
        kernel_id: String,
        ramdisk_id: Option<String>,
        cmdline: String,
    },
}

fn truthy(v: Option<&String>) -> bool {
    matches!(
        v.map(|s| s.to_ascii_lowercase()).as_deref(),
        Some("true" | "yes" | "1")
    )
}

/// How `image` boots, from its properties.
pub fn boot_of(image: &ImageSpec) -> Result<Boot, GuestError> {
    let p = &image.properties;
    let cmdline = p.get("os_command_line").cloned();
    let firmware_cmdline = || {
        cmdline
            .clone()
            .unwrap_or_else(|| DEFAULT_FIRMWARE_CMDLINE.to_string())
    };
    if truthy(p.get("kiln_firmware")) {
        return Ok(Boot::Firmware {
            cmdline: firmware_cmdline(),
            firmware_id: None,
        });
    }
    if let Some(f) = p.get(FIRMWARE_ID_PROPERTY) {
        return Ok(Boot::Firmware {
            cmdline: firmware_cmdline(),
            firmware_id: Some(f.clone()),
        });
    }
    if let Some(k) = p.get("kernel_id") {
        return Ok(Boot::Linux {
            kernel_id: k.clone(),
            ramdisk_id: p.get("ramdisk_id").cloned(),
            cmdline: cmdline.unwrap_or_else(|| "console=ttyS0 root=/dev/vda rw".to_string()),
        });
    }
    Err(GuestError::Unbootable(image.id.clone()))
}

/// Files the boot source needs, resolved from the image cache.
pub struct BootFiles {
    /// The firmware ELF or the kernel.
    pub image: PathBuf,
    pub initrd: Option<PathBuf>,
}

/// The kiln-vmm configuration for `spec` in instance directory `dir`.
pub fn vmm_config(
    spec: &Spawn,
    dir: &Path,
    boot: &Boot,
    files: &BootFiles,
    nics: &[Plugged],
) -> Value {
    let queues = disk_queues(spec.flavor.vcpus);
    let mut disks = vec![json!({"path": dir.join(ROOT_DISK), "id": "root", "num_queues": queues})];
    for v in &spec.volumes {
        if let Some(path) = &v.path {
            disks.push(
                json!({"path": path, "id": volume_disk_id(&v.volume_id), "num_queues": queues}),
            );
        }
    }
    for i in 0..HOTPLUG_SLOTS {
        disks.push(
            json!({"path": null, "id": format!("{HOTPLUG_PREFIX}{i}"), "num_queues": queues}),
        );
    }
    let nics: Vec<Value> = nics
        .iter()
        .map(|p| json!({"tap": p.ifname, "mac": p.mac, "queue_pairs": p.queues.max(1)}))
        .collect();
    let mut cfg = json!({
        "vcpus": spec.flavor.vcpus.max(1),
        "memory_mib": spec.flavor.ram_mb.max(16),
        "disks": disks,
        "nics": nics,
        "console": {"log": dir.join(CONSOLE_FILE)},
        "control_socket": SOCKET_FILE,
        "shutdown_timeout_ms": SHUTDOWN_TIMEOUT_MS,
    });
    match boot {
        Boot::Firmware { cmdline, .. } => {
            cfg["firmware"] = json!({"path": files.image, "cmdline": cmdline});
        }
        Boot::Linux { cmdline, .. } => {
            cfg["kernel"] =
                json!({"path": files.image, "initrd": files.initrd, "cmdline": cmdline});
            cfg["cpuid_mask"] = json!(LINUX_CPUID_MASK);
        }
    }
    cfg
}

/// Most virtio-blk queues a guest's disk gets: each is a host thread.
const MAX_DISK_QUEUES: u64 = 4;

/// virtio-blk queues per disk for a guest of `vcpus`: one per vCPU (as
/// QEMU gives a virtio-blk disk by default), at most `MAX_DISK_QUEUES`.
fn disk_queues(vcpus: u64) -> u64 {
    vcpus.clamp(1, MAX_DISK_QUEUES)
}

/// A volume's virtio-blk id (GET_ID allows 20 bytes: the first 20 of the id).
pub fn volume_disk_id(volume_id: &str) -> String {
    volume_id.chars().take(20).collect()
}

/// The disks a VMM's `state` answer lists (`[{id, path, bytes, read_only}]`).
fn state_disks(state: &Value) -> impl Iterator<Item = &Value> {
    state["disks"].as_array().into_iter().flatten()
}

/// The id of the first empty hot-plug slot in a VMM's `state` answer.
pub fn free_hotplug_slot(state: &Value) -> Option<String> {
    state_disks(state)
        .filter(|d| d["path"].is_null())
        .filter_map(|d| d["id"].as_str())
        .find(|id| id.starts_with(HOTPLUG_PREFIX))
        .map(str::to_string)
}

/// The slot holding a volume: the one with its disk id (attached at boot) or
/// its backing file (hot-plugged).
pub fn slot_holding(state: &Value, volume_id: &str, path: Option<&str>) -> Option<String> {
    let id = volume_disk_id(volume_id);
    state_disks(state)
        .find(|d| {
            d["id"].as_str() == Some(id.as_str()) || (path.is_some() && d["path"].as_str() == path)
        })
        .and_then(|d| d["id"].as_str())
        .map(str::to_string)
}

/// Bytes of the root disk for a flavor's `disk_gb`.
pub fn root_bytes(disk_gb: u64) -> u64 {
    (disk_gb << 30).max(MIN_ROOT_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_choose_their_boot() {
        let mut img = ImageSpec {
            id: "i".into(),
            properties: Default::default(),
        };
        assert!(boot_of(&img).is_err());
        img.properties.insert("kiln_firmware".into(), "True".into());
        assert_eq!(
            boot_of(&img).ok(),
            Some(Boot::Firmware {
                cmdline: DEFAULT_FIRMWARE_CMDLINE.into(),
                firmware_id: None,
            })
        );
        img.properties.clear();
        img.properties
            .insert(FIRMWARE_ID_PROPERTY.into(), "fw".into());
        assert_eq!(
            boot_of(&img).ok(),
            Some(Boot::Firmware {
                cmdline: DEFAULT_FIRMWARE_CMDLINE.into(),
                firmware_id: Some("fw".into()),
            })
        );
        img.properties.clear();
        img.properties.insert("kernel_id".into(), "k".into());
        img.properties
            .insert("os_command_line".into(), "console=ttyS0".into());
        assert_eq!(
            boot_of(&img).ok(),
            Some(Boot::Linux {
                kernel_id: "k".into(),
                ramdisk_id: None,
                cmdline: "console=ttyS0".into()
            })
        );
        assert_eq!(root_bytes(0), MIN_ROOT_BYTES);
        assert_eq!(root_bytes(2), 2 << 30);
    }

    /// The configuration of a firmware guest for spawn spec `spec` (JSON).
    fn firmware_config(spec: Value, nics: &[Plugged]) -> Value {
        let spec: Spawn = serde_json::from_value(spec).unwrap();
        let boot = Boot::Firmware {
            cmdline: String::new(),
            firmware_id: None,
        };
        let files = BootFiles {
            image: "/fw".into(),
            initrd: None,
        };
        vmm_config(&spec, Path::new("/d"), &boot, &files, nics)
    }

    #[test]
    fn each_nic_gets_the_queue_pairs_its_tap_was_made_for() {
        let nic = |id: &str, queues| Plugged {
            port_id: id.into(),
            ifname: format!("ktap-{id}"),
            mac: "fa:16:3e:00:00:01".into(),
            queues,
        };
        let cfg = firmware_config(
            json!({
                "server_id": "s", "name": "n",
                "flavor": {"id": "f", "vcpus": 2, "ram_mb": 64, "disk_gb": 1,
                           "ephemeral_gb": 0, "swap_mb": 0},
                "image": null,
            }),
            &[nic("a", 2), nic("b", 1), nic("c", 0)],
        );
        let pairs: Vec<&Value> = cfg["nics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| &n["queue_pairs"])
            .collect();
        assert_eq!(pairs, [&json!(2), &json!(1), &json!(1)], "{cfg}");
        assert_eq!(cfg["nics"][0]["tap"], "ktap-a");
    }

    #[test]
    fn every_disk_gets_a_queue_per_vcpu_up_to_four() {
        for (vcpus, want) in [(0, 1), (1, 1), (2, 2), (4, 4), (16, 4)] {
            let cfg = firmware_config(
                json!({
                    "server_id": "s", "name": "n",
                    "flavor": {"id": "f", "vcpus": vcpus, "ram_mb": 64, "disk_gb": 1,
                               "ephemeral_gb": 0, "swap_mb": 0},
                    "image": null,
                    "volumes": [{"volume_id": "v", "device": "/dev/vdb", "size_gb": 1,
                                 "path": "/tmp/v.raw"}],
                }),
                &[],
            );
            let disks = cfg["disks"].as_array().unwrap();
            assert_eq!(disks.len(), 2 + HOTPLUG_SLOTS, "{cfg}");
            assert!(
                disks.iter().all(|d| d["num_queues"] == want),
                "{vcpus} vCPUs: {cfg}"
            );
        }
    }
}
