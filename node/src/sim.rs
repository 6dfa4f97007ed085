//! The simulated driver: no guests, realistic delays (configurable; 0 for
//! benchmarks), a synthesised console log per server, and real sparse files for
//! volumes when a volume directory is given. Metadata `kiln-sim:fail=spawn` makes
//! a build fail, `kiln-sim:fail=attach` makes volume and port attaches and
//! detaches fail (to exercise retries, roll-backs and faults).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use kiln_controller::protocol::{Action, Spawn, VolumeSpec};

use crate::driver::{Capacity, Driver, DriverError, DriverFuture, DriverResult};

/// How long the simulated operations take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimDelays {
    pub spawn: Duration,
    pub action: Duration,
}

impl SimDelays {
    /// Defaults: spawn 300 ms, other actions 100 ms.
    pub fn default_delays() -> Self {
        SimDelays {
            spawn: Duration::from_millis(300),
            action: Duration::from_millis(100),
        }
    }

    /// One figure for everything (`--sim-delay-ms`): spawn takes it, other actions
    /// a third of it.
    pub fn uniform(ms: u64) -> Self {
        SimDelays {
            spawn: Duration::from_millis(ms),
            action: Duration::from_millis(ms / 3),
        }
    }
}

struct SimVm {
    name: String,
    console: Vec<String>,
    boots: u32,
    /// `kiln-sim:fail=attach`: attaches and detaches fail.
    fail_attach: bool,
    /// Devices of the volumes attached (volume id → device).
    disks: HashMap<String, String>,
}

impl SimVm {
    fn of(spec: &Spawn, console: Vec<String>) -> SimVm {
        SimVm {
            name: spec.name.clone(),
            console,
            boots: 0,
            fail_attach: spec.metadata.get("kiln-sim:fail").map(String::as_str) == Some("attach"),
            disks: spec
                .volumes
                .iter()
                .map(|v| (v.volume_id.clone(), v.device.clone()))
                .collect(),
        }
    }
}

pub struct SimDriver {
    host: String,
    capacity: Capacity,
    delays: SimDelays,
    volume_dir: Option<PathBuf>,
    vms: Mutex<HashMap<String, SimVm>>,
}

impl SimDriver {
    pub fn new(
        host: &str,
        capacity: Capacity,
        delays: SimDelays,
        volume_dir: Option<PathBuf>,
    ) -> Self {
        SimDriver {
            host: host.to_string(),
            capacity,
            delays,
            volume_dir,
            vms: Mutex::new(HashMap::new()),
        }
    }

    fn with_vm<R>(&self, id: &str, f: impl FnOnce(&mut SimVm) -> R) -> DriverResult<R> {
        let mut vms = self
            .vms
            .lock()
            .map_err(|_| DriverError::Failed("sim state poisoned".into()))?;
        let vm = vms
            .get_mut(id)
            .ok_or_else(|| DriverError::Unknown(id.to_string()))?;
        Ok(f(vm))
    }

    fn boot_log(&self, vm: &mut SimVm, spec_ips: &[String]) {
        vm.boots += 1;
        let n = vm.boots;
        let host = &self.host;
        let name = vm.name.clone();
        vm.console.extend([
            format!("[    0.000000] Linux version 6.1.0-kiln-sim (boot {n}) on {host}"),
            "[    0.000000] Command line: console=ttyS0 root=/dev/vda1".to_string(),
            "[    0.412345] virtio_blk virtio1: [vda] 2097152 512-byte logical blocks".to_string(),
            "[    0.523456] virtio_net virtio0 eth0: link up".to_string(),
            format!("cloud-init: hostname set to {name}"),
        ]);
        for ip in spec_ips {
            vm.console
                .push(format!("cloud-init: eth0 has address {ip}"));
        }
        vm.console.push(format!("{name} login: "));
    }

    fn make_volumes(&self, spec: &Spawn) -> DriverResult<()> {
        for v in &spec.volumes {
            self.make_volume(v)?;
        }
        Ok(())
    }

