//! Nova servers: the stored model and Nova's state machine ([`model`]), creation
//! with scheduling, claims, quotas and ports in one transaction ([`create`]),
//! lifecycle actions and the node's state reports ([`lifecycle`]), queries
//! ([`query`]), and the controller → node calls ([`link`]).
//!
//! The controller owns the truth: an action validates the state, records the task
//! and returns a [`Dispatch`]; the API layer sends it to the node after the commit;
//! the node reports the resulting state, which [`Compute::apply_report`] records.

pub mod attachments;
pub mod bdm;
pub mod create;
pub mod directory;
pub mod interfaces;
pub mod lifecycle;
pub mod link;
pub mod model;
pub mod query;
pub mod snapshot;
pub mod soft_delete;
pub mod tables;
pub mod unshelve;

use crate::compute::{multiqueue, Compute};
use crate::error::{ApiError, ApiResult};
use crate::image::tables::IMAGES;
use crate::network::NetError;
use crate::protocol::{Action, ImageSpec, PortSpec, Spawn};
use crate::store::ReadTxn;
use model::{FlavorCopy, Server};
use tables::NODE_URLS;

/// A call to make on a node once the transaction that decided it committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    pub node: String,
    /// The node's API base URL.
    pub url: String,
    pub server_id: String,
    pub call: Call,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Spawn(Box<Spawn>),
    Act(Action),
    Delete,
}

/// A Neutron error as Nova shows it (400 for bad input, else the same status).
pub fn net_error(e: NetError) -> ApiError {
    match e.status() {
        400 => ApiError::BadRequest(e.to_string()),
        403 => ApiError::Forbidden(e.to_string()),
        404 => ApiError::BadRequest(e.to_string()),
        409 => ApiError::Conflict(e.to_string()),
        _ => ApiError::Internal(e.to_string()),
    }
}

pub fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("Instance {id} could not be found."))
}

pub fn image_spec(r: &dyn ReadTxn, image_ref: &str) -> ApiResult<Option<ImageSpec>> {
    if image_ref.is_empty() {
        return Ok(None);
    }
    let properties = IMAGES
        .get(r, image_ref)?
        .map(|i| i.properties)
        .unwrap_or_default();
    Ok(Some(ImageSpec {
        id: image_ref.to_string(),
        properties,
    }))
}

/// Queue pairs of the NICs of a server of `flavor` booting `image_ref` (see
/// [`crate::compute::multiqueue`]); 400 when the flavor and image disagree.
pub fn nic_queues(r: &dyn ReadTxn, flavor: &FlavorCopy, image_ref: &str) -> ApiResult<u16> {
    let image = if image_ref.is_empty() {
        None
    } else {
        IMAGES.get(r, image_ref)?
    };
    let view = image.as_ref().map(|i| multiqueue::ImageView {
        name: i.name.as_deref().unwrap_or(&i.id),
        properties: &i.properties,
    });
    multiqueue::queue_pairs(flavor.vcpus, &flavor.name, &flavor.extra_specs, view)
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// What a node needs to build `s`.
pub fn spawn_of(r: &dyn ReadTxn, s: &Server) -> ApiResult<Spawn> {
    Ok(Spawn {
        server_id: s.id.clone(),
        name: s.name.clone(),
        flavor: s.flavor.spec(),
        image: image_spec(r, &s.image_ref)?,
        ports: s
            .vifs
            .iter()
            .map(|v| PortSpec {
                port_id: v.port_id.clone(),
                network_id: v.network_id.clone(),
                mac: v.mac.clone(),
                ips: v.ips.clone(),
                queues: v.queues,
            })
            .collect(),
        volumes: bdm::specs_of(r, s)?,
        user_data: s.user_data.clone(),
        key: s.key_data.clone(),
        metadata: s.metadata.clone(),
        instance: crate::protocol::InstanceMeta {
            project_id: s.project_id.clone(),
            availability_zone: s.az.clone().unwrap_or_default(),
            hostname: hostname_of(&s.name),
            launch_index: s.launch_index,
            key_name: s.key_name.clone(),
            created: s.created_at,
        },
    })
}

/// Nova's host name for a display name: lower case, runs of anything but
/// letters, digits and `-` become one `-`, trimmed, at most 63 characters.
pub fn hostname_of(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let t: String = out.trim_matches('-').chars().take(63).collect();
    let t = t.trim_end_matches('-').to_string();
    if t.is_empty() {
        "server".into()
    } else {
        t
    }
}

impl Compute {
    /// The spawn call for a placed server (None if its node has no URL yet).
    pub(crate) fn dispatch_for(&self, r: &dyn ReadTxn, s: &Server) -> ApiResult<Option<Dispatch>> {
        let Some(node) = &s.node else { return Ok(None) };
        let url = NODE_URLS.get(r, node)?.unwrap_or_default();
        Ok(Some(Dispatch {
            node: node.clone(),
            url,
            server_id: s.id.clone(),
            call: self.with_volume_paths(Call::Spawn(Box::new(spawn_of(r, s)?))),
        }))
    }

    /// An action call to the server's node.
    pub(crate) fn call_for(
        &self,
        r: &dyn ReadTxn,
        s: &Server,
        call: Call,
    ) -> ApiResult<Option<Dispatch>> {
        let Some(node) = &s.node else { return Ok(None) };
        let url = NODE_URLS.get(r, node)?.unwrap_or_default();
        Ok(Some(Dispatch {
            node: node.clone(),
            url,
            server_id: s.id.clone(),
            call: self.with_volume_paths(call),
        }))
    }
}
