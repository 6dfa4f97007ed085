//! createImage, Nova's flow: the image is recorded `queued` at once (owner the
//! server's project, private, raw/bare, `min_disk` the flavor's disk,
//! `image_type=snapshot`, `instance_uuid`, `base_image_ref`, and the base
//! image's boot properties), the server's task goes `image_snapshot` →
//! `image_pending_upload` (the node copied the disk) → `image_uploading` (the
//! node's upload began, [`Compute::snapshot_upload_begins`]) → none, and the
//! node is asked for the root disk with [`Action::Snapshot`]. A failed
//! snapshot deletes the image, as Nova does ([`conclude`]).
//!
//! A firmware guest's disk is not its firmware: its snapshot names the
//! firmware image in `kiln_firmware_id` (the node boots that firmware with the
//! snapshot as the root disk) instead of copying `kiln_firmware=true`.

use std::collections::BTreeMap;

use super::create::new_action;
use super::lifecycle::conflict;
use super::model::Server;
use super::query::{check_locked, load};
use super::tables::SERVERS;
use super::{Call, Dispatch};
use crate::clock::now_micros;
use crate::compute::{Compute, Who};
use crate::error::{ApiError, ApiResult};
use crate::image::model::{status, Image, FIRMWARE_PROPERTY};
use crate::image::tables::IMAGES;
use crate::protocol::{Action, VmState};
use crate::store::WriteTxn;

/// The property naming the firmware a snapshot of a firmware guest boots.
pub const FIRMWARE_ID_PROPERTY: &str = "kiln_firmware_id";
/// Base image properties a snapshot keeps, so it boots the same way.
const BOOT_PROPERTIES: &[&str] = &[
    FIRMWARE_ID_PROPERTY,
    "os_command_line",
    "kernel_id",
    "ramdisk_id",
];

/// The vm_states Nova snapshots in.
const SNAPSHOT_STATES: &[VmState] = &[
    VmState::Active,
    VmState::Stopped,
    VmState::Paused,
    VmState::Suspended,
];

fn truthy(v: Option<&String>) -> bool {
    matches!(
        v.map(|s| s.to_ascii_lowercase()).as_deref(),
        Some("true" | "yes" | "1")
    )
}

/// The snapshot's properties: the user's metadata, Nova's snapshot keys and
/// what the node needs to boot it like the base image.
fn properties_of(
    who: &Who,
    s: &Server,
    base: Option<&Image>,
    metadata: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut p = metadata;
    if let Some(b) = base {
        for k in BOOT_PROPERTIES {
            if let Some(v) = b.properties.get(*k) {
                p.insert((*k).to_string(), v.clone());
            }
        }
        if truthy(b.properties.get(FIRMWARE_PROPERTY)) {
            p.insert(FIRMWARE_ID_PROPERTY.into(), b.id.clone());
        }
    }
    p.insert("image_type".into(), "snapshot".into());
    p.insert("instance_uuid".into(), s.id.clone());
    p.insert("base_image_ref".into(), s.image_ref.clone());
    p.insert("user_id".into(), who.user_id.clone());
    p
}

impl Compute {
    /// Starts a snapshot of server `id`: returns the new (queued) image's id
    /// and the node call that uploads the disk.
    pub fn snapshot(
        &self,
        who: &Who,
        id: &str,
        name: &str,
        metadata: BTreeMap<String, String>,
    ) -> ApiResult<(String, Vec<Dispatch>)> {
        let mut w = self.store.write()?;
        let mut s = load(w.as_read(), who, id)?;
        check_locked(who, &s)?;
        if !SNAPSHOT_STATES.contains(&s.vm_state) || s.task_state.is_some() {
            return Err(conflict("createImage", &s));
        }
        if s.node.is_none() {
            return Err(ApiError::Conflict(format!(
                "Cannot 'createImage' instance {id}: it is not on a host"
            )));
        }
        let base = IMAGES.get(w.as_read(), &s.image_ref)?;
        let now = now_micros();
        let image = Image {
            id: uuid::Uuid::new_v4().to_string(),
            name: Some(name.to_string()),
            status: status::QUEUED.into(),
            visibility: "private".into(),
            protected: false,
            os_hidden: false,
            owner: Some(s.project_id.clone()),
            disk_format: Some("raw".into()),
            container_format: Some("bare".into()),
            min_disk: s.flavor.disk,
            min_ram: base.as_ref().map_or(0, |b| b.min_ram),
            size: None,
            virtual_size: None,
            checksum: None,
            os_hash_algo: None,
            os_hash_value: None,
            tags: vec![],
            properties: properties_of(who, &s, base.as_ref(), metadata),
            created_at: now,
            updated_at: now,
        };
        IMAGES.put(&mut *w, &image.id, &image)?;
        let call = Call::Act(Action::Snapshot {
            image_id: image.id.clone(),
        });
        let calls: Vec<Dispatch> = self.call_for(w.as_read(), &s, call)?.into_iter().collect();
        s.task_state = Some("image_snapshot".into());
        s.actions.push(new_action(
            who,
            &s.project_id,
            "createImage",
            "compute_snapshot_instance",
        ));
        s.updated_at = now;
        SERVERS.put(&mut *w, id, &s)?;
        w.commit()?;
        Ok((image.id, calls))
    }

    /// Node `node` starts uploading image `image_id`: it must be the queued
    /// snapshot of a server on that node, which goes to `image_uploading`.
    pub fn snapshot_upload_begins(&self, node: &str, image_id: &str) -> ApiResult<()> {
        let mut w = self.store.write()?;
        let image = IMAGES
            .get(w.as_read(), image_id)?
            .ok_or_else(|| ApiError::NotFound(format!("No image found with ID {image_id}")))?;
        let server = image
            .properties
            .get("instance_uuid")
            .filter(|_| image.properties.get("image_type").map(String::as_str) == Some("snapshot"))
            .cloned()
            .ok_or_else(|| {
                ApiError::Conflict(format!("Image {image_id} is not a server snapshot."))
            })?;
        let mut s = SERVERS
            .get(w.as_read(), &server)?
            .filter(|s| s.node.as_deref() == Some(node))
            .ok_or_else(|| {
                ApiError::Conflict(format!(
                    "Image {image_id} is not the snapshot of a server on node {node}."
                ))
            })?;
        if matches!(
            s.task_state.as_deref(),
            Some("image_snapshot" | "image_pending_upload")
        ) {
            s.task_state = Some("image_uploading".into());
            s.updated_at = now_micros();
            SERVERS.put(&mut *w, &server, &s)?;
        }
        w.commit()?;
        Ok(())
    }
}

/// The node concluded a snapshot of image `image_id`: on failure the image
/// goes (Nova deletes what it could not upload). Its partial data, if any,
/// was already removed by the failed upload.
pub(crate) fn conclude(
    w: &mut dyn WriteTxn,
    image_id: Option<&str>,
    fault: Option<&str>,
) -> ApiResult<()> {
    let (Some(id), Some(why)) = (image_id, fault) else {
        return Ok(());
    };
    if let Some(image) = IMAGES.get(w.as_read(), id)? {
        if image.status != status::ACTIVE {
            tracing::warn!(image = %id, error = %why, "snapshot failed: image deleted");
            IMAGES.delete(w, id)?;
        }
    }
    Ok(())
}