    /// The volume's backing file, made sparse when absent (and a volume
    /// directory or a path is known).
    fn make_volume(&self, v: &VolumeSpec) -> DriverResult<()> {
        let Some(dir) = &self.volume_dir else {
            return Ok(());
        };
        let path = v
            .path
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.join(format!("{}.img", v.volume_id)));
        if !path.exists() {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let f = std::fs::File::create(&path)?;
            f.set_len(v.size_gb << 30)?;
        }
        Ok(())
    }

    /// A volume's backing file: the path given, else the one in the volume
    /// directory (None without either).
    fn volume_path(&self, id: &str, path: Option<&str>) -> Option<PathBuf> {
        path.map(PathBuf::from).or_else(|| {
            self.volume_dir
                .as_ref()
                .map(|d| d.join(format!("{id}.img")))
        })
    }

    /// A swap's data: the old volume's bytes into the new one's file (sparse),
    /// grown to the new size.
    fn copy_volume(&self, old: &str, old_path: Option<&str>, new: &VolumeSpec) -> DriverResult<()> {
        let (Some(from), Some(to)) = (
            self.volume_path(old, old_path),
            self.volume_path(&new.volume_id, new.path.as_deref()),
        ) else {
            return Ok(());
        };
        if !from.exists() {
            return Ok(());
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        crate::kvm::disk::clone_file(&from, &to)?;
        crate::kvm::disk::grow(&to, new.size_gb << 30)?;
        Ok(())
    }

    /// Attaches or detaches a volume or port on a simulated guest.
    fn hotplug(&self, vm: &mut SimVm, action: &Action) -> DriverResult<()> {
        if vm.fail_attach {
            return Err(DriverError::Failed(format!(
                "simulated {} failure on {}",
                action.name(),
                self.host
            )));
        }
        match action {
            Action::AttachVolume { volume } => {
                self.make_volume(volume)?;
                vm.disks
                    .insert(volume.volume_id.clone(), volume.device.clone());
                vm.console.push(format!(
                    "virtio_blk: [{}] attached ({} GiB)",
                    volume.device.trim_start_matches("/dev/"),
                    volume.size_gb
                ));
            }
            Action::DetachVolume { volume_id } => {
                let dev = vm.disks.remove(volume_id).ok_or_else(|| {
                    DriverError::Failed(format!("volume {volume_id} is not attached"))
                })?;
                vm.console.push(format!(
                    "virtio_blk: [{}] detached",
                    dev.trim_start_matches("/dev/")
                ));
            }
            Action::AttachPort { port } => vm.console.push(format!(
                "virtio_net: {} ({}) attached",
                port.port_id, port.mac
            )),
            Action::DetachPort { port_id } => {
                vm.console.push(format!("virtio_net: {port_id} detached"))
            }
            Action::SwapVolume {
                old_volume_id,
                old_path,
                volume,
            } => {
                let dev = vm.disks.remove(old_volume_id).ok_or_else(|| {
                    DriverError::Failed(format!("volume {old_volume_id} is not attached"))
                })?;
                self.copy_volume(old_volume_id, old_path.as_deref(), volume)?;
                vm.disks.insert(volume.volume_id.clone(), dev.clone());
                vm.console.push(format!(
                    "virtio_blk: [{}] now backed by volume {}",
                    dev.trim_start_matches("/dev/"),
                    volume.volume_id
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

impl Driver for SimDriver {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn capacity(&self) -> Capacity {
        self.capacity
    }

    fn spawn<'a>(&'a self, spec: &'a Spawn) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            if !self.delays.spawn.is_zero() {
                tokio::time::sleep(self.delays.spawn).await;
            }
            if spec.metadata.get("kiln-sim:fail").map(String::as_str) == Some("spawn") {
                return Err(DriverError::Failed(format!(
                    "simulated build failure on {}",
                    self.host
                )));
            }
            self.make_volumes(spec)?;
            let mut vm = SimVm::of(spec, Vec::new());
            let ips: Vec<String> = spec.ports.iter().flat_map(|p| p.ips.clone()).collect();
            self.boot_log(&mut vm, &ips);
            let mut vms = self
                .vms
                .lock()
                .map_err(|_| DriverError::Failed("sim state poisoned".into()))?;
            vms.insert(spec.server_id.clone(), vm);
            Ok(())
        })
    }

    fn act<'a>(&'a self, id: &'a str, action: &'a Action) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            self.with_vm(id, |_| ())?;
            if !self.delays.action.is_zero() {
                tokio::time::sleep(self.delays.action).await;
            }
            self.with_vm(id, |vm| match action {
                Action::AttachVolume { .. }
                | Action::DetachVolume { .. }
                | Action::AttachPort { .. }
                | Action::DetachPort { .. }
                | Action::SwapVolume { .. } => self.hotplug(vm, action),
                Action::Start | Action::Reboot { .. } | Action::Rebuild { .. } => {
                    if matches!(action, Action::Rebuild { .. }) {
                        vm.console.push("rebuild: root disk replaced".into());
                    }
                    let ips = Vec::new();
                    self.boot_log(vm, &ips);
                    Ok(())
                }
                Action::Stop => {
                    vm.console.push("reboot: Power down".into());
                    Ok(())
                }
                other => {
                    vm.console.push(format!("kiln-sim: {}", other.name()));
                    Ok(())
                }
            })?
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            if !self.delays.action.is_zero() {
                tokio::time::sleep(self.delays.action).await;
            }
            let mut vms = self
                .vms
                .lock()
                .map_err(|_| DriverError::Failed("sim state poisoned".into()))?;
            vms.remove(id);
            Ok(())
        })
    }

    fn console(&self, id: &str, lines: Option<u64>) -> DriverResult<String> {
        self.with_vm(id, |vm| {
            let skip = match lines {
                Some(n) => vm.console.len().saturating_sub(n as usize),
                None => 0,
            };
            let mut out = vm.console[skip..].join("\n");
            out.push('\n');
            out
        })
    }

    fn adopt<'a>(&'a self, spec: &'a Spawn, running: bool) -> DriverFuture<'a, ()> {
        Box::pin(async move { self.adopt_now(spec, running) })
    }

    /// No disk bytes: the snapshot is empty (the image still goes through
    /// queued → saving → active, with size 0).
    fn snapshot<'a>(&'a self, id: &'a str) -> DriverFuture<'a, Option<PathBuf>> {
        Box::pin(async move {
            self.with_vm(id, |_| ())?;
            if !self.delays.action.is_zero() {
                tokio::time::sleep(self.delays.action).await;
            }
            self.with_vm(id, |vm| {
                vm.console
                    .push("kiln-sim: snapshot of the root disk (no data)".into())
            })?;
            Ok(None)
        })
    }
}

