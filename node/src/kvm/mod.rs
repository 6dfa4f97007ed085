//! The KVM driver: one detached `kiln-vmm` process per server, in
//! `DATA_DIR/instances/<id>/` (`vmm.json`, `console.log`, `control.sock`,
//! `root.raw`, `vmm.pid`, `vmm.log`). Guests outlive kiln-node: on start the
//! driver finds the live VMMs again and [`Driver::adopt`] keeps them.
//!
//! - [`host`]: /dev/kvm and the host's capacity.
//! - [`images`]: the image cache (fetched from the controller, verified).
//! - [`disk`]: root disks (reflink or sparse copy).
//! - [`guest`]: the kiln-vmm configuration for a server.
//! - [`process`]: starting, adopting, watching and talking to a kiln-vmm.

pub mod disk;
pub mod guest;
pub mod host;
pub mod images;
pub mod process;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_controller::protocol::{
    Action, FlavorSpec, ImageSpec, PowerState, Spawn, VmState, VolumeSpec,
};
use serde_json::{json, Value};

use self::guest::{boot_of, root_bytes, Boot, BootFiles, ROOT_DISK, SHUTDOWN_TIMEOUT_MS};
use self::images::{ImageCache, ImageSource};
use self::process::{Exit, Vmm, CONFIG_FILE, CONSOLE_FILE, LOG_FILE};
use crate::driver::{
    Capacity, Driver, DriverError, DriverEvent, DriverFuture, DriverResult, EventSender,
};
use crate::plumbing::{Plugged, Plumbing};

/// The line kiln-firmware prints first: the guest booted.
pub const BOOTED_LINE: &[u8] = b"kiln-firmware: booted";
/// How long a guest may take to boot (the machine may be loaded).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the console and the process are looked at while booting.
const BOOT_POLL: Duration = Duration::from_millis(2);
/// A snapshot's copy of the root disk, until the agent uploaded it.
const SNAPSHOT_COPY: &str = "snapshot.raw";
/// Default image cache bound.
pub const DEFAULT_IMAGE_CACHE_BYTES: u64 = 20 << 30;

/// What the driver is built from.
pub struct KvmOptions {
    /// The node's data directory (`instances/` and `images/` below it).
    pub data_dir: PathBuf,
    /// `kiln-vmm`; default: next to the current executable.
    pub vmm_path: Option<PathBuf>,
    /// Where images are fetched from (None: only what the cache holds).
    pub images: Option<ImageSource>,
    pub image_cache_bytes: u64,
    /// The host network side, for servers with ports.
    pub plumbing: Option<Arc<dyn Plumbing>>,
}

/// One server on this node.
struct Instance {
    dir: PathBuf,
    spec: Spawn,
    vmm: Option<Vmm>,
    /// The flavor before a resize (until confirmed or reverted).
    old_flavor: Option<FlavorSpec>,
    nics: Vec<Plugged>,
}

impl Instance {
    fn running(&self) -> bool {
        self.vmm.as_ref().is_some_and(Vmm::alive)
    }
}

type Shared = Arc<tokio::sync::Mutex<Instance>>;

pub struct KvmDriver {
    instances: PathBuf,
    vmm_path: PathBuf,
    cache: ImageCache,
    plumbing: Option<Arc<dyn Plumbing>>,
    capacity: Capacity,
    servers: Mutex<HashMap<String, Shared>>,
    /// Live VMMs found at start, until adopted.
    found: Mutex<HashMap<String, Vmm>>,
    /// Image ids each server uses (kept out of eviction).
    images_in_use: Mutex<HashMap<String, Vec<String>>>,
    events: Arc<Mutex<Option<EventSender>>>,
}

