//! Volumes attached to servers (os-volume_attachments): attach reserves the
//! volume (`attaching`) and a device, detach marks it `detaching`, a swap
//! moves a mapping to another volume (old `detaching`, new `attaching`, the
//! node copies the bytes and swaps the guest's backing); each tells the node,
//! and [`conclude`] finishes them when the node reports (`in-use` with a
//! Cinder attachment, or `available` again; a failure rolls back).
//!
//! A report names the volume or port it concerns ([`StateReport::subject`]);
//! one from an older node without it concludes the oldest pending mapping of
//! that kind.
//!
//! [`StateReport::subject`]: crate::protocol::StateReport::subject

use std::sync::Arc;

use super::bdm::{next_device, sync_volume_ids, volume_spec, Bdm, BdmState};
use super::create::new_action;
use super::lifecycle::conflict;
use super::model::Server;
use super::query::{check_locked, load};
use super::tables::SERVERS;
use super::{Call, Dispatch};
use crate::clock::now_micros;
use crate::compute::{Compute, Who};
use crate::error::{ApiError, ApiResult};
use crate::protocol::{Action, VmState};
use crate::store::WriteTxn;
use crate::volume::model::{Attachment, Volume, TYPES, VOLUMES};
use crate::volume::VolumeBackend;

/// The vm_states Nova attaches and detaches volumes in.
const VOLUME_STATES: &[VmState] = &[
    VmState::Active,
    VmState::Paused,
    VmState::Stopped,
    VmState::Resized,
    VmState::Shelved,
    VmState::ShelvedOffloaded,
];

/// The vm_states Nova swaps volumes in.
const SWAP_STATES: &[VmState] = &[VmState::Active, VmState::Paused, VmState::Resized];

/// A validated `volumeAttachment` body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttachVolume {
    pub volume_id: String,
    pub device: Option<String>,
    pub tag: Option<String>,
    pub delete_on_termination: bool,
    /// The request's microversion allows multiattach volumes (2.60).
    pub multiattach_ok: bool,
}

fn volume_nf(id: &str) -> ApiError {
    ApiError::NotFound(format!("Volume {id} could not be found."))
}

fn not_attached(server: &str, volume: &str) -> ApiError {
    ApiError::NotFound(format!(
        "Instance {server} is not attached to volume {volume}."
    ))
}

/// Whether the volume's type lets it attach to several servers.
fn type_allows_multiattach(w: &dyn crate::store::ReadTxn, v: &Volume) -> ApiResult<bool> {
    let Some(t) = TYPES.get(w, &v.volume_type_id)? else {
        return Ok(false);
    };
    Ok(t.extra_specs
        .get("multiattach")
        .and_then(|x| x.as_str())
        .is_some_and(|x| x.trim().eq_ignore_ascii_case("<is> True")))
}

/// The volume a caller may map to `s`: 404 when the caller cannot see it, 403
/// when it belongs to another project than the server's (an admin crossing
/// projects), 400 unless it can be reserved.
pub(crate) fn reservable(
    w: &dyn crate::store::ReadTxn,
    who: &Who,
    s: &Server,
    volume_id: &str,
    multiattach_ok: bool,
) -> ApiResult<Volume> {
    let v = VOLUMES
        .get(w, volume_id)?
        .filter(|v| who.admin || Some(&v.project_id) == who.project.as_ref())
        .ok_or_else(|| volume_nf(volume_id))?;
    if v.project_id != s.project_id {
        return Err(ApiError::Forbidden(format!(
            "Volume {volume_id} belongs to another project than instance {}; volumes cannot be attached across projects.",
            s.id
        )));
    }
    if s.bdms.iter().any(|b| b.volume_id == volume_id) {
        return Err(ApiError::BadRequest(format!(
            "Invalid volume: volume {volume_id} is already attached to instance {}.",
            s.id
        )));
    }
    if v.multiattach && !multiattach_ok {
        return Err(ApiError::BadRequest(
            "Multiattach volumes are only supported starting with compute API version 2.60.".into(),
        ));
    }
    let shared = v.status == "in-use" && v.multiattach && type_allows_multiattach(w, &v)?;
    if v.status != "available" && !shared {
        return Err(ApiError::BadRequest(format!(
            "Invalid volume: Volume {volume_id} status must be available or downloading to reserve, but the current status is {}.",
            v.status
        )));
    }
    Ok(v)
}

