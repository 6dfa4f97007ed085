//! Response shapes per microversion: volumes (summary and detail), snapshots,
//! types, attachments.

use serde_json::{json, Value};

use super::microversion::{self as mv, Version};
use crate::volume::model::{default_type, DEFAULT_TYPE_ID};
use crate::volume::{Snapshot, Volume, VolumeType};

fn links(base: &str, project: &str, kind: &str, id: &str) -> Value {
    json!([
        {"rel": "self", "href": format!("{base}/volume/v3/{project}/{kind}/{id}")},
        {"rel": "bookmark", "href": format!("{base}/volume/{project}/{kind}/{id}")}
    ])
}

pub fn volume(base: &str, v: &Volume, ver: Version, admin: bool, type_name: &str) -> Value {
    let attachments: Vec<Value> = v
        .attachments
        .iter()
        .map(|a| {
            json!({
                "id": v.id, "attachment_id": a.id, "volume_id": v.id, "server_id": a.server_id,
                "host_name": a.host_name, "device": a.device, "attached_at": a.attached_at,
            })
        })
        .collect();
    let mut out = json!({
        "id": v.id,
        "name": v.name,
        "description": v.description,
        "status": v.status,
        "size": v.size,
        "availability_zone": v.availability_zone,
        "created_at": v.created_at,
        "updated_at": v.updated_at,
        "attachments": attachments,
        "bootable": if v.bootable { "true" } else { "false" },
        "encrypted": false,
        "links": links(base, &v.project_id, "volumes", &v.id),
        "metadata": v.metadata,
        "multiattach": v.multiattach,
        "replication_status": null,
        "snapshot_id": v.snapshot_id,
        "source_volid": v.source_volid,
        "consistencygroup_id": null,
        "user_id": v.user_id,
        "volume_type": type_name,
        "os-vol-tenant-attr:tenant_id": v.project_id,
        "migration_status": null,
    });
    if let Some(m) = &v.image_metadata {
        out["volume_image_metadata"] = json!(m);
    }
    if admin {
        out["os-vol-host-attr:host"] = json!("kiln@file#file");
        out["os-vol-mig-status-attr:migstat"] = Value::Null;
        out["os-vol-mig-status-attr:name_id"] = Value::Null;
    }
    if ver >= mv::GROUP_ID {
        out["group_id"] = Value::Null;
    }
    if ver >= Version(3, 21) && admin {
        out["provider_id"] = Value::Null;
    }
    if ver >= mv::SHARED_TARGETS {
        out["shared_targets"] = json!(false);
        out["service_uuid"] = Value::Null;
    }
    if ver >= Version(3, 61) && admin {
        out["cluster_name"] = Value::Null;
    }
    if ver >= mv::VOLUME_TYPE_ID {
        out["volume_type_id"] = json!(v.volume_type_id);
    }
    if ver >= mv::ENCRYPTION_KEY_ID {
        out["encryption_key_id"] = Value::Null;
    }
    if ver >= mv::CONSUMES_QUOTA {
        out["consumes_quota"] = json!(true);
    }
    out
}

pub fn snapshot(s: &Snapshot, ver: Version) -> Value {
    let mut out = json!({
        "id": s.id,
        "name": s.name,
        "description": s.description,
        "status": s.status,
        "size": s.size,
        "volume_id": s.volume_id,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "metadata": s.metadata,
        "os-extended-snapshot-attributes:progress": if s.status == "available" { "100%" } else { "0%" },
        "os-extended-snapshot-attributes:project_id": s.project_id,
    });
    if ver >= mv::GROUP_ID {
        out["group_snapshot_id"] = Value::Null;
    }
    if ver >= mv::SNAPSHOT_USER_ID {
        out["user_id"] = json!(s.user_id);
    }
    if ver >= mv::CONSUMES_QUOTA {
        out["consumes_quota"] = json!(true);
    }
    out
}

pub fn vtype(t: &VolumeType) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "description": t.description,
        "is_public": t.is_public,
        "os-volume-type-access:is_public": t.is_public,
        "extra_specs": t.extra_specs,
        "qos_specs_id": null,
    })
}

/// The name of a type id (the default type when unknown).
pub fn type_name(types: &[VolumeType], id: &str) -> String {
    types
        .iter()
        .find(|t| t.id == id)
        .map(|t| t.name.clone())
        .unwrap_or_else(|| {
            if id == DEFAULT_TYPE_ID {
                default_type().name
            } else {
                id.to_string()
            }
        })
}