fn failed(e: impl std::fmt::Display) -> DriverError {
    DriverError::Failed(e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `kiln-vmm` next to the running executable (or the one above it, for
/// test binaries in `target/release/deps`).
pub fn default_vmm_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    for _ in 0..2 {
        let candidate = dir.join("kiln-vmm");
        if candidate.is_file() {
            return candidate;
        }
        match dir.parent() {
            Some(p) => dir = p.to_path_buf(),
            None => break,
        }
    }
    PathBuf::from("kiln-vmm")
}

/// The state report for a VMM that ended on its own.
fn exit_event(id: &str, dir: &Path, exit: Exit) -> DriverEvent {
    if exit.clean() {
        return DriverEvent {
            server_id: id.to_string(),
            vm_state: VmState::Stopped,
            power_state: PowerState::Shutdown,
            fault: None,
        };
    }
    let tail = process::tail(&dir.join(LOG_FILE), 0, 400);
    let fault = if tail.is_empty() {
        exit.describe()
    } else {
        format!("{}: {tail}", exit.describe())
    };
    DriverEvent {
        server_id: id.to_string(),
        vm_state: VmState::Error,
        power_state: if exit == Exit::Code(2) {
            PowerState::Crashed
        } else {
            PowerState::Shutdown
        },
        fault: Some(fault),
    }
}

impl KvmDriver {
    /// Opens the data directory and finds the VMMs still running there.
    pub fn new(o: KvmOptions) -> DriverResult<Self> {
        let instances = o.data_dir.join("instances");
        std::fs::create_dir_all(&instances)?;
        let driver = KvmDriver {
            capacity: host::capacity(&o.data_dir),
            cache: ImageCache::new(o.data_dir.join("images"), o.images, o.image_cache_bytes),
            vmm_path: o.vmm_path.unwrap_or_else(default_vmm_path),
            plumbing: o.plumbing,
            instances,
            servers: Mutex::new(HashMap::new()),
            found: Mutex::new(HashMap::new()),
            images_in_use: Mutex::new(HashMap::new()),
            events: Arc::new(Mutex::new(None)),
        };
        for entry in std::fs::read_dir(&driver.instances)?.flatten() {
            let Some(id) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let dir = entry.path();
            if let Some(vmm) = process::adopt(&dir, driver.on_exit(&id, &dir)) {
                if process::answers(&dir) {
                    tracing::info!(server = %id, pid = vmm.pid, "found a running kiln-vmm");
                    lock(&driver.found).insert(id, vmm);
                }
            }
        }
        Ok(driver)
    }

    /// The pid of a server's running VMM.
    pub fn pid(&self, id: &str) -> Option<u32> {
        let inst = lock(&self.servers).get(id).cloned()?;
        let inst = inst.try_lock().ok()?;
        inst.vmm.as_ref().filter(|v| v.alive()).map(|v| v.pid)
    }

    /// A server's directory.
    pub fn instance_dir(&self, id: &str) -> PathBuf {
        self.instances.join(id)
    }

    fn on_exit(&self, id: &str, dir: &Path) -> process::OnExit {
        let events = self.events.clone();
        let id = id.to_string();
        let dir = dir.to_path_buf();
        Box::new(move |exit| {
            let ev = exit_event(&id, &dir, exit);
            tracing::warn!(server = %id, ?exit, "kiln-vmm ended on its own");
            if let Some(tx) = lock(&events).as_ref() {
                let _ = tx.send(ev);
            }
        })
    }

    fn get(&self, id: &str) -> DriverResult<Shared> {
        lock(&self.servers)
            .get(id)
            .cloned()
            .ok_or_else(|| DriverError::Unknown(id.to_string()))
    }

    /// Image ids a spec needs.
    fn image_ids(spec: &Spawn) -> Vec<String> {
        let Some(img) = &spec.image else {
            return vec![];
        };
        let mut ids = vec![img.id.clone()];
        for k in ["kernel_id", "ramdisk_id", guest::FIRMWARE_ID_PROPERTY] {
            if let Some(v) = img.properties.get(k) {
                ids.push(v.clone());
            }
        }
        ids
    }

    fn evict(&self) {
        let in_use: HashSet<String> = lock(&self.images_in_use)
            .values()
            .flatten()
            .cloned()
            .collect();
        self.cache.evict(&in_use);
    }

    /// Boot source files for `image`, fetched through the cache.
    async fn boot_files(&self, image: &ImageSpec, boot: &Boot) -> DriverResult<BootFiles> {
        Ok(match boot {
            Boot::Firmware { firmware_id, .. } => BootFiles {
                image: self
                    .cache
                    .get(firmware_id.as_deref().unwrap_or(&image.id))
                    .await
                    .map_err(failed)?,
                initrd: None,
            },
            Boot::Linux {
                kernel_id,
                ramdisk_id,
                ..
            } => BootFiles {
                image: self.cache.get(kernel_id).await.map_err(failed)?,
                initrd: match ramdisk_id {
                    Some(r) => Some(self.cache.get(r).await.map_err(failed)?),
                    None => None,
                },
            },
        })
    }

    /// (Re)creates the root disk from the image.
    async fn make_root(&self, inst: &Instance) -> DriverResult<()> {
        let image = inst
            .spec
            .image
            .as_ref()
            .ok_or_else(|| failed(guest::GuestError::NoImage))?;
        let boot = boot_of(image).map_err(failed)?;
        let root = inst.dir.join(ROOT_DISK);
        let bytes = root_bytes(inst.spec.flavor.disk_gb);
        let source = match boot {
            Boot::Firmware {
                firmware_id: None, ..
            } => None,
            Boot::Firmware { .. } | Boot::Linux { .. } => {
                Some(self.cache.get(&image.id).await.map_err(failed)?)
            }
        };
        let id = inst.spec.server_id.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            match source {
                None => disk::create_sparse(&root, bytes),
                Some(src) => {
                    let kind = disk::clone_file(&src, &root)?;
                    tracing::info!(server = %id, ?kind, "root disk cloned from the image");
                    disk::grow(&root, bytes)
                }
            }
        })
        .await
        .map_err(failed)??;
        Ok(())
    }

    /// Writes vmm.json, starts kiln-vmm and waits until the guest booted.
    async fn boot(&self, inst: &mut Instance) -> DriverResult<()> {
        let image = inst
            .spec
            .image
            .clone()
            .ok_or_else(|| failed(guest::GuestError::NoImage))?;
        let boot = boot_of(&image).map_err(failed)?;
        let files = self.boot_files(&image, &boot).await?;
        if !inst.spec.ports.is_empty() {
            let plumbing = self.plumbing.as_ref().ok_or_else(|| {
                failed(
                    "this node has no host networking yet: create the server with --network none",
                )
            })?;
            inst.nics = plumbing.plug(&inst.spec).await?;
        }
        let config = guest::vmm_config(&inst.spec, &inst.dir, &boot, &files, &inst.nics);
        let text = serde_json::to_vec_pretty(&config).map_err(failed)?;
        std::fs::write(inst.dir.join(CONFIG_FILE), text)?;
        let console = inst.dir.join(CONSOLE_FILE);
        let from = process::file_len(&console);
        let id = inst.spec.server_id.clone();
        let vmm = process::launch(&self.vmm_path, &inst.dir, self.on_exit(&id, &inst.dir))
            .map_err(failed)?;
        // Until the guest is up, an exit is this call's failure, not an event.
        vmm.expected.store(true, Ordering::SeqCst);
        inst.vmm = Some(vmm.clone());
        let firmware = matches!(boot, Boot::Firmware { .. });
        let started = tokio::time::Instant::now();
        loop {
            let up = if firmware {
                process::contains_after(&console, from, BOOTED_LINE)
            } else {
                let dir = inst.dir.clone();
                tokio::task::spawn_blocking(move || process::answers(&dir))
                    .await
                    .unwrap_or(false)
            };
            if up {
                break;
            }
            if let Some(exit) = *vmm.exited.borrow() {
                let ev = exit_event(&id, &inst.dir, exit);
                return Err(failed(format!(
                    "the guest did not boot: {}",
                    ev.fault.unwrap_or_else(|| exit.describe())
                )));
            }
            if started.elapsed() > BOOT_TIMEOUT {
                vmm.kill().await;
                return Err(failed(format!(
                    "the guest did not boot within {} s",
                    BOOT_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(BOOT_POLL).await;
        }
        tracing::info!(server = %id, pid = vmm.pid, ms = started.elapsed().as_millis() as u64, "guest booted");
        // From now on an exit is news for the controller; if it already
        // happened (a guest that powers off at once), report it here.
        vmm.expected.store(false, Ordering::SeqCst);
        if let Some(exit) = *vmm.exited.borrow() {
            if !vmm.expected.swap(true, Ordering::SeqCst) {
                let ev = exit_event(&id, &inst.dir, exit);
                if let Some(tx) = lock(&self.events).as_ref() {
                    let _ = tx.send(ev);
                }
            }
        }
        Ok(())
    }

    /// Ctrl-Alt-Del, then kiln-vmm's hard stop at its timeout.
    async fn stop(&self, inst: &Instance) -> DriverResult<()> {
        let Some(vmm) = inst.vmm.clone().filter(Vmm::alive) else {
            return Ok(());
        };
        vmm.expected.store(true, Ordering::SeqCst);
        let dir = inst.dir.clone();
        let asked = tokio::task::spawn_blocking(move || {
            process::control(
                &dir,
                &json!({"action": "shutdown", "timeout_ms": SHUTDOWN_TIMEOUT_MS}),
            )
        })
        .await
        .map_err(failed)?;
        let grace = Duration::from_millis(SHUTDOWN_TIMEOUT_MS + 5000);
        if asked.is_err() || tokio::time::timeout(grace, vmm.wait()).await.is_err() {
            vmm.kill().await;
        }
        Ok(())
    }

    async fn kill(inst: &Instance) {
        if let Some(vmm) = &inst.vmm {
            vmm.kill().await;
        }
    }

    async fn control(inst: &Instance, action: &str) -> DriverResult<()> {
        Self::ask(inst, json!({ "action": action })).await.map(drop)
    }

    /// One control-socket request to a running guest's VMM.
    async fn ask(inst: &Instance, req: Value) -> DriverResult<Value> {
        if !inst.running() {
            let action = req["action"].as_str().unwrap_or("?").to_string();
            return Err(failed(format!("cannot {action}: the guest is not running")));
        }
        let dir = inst.dir.clone();
        tokio::task::spawn_blocking(move || process::control(&dir, &req))
            .await
            .map_err(failed)?
            .map_err(failed)
    }

    /// Puts a volume into a running guest: the first empty hot-plug slot gets
    /// the volume's file (kiln-vmm's `swap-disk`, a config-change interrupt).
    async fn hot_attach(inst: &Instance, volume: &VolumeSpec) -> DriverResult<()> {
        let path = volume
            .path
            .as_deref()
            .ok_or_else(|| failed("the volume has no backing file on this node"))?;
        let state = Self::ask(inst, json!({"action": "state"})).await?;
        let slot = guest::free_hotplug_slot(&state).ok_or_else(|| {
            failed(format!(
                "no free hot-plug disk slot left ({} per server)",
                guest::HOTPLUG_SLOTS
            ))
        })?;
        Self::ask(
            inst,
            json!({"action": "swap-disk", "id": slot, "path": path}),
        )
        .await?;
        Ok(())
    }

    /// Takes a volume out of a running guest: the slot holding its file is
    /// emptied (kiln-vmm's `detach-disk`).
    async fn hot_detach(inst: &Instance, volume_id: &str) -> DriverResult<()> {
        let path = inst
            .spec
            .volumes
            .iter()
            .find(|v| v.volume_id == volume_id)
            .and_then(|v| v.path.clone());
        let state = Self::ask(inst, json!({"action": "state"})).await?;
        let Some(slot) = guest::slot_holding(&state, volume_id, path.as_deref()) else {
            return Ok(());
        };
        Self::ask(inst, json!({"action": "detach-disk", "id": slot})).await?;
        Ok(())
    }

    /// Runs `work` on the blocking pool with a running guest's vCPUs paused
    /// (unless it was paused already), resuming it at once afterwards.
    async fn paused_while<T: Send + 'static>(
        inst: &Instance,
        work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> DriverResult<T> {
        let pause = inst.running()
            && Self::ask(inst, json!({"action": "state"})).await?["state"] != "paused";
        if pause {
            Self::control(inst, "pause").await?;
        }
        let done = tokio::task::spawn_blocking(work).await.map_err(failed);
        if pause {
            Self::control(inst, "resume").await?;
        }
        Ok(done??)
    }

    /// createImage: a copy of the root disk (reflink, else sparse copy) taken
    /// with the guest paused, in [`SNAPSHOT_COPY`] in the instance directory.
    async fn copy_root(inst: &Instance) -> DriverResult<PathBuf> {
        let root = inst.dir.join(ROOT_DISK);
        let copy = inst.dir.join(SNAPSHOT_COPY);
        let (from, to) = (root, copy.clone());
        let started = std::time::Instant::now();
        let kind = Self::paused_while(inst, move || disk::clone_file(&from, &to)).await?;
        tracing::info!(server = %inst.spec.server_id, ?kind, us = started.elapsed().as_micros() as u64, "root disk copied for a snapshot");
        Ok(copy)
    }

    /// Volume swap: the old volume's bytes copied into the new one's file and,
    /// in a running guest, the slot's backing swapped to it — all while the
    /// guest is paused.
    async fn swap_volume(
        inst: &mut Instance,
        old_id: &str,
        old_path: Option<&str>,
        volume: &VolumeSpec,
    ) -> DriverResult<()> {
        let from = old_path
            .map(str::to_string)
            .or_else(|| {
                inst.spec
                    .volumes
                    .iter()
                    .find(|v| v.volume_id == old_id)
                    .and_then(|v| v.path.clone())
            })
            .ok_or_else(|| failed("the old volume has no backing file on this node"))?;
        let to = volume
            .path
            .clone()
            .ok_or_else(|| failed("the new volume has no backing file on this node"))?;
        let slot = if inst.running() {
            let state = Self::ask(inst, json!({"action": "state"})).await?;
            Some(
                guest::slot_holding(&state, old_id, Some(&from)).ok_or_else(|| {
                    failed(format!(
                        "volume {old_id} is in none of the guest's disk slots"
                    ))
                })?,
            )
        } else {
            None
        };
        let bytes = volume.size_gb << 30;
        let (src, dst) = (PathBuf::from(&from), PathBuf::from(&to));
        let pause = inst.running()
            && Self::ask(inst, json!({"action": "state"})).await?["state"] != "paused";
        if pause {
            Self::control(inst, "pause").await?;
        }
        let copied = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            disk::clone_file(&src, &dst)?;
            disk::grow(&dst, bytes)
        })
        .await
        .map_err(failed)
        .and_then(|r| r.map_err(DriverError::from));
        let swapped = match (&copied, &slot) {
            (Ok(()), Some(slot)) => {
                Self::ask(inst, json!({"action": "swap-disk", "id": slot, "path": to}))
                    .await
                    .map(drop)
            }
            _ => Ok(()),
        };
        if pause {
            Self::control(inst, "resume").await?;
        }
        copied?;
        swapped?;
        for v in &mut inst.spec.volumes {
            if v.volume_id == old_id {
                *v = volume.clone();
            }
        }
        Ok(())
    }

    /// Restarts a running guest (stop, boot) so a new configuration applies.
    async fn restart_if_running(&self, inst: &mut Instance, was_running: bool) -> DriverResult<()> {
        if was_running {
            self.stop(inst).await?;
            self.boot(inst).await?;
        }
        Ok(())
    }

    async fn act_on(&self, inst: &mut Instance, action: &Action) -> DriverResult<()> {
        let running = inst.running();
        match action {
            Action::Stop => self.stop(inst).await,
            Action::Start => {
                if running {
                    Ok(())
                } else {
                    self.boot(inst).await
                }
            }
            Action::Reboot { hard } => {
                if *hard {
                    Self::kill(inst).await;
                } else {
                    self.stop(inst).await?;
                }
                self.boot(inst).await
            }
            Action::Pause | Action::Suspend => {
                // Suspend pauses the vCPUs like pause: guest memory stays in
                // the VMM process, nothing is written to disk.
                Self::control(inst, "pause").await
            }
            Action::Unpause | Action::Resume => Self::control(inst, "resume").await,
            Action::Rebuild { image } => {
                Self::kill(inst).await;
                inst.spec.image = Some(image.clone());
                lock(&self.images_in_use)
                    .insert(inst.spec.server_id.clone(), Self::image_ids(&inst.spec));
                self.make_root(inst).await?;
                if running {
                    self.boot(inst).await?;
                }
                Ok(())
            }
            Action::Resize { flavor } => {
                inst.old_flavor = Some(inst.spec.flavor.clone());
                inst.spec.flavor = flavor.clone();
                disk::grow(&inst.dir.join(ROOT_DISK), root_bytes(flavor.disk_gb))?;
                self.restart_if_running(inst, running).await
            }
            Action::ConfirmResize => {
                inst.old_flavor = None;
                Ok(())
            }
            Action::RevertResize { flavor } => {
                inst.old_flavor = None;
                inst.spec.flavor = flavor.clone();
                self.restart_if_running(inst, running).await
            }
            Action::AttachVolume { volume } => {
                if running {
                    Self::hot_attach(inst, volume).await?;
                }
                inst.spec
                    .volumes
                    .retain(|v| v.volume_id != volume.volume_id);
                inst.spec.volumes.push(volume.clone());
                Ok(())
            }
            Action::DetachVolume { volume_id } => {
                if running {
                    Self::hot_detach(inst, volume_id).await?;
                }
                inst.spec.volumes.retain(|v| &v.volume_id != volume_id);
                Ok(())
            }
            Action::AttachPort { port } => {
                if running {
                    return Err(failed(
                        "attaching a port to a running guest is not supported yet: stop the server first",
                    ));
                }
                inst.spec.ports.retain(|p| p.port_id != port.port_id);
                inst.spec.ports.push(port.clone());
                Ok(())
            }
            Action::DetachPort { port_id } => {
                if running {
                    return Err(failed(
                        "detaching a port from a running guest is not supported yet: stop the server first",
                    ));
                }
                inst.spec.ports.retain(|p| &p.port_id != port_id);
                Ok(())
            }
            Action::SwapVolume {
                old_volume_id,
                old_path,
                volume,
            } => Self::swap_volume(inst, old_volume_id, old_path.as_deref(), volume).await,
            Action::Snapshot { .. } => Err(failed("a snapshot goes through Driver::snapshot")),
            Action::ShelveOffload => Err(failed("shelve_offload is a delete to the driver")),
        }
    }

    /// Kills, unplugs and removes a server's directory.
    async fn destroy(&self, id: &str, dir: &Path, vmm: Option<Vmm>) -> DriverResult<()> {
        if let Some(vmm) = vmm {
            vmm.kill().await;
        }
        if let Some(p) = &self.plumbing {
            p.unplug(id).await?;
        }
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        lock(&self.images_in_use).remove(id);
        Ok(())
    }

    async fn spawn_new(&self, spec: &Spawn) -> DriverResult<()> {
        let id = spec.server_id.clone();
        let dir = self.instance_dir(&id);
        if id.is_empty() || id.contains(['/', '.']) {
            return Err(failed(format!("bad server id {id:?}")));
        }
        std::fs::create_dir_all(&dir)?;
        lock(&self.images_in_use).insert(id.clone(), Self::image_ids(spec));
        let shared: Shared = Arc::new(tokio::sync::Mutex::new(Instance {
            dir: dir.clone(),
            spec: spec.clone(),
            vmm: None,
            old_flavor: None,
            nics: vec![],
        }));
        lock(&self.servers).insert(id.clone(), shared.clone());
        let mut inst = shared.lock().await;
        let built = async {
            self.make_root(&inst).await?;
            self.boot(&mut inst).await
        }
        .await;
        if let Err(e) = built {
            let vmm = inst.vmm.take();
            drop(inst);
            lock(&self.servers).remove(&id);
            if let Err(d) = self.destroy(&id, &dir, vmm).await {
                tracing::warn!(server = %id, error = %d, "cleanup after a failed spawn");
            }
            return Err(e);
        }
        drop(inst);
        self.evict();
        Ok(())
    }

    async fn adopt_one(&self, spec: &Spawn, running: bool) -> DriverResult<()> {
        let id = spec.server_id.clone();
        if let Ok(shared) = self.get(&id) {
            let mut inst = shared.lock().await;
            if running && !inst.running() {
                self.boot(&mut inst).await?;
            }
            return Ok(());
        }
        let dir = self.instance_dir(&id);
        let vmm = lock(&self.found).remove(&id);
        std::fs::create_dir_all(&dir)?;
        lock(&self.images_in_use).insert(id.clone(), Self::image_ids(spec));
        let shared: Shared = Arc::new(tokio::sync::Mutex::new(Instance {
            dir: dir.clone(),
            spec: spec.clone(),
            vmm,
            old_flavor: None,
            nics: vec![],
        }));
        lock(&self.servers).insert(id.clone(), shared.clone());
        let mut inst = shared.lock().await;
        if inst.running() {
            if let Some(p) = &self.plumbing {
                if !spec.ports.is_empty() {
                    inst.nics = p.plug(spec).await?;
                }
            }
            if !running {
                self.stop(&inst).await?;
            }
            tracing::info!(server = %id, "adopted a running guest");
            return Ok(());
        }
        if !dir.join(ROOT_DISK).is_file() {
            self.make_root(&inst).await?;
        }
        if running {
            self.boot(&mut inst).await?;
        }
        Ok(())
    }
}

impl Driver for KvmDriver {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn capacity(&self) -> Capacity {
        self.capacity
    }

    fn spawn<'a>(&'a self, spec: &'a Spawn) -> DriverFuture<'a, ()> {
        Box::pin(self.spawn_new(spec))
    }

    fn act<'a>(&'a self, id: &'a str, action: &'a Action) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            let shared = self.get(id)?;
            let mut inst = shared.lock().await;
            self.act_on(&mut inst, action).await
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            let shared = lock(&self.servers).remove(id);
            let found = lock(&self.found).remove(id);
            let dir = self.instance_dir(id);
            if id.is_empty() || id.contains(['/', '.']) {
                return Ok(());
            }
            let vmm = match shared {
                Some(s) => s.lock().await.vmm.take(),
                None => None,
            };
            self.destroy(id, &dir, vmm.or(found)).await
        })
    }

    fn console(&self, id: &str, lines: Option<u64>) -> DriverResult<String> {
        if !lock(&self.servers).contains_key(id) {
            return Err(DriverError::Unknown(id.to_string()));
        }
        let path = self.instance_dir(id).join(CONSOLE_FILE);
        let text = match std::fs::read(&path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(match lines {
            None => text,
            Some(n) => {
                let all: Vec<&str> = text.lines().collect();
                let skip = all.len().saturating_sub(n as usize);
                let mut out = all[skip..].join("\n");
                out.push('\n');
                out
            }
        })
    }

    fn adopt<'a>(&'a self, spec: &'a Spawn, running: bool) -> DriverFuture<'a, ()> {
        Box::pin(self.adopt_one(spec, running))
    }

    fn snapshot<'a>(&'a self, id: &'a str) -> DriverFuture<'a, Option<PathBuf>> {
        Box::pin(async move {
            let shared = self.get(id)?;
            let inst = shared.lock().await;
            Self::copy_root(&inst).await.map(Some)
        })
    }

    fn subscribe(&self, events: EventSender) {
        *lock(&self.events) = Some(events);
    }

    fn retain<'a>(&'a self, keep: &'a [String]) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            let keep: HashSet<&str> = keep.iter().map(String::as_str).collect();
            let mut gone: Vec<String> = lock(&self.servers)
                .keys()
                .filter(|id| !keep.contains(id.as_str()))
                .cloned()
                .collect();
            for entry in std::fs::read_dir(&self.instances)?.flatten() {
                if let Some(id) = entry.file_name().to_str() {
                    if !keep.contains(id) && !gone.iter().any(|g| g == id) {
                        gone.push(id.to_string());
                    }
                }
            }
            for id in gone {
                tracing::info!(server = %id, "removing a leftover server");
                self.delete(&id).await?;
            }
            Ok(())
        })
    }
}