impl SimDriver {
    fn adopt_now(&self, spec: &Spawn, running: bool) -> DriverResult<()> {
        let mut vm = SimVm::of(spec, vec!["kiln-sim: adopted after a node restart".into()]);
        if running {
            let ips: Vec<String> = spec.ports.iter().flat_map(|p| p.ips.clone()).collect();
            self.boot_log(&mut vm, &ips);
        }
        let mut vms = self
            .vms
            .lock()
            .map_err(|_| DriverError::Failed("sim state poisoned".into()))?;
        vms.insert(spec.server_id.clone(), vm);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use kiln_controller::protocol::{FlavorSpec, PortSpec};

    use super::*;

    fn spec(fail: bool, volumes: Vec<VolumeSpec>) -> Spawn {
        let mut metadata = BTreeMap::new();
        if fail {
            metadata.insert("kiln-sim:fail".to_string(), "spawn".to_string());
        }
        Spawn {
            server_id: "s1".into(),
            name: "vm1".into(),
            flavor: FlavorSpec {
                id: "1".into(),
                vcpus: 1,
                ram_mb: 512,
                disk_gb: 1,
                ephemeral_gb: 0,
                swap_mb: 0,
            },
            image: None,
            ports: vec![],
            volumes,
            user_data: None,
            key: None,
            metadata,
            instance: Default::default(),
        }
    }

    #[tokio::test]
    async fn console_volumes_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Capacity {
            vcpus: 4,
            ram_mb: 4096,
            disk_gb: 100,
        };
        let d = SimDriver::new(
            "sim-0",
            cap,
            SimDelays::uniform(0),
            Some(dir.path().to_path_buf()),
        );
        let vols = vec![VolumeSpec {
            volume_id: "v1".into(),
            device: "/dev/vdb".into(),
            size_gb: 2,
            path: None,
        }];
        d.spawn(&spec(false, vols)).await.unwrap();
        let meta = std::fs::metadata(dir.path().join("v1.img")).unwrap();
        assert_eq!(meta.len(), 2 << 30);
        let all = d.console("s1", None).unwrap();
        assert!(all.contains("vm1 login:"), "{all}");
        assert_eq!(d.console("s1", Some(1)).unwrap(), "vm1 login: \n");
        d.act("s1", &Action::Reboot { hard: true }).await.unwrap();
        assert!(d.console("s1", None).unwrap().contains("boot 2"));
        d.delete("s1").await.unwrap();
        assert!(matches!(
            d.console("s1", None),
            Err(DriverError::Unknown(_))
        ));
        assert!(d.spawn(&spec(true, vec![])).await.is_err());
        assert!(d.act("s1", &Action::Stop).await.is_err());
    }

    #[tokio::test]
    async fn hotplug_and_its_failure_hook() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Capacity {
            vcpus: 4,
            ram_mb: 4096,
            disk_gb: 100,
        };
        let d = SimDriver::new(
            "sim-0",
            cap,
            SimDelays::uniform(0),
            Some(dir.path().to_path_buf()),
        );
        d.spawn(&spec(false, vec![])).await.unwrap();
        let vol = VolumeSpec {
            volume_id: "v9".into(),
            device: "/dev/vdb".into(),
            size_gb: 1,
            path: Some(dir.path().join("x/v9.raw").to_string_lossy().into_owned()),
        };
        d.act("s1", &Action::AttachVolume { volume: vol })
            .await
            .unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("x/v9.raw"))
                .unwrap()
                .len(),
            1 << 30
        );
        assert!(d.console("s1", None).unwrap().contains("[vdb] attached"));
        let detach = Action::DetachVolume {
            volume_id: "v9".into(),
        };
        d.act("s1", &detach).await.unwrap();
        assert!(d.act("s1", &detach).await.is_err(), "not attached any more");
        let port = PortSpec {
            port_id: "p1".into(),
            network_id: "n".into(),
            mac: "fa:16:3e:00:00:02".into(),
            ips: vec![],
            queues: 1,
        };
        d.act("s1", &Action::AttachPort { port }).await.unwrap();
        d.act(
            "s1",
            &Action::DetachPort {
                port_id: "p1".into(),
            },
        )
        .await
        .unwrap();
        let mut failing = spec(false, vec![]);
        failing.server_id = "s2".into();
        failing
            .metadata
            .insert("kiln-sim:fail".into(), "attach".into());
        d.spawn(&failing).await.unwrap();
        let err = d
            .act(
                "s2",
                &Action::DetachPort {
                    port_id: "p1".into(),
                },
            )
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("simulated detach_port failure"),
            "{err}"
        );
    }
}
