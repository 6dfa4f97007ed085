//! The node agent: registers with the controller, heartbeats, serves the node API
//! ([`api`]), keeps its servers in memory, reports every state change at once,
//! and resyncs when the controller restarted (its boot id changed) or forgot the
//! node (heartbeat 404).
//!
//! The agent owns the per-server state machine; the [`Driver`] does the work.

pub mod api;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_controller::clock::now_micros;
use kiln_controller::protocol::{
    Action, Heartbeat, PowerState, Register, Registered, Resync, ResyncReply, Spawn, StateReport,
    VmState, CONTROLLER_PREFIX, VERSION,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::driver::{Driver, DriverEvent};

/// Who this node is and where it listens.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub node_id: String,
    pub host: String,
    pub az: String,
    /// This node's API base (`http://addr/kiln-node/v1/{node_id}`).
    pub url: String,
    /// This node's VXLAN endpoint (`--tunnel-ip`; the controller otherwise
    /// takes the host of `url`).
    pub tunnel_ip: Option<std::net::Ipv4Addr>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("controller unreachable: {0}")]
    Unreachable(String),
    #[error("controller answered {0}")]
    Status(u16),
    #[error("controller answer unreadable: {0}")]
    Garbled(String),
}

/// One server as the node holds it.
#[derive(Debug, Clone)]
pub struct Vm {
    pub spec: Spawn,
    pub vm_state: VmState,
    pub power_state: PowerState,
    /// An operation is running (a second one waits for the controller to retry).
    pub busy: bool,
    /// A driver event that arrived while busy: applied after the operation.
    pub pending: Option<DriverEvent>,
}

/// How long a snapshot upload may take (a disk of many GiB on a busy host).
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

pub struct Agent {
    pub id: NodeIdentity,
    controller: String,
    secret: String,
    pub driver: Arc<dyn Driver>,
    vms: Mutex<HashMap<String, Vm>>,
    http: ureq::Agent,
    boot: Mutex<Option<String>>,
    /// The driver's unsolicited state changes, until [`Agent::watch_driver`]
    /// takes them.
    events: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<DriverEvent>>>,
}

/// The state a successful action leaves the server in.
pub fn after(action: &Action, vm: VmState, power: PowerState) -> (VmState, PowerState) {
    use PowerState as P;
    use VmState as V;
    let running = power == P::Running;
    match action {
        Action::Stop => (V::Stopped, P::Shutdown),
        Action::Start | Action::Reboot { .. } | Action::Unpause | Action::Resume => {
            (V::Active, P::Running)
        }
        Action::Pause => (V::Paused, P::Paused),
        Action::Suspend => (V::Suspended, P::Suspended),
        Action::Rebuild { .. } => {
            if vm == V::Stopped {
                (V::Stopped, P::Shutdown)
            } else {
                (V::Active, P::Running)
            }
        }
        Action::Resize { .. } => (V::Resized, power),
        Action::ConfirmResize | Action::RevertResize { .. } => {
            if running {
                (V::Active, P::Running)
            } else {
                (V::Stopped, P::Shutdown)
            }
        }
        Action::ShelveOffload => (V::ShelvedOffloaded, P::Shutdown),
        Action::AttachVolume { .. }
        | Action::DetachVolume { .. }
        | Action::AttachPort { .. }
        | Action::DetachPort { .. }
        | Action::Snapshot { .. }
        | Action::SwapVolume { .. } => (vm, power),
    }
}

impl Agent {
    pub fn new(
        id: NodeIdentity,
        controller: &str,
        secret: &str,
        driver: Arc<dyn Driver>,
    ) -> Arc<Self> {
        let http: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        driver.subscribe(tx);
        Arc::new(Agent {
            id,
            controller: controller.trim_end_matches('/').to_string(),
            secret: secret.to_string(),
            driver,
            vms: Mutex::new(HashMap::new()),
            http,
            boot: Mutex::new(None),
            events: Mutex::new(Some(rx)),
        })
    }

