//! The server views as a function of the negotiated microversion and of the call
//! that answers (show, list detail, update, rebuild), field by field as Nova
//! builds them, plus os-instance-actions entries.
//!
//! | version | change in the server views |
//! |---|---|
//! | 2.1  | base view; `OS-EXT-SRV-ATTR:{host,instance_name,hypervisor_hostname}` for admins |
//! | 2.3  | admins also get `reservation_id launch_index hostname kernel_id ramdisk_id root_device_name user_data` (not `user_data` in rebuild); `volumes_attached[].delete_on_termination` |
//! | 2.9  | `locked` |
//! | 2.16 | `host_status` (admins: `os_compute_api:servers:show:host_status`) |
//! | 2.19 | `description` |
//! | 2.26 | `tags` |
//! | 2.47 | `flavor` embedded (`vcpus ram disk ephemeral swap original_name extra_specs`) instead of `{id, links}` |
//! | 2.54 | rebuild answers `key_name` |
//! | 2.57 | rebuild answers `user_data` |
//! | 2.63 | `trusted_image_certificates` (the list given at create/rebuild, or null) |
//! | 2.71 | `server_groups` in show, update and rebuild (never in list detail) |
//! | 2.73 | `locked_reason` |
//! | 2.75 | update and rebuild answer every field show does (below: no AZ, config_drive, key_name, usage, security groups, extended status/attributes/volumes/host_status, and addresses without `OS-EXT-IPS*`) |
//! | 2.90 | `OS-EXT-SRV-ATTR:hostname` for every caller, not only admins |
//! | 2.96 | `pinned_availability_zone` |
//!
//! Actions: `image_id` body and no Location for createImage from 2.45
//! (`actions.rs`); instance-action `updated_at` 2.58, events for non-admins 2.51,
//! event `host`/`hostId` 2.62, event `details` 2.84.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha224};
use time::macros::format_description;
use time::OffsetDateTime;

use crate::api::compute::views::{links, nova_time};
use crate::compute::servers::model::{ActionRecord, Server};
use crate::compute::Who;
use crate::microversion::Microversion;
use crate::protocol::VmState;

/// The call a full server view answers: Nova trims update and rebuild answers
/// below 2.75 and shows `server_groups` (2.71) everywhere but in list detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Show,
    Detail,
    Update,
    Rebuild,
}

/// Nova's `created`/`updated`: seconds and `Z`.
pub fn iso_z(micros: i64) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// Nova's hostId: sha224(project + host), empty without a host.
pub fn host_id(s: &Server) -> String {
    match &s.host {
        Some(h) => {
            let mut d = Sha224::new();
            d.update(s.project_id.as_bytes());
            d.update(h.as_bytes());
            d.finalize().iter().map(|b| format!("{b:02x}")).collect()
        }
        None => String::new(),
    }
}

/// `addresses`: network name → fixed IPs (with the `OS-EXT-IPS*` keys).
pub fn addresses(s: &Server) -> Value {
    address_map(s, true)
}

/// `addresses`, `extended` adding `OS-EXT-IPS:type` and `OS-EXT-IPS-MAC:mac_addr`
/// (update and rebuild below 2.75 leave them out). Empty while building.
fn address_map(s: &Server, extended: bool) -> Value {
    let mut m = Map::new();
    if s.vm_state == VmState::Building {
        return Value::Object(m);
    }
    for v in &s.vifs {
        let entry = m
            .entry(v.network_name.clone())
            .or_insert_with(|| Value::Array(vec![]));
        if let Value::Array(list) = entry {
            for ip in &v.ips {
                let version = if ip.contains(':') { 6 } else { 4 };
                list.push(if extended {
                    json!({
                        "version": version,
                        "addr": ip,
                        "OS-EXT-IPS:type": "fixed",
                        "OS-EXT-IPS-MAC:mac_addr": v.mac,
                    })
                } else {
                    json!({"version": version, "addr": ip})
                });
            }
        }
    }
    Value::Object(m)
}

/// The entry of `GET /servers`.
pub fn summary(base: &str, s: &Server) -> Value {
    json!({"id": s.id, "name": s.name, "links": links(base, "servers", &s.id)})
}

/// One `os-extended-volumes:volumes_attached` entry; `delete_on_termination`
/// from 2.3.
pub fn volume_attached(id: &str, delete_on_termination: bool, mv: Microversion) -> Value {
    if mv.at_least(3) {
        json!({"id": id, "delete_on_termination": delete_on_termination})
    } else {
        json!({"id": id})
    }
}