/// Marks `v` reserved for an attach in the open transaction.
pub(crate) fn reserve(w: &mut dyn WriteTxn, mut v: Volume) -> ApiResult<()> {
    if v.status == "available" {
        v.status = "attaching".into();
    }
    v.updated_at = Some(crate::volume::now());
    VOLUMES.put(w, &v.id.clone(), &v)?;
    Ok(())
}

/// The node attached `b`: Cinder's attachment, and `in-use`.
fn complete_attach(w: &mut dyn WriteTxn, s: &Server, b: &mut Bdm) -> ApiResult<()> {
    b.state = BdmState::Attached;
    if let Some(mut v) = VOLUMES.get(w.as_read(), &b.volume_id)? {
        v.attachments.retain(|a| a.id != b.attachment_id);
        v.attachments.push(Attachment {
            id: b.attachment_id.clone(),
            server_id: s.id.clone(),
            host_name: s.host.clone(),
            device: Some(b.device.clone()),
            attached_at: crate::volume::now(),
        });
        v.status = "in-use".into();
        v.updated_at = Some(crate::volume::now());
        VOLUMES.put(w, &v.id.clone(), &v)?;
    }
    Ok(())
}

/// Takes the Cinder attachment `b` away; the volume is `available` when no
/// other remains (else `in-use`).
fn drop_attachment(w: &mut dyn WriteTxn, b: &Bdm) -> ApiResult<()> {
    if let Some(mut v) = VOLUMES.get(w.as_read(), &b.volume_id)? {
        v.attachments.retain(|a| a.id != b.attachment_id);
        v.status = if v.attachments.is_empty() {
            "available".into()
        } else {
            "in-use".into()
        };
        v.updated_at = Some(crate::volume::now());
        VOLUMES.put(w, &v.id.clone(), &v)?;
    }
    Ok(())
}

/// The index of the pending mapping a report concerns: the one for
/// `subject` when the report names it, else the first pending one.
fn pending(s: &Server, subject: Option<&str>, is: impl Fn(&Bdm) -> bool) -> Option<usize> {
    s.bdms
        .iter()
        .position(|b| is(b) && subject.is_none_or(|v| b.volume_id == v))
}

/// The node concluded a swap of mapping `i`: the mapping moves to the new
/// volume (old `available`, new `in-use`), or stays (both as they were).
fn conclude_swap(w: &mut dyn WriteTxn, s: &mut Server, i: usize, failed: bool) -> ApiResult<()> {
    let Some(new) = s.bdms[i].swapping_to.take() else {
        return Ok(());
    };
    if failed {
        set_status(w, &s.bdms[i].volume_id, "in-use")?;
        set_status(w, &new, "available")?;
        return Ok(());
    }
    let old = s.bdms[i].clone();
    drop_attachment(w, &old)?;
    let mut b = old;
    b.volume_id = new;
    b.attachment_id = uuid::Uuid::new_v4().to_string();
    complete_attach(w, s, &mut b)?;
    s.bdms[i] = b;
    Ok(())
}

fn set_status(w: &mut dyn WriteTxn, volume_id: &str, status: &str) -> ApiResult<()> {
    if let Some(mut v) = VOLUMES.get(w.as_read(), volume_id)? {
        v.status = status.into();
        v.updated_at = Some(crate::volume::now());
        VOLUMES.put(w, volume_id, &v)?;
    }
    Ok(())
}

