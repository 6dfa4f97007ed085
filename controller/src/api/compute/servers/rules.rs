//! Which request keys and values each microversion allows on `/servers`: the
//! create rules beyond the key list (`parse.rs`), list query parameters, and the
//! bodies of update and of the actions whose shape changed (lock 2.73, unshelve
//! 2.77/2.91, rebuild 2.19/2.54/2.57/2.63/2.90).
//!
//! | version | request change |
//! |---|---|
//! | 2.19 | `description` in create, update, rebuild |
//! | 2.26 | `tags`, `tags-any`, `not-tags`, `not-tags-any` list filters |
//! | 2.32, 2.42+ | device `tag` on networks (and block devices) |
//! | 2.37 | `networks` required in create; `"auto"`/`"none"` |
//! | 2.52 | `tags` in create |
//! | 2.54 | `key_name` in rebuild |
//! | 2.57 | `personality` gone from create and rebuild; `user_data` in rebuild |
//! | 2.63 | `trusted_image_certificates` in create and rebuild |
//! | 2.66 | `changes-before` list filter |
//! | 2.73 | `locked` list filter; `lock` takes `locked_reason` |
//! | 2.74 | `host`, `hypervisor_hostname` in create |
//! | 2.75 | unknown list query parameters are a 400 |
//! | 2.77 | `unshelve` takes `availability_zone` |
//! | 2.90 | `hostname` in create, update, rebuild (one DNS label) |
//! | 2.91 | `unshelve` takes `host`, and `availability_zone: null` |
//! | 2.94 | `hostname` may be an FQDN |

use serde_json::{Map, Value};

use super::parse::bad;
use crate::compute::servers::unshelve::Target;
use crate::error::{ApiError, ApiResult};
use crate::microversion::Microversion;

fn str_field(o: &Map<String, Value>, k: &str) -> ApiResult<Option<String>> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(bad(k, &format!("{v}. {v} is not of type 'string'"))),
    }
}

/// Device `tag`s on networks and block devices: 2.32, then again from 2.42
/// (2.33–2.41 dropped them by mistake).
pub fn device_tags(mv: Microversion) -> bool {
    mv == Microversion::new(2, 32) || mv.at_least(42)
}

/// Hostname rules: a single DNS label at 2.90–2.93, an FQDN of up to 255
/// characters from 2.94.
pub fn hostname(h: &str, mv: Microversion) -> ApiResult<()> {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
    };
    let ok = if mv.at_least(94) {
        h.len() <= 255 && h.split('.').all(label)
    } else {
        label(h)
    };
    if ok {
        Ok(())
    } else {
        Err(bad(
            "hostname",
            &format!("{h}. '{h}' does not match the hostname pattern"),
        ))
    }
}

/// The create rules that depend on the version beyond which keys exist:
/// `networks` required from 2.37, `hostname` checks (2.90/2.94) and not with
/// several servers, `description` at most 255 characters (2.19).
pub fn create(o: &Map<String, Value>, mv: Microversion) -> ApiResult<()> {
    if mv.at_least(37) && !o.contains_key("networks") {
        return Err(bad("server", "'networks' is a required property"));
    }
    if mv.at_least(90) {
        if let Some(h) = str_field(o, "hostname")? {
            hostname(&h, mv)?;
            let many = o
                .get("max_count")
                .and_then(|v| {
                    v.as_u64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                })
                .is_some_and(|n| n > 1);
            if many {
                return Err(ApiError::BadRequest(
                    "Unable to allocate a single hostname to multiple instances".into(),
                ));
            }
        }
    }
    if mv.at_least(19) {
        if let Some(d) = str_field(o, "description")? {
            if d.chars().count() > 255 {
                return Err(bad("description", &format!("{d}. '{d}' is too long")));
            }
        }
    }
    Ok(())
}

/// Nova's limit on `trusted_image_certificates`.
pub const MAX_TRUSTED_CERTS: usize = 50;

