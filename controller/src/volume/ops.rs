//! Volume, snapshot, type and quota operations, and attach/detach for Nova.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::backend::VolumeBackend;
use super::model::{
    default_type, Attachment, Snapshot, Volume, VolumeType, AVAILABILITY_ZONE, DEFAULT_TYPE_ID,
    QUOTAS, SNAPSHOTS, TYPES, VOLUMES,
};
use super::{now, VolError, VolResult};
use crate::identity::model::TokenRecord;
use crate::identity::policy::{self, Action, Resource};
use crate::store::{ReadTxn, Store, WriteTxn};

/// The caller as the volume service sees it.
#[derive(Debug, Clone)]
pub struct VCtx {
    pub project_id: String,
    pub user_id: String,
    pub admin: bool,
    pub writer: bool,
}

impl VCtx {
    pub fn from_token(t: &TokenRecord) -> VCtx {
        let project_id = t.scope.project_id().unwrap_or_default().to_string();
        VCtx {
            admin: policy::is_admin(t),
            writer: policy::allowed(t, Action::Write, Resource::Project(&project_id)),
            user_id: t.user_id.clone(),
            project_id,
        }
    }

    fn owns(&self, project: &str) -> bool {
        self.admin || self.project_id == project
    }

    fn write_ok(&self) -> VolResult<()> {
        if self.writer && !self.project_id.is_empty() || self.admin {
            Ok(())
        } else {
            Err(VolError::Forbidden(
                "Policy doesn't allow this operation to be performed.".into(),
            ))
        }
    }

    pub fn require_admin(&self) -> VolResult<()> {
        if self.admin {
            Ok(())
        } else {
            Err(VolError::Forbidden(
                "Policy doesn't allow this operation to be performed.".into(),
            ))
        }
    }
}

fn commit<T>(store: &dyn Store, f: impl FnOnce(&mut dyn WriteTxn) -> VolResult<T>) -> VolResult<T> {
    let mut w = store.write()?;
    let out = f(&mut *w)?;
    w.commit()?;
    Ok(out)
}

fn vol_nf(id: &str) -> VolError {
    VolError::NotFound(format!("Volume {id} could not be found."))
}

fn snap_nf(id: &str) -> VolError {
    VolError::NotFound(format!("Snapshot {id} could not be found."))
}

pub fn find_volume(r: &dyn ReadTxn, ctx: &VCtx, id: &str) -> VolResult<Volume> {
    VOLUMES
        .get(r, id)?
        .filter(|v| ctx.owns(&v.project_id))
        .ok_or_else(|| vol_nf(id))
}

pub fn find_snapshot(r: &dyn ReadTxn, ctx: &VCtx, id: &str) -> VolResult<Snapshot> {
    SNAPSHOTS
        .get(r, id)?
        .filter(|v| ctx.owns(&v.project_id))
        .ok_or_else(|| snap_nf(id))
}

/// The volumes the caller sees: its project's; every project's for an admin
/// asking `all_tenants`.
pub fn list_volumes(store: &dyn Store, ctx: &VCtx, all: bool) -> VolResult<Vec<Volume>> {
    let r = store.read()?;
    Ok(VOLUMES
        .values(&*r)?
        .into_iter()
        .filter(|v| v.project_id == ctx.project_id || (ctx.admin && all))
        .collect())
}

pub fn list_snapshots(store: &dyn Store, ctx: &VCtx, all: bool) -> VolResult<Vec<Snapshot>> {
    let r = store.read()?;
    Ok(SNAPSHOTS
        .values(&*r)?
        .into_iter()
        .filter(|v| v.project_id == ctx.project_id || (ctx.admin && all))
        .collect())
}

// ---- types ----

pub fn types(store: &dyn Store) -> VolResult<Vec<VolumeType>> {
    let r = store.read()?;
    let mut out = vec![default_type()];
    out.extend(TYPES.values(&*r)?);
    Ok(out)
}

