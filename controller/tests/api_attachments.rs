//! os-volume_attachments, os-interface and block_device_mapping_v2 volumes
//! through `app()`, with the test playing the node (a listener that accepts
//! every call, and the state reports the node would send): volumes go
//! attaching → in-use → detaching → available when the node concludes, a failed
//! attach rolls back, server delete releases (or deletes) volumes, ports are
//! bound/created and unbound/deleted, a volume swap and Cinder's force
//! detach, and Nova's 400/403/404/409 answers.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use common::servers::{self, fake_node, register};
use common::Cloud;
use kiln_controller::identity::compliance::Preset;
use kiln_controller::image::model::Image;
use kiln_controller::image::tables::IMAGES;
use kiln_controller::microversion::{accept_through, Microversion};
use kiln_controller::protocol::VmState;
use serde_json::{json, Value};

const S: &str = "/compute/v2.1/servers";
const V: &str = "/volume/v3/volumes";
const IMAGE: &str = "7c1a3c1e-5f0a-4d8e-9c2b-0a1b2c3d4e60";

async fn setup() -> (Cloud, String) {
    accept_through(Microversion::new(2, 89));
    let cloud = Cloud::new(Preset::Default);
    let img = Image {
        id: IMAGE.into(),
        name: Some("fw".into()),
        status: "active".into(),
        visibility: "public".into(),
        protected: false,
        os_hidden: false,
        owner: None,
        disk_format: Some("raw".into()),
        container_format: Some("bare".into()),
        min_disk: 0,
        min_ram: 0,
        size: Some(5),
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
    // The image's bytes, where the image service keeps them.
    let path = cloud.state.services.images.files.path(IMAGE);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"KILN!").unwrap();
    let url = fake_node().await;
    register(&cloud, "n1", 1 << 20, &url).await;
    let admin = cloud.admin().await;
    (cloud, admin)
}

/// The node's report that it concluded `concludes` on server `id` (node n1,
/// the server running).
async fn report(cloud: &Cloud, id: &str, fault: Option<&str>, concludes: &str) {
    servers::report(cloud, "n1", id, VmState::Active, fault, concludes).await;
}

/// A request at a compute microversion.
async fn at(
    cloud: &Cloud,
    mv: &str,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let v = format!("compute {mv}");
    cloud.at_version(&v, method, path, token, body).await
}

fn err(st: StatusCode, v: &Value, code: u16) -> String {
    assert_eq!(st.as_u16(), code, "{v}");
    let (_, inner) = v.as_object().unwrap().iter().next().unwrap();
    assert_eq!(inner["code"], code, "{v}");
    inner["message"].as_str().unwrap().to_string()
}

/// A server, ACTIVE once its spawn is reported (`active`).
async fn server(cloud: &Cloud, token: &str, name: &str, active: bool) -> String {
    let body = json!({"server": {"name": name, "imageRef": IMAGE, "flavorRef": "1"}});
    let (st, v) = cloud.post(S, token, body).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let id = v["server"]["id"].as_str().unwrap().to_string();
    if active {
        report(cloud, &id, None, "spawn").await;
    }
    id
}

