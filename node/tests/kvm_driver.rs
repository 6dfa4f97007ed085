//! The KVM driver on real /dev/kvm with real kiln-vmm processes and the real
//! firmware: spawn → booted, the lifecycle actions, unexpected exits reported
//! as events, adoption across a driver restart, and delete leaving nothing.
//! Needs `cargo build --release -p kiln-vmm && cargo firmware` first.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kiln_controller::protocol::{
    Action, FlavorSpec, ImageSpec, PowerState, Spawn, VmState, VolumeSpec,
};
use kiln_node::driver::{Driver, DriverEvent};
use kiln_node::kvm::{KvmDriver, KvmOptions};
use tokio::sync::mpsc::UnboundedReceiver;

mod support;

use support::{alive, pids_under, Reaper};

fn release_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.join("target/release"))
        .unwrap_or_default()
}

/// A scratch data dir whose processes are killed on the way out.
struct Scratch(#[allow(dead_code)] Reaper, tempfile::TempDir);

impl Scratch {
    fn path(&self) -> &Path {
        self.1.path()
    }
}

/// A driver over a fresh data dir whose image cache holds the firmware as
/// image `fw`. None (with the reason printed) without /dev/kvm.
fn setup() -> Option<(Scratch, Arc<KvmDriver>, UnboundedReceiver<DriverEvent>)> {
    if !support::kvm_usable() {
        return None;
    }
    let rel = release_dir();
    let (fw, vmm) = (rel.join("kiln-firmware"), rel.join("kiln-vmm"));
    assert!(
        fw.is_file() && vmm.is_file(),
        "build them first: cargo build --release -p kiln-vmm && cargo firmware"
    );
    let tmp = tempfile::tempdir().unwrap();
    let reaper = Reaper(tmp.path().to_path_buf());
    let dir = Scratch(reaper, tmp);
    std::fs::create_dir_all(dir.path().join("images")).unwrap();
    std::fs::copy(&fw, dir.path().join("images/fw")).unwrap();
    let (driver, rx) = open(&dir);
    Some((dir, driver, rx))
}

fn open(dir: &Scratch) -> (Arc<KvmDriver>, UnboundedReceiver<DriverEvent>) {
    let driver = KvmDriver::new(KvmOptions {
        data_dir: dir.path().to_path_buf(),
        vmm_path: Some(release_dir().join("kiln-vmm")),
        images: None,
        image_cache_bytes: 1 << 30,
        plumbing: None,
    })
    .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    driver.subscribe(tx);
    (Arc::new(driver), rx)
}

fn flavor(vcpus: u64, ram_mb: u64, disk_gb: u64) -> FlavorSpec {
    FlavorSpec {
        id: format!("f{vcpus}-{ram_mb}"),
        vcpus,
        ram_mb,
        disk_gb,
        ephemeral_gb: 0,
        swap_mb: 0,
    }
}

fn spec(id: &str, image: &str, cmdline: Option<&str>) -> Spawn {
    let mut properties = BTreeMap::from([("kiln_firmware".to_string(), "true".to_string())]);
    if let Some(c) = cmdline {
        properties.insert("os_command_line".into(), c.into());
    }
    Spawn {
        server_id: id.into(),
        name: id.into(),
        flavor: flavor(1, 64, 1),
        image: Some(ImageSpec {
            id: image.into(),
            properties,
        }),
        ports: vec![],
        volumes: vec![],
        user_data: None,
        key: None,
        metadata: BTreeMap::new(),
        instance: Default::default(),
    }
}

async fn next_event(rx: &mut UnboundedReceiver<DriverEvent>) -> DriverEvent {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("an event within 60 s")
        .expect("the driver is alive")
}

/// Waits (up to 30 s) until the server's console shows `text`.
fn wait_console(d: &KvmDriver, id: &str, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !d.console(id, None).unwrap().contains(text) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {text:?} on the console:\n{}",
            d.console(id, None).unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn boots(d: &KvmDriver, id: &str) -> usize {
    d.console(id, None)
        .unwrap()
        .matches("kiln-firmware: booted")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_actions_and_delete() {
    let Some((dir, d, mut rx)) = setup() else {
        return;
    };
    d.spawn(&spec("s1", "fw", None)).await.unwrap();
    let pid = d.pid("s1").expect("a running kiln-vmm");
    assert!(alive(pid));
    assert_eq!(boots(&d, "s1"), 1);
    let inst = d.instance_dir("s1");
    for f in ["vmm.json", "console.log", "root.raw", "vmm.pid"] {
        assert!(inst.join(f).exists(), "{f} missing");
    }
    assert_eq!(
        std::fs::metadata(inst.join("root.raw")).unwrap().len(),
        1 << 30
    );

    d.act("s1", &Action::Pause).await.unwrap();
    d.act("s1", &Action::Unpause).await.unwrap();
    d.act("s1", &Action::Suspend).await.unwrap();
    d.act("s1", &Action::Resume).await.unwrap();
    assert_eq!(d.pid("s1"), Some(pid), "pause/suspend keep the process");

    d.act("s1", &Action::Stop).await.unwrap();
    assert_eq!(d.pid("s1"), None);
    assert!(!alive(pid), "stop ends kiln-vmm");
    assert!(
        d.act("s1", &Action::Pause).await.is_err(),
        "nothing to pause"
    );
    d.act("s1", &Action::Start).await.unwrap();
    assert_eq!(boots(&d, "s1"), 2);
    let p2 = d.pid("s1").unwrap();
    d.act("s1", &Action::Reboot { hard: true }).await.unwrap();
    let p3 = d.pid("s1").unwrap();
    assert!(p3 != p2 && !alive(p2));
    d.act("s1", &Action::Reboot { hard: false }).await.unwrap();
    assert_eq!(boots(&d, "s1"), 4);
    d.act(
        "s1",
        &Action::Resize {
            flavor: flavor(2, 96, 2),
        },
    )
    .await
    .unwrap();
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(inst.join("vmm.json")).unwrap()).unwrap();
    assert_eq!(cfg["vcpus"], 2);
    assert_eq!(cfg["memory_mib"], 96);
    assert_eq!(
        std::fs::metadata(inst.join("root.raw")).unwrap().len(),
        2 << 30
    );
    assert_eq!(boots(&d, "s1"), 5);
    // A volume into the running guest (a hot-plug slot), then out again; the
    // firmware (serve mode) checks the new disk and keeps its data.
    let vol = dir.path().join("vol-1.raw");
    std::fs::write(&vol, vec![0x5au8; 4 << 20]).unwrap();
    let volume = VolumeSpec {
        volume_id: "vol-1".into(),
        device: "/dev/vdb".into(),
        size_gb: 1,
        path: Some(vol.display().to_string()),
    };
    let before = d.pid("s1");
    // Once serve looks at its NIC it has taken stock of its disks: a volume
    // attached later is a hot-plug, not a disk present at boot.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !d.console("s1", Some(1)).unwrap().contains("virtio-net") {
        assert!(std::time::Instant::now() < deadline, "serve never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    d.act("s1", &Action::AttachVolume { volume }).await.unwrap();
    wait_console(&d, "s1", "blk-check ok 1048576");
    assert!(d.console("s1", None).unwrap().contains("attached 4194304"));
    d.act(
        "s1",
        &Action::DetachVolume {
            volume_id: "vol-1".into(),
        },
    )
    .await
    .unwrap();
    wait_console(&d, "s1", "detached");
    assert!(
        std::fs::read(&vol).unwrap().iter().all(|b| *b == 0x5a),
        "the volume's data survived the guest's check"
    );
    assert_eq!(d.pid("s1"), before, "hot-plug keeps the process");
    assert_eq!(d.console("s1", Some(1)).unwrap().lines().count(), 1);

    let last = d.pid("s1").unwrap();
    d.delete("s1").await.unwrap();
    assert!(!alive(last));
    assert!(!inst.exists(), "the instance directory is gone");
    assert!(pids_under(dir.path()).is_empty(), "no kiln-vmm left");
    assert!(rx.try_recv().is_err(), "requested stops are no events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unexpected_exits_are_reported() {
    let Some((dir, d, mut rx)) = setup() else {
        return;
    };
    // A guest that powers off right after booting: SHUTOFF, no fault.
    d.spawn(&spec("off", "fw", Some("kiln.mode=probe")))
        .await
        .unwrap();
    let ev = next_event(&mut rx).await;
    assert_eq!(ev.server_id, "off");
    assert_eq!(
        (ev.vm_state, ev.power_state),
        (VmState::Stopped, PowerState::Shutdown)
    );
    assert_eq!(ev.fault, None);
    // A VMM killed with SIGKILL: ERROR with the reason.
    d.spawn(&spec("dies", "fw", None)).await.unwrap();
    let pid = d.pid("dies").unwrap();
    // SAFETY: kill(2) on the kiln-vmm this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let ev = next_event(&mut rx).await;
    assert_eq!(ev.server_id, "dies");
    assert_eq!(ev.vm_state, VmState::Error);
    assert!(ev.fault.unwrap_or_default().contains("signal 9"));
    // A bad image: the spawn fails and leaves nothing behind.
    let err = d.spawn(&spec("bad", "missing", None)).await.unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    assert!(!d.instance_dir("bad").exists());
    for id in ["off", "dies"] {
        d.delete(id).await.unwrap();
    }
    assert!(pids_under(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_outlive_a_driver_restart() {
    let Some((dir, d, _rx)) = setup() else { return };
    let keep = spec("keep", "fw", None);
    d.spawn(&keep).await.unwrap();
    d.spawn(&spec("gone", "fw", None)).await.unwrap();
    let pid = d.pid("keep").unwrap();
    drop(d);
    let (d2, _rx2) = open(&dir);
    d2.adopt(&keep, true).await.unwrap();
    assert_eq!(d2.pid("keep"), Some(pid), "the same kiln-vmm runs on");
    assert!(d2
        .console("keep", None)
        .unwrap()
        .contains("kiln-firmware: booted"));
    // The controller no longer places `gone` here: removed with its process.
    d2.retain(&["keep".to_string()]).await.unwrap();
    assert!(!d2.instance_dir("gone").exists());
    d2.act("keep", &Action::Reboot { hard: true })
        .await
        .unwrap();
    d2.delete("keep").await.unwrap();
    assert!(!alive(pid));
    assert!(pids_under(dir.path()).is_empty());
    assert!(std::fs::read_dir(dir.path().join("instances"))
        .unwrap()
        .next()
        .is_none());
}
