//! Nova's deferred delete: with `reclaim_instance_interval` > 0 a `DELETE`
//! stops the guest and leaves the server `SOFT_DELETED` (claim, ports, volumes
//! and quota usage kept), `restore` starts it again, `forceDelete` deletes it
//! now, and a periodic task ([`spawn_reclaimer`]) deletes the ones soft-deleted
//! longer than the interval.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::lifecycle::finish_delete;
use super::model::Server;
use super::tables::SERVERS;
use super::{Call, Dispatch};
use crate::clock::now_micros;
use crate::compute::Compute;
use crate::error::ApiResult;
use crate::protocol::{Action, PowerState, VmState};

/// The task a soft delete runs while the node stops the guest (Nova's
/// `task_states.SOFT_DELETING`).
pub const SOFT_DELETING: &str = "soft-deleting";
/// The task a restore runs while the node starts the guest.
pub const RESTORING: &str = "restoring";

/// The longest the reclaimer sleeps between two looks (Nova runs its
/// `_reclaim_queued_deletes` every interval; a long interval is looked at
/// more often so a restart does not delay reclaiming by a whole interval).
const MAX_TICK_SECS: u64 = 60;

/// Whether a `DELETE` of `s` soft-deletes it: Nova deletes outright a server
/// that never launched or is on no host (shelved offloaded).
pub(crate) fn applies(s: &Server) -> bool {
    s.vm_state == VmState::SoftDeleted || (s.launched_at.is_some() && s.node.is_some())
}

/// Soft-deletes `s` (the caller stores it): a guest that is off is
/// soft-deleted at once; else the node stops it first (the returned action).
/// Deleting a soft-deleted server again changes nothing.
pub(crate) fn begin(s: &mut Server) -> Option<Action> {
    if s.vm_state == VmState::SoftDeleted {
        return None;
    }
    s.deleted_at = Some(now_micros());
    if matches!(s.vm_state, VmState::Stopped | VmState::Shelved) {
        s.vm_state = VmState::SoftDeleted;
        s.power_state = PowerState::Shutdown;
        s.task_state = None;
        None
    } else {
        s.task_state = Some(SOFT_DELETING.into());
        Some(Action::Stop)
    }
}

/// `restore`: the guest is started again; the node's report makes it ACTIVE.
pub(crate) fn restore(s: &mut Server) -> Action {
    s.deleted_at = None;
    Action::Start
}

/// Whether a node's report concludes a soft delete's stop.
pub(crate) fn concludes_soft_delete(s: &Server, concludes: Option<&str>, failed: bool) -> bool {
    !failed && concludes == Some("stop") && s.task_state.as_deref() == Some(SOFT_DELETING)
}

impl Compute {
    /// Sets Nova's `reclaim_instance_interval` (seconds; 0 turns soft deletes off).
    pub fn set_reclaim_interval(&self, secs: u64) {
        self.reclaim_interval_secs.store(secs, Ordering::Relaxed);
    }

    pub fn reclaim_interval(&self) -> u64 {
        self.reclaim_interval_secs.load(Ordering::Relaxed)
    }

    /// Deletes for good the servers soft-deleted at least the interval before
    /// `now` (microseconds); returns the node calls to make. Nothing when soft
    /// deletes are off.
    pub fn reclaim_expired(&self, now: i64) -> ApiResult<Vec<Dispatch>> {
        let interval = self.reclaim_interval();
        if interval == 0 {
            return Ok(vec![]);
        }
        let cutoff = now
            .saturating_sub(i64::try_from(interval.saturating_mul(1_000_000)).unwrap_or(i64::MAX));
        let mut w = self.store.write()?;
        let due: Vec<Server> = SERVERS
            .values(w.as_read())?
            .into_iter()
            .filter(|s| {
                s.vm_state == VmState::SoftDeleted
                    && s.task_state.is_none()
                    && s.deleted_at.is_none_or(|t| t <= cutoff)
            })
            .collect();
        let mut calls = Vec::new();
        let mut gone = Vec::new();
        for mut s in due {
            s.task_state = Some("deleting".into());
            match self.call_for(w.as_read(), &s, Call::Delete)? {
                Some(d) => {
                    calls.push(d);
                    SERVERS.put(&mut *w, &s.id.clone(), &s)?;
                }
                None => gone.extend(finish_delete(&mut *w, &s)?),
            }
        }
        w.commit()?;
        self.purge_volume_files(&gone);
        Ok(calls)
    }
}

/// Runs the reclaim periodically while soft deletes are on (a tokio task;
/// `None` when the interval is 0).
pub fn spawn_reclaimer(
    compute: Arc<Compute>,
    link: Arc<super::link::NodeLink>,
) -> Option<tokio::task::JoinHandle<()>> {
    let interval = compute.reclaim_interval();
    if interval == 0 {
        return None;
    }
    let tick = Duration::from_secs(interval.clamp(1, MAX_TICK_SECS));
    Some(tokio::spawn(async move {
        let mut timer = tokio::time::interval(tick);
        loop {
            timer.tick().await;
            let c = compute.clone();
            let calls = tokio::task::spawn_blocking(move || c.reclaim_expired(now_micros())).await;
            match calls {
                Ok(Ok(calls)) => super::link::deliver(compute.clone(), link.clone(), calls).await,
                Ok(Err(e)) => tracing::error!(error = %e, "reclaiming soft-deleted servers failed"),
                Err(e) => tracing::error!(error = %e, "the reclaim task failed"),
            }
        }
    }))
}
