//! Server-test helpers: a glance image, a fake node that accepts every call,
//! node registration and the node's state reports (the test plays the node).
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use kiln_controller::image::model::Image;
use kiln_controller::image::tables::IMAGES;
use kiln_controller::protocol::{PowerState, Register, StateReport, VmState, VERSION};
use serde_json::Value;

use super::Cloud;

pub const IMAGE: &str = "6b7a3c1e-5f0a-4d8e-9c2b-0a1b2c3d4e5f";

/// An HTTP listener that accepts any node call (the test plays the node's reports).
pub async fn fake_node() -> String {
    let app = axum::Router::new().fallback(|| async { StatusCode::ACCEPTED });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

pub async fn node_call(cloud: &Cloud, path: &str, body: Value, secret: Option<&str>) -> StatusCode {
    let auth = secret.map(|s| format!("Bearer {s}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    cloud
        .raw(Method::POST, path, None, Some(body.to_string()), &headers)
        .await
        .0
}

pub async fn register(cloud: &Cloud, id: &str, ram_mb: u64, url: &str) {
    register_in(cloud, id, ram_mb, url, "nova", &[]).await;
}

/// Registers node `id` (8 vCPUs, `ram_mb`, 100 GB) in zone `az` with `caps`.
pub async fn register_in(cloud: &Cloud, id: &str, ram_mb: u64, url: &str, az: &str, caps: &[&str]) {
    let reg = Register {
        node_id: id.into(),
        host: id.into(),
        vcpus: 8,
        ram_mb,
        disk_gb: 100,
        az: az.into(),
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        driver: "sim".into(),
        protocol: VERSION,
        url: format!("{url}/kiln-node/v1/{id}"),
        tunnel_ip: None,
    };
    let secret = cloud.state.nodes.secret().to_string();
    let s = node_call(
        cloud,
        "/compute/kiln/v1/nodes",
        serde_json::to_value(&reg).unwrap(),
        Some(&secret),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

pub async fn report(
    cloud: &Cloud,
    node: &str,
    id: &str,
    vm: VmState,
    fault: Option<&str>,
    concludes: &str,
) {
    report_on(cloud, node, id, vm, fault, concludes, None).await
}

/// A report that names what it concludes (a volume, port or image id).
pub async fn report_on(
    cloud: &Cloud,
    node: &str,
    id: &str,
    vm: VmState,
    fault: Option<&str>,
    concludes: &str,
    subject: Option<&str>,
) {
    let r = StateReport {
        server_id: id.into(),
        vm_state: vm,
        power_state: if vm == VmState::Active {
            PowerState::Running
        } else {
            PowerState::NoState
        },
        task_state: None,
        fault: fault.map(str::to_string),
        concludes: Some(concludes.into()),
        console_available: true,
        at: 1,
        subject: subject.map(str::to_string),
    };
    let secret = cloud.state.nodes.secret().to_string();
    let s = node_call(
        cloud,
        &format!("/compute/kiln/v1/nodes/{node}/servers/{id}/state"),
        serde_json::to_value(&r).unwrap(),
        Some(&secret),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
}

pub fn add_image(cloud: &Cloud) {
    let img = Image {
        id: IMAGE.into(),
        name: Some("cirros".into()),
        status: "active".into(),
        visibility: "public".into(),
        protected: false,
        os_hidden: false,
        owner: None,
        disk_format: Some("raw".into()),
        container_format: Some("bare".into()),
        min_disk: 0,
        min_ram: 0,
        size: Some(1),
        virtual_size: None,
        checksum: None,
        os_hash_algo: None,
        os_hash_value: None,
        tags: vec![],
        properties: BTreeMap::new(),
        created_at: 0,
        updated_at: 0,
    };
    let store = cloud.state.identity.store().clone();
    let mut w = store.write().unwrap();
    IMAGES.put(&mut *w, IMAGE, &img).unwrap();
    w.commit().unwrap();
}

/// Waits until the background dispatch of a call settled (the fake node accepts).
pub async fn settle() {
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}