fn flavor(base: &str, s: &Server, mv: Microversion) -> Value {
    if mv.at_least(47) {
        json!({
            "vcpus": s.flavor.vcpus,
            "ram": s.flavor.ram,
            "disk": s.flavor.disk,
            "ephemeral": s.flavor.ephemeral,
            "swap": s.flavor.swap,
            "original_name": s.flavor.name,
            "extra_specs": s.flavor.extra_specs,
        })
    } else {
        json!({"id": s.flavor.id, "links": [{"rel": "bookmark", "href": format!("{base}/compute/flavors/{}", s.flavor.id)}]})
    }
}

fn image(base: &str, s: &Server) -> Value {
    if s.image_ref.is_empty() {
        json!("")
    } else {
        json!({"id": s.image_ref, "links": [{"rel": "bookmark", "href": format!("{base}/compute/images/{}", s.image_ref)}]})
    }
}

/// The server's hostname: the one it was given (2.90) or its sanitised name.
pub fn server_hostname(s: &Server) -> String {
    s.hostname.clone().unwrap_or_else(|| hostname(&s.name))
}

/// The full server of list detail (`GET /servers/detail`).
pub fn detail(base: &str, s: &Server, who: &Who, mv: Microversion) -> Value {
    full(base, s, who, mv, Call::Detail)
}

/// The full server as `call` answers it at `mv`.
pub fn full(base: &str, s: &Server, who: &Who, mv: Microversion, call: Call) -> Value {
    let status = s.status();
    // Update and rebuild answered a trimmed view until 2.75.
    let all = matches!(call, Call::Show | Call::Detail) || mv.at_least(75);
    let mut v = json!({
        "id": s.id,
        "name": s.name,
        "status": status,
        "tenant_id": s.project_id,
        "user_id": s.user_id,
        "metadata": s.metadata,
        "hostId": host_id(s),
        "image": image(base, s),
        "flavor": flavor(base, s, mv),
        "created": iso_z(s.created_at),
        "updated": iso_z(s.updated_at),
        "addresses": address_map(s, all),
        "accessIPv4": s.access_ipv4,
        "accessIPv6": s.access_ipv6,
        "links": links(base, "servers", &s.id),
        "OS-DCF:diskConfig": "MANUAL",
    });
    let Value::Object(m) = &mut v else { return v };
    if let Some(f) = &s.fault {
        if status == "ERROR" || status == "DELETED" {
            m.insert(
                "fault".into(),
                json!({"code": f.code, "created": iso_z(f.created), "message": f.message}),
            );
        }
    }
    if matches!(
        status,
        "ACTIVE" | "BUILD" | "REBUILD" | "RESIZE" | "VERIFY_RESIZE" | "MIGRATING"
    ) {
        m.insert(
            "progress".into(),
            json!(if status == "ACTIVE" { 100 } else { 0 }),
        );
    }
    if all {
        m.insert(
            "OS-EXT-AZ:availability_zone".into(),
            json!(s.az.clone().unwrap_or_default()),
        );
        m.insert(
            "config_drive".into(),
            json!(if s.config_drive { "True" } else { "" }),
        );
    }
    if all || (call == Call::Rebuild && mv.at_least(54)) {
        m.insert("key_name".into(), json!(s.key_name));
    }
    if all {
        m.insert(
            "OS-SRV-USG:launched_at".into(),
            json!(s.launched_at.map(nova_time)),
        );
        m.insert(
            "OS-SRV-USG:terminated_at".into(),
            json!(s.terminated_at.map(nova_time)),
        );
        if !s.security_groups.is_empty() {
            let groups: Vec<Value> = s
                .security_groups
                .iter()
                .map(|n| json!({"name": n}))
                .collect();
            m.insert("security_groups".into(), Value::Array(groups));
        }
        if who.admin {
            extended_attributes(m, s, mv, call);
        }
        m.insert("OS-EXT-STS:task_state".into(), json!(s.task_state));
        m.insert("OS-EXT-STS:vm_state".into(), json!(s.vm_state.as_str()));
        m.insert("OS-EXT-STS:power_state".into(), json!(s.power_state.code()));
        let volumes: Vec<Value> = s
            .bdms
            .iter()
            .map(|b| volume_attached(&b.volume_id, b.delete_on_termination, mv))
            .collect();
        m.insert(
            "os-extended-volumes:volumes_attached".into(),
            Value::Array(volumes),
        );
        if mv.at_least(16) && who.admin {
            m.insert(
                "host_status".into(),
                json!(if s.host.is_some() { "UP" } else { "" }),
            );
        }
    }
    if mv.at_least(9) {
        m.insert("locked".into(), json!(s.locked));
    }
    if mv.at_least(73) {
        m.insert("locked_reason".into(), json!(s.locked_reason));
    }
    if mv.at_least(19) {
        m.insert("description".into(), json!(s.description));
    }
    if mv.at_least(26) {
        m.insert("tags".into(), json!(s.tags));
    }
    if mv.at_least(63) {
        m.insert("trusted_image_certificates".into(), json!(s.trusted_certs));
    }
    if mv.at_least(71) && call != Call::Detail {
        m.insert(
            "server_groups".into(),
            json!(s.scheduler_group.iter().collect::<Vec<_>>()),
        );
    }
    if mv.at_least(90) {
        m.insert("OS-EXT-SRV-ATTR:hostname".into(), json!(server_hostname(s)));
    }
    if mv.at_least(96) {
        m.insert("pinned_availability_zone".into(), json!(s.pinned_az));
    }
    v
}

