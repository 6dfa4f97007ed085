//! A server's block device mappings for volumes: the stored [`Bdm`], the device
//! names (`/dev/vdb`, `/dev/vdc`, ... — the root disk is `vda`), what a node is
//! told about a volume ([`volume_spec`]), and what a deleted server leaves of its
//! volumes ([`release`]: detached, or deleted with `delete_on_termination`).

use serde::{Deserialize, Serialize};

use super::model::Server;
use crate::error::{ApiError, ApiResult};
use crate::protocol::VolumeSpec;
use crate::store::{ReadTxn, WriteTxn};
use crate::volume::model::{SNAPSHOTS, VOLUMES};
use crate::volume::VolumeBackend;

/// Where a volume mapping stands between the controller and the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BdmState {
    /// Reserved; the node has not concluded the attach yet.
    Attaching,
    Attached,
    /// The node has not concluded the detach yet.
    Detaching,
}

/// One volume mapped to a server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bdm {
    /// Nova's `bdm_uuid`.
    pub id: String,
    pub volume_id: String,
    /// The Cinder attachment's id.
    pub attachment_id: String,
    pub device: String,
    pub tag: Option<String>,
    pub delete_on_termination: bool,
    /// 0 for the root volume of a server booted from a volume.
    pub boot_index: Option<i64>,
    pub state: BdmState,
}

impl Bdm {
    pub fn new(volume_id: &str, device: String) -> Bdm {
        Bdm {
            id: uuid::Uuid::new_v4().to_string(),
            volume_id: volume_id.to_string(),
            attachment_id: uuid::Uuid::new_v4().to_string(),
            device,
            tag: None,
            delete_on_termination: false,
            boot_index: None,
            state: BdmState::Attaching,
        }
    }
}

/// Whether `d` is a device path Nova accepts (`/dev/` and a name).
fn valid_device(d: &str) -> bool {
    d.strip_prefix("/dev/")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// The device name for a new volume on `s`: the one asked for when it is free,
/// else the first free `/dev/vdX` after the root disk.
pub fn next_device(s: &Server, asked: Option<&str>) -> ApiResult<String> {
    let taken = |d: &str| s.bdms.iter().any(|b| b.device == d) || d == "/dev/vda";
    if let Some(d) = asked.filter(|d| !d.is_empty()) {
        if !valid_device(d) {
            return Err(ApiError::BadRequest(format!(
                "The supplied device path ({d}) is invalid."
            )));
        }
        if taken(d) {
            return Err(ApiError::BadRequest(format!(
                "The supplied device path ({d}) is in use."
            )));
        }
        return Ok(d.to_string());
    }
    (b'b'..=b'z')
        .map(|c| format!("/dev/vd{}", c as char))
        .find(|d| !taken(d))
        .ok_or_else(|| ApiError::BadRequest("No free disk device names for prefix 'vd'".into()))
}

/// What a node is told about one mapped volume (its backing file when the
/// backend has one).
pub fn volume_spec(
    r: &dyn ReadTxn,
    b: &Bdm,
    backend: Option<&dyn VolumeBackend>,
) -> ApiResult<VolumeSpec> {
    let size_gb = VOLUMES
        .get(r, &b.volume_id)?
        .map(|v| v.size)
        .unwrap_or_default();
    Ok(VolumeSpec {
        volume_id: b.volume_id.clone(),
        device: b.device.clone(),
        size_gb,
        path: backend
            .and_then(|be| be.path_of(&b.volume_id))
            .map(|p| p.to_string_lossy().into_owned()),
    })
}

/// The volumes a node builds `s` with (all but those being detached); the
/// backing files are filled in by [`crate::compute::Compute::with_volume_paths`].
pub fn specs_of(r: &dyn ReadTxn, s: &Server) -> ApiResult<Vec<VolumeSpec>> {
    s.bdms
        .iter()
        .filter(|b| b.state != BdmState::Detaching)
        .map(|b| volume_spec(r, b, None))
        .collect()
}

/// Keeps `s.volumes` (what the views list) in step with `s.bdms`.
pub fn sync_volume_ids(s: &mut Server) {
    s.volumes = s.bdms.iter().map(|b| b.volume_id.clone()).collect();
}

/// A deleted server lets go of its volumes in the open transaction: each is
/// detached and `available` again, or deleted when `delete_on_termination` is
/// set (and it has no snapshots). Returns the ids whose bytes must go.
pub fn release(w: &mut dyn WriteTxn, s: &Server) -> ApiResult<Vec<String>> {
    let mut gone = Vec::new();
    for b in &s.bdms {
        let Some(mut v) = VOLUMES.get(w.as_read(), &b.volume_id)? else {
            continue;
        };
        v.attachments.retain(|a| a.server_id != s.id);
        let snapshots = SNAPSHOTS
            .values(w.as_read())?
            .iter()
            .any(|sn| sn.volume_id == v.id);
        if b.delete_on_termination && v.attachments.is_empty() && !snapshots {
            VOLUMES.delete(w, &v.id)?;
            gone.push(v.id.clone());
            continue;
        }
        v.status = if v.attachments.is_empty() {
            "available".into()
        } else {
            "in-use".into()
        };
        v.updated_at = Some(crate::volume::now());
        VOLUMES.put(w, &v.id.clone(), &v)?;
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn device_names_skip_the_root_and_taken_ones() {
        let mut s: Server = serde_json::from_value(serde_json::json!({
            "id": "s", "name": "n", "description": null, "project_id": "p", "user_id": "u",
            "image_ref": "", "flavor": {"id": "1", "name": "f", "ram": 1, "vcpus": 1, "disk": 1,
            "ephemeral": 0, "swap": 0}, "key_name": null, "key_data": null, "user_data": null,
            "metadata": {}, "tags": [], "az": null, "node": null, "host": null, "tried": [],
            "vm_state": "active", "task_state": null, "power_state": "running", "locked": false,
            "locked_by": null, "locked_reason": null, "access_ipv4": "", "access_ipv6": "",
            "config_drive": false, "security_groups": [], "vifs": [], "volumes": [], "fault": null,
            "reservation_id": "r", "launch_index": 0, "created_at": 0, "updated_at": 0,
            "launched_at": null, "terminated_at": null, "deleted_at": null,
            "scheduler_group": null, "actions": []
        }))
        .unwrap();
        assert_eq!(next_device(&s, None).unwrap(), "/dev/vdb");
        s.bdms.push(Bdm::new("v1", "/dev/vdb".into()));
        assert_eq!(next_device(&s, None).unwrap(), "/dev/vdc");
        assert_eq!(next_device(&s, Some("/dev/vdf")).unwrap(), "/dev/vdf");
        assert!(next_device(&s, Some("/dev/vdb"))
            .unwrap_err()
            .to_string()
            .contains("is in use"));
        assert!(next_device(&s, Some("/dev/vda")).is_err());
        assert!(next_device(&s, Some("vdq"))
            .unwrap_err()
            .to_string()
            .contains("invalid"));
        sync_volume_ids(&mut s);
        assert_eq!(s.volumes, vec!["v1".to_string()]);
    }
}
