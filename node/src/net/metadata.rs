//! The metadata service (169.254.169.254:80 in each network's namespace):
//! Nova's OpenStack layout (`/openstack/<version>/meta_data.json`,
//! `network_data.json`, `user_data`, `vendor_data.json`) and the EC2 layout
//! (`/latest/meta-data/...`, `/latest/user-data`). A guest is known by the
//! source address of its request within the namespace's network, and only
//! ever sees its own server's data.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use kiln_controller::protocol::Spawn;
use serde_json::{json, Value};

/// The versions `/openstack` lists (cloud-init picks the newest it knows);
/// every one serves the same documents as `latest`.
pub const OPENSTACK_VERSIONS: &[&str] = &[
    "2012-08-10",
    "2013-04-04",
    "2013-10-17",
    "2015-10-15",
    "2016-06-30",
    "2016-10-06",
    "2017-02-22",
    "2018-08-27",
    "latest",
];

/// One guest interface as the metadata service knows it.
#[derive(Debug, Clone)]
pub struct Instance {
    pub spawn: Arc<Spawn>,
    /// Network MTU by network id (for `network_data.json`).
    pub mtus: HashMap<String, u32>,
}

/// Who is behind each (network, address), shared by every namespace's server.
#[derive(Debug, Default)]
pub struct Registry {
    by_addr: RwLock<HashMap<(String, Ipv4Addr), Arc<Spawn>>>,
    mtus: RwLock<HashMap<String, u32>>,
}

impl Registry {
    fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
        l.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
        l.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a server's ports (replacing what it had).
    pub fn insert(&self, spawn: &Spawn) {
        self.remove(&spawn.server_id);
        let s = Arc::new(spawn.clone());
        let mut map = Self::write(&self.by_addr);
        for p in &spawn.ports {
            for ip in p.ips.iter().filter_map(|i| i.parse::<Ipv4Addr>().ok()) {
                map.insert((p.network_id.clone(), ip), Arc::clone(&s));
            }
        }
    }

    /// Forgets a server; true when it was known.
    pub fn remove(&self, server_id: &str) -> bool {
        let mut map = Self::write(&self.by_addr);
        let before = map.len();
        map.retain(|_, s| s.server_id != server_id);
        map.len() != before
    }

    /// The port ids of a known server.
    pub fn ports_of(&self, server_id: &str) -> Vec<String> {
        Self::read(&self.by_addr)
            .values()
            .find(|s| s.server_id == server_id)
            .map(|s| s.ports.iter().map(|p| p.port_id.clone()).collect())
            .unwrap_or_default()
    }

    /// Whether a server is known.
    pub fn has(&self, server_id: &str) -> bool {
        Self::read(&self.by_addr)
            .values()
            .any(|s| s.server_id == server_id)
    }

    pub fn set_mtu(&self, network_id: &str, mtu: u32) {
        Self::write(&self.mtus).insert(network_id.to_string(), mtu);
    }

    /// The server behind `ip` on `network_id`.
    pub fn lookup(&self, network_id: &str, ip: Ipv4Addr) -> Option<Instance> {
        let spawn = Self::read(&self.by_addr)
            .get(&(network_id.to_string(), ip))
            .cloned()?;
        Some(Instance {
            spawn,
            mtus: Self::read(&self.mtus).clone(),
        })
    }
}

#[derive(Clone)]
struct Served {
    network_id: String,
    registry: Arc<Registry>,
}

/// The router of one network's metadata server.
pub fn router(network_id: &str, registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/{*path}", get(document))
        .with_state(Served {
            network_id: network_id.to_string(),
            registry,
        })
}

async fn root() -> Response {
    text("openstack\nlatest\n".to_string())
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn json_doc(v: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not Found\n").into_response()
}

async fn document(
    State(s): State<Served>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(path): Path<String>,
) -> Response {
    let ip = match peer.ip() {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None => return not_found(),
        },
    };
    let Some(inst) = s.registry.lookup(&s.network_id, ip) else {
        return not_found();
    };
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        ["openstack"] => text(OPENSTACK_VERSIONS.join("\n") + "\n"),
        ["openstack", v] if OPENSTACK_VERSIONS.contains(v) => text(
            "meta_data.json\nnetwork_data.json\nuser_data\nvendor_data.json\nvendor_data2.json\n"
                .into(),
        ),
        ["openstack", v, file] if OPENSTACK_VERSIONS.contains(v) => openstack(&inst, ip, file),
        ["latest" | "2009-04-04", rest @ ..] => ec2(&inst, ip, rest),
        _ => not_found(),
    }
}