/// The admin-only `OS-EXT-SRV-ATTR:*` keys (2.1, more from 2.3).
fn extended_attributes(m: &mut Map<String, Value>, s: &Server, mv: Microversion, call: Call) {
    m.insert("OS-EXT-SRV-ATTR:host".into(), json!(s.host));
    m.insert(
        "OS-EXT-SRV-ATTR:instance_name".into(),
        json!(s.instance_name()),
    );
    m.insert("OS-EXT-SRV-ATTR:hypervisor_hostname".into(), json!(s.host));
    if mv.at_least(3) {
        m.insert(
            "OS-EXT-SRV-ATTR:reservation_id".into(),
            json!(s.reservation_id),
        );
        m.insert("OS-EXT-SRV-ATTR:launch_index".into(), json!(s.launch_index));
        m.insert("OS-EXT-SRV-ATTR:hostname".into(), json!(server_hostname(s)));
        m.insert("OS-EXT-SRV-ATTR:kernel_id".into(), json!(""));
        m.insert("OS-EXT-SRV-ATTR:ramdisk_id".into(), json!(""));
        m.insert("OS-EXT-SRV-ATTR:root_device_name".into(), json!("/dev/vda"));
        // Rebuild adds `user_data` itself (2.57), without the prefix.
        if call != Call::Rebuild {
            m.insert("OS-EXT-SRV-ATTR:user_data".into(), json!(s.user_data));
        }
    }
}

/// Nova's hostname sanitisation of a display name: spaces, underscores and dots
/// become `-`, other characters outside `[a-z0-9-]` go, at most 63 characters.
pub fn hostname(name: &str) -> String {
    let h: String = name
        .to_ascii_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' | '_' | '.' => Some('-'),
            c if c.is_ascii_alphanumeric() || c == '-' => Some(c),
            _ => None,
        })
        .collect();
    let h: String = h.trim_matches('-').chars().take(63).collect();
    if h.is_empty() {
        "server".into()
    } else {
        h
    }
}

/// When an instance action last changed (its last event's end or start).
pub fn action_updated(a: &ActionRecord) -> i64 {
    a.events
        .iter()
        .map(|e| e.finish_time.unwrap_or(e.start_time))
        .max()
        .unwrap_or(a.start_time)
}

/// An os-instance-actions entry (`events` with `show`): `updated_at` from 2.58;
/// events for admins, for everyone from 2.51 (`traceback` stays admin-only);
/// event `hostId` (and `host` for admins) from 2.62, `details` from 2.84.
pub fn action(s: &Server, a: &ActionRecord, events: bool, who: &Who, mv: Microversion) -> Value {
    let mut v = json!({
        "action": a.action,
        "instance_uuid": s.id,
        "request_id": a.request_id,
        "user_id": a.user_id,
        "project_id": a.project_id,
        "start_time": nova_time(a.start_time),
        "message": a.message,
    });
    let Value::Object(m) = &mut v else { return v };
    if mv.at_least(58) {
        m.insert("updated_at".into(), json!(nova_time(action_updated(a))));
    }
    if events && (who.admin || mv.at_least(51)) {
        let list: Vec<Value> = a
            .events
            .iter()
            .map(|e| {
                let mut ev = json!({
                    "event": e.event,
                    "start_time": nova_time(e.start_time),
                    "finish_time": e.finish_time.map(nova_time),
                    "result": e.result,
                });
                if let Value::Object(o) = &mut ev {
                    if who.admin {
                        o.insert("traceback".into(), Value::Null);
                    }
                    if mv.at_least(62) {
                        o.insert("hostId".into(), json!(host_id(s)));
                        if who.admin {
                            o.insert("host".into(), json!(s.host.clone().unwrap_or_default()));
                        }
                    }
                    if mv.at_least(84) {
                        o.insert("details".into(), Value::Null);
                    }
                }
                ev
            })
            .collect();
        m.insert("events".into(), Value::Array(list));
    }
    v
}
