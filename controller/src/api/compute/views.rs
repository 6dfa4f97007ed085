//! Nova's response shapes per microversion, exact from 2.1 through
//! [`crate::microversion::EXACT_MAX_WITHOUT_SERVERS`] for flavors (description
//! 2.55, extra_specs 2.61, swap 0 at 2.75) and keypairs (type 2.2).

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
pub fn flavor(base: &str, f: &Flavor, mv: Microversion, detail: bool) -> Value {
    let mut v = flavor_fields(base, f, mv, detail);
    if mv.at_least(55) {
        v["description"] = json!(f.description);
    }
    if detail && mv.at_least(61) {
        v["extra_specs"] = json!(f.extra_specs);
    }
    v
}

fn flavor_fields(base: &str, f: &Flavor, mv: Microversion, detail: bool) -> Value {
    if !detail {
        return json!({"id": f.id, "name": f.name, "links": links(base, "flavors", &f.id)});
    }
    let swap = if f.swap == 0 && !mv.at_least(75) {
        json!("")
    } else {
        json!(f.swap)
    };
    json!({
        "id": f.id,
        "name": f.name,
        "ram": f.ram,
        "vcpus": f.vcpus,
        "disk": f.disk,
        "OS-FLV-EXT-DATA:ephemeral": f.ephemeral,
        "OS-FLV-DISABLED:disabled": f.disabled,
        "swap": swap,
        "rxtx_factor": f.rxtx_factor,
        "os-flavor-access:is_public": f.is_public,
        "links": links(base, "flavors", &f.id),
    })
}

/// The keypair as create answers it.
pub fn keypair_created(k: &Keypair, private_key: Option<&str>, mv: Microversion) -> Value {
    let mut v = json!({
        "name": k.name,
        "public_key": k.public_key,
        "fingerprint": k.fingerprint,
        "user_id": k.user_id,
    });
    if let Some(p) = private_key {
        v["private_key"] = json!(p);
    }
    typed(v, k, mv)
}

/// From 2.2 every keypair view carries its `type`.
fn typed(mut v: Value, k: &Keypair, mv: Microversion) -> Value {
    if mv.at_least(2) {
        v["type"] = json!(k.key_type);
    }
    v
}

/// A list entry (wrapped in `{"keypair": ...}` by the caller).
pub fn keypair_summary(k: &Keypair, mv: Microversion) -> Value {
    typed(
        json!({"name": k.name, "public_key": k.public_key, "fingerprint": k.fingerprint}),
        k,
        mv,
    )
}

pub fn keypair_detail(k: &Keypair, mv: Microversion) -> Value {
    let v = json!({
        "id": k.id,
        "name": k.name,
        "public_key": k.public_key,
        "fingerprint": k.fingerprint,
        "user_id": k.user_id,
        "created_at": nova_time(k.created_at),
        "updated_at": null,
        "deleted_at": null,
        "deleted": false,
    });
    typed(v, k, mv)
}