/// Finishes the pending attach, detach or swap of a volume, the attach of a
/// port, or a snapshot, when the node concludes `action` about `subject`
/// (`fault` when it failed). Other actions are ignored.
pub(crate) fn conclude(
    w: &mut dyn WriteTxn,
    s: &mut Server,
    action: &str,
    subject: Option<&str>,
    fault: Option<&str>,
) -> ApiResult<()> {
    let failed = fault.is_some();
    match action {
        "attach_volume" => {
            let Some(i) = pending(s, subject, |b| b.state == BdmState::Attaching) else {
                return Ok(());
            };
            if failed {
                let b = s.bdms.remove(i);
                drop_attachment(w, &b)?;
            } else {
                let mut b = s.bdms[i].clone();
                complete_attach(w, s, &mut b)?;
                s.bdms[i] = b;
            }
        }
        "detach_volume" => {
            let Some(i) = pending(s, subject, |b| b.state == BdmState::Detaching) else {
                return Ok(());
            };
            if failed {
                s.bdms[i].state = BdmState::Attached;
                set_status(w, &s.bdms[i].volume_id.clone(), "in-use")?;
            } else {
                let b = s.bdms.remove(i);
                drop_attachment(w, &b)?;
            }
        }
        "swap_volume" => {
            let Some(i) = pending(s, subject, |b| b.swapping_to.is_some()) else {
                return Ok(());
            };
            conclude_swap(w, s, i, failed)?;
        }
        "spawn" if !failed => {
            for i in 0..s.bdms.len() {
                if s.bdms[i].state == BdmState::Attaching {
                    let mut b = s.bdms[i].clone();
                    complete_attach(w, s, &mut b)?;
                    s.bdms[i] = b;
                }
            }
        }
        "attach_port" => {
            let i = match subject {
                Some(p) => s.pending_ports.iter().position(|x| x == p),
                None => (!s.pending_ports.is_empty()).then_some(0),
            };
            let Some(i) = i else { return Ok(()) };
            let port = s.pending_ports.remove(i);
            if failed {
                super::interfaces::unplug(w, s, &port)?;
            }
        }
        "snapshot" => return super::snapshot::conclude(w, subject, fault),
        _ => return Ok(()),
    }
    sync_volume_ids(s);
    Ok(())
}

impl Compute {
    /// Where volume bytes live (the node is told the backing file's path).
    pub fn set_volume_backend(&self, b: Arc<dyn VolumeBackend>) {
        if let Ok(mut g) = self.volume_backend.write() {
            *g = Some(b);
        }
    }

    pub(crate) fn volume_backend(&self) -> Option<Arc<dyn VolumeBackend>> {
        self.volume_backend.read().ok().and_then(|g| g.clone())
    }

    /// Fills in the backing files of the volumes a call names.
    pub(crate) fn with_volume_paths(&self, mut call: Call) -> Call {
        let Some(b) = self.volume_backend() else {
            return call;
        };
        let path = |id: &str| b.path_of(id).map(|p| p.to_string_lossy().into_owned());
        match &mut call {
            Call::Spawn(spawn) => {
                for v in &mut spawn.volumes {
                    v.path = path(&v.volume_id);
                }
            }
            Call::Act(Action::AttachVolume { volume }) => volume.path = path(&volume.volume_id),
            Call::Act(Action::SwapVolume {
                old_volume_id,
                old_path,
                volume,
            }) => {
                *old_path = path(old_volume_id);
                volume.path = path(&volume.volume_id);
            }
            _ => {}
        }
        call
    }

    /// Removes the bytes of volumes deleted with their server.
    pub(crate) fn purge_volume_files(&self, ids: &[String]) {
        let Some(b) = self.volume_backend() else {
            return;
        };
        for id in ids {
            if let Err(e) = b.delete(id) {
                tracing::warn!(volume = %id, error = %e, "cannot remove a deleted volume's file");
            }
        }
    }

    /// Attaches a volume: returns the server, the new mapping and the node call.
    pub fn attach_volume(
        &self,
        who: &Who,
        server_id: &str,
        req: AttachVolume,
    ) -> ApiResult<(Server, Bdm, Vec<Dispatch>)> {
        let backend = self.volume_backend();
        let mut w = self.store.write()?;
        let mut s = load(w.as_read(), who, server_id)?;
        check_locked(who, &s)?;
        if !VOLUME_STATES.contains(&s.vm_state) || s.task_state.is_some() {
            return Err(conflict("attach_volume", &s));
        }
        let v = reservable(w.as_read(), who, &s, &req.volume_id, req.multiattach_ok)?;
        let mut b = Bdm::new(&v.id, next_device(&s, req.device.as_deref())?);
        b.tag = req.tag;
        b.delete_on_termination = req.delete_on_termination;
        reserve(&mut *w, v)?;
        let on_node = s.node.is_some() && s.vm_state != VmState::ShelvedOffloaded;
        let mut calls = Vec::new();
        if on_node {
            let spec = volume_spec(w.as_read(), &b, backend.as_deref())?;
            let call = Call::Act(Action::AttachVolume { volume: spec });
            calls.extend(self.call_for(w.as_read(), &s, call)?);
        } else {
            complete_attach(&mut *w, &s, &mut b)?;
        }
        s.bdms.push(b.clone());
        sync_volume_ids(&mut s);
        record(who, &mut s, "attach_volume", !on_node);
        SERVERS.put(&mut *w, server_id, &s)?;
        w.commit()?;
        Ok((s, b, calls))
    }

