//! The `Driver` trait: what a node agent needs from whatever runs guests — the
//! simulated driver ([`crate::sim`]) today, the KVM runtime (issue 8) next. The
//! agent owns the state machine and the protocol; a driver only does the work
//! and reports success or failure.

use std::future::Future;
use std::pin::Pin;

use kiln_controller::protocol::{Action, Spawn};

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
    /// without rebuilding it.
    fn adopt(&self, spec: &Spawn, running: bool) -> DriverResult<()>;
}
