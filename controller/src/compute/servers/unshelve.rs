//! Where an unshelve puts a server: Nova's rules for a chosen availability
//! zone (2.77, `null` unpins at 2.91) and a chosen host (2.91, admins), and
//! the scheduler's choice and claim for a shelved-offloaded server.

use super::create::{pick, NO_VALID_HOST};
use super::model::Server;
use super::tables::{project_key, BY_NODE};
use crate::compute::tables::NODES;
use crate::compute::Who;
use crate::error::{ApiError, ApiResult};
use crate::protocol::VmState;
use crate::store::WriteTxn;

/// What the unshelve body asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Target {
    /// `None`: not given; `Some(None)`: `null` (any zone, 2.91).
    pub az: Option<Option<String>>,
    /// A host name (2.91, admins only).
    pub host: Option<String>,
}

/// Unshelving onto a chosen host is for admins (the caller checks it first).
pub fn check_policy(who: &Who, target: &Target) -> ApiResult<()> {
    if target.host.is_some() && !who.admin {
        return Err(ApiError::Forbidden(
            "Policy doesn't allow os_compute_api:os-shelve:unshelve_to_host to be performed."
                .into(),
        ));
    }
    Ok(())
}

/// Checks `target` against `s` and the nodes, and places `s` if it is on no
/// host (claiming there); the server's zone follows its new node.
pub(crate) fn place(w: &mut dyn WriteTxn, s: &mut Server, target: &Target) -> ApiResult<()> {
    if (target.az.is_some() || target.host.is_some()) && s.vm_state != VmState::ShelvedOffloaded {
        return Err(ApiError::Conflict(format!(
            "Specifying an availability zone or a host when unshelving server \"{}\" with status \"{}\" is not supported. The server status must be SHELVED_OFFLOADED.",
            s.id,
            s.status()
        )));
    }
    let mut nodes = NODES.values(w.as_read())?;
    let host_az = match &target.host {
        Some(h) => match nodes.iter().find(|n| n.host == *h) {
            Some(n) => Some(n.az.clone()),
            None => {
                return Err(ApiError::BadRequest(format!(
                    "Compute host {h} could not be found."
                )))
            }
        },
        None => None,
    };
    if let Some(Some(az)) = &target.az {
        if !nodes.iter().any(|n| n.enabled && n.az == *az) {
            return Err(ApiError::BadRequest(
                "The requested availability zone is not available".into(),
            ));
        }
        if let (Some(h), Some(haz)) = (&target.host, &host_az) {
            if haz != az {
                return Err(ApiError::Conflict(format!(
                    "Host \"{h}\" is not in the availability zone \"{az}\"."
                )));
            }
        }
    }
    if let Some(az) = &target.az {
        s.pinned_az = az.clone();
    }
    if s.node.is_some() {
        return Ok(());
    }
    let mut demand = s.demand();
    demand.az = s.pinned_az.clone();
    demand.host = target.host.clone();
    let Some(node) = pick(&mut nodes, &demand, &[]) else {
        return Err(ApiError::Conflict(NO_VALID_HOST.into()));
    };
    let node = node.clone();
    NODES.put(w, &node.id, &node)?;
    BY_NODE.put(w, &project_key(&node.id, &s.id), &())?;
    s.node = Some(node.id.clone());
    s.host = Some(node.host.clone());
    s.az = Some(node.az.clone());
    Ok(())
}
