//! Nova servers through `app()`: create and the 2.1 view, Nova's 400/403/404/409
//! answers, cross-project isolation, the node protocol's 401, the state reports
//! (spawn, retry on another node, delete), and concurrent creates that never
//! over-commit a node.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::servers::{add_image, fake_node, node_call, register, report, settle, IMAGE};
use common::Cloud;
use kiln_controller::compute::tables::NODES;
use kiln_controller::identity::compliance::Preset;
use kiln_controller::protocol::VmState;
use serde_json::{json, Value};

const S: &str = "/compute/v2.1/servers";

fn fault(status: StatusCode, body: &Value, code: u16, name: &str) -> String {
    assert_eq!(status.as_u16(), code, "{body}");
    assert_eq!(body[name]["code"], code, "{body}");
    body[name]["message"].as_str().unwrap().to_string()
}

fn server_body(name: &str) -> Value {
    json!({"server": {"name": name, "imageRef": IMAGE, "flavorRef": "1"}})
}

async fn create(cloud: &Cloud, token: &str, name: &str) -> Value {
    let (s, v) = cloud.post(S, token, server_body(name)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let id = v["server"]["id"].as_str().unwrap();
    cloud.get(&format!("{S}/{id}"), token).await.1["server"].clone()
}

#[tokio::test]
async fn create_show_act_delete() {
    let cloud = Cloud::new(Preset::Default);
    add_image(&cloud);
    let admin = cloud.admin().await;
    let url = fake_node().await;
    register(&cloud, "n1", 64 * 1024, &url).await;

    let s = create(&cloud, &admin, "vm1").await;
    let id = s["id"].as_str().unwrap().to_string();
    assert_eq!(s["status"], "BUILD", "{s}");
    assert_eq!(s["OS-EXT-STS:task_state"], "spawning");
    assert_eq!(s["OS-EXT-SRV-ATTR:host"], "n1");
    // The exact 2.1 key set (admin view).
    let mut keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "OS-DCF:diskConfig",
            "OS-EXT-AZ:availability_zone",
            "OS-EXT-SRV-ATTR:host",
            "OS-EXT-SRV-ATTR:hypervisor_hostname",
            "OS-EXT-SRV-ATTR:instance_name",
            "OS-EXT-STS:power_state",
            "OS-EXT-STS:task_state",
            "OS-EXT-STS:vm_state",
            "OS-SRV-USG:launched_at",
            "OS-SRV-USG:terminated_at",
            "accessIPv4",
            "accessIPv6",
            "addresses",
            "config_drive",
            "created",
            "flavor",
            "hostId",
            "id",
            "image",
            "key_name",
            "links",
            "metadata",
            "name",
            "os-extended-volumes:volumes_attached",
            "progress",
            "security_groups",
            "status",
            "tenant_id",
            "updated",
            "user_id",
        ]
    );
    // Not in a state to stop while building.
    let (st, v) = cloud
        .post(
            &format!("{S}/{id}/action"),
            &admin,
            json!({"os-stop": null}),
        )
        .await;
    let m = fault(st, &v, 409, "conflictingRequest");
    assert_eq!(
        m,
        format!("Cannot 'stop' instance {id} while it is in task_state spawning")
    );

    report(&cloud, "n1", &id, VmState::Active, None, "spawn").await;
    let (_, v) = cloud.get(&format!("{S}/{id}"), &admin).await;
    assert_eq!(v["server"]["status"], "ACTIVE", "{v}");
    assert!(v["server"]["OS-SRV-USG:launched_at"].is_string());

    let (st, v) = cloud
        .post(
            &format!("{S}/{id}/action"),
            &admin,
            json!({"os-start": null}),
        )
        .await;
    let m = fault(st, &v, 409, "conflictingRequest");
    assert_eq!(
        m,
        format!("Cannot 'start' instance {id} while it is in vm_state active")
    );
    let (st, _) = cloud
        .post(
            &format!("{S}/{id}/action"),
            &admin,
            json!({"os-stop": null}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let (_, v) = cloud.get(&format!("{S}/{id}"), &admin).await;
    assert_eq!(v["server"]["OS-EXT-STS:task_state"], "powering-off");
    report(&cloud, "n1", &id, VmState::Stopped, None, "stop").await;
    let (_, v) = cloud.get(&format!("{S}/{id}"), &admin).await;
    assert_eq!(v["server"]["status"], "SHUTOFF");
    let (st, v) = cloud
        .post(
            &format!("{S}/{id}/action"),
            &admin,
            json!({"reboot": {"type": "SOFT"}}),
        )
        .await;
    fault(st, &v, 409, "conflictingRequest");
    let (st, v) = cloud
        .post(
            &format!("{S}/{id}/action"),
            &admin,
            json!({"reboot": {"type": "BOGUS"}}),
        )
        .await;
    fault(st, &v, 400, "badRequest");
    let (st, v) = cloud
        .post(
            &format!("{S}/{id}/action"),
            &admin,
            json!({"frobnicate": {}}),
        )
        .await;
    fault(st, &v, 400, "badRequest");

    // createImage: 202 with the image's Location; the snapshot is in Glance.
    let (st, h, v) = cloud
        .call(
            Method::POST,
            &format!("{S}/{id}/action"),
            Some(&admin),
            Some(json!({"createImage": {"name": "snap1", "metadata": {"k": "v"}}})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let loc = h.get("location").unwrap().to_str().unwrap().to_string();
    let image_id = loc.rsplit('/').next().unwrap();
    let (st, img) = cloud
        .get(&format!("/image/v2/images/{image_id}"), &admin)
        .await;
    assert_eq!(st, StatusCode::OK, "{img}");
    assert_eq!(img["name"], "snap1");
    assert_eq!(img["image_type"], "snapshot", "{img}");
    assert_eq!(img["instance_uuid"], id.as_str());
    // Nova's flow: queued at once, the server in image_snapshot; the node's
    // upload (node secret) makes it active with Glance's size and hashes.
    assert_eq!(img["status"], "queued", "{img}");
    let (_, v) = cloud.get(&format!("{S}/{id}"), &admin).await;
    assert_eq!(v["server"]["OS-EXT-STS:task_state"], "image_snapshot");
    let file = format!("/compute/kiln/v1/nodes/n1/images/{image_id}/file");
    let (st, _, _) = cloud
        .raw(Method::PUT, &file, None, Some("disk!".into()), &[])
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let bearer = format!("Bearer {}", cloud.state.nodes.secret());
    let auth = [("authorization", bearer.as_str())];
    let other = format!("/compute/kiln/v1/nodes/n2/images/{image_id}/file");
    let (st, _, _) = cloud
        .raw(Method::PUT, &other, None, Some("disk!".into()), &auth)
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "only the server's node uploads");
    let (st, _, v) = cloud
        .raw(Method::PUT, &file, None, Some("disk!".into()), &auth)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (_, v) = cloud.get(&format!("{S}/{id}"), &admin).await;
    assert_eq!(v["server"]["OS-EXT-STS:task_state"], "image_uploading");
    report(&cloud, "n1", &id, VmState::Stopped, None, "snapshot").await;
    let (_, v) = cloud.get(&format!("{S}/{id}"), &admin).await;
    assert_eq!(v["server"]["OS-EXT-STS:task_state"], Value::Null);
    assert_eq!(v["server"]["status"], "SHUTOFF");
    let (_, img) = cloud
        .get(&format!("/image/v2/images/{image_id}"), &admin)
        .await;
    assert_eq!(img["status"], "active", "{img}");
    assert_eq!(img["size"], 5, "{img}");
    assert_eq!(img["checksum"], "47e447032859c77bd58d2a663269c3d4", "{img}");
    assert_eq!(img["os_hash_algo"], "sha512", "{img}");
    assert_eq!(img["disk_format"], "raw", "{img}");
    // A failed snapshot: the image goes, the task clears.
    let (st, h, v) = cloud
        .call(
            Method::POST,
            &format!("{S}/{id}/action"),
            Some(&admin),
            Some(json!({"createImage": {"name": "snap2"}})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let loc = h.get("location").unwrap().to_str().unwrap().to_string();
    let failed_id = loc.rsplit('/').next().unwrap().to_string();
    common::servers::report_on(
        &cloud,
        "n1",
        &id,
        VmState::Stopped,
        Some("disk copy failed"),
        "snapshot",
        Some(&failed_id),
    )
    .await;
    let (st, _) = cloud
        .get(&format!("/image/v2/images/{failed_id}"), &admin)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, v) = cloud.get(&format!("{S}/{id}"), &admin).await;
    assert_eq!(v["server"]["OS-EXT-STS:task_state"], Value::Null);
    let (st, v) = cloud
        .post(
            &format!("{S}/{id}/action"),
            &admin,
            json!({"createImage": {}}),
        )
        .await;
    fault(st, &v, 400, "badRequest");

    let (st, v) = cloud
        .post(
            &format!("{S}/{id}/metadata"),
            &admin,
            json!({"metadata": {"a": "1"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["metadata"]["a"], "1");
    let (st, v) = cloud.get(&format!("{S}/{id}/metadata/nope"), &admin).await;
    fault(st, &v, 404, "itemNotFound");
    let (st, _, v) = cloud
        .call(
            Method::PUT,
            &format!("{S}/{id}"),
            Some(&admin),
            Some(json!({"server": {"name": "vm1b"}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["server"]["name"], "vm1b");
    let (_, v) = cloud
        .get(&format!("{S}/{id}/os-instance-actions"), &admin)
        .await;
    let acts: Vec<&str> = v["instanceActions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(acts, ["createImage", "createImage", "stop", "create"]);

    // Listing: filters, pagination.
    let s2 = create(&cloud, &admin, "other").await;
    let (_, v) = cloud.get(&format!("{S}?name=^vm1"), &admin).await;
    assert_eq!(v["servers"].as_array().unwrap().len(), 1, "{v}");
    let (_, v) = cloud
        .get(&format!("{S}/detail?status=SHUTOFF"), &admin)
        .await;
    assert_eq!(v["servers"][0]["id"], id.as_str(), "{v}");
    let (_, v) = cloud.get(&format!("{S}?limit=1"), &admin).await;
    assert_eq!(v["servers"][0]["id"], s2["id"], "newest first: {v}");
    assert!(
        v["servers_links"][0]["href"]
            .as_str()
            .unwrap()
            .contains("marker="),
        "{v}"
    );
    let (_, v) = cloud
        .get(
            &format!("{S}?limit=1&marker={}", s2["id"].as_str().unwrap()),
            &admin,
        )
        .await;
    assert_eq!(v["servers"][0]["id"], id.as_str(), "{v}");
    let (st, v) = cloud.get(&format!("{S}?marker=nope"), &admin).await;
    fault(st, &v, 400, "badRequest");

    // Delete: the node reports it gone, then 404.
    assert_eq!(
        cloud.delete(&format!("{S}/{id}"), &admin).await,
        StatusCode::NO_CONTENT
    );
    settle().await;
    report(&cloud, "n1", &id, VmState::Deleted, None, "delete").await;
    let (st, v) = cloud.get(&format!("{S}/{id}"), &admin).await;
    assert_eq!(
        fault(st, &v, 404, "itemNotFound"),
        format!("Instance {id} could not be found.")
    );
}

#[tokio::test]
async fn bad_requests_quota_and_isolation() {
    let cloud = Cloud::new(Preset::Default);
    add_image(&cloud);
    let admin = cloud.admin().await;
    let url = fake_node().await;
    register(&cloud, "n1", 64 * 1024, &url).await;
    for (body, needle) in [
        (
            json!({"server": {"name": "x", "imageRef": IMAGE}}),
            "flavorRef",
        ),
        (
            json!({"server": {"name": "x", "imageRef": "not-a-uuid", "flavorRef": "1"}}),
            "imageRef",
        ),
        (
            json!({"server": {"name": "x", "imageRef": IMAGE, "flavorRef": "99"}}),
            "Flavor 99 could not be found.",
        ),
        (
            json!({"server": {"name": "x", "imageRef": "11111111-2222-3333-4444-555555555555", "flavorRef": "1"}}),
            "could not be found",
        ),
        (
            json!({"server": {"name": "x", "imageRef": IMAGE, "flavorRef": "1", "user_data": "***"}}),
            "base 64",
        ),
        (
            json!({"server": {"name": "x", "imageRef": IMAGE, "flavorRef": "1", "key_name": "nope"}}),
            "Invalid key_name provided.",
        ),
        (
            json!({"server": {"name": "x", "imageRef": IMAGE, "flavorRef": "1", "bogus": 1}}),
            "'bogus' was unexpected",
        ),
        (
            json!({"server": {"name": "", "imageRef": IMAGE, "flavorRef": "1"}}),
            "name",
        ),
        (json!({"nope": {}}), "server"),
    ] {
        let (st, v) = cloud.post(S, &admin, body.clone()).await;
        let m = fault(st, &v, 400, "badRequest");
        assert!(m.contains(needle), "{body} -> {m}");
    }
    let (st, v) = cloud.get(&format!("{S}/no-such-server"), &admin).await;
    fault(st, &v, 404, "itemNotFound");

    // Quota: instances 1 for the admin project.
    let project = cloud.project(&admin, "p2").await;
    let admin_project = {
        let (_, v) = cloud.get("/v3/auth/projects", &admin).await;
        v["projects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "admin")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (st, _, _) = cloud
        .call(
            Method::PUT,
            &format!("/compute/v2.1/os-quota-sets/{admin_project}"),
            Some(&admin),
            Some(json!({"quota_set": {"instances": 1}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let first = create(&cloud, &admin, "q1").await;
    let (st, v) = cloud.post(S, &admin, server_body("q2")).await;
    assert_eq!(
        fault(st, &v, 403, "forbidden"),
        "Quota exceeded for instances: Requested 1, but already used 1 of 1 instances"
    );

    let (_, v) = cloud.get("/compute/v2.1/limits", &admin).await;
    assert_eq!(v["limits"]["absolute"]["totalInstancesUsed"], 1, "{v}");
    assert_eq!(v["limits"]["absolute"]["totalRAMUsed"], 512, "{v}");

    // Another project's member sees nothing of it.
    let u = cloud.user(&admin, "p2-u", "UserPassword12345").await;
    cloud.grant(&admin, &project, &u, "member").await;
    let member = cloud.login("p2-u", "UserPassword12345", Some("p2")).await;
    let fid = first["id"].as_str().unwrap();
    let (st, v) = cloud.get(&format!("{S}/{fid}"), &member).await;
    fault(st, &v, 404, "itemNotFound");
    let (_, v) = cloud.get(&format!("{S}?all_tenants=1"), &member).await;
    assert_eq!(v["servers"].as_array().unwrap().len(), 0, "{v}");
    let (st, v) = cloud
        .post(
            &format!("{S}/{fid}/action"),
            &member,
            json!({"os-stop": null}),
        )
        .await;
    fault(st, &v, 404, "itemNotFound");
    let (_, v) = cloud.get(&format!("{S}?all_tenants=1"), &admin).await;
    assert_eq!(v["servers"].as_array().unwrap().len(), 1, "{v}");

    // Locked: the member of the same project cannot act; reset-state is admin-only.
    let s = create(&cloud, &member, "m1").await;
    let sid = s["id"].as_str().unwrap();
    report(&cloud, "n1", sid, VmState::Active, None, "spawn").await;
    let (st, _) = cloud
        .post(&format!("{S}/{sid}/action"), &admin, json!({"lock": null}))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let (st, v) = cloud
        .post(
            &format!("{S}/{sid}/action"),
            &member,
            json!({"os-stop": null}),
        )
        .await;
    assert_eq!(
        fault(st, &v, 409, "conflictingRequest"),
        format!("Instance {sid} is locked")
    );
    let (st, v) = cloud
        .post(
            &format!("{S}/{sid}/action"),
            &member,
            json!({"os-resetState": {"state": "error"}}),
        )
        .await;
    fault(st, &v, 403, "forbidden");

    // The node protocol refuses a caller without the secret.
    let s = node_call(
        &cloud,
        "/compute/kiln/v1/nodes/n1/heartbeat",
        json!({"servers": 0}),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let s = node_call(
        &cloud,
        "/compute/kiln/v1/nodes/n1/heartbeat",
        json!({"servers": 0}),
        Some("wrong"),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn failed_builds_retry_elsewhere_then_fault() {
    let cloud = Cloud::new(Preset::Default);
    add_image(&cloud);
    let admin = cloud.admin().await;
    let url = fake_node().await;
    register(&cloud, "n1", 64 * 1024, &url).await;
    register(&cloud, "n2", 32 * 1024, &url).await;
    let s = create(&cloud, &admin, "flaky").await;
    let id = s["id"].as_str().unwrap().to_string();
    let first = s["OS-EXT-SRV-ATTR:host"].as_str().unwrap().to_string();
    assert_eq!(first, "n1", "spread: most free RAM");
    report(
        &cloud,
        "n1",
        &id,
        VmState::Error,
        Some("disk full"),
        "spawn",
    )
    .await;
    let (_, v) = cloud.get(&format!("{S}/{id}"), &admin).await;
    assert_eq!(v["server"]["OS-EXT-SRV-ATTR:host"], "n2", "{v}");
    assert_eq!(v["server"]["status"], "BUILD");
    // A late report from the first node is ignored.
    report(&cloud, "n1", &id, VmState::Active, None, "spawn").await;
    report(
        &cloud,
        "n2",
        &id,
        VmState::Error,
        Some("no memory"),
        "spawn",
    )
    .await;
    let (_, v) = cloud.get(&format!("{S}/{id}"), &admin).await;
    assert_eq!(v["server"]["status"], "ERROR", "{v}");
    assert!(
        v["server"]["fault"]["message"]
            .as_str()
            .unwrap()
            .contains("no memory"),
        "{v}"
    );
    assert_eq!(v["server"]["fault"]["code"], 500);
    // Its claims are released everywhere.
    let store = cloud.state.identity.store().clone();
    let r = store.read().unwrap();
    for n in NODES.values(&*r).unwrap() {
        assert_eq!(n.used_ram_mb, 0, "{n:?}");
    }
}

#[tokio::test]
async fn concurrent_creates_never_over_commit() {
    let cloud = Cloud::new(Preset::Default);
    add_image(&cloud);
    let admin = cloud.admin().await;
    let url = fake_node().await;
    // 1024 MiB × 1.5 RAM ratio: exactly three m1.tiny (512 MiB).
    register(&cloud, "small", 1024, &url).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let app = cloud.app.clone();
        let token = admin.clone();
        tasks.push(tokio::spawn(async move {
            use tower::ServiceExt;
            let req = axum::http::Request::post(S)
                .header("x-auth-token", token)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(
                    server_body(&format!("c{i}")).to_string(),
                ))
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::ACCEPTED);
    }
    let (_, v) = cloud.get(&format!("{S}/detail"), &admin).await;
    let list = v["servers"].as_array().unwrap();
    assert_eq!(list.len(), 8);
    let placed = list.iter().filter(|s| s["status"] == "BUILD").count();
    let failed: Vec<&Value> = list.iter().filter(|s| s["status"] == "ERROR").collect();
    assert_eq!(placed, 3, "{v}");
    assert_eq!(failed.len(), 5);
    assert!(failed[0]["fault"]["message"]
        .as_str()
        .unwrap()
        .starts_with("No valid host was found."));
    let store = cloud.state.identity.store().clone();
    let r = store.read().unwrap();
    let n = NODES.get(&*r, "small").unwrap().unwrap();
    assert_eq!(n.used_ram_mb, 1536);
}

#[tokio::test]
async fn anti_affinity_groups_spread_and_extras_see_the_servers() {
    let cloud = Cloud::new(Preset::Default);
    add_image(&cloud);
    let admin = cloud.admin().await;
    let url = fake_node().await;
    register(&cloud, "n1", 8192, &url).await;
    register(&cloud, "n2", 8192, &url).await;
    let (s, g) = cloud
        .post(
            "/compute/v2.1/os-server-groups",
            &admin,
            json!({"server_group": {"name": "spread", "policies": ["anti-affinity"]}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{g}");
    let gid = g["server_group"]["id"].as_str().unwrap().to_string();
    let hinted = |name: &str| {
        json!({"server": {"name": name, "imageRef": IMAGE, "flavorRef": "1"},
               "os:scheduler_hints": {"group": gid}})
    };
    let mut hosts = Vec::new();
    for name in ["a", "b"] {
        let (s, v) = cloud.post(S, &admin, hinted(name)).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let id = v["server"]["id"].as_str().unwrap();
        let shown = cloud.get(&format!("{S}/{id}"), &admin).await.1;
        assert_eq!(shown["server"]["status"], "BUILD", "{shown}");
        hosts.push(shown["server"]["OS-EXT-SRV-ATTR:host"].clone());
    }
    assert_ne!(hosts[0], hosts[1], "anti-affinity put both on {}", hosts[0]);
    // A third member has no host left.
    let (_, v) = cloud.post(S, &admin, hinted("c")).await;
    let id = v["server"]["id"].as_str().unwrap();
    let shown = cloud.get(&format!("{S}/{id}"), &admin).await.1;
    assert_eq!(shown["server"]["status"], "ERROR", "{shown}");
    // The group lists its two placed members.
    let g = cloud
        .get(&format!("/compute/v2.1/os-server-groups/{gid}"), &admin)
        .await
        .1;
    assert_eq!(
        g["server_group"]["members"].as_array().unwrap().len(),
        2,
        "{g}"
    );
    // os-hypervisors?with_servers and usage read the same servers.
    let (s, h) = cloud
        .get("/compute/v2.1/os-hypervisors/n1/servers", &admin)
        .await;
    assert_eq!(s, StatusCode::OK, "{h}");
    let on_n1 = h["hypervisors"][0]["servers"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(on_n1, 1, "{h}");
    let (s, u) = cloud
        .get("/compute/v2.1/os-simple-tenant-usage?detailed=1", &admin)
        .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    let listed: usize = u["tenant_usages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["server_usages"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(listed, 3, "{u}");
}