/// `trusted_image_certificates` (2.63): absent (`None`), `null`
/// (`Some(None)`) or 1–50 unique non-empty strings (Nova's schema).
pub fn trusted_certs(
    o: &Map<String, Value>,
    mv: Microversion,
) -> ApiResult<Option<Option<Vec<String>>>> {
    const K: &str = "trusted_image_certificates";
    if !mv.at_least(63) {
        return Ok(None);
    }
    let list = match o.get(K) {
        None => return Ok(None),
        Some(Value::Null) => return Ok(Some(None)),
        Some(Value::Array(a)) => a,
        Some(v) => return Err(bad(K, &format!("{v}. {v} is not of type 'array', 'null'"))),
    };
    let v = Value::Array(list.clone());
    if list.is_empty() {
        return Err(bad(K, &format!("{v}. {v} is too short")));
    }
    if list.len() > MAX_TRUSTED_CERTS {
        return Err(bad(K, &format!("{v}. {v} is too long")));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        match item {
            Value::String(s) if !s.is_empty() => out.push(s.clone()),
            Value::String(_) => return Err(bad(&i.to_string(), ". '' is too short")),
            other => {
                return Err(bad(
                    &i.to_string(),
                    &format!("{other}. {other} is not of type 'string'"),
                ))
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    if !out.iter().all(|c| seen.insert(c)) {
        return Err(bad(K, &format!("{v}. {v} has non-unique elements")));
    }
    Ok(Some(Some(out)))
}

/// Nova's answer to trusted certificates for a server booted from a volume.
pub const TRUSTED_CERTS_VOLUME: &str =
    "Image certificate validation is not supported for volume-backed servers.";

/// Server list query parameters Nova's schema knows (unknown ones are a 400
/// from 2.75; before, they were ignored).
const LIST_PARAMS: &[&str] = &[
    "user_id",
    "project_id",
    "tenant_id",
    "launch_index",
    "image_ref",
    "image",
    "kernel_id",
    "ramdisk_id",
    "hostname",
    "key_name",
    "power_state",
    "vm_state",
    "task_state",
    "host",
    "node",
    "flavor",
    "reservation_id",
    "launched_at",
    "terminated_at",
    "availability_zone",
    "name",
    "display_name",
    "description",
    "display_description",
    "locked_by",
    "uuid",
    "root_device_name",
    "config_drive",
    "access_ip_v4",
    "access_ip_v6",
    "auto_disk_config",
    "progress",
    "sort_key",
    "sort_dir",
    "all_tenants",
    "soft_deleted",
    "deleted",
    "status",
    "changes-since",
    "ip",
    "ip6",
    "created_at",
    "block_device_mapping",
    "services",
    "metadata",
    "pci_devices",
    "info_cache",
    "security_groups",
    "instance_name",
    "tags",
    "tags-any",
    "not-tags",
    "not-tags-any",
    "changes-before",
    "locked",
    "limit",
    "marker",
];

/// The version-dependent list filters: `changes-before` (2.66, a timestamp in
/// microseconds) and `locked` (2.73); unknown parameters are refused from 2.75.
pub struct ListFilters {
    pub changes_before: Option<i64>,
    pub locked: Option<bool>,
}

pub fn list_filters<'a>(
    mut params: impl Iterator<Item = (&'a str, &'a str)>,
    mv: Microversion,
) -> ApiResult<ListFilters> {
    let mut out = ListFilters {
        changes_before: None,
        locked: None,
    };
    params.try_for_each(|(k, v)| {
        match k {
            "changes-before" if mv.at_least(66) => {
                out.changes_before = Some(crate::clock::parse_rfc3339(v).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "Invalid input for query parameters changes-before. Value: {v}. '{v}' is not a 'date-time'"
                    ))
                })?);
            }
            "locked" if mv.at_least(73) => {
                out.locked = Some(match v.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" | "t" | "y" => true,
                    "false" | "0" | "no" | "off" | "f" | "n" => false,
                    _ => {
                        return Err(ApiError::BadRequest(format!(
                            "Invalid input for query parameters locked. Value: {v}. '{v}' is not one of ['true', 'false', 'True', 'False', '1', '0', 'yes', 'no', 'on', 'off']"
                        )))
                    }
                });
            }
            _ if mv.at_least(75) && !LIST_PARAMS.contains(&k) => {
                return Err(ApiError::BadRequest(format!(
                    "Invalid input for query parameters {k}. Value: {v}. Additional properties are not allowed ('{k}' was unexpected)"
                )));
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(out)
}

fn object<'a>(name: &str, arg: &'a Value) -> ApiResult<Option<&'a Map<String, Value>>> {
    match arg {
        Value::Null => Ok(None),
        Value::Object(o) => Ok(Some(o)),
        v => Err(bad(
            name,
            &format!("{v}. {v} is not of type 'object', 'null'"),
        )),
    }
}

fn only(name: &str, o: &Map<String, Value>, allowed: &[&str]) -> ApiResult<()> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad(
            name,
            &format!("Additional properties are not allowed ('{k}' was unexpected)"),
        )),
        None => Ok(()),
    }
}

