//! The server view as a function of the negotiated microversion: 2.1 exactly,
//! then each later addition at its boundary (locked 2.9, host_status 2.16,
//! description 2.19, tags 2.26, embedded flavor 2.47, trusted certificates 2.63,
//! server_groups 2.71, locked_reason 2.73, ...).

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha224};
use time::macros::format_description;
use time::OffsetDateTime;

use crate::api::compute::views::{links, nova_time};
use crate::compute::servers::model::{ActionRecord, Server};
use crate::compute::Who;
use crate::microversion::Microversion;

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

/// `addresses`: network name → fixed IPs.
pub fn addresses(s: &Server) -> Value {
    let mut m = Map::new();
    for v in &s.vifs {
        let entry = m
            .entry(v.network_name.clone())
            .or_insert_with(|| Value::Array(vec![]));
        if let Value::Array(list) = entry {
            for ip in &v.ips {
                list.push(json!({
                    "version": if ip.contains(':') { 6 } else { 4 },
                    "addr": ip,
                    "OS-EXT-IPS:type": "fixed",
                    "OS-EXT-IPS-MAC:mac_addr": v.mac,
                }));
            }
        }
    }
    Value::Object(m)
}

/// The entry of `GET /servers`.
pub fn summary(base: &str, s: &Server) -> Value {
    json!({"id": s.id, "name": s.name, "links": links(base, "servers", &s.id)})
}

/// The full server (show, detail, update, rebuild).
pub fn detail(base: &str, s: &Server, who: &Who, mv: Microversion) -> Value {
    let status = s.status();
    let image = if s.image_ref.is_empty() {
        json!("")
    } else {
        json!({"id": s.image_ref, "links": [{"rel": "bookmark", "href": format!("{base}/compute/images/{}", s.image_ref)}]})
    };
    let flavor = if mv.at_least(47) {
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
    };
    let mut v = json!({
        "id": s.id,
        "name": s.name,
        "status": status,
        "tenant_id": s.project_id,
        "user_id": s.user_id,
        "metadata": s.metadata,
        "hostId": host_id(s),
        "image": image,
        "flavor": flavor,
        "created": iso_z(s.created_at),
        "updated": iso_z(s.updated_at),
        "addresses": addresses(s),
        "accessIPv4": s.access_ipv4,
        "accessIPv6": s.access_ipv6,
        "links": links(base, "servers", &s.id),
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": s.az.clone().unwrap_or_default(),
        "config_drive": if s.config_drive { "True" } else { "" },
        "key_name": s.key_name,
        "OS-SRV-USG:launched_at": s.launched_at.map(nova_time),
        "OS-SRV-USG:terminated_at": s.terminated_at.map(nova_time),
        "OS-EXT-STS:task_state": s.task_state,
        "OS-EXT-STS:vm_state": s.vm_state.as_str(),
        "OS-EXT-STS:power_state": s.power_state.code(),
        "os-extended-volumes:volumes_attached": s.volumes.iter().map(|id| {
            if mv.at_least(3) { json!({"id": id, "delete_on_termination": false}) } else { json!({"id": id}) }
        }).collect::<Vec<_>>(),
    });
    let Value::Object(m) = &mut v else { return v };
    if matches!(
        status,
        "ACTIVE" | "BUILD" | "REBUILD" | "RESIZE" | "VERIFY_RESIZE" | "MIGRATING"
    ) {
        m.insert(
            "progress".into(),
            json!(if status == "ACTIVE" { 100 } else { 0 }),
        );
    }
    if !s.security_groups.is_empty() {
        m.insert(
            "security_groups".into(),
            Value::Array(
                s.security_groups
                    .iter()
                    .map(|n| json!({"name": n}))
                    .collect(),
            ),
        );
    }
    if who.admin {
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
            m.insert("OS-EXT-SRV-ATTR:hostname".into(), json!(hostname(&s.name)));
            m.insert("OS-EXT-SRV-ATTR:kernel_id".into(), json!(""));
            m.insert("OS-EXT-SRV-ATTR:ramdisk_id".into(), json!(""));
            m.insert("OS-EXT-SRV-ATTR:root_device_name".into(), json!("/dev/vda"));
            m.insert("OS-EXT-SRV-ATTR:user_data".into(), json!(s.user_data));
        }
    }
    if let Some(f) = &s.fault {
        if status == "ERROR" || status == "DELETED" {
            m.insert(
                "fault".into(),
                json!({"code": f.code, "created": iso_z(f.created), "message": f.message}),
            );
        }
    }
    if mv.at_least(9) {
        m.insert("locked".into(), json!(s.locked));
    }
    if mv.at_least(16) {
        m.insert(
            "host_status".into(),
            json!(if s.host.is_some() { "UP" } else { "" }),
        );
    }
    if mv.at_least(19) {
        m.insert("description".into(), json!(s.description));
    }
    if mv.at_least(26) {
        m.insert("tags".into(), json!(s.tags));
    }
    if mv.at_least(63) {
        m.insert("trusted_image_certificates".into(), Value::Null);
    }
    if mv.at_least(71) {
        m.insert(
            "server_groups".into(),
            json!(s.scheduler_group.iter().collect::<Vec<_>>()),
        );
    }
    if mv.at_least(73) {
        m.insert("locked_reason".into(), json!(s.locked_reason));
    }
    v
}

/// Nova's hostname sanitisation of a display name.
pub fn hostname(name: &str) -> String {
    let h: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let h = h.trim_matches('-').to_string();
    if h.is_empty() {
        "server".into()
    } else {
        h.chars().take(63).collect()
    }
}

/// An os-instance-actions entry (`events` with `show`).
pub fn action(s: &Server, a: &ActionRecord, events: bool) -> Value {
    let mut v = json!({
        "action": a.action,
        "instance_uuid": s.id,
        "request_id": a.request_id,
        "user_id": a.user_id,
        "project_id": a.project_id,
        "start_time": nova_time(a.start_time),
        "message": a.message,
    });
    if events {
        if let Value::Object(m) = &mut v {
            m.insert(
                "events".into(),
                a.events
                    .iter()
                    .map(|e| {
                        json!({
                            "event": e.event,
                            "start_time": nova_time(e.start_time),
                            "finish_time": e.finish_time.map(nova_time),
                            "result": e.result,
                            "traceback": Value::Null,
                        })
                    })
                    .collect(),
            );
        }
    }
    v
}