    /// Detaches a volume (the root volume stays).
    pub fn detach_volume(
        &self,
        who: &Who,
        server_id: &str,
        volume_id: &str,
    ) -> ApiResult<Vec<Dispatch>> {
        let mut w = self.store.write()?;
        let mut s = load(w.as_read(), who, server_id)?;
        check_locked(who, &s)?;
        if !VOLUME_STATES.contains(&s.vm_state) || s.task_state.is_some() {
            return Err(conflict("detach_volume", &s));
        }
        let i = s
            .bdms
            .iter()
            .position(|b| b.volume_id == volume_id)
            .ok_or_else(|| not_attached(server_id, volume_id))?;
        if s.bdms[i].boot_index == Some(0) {
            return Err(ApiError::BadRequest(
                "Cannot detach a root device volume".into(),
            ));
        }
        if s.bdms[i].state != BdmState::Attached || s.bdms[i].swapping_to.is_some() {
            return Err(ApiError::BadRequest(format!(
                "Invalid volume: Unable to detach volume {volume_id}: it is still being attached or already being detached."
            )));
        }
        let on_node = s.node.is_some() && s.vm_state != VmState::ShelvedOffloaded;
        let mut calls = Vec::new();
        if on_node {
            s.bdms[i].state = BdmState::Detaching;
            if let Some(mut v) = VOLUMES.get(w.as_read(), volume_id)? {
                v.status = "detaching".into();
                v.updated_at = Some(crate::volume::now());
                VOLUMES.put(&mut *w, volume_id, &v)?;
            }
            let call = Call::Act(Action::DetachVolume {
                volume_id: volume_id.to_string(),
            });
            calls.extend(self.call_for(w.as_read(), &s, call)?);
        } else {
            let b = s.bdms.remove(i);
            drop_attachment(&mut *w, &b)?;
            sync_volume_ids(&mut s);
        }
        record(who, &mut s, "detach_volume", !on_node);
        SERVERS.put(&mut *w, server_id, &s)?;
        w.commit()?;
        Ok(calls)
    }

    /// Cinder's `os-force_detach` dropped volume `volume_id`'s attachments to
    /// `servers`: their mappings go too, and the node of each server that
    /// runs is told to take the disk out.
    pub fn forget_volume(&self, volume_id: &str, servers: &[String]) -> ApiResult<Vec<Dispatch>> {
        let mut w = self.store.write()?;
        let mut calls = Vec::new();
        for id in servers {
            let Some(mut s) = SERVERS.get(w.as_read(), id)? else {
                continue;
            };
            let before = s.bdms.len();
            s.bdms.retain(|b| b.volume_id != volume_id);
            if s.bdms.len() == before {
                continue;
            }
            sync_volume_ids(&mut s);
            if s.node.is_some() && s.vm_state != VmState::ShelvedOffloaded {
                let call = Call::Act(Action::DetachVolume {
                    volume_id: volume_id.to_string(),
                });
                calls.extend(self.call_for(w.as_read(), &s, call)?);
            }
            s.updated_at = now_micros();
            SERVERS.put(&mut *w, id, &s)?;
        }
        w.commit()?;
        Ok(calls)
    }

    /// One mapping of a server's (404 when the volume is not attached).
    pub fn volume_attachment(
        &self,
        who: &Who,
        server_id: &str,
        volume_id: &str,
    ) -> ApiResult<(Server, Bdm)> {
        let s = self.server(who, server_id)?;
        let b = s
            .bdms
            .iter()
            .find(|b| b.volume_id == volume_id)
            .cloned()
            .ok_or_else(|| not_attached(server_id, volume_id))?;
        Ok((s, b))
    }

    /// `PUT os-volume_attachments/{id}` with the same volume: changes
    /// `delete_on_termination` (2.85). With another volume: a swap
    /// ([`Compute::swap_volume`]).
    pub fn update_volume_attachment(
        &self,
        who: &Who,
        server_id: &str,
        volume_id: &str,
        new_volume: &str,
        delete_on_termination: Option<bool>,
    ) -> ApiResult<Vec<Dispatch>> {
        if new_volume != volume_id {
            return self.swap_volume(who, server_id, volume_id, new_volume);
        }
        self.modify_server(who, server_id, |s| {
            check_locked(who, s)?;
            let b = s
                .bdms
                .iter_mut()
                .find(|b| b.volume_id == volume_id)
                .ok_or_else(|| not_attached(server_id, volume_id))?;
            if let Some(d) = delete_on_termination {
                b.delete_on_termination = d;
            }
            Ok(())
        })?;
        Ok(vec![])
    }

