//! Reading Nova's request bodies (`server` for create, the action bodies) into
//! the operations' types, with Nova's 400 messages.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Map, Value};

use crate::compute::servers::create::{CreateReq, Networks, NicReq};
use crate::compute::servers::query::{check_tag, MAX_TAGS};
use crate::error::{ApiError, ApiResult};
use crate::microversion::Microversion;

/// Nova's limit on decoded user data (65535 bytes of base64 text).
pub const MAX_USER_DATA: usize = 65535;

pub fn bad(field: &str, why: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "Invalid input for field/attribute {field}. Value: {why}"
    ))
}

fn string(o: &Map<String, Value>, k: &str) -> ApiResult<Option<String>> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(bad(k, &format!("{v}. {v} is not of type 'string'"))),
    }
}

pub fn name(v: &str, field: &str) -> ApiResult<String> {
    if v.trim().is_empty() || v.chars().count() > 255 || v.trim() != v {
        return Err(bad(
            field,
            &format!("{v}. '{v}' is not a valid server name"),
        ));
    }
    Ok(v.to_string())
}

pub fn metadata(v: Option<&Value>) -> ApiResult<BTreeMap<String, String>> {
    let Some(v) = v else {
        return Ok(BTreeMap::new());
    };
    let Value::Object(m) = v else {
        return Err(bad(
            "metadata",
            &format!("{v}. {v} is not of type 'object'"),
        ));
    };
    let mut out = BTreeMap::new();
    for (k, v) in m {
        let Value::String(s) = v else {
            return Err(bad(
                &format!("metadata/{k}"),
                &format!("{v}. {v} is not of type 'string'"),
            ));
        };
        if k.is_empty() || k.chars().count() > 255 || s.chars().count() > 255 {
            return Err(bad(
                "metadata",
                &format!("{k}. Metadata keys and values are 1-255 characters"),
            ));
        }
        out.insert(k.clone(), s.clone());
    }
    Ok(out)
}

fn count(o: &Map<String, Value>, k: &str) -> ApiResult<Option<u32>> {
    match o.get(k) {
        None => Ok(None),
        Some(v) => {
            let n = v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad(k, &format!("{v}. {v} is less than the minimum of 1")))?;
            Ok(Some(u32::try_from(n).unwrap_or(u32::MAX)))
        }
    }
}

pub(super) fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

fn networks(v: Option<&Value>, mv: Microversion) -> ApiResult<Networks> {
    match v {
        None => Ok(Networks::Auto),
        Some(Value::String(s)) if mv.at_least(37) && s == "auto" => Ok(Networks::Auto),
        Some(Value::String(s)) if mv.at_least(37) && s == "none" => Ok(Networks::None),
        Some(Value::Array(list)) => list
            .iter()
            .map(|n| {
                let Value::Object(o) = n else {
                    return Err(bad("networks", &format!("{n}. {n} is not of type 'object'")));
                };
                for k in o.keys() {
                    let tag_ok = k == "tag" && super::rules::device_tags(mv);
                    if !matches!(k.as_str(), "uuid" | "port" | "fixed_ip") && !tag_ok {
                        return Err(bad("networks", &format!("Additional properties are not allowed ('{k}' was unexpected)")));
                    }
                }
                let nic = NicReq {
                    uuid: string(o, "uuid")?,
                    port: string(o, "port")?,
                    fixed_ip: string(o, "fixed_ip")?,
                };
                if let Some(u) = &nic.uuid {
                    if !is_uuid(u) {
                        return Err(ApiError::BadRequest(format!(
                            "Bad networks format: network uuid is not in proper format ({u})"
                        )));
                    }
                }
                if nic.uuid.is_none() && nic.port.is_none() {
                    return Err(ApiError::BadRequest(
                        "Bad networks format: network uuid is not in proper format ()".into(),
                    ));
                }
                if let Some(ip) = &nic.fixed_ip {
                    if ip.parse::<std::net::IpAddr>().is_err() {
                        return Err(ApiError::BadRequest(format!(
                            "Invalid input for field/attribute fixed_ip. Value: {ip}. '{ip}' is not a 'ip-address'"
                        )));
                    }
                }
                Ok(nic)
            })
            .collect::<ApiResult<Vec<_>>>()
            .map(Networks::List),
        Some(v) => Err(bad("networks", &format!("{v}. {v} is not valid under any of the given schemas"))),
    }
}

const CREATE_KEYS_21: &[&str] = &[
    "name",
    "imageRef",
    "flavorRef",
    "networks",
    "key_name",
    "user_data",
    "metadata",
    "availability_zone",
    "min_count",
    "max_count",
    "return_reservation_id",
    "config_drive",
    "security_groups",
    "accessIPv4",
    "accessIPv6",
    "adminPass",
    "OS-DCF:diskConfig",
    "block_device_mapping",
    "block_device_mapping_v2",
    "personality",
];

