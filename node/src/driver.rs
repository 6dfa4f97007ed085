//! The `Driver` trait: what a node agent needs from whatever runs guests — the
//! simulated driver ([`crate::sim`]) and the KVM runtime ([`crate::kvm`]). The
//! agent owns the state machine and the protocol; a driver does the work,
//! reports success or failure, and tells the agent through [`DriverEvent`]s
//! when a guest changed state on its own (it powered off, its VMM died).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use kiln_controller::protocol::{Action, PowerState, Spawn, VmState};

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("server {0} is not on this node")]
    Unknown(String),
    #[error("{0}")]
    Failed(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

pub type DriverResult<T> = Result<T, DriverError>;
pub type DriverFuture<'a, T> = Pin<Box<dyn Future<Output = DriverResult<T>> + Send + 'a>>;

/// A guest changed state without being asked (a clean power-off, a crash, a
/// dead VMM): the agent records it and reports it to the controller at once.
#[derive(Debug, Clone, PartialEq)]
pub struct DriverEvent {
    pub server_id: String,
    pub vm_state: VmState,
    pub power_state: PowerState,
    /// Why, when it is a failure (the controller records a fault).
    pub fault: Option<String>,
}

/// Where a driver sends its [`DriverEvent`]s (usable from any thread).
pub type EventSender = tokio::sync::mpsc::UnboundedSender<DriverEvent>;

/// A node's size as it registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub vcpus: u64,
    pub ram_mb: u64,
    pub disk_gb: u64,
}

pub trait Driver: Send + Sync + 'static {
    /// `sim` or `kvm` (sent at registration).
    fn name(&self) -> &'static str;
    fn capacity(&self) -> Capacity;
    /// Builds and boots a server.
    fn spawn<'a>(&'a self, spec: &'a Spawn) -> DriverFuture<'a, ()>;
    /// Applies a lifecycle action to a running server (`ShelveOffload` is a
    /// delete to the driver; the agent calls [`Driver::delete`] for it).
    fn act<'a>(&'a self, id: &'a str, action: &'a Action) -> DriverFuture<'a, ()>;
    /// Destroys a server and its local disks; unknown ids are not an error.
    fn delete<'a>(&'a self, id: &'a str) -> DriverFuture<'a, ()>;
    /// The last `lines` lines of the console log (all without a limit).
    fn console(&self, id: &str, lines: Option<u64>) -> DriverResult<String>;
    /// Takes a server back after an agent restart, in the given power state,
    /// without rebuilding it (a guest still running is kept as it is; one
    /// that should run and does not is started again).
    fn adopt<'a>(&'a self, spec: &'a Spawn, running: bool) -> DriverFuture<'a, ()>;
    /// Where to send unsolicited state changes (drivers without any ignore it).
    fn subscribe(&self, _events: EventSender) {}
    /// A point-in-time copy of a server's root disk for a snapshot, made
    /// with the guest paused only while the copy is taken; the agent uploads
    /// it and removes the file. `None`: the driver has no disk bytes (the
    /// simulated driver), the snapshot is empty.
    fn snapshot<'a>(&'a self, id: &'a str) -> DriverFuture<'a, Option<PathBuf>> {
        Box::pin(async move {
            Err(DriverError::Failed(format!(
                "the {} driver cannot snapshot server {id}",
                self.name()
            )))
        })
    }
    /// After a resync: removes every local server not in `keep` (leftovers
    /// of servers the controller no longer places here).
    fn retain<'a>(&'a self, _keep: &'a [String]) -> DriverFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
}
