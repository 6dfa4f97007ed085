//! Glance's response shapes: an image (core attributes, then the extra properties
//! at the top level), a member, and the list envelopes.

use serde_json::{json, Map, Value};

use crate::image::model::{glance_time, Image, Member};

pub fn image(i: &Image) -> Value {
    let mut o = Map::new();
    for (k, v) in &i.properties {
        o.insert(k.clone(), Value::String(v.clone()));
    }
    let core = json!({
        "id": i.id,
        "name": i.name,
        "status": i.status,
        "visibility": i.visibility,
        "protected": i.protected,
        "os_hidden": i.os_hidden,
        "checksum": i.checksum,
        "os_hash_algo": i.os_hash_algo,
        "os_hash_value": i.os_hash_value,
        "owner": i.owner,
        "size": i.size,
        "virtual_size": i.virtual_size,
        "min_ram": i.min_ram,
        "min_disk": i.min_disk,
        "disk_format": i.disk_format,
        "container_format": i.container_format,
        "created_at": glance_time(i.created_at),
        "updated_at": glance_time(i.updated_at),
        "tags": i.tags,
        "self": format!("/v2/images/{}", i.id),
        "file": format!("/v2/images/{}/file", i.id),
        "schema": "/v2/schemas/image",
    });
    if let Value::Object(core) = core {
        o.extend(core);
    }
    Value::Object(o)
}

pub fn member(m: &Member) -> Value {
    json!({
        "image_id": m.image_id,
        "member_id": m.member_id,
        "status": m.status,
        "created_at": glance_time(m.created_at),
        "updated_at": glance_time(m.updated_at),
        "schema": "/v2/schemas/member",
    })
}

pub fn members(list: &[Member]) -> Value {
    json!({
        "members": list.iter().map(member).collect::<Vec<_>>(),
        "schema": "/v2/schemas/members",
    })
}