    /// Reports the driver's unsolicited state changes (a guest powered off, a
    /// VMM died) as they come, until the driver goes away. Call once.
    pub fn watch_driver(self: &Arc<Self>) {
        let rx = self.events.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut rx) = rx else { return };
        let agent = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let Some(agent) = agent.upgrade() else { return };
                agent.on_event(ev).await;
            }
        });
    }

    async fn on_event(&self, ev: DriverEvent) {
        let report = {
            let mut vms = self.vms();
            let Some(vm) = vms.get_mut(&ev.server_id) else {
                return;
            };
            if vm.busy {
                vm.pending = Some(ev);
                return;
            }
            tracing::warn!(server = %ev.server_id, state = ?ev.vm_state, fault = ?ev.fault, "guest changed state on its own");
            vm.vm_state = ev.vm_state;
            vm.power_state = ev.power_state;
            self.report_of(&ev.server_id, vm, None, ev.fault)
        };
        self.report(report).await;
    }

    fn vms(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vm>> {
        // A panic while holding the lock aborts the process (panic = abort), so
        // a poisoned lock cannot be observed; recover the guard regardless.
        self.vms.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn server_count(&self) -> usize {
        self.vms().len()
    }

    /// POSTs JSON to the controller (on the blocking pool).
    async fn call<B, R>(&self, path: String, body: B) -> Result<R, AgentError>
    where
        B: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
    {
        let url = format!("{}{path}", self.controller);
        let http = self.http.clone();
        let bearer = format!("Bearer {}", self.secret);
        tokio::task::spawn_blocking(move || {
            let mut resp = http
                .post(&url)
                .header("Authorization", &bearer)
                .send_json(&body)
                .map_err(|e| AgentError::Unreachable(e.to_string()))?;
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                return Err(AgentError::Status(status));
            }
            if status == 204 {
                return serde_json::from_str("null")
                    .map_err(|e| AgentError::Garbled(e.to_string()));
            }
            resp.body_mut()
                .read_json::<R>()
                .map_err(|e| AgentError::Garbled(e.to_string()))
        })
        .await
        .map_err(|e| AgentError::Unreachable(e.to_string()))?
    }

    fn node_path(&self, rest: &str) -> String {
        format!("{CONTROLLER_PREFIX}/{}{rest}", self.id.node_id)
    }

    pub async fn register(&self) -> Result<Registered, AgentError> {
        let cap = self.driver.capacity();
        let reg = Register {
            node_id: self.id.node_id.clone(),
            host: self.id.host.clone(),
            vcpus: cap.vcpus,
            ram_mb: cap.ram_mb,
            disk_gb: cap.disk_gb,
            az: self.id.az.clone(),
            capabilities: vec![],
            driver: self.driver.name().to_string(),
            protocol: VERSION,
            url: self.id.url.clone(),
            tunnel_ip: self.id.tunnel_ip.map(|t| t.to_string()),
        };
        let r: Registered = self.call(CONTROLLER_PREFIX.to_string(), reg).await?;
        Ok(r)
    }

    /// Registers (retrying until the controller answers) and resyncs.
    pub async fn join(self: &Arc<Self>) -> Registered {
        loop {
            match self.register().await {
                Ok(r) => {
                    if let Err(e) = self.resync().await {
                        tracing::warn!(node = %self.id.node_id, error = %e, "resync failed");
                    }
                    *self.boot.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(r.controller_boot.clone());
                    return r;
                }
                Err(e) => {
                    tracing::warn!(node = %self.id.node_id, error = %e, "cannot register yet");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Heartbeats forever; re-registers and resyncs when the controller changed.
    pub async fn heartbeat_loop(self: Arc<Self>, mut every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            let hb = Heartbeat {
                servers: self.server_count() as u64,
            };
            match self
                .call::<_, Registered>(self.node_path("/heartbeat"), hb)
                .await
            {
                Ok(r) => {
                    every = Duration::from_secs(r.heartbeat_secs.max(1));
                    let known = self.boot.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if known.as_deref() != Some(r.controller_boot.as_str()) {
                        tracing::info!(node = %self.id.node_id, "controller restarted: resyncing");
                        self.join().await;
                    }
                }
                Err(AgentError::Status(404)) => {
                    self.join().await;
                }
                Err(e) => tracing::warn!(node = %self.id.node_id, error = %e, "heartbeat failed"),
            }
        }
    }

    fn report_of(
        &self,
        id: &str,
        vm: &Vm,
        concludes: Option<&str>,
        fault: Option<String>,
    ) -> StateReport {
        StateReport {
            server_id: id.to_string(),
            vm_state: vm.vm_state,
            power_state: vm.power_state,
            task_state: None,
            fault,
            concludes: concludes.map(str::to_string),
            console_available: true,
            at: now_micros(),
            subject: None,
        }
    }

    /// Sends a report, retrying briefly (a later resync repairs anything lost).
    pub async fn report(&self, r: StateReport) {
        let path = self.node_path(&format!("/servers/{}/state", r.server_id));
        for attempt in 0..5u32 {
            match self.call::<_, ()>(path.clone(), r.clone()).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(server = %r.server_id, error = %e, attempt, "state report failed");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
    }

    async fn resync(&self) -> Result<(), AgentError> {
        let servers: Vec<StateReport> = {
            let vms = self.vms();
            vms.iter()
                .map(|(id, vm)| self.report_of(id, vm, None, None))
                .collect()
        };
        let reply: ResyncReply = self
            .call(self.node_path("/resync"), Resync { servers })
            .await?;
        for a in reply.adopt {
            let running = a.power_state == PowerState::Running;
            let adopted = self.driver.adopt(&a.spawn, running).await;
            let id = a.spawn.server_id.clone();
            let mut vm = Vm {
                spec: a.spawn,
                vm_state: a.vm_state,
                power_state: a.power_state,
                busy: false,
                pending: None,
            };
            let fault = match adopted {
                Ok(()) => None,
                Err(e) => {
                    tracing::warn!(server = %id, error = %e, "cannot adopt");
                    vm.vm_state = VmState::Error;
                    vm.power_state = PowerState::NoState;
                    Some(format!(
                        "cannot take the server back after a node restart: {e}"
                    ))
                }
            };
            let report = self.report_of(&id, &vm, Some("spawn"), fault);
            self.vms().insert(id, vm);
            self.report(report).await;
        }
        for id in reply.forget {
            let _ = self.driver.delete(&id).await;
            self.vms().remove(&id);
        }
        let keep: Vec<String> = self.vms().keys().cloned().collect();
        if let Err(e) = self.driver.retain(&keep).await {
            tracing::warn!(node = %self.id.node_id, error = %e, "cannot remove leftovers");
        }
        Ok(())
    }

    /// Builds a server and reports the outcome.
    pub async fn spawn(self: Arc<Self>, spec: Spawn) {
        let id = spec.server_id.clone();
        {
            let mut vms = self.vms();
            if vms
                .get(&id)
                .is_some_and(|v| v.vm_state != VmState::ShelvedOffloaded)
            {
                return;
            }
            vms.insert(
                id.clone(),
                Vm {
                    spec: spec.clone(),
                    vm_state: VmState::Building,
                    power_state: PowerState::NoState,
                    busy: true,
                    pending: None,
                },
            );
        }
        let result = self.driver.spawn(&spec).await;
        let (report, late) = {
            let mut vms = self.vms();
            match result {
                Ok(()) => {
                    let Some(vm) = vms.get_mut(&id) else { return };
                    vm.vm_state = VmState::Active;
                    vm.power_state = PowerState::Running;
                    vm.busy = false;
                    (
                        self.report_of(&id, vm, Some("spawn"), None),
                        vm.pending.take(),
                    )
                }
                Err(e) => {
                    let Some(mut vm) = vms.remove(&id) else {
                        return;
                    };
                    vm.vm_state = VmState::Error;
                    (
                        self.report_of(&id, &vm, Some("spawn"), Some(e.to_string())),
                        None,
                    )
                }
            }
        };
        self.report(report).await;
        if let Some(ev) = late {
            self.on_event(ev).await;
        }
    }

    /// Runs an action and reports the state it leaves.
    pub async fn act(self: Arc<Self>, id: String, action: Action) {
        if let Action::Snapshot { image_id } = &action {
            return self.snapshot(id, image_id.clone()).await;
        }
        let before = {
            let mut vms = self.vms();
            let Some(vm) = vms.get_mut(&id) else { return };
            vm.busy = true;
            (vm.vm_state, vm.power_state)
        };
        let result = if matches!(action, Action::ShelveOffload) {
            self.driver.delete(&id).await
        } else {
            self.driver.act(&id, &action).await
        };
        let (report, late) = {
            let mut vms = self.vms();
            let Some(vm) = vms.get_mut(&id) else { return };
            vm.busy = false;
            let late = vm.pending.take();
            let report = match result {
                Ok(()) => {
                    let (v, p) = after(&action, before.0, before.1);
                    vm.vm_state = v;
                    vm.power_state = p;
                    let r = self.report_of(&id, vm, Some(action.name()), None);
                    if matches!(action, Action::ShelveOffload) {
                        vms.remove(&id);
                    }
                    r
                }
                Err(e) => self.report_of(&id, vm, Some(action.name()), Some(e.to_string())),
            };
            (report, late)
        };
        let mut report = report;
        report.subject = action.subject().map(str::to_string);
        self.report(report).await;
        if let Some(ev) = late {
            self.on_event(ev).await;
        }
    }

    /// createImage on this node: the driver's copy of the root disk, a
    /// report that the upload is pending, the upload, then the report that
    /// concludes the snapshot (naming the image; a fault when it failed, and
    /// the controller deletes the image).
    async fn snapshot(self: Arc<Self>, id: String, image_id: String) {
        {
            let mut vms = self.vms();
            let Some(vm) = vms.get_mut(&id) else { return };
            vm.busy = true;
        }
        let result = self.snapshot_upload(&id, &image_id).await;
        if let Err(e) = &result {
            tracing::warn!(server = %id, image = %image_id, error = %e, "snapshot failed");
        }
        let (mut report, late) = {
            let mut vms = self.vms();
            let Some(vm) = vms.get_mut(&id) else { return };
            vm.busy = false;
            (
                self.report_of(&id, vm, Some("snapshot"), result.err()),
                vm.pending.take(),
            )
        };
        report.subject = Some(image_id);
        self.report(report).await;
        if let Some(ev) = late {
            self.on_event(ev).await;
        }
    }

    async fn snapshot_upload(&self, id: &str, image_id: &str) -> Result<(), String> {
        let copy = self.driver.snapshot(id).await.map_err(|e| e.to_string())?;
        let pending = {
            let vms = self.vms();
            vms.get(id).map(|vm| self.report_of(id, vm, None, None))
        };
        if let Some(mut r) = pending {
            r.task_state = Some("image_pending_upload".into());
            self.report(r).await;
        }
        let uploaded = self.upload_image(image_id, copy.clone()).await;
        if let Some(p) = copy {
            if let Err(e) = std::fs::remove_file(&p) {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove a snapshot copy");
            }
        }
        uploaded
    }

    /// Streams `file` (nothing when `None`) to the controller as image
    /// `image_id`'s data.
    async fn upload_image(&self, image_id: &str, file: Option<PathBuf>) -> Result<(), String> {
        let url = format!(
            "{}{}",
            self.controller,
            self.node_path(&format!("/images/{image_id}/file"))
        );
        let http = self.http.clone();
        let bearer = format!("Bearer {}", self.secret);
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let req = http
                .put(&url)
                .config()
                .timeout_global(Some(UPLOAD_TIMEOUT))
                .build()
                .header("Authorization", &bearer)
                .header("Content-Type", "application/octet-stream");
            let sent = match file {
                Some(p) => {
                    let f = std::fs::File::open(&p)
                        .map_err(|e| format!("cannot open the disk copy: {e}"))?;
                    req.send(ureq::SendBody::from_owned_reader(f))
                }
                None => req.send(&[][..]),
            };
            let resp = sent.map_err(|e| format!("the image upload failed: {e}"))?;
            let status = resp.status().as_u16();
            if (200..300).contains(&status) {
                Ok(())
            } else {
                Err(format!("the controller refused the image upload: {status}"))
            }
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Destroys a server and reports it gone.
    pub async fn delete(self: Arc<Self>, id: String) {
        let _ = self.driver.delete(&id).await;
        let vm = self.vms().remove(&id);
        let spec_name = vm.map(|v| v.spec.name).unwrap_or_default();
        tracing::debug!(server = %id, name = %spec_name, "deleted");
        let report = StateReport {
            server_id: id,
            vm_state: VmState::Deleted,
            power_state: PowerState::NoState,
            task_state: None,
            fault: None,
            concludes: Some("delete".into()),
            console_available: false,
            at: now_micros(),
            subject: None,
        };
        self.report(report).await;
    }

    pub fn knows(&self, id: &str) -> bool {
        self.vms().contains_key(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_leave_nova_states() {
        use PowerState as P;
        use VmState as V;
        assert_eq!(
            after(&Action::Stop, V::Active, P::Running),
            (V::Stopped, P::Shutdown)
        );
        assert_eq!(
            after(&Action::Pause, V::Active, P::Running),
            (V::Paused, P::Paused)
        );
        assert_eq!(
            after(
                &Action::Rebuild {
                    image: kiln_controller::protocol::ImageSpec {
                        id: "i".into(),
                        properties: Default::default()
                    }
                },
                V::Stopped,
                P::Shutdown
            ),
            (V::Stopped, P::Shutdown)
        );
        assert_eq!(
            after(&Action::ConfirmResize, V::Resized, P::Running),
            (V::Active, P::Running)
        );
        assert_eq!(
            after(&Action::Suspend, V::Active, P::Running),
            (V::Suspended, P::Suspended)
        );
    }
}