/// A type by id or name.
pub fn find_type(r: &dyn ReadTxn, key: &str) -> VolResult<VolumeType> {
    let d = default_type();
    if key == d.id || key == d.name || key == "default" {
        return Ok(d);
    }
    if let Some(t) = TYPES.get(r, key)? {
        return Ok(t);
    }
    TYPES
        .values(r)?
        .into_iter()
        .find(|t| t.name == key)
        .ok_or_else(|| VolError::NotFound(format!("Volume type {key} could not be found.")))
}

#[derive(Debug, Deserialize)]
pub struct TypeCreate {
    pub name: String,
    pub description: Option<String>,
    #[serde(rename = "os-volume-type-access:is_public")]
    pub is_public: Option<bool>,
    pub extra_specs: Option<Map<String, Value>>,
}

pub fn create_type(store: &dyn Store, ctx: &VCtx, b: TypeCreate) -> VolResult<VolumeType> {
    ctx.require_admin()?;
    if b.name.trim().is_empty() || b.name.len() > 255 {
        return Err(VolError::BadRequest(
            "Invalid input received: name must be 1-255 characters.".into(),
        ));
    }
    commit(store, |w| {
        if find_type(w.as_read(), &b.name).is_ok() {
            return Err(VolError::Conflict(format!(
                "Volume Type {} already exists.",
                b.name
            )));
        }
        let t = VolumeType {
            id: uuid::Uuid::new_v4().to_string(),
            name: b.name,
            description: b.description,
            is_public: b.is_public.unwrap_or(true),
            extra_specs: b.extra_specs.unwrap_or_default(),
        };
        TYPES.put(w, &t.id, &t)?;
        Ok(t)
    })
}

pub fn delete_type(store: &dyn Store, ctx: &VCtx, id: &str) -> VolResult<()> {
    ctx.require_admin()?;
    commit(store, |w| {
        let t = find_type(w.as_read(), id)?;
        if t.id == DEFAULT_TYPE_ID {
            return Err(VolError::BadRequest(
                "Default volume type can not be deleted.".into(),
            ));
        }
        if VOLUMES
            .values(w.as_read())?
            .iter()
            .any(|v| v.volume_type_id == t.id)
        {
            return Err(VolError::BadRequest(format!(
                "Target volume type is still in use. Volume type {} is in use.",
                t.id
            )));
        }
        TYPES.delete(w, &t.id)?;
        Ok(())
    })
}

// ---- quotas ----

pub const QUOTA_DEFAULTS: &[(&str, i64)] = &[
    ("volumes", 10),
    ("snapshots", 10),
    ("gigabytes", 1000),
    ("backups", 10),
    ("backup_gigabytes", 1000),
    ("per_volume_gigabytes", -1),
    ("groups", 10),
];

pub fn quota_limits(r: &dyn ReadTxn, project: &str) -> VolResult<BTreeMap<String, i64>> {
    let mut out: BTreeMap<String, i64> = QUOTA_DEFAULTS
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    if let Some(over) = QUOTAS.get(r, project)? {
        out.extend(over);
    }
    Ok(out)
}

/// (volumes, snapshots, gigabytes) a project uses.
pub fn usage(r: &dyn ReadTxn, project: &str) -> VolResult<BTreeMap<String, i64>> {
    let vols: Vec<Volume> = VOLUMES
        .values(r)?
        .into_iter()
        .filter(|v| v.project_id == project)
        .collect();
    let snaps: Vec<Snapshot> = SNAPSHOTS
        .values(r)?
        .into_iter()
        .filter(|v| v.project_id == project)
        .collect();
    let gb: u64 =
        vols.iter().map(|v| v.size).sum::<u64>() + snaps.iter().map(|s| s.size).sum::<u64>();
    let mut u = BTreeMap::new();
    u.insert("volumes".into(), vols.len() as i64);
    u.insert("snapshots".into(), snaps.len() as i64);
    u.insert("gigabytes".into(), i64::try_from(gb).unwrap_or(i64::MAX));
    Ok(u)
}