/// Waits (no timing asserted) until a volume leaves `creating`.
async fn volume(cloud: &Cloud, token: &str, body: Value) -> String {
    let (st, v) = cloud.post(V, token, json!({"volume": body})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let id = v["volume"]["id"].as_str().unwrap().to_string();
    while volume_status(cloud, token, &id).await == "creating" {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    id
}

async fn volume_show(cloud: &Cloud, token: &str, id: &str) -> Value {
    let (st, v) = cloud.get(&format!("{V}/{id}"), token).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["volume"].clone()
}

async fn volume_status(cloud: &Cloud, token: &str, id: &str) -> String {
    volume_show(cloud, token, id).await["status"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn volumes_attach_conclude_detach_and_fail() {
    let (cloud, admin) = setup().await;
    let sid = server(&cloud, &admin, "vm1", true).await;
    let vid = volume(&cloud, &admin, json!({"size": 1})).await;
    let va = format!("{S}/{sid}/os-volume_attachments");

    // Bad bodies, unknown server and volume.
    for body in [
        json!({}),
        json!({"volumeAttachment": {"volumeId": "nope"}}),
        json!({"volumeAttachment": {"volumeId": vid, "bogus": 1}}),
        json!({"volumeAttachment": {"volumeId": vid, "tag": "t"}}),
    ] {
        let (st, v) = cloud.post(&va, &admin, body).await;
        err(st, &v, 400);
    }
    let ghost = "11111111-2222-3333-4444-555555555555";
    let (st, v) = cloud
        .post(
            &format!("{S}/{ghost}/os-volume_attachments"),
            &admin,
            json!({"volumeAttachment": {"volumeId": vid}}),
        )
        .await;
    assert_eq!(
        err(st, &v, 404),
        format!("Instance {ghost} could not be found.")
    );
    let (st, v) = cloud
        .post(
            &va,
            &admin,
            json!({"volumeAttachment": {"volumeId": ghost}}),
        )
        .await;
    assert_eq!(
        err(st, &v, 404),
        format!("Volume {ghost} could not be found.")
    );

    // Attach: reserved now, in-use when the node concludes.
    let (st, v) = cloud
        .post(&va, &admin, json!({"volumeAttachment": {"volumeId": vid}}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"volumeAttachment": {"id": vid, "volumeId": vid, "serverId": sid, "device": "/dev/vdb"}})
    );
    assert_eq!(volume_status(&cloud, &admin, &vid).await, "attaching");
    let (st, v) = cloud
        .post(&va, &admin, json!({"volumeAttachment": {"volumeId": vid}}))
        .await;
    assert!(err(st, &v, 400).contains("already attached"), "{v}");
    let st = cloud.delete(&format!("{V}/{vid}"), &admin).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    report(&cloud, &sid, None, "attach_volume").await;
    let vol = volume_show(&cloud, &admin, &vid).await;
    assert_eq!(vol["status"], "in-use", "{vol}");
    assert_eq!(vol["attachments"][0]["server_id"], sid.as_str(), "{vol}");
    assert_eq!(vol["attachments"][0]["device"], "/dev/vdb", "{vol}");
    let (_, v) = cloud.get(&format!("{S}/{sid}"), &admin).await;
    assert_eq!(
        v["server"]["os-extended-volumes:volumes_attached"],
        json!([{"id": vid}])
    );
    let st = cloud.delete(&format!("{V}/{vid}"), &admin).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "an attached volume stays");

    // List (limit/offset), show, and the 2.89 view.
    let (_, v) = cloud.get(&va, &admin).await;
    assert_eq!(v["volumeAttachments"].as_array().unwrap().len(), 1, "{v}");
    let (_, v) = cloud.get(&format!("{va}?offset=1"), &admin).await;
    assert_eq!(v["volumeAttachments"], json!([]));
    let (st, v) = cloud.get(&format!("{va}?limit=x"), &admin).await;
    err(st, &v, 400);
    let (st, v) = at(
        &cloud,
        "2.89",
        Method::GET,
        &format!("{va}/{vid}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let a = &v["volumeAttachment"];
    assert!(a.get("id").is_none(), "{v}");
    assert_eq!(a["tag"], Value::Null);
    assert_eq!(a["delete_on_termination"], false);
    assert!(
        a["attachment_id"].is_string() && a["bdm_uuid"].is_string(),
        "{v}"
    );
    assert_eq!(a["attachment_id"], vol["attachments"][0]["attachment_id"]);
    let (st, v) = cloud.get(&format!("{va}/{ghost}"), &admin).await;
    err(st, &v, 404);

    // PUT: delete_on_termination at 2.85; a swap to a missing volume is 404
    // (the whole swap: `volume_swap_and_force_detach`).
    let put = json!({"volumeAttachment": {"volumeId": vid, "delete_on_termination": true}});
    let (st, v) = at(
        &cloud,
        "2.85",
        Method::PUT,
        &format!("{va}/{vid}"),
        &admin,
        Some(put.clone()),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let (_, v) = at(
        &cloud,
        "2.79",
        Method::GET,
        &format!("{va}/{vid}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(v["volumeAttachment"]["delete_on_termination"], true, "{v}");
    let (st, v) = at(
        &cloud,
        "2.1",
        Method::PUT,
        &format!("{va}/{vid}"),
        &admin,
        Some(put),
    )
    .await;
    err(st, &v, 400);
    let swap = json!({"volumeAttachment": {"volumeId": ghost}});
    let (st, v) = at(
        &cloud,
        "2.1",
        Method::PUT,
        &format!("{va}/{vid}"),
        &admin,
        Some(swap),
    )
    .await;
    assert_eq!(
        err(st, &v, 404),
        format!("Volume {ghost} could not be found.")
    );

    // Wrong server state: still building.
    let building = server(&cloud, &admin, "vm2", false).await;
    let v2 = volume(&cloud, &admin, json!({"size": 1})).await;
    let (st, v) = cloud
        .post(
            &format!("{S}/{building}/os-volume_attachments"),
            &admin,
            json!({"volumeAttachment": {"volumeId": v2}}),
        )
        .await;
    assert_eq!(
        err(st, &v, 409),
        format!("Cannot 'attach_volume' instance {building} while it is in task_state spawning")
    );

    // A failed attach rolls back, with the error in the instance actions.
    let (st, v) = cloud
        .post(
            &va,
            &admin,
            json!({"volumeAttachment": {"volumeId": v2, "device": "/dev/vdd"}}),
        )
        .await;
    assert_eq!(v["volumeAttachment"]["device"], "/dev/vdd", "{v}");
    assert_eq!(st, StatusCode::OK);
    report(
        &cloud,
        &sid,
        Some("simulated attach_volume failure"),
        "attach_volume",
    )
    .await;
    assert_eq!(volume_status(&cloud, &admin, &v2).await, "available");
    let (_, v) = cloud.get(&va, &admin).await;
    assert_eq!(v["volumeAttachments"].as_array().unwrap().len(), 1, "{v}");
    let (_, v) = cloud
        .get(&format!("{S}/{sid}/os-instance-actions"), &admin)
        .await;
    assert_eq!(v["instanceActions"][0]["action"], "attach_volume", "{v}");
    let req = v["instanceActions"][0]["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, v) = cloud
        .get(&format!("{S}/{sid}/os-instance-actions/{req}"), &admin)
        .await;
    assert_eq!(v["instanceAction"]["events"][0]["result"], "Error", "{v}");

    // Detach: detaching, then available.
    let st = cloud.delete(&format!("{va}/{vid}"), &admin).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert_eq!(volume_status(&cloud, &admin, &vid).await, "detaching");
    report(&cloud, &sid, None, "detach_volume").await;
    let vol = volume_show(&cloud, &admin, &vid).await;
    assert_eq!(vol["status"], "available", "{vol}");
    assert_eq!(vol["attachments"], json!([]));
    let st = cloud.delete(&format!("{va}/{vid}"), &admin).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Another project's volume: invisible to a member (404), refused across
    // projects for an admin (403).
    let p2 = cloud.project(&admin, "p2").await;
    let u = cloud.user(&admin, "p2-u", "UserPassword12345").await;
    cloud.grant(&admin, &p2, &u, "member").await;
    let member = cloud.login("p2-u", "UserPassword12345", Some("p2")).await;
    let theirs = volume(&cloud, &member, json!({"size": 1})).await;
    let (st, v) = cloud
        .post(
            &va,
            &admin,
            json!({"volumeAttachment": {"volumeId": theirs}}),
        )
        .await;
    assert!(err(st, &v, 403).contains("another project"), "{v}");
    let their_server = server(&cloud, &member, "theirs", true).await;
    let (st, v) = cloud
        .post(
            &format!("{S}/{their_server}/os-volume_attachments"),
            &member,
            json!({"volumeAttachment": {"volumeId": vid}}),
        )
        .await;
    err(st, &v, 404);
    let (st, v) = cloud.get(&va, &member).await;
    err(st, &v, 404);

    // delete_on_termination (2.79): the server's delete deletes it; the other
    // attached volume is available again.
    let keep = volume(&cloud, &admin, json!({"size": 1})).await;
    let gone = volume(&cloud, &admin, json!({"size": 1})).await;
    let (st, v) = cloud
        .post(&va, &admin, json!({"volumeAttachment": {"volumeId": keep}}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    report(&cloud, &sid, None, "attach_volume").await;
    let body = json!({"volumeAttachment": {"volumeId": gone, "delete_on_termination": true}});
    let (st, v) = at(&cloud, "2.79", Method::POST, &va, &admin, Some(body)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["volumeAttachment"]["delete_on_termination"], true, "{v}");
    report(&cloud, &sid, None, "attach_volume").await;
    assert_eq!(volume_status(&cloud, &admin, &gone).await, "in-use");
    let file = cloud.dir.path().join("volumes").join(format!("{gone}.raw"));
    assert!(file.exists());
    assert_eq!(
        cloud.delete(&format!("{S}/{sid}"), &admin).await,
        StatusCode::NO_CONTENT
    );
    report(&cloud, &sid, None, "delete").await;
    assert_eq!(volume_status(&cloud, &admin, &keep).await, "available");
    let (st, _) = cloud.get(&format!("{V}/{gone}"), &admin).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(!file.exists(), "the deleted volume's bytes are gone");
}

async fn network(cloud: &Cloud, token: &str, name: &str, cidr: &str) -> String {
    let (st, v) = cloud
        .post(
            "/network/v2.0/networks",
            token,
            json!({"network": {"name": name}}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["network"]["id"].as_str().unwrap().to_string();
    let body = json!({"subnet": {"network_id": id, "cidr": cidr, "ip_version": 4}});
    let (st, v) = cloud.post("/network/v2.0/subnets", token, body).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    id
}

#[tokio::test]
async fn interfaces_attach_and_detach() {
    let (cloud, admin) = setup().await;
    let net = network(&cloud, &admin, "net1", "10.9.0.0/24").await;
    let sid = server(&cloud, &admin, "vm1", true).await;
    let oi = format!("{S}/{sid}/os-interface");
    let (_, v) = cloud.get(&oi, &admin).await;
    assert_eq!(
        v["interfaceAttachments"].as_array().unwrap().len(),
        1,
        "{v}"
    );

    // A new port on a network, with a fixed IP.
    let body =
        json!({"interfaceAttachment": {"net_id": net, "fixed_ips": [{"ip_address": "10.9.0.77"}]}});
    let (st, v) = cloud.post(&oi, &admin, body).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let a = &v["interfaceAttachment"];
    let mut keys: Vec<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["fixed_ips", "mac_addr", "net_id", "port_id", "port_state"]
    );
    assert_eq!(a["fixed_ips"][0]["ip_address"], "10.9.0.77");
    assert_eq!(a["net_id"], net.as_str());
    let made = a["port_id"].as_str().unwrap().to_string();
    let (_, p) = cloud
        .get(&format!("/network/v2.0/ports/{made}"), &admin)
        .await;
    assert_eq!(p["port"]["device_id"], sid.as_str(), "{p}");
    assert_eq!(p["port"]["device_owner"], "compute:nova", "{p}");
    assert_eq!(p["port"]["binding:host_id"], "n1", "{p}");
    report(&cloud, &sid, None, "attach_port").await;
    let (_, v) = cloud.get(&format!("{S}/{sid}"), &admin).await;
    let ips: Vec<&str> = v["server"]["addresses"]["net1"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["addr"].as_str().unwrap())
        .collect();
    assert!(ips.contains(&"10.9.0.77") && ips.len() == 2, "{v}");

    // An existing port of the user's.
    let (_, p) = cloud
        .post(
            "/network/v2.0/ports",
            &admin,
            json!({"port": {"network_id": net}}),
        )
        .await;
    let mine = p["port"]["id"].as_str().unwrap().to_string();
    let (st, v) = cloud
        .post(
            &oi,
            &admin,
            json!({"interfaceAttachment": {"port_id": mine}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = cloud.get(&format!("{oi}/{mine}"), &admin).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["interfaceAttachment"]["port_id"], mine.as_str());
    let (st, v) = cloud
        .post(
            &oi,
            &admin,
            json!({"interfaceAttachment": {"port_id": mine}}),
        )
        .await;
    err(st, &v, 409);

    // Bad input and unknown things.
    let ghost = "11111111-2222-3333-4444-555555555555";
    for (body, code) in [
        (
            json!({"interfaceAttachment": {"port_id": mine, "net_id": net}}),
            400,
        ),
        (
            json!({"interfaceAttachment": {"fixed_ips": [{"ip_address": "10.9.0.9"}]}}),
            400,
        ),
        (json!({"interfaceAttachment": {"port_id": "x"}}), 400),
        (json!({"interfaceAttachment": {"port_id": ghost}}), 404),
        (json!({"interfaceAttachment": {"net_id": ghost}}), 404),
    ] {
        let (st, v) = cloud.post(&oi, &admin, body).await;
        err(st, &v, code);
    }
    let (st, v) = cloud.get(&format!("{oi}/{ghost}"), &admin).await;
    err(st, &v, 404);

    // Another project's port cannot join the admin's server.
    let p2 = cloud.project(&admin, "p2").await;
    let u = cloud.user(&admin, "p2-u", "UserPassword12345").await;
    cloud.grant(&admin, &p2, &u, "member").await;
    let member = cloud.login("p2-u", "UserPassword12345", Some("p2")).await;
    let their_net = network(&cloud, &member, "theirs", "10.8.0.0/24").await;
    let (_, p) = cloud
        .post(
            "/network/v2.0/ports",
            &member,
            json!({"port": {"network_id": their_net}}),
        )
        .await;
    let theirs = p["port"]["id"].as_str().unwrap().to_string();
    let (st, v) = cloud
        .post(
            &oi,
            &admin,
            json!({"interfaceAttachment": {"port_id": theirs}}),
        )
        .await;
    assert!(err(st, &v, 403).contains("another project"), "{v}");
    let (st, v) = cloud.get(&oi, &member).await;
    err(st, &v, 404);

    // Wrong state: a building server.
    let building = server(&cloud, &admin, "vm2", false).await;
    let (st, v) = cloud
        .post(
            &format!("{S}/{building}/os-interface"),
            &admin,
            json!({"interfaceAttachment": {"net_id": net}}),
        )
        .await;
    err(st, &v, 409);

    // Detach: kiln's port is deleted, the user's is unbound.
    assert_eq!(
        cloud.delete(&format!("{oi}/{made}"), &admin).await,
        StatusCode::ACCEPTED
    );
    let (st, _) = cloud
        .get(&format!("/network/v2.0/ports/{made}"), &admin)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(
        cloud.delete(&format!("{oi}/{mine}"), &admin).await,
        StatusCode::ACCEPTED
    );
    let (_, p) = cloud
        .get(&format!("/network/v2.0/ports/{mine}"), &admin)
        .await;
    assert_eq!(p["port"]["device_id"], "", "{p}");
    assert_eq!(
        cloud.delete(&format!("{oi}/{mine}"), &admin).await,
        StatusCode::NOT_FOUND
    );
    let (_, v) = cloud.get(&oi, &admin).await;
    assert_eq!(
        v["interfaceAttachments"].as_array().unwrap().len(),
        1,
        "{v}"
    );

    // A failed attach is rolled back when the node reports it.
    let (st, v) = cloud
        .post(&oi, &admin, json!({"interfaceAttachment": {"net_id": net}}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let failed = v["interfaceAttachment"]["port_id"]
        .as_str()
        .unwrap()
        .to_string();
    report(
        &cloud,
        &sid,
        Some("simulated attach_port failure"),
        "attach_port",
    )
    .await;
    let (_, v) = cloud.get(&oi, &admin).await;
    assert_eq!(
        v["interfaceAttachments"].as_array().unwrap().len(),
        1,
        "{v}"
    );
    let (st, _) = cloud
        .get(&format!("/network/v2.0/ports/{failed}"), &admin)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn block_device_mappings_at_create() {
    let (cloud, admin) = setup().await;
    let data = volume(&cloud, &admin, json!({"size": 1})).await;
    let body = json!({"server": {"name": "bfv", "flavorRef": "1", "imageRef": "",
    "block_device_mapping_v2": [
        {"uuid": IMAGE, "source_type": "image", "destination_type": "volume",
         "boot_index": "0", "volume_size": "1", "delete_on_termination": true},
        {"source_type": "blank", "destination_type": "volume", "volume_size": 2,
         "delete_on_termination": true},
        {"uuid": data, "source_type": "volume", "destination_type": "volume"}
    ]}});
    let (st, v) = cloud.post(S, &admin, body).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let sid = v["server"]["id"].as_str().unwrap().to_string();
    let (_, v) = cloud.get(&format!("{S}/{sid}"), &admin).await;
    assert_eq!(v["server"]["image"], "", "{v}");
    let ids: Vec<String> = v["server"]["os-extended-volumes:volumes_attached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3, "{v}");
    assert_eq!(volume_status(&cloud, &admin, &data).await, "attaching");
    let (_, v) = cloud
        .get(&format!("{S}/{sid}/os-volume_attachments"), &admin)
        .await;
    let devices: Vec<&str> = v["volumeAttachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["device"].as_str().unwrap())
        .collect();
    assert_eq!(devices, ["/dev/vda", "/dev/vdb", "/dev/vdc"], "{v}");
    // The root volume holds the image's bytes.
    let root_file = cloud
        .dir
        .path()
        .join("volumes")
        .join(format!("{}.raw", ids[0]));
    let bytes = std::fs::read(&root_file).unwrap();
    assert_eq!(&bytes[..5], b"KILN!");
    assert_eq!(bytes.len(), 1 << 30);
    report(&cloud, &sid, None, "spawn").await;
    let root = volume_show(&cloud, &admin, &ids[0]).await;
    assert_eq!(root["status"], "in-use", "{root}");
    assert_eq!(root["bootable"], "true", "{root}");
    assert_eq!(volume_status(&cloud, &admin, &data).await, "in-use");
    // The root volume stays.
    let root_attachment = format!("{S}/{sid}/os-volume_attachments/{}", ids[0]);
    let (st, _, v) = cloud
        .call(Method::DELETE, &root_attachment, Some(&admin), None)
        .await;
    assert_eq!(err(st, &v, 400), "Cannot detach a root device volume");

    // Bad mappings.
    for (bdm, code) in [
        (
            json!([{"source_type": "blank", "destination_type": "volume"}]),
            400,
        ),
        (
            json!([{"uuid": IMAGE, "source_type": "image", "destination_type": "volume", "boot_index": 0}]),
            400,
        ),
        (
            json!([{"uuid": data, "source_type": "volume", "destination_type": "volume", "boot_index": 0}]),
            400,
        ),
        (
            json!([{"uuid": data, "source_type": "snapshot", "destination_type": "volume"}]),
            501,
        ),
        (json!("x"), 400),
    ] {
        let body = json!({"server": {"name": "x", "flavorRef": "1", "imageRef": IMAGE,
            "block_device_mapping_v2": bdm}});
        let (st, v) = cloud.post(S, &admin, body).await;
        err(st, &v, code);
    }

    // Delete: the delete_on_termination volumes go, the other is available.
    assert_eq!(
        cloud.delete(&format!("{S}/{sid}"), &admin).await,
        StatusCode::NO_CONTENT
    );
    report(&cloud, &sid, None, "delete").await;
    for gone in &ids[..2] {
        let (st, _) = cloud.get(&format!("{V}/{gone}"), &admin).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    }
    assert!(!root_file.exists());
    assert_eq!(volume_status(&cloud, &admin, &data).await, "available");
}

/// The node's report that it concluded `concludes` about volume `volume`.
async fn about(cloud: &Cloud, sid: &str, fault: Option<&str>, concludes: &str, volume: &str) {
    servers::report_on(
        cloud,
        "n1",
        sid,
        VmState::Active,
        fault,
        concludes,
        Some(volume),
    )
    .await;
}

/// The attachments of a server as `os-volume_attachments` lists them.
async fn attached(cloud: &Cloud, token: &str, sid: &str) -> Vec<String> {
    let (_, v) = cloud
        .get(&format!("{S}/{sid}/os-volume_attachments"), token)
        .await;
    v["volumeAttachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["volumeId"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn volume_swap_and_force_detach() {
    let (cloud, admin) = setup().await;
    let sid = server(&cloud, &admin, "vm1", true).await;
    let va = format!("{S}/{sid}/os-volume_attachments");
    let old = volume(&cloud, &admin, json!({"size": 2})).await;
    let other = volume(&cloud, &admin, json!({"size": 1})).await;
    for v in [&old, &other] {
        let (st, body) = cloud
            .post(&va, &admin, json!({"volumeAttachment": {"volumeId": v}}))
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    // Reports name their volume: the second attach concludes first.
    about(&cloud, &sid, None, "attach_volume", &other).await;
    assert_eq!(volume_status(&cloud, &admin, &other).await, "in-use");
    assert_eq!(volume_status(&cloud, &admin, &old).await, "attaching");
    about(&cloud, &sid, None, "attach_volume", &old).await;
    assert_eq!(volume_status(&cloud, &admin, &old).await, "in-use");

    let small = volume(&cloud, &admin, json!({"size": 1})).await;
    let new = volume(&cloud, &admin, json!({"size": 3})).await;
    let ghost = "11111111-2222-3333-4444-555555555555";
    let swap = |to: &str| json!({"volumeAttachment": {"volumeId": to}});
    let put = |path: String, body: Value| {
        let cloud = &cloud;
        let admin = admin.clone();
        async move { at(cloud, "2.1", Method::PUT, &path, &admin, Some(body)).await }
    };
    // Nova's answers: a missing volume or mapping 404, a smaller or attached
    // new volume 400.
    let (st, v) = put(format!("{va}/{old}"), swap(ghost)).await;
    err(st, &v, 404);
    let (st, v) = put(format!("{va}/{small}"), swap(&new)).await;
    assert_eq!(
        err(st, &v, 404),
        "The volume was either invalid or not attached to the instance."
    );
    let (st, v) = put(format!("{va}/{old}"), swap(&small)).await;
    assert_eq!(
        err(st, &v, 400),
        "Invalid volume: New volume must be the same size or larger."
    );
    let (st, v) = put(format!("{va}/{old}"), swap(&other)).await;
    assert!(err(st, &v, 400).contains("must be detached"), "{v}");

    // The swap: old detaching and new attaching until the node concludes;
    // then the mapping (same device) holds the new volume.
    let (st, v) = put(format!("{va}/{old}"), swap(&new)).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(volume_status(&cloud, &admin, &old).await, "detaching");
    assert_eq!(volume_status(&cloud, &admin, &new).await, "attaching");
    assert_eq!(
        cloud.delete(&format!("{va}/{old}"), &admin).await,
        StatusCode::BAD_REQUEST,
        "no detach while the swap runs"
    );
    // A failed swap changes nothing.
    about(&cloud, &sid, Some("copy failed"), "swap_volume", &old).await;
    assert_eq!(volume_status(&cloud, &admin, &old).await, "in-use");
    assert_eq!(volume_status(&cloud, &admin, &new).await, "available");
    let (st, v) = put(format!("{va}/{old}"), swap(&new)).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    about(&cloud, &sid, None, "swap_volume", &old).await;
    assert_eq!(volume_status(&cloud, &admin, &old).await, "available");
    let nv = volume_show(&cloud, &admin, &new).await;
    assert_eq!(nv["status"], "in-use", "{nv}");
    assert_eq!(nv["attachments"][0]["server_id"], sid.as_str(), "{nv}");
    assert_eq!(nv["attachments"][0]["device"], "/dev/vdb", "{nv}");
    let mut now = attached(&cloud, &admin, &sid).await;
    now.sort();
    let mut want = vec![new.clone(), other.clone()];
    want.sort();
    assert_eq!(now, want);

    // os-force_detach (admin): Cinder and the server's mappings agree.
    let (st, _, v) = cloud
        .call(
            Method::POST,
            &format!("{V}/{new}/action"),
            Some(&admin),
            Some(json!({"os-force_detach": {}})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let nv = volume_show(&cloud, &admin, &new).await;
    assert_eq!(nv["status"], "available", "{nv}");
    assert_eq!(nv["attachments"], json!([]), "{nv}");
    assert_eq!(attached(&cloud, &admin, &sid).await, vec![other.clone()]);
    let (_, v) = cloud.get(&format!("{S}/{sid}"), &admin).await;
    assert_eq!(
        v["server"]["os-extended-volumes:volumes_attached"],
        json!([{"id": other}])
    );
}
