//! The compute gaps closed after the first servers work, through `app()` with a
//! fake node: soft delete (restore, forceDelete, the reclaim), the scheduler's
//! image-properties filter, rebuild's key pair / user data / trusted
//! certificates, unshelve to a zone or host, and os-instance-actions paging —
//! each with Nova's codes and messages.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use common::servers::{add_image, fake_node, register, register_in, report, settle, IMAGE};
use common::Cloud;
use kiln_controller::compute::tables::NODES;
use kiln_controller::identity::compliance::Preset;
use kiln_controller::image::tables::IMAGES;
use kiln_controller::protocol::VmState;
use serde_json::{json, Value};

const S: &str = "/compute/v2.1/servers";

/// A request at microversion 2.`minor`.
async fn at(
    cloud: &Cloud,
    method: Method,
    path: &str,
    token: &str,
    minor: u32,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let v = format!("compute 2.{minor}");
    cloud.at_version(&v, method, path, token, body).await
}

fn message(body: &Value) -> String {
    body.as_object()
        .and_then(|o| o.values().next())
        .and_then(|f| f["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

async fn create_on(cloud: &Cloud, token: &str, name: &str, image: &str) -> String {
    let (s, v) = cloud
        .post(
            S,
            token,
            json!({"server": {"name": name, "imageRef": image, "flavorRef": "1"}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    v["server"]["id"].as_str().unwrap().to_string()
}

async fn show(cloud: &Cloud, token: &str, id: &str) -> Value {
    let (s, v) = cloud.get(&format!("{S}/{id}"), token).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["server"].clone()
}

async fn act(cloud: &Cloud, token: &str, id: &str, body: Value) -> (StatusCode, Value) {
    cloud.post(&format!("{S}/{id}/action"), token, body).await
}

/// An ACTIVE server on `node`.
async fn active(cloud: &Cloud, token: &str, node: &str, name: &str) -> String {
    let id = create_on(cloud, token, name, IMAGE).await;
    report(cloud, node, &id, VmState::Active, None, "spawn").await;
    id
}

fn used_ram(cloud: &Cloud, node: &str) -> u64 {
    let store = cloud.state.identity.store().clone();
    let r = store.read().unwrap();
    NODES.get(&*r, node).unwrap().unwrap().used_ram_mb
}

async fn instances_used(cloud: &Cloud, token: &str) -> i64 {
    let (_, v) = cloud.get("/compute/v2.1/limits", token).await;
    v["limits"]["absolute"]["totalInstancesUsed"]
        .as_i64()
        .unwrap()
}

async fn listed(cloud: &Cloud, token: &str, query: &str, id: &str) -> bool {
    let (s, v) = cloud.get(&format!("{S}?{query}"), token).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["servers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == id)
}

#[tokio::test]
async fn soft_delete_restore_force_delete_and_reclaim() {
    let cloud = Cloud::new(Preset::Default);
    add_image(&cloud);
    let admin = cloud.admin().await;
    let url = fake_node().await;
    register(&cloud, "n1", 64 * 1024, &url).await;
    let compute = cloud.state.services.compute.clone();

    // Interval 0 (Nova's default): restore and forceDelete have nothing to act on.
    let id = active(&cloud, &admin, "n1", "vm0").await;
    for a in ["restore", "forceDelete"] {
        let (s, v) = act(&cloud, &admin, &id, json!({ a: null })).await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        assert_eq!(
            message(&v),
            format!("Cannot '{a}' instance {id} while it is in vm_state active")
        );
    }
    assert_eq!(
        cloud.delete(&format!("{S}/{id}"), &admin).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        show(&cloud, &admin, &id).await["OS-EXT-STS:task_state"],
        "deleting"
    );
    report(&cloud, "n1", &id, VmState::Deleted, None, "delete").await;
    assert_eq!(
        cloud.get(&format!("{S}/{id}"), &admin).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(compute.reclaim_expired(i64::MAX).unwrap(), vec![]);

    compute.set_reclaim_interval(3600);
    let id = active(&cloud, &admin, "n1", "vm1").await;
    let claimed = used_ram(&cloud, "n1");
    assert!(claimed > 0);
    assert_eq!(
        cloud.delete(&format!("{S}/{id}"), &admin).await,
        StatusCode::NO_CONTENT
    );
    let s = show(&cloud, &admin, &id).await;
    assert_eq!(s["OS-EXT-STS:task_state"], "soft-deleting", "{s}");
    report(&cloud, "n1", &id, VmState::Stopped, None, "stop").await;
    let s = show(&cloud, &admin, &id).await;
    assert_eq!(s["status"], "SOFT_DELETED", "{s}");
    assert_eq!(s["OS-EXT-STS:vm_state"], "soft-delete");
    assert!(s["OS-EXT-STS:task_state"].is_null());
    // Claim and quota stay until the reclaim.
    assert_eq!(used_ram(&cloud, "n1"), claimed);
    assert_eq!(instances_used(&cloud, &admin).await, 1);
    // Lists leave it out unless asked for deleted servers or for changes.
    assert!(!listed(&cloud, &admin, "", &id).await);
    assert!(!listed(&cloud, &admin, "status=SOFT_DELETED", &id).await);
    assert!(listed(&cloud, &admin, "deleted=true", &id).await);
    assert!(listed(&cloud, &admin, "deleted=true&status=SOFT_DELETED", &id).await);
    assert!(listed(&cloud, &admin, "changes-since=2000-01-01T00:00:00Z", &id).await);
    // Only a soft-deleted server is soft-deleted or restored.
    let (s, v) = act(&cloud, &admin, &id, json!({"os-start": null})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(
        message(&v),
        format!("Cannot 'start' instance {id} while it is in vm_state soft-delete")
    );

    let (s, v) = act(&cloud, &admin, &id, json!({"restore": null})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(
        show(&cloud, &admin, &id).await["OS-EXT-STS:task_state"],
        "restoring"
    );
    report(&cloud, "n1", &id, VmState::Active, None, "start").await;
    let s = show(&cloud, &admin, &id).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    assert!(listed(&cloud, &admin, "", &id).await);
    let acts = cloud
        .get(&format!("{S}/{id}/os-instance-actions"), &admin)
        .await
        .1;
    assert_eq!(acts["instanceActions"][0]["action"], "restore", "{acts}");

    // forceDelete skips the wait.
    assert_eq!(
        cloud.delete(&format!("{S}/{id}"), &admin).await,
        StatusCode::NO_CONTENT
    );
    report(&cloud, "n1", &id, VmState::Stopped, None, "stop").await;
    let (s, v) = act(&cloud, &admin, &id, json!({"forceDelete": null})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(
        show(&cloud, &admin, &id).await["OS-EXT-STS:task_state"],
        "deleting"
    );
    report(&cloud, "n1", &id, VmState::Deleted, None, "delete").await;
    assert_eq!(
        cloud.get(&format!("{S}/{id}"), &admin).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(used_ram(&cloud, "n1"), 0);

    // A stopped server is soft-deleted at once; the reclaim deletes it once
    // the interval has passed, and gives back the claim and the quota.
    let id = active(&cloud, &admin, "n1", "vm2").await;
    let (s, _) = act(&cloud, &admin, &id, json!({"os-stop": null})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    report(&cloud, "n1", &id, VmState::Stopped, None, "stop").await;
    assert_eq!(
        cloud.delete(&format!("{S}/{id}"), &admin).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(show(&cloud, &admin, &id).await["status"], "SOFT_DELETED");
    let now = kiln_controller::clock::now_micros();
    assert_eq!(compute.reclaim_expired(now).unwrap(), vec![]);
    let calls = compute.reclaim_expired(now + 3601 * 1_000_000).unwrap();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].server_id, id);
    assert_eq!(
        show(&cloud, &admin, &id).await["OS-EXT-STS:task_state"],
        "deleting"
    );
    report(&cloud, "n1", &id, VmState::Deleted, None, "delete").await;
    assert_eq!(
        cloud.get(&format!("{S}/{id}"), &admin).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(used_ram(&cloud, "n1"), 0);
    assert_eq!(instances_used(&cloud, &admin).await, 0);

    // A server that never launched is deleted outright even now.
    let id = create_on(&cloud, &admin, "vm3", IMAGE).await;
    assert_eq!(
        cloud.delete(&format!("{S}/{id}"), &admin).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        show(&cloud, &admin, &id).await["OS-EXT-STS:task_state"],
        "deleting"
    );
    report(&cloud, "n1", &id, VmState::Deleted, None, "delete").await;
    settle().await;
}

fn add_image_with(cloud: &Cloud, id: &str, props: &[(&str, &str)]) {
    let store = cloud.state.identity.store().clone();
    let mut img = {
        let r = store.read().unwrap();
        IMAGES.get(&*r, IMAGE).unwrap().unwrap()
    };
    img.id = id.into();
    img.properties = props
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>();
    let mut w = store.write().unwrap();
    IMAGES.put(&mut *w, id, &img).unwrap();
    w.commit().unwrap();
}

async fn register_caps(cloud: &Cloud, id: &str, url: &str, az: &str, caps: &[&str]) {
    register_in(cloud, id, 8 * 1024, url, az, caps).await;
}

#[tokio::test]
async fn image_properties_filter_places_by_architecture() {
    let cloud = Cloud::new(Preset::Default);
    add_image(&cloud);
    let admin = cloud.admin().await;
    let url = fake_node().await;
    register(&cloud, "x86", 64 * 1024, &url).await;
    const ARM: &str = "11111111-2222-3333-4444-555555555555";
    const KVM: &str = "11111111-2222-3333-4444-666666666666";
    add_image_with(&cloud, ARM, &[("hw_architecture", "aarch64")]);
    add_image_with(
        &cloud,
        KVM,
        &[("hypervisor_type", "qemu"), ("vm_mode", "hvm")],
    );

    // Only an x86_64 KVM host: the aarch64 image finds no host, claims nothing.
    let id = create_on(&cloud, &admin, "arm", ARM).await;
    let s = show(&cloud, &admin, &id).await;
    assert_eq!(s["status"], "ERROR", "{s}");
    assert_eq!(s["fault"]["code"], 500);
    assert!(s["fault"]["message"]
        .as_str()
        .unwrap()
        .starts_with("No valid host was found. "));
    assert_eq!(used_ram(&cloud, "x86"), 0);
    // Legacy names match the KVM host.
    let id = create_on(&cloud, &admin, "kvm", KVM).await;
    assert_eq!(
        show(&cloud, &admin, &id).await["OS-EXT-SRV-ATTR:host"],
        "x86"
    );

    // A node that reports aarch64 takes it (and only it).
    register_caps(&cloud, "arm1", &url, "nova", &["arch=aarch64"]).await;
    let id = create_on(&cloud, &admin, "arm2", ARM).await;
    let s = show(&cloud, &admin, &id).await;
    assert_eq!(s["OS-EXT-SRV-ATTR:host"], "arm1", "{s}");
    assert_eq!(s["status"], "BUILD");
    let id = create_on(&cloud, &admin, "kvm2", KVM).await;
    assert_eq!(
        show(&cloud, &admin, &id).await["OS-EXT-SRV-ATTR:host"],
        "x86"
    );
    settle().await;
}

#[tokio::test]
async fn rebuild_changes_key_user_data_and_trusted_certs() {
    let cloud = Cloud::new(Preset::Default);
    add_image(&cloud);
    let admin = cloud.admin().await;
    let url = fake_node().await;
    register(&cloud, "n1", 64 * 1024, &url).await;
    let (s, v) = cloud
        .post(
            "/compute/v2.1/os-keypairs",
            &admin,
            json!({"keypair": {"name": "k1"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Create at 2.63 with trusted certificates; shown from 2.63 only.
    let body = json!({"server": {"name": "t", "imageRef": IMAGE, "flavorRef": "1",
        "networks": "none", "trusted_image_certificates": ["c1", "c2"]}});
    let (s, v) = at(&cloud, Method::POST, S, &admin, 63, Some(body)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let id = v["server"]["id"].as_str().unwrap().to_string();
    report(&cloud, "n1", &id, VmState::Active, None, "spawn").await;
    let one = format!("{S}/{id}");
    let (_, v) = at(&cloud, Method::GET, &one, &admin, 63, None).await;
    assert_eq!(
        v["server"]["trusted_image_certificates"],
        json!(["c1", "c2"])
    );
    let (_, v) = at(&cloud, Method::GET, &one, &admin, 62, None).await;
    assert!(v["server"].get("trusted_image_certificates").is_none());

    // Nova's schema: 1–50 unique non-empty strings.
    let action = format!("{one}/action");
    let rb = |extra: Value| {
        let mut r = json!({"imageRef": IMAGE});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        Some(json!({ "rebuild": r }))
    };
    let many: Vec<String> = (0..51).map(|i| format!("c{i}")).collect();
    for bad in [
        json!([]),
        json!(["a", "a"]),
        json!([""]),
        json!([1]),
        json!("a"),
        json!(many),
    ] {
        let (s, v) = at(
            &cloud,
            Method::POST,
            &action,
            &admin,
            63,
            rb(json!({"trusted_image_certificates": bad})),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
    let (s, v) = at(
        &cloud,
        Method::POST,
        &action,
        &admin,
        63,
        rb(json!({"key_name": "nope"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(message(&v), "Invalid key_name provided.");

    let (s, v) = at(
        &cloud,
        Method::POST,
        &action,
        &admin,
        63,
        rb(json!({"key_name": "k1", "user_data": "aGVsbG8=", "trusted_image_certificates": ["c3"]})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["server"]["key_name"], "k1", "{v}");
    assert_eq!(v["server"]["user_data"], "aGVsbG8=");
    assert_eq!(v["server"]["trusted_image_certificates"], json!(["c3"]));
    report(&cloud, "n1", &id, VmState::Active, None, "rebuild").await;
    let (_, v) = at(&cloud, Method::GET, &one, &admin, 63, None).await;
    assert_eq!(v["server"]["key_name"], "k1");
    assert_eq!(v["server"]["OS-EXT-SRV-ATTR:user_data"], "aGVsbG8=");

    // null unsets each.
    let (s, v) = at(
        &cloud,
        Method::POST,
        &action,
        &admin,
        63,
        rb(json!({"key_name": null, "user_data": null, "trusted_image_certificates": null})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert!(v["server"]["key_name"].is_null(), "{v}");
    assert!(v["server"]["user_data"].is_null());
    assert!(v["server"]["trusted_image_certificates"].is_null());
    report(&cloud, "n1", &id, VmState::Active, None, "rebuild").await;
    // Absent keys keep what is there.
    let (s, _) = at(
        &cloud,
        Method::POST,
        &action,
        &admin,
        63,
        rb(json!({"key_name": "k1"})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    report(&cloud, "n1", &id, VmState::Active, None, "rebuild").await;
    let (s, v) = at(&cloud, Method::POST, &action, &admin, 63, rb(json!({}))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(v["server"]["key_name"], "k1", "{v}");
    report(&cloud, "n1", &id, VmState::Active, None, "rebuild").await;
    settle().await;
}

#[tokio::test]
async fn unshelve_to_a_zone_or_a_host() {
    let cloud = Cloud::new(Preset::Default);
    add_image(&cloud);
    let admin = cloud.admin().await;
    let url = fake_node().await;
    register_caps(&cloud, "n1", &url, "nova", &[]).await;
    register_caps(&cloud, "n2", &url, "az2", &[]).await;
    let body = json!({"server": {"name": "s", "imageRef": IMAGE, "flavorRef": "1",
        "availability_zone": "nova"}});
    let (s, v) = cloud.post(S, &admin, body).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let id = v["server"]["id"].as_str().unwrap().to_string();
    report(&cloud, "n1", &id, VmState::Active, None, "spawn").await;
    let action = format!("{S}/{id}/action");
    let unshelve = |minor: u32, arg: Value| {
        let (cloud, action, admin) = (&cloud, &action, &admin);
        async move {
            at(
                cloud,
                Method::POST,
                action,
                admin,
                minor,
                Some(json!({ "unshelve": arg })),
            )
            .await
        }
    };

    // Shelved but not offloaded: no zone or host may be named.
    let (s, _) = act(&cloud, &admin, &id, json!({"shelve": null})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    report(&cloud, "n1", &id, VmState::Shelved, None, "shelve").await;
    let (s, v) = unshelve(77, json!({"availability_zone": "az2"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(
        message(&v),
        format!("Specifying an availability zone or a host when unshelving server \"{id}\" with status \"SHELVED\" is not supported. The server status must be SHELVED_OFFLOADED.")
    );
    let (s, _) = act(&cloud, &admin, &id, json!({"shelveOffload": null})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    report(
        &cloud,
        "n1",
        &id,
        VmState::ShelvedOffloaded,
        None,
        "shelve_offload",
    )
    .await;
    assert_eq!(
        show(&cloud, &admin, &id).await["status"],
        "SHELVED_OFFLOADED"
    );
    assert_eq!(used_ram(&cloud, "n1"), 0);

    let (s, v) = unshelve(77, json!({"availability_zone": "nowhere"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(
        message(&v),
        "The requested availability zone is not available"
    );
    let (s, v) = unshelve(91, json!({"host": "n9"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(message(&v), "Compute host n9 could not be found.");
    let (s, v) = unshelve(91, json!({"host": "n1", "availability_zone": "az2"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(
        message(&v),
        "Host \"n1\" is not in the availability zone \"az2\"."
    );

    // 2.77: to another zone; the server's zone (and pinned zone) moves.
    let (s, v) = unshelve(77, json!({"availability_zone": "az2"})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    report(&cloud, "n2", &id, VmState::Active, None, "spawn").await;
    let (_, v) = at(&cloud, Method::GET, &format!("{S}/{id}"), &admin, 96, None).await;
    assert_eq!(v["server"]["OS-EXT-SRV-ATTR:host"], "n2", "{v}");
    assert_eq!(v["server"]["OS-EXT-AZ:availability_zone"], "az2");
    assert_eq!(v["server"]["pinned_availability_zone"], "az2");
    assert_eq!(v["server"]["status"], "ACTIVE");

    // 2.91: a null zone unpins; a host is honoured.
    let (s, _) = act(&cloud, &admin, &id, json!({"shelve": null})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    report(
        &cloud,
        "n2",
        &id,
        VmState::ShelvedOffloaded,
        None,
        "shelve_offload",
    )
    .await;
    let (s, v) = unshelve(91, json!({"availability_zone": null, "host": "n1"})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (_, v) = at(&cloud, Method::GET, &format!("{S}/{id}"), &admin, 96, None).await;
    assert_eq!(v["server"]["OS-EXT-SRV-ATTR:host"], "n1", "{v}");
    assert_eq!(v["server"]["OS-EXT-AZ:availability_zone"], "nova");
    assert!(v["server"]["pinned_availability_zone"].is_null());
    report(&cloud, "n1", &id, VmState::Active, None, "spawn").await;
    settle().await;
}

#[tokio::test]
async fn instance_actions_page_from_2_58() {
    let cloud = Cloud::new(Preset::Default);
    add_image(&cloud);
    let admin = cloud.admin().await;
    let url = fake_node().await;
    register(&cloud, "n1", 64 * 1024, &url).await;
    let id = active(&cloud, &admin, "n1", "vm").await;
    for (a, vm) in [("os-stop", VmState::Stopped), ("os-start", VmState::Active)] {
        let (s, _) = act(&cloud, &admin, &id, json!({ a: null })).await;
        assert_eq!(s, StatusCode::ACCEPTED);
        report(&cloud, "n1", &id, vm, None, &a[3..]).await;
    }
    let acts = format!("{S}/{id}/os-instance-actions");
    let (_, v) = at(&cloud, Method::GET, &acts, &admin, 58, None).await;
    let all: Vec<String> = v["instanceActions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(all, ["start", "stop", "create"], "{v}");
    assert!(v.get("links").is_none(), "{v}");
    let second = v["instanceActions"][1]["request_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Before 2.58 the paging parameters are ignored.
    let (_, v) = at(
        &cloud,
        Method::GET,
        &format!("{acts}?limit=1"),
        &admin,
        57,
        None,
    )
    .await;
    assert_eq!(v["instanceActions"].as_array().unwrap().len(), 3);
    assert!(v.get("links").is_none());

    let (s, v) = at(
        &cloud,
        Method::GET,
        &format!("{acts}?limit=2"),
        &admin,
        58,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["instanceActions"].as_array().unwrap().len(), 2);
    assert_eq!(v["links"][0]["rel"], "next", "{v}");
    let href = v["links"][0]["href"].as_str().unwrap();
    assert!(
        href.ends_with(&format!(
            "/compute/v2.1/servers/{id}/os-instance-actions?limit=2&marker={second}"
        )),
        "{href}"
    );
    let (_, v) = at(
        &cloud,
        Method::GET,
        &format!("{acts}?marker={second}"),
        &admin,
        58,
        None,
    )
    .await;
    assert_eq!(v["instanceActions"].as_array().unwrap().len(), 1);
    assert_eq!(v["instanceActions"][0]["action"], "create");
    let (s, v) = at(
        &cloud,
        Method::GET,
        &format!("{acts}?marker=req-nope"),
        &admin,
        58,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(message(&v), "Marker req-nope could not be found.");
    let (s, _) = at(
        &cloud,
        Method::GET,
        &format!("{acts}?limit=x"),
        &admin,
        58,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // changes-since (2.58) and changes-before (2.66).
    let future = "2999-01-01T00:00:00Z";
    let past = "2000-01-01T00:00:00Z";
    let q = |k: &str, t: &str| format!("{acts}?{k}={t}");
    let (_, v) = at(
        &cloud,
        Method::GET,
        &q("changes-since", future),
        &admin,
        58,
        None,
    )
    .await;
    assert!(v["instanceActions"].as_array().unwrap().is_empty(), "{v}");
    let (_, v) = at(
        &cloud,
        Method::GET,
        &q("changes-since", past),
        &admin,
        58,
        None,
    )
    .await;
    assert_eq!(v["instanceActions"].as_array().unwrap().len(), 3);
    let (_, v) = at(
        &cloud,
        Method::GET,
        &q("changes-before", past),
        &admin,
        65,
        None,
    )
    .await;
    assert_eq!(
        v["instanceActions"].as_array().unwrap().len(),
        3,
        "ignored before 2.66"
    );
    let (_, v) = at(
        &cloud,
        Method::GET,
        &q("changes-before", past),
        &admin,
        66,
        None,
    )
    .await;
    assert!(v["instanceActions"].as_array().unwrap().is_empty(), "{v}");
    let both = format!("{acts}?changes-since={future}&changes-before={past}");
    let (s, v) = at(&cloud, Method::GET, &both, &admin, 66, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(
        message(&v),
        "The value of changes-since must be less than or equal to changes-before."
    );
    let (s, _) = at(
        &cloud,
        Method::GET,
        &q("changes-since", "yesterday"),
        &admin,
        58,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    settle().await;
}