    /// Nova's swap volume: the attached `old` is replaced by `new` (available,
    /// not smaller); the node copies the bytes and swaps the guest's backing.
    /// 404 when a volume or the mapping is missing, 409 for the server's
    /// state or lock, 400 for volumes that cannot take part.
    pub fn swap_volume(
        &self,
        who: &Who,
        server_id: &str,
        old: &str,
        new: &str,
    ) -> ApiResult<Vec<Dispatch>> {
        let backend = self.volume_backend();
        let mut w = self.store.write()?;
        let old_v = VOLUMES
            .get(w.as_read(), old)?
            .ok_or_else(|| volume_nf(old))?;
        let new_v = VOLUMES
            .get(w.as_read(), new)?
            .ok_or_else(|| volume_nf(new))?;
        let mut s = load(w.as_read(), who, server_id)?;
        check_locked(who, &s)?;
        if !SWAP_STATES.contains(&s.vm_state) || s.task_state.is_some() {
            return Err(conflict("swap_volume", &s));
        }
        let i = s
            .bdms
            .iter()
            .position(|b| b.volume_id == old)
            .ok_or_else(|| {
                ApiError::NotFound(
                    "The volume was either invalid or not attached to the instance.".into(),
                )
            })?;
        let invalid = |why: String| ApiError::BadRequest(format!("Invalid volume: {why}"));
        if s.bdms[i].state != BdmState::Attached || s.bdms[i].swapping_to.is_some() {
            return Err(invalid(format!(
                "volume {old} is being attached, detached or swapped."
            )));
        }
        if old_v.attachments.len() > 1 || (new_v.multiattach && !new_v.attachments.is_empty()) {
            return Err(ApiError::BadRequest(
                "Swapping multi-attach volumes with more than one read/write attachment is not supported.".into(),
            ));
        }
        if !new_v.attachments.is_empty() {
            return Err(invalid(
                "new volume must be detached in order to swap.".into(),
            ));
        }
        if new_v.size < old_v.size {
            return Err(invalid(
                "New volume must be the same size or larger.".into(),
            ));
        }
        if new_v.project_id != s.project_id {
            return Err(ApiError::Forbidden(format!(
                "Volume {new} belongs to another project than instance {server_id}; volumes cannot be attached across projects."
            )));
        }
        if new_v.status != "available" {
            return Err(invalid(format!(
                "Volume {new} status must be available or downloading to reserve, but the current status is {}.",
                new_v.status
            )));
        }
        if old_v.status != "in-use" {
            return Err(invalid(format!(
                "Volume {old} status must be in-use to begin detaching, but the current status is {}.",
                old_v.status
            )));
        }
        let mut spec = volume_spec(w.as_read(), &s.bdms[i], backend.as_deref())?;
        spec.volume_id = new.to_string();
        spec.size_gb = new_v.size;
        let call = Call::Act(Action::SwapVolume {
            old_volume_id: old.to_string(),
            old_path: None,
            volume: spec,
        });
        let calls: Vec<Dispatch> = self.call_for(w.as_read(), &s, call)?.into_iter().collect();
        if calls.is_empty() {
            return Err(ApiError::Conflict(format!(
                "Cannot 'swap_volume' instance {server_id}: it is not on a host"
            )));
        }
        set_status(&mut *w, old, "detaching")?;
        set_status(&mut *w, new, "attaching")?;
        s.bdms[i].swapping_to = Some(new.to_string());
        record(who, &mut s, "swap_volume", false);
        SERVERS.put(&mut *w, server_id, &s)?;
        w.commit()?;
        Ok(calls)
    }
}

/// Records an instance action (finished at once when no node is involved).
pub(crate) fn record(who: &Who, s: &mut Server, action: &str, finished: bool) {
    let mut a = new_action(who, &s.project_id, action, &format!("compute_{action}"));
    if finished {
        for e in &mut a.events {
            e.finish_time = Some(now_micros());
            e.result = Some("Success".into());
        }
    }
    s.actions.push(a);
    s.updated_at = now_micros();
}
