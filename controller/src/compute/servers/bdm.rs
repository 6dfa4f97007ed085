//! A server's block device mappings for volumes: the stored [`Bdm`], the device
//! names (`/dev/vdb`, `/dev/vdc`, ... — the root disk is `vda`), what a node is
//! told about a volume ([`volume_spec`]), and what a deleted server leaves of its
//! volumes ([`release`]: detached, or deleted with `delete_on_termination`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::attachments::reservable;
use super::model::Server;
use crate::compute::Who;
use crate::error::{ApiError, ApiResult};
use crate::image::model::Image;
use crate::image::tables::IMAGES;
use crate::protocol::VolumeSpec;
use crate::store::{ReadTxn, Store, WriteTxn};
use crate::volume::model::{AVAILABILITY_ZONE, DEFAULT_TYPE_ID, SNAPSHOTS, VOLUMES};
use crate::volume::ops::check_quota;
use crate::volume::{VolError, Volume, VolumeBackend};

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
    /// The volume a swap (os-volume_attachments update) is moving this
    /// mapping to, until the node concludes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swapping_to: Option<String>,
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
            swapping_to: None,
        }
    }
}

/// Where a volume mapped at create comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum BdmSource {
    /// An existing volume.
    Volume(String),
    /// A new volume holding an image (`path`: the image's data file).
    Image { id: String, path: PathBuf },
    /// A new empty volume.
    Blank,
}