pub fn check_quota(r: &dyn ReadTxn, project: &str, what: &str, adding: i64) -> VolResult<()> {
    let lim = quota_limits(r, project)?;
    let limit = lim.get(what).copied().unwrap_or(-1);
    if limit < 0 {
        return Ok(());
    }
    let used = usage(r, project)?.get(what).copied().unwrap_or(0);
    if used + adding > limit {
        let msg = match what {
            "gigabytes" => format!(
                "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. Requested {adding}G, quota is {limit}G and {used}G has been consumed."
            ),
            "snapshots" => format!("Maximum number of snapshots allowed ({limit}) exceeded"),
            _ => format!("VolumeLimitExceeded: Maximum number of volumes allowed ({limit}) exceeded for quota '{what}'."),
        };
        return Err(VolError::OverLimit(msg));
    }
    Ok(())
}

pub fn set_quotas(
    store: &dyn Store,
    ctx: &VCtx,
    project: &str,
    body: &Map<String, Value>,
) -> VolResult<BTreeMap<String, i64>> {
    ctx.require_admin()?;
    commit(store, |w| {
        let mut over = QUOTAS.get(w.as_read(), project)?.unwrap_or_default();
        for (k, v) in body {
            if !QUOTA_DEFAULTS.iter().any(|(n, _)| n == k) {
                return Err(VolError::BadRequest(format!(
                    "Bad key(s) in quota set: {k}"
                )));
            }
            let n = v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .filter(|n| *n >= -1)
                .ok_or_else(|| {
                    VolError::BadRequest(format!(
                        "Invalid input received: quota value for {k} must be an integer >= -1."
                    ))
                })?;
            over.insert(k.clone(), n);
        }
        QUOTAS.put(w, project, &over)?;
        quota_limits(w.as_read(), project)
    })
}

// ---- volumes ----

#[derive(Debug, Default, Deserialize)]
pub struct VolumeCreate {
    pub size: Option<Value>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub volume_type: Option<String>,
    pub availability_zone: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub snapshot_id: Option<String>,
    pub source_volid: Option<String>,
    #[serde(rename = "imageRef")]
    pub image_ref: Option<String>,
    pub backup_id: Option<String>,
    pub multiattach: Option<bool>,
    pub consistencygroup_id: Option<String>,
    pub group_id: Option<String>,
}

/// What the backend must do to fill a new volume.
pub enum Source {
    Blank,
    Copy(String),
    /// The bytes of an image file.
    Image(std::path::PathBuf),
}

/// An image a volume is made from, resolved (and access-checked) by the caller.
#[derive(Debug, Clone)]
pub struct ImageSource {
    pub id: String,
    /// The image's data file.
    pub path: std::path::PathBuf,
    pub size_bytes: u64,
    pub min_disk_gb: u64,
    /// What the volume shows as `volume_image_metadata` (string values).
    pub metadata: Map<String, Value>,
}

const GIB: u64 = 1 << 30;

fn size_of(v: &Option<Value>) -> VolResult<Option<u64>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().filter(|n| *n > 0).map(Some).ok_or_else(bad_size),
        Some(Value::String(s)) => s
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(bad_size),
        Some(_) => Err(bad_size()),
    }
}

fn bad_size() -> VolError {
    VolError::BadRequest("Invalid input received: 'size' must be an integer greater than 0.".into())
}

fn check_metadata(m: &Map<String, Value>) -> VolResult<()> {
    for (k, v) in m {
        if k.is_empty()
            || k.len() > 255
            || !v.is_string()
            || v.as_str().is_some_and(|s| s.len() > 255)
        {
            return Err(VolError::BadRequest(format!(
                "Invalid input for field/attribute metadata. Value: {k}: metadata keys and values must be strings of at most 255 characters."
            )));
        }
    }
    Ok(())
}

/// Records a new volume in `creating`; the caller then runs [`finish_create`].
/// A body with `imageRef` needs [`create_volume_from`] (the image resolved).
pub fn create_volume(
    store: &dyn Store,
    ctx: &VCtx,
    b: VolumeCreate,
) -> VolResult<(Volume, Source)> {
    create_volume_from(store, ctx, b, None)
}