/// `{"server": {...}}` of a create, and the top-level `os:scheduler_hints`.
pub fn create(body: &Map<String, Value>, mv: Microversion) -> ApiResult<(CreateReq, bool)> {
    let Some(Value::Object(o)) = body.get("server") else {
        return Err(bad("server", "'server' is a required property"));
    };
    super::rules::create(o, mv)?;
    for k in o.keys() {
        let ok = (CREATE_KEYS_21.contains(&k.as_str()) && !(k == "personality" && mv.at_least(57)))
            || (k == "description" && mv.at_least(19))
            || (k == "tags" && mv.at_least(52))
            || (k == "trusted_image_certificates" && mv.at_least(63))
            || (k == "host" && mv.at_least(74))
            || (k == "hypervisor_hostname" && mv.at_least(74))
            || (k == "hostname" && mv.at_least(90));
        if !ok {
            return Err(bad(
                "server",
                &format!("Additional properties are not allowed ('{k}' was unexpected)"),
            ));
        }
    }
    let Some(n) = string(o, "name")? else {
        return Err(bad("server", "'name' is a required property"));
    };
    let Some(flavor_ref) = o.get("flavorRef").and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }) else {
        return Err(bad("server", "'flavorRef' is a required property"));
    };
    if o.contains_key("block_device_mapping") {
        return Err(ApiError::NotImplemented(
            "The legacy block_device_mapping is not implemented in kiln; use block_device_mapping_v2.".into(),
        ));
    }
    let volumes = match o.get("block_device_mapping_v2") {
        None => vec![],
        Some(Value::Array(list)) => super::attachments::block_devices(list)?,
        Some(v) => {
            return Err(bad(
                "block_device_mapping_v2",
                &format!("{v}. {v} is not of type 'array'"),
            ))
        }
    };
    let boots_from_volume = volumes.iter().any(|b| b.boot_index == Some(0));
    let image_ref = if boots_from_volume {
        String::new()
    } else {
        string(o, "imageRef")?.unwrap_or_default()
    };
    if image_ref.is_empty() && !boots_from_volume {
        return Err(ApiError::BadRequest("Missing imageRef attribute".into()));
    }
    if !boots_from_volume && !is_uuid(&image_ref) && !image_ref.contains('/') {
        return Err(ApiError::BadRequest(format!(
            "Invalid input for field/attribute imageRef. Value: {image_ref}. '{image_ref}' is not a 'uuid'"
        )));
    }
    let image_ref = image_ref.rsplit('/').next().unwrap_or_default().to_string();
    let user_data = string(o, "user_data")?;
    if let Some(u) = &user_data {
        if u.len() > MAX_USER_DATA {
            return Err(bad("user_data", "User data too large. User data must be no larger than 65535 bytes once base64 encoded."));
        }
        if base64::engine::general_purpose::STANDARD.decode(u).is_err() {
            return Err(ApiError::BadRequest(
                "User data needs to be valid base 64.".into(),
            ));
        }
    }
    let min = count(o, "min_count")?.unwrap_or(1);
    let max = count(o, "max_count")?.unwrap_or(min);
    if max < min {
        return Err(ApiError::BadRequest(
            "min_count must be <= max_count".into(),
        ));
    }
    let tags: Vec<String> = match o.get("tags") {
        None => vec![],
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("tags", "tags must be strings"))
            })
            .collect::<ApiResult<_>>()?,
        Some(v) => return Err(bad("tags", &format!("{v}. {v} is not of type 'array'"))),
    };
    for t in &tags {
        check_tag(t)?;
    }
    if tags.len() > MAX_TAGS {
        return Err(bad("tags", "too many tags"));
    }
    let security_groups = match o.get("security_groups") {
        None => vec![],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|g| g.get("name").and_then(Value::as_str).map(str::to_string))
            .collect(),
        Some(v) => {
            return Err(bad(
                "security_groups",
                &format!("{v}. {v} is not of type 'array'"),
            ))
        }
    };
    let config_drive = match o.get("config_drive") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => {
            matches!(s.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on")
        }
        Some(v) => {
            return Err(bad(
                "config_drive",
                &format!("{v}. {v} is not of type 'boolean', 'string'"),
            ))
        }
    };
    let return_reservation_id = matches!(o.get("return_reservation_id"), Some(Value::Bool(true)))
        || o.get("return_reservation_id")
            .and_then(Value::as_str)
            .is_some_and(|s| s.eq_ignore_ascii_case("true"));
    let group = body
        .get("os:scheduler_hints")
        .and_then(|h| h.get("group"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let req = CreateReq {
        name: name(&n, "name")?,
        description: if mv.at_least(19) {
            string(o, "description")?
        } else {
            None
        },
        image_ref,
        flavor_ref,
        networks: networks(o.get("networks"), mv)?,
        key_name: string(o, "key_name")?,
        user_data,
        metadata: metadata(o.get("metadata"))?,
        az: string(o, "availability_zone")?.filter(|a| !a.is_empty()),
        min_count: min,
        max_count: max,
        tags,
        config_drive,
        security_groups,
        access_ipv4: string(o, "accessIPv4")?.unwrap_or_default(),
        access_ipv6: string(o, "accessIPv6")?.unwrap_or_default(),
        group,
        volumes,
        hostname: if mv.at_least(90) {
            string(o, "hostname")?
        } else {
            None
        },
        trusted_certs: super::rules::trusted_certs(o, mv)?.flatten(),
    };
    if req.trusted_certs.is_some() && req.image_ref.is_empty() {
        return Err(ApiError::BadRequest(
            super::rules::TRUSTED_CERTS_VOLUME.into(),
        ));
    }
    Ok((req, return_reservation_id))
}
