//! Nova's response shapes per microversion (2.1 today; each boundary added here
//! before [`crate::microversion::MAX`] is raised).

use serde_json::{json, Value};
use time::macros::format_description;
use time::OffsetDateTime;

use crate::compute::model::{Flavor, Keypair};
use crate::microversion::Microversion;

/// Nova's timestamps for keypairs and usage: microseconds, no zone.
pub fn nova_time(micros: i64) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000000".into())
}

pub fn links(base: &str, collection: &str, id: &str) -> Value {
    json!([
        {"rel": "self", "href": format!("{base}/compute/v2.1/{collection}/{id}")},
        {"rel": "bookmark", "href": format!("{base}/compute/{collection}/{id}")}
    ])
}

/// A flavor: `detail` for show/detail/create, else the summary list entry.
pub fn flavor(base: &str, f: &Flavor, _mv: Microversion, detail: bool) -> Value {
    if !detail {
        return json!({"id": f.id, "name": f.name, "links": links(base, "flavors", &f.id)});
    }
    json!({
        "id": f.id,
        "name": f.name,
        "ram": f.ram,
        "vcpus": f.vcpus,
        "disk": f.disk,
        "OS-FLV-EXT-DATA:ephemeral": f.ephemeral,
        "OS-FLV-DISABLED:disabled": f.disabled,
        "swap": if f.swap == 0 { json!("") } else { json!(f.swap) },
        "rxtx_factor": f.rxtx_factor,
        "os-flavor-access:is_public": f.is_public,
        "links": links(base, "flavors", &f.id),
    })
}

/// The keypair as create answers it.
pub fn keypair_created(k: &Keypair, private_key: Option<&str>) -> Value {
    let mut v = json!({
        "name": k.name,
        "public_key": k.public_key,
        "fingerprint": k.fingerprint,
        "user_id": k.user_id,
    });
    if let Some(p) = private_key {
        v["private_key"] = json!(p);
    }
    v
}

/// A list entry (wrapped in `{"keypair": ...}` by the caller).
pub fn keypair_summary(k: &Keypair) -> Value {
    json!({"name": k.name, "public_key": k.public_key, "fingerprint": k.fingerprint})
}

pub fn keypair_detail(k: &Keypair) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "public_key": k.public_key,
        "fingerprint": k.fingerprint,
        "user_id": k.user_id,
        "created_at": nova_time(k.created_at),
        "updated_at": null,
        "deleted_at": null,
        "deleted": false,
    })
}
