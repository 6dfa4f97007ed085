//! createImage: a server snapshot as a Glance image record (owner the server's
//! project, private, `image_type=snapshot`, `instance_uuid`, `base_image_ref`, the
//! base image's formats). The simulated guests have no disk bytes, so the image
//! is recorded active and empty.

use std::collections::BTreeMap;

use super::create::new_action;
use super::query::{check_locked, load};
use super::tables::SERVERS;
use crate::clock::now_micros;
use crate::compute::{Compute, Who};
use crate::error::{ApiError, ApiResult};
use crate::image::model::Image;
use crate::image::tables::IMAGES;
use crate::protocol::VmState;

impl Compute {
    /// Records a snapshot image of server `id`; returns the image id.
    pub fn snapshot(
        &self,
        who: &Who,
        id: &str,
        name: &str,
        metadata: BTreeMap<String, String>,
    ) -> ApiResult<String> {
        let mut w = self.store.write()?;
        let mut s = load(w.as_read(), who, id)?;
        check_locked(who, &s)?;
        let ok = matches!(
            s.vm_state,
            VmState::Active | VmState::Stopped | VmState::Paused | VmState::Suspended
        );
        if !ok || s.task_state.is_some() {
            return Err(match &s.task_state {
                Some(t) => ApiError::Conflict(format!(
                    "Cannot 'createImage' instance {id} while it is in task_state {t}"
                )),
                None => ApiError::Conflict(format!(
                    "Cannot 'createImage' instance {id} while it is in vm_state {}",
                    s.vm_state.as_str()
                )),
            });
        }
        let base = IMAGES.get(w.as_read(), &s.image_ref)?;
        let mut properties = metadata;
        properties.insert("image_type".into(), "snapshot".into());
        properties.insert("instance_uuid".into(), s.id.clone());
        properties.insert("base_image_ref".into(), s.image_ref.clone());
        properties.insert("user_id".into(), who.user_id.clone());
        let now = now_micros();
        let image = Image {
            id: uuid::Uuid::new_v4().to_string(),
            name: Some(name.to_string()),
            status: "active".into(),
            visibility: "private".into(),
            protected: false,
            os_hidden: false,
            owner: Some(s.project_id.clone()),
            disk_format: base
                .as_ref()
                .and_then(|b| b.disk_format.clone())
                .or(Some("raw".into())),
            container_format: base
                .as_ref()
                .and_then(|b| b.container_format.clone())
                .or(Some("bare".into())),
            min_disk: s.flavor.disk,
            min_ram: 0,
            size: Some(0),
            virtual_size: None,
            checksum: None,
            os_hash_algo: None,
            os_hash_value: None,
            tags: vec![],
            properties,
            created_at: now,
            updated_at: now,
        };
        IMAGES.put(&mut *w, &image.id, &image)?;
        s.actions.push(new_action(
            who,
            &s.project_id,
            "createImage",
            "compute_snapshot_instance",
        ));
        if let Some(e) = s.actions.last_mut().and_then(|a| a.events.last_mut()) {
            e.finish_time = Some(now);
            e.result = Some("Success".into());
        }
        SERVERS.put(&mut *w, id, &s)?;
        w.commit()?;
        Ok(image.id)
    }
}