/// [`create_volume`], with the image named by `imageRef` already resolved: the
/// volume is at least as large as the image (and its `min_disk`), bootable, and
/// carries `volume_image_metadata`.
pub fn create_volume_from(
    store: &dyn Store,
    ctx: &VCtx,
    b: VolumeCreate,
    image: Option<ImageSource>,
) -> VolResult<(Volume, Source)> {
    ctx.write_ok()?;
    let image = match (&b.image_ref, image) {
        (Some(r), Some(i)) if *r == i.id => Some(i),
        (Some(_), _) => {
            return Err(VolError::BadRequest(
                "Invalid image identifier or unable to access requested image.".into(),
            ))
        }
        (None, _) => None,
    };
    if image.is_some() && (b.snapshot_id.is_some() || b.source_volid.is_some()) {
        return Err(VolError::BadRequest(
            "Invalid input received: only one of imageRef, snapshot_id and source_volid may be given."
                .into(),
        ));
    }
    if b.backup_id.is_some() {
        return Err(VolError::NotImplemented(
            "Volume backups are not implemented in kiln.".into(),
        ));
    }
    if b.consistencygroup_id.is_some() || b.group_id.is_some() {
        return Err(VolError::NotImplemented(
            "Volume groups are not implemented in kiln.".into(),
        ));
    }
    if let Some(az) = &b.availability_zone {
        if az != AVAILABILITY_ZONE {
            return Err(VolError::BadRequest(format!(
                "Invalid input received: Availability zone '{az}' is invalid."
            )));
        }
    }
    let metadata = b.metadata.unwrap_or_default();
    check_metadata(&metadata)?;
    let asked = size_of(&b.size)?;
    commit(store, |w| {
        let (size, source, snapshot_id, source_volid) = match (&b.snapshot_id, &b.source_volid) {
            (Some(_), Some(_)) => return Err(VolError::BadRequest(
                "Invalid input received: only one of snapshot_id and source_volid may be given."
                    .into(),
            )),
            (Some(sid), None) => {
                let s = find_snapshot(w.as_read(), ctx, sid)?;
                if s.status != "available" {
                    return Err(VolError::BadRequest(
                        "Invalid snapshot: Originating snapshot status must be one of 'available' values".into(),
                    ));
                }
                (
                    asked.unwrap_or(s.size),
                    Source::Copy(s.id.clone()),
                    Some(s.id.clone()),
                    None,
                )
            }
            (None, Some(vid)) => {
                let v = find_volume(w.as_read(), ctx, vid)?;
                if v.status != "available" && v.status != "in-use" {
                    return Err(VolError::BadRequest(format!(
                        "Invalid volume: Source volume status must be available or in-use, but current status is: {}.",
                        v.status
                    )));
                }
                (
                    asked.unwrap_or(v.size),
                    Source::Copy(v.id.clone()),
                    None,
                    Some(v.id.clone()),
                )
            }
            (None, None) => match &image {
                Some(i) => {
                    let need = i.size_bytes.div_ceil(GIB).max(1);
                    let size = asked.unwrap_or(need.max(i.min_disk_gb));
                    if size < need {
                        return Err(VolError::BadRequest(format!(
                            "Invalid input received: Size of specified image {need}GB is larger than volume size {size}GB."
                        )));
                    }
                    if size < i.min_disk_gb {
                        return Err(VolError::BadRequest(format!(
                            "Invalid input received: Volume size {size}GB cannot be smaller than the image minDisk size {}GB.",
                            i.min_disk_gb
                        )));
                    }
                    (size, Source::Image(i.path.clone()), None, None)
                }
                None => (asked.ok_or_else(bad_size)?, Source::Blank, None, None),
            },
        };
        if let Source::Copy(_) = &source {
            let min = match (&snapshot_id, &source_volid) {
                (Some(s), _) => find_snapshot(w.as_read(), ctx, s)?.size,
                (_, Some(v)) => find_volume(w.as_read(), ctx, v)?.size,
                _ => 0,
            };
            if size < min {
                return Err(VolError::BadRequest(format!(
                    "Invalid input received: Volume size '{size}'GB cannot be smaller than the snapshot or source volume size {min}GB."
                )));
            }
        }
        let vtype = match &b.volume_type {
            Some(t) => find_type(w.as_read(), t)?,
            None => default_type(),
        };
        check_quota(w.as_read(), &ctx.project_id, "volumes", 1)?;
        check_quota(
            w.as_read(),
            &ctx.project_id,
            "gigabytes",
            i64::try_from(size).unwrap_or(i64::MAX),
        )?;
        let from = snapshot_id
            .as_ref()
            .and_then(|s| SNAPSHOTS.get(w.as_read(), s).ok().flatten())
            .map(|s| s.volume_id)
            .or_else(|| source_volid.clone());
        let image_metadata = match &image {
            Some(i) => Some(i.metadata.clone()),
            None => from
                .and_then(|v| VOLUMES.get(w.as_read(), &v).ok().flatten())
                .and_then(|v| v.image_metadata),
        };
        let bootable = image.is_some()
            || match &snapshot_id {
                Some(s) => SNAPSHOTS
                    .get(w.as_read(), s)?
                    .and_then(|s| VOLUMES.get(w.as_read(), &s.volume_id).ok().flatten())
                    .is_some_and(|v| v.bootable),
                None => match &source_volid {
                    Some(v) => VOLUMES.get(w.as_read(), v)?.is_some_and(|v| v.bootable),
                    None => false,
                },
            };
        let v = Volume {
            id: uuid::Uuid::new_v4().to_string(),
            name: b.name.clone(),
            description: b.description.clone(),
            project_id: ctx.project_id.clone(),
            user_id: ctx.user_id.clone(),
            status: "creating".into(),
            size,
            availability_zone: AVAILABILITY_ZONE.into(),
            bootable,
            volume_type_id: vtype.id,
            snapshot_id,
            source_volid,
            metadata: metadata.clone(),
            attachments: Vec::new(),
            multiattach: b.multiattach.unwrap_or(false),
            created_at: now(),
            updated_at: None,
            image_metadata,
        };
        VOLUMES.put(w, &v.id, &v)?;
        Ok((v, source))
    })
}