/// One `block_device_mapping_v2` entry with a volume destination.
#[derive(Debug, Clone, PartialEq)]
pub struct BdmReq {
    pub source: BdmSource,
    /// GiB, for new volumes.
    pub size_gb: Option<u64>,
    pub boot_index: Option<i64>,
    pub delete_on_termination: bool,
    pub device: Option<String>,
    pub tag: Option<String>,
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

/// A volume made for a server at create, to fill once the records are committed.
#[derive(Debug, Clone, PartialEq)]
pub struct NewVolume {
    pub id: String,
    pub size_gb: u64,
    /// The image whose bytes it starts with (else blank).
    pub image: Option<PathBuf>,
}

fn invalid_bdm(why: &str) -> ApiError {
    ApiError::BadRequest(format!("Block Device Mapping is Invalid: {why}"))
}

fn vol_error(e: VolError) -> ApiError {
    match e {
        VolError::OverLimit(m) | VolError::Forbidden(m) => ApiError::Forbidden(m),
        VolError::NotFound(m) | VolError::BadRequest(m) => ApiError::BadRequest(m),
        other => ApiError::Internal(other.to_string()),
    }
}

/// A new volume record for `s` (status `attaching`), within the volume quota.
fn new_volume(
    w: &mut dyn WriteTxn,
    s: &Server,
    size_gb: u64,
    image: Option<&Image>,
) -> ApiResult<Volume> {
    check_quota(w.as_read(), &s.project_id, "volumes", 1).map_err(vol_error)?;
    check_quota(
        w.as_read(),
        &s.project_id,
        "gigabytes",
        i64::try_from(size_gb).unwrap_or(i64::MAX),
    )
    .map_err(vol_error)?;
    let image_metadata = image.map(|i| {
        let mut m = serde_json::Map::new();
        m.insert("image_id".into(), i.id.clone().into());
        if let Some(n) = &i.name {
            m.insert("image_name".into(), n.clone().into());
        }
        for (k, v) in &i.properties {
            m.insert(k.clone(), v.clone().into());
        }
        m
    });
    let v = Volume {
        id: uuid::Uuid::new_v4().to_string(),
        name: Some(String::new()),
        description: None,
        project_id: s.project_id.clone(),
        user_id: s.user_id.clone(),
        status: "attaching".into(),
        size: size_gb,
        availability_zone: AVAILABILITY_ZONE.into(),
        bootable: image.is_some(),
        volume_type_id: DEFAULT_TYPE_ID.into(),
        snapshot_id: None,
        source_volid: None,
        metadata: serde_json::Map::new(),
        attachments: vec![],
        multiattach: false,
        created_at: crate::volume::now(),
        updated_at: None,
        image_metadata,
    };
    VOLUMES.put(w, &v.id.clone(), &v)?;
    Ok(v)
}

/// Maps the requested volumes onto the new server `s` in the open transaction:
/// existing ones reserved, new ones recorded. Returns the new volumes, whose
/// bytes [`fill`] writes after the commit.
pub(crate) fn map_at_create(
    w: &mut dyn WriteTxn,
    who: &Who,
    s: &mut Server,
    reqs: &[BdmReq],
) -> ApiResult<Vec<NewVolume>> {
    let mut made = Vec::new();
    let mut reqs: Vec<&BdmReq> = reqs.iter().collect();
    reqs.sort_by_key(|r| {
        r.boot_index
            .map_or(i64::MAX, |i| if i < 0 { i64::MAX } else { i })
    });
    for r in reqs {
        let root = r.boot_index == Some(0);
        let device = if root {
            "/dev/vda".to_string()
        } else {
            next_device(s, r.device.as_deref())?
        };
        let volume_id = match &r.source {
            BdmSource::Volume(id) => {
                let v = reservable(w.as_read(), who, s, id, true)?;
                if root && !v.bootable {
                    return Err(invalid_bdm(&format!("Volume {id} is not bootable.")));
                }
                super::attachments::reserve(w, v)?;
                id.clone()
            }
            BdmSource::Blank => {
                let size = r
                    .size_gb
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid_bdm("Blank volumes need a non-zero volume_size."))?;
                let v = new_volume(w, s, size, None)?;
                made.push(NewVolume {
                    id: v.id.clone(),
                    size_gb: size,
                    image: None,
                });
                v.id
            }
            BdmSource::Image { id, path } => {
                let img = IMAGES
                    .get(w.as_read(), id)?
                    .filter(|i| i.status == "active")
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!("Image {id} could not be found."))
                    })?;
                let size = r.size_gb.filter(|n| *n > 0).ok_or_else(|| {
                    invalid_bdm("Images with destination_type 'volume' need to have a non-zero size specified")
                })?;
                let need = img.size.unwrap_or(0).div_ceil(1 << 30).max(img.min_disk);
                if need > size {
                    return Err(ApiError::BadRequest(format!(
                        "Volume is smaller than the minimum size specified in image metadata. Volume size is {} bytes, minimum size is {} bytes.",
                        size << 30,
                        need << 30
                    )));
                }
                let v = new_volume(w, s, size, Some(&img))?;
                made.push(NewVolume {
                    id: v.id.clone(),
                    size_gb: size,
                    image: Some(path.clone()),
                });
                v.id
            }
        };
        let mut b = Bdm::new(&volume_id, device);
        b.boot_index = r.boot_index;
        b.tag = r.tag.clone();
        b.delete_on_termination = r.delete_on_termination;
        s.bdms.push(b);
    }
    sync_volume_ids(s);
    Ok(made)
}

/// Writes the bytes of volumes made at create; a volume whose bytes cannot be
/// written goes to `error`.
pub(crate) fn fill(store: &dyn Store, backend: &dyn VolumeBackend, made: &[NewVolume]) {
    for n in made {
        let r = match &n.image {
            Some(p) => backend.create_from_file(&n.id, p, n.size_gb),
            None => backend.create(&n.id, n.size_gb),
        };
        if let Err(e) = r {
            tracing::error!(volume = %n.id, error = %e, "cannot write a volume made at server create");
            let fix = || -> ApiResult<()> {
                let mut w = store.write()?;
                if let Some(mut v) = VOLUMES.get(w.as_read(), &n.id)? {
                    v.status = "error".into();
                    VOLUMES.put(&mut *w, &n.id, &v)?;
                }
                w.commit()?;
                Ok(())
            };
            if let Err(e) = fix() {
                tracing::error!(volume = %n.id, error = %e, "cannot record a volume error");
            }
        }
    }
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