/// `lock`'s body: anything before 2.73 (ignored); from 2.73 `null` or
/// `{"locked_reason": "..."}` (1–255 characters).
pub fn lock(arg: &Value, mv: Microversion) -> ApiResult<Option<String>> {
    if !mv.at_least(73) {
        return Ok(None);
    }
    let Some(o) = object("lock", arg)? else {
        return Ok(None);
    };
    only("lock", o, &["locked_reason"])?;
    let reason = str_field(o, "locked_reason")?;
    if let Some(r) = &reason {
        if r.is_empty() || r.chars().count() > 255 {
            return Err(bad(
                "locked_reason",
                &format!("{r}. '{r}' must be 1 to 255 characters"),
            ));
        }
    }
    Ok(reason)
}

/// `unshelve`'s body: ignored before 2.77; from 2.77 `null` or
/// `{"availability_zone": "az"}`; from 2.91 also `host` and a `null` zone.
pub fn unshelve(arg: &Value, mv: Microversion) -> ApiResult<Target> {
    if !mv.at_least(77) {
        return Ok(Target::default());
    }
    let Some(o) = object("unshelve", arg)? else {
        return Ok(Target::default());
    };
    if mv.at_least(91) {
        only("unshelve", o, &["availability_zone", "host"])?;
        if o.is_empty() {
            return Err(bad("unshelve", "{} does not have enough properties"));
        }
        if let Some(h) = str_field(o, "host")? {
            hostname(&h, Microversion::new(2, 94))?;
        }
    } else {
        only("unshelve", o, &["availability_zone"])?;
        if !o.contains_key("availability_zone") {
            return Err(bad(
                "unshelve",
                "'availability_zone' is a required property",
            ));
        }
        if o.get("availability_zone").is_some_and(Value::is_null) {
            return Err(bad(
                "availability_zone",
                "None. None is not of type 'string'",
            ));
        }
    }
    let az = str_field(o, "availability_zone")?;
    Ok(Target {
        az: o.contains_key("availability_zone").then_some(az),
        host: str_field(o, "host")?,
    })
}

/// What a rebuild may change beyond the image, per version.
#[derive(Debug, Default)]
pub struct Rebuild {
    pub name: Option<String>,
    /// 2.19; `Some(None)` clears it.
    pub description: Option<Option<String>>,
    /// 2.54; `Some(None)` removes the key pair.
    pub key_name: Option<Option<String>>,
    /// 2.57; `Some(None)` clears it.
    pub user_data: Option<Option<String>>,
    /// 2.90.
    pub hostname: Option<String>,
    /// 2.63; `Some(None)` clears them.
    pub trusted_certs: Option<Option<Vec<String>>>,
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
    pub admin_pass: Option<String>,
}

/// The keys rebuild accepts at `mv` (beyond `imageRef`, checked by the caller).
pub fn rebuild(o: &Map<String, Value>, mv: Microversion) -> ApiResult<Rebuild> {
    let mut allowed = vec![
        "imageRef",
        "name",
        "adminPass",
        "metadata",
        "preserve_ephemeral",
        "OS-DCF:diskConfig",
        "accessIPv4",
        "accessIPv6",
    ];
    if !mv.at_least(57) {
        allowed.push("personality");
    }
    for (min, key) in [
        (19, "description"),
        (54, "key_name"),
        (57, "user_data"),
        (63, "trusted_image_certificates"),
        (90, "hostname"),
    ] {
        if mv.at_least(min) {
            allowed.push(key);
        }
    }
    only("rebuild", o, &allowed)?;
    let nullable = |k: &str| -> ApiResult<Option<Option<String>>> {
        if o.contains_key(k) {
            str_field(o, k).map(Some)
        } else {
            Ok(None)
        }
    };
    let r = Rebuild {
        name: match str_field(o, "name")? {
            Some(n) => Some(super::parse::name(&n, "name")?),
            None => None,
        },
        description: nullable("description")?,
        key_name: nullable("key_name")?,
        user_data: nullable("user_data")?,
        hostname: str_field(o, "hostname")?,
        trusted_certs: trusted_certs(o, mv)?,
        metadata: match o.get("metadata") {
            Some(m) => Some(super::parse::metadata(Some(m))?),
            None => None,
        },
        admin_pass: str_field(o, "adminPass")?,
    };
    if let Some(h) = &r.hostname {
        hostname(h, mv)?;
    }
    if let Some(Some(d)) = &r.description {
        if d.chars().count() > 255 {
            return Err(bad("description", &format!("{d}. '{d}' is too long")));
        }
    }
    if let Some(Some(u)) = &r.user_data {
        if u.len() > super::parse::MAX_USER_DATA {
            return Err(bad("user_data", "User data too large. User data must be no larger than 65535 bytes once base64 encoded."));
        }
        use base64::Engine;
        if base64::engine::general_purpose::STANDARD.decode(u).is_err() {
            return Err(ApiError::BadRequest(
                "User data needs to be valid base 64.".into(),
            ));
        }
    }
    Ok(r)
}