/// Fills a `creating` volume through the backend; it ends `available`, or
/// `error` when the backend fails.
pub fn finish_create(
    store: &dyn Store,
    backend: &dyn VolumeBackend,
    id: &str,
    source: &Source,
) -> VolResult<()> {
    let r = store.read()?;
    let Some(v) = VOLUMES.get(&*r, id)? else {
        return Ok(());
    };
    drop(r);
    let result = match source {
        Source::Blank => backend.create(id, v.size),
        Source::Copy(from) => backend.clone_from(from, id, v.size),
        Source::Image(path) => backend.create_from_file(id, path, v.size),
    };
    if let Err(e) = &result {
        tracing::error!(volume = id, error = %e, "volume backend failed to create the volume");
    }
    set_status(
        store,
        id,
        if result.is_ok() { "available" } else { "error" },
    )
}

fn set_status(store: &dyn Store, id: &str, status: &str) -> VolResult<()> {
    commit(store, |w| {
        if let Some(mut v) = VOLUMES.get(w.as_read(), id)? {
            v.status = status.into();
            v.updated_at = Some(now());
            VOLUMES.put(w, id, &v)?;
        }
        Ok(())
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct VolumeUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<Map<String, Value>>,
}

pub fn update_volume(
    store: &dyn Store,
    ctx: &VCtx,
    id: &str,
    b: VolumeUpdate,
) -> VolResult<Volume> {
    ctx.write_ok()?;
    if let Some(m) = &b.metadata {
        check_metadata(m)?;
    }
    commit(store, |w| {
        let mut v = find_volume(w.as_read(), ctx, id)?;
        if b.name.is_some() {
            v.name = b.name;
        }
        if b.description.is_some() {
            v.description = b.description;
        }
        if let Some(m) = b.metadata {
            v.metadata = m;
        }
        v.updated_at = Some(now());
        VOLUMES.put(w, id, &v)?;
        Ok(v)
    })
}

const DELETABLE: &[&str] = &[
    "available",
    "error",
    "error_restoring",
    "error_extending",
    "error_managing",
];

/// Deletes a volume (and with `cascade` its snapshots) and its bytes.
pub fn delete_volume(
    store: &dyn Store,
    backend: &dyn VolumeBackend,
    ctx: &VCtx,
    id: &str,
    cascade: bool,
) -> VolResult<()> {
    ctx.write_ok()?;
    let snaps = commit(store, |w| {
        let v = find_volume(w.as_read(), ctx, id)?;
        let snaps: Vec<Snapshot> = SNAPSHOTS
            .values(w.as_read())?
            .into_iter()
            .filter(|s| s.volume_id == id)
            .collect();
        if !DELETABLE.contains(&v.status.as_str())
            || !v.attachments.is_empty()
            || (!snaps.is_empty() && !cascade)
        {
            return Err(VolError::BadRequest(format!(
                "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer. (current status: {}, snapshots: {})",
                v.status,
                snaps.len()
            )));
        }
        for s in &snaps {
            SNAPSHOTS.delete(w, &s.id)?;
        }
        VOLUMES.delete(w, id)?;
        Ok(snaps)
    })?;
    for s in &snaps {
        backend.delete(&s.id)?;
    }
    backend.delete(id)?;
    Ok(())
}

/// Grows an available volume to `new_size` GiB.
pub fn extend(
    store: &dyn Store,
    backend: &dyn VolumeBackend,
    ctx: &VCtx,
    id: &str,
    new_size: &Value,
) -> VolResult<Volume> {
    ctx.write_ok()?;
    let size = size_of(&Some(new_size.clone()))?.ok_or_else(bad_size)?;
    let v = commit(store, |w| {
        let mut v = find_volume(w.as_read(), ctx, id)?;
        if v.status != "available" {
            return Err(VolError::BadRequest(format!(
                "Invalid volume: Volume {id} status must be available or in-use, but current status is: {}.",
                v.status
            )));
        }
        if size <= v.size {
            return Err(VolError::BadRequest(format!(
                "Invalid input received: New size for extend must be greater than current size. (current: {}, extended: {size})."
            , v.size)));
        }
        check_quota(
            w.as_read(),
            &v.project_id,
            "gigabytes",
            i64::try_from(size - v.size).unwrap_or(i64::MAX),
        )?;
        v.status = "extending".into();
        VOLUMES.put(w, id, &v)?;
        Ok(v)
    })?;
    let result = backend.extend(id, size);
    commit(store, |w| {
        let mut cur = VOLUMES.get(w.as_read(), id)?.unwrap_or(v);
        if result.is_ok() {
            cur.size = size;
            cur.status = "available".into();
        } else {
            cur.status = "error_extending".into();
        }
        cur.updated_at = Some(now());
        VOLUMES.put(w, id, &cur)?;
        Ok(cur)
    })
}

pub fn set_bootable(store: &dyn Store, ctx: &VCtx, id: &str, bootable: &Value) -> VolResult<()> {
    ctx.write_ok()?;
    let b = match bootable {
        Value::Bool(b) => *b,
        Value::String(s) if s.eq_ignore_ascii_case("true") => true,
        Value::String(s) if s.eq_ignore_ascii_case("false") => false,
        _ => {
            return Err(VolError::BadRequest(
                "Invalid input received: 'bootable' must be a boolean.".into(),
            ))
        }
    };
    commit(store, |w| {
        let mut v = find_volume(w.as_read(), ctx, id)?;
        v.bootable = b;
        v.updated_at = Some(now());
        VOLUMES.put(w, id, &v)?;
        Ok(())
    })
}

const STATUSES: &[&str] = &[
    "creating",
    "available",
    "attaching",
    "in-use",
    "detaching",
    "deleting",
    "error",
    "error_deleting",
    "error_extending",
    "extending",
    "reserved",
    "maintenance",
];

/// Admin: forces a volume's status (and with `attach_status: detached`, drops
/// its attachments).
pub fn reset_status(
    store: &dyn Store,
    ctx: &VCtx,
    id: &str,
    status: Option<&str>,
    attach_status: Option<&str>,
) -> VolResult<()> {
    ctx.require_admin()?;
    if let Some(s) = status {
        if !STATUSES.contains(&s) {
            return Err(VolError::BadRequest(format!(
                "Invalid input received: Must specify a valid status ('{s}' is not)."
            )));
        }
    }
    if let Some(a) = attach_status {
        if a != "attached" && a != "detached" {
            return Err(VolError::BadRequest(format!(
                "Invalid input received: Must specify a valid attach status ('{a}' is not)."
            )));
        }
    }
    if status.is_none() && attach_status.is_none() {
        return Err(VolError::BadRequest("Invalid input received: Must specify 'status', 'attach_status' or 'migration_status' for update.".into()));
    }
    commit(store, |w| {
        let mut v = find_volume(w.as_read(), ctx, id)?;
        if let Some(s) = status {
            v.status = s.into();
        }
        if attach_status == Some("detached") {
            v.attachments.clear();
        }
        v.updated_at = Some(now());
        VOLUMES.put(w, id, &v)?;
        Ok(())
    })
}

/// Admin: drops every attachment and makes the volume available; returns
/// the servers it was attached to (whose mappings the compute side drops,
/// see `Compute::forget_volume`).
pub fn force_detach(store: &dyn Store, ctx: &VCtx, id: &str) -> VolResult<Vec<String>> {
    ctx.require_admin()?;
    commit(store, |w| {
        let mut v = find_volume(w.as_read(), ctx, id)?;
        let servers = v.attachments.drain(..).map(|a| a.server_id).collect();
        v.status = "available".into();
        v.updated_at = Some(now());
        VOLUMES.put(w, id, &v)?;
        Ok(servers)
    })
}

/// How a metadata request changes a volume's metadata.
pub enum MetaChange {
    Merge(Map<String, Value>),
    Replace(Map<String, Value>),
    Delete(String),
}

pub fn change_metadata(
    store: &dyn Store,
    ctx: &VCtx,
    id: &str,
    change: MetaChange,
) -> VolResult<Map<String, Value>> {
    ctx.write_ok()?;
    commit(store, |w| {
        let mut v = find_volume(w.as_read(), ctx, id)?;
        match change {
            MetaChange::Merge(m) => {
                check_metadata(&m)?;
                v.metadata.extend(m);
            }
            MetaChange::Replace(m) => {
                check_metadata(&m)?;
                v.metadata = m;
            }
            MetaChange::Delete(k) => {
                if v.metadata.remove(&k).is_none() {
                    return Err(VolError::NotFound(format!(
                        "Volume {id} has no metadata with key {k}."
                    )));
                }
            }
        }
        v.updated_at = Some(now());
        VOLUMES.put(w, id, &v)?;
        Ok(v.metadata)
    })
}

// ---- attachments (driven by compute) ----

/// Attaches a volume to a server on `host`: `available` → `in-use`. Returns the
/// attachment. 400 unless the volume is available (or multiattach).
pub fn attach(
    store: &dyn Store,
    volume_id: &str,
    server_id: &str,
    host: &str,
    device: Option<&str>,
) -> VolResult<Attachment> {
    commit(store, |w| {
        let mut v = VOLUMES
            .get(w.as_read(), volume_id)?
            .ok_or_else(|| vol_nf(volume_id))?;
        let ok = v.status == "available" || (v.multiattach && v.status == "in-use");
        if !ok || v.attachments.iter().any(|a| a.server_id == server_id) {
            return Err(VolError::BadRequest(format!(
                "Invalid volume: Volume {volume_id} status must be available to attach, but current status is: {}.",
                v.status
            )));
        }
        let a = Attachment {
            id: uuid::Uuid::new_v4().to_string(),
            server_id: server_id.into(),
            host_name: Some(host.into()).filter(|h: &String| !h.is_empty()),
            device: device.map(str::to_string),
            attached_at: now(),
        };
        v.attachments.push(a.clone());
        v.status = "in-use".into();
        v.updated_at = Some(now());
        VOLUMES.put(w, volume_id, &v)?;
        Ok(a)
    })
}

/// Detaches a volume from a server: `in-use` → `available` once no attachment remains.
pub fn detach(store: &dyn Store, volume_id: &str, server_id: &str) -> VolResult<()> {
    commit(store, |w| {
        let mut v = VOLUMES
            .get(w.as_read(), volume_id)?
            .ok_or_else(|| vol_nf(volume_id))?;
        let before = v.attachments.len();
        v.attachments.retain(|a| a.server_id != server_id);
        if v.attachments.len() == before {
            return Err(VolError::BadRequest(format!(
                "Invalid volume: Volume {volume_id} is not attached to server {server_id}."
            )));
        }
        if v.attachments.is_empty() {
            v.status = "available".into();
        }
        v.updated_at = Some(now());
        VOLUMES.put(w, volume_id, &v)?;
        Ok(())
    })
}

// ---- snapshots ----

#[derive(Debug, Default, Deserialize)]
pub struct SnapshotCreate {
    pub volume_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub force: Option<Value>,
    pub metadata: Option<Map<String, Value>>,
}

pub fn create_snapshot(
    store: &dyn Store,
    backend: &dyn VolumeBackend,
    ctx: &VCtx,
    b: SnapshotCreate,
) -> VolResult<Snapshot> {
    ctx.write_ok()?;
    let force = matches!(&b.force, Some(Value::Bool(true)))
        || matches!(&b.force, Some(Value::String(s)) if s.eq_ignore_ascii_case("true"));
    let metadata = b.metadata.unwrap_or_default();
    check_metadata(&metadata)?;
    let s = commit(store, |w| {
        let v = find_volume(w.as_read(), ctx, &b.volume_id)?;
        if !(v.status == "available" || (force && v.status == "in-use")) {
            return Err(VolError::BadRequest(format!(
                "Invalid volume: Volume {} status must be available, but current status is: {}.",
                v.id, v.status
            )));
        }
        check_quota(w.as_read(), &v.project_id, "snapshots", 1)?;
        check_quota(
            w.as_read(),
            &v.project_id,
            "gigabytes",
            i64::try_from(v.size).unwrap_or(i64::MAX),
        )?;
        let s = Snapshot {
            id: uuid::Uuid::new_v4().to_string(),
            name: b.name,
            description: b.description,
            project_id: v.project_id.clone(),
            user_id: ctx.user_id.clone(),
            volume_id: v.id.clone(),
            status: "creating".into(),
            size: v.size,
            metadata,
            created_at: now(),
            updated_at: None,
        };
        SNAPSHOTS.put(w, &s.id, &s)?;
        Ok(s)
    })?;
    let result = backend.clone_from(&s.volume_id, &s.id, s.size);
    commit(store, |w| {
        if let Some(mut cur) = SNAPSHOTS.get(w.as_read(), &s.id)? {
            cur.status = if result.is_ok() { "available" } else { "error" }.into();
            cur.updated_at = Some(now());
            SNAPSHOTS.put(w, &s.id, &cur)?;
        }
        Ok(())
    })?;
    Ok(s)
}

#[derive(Debug, Default, Deserialize)]
pub struct SnapshotUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
}

pub fn update_snapshot(
    store: &dyn Store,
    ctx: &VCtx,
    id: &str,
    b: SnapshotUpdate,
) -> VolResult<Snapshot> {
    ctx.write_ok()?;
    commit(store, |w| {
        let mut s = find_snapshot(w.as_read(), ctx, id)?;
        if b.name.is_some() {
            s.name = b.name;
        }
        if b.description.is_some() {
            s.description = b.description;
        }
        s.updated_at = Some(now());
        SNAPSHOTS.put(w, id, &s)?;
        Ok(s)
    })
}

pub fn delete_snapshot(
    store: &dyn Store,
    backend: &dyn VolumeBackend,
    ctx: &VCtx,
    id: &str,
) -> VolResult<()> {
    ctx.write_ok()?;
    commit(store, |w| {
        let s = find_snapshot(w.as_read(), ctx, id)?;
        if s.status != "available" && s.status != "error" {
            return Err(VolError::BadRequest(format!(
                "Invalid snapshot: Snapshot status must be available or error, but current status is: {}.",
                s.status
            )));
        }
        SNAPSHOTS.delete(w, id)?;
        Ok(())
    })?;
    backend.delete(id)?;
    Ok(())
}
