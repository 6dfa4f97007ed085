//! Links through rtnetlink (bridges, veths, VXLAN, addresses, routes, FDB) and TAPs, and converging them to a desired state.
//!
//! - [`Links`] is an async rtnetlink connection bound to one network
//!   namespace ([`Links::open`] for the caller's, [`Links::open_in`] for a
//!   named one). Sync code runs async work through [`block_on`].
//! - [`tap`] creates TAPs through `/dev/net/tun` ioctls (netlink cannot).
//! - [`converge`] takes the desired links of this node's networks and makes
//!   the kernel match, removing kiln-owned leftovers.
//!
//! # Naming
//!
//! kiln owns every link whose name starts with one of these prefixes, and only
//! those (interface names are at most 15 bytes):
//!
//! | prefix  | link                          | made by                      |
//! |---------|-------------------------------|------------------------------|
//! | `kbr-`  | a tenant network's bridge     | [`names::bridge`] (network id) |
//! | `kvx-`  | a tenant network's VXLAN      | [`names::vxlan`] (network id)  |
//! | `ktap-` | a guest port's TAP            | [`names::tap`] (port id)       |
//!
//! Convergence deletes links with these prefixes that the desired state does
//! not name; it never touches any other link.

pub mod converge;
mod handle;
pub mod names;
mod state;
pub mod tap;

use std::future::Future;

pub use converge::{converge, Change, NetworkLinks, PortLinks, VxlanLinks};
pub use handle::{Links, VxlanConfig};
pub use state::{format_mac, LinkKind, LinkState, PortFlags, TunState, VxlanState};

/// What can go wrong talking to the kernel about links.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A netlink request was refused.
    #[error("netlink: {op}: {source}")]
    Netlink {
        /// What was being done.
        op: String,
        /// The kernel's (or rtnetlink's) answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// A link that must exist does not.
    #[error("no link named {0:?}")]
    NotFound(String),
    /// Opening a socket, a namespace or a runtime failed.
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// [`Links`] was opened outside a tokio runtime.
    #[error("rtnetlink needs a tokio runtime: call from async code or through link::block_on")]
    NoRuntime,
    /// A route request could not be built.
    #[error("invalid route: {0}")]
    InvalidRoute(String),
    /// A TAP operation failed.
    #[error(transparent)]
    Tap(#[from] tap::TapError),
    /// The desired state is not acceptable (e.g. a name without a kiln prefix).
    #[error("invalid desired state: {0}")]
    InvalidSpec(String),
    /// [`block_on`] was called from inside a tokio runtime.
    #[error("link::block_on called inside a tokio runtime: await the future instead")]
    InsideRuntime,
    /// Some networks could not be converged; the others were, and leftovers
    /// were still removed.
    #[error("converge failed for {}", describe_failures(.failures))]
    Converge {
        /// Bridge name and error of each network that failed.
        failures: Vec<(String, LinkError)>,
        /// The changes that were made anyway.
        changes: Vec<Change>,
    },
}

fn describe_failures(failures: &[(String, LinkError)]) -> String {
    failures
        .iter()
        .map(|(net, e)| format!("{net}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Run async link work from sync code on a private current-thread runtime.
/// Refused (not a panic) when called from inside a tokio runtime.
pub fn block_on<F: Future>(fut: F) -> Result<F::Output, LinkError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(LinkError::InsideRuntime);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LinkError::Io)?;
    Ok(rt.block_on(fut))
}