fn user_data(inst: &Instance) -> Option<Vec<u8>> {
    let raw = inst.spawn.user_data.as_deref()?;
    let engine = base64::engine::general_purpose::STANDARD;
    let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    Some(
        engine
            .decode(compact)
            .unwrap_or_else(|_| raw.as_bytes().to_vec()),
    )
}

fn key_name(inst: &Instance) -> String {
    inst.spawn
        .instance
        .key_name
        .clone()
        .unwrap_or_else(|| "key".into())
}

fn hostname(inst: &Instance) -> String {
    let h = &inst.spawn.instance.hostname;
    if h.is_empty() {
        inst.spawn.name.clone()
    } else {
        h.clone()
    }
}

fn openstack(inst: &Instance, _ip: Ipv4Addr, file: &str) -> Response {
    match file {
        "meta_data.json" => json_doc(meta_data(inst)),
        "network_data.json" => json_doc(network_data(inst)),
        "vendor_data.json" | "vendor_data2.json" => json_doc(json!({})),
        "user_data" => match user_data(inst) {
            Some(b) => ([(header::CONTENT_TYPE, "application/octet-stream")], b).into_response(),
            None => not_found(),
        },
        _ => not_found(),
    }
}

/// Nova's `meta_data.json`.
pub fn meta_data(inst: &Instance) -> Value {
    let s = &inst.spawn;
    let (public_keys, keys) = match &s.key {
        Some(k) => {
            let name = key_name(inst);
            (
                json!({ name.clone(): k }),
                json!([{"name": name, "type": "ssh", "data": k}]),
            )
        }
        None => (json!({}), json!([])),
    };
    json!({
        "uuid": s.server_id,
        "name": s.name,
        "hostname": hostname(inst),
        "project_id": s.instance.project_id,
        "availability_zone": s.instance.availability_zone,
        "launch_index": s.instance.launch_index,
        "public_keys": public_keys,
        "keys": keys,
        "meta": s.metadata,
        "devices": [],
    })
}

/// Nova's `network_data.json`: one physical link per port, DHCP on each.
pub fn network_data(inst: &Instance) -> Value {
    let mut links = Vec::new();
    let mut networks = Vec::new();
    for (i, p) in inst.spawn.ports.iter().enumerate() {
        let link = kiln_netdp::link::names::tap(&p.port_id);
        let mut l = json!({
            "id": link, "vif_id": p.port_id, "type": "phy",
            "ethernet_mac_address": p.mac,
        });
        if let Some(m) = inst.mtus.get(&p.network_id) {
            l["mtu"] = json!(m);
        }
        links.push(l);
        networks.push(json!({
            "id": format!("network{i}"), "type": "ipv4_dhcp", "link": link,
            "network_id": p.network_id,
        }));
    }
    json!({"links": links, "networks": networks, "services": []})
}

const EC2_KEYS: &[&str] = &[
    "ami-launch-index",
    "hostname",
    "instance-id",
    "local-hostname",
    "local-ipv4",
    "placement/",
    "public-keys/",
];

fn ec2(inst: &Instance, ip: Ipv4Addr, rest: &[&str]) -> Response {
    let s = &inst.spawn;
    match rest {
        [] => text("meta-data/\nuser-data\n".into()),
        ["user-data"] => match user_data(inst) {
            Some(b) => ([(header::CONTENT_TYPE, "application/octet-stream")], b).into_response(),
            None => not_found(),
        },
        ["meta-data"] => text(EC2_KEYS.join("\n") + "\n"),
        ["meta-data", "ami-launch-index"] => text(s.instance.launch_index.to_string()),
        ["meta-data", "hostname" | "local-hostname"] => text(hostname(inst)),
        ["meta-data", "instance-id"] => text(s.server_id.clone()),
        ["meta-data", "local-ipv4"] => text(ip.to_string()),
        ["meta-data", "placement"] => text("availability-zone\n".into()),
        ["meta-data", "placement", "availability-zone"] => {
            text(s.instance.availability_zone.clone())
        }
        ["meta-data", "public-keys", rest @ ..] => match (&s.key, rest) {
            (None, _) => not_found(),
            (Some(_), []) => text(format!("0={}\n", key_name(inst))),
            (Some(_), ["0"]) => text("openssh-key\n".into()),
            (Some(k), ["0", "openssh-key"]) => text(format!("{}\n", k.trim_end())),
            _ => not_found(),
        },
        _ => not_found(),
    }
}
