//! Cinder v3 through `app()` over a real redb file and real sparse files:
//! version documents, microversions, volumes, actions, metadata, snapshots,
//! types, limits, quotas, attach/detach, and Cinder's error shapes.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::Cloud;
use kiln_controller::identity::compliance::Preset;
use kiln_controller::volume::ops;
use serde_json::{json, Value};

const V: &str = "/volume/v3";

fn cinder_error(s: StatusCode, v: &Value, code: u16, key: &str) {
    assert_eq!(s.as_u16(), code, "{v}");
    assert_eq!(v[key]["code"], code, "{v}");
    assert!(v[key]["message"].is_string(), "{v}");
}

async fn member(c: &Cloud, admin: &str, project: &str, user: &str) -> (String, String) {
    let p = c.project(admin, project).await;
    let u = c.user(admin, user, "MemberPassword1").await;
    c.grant(admin, &p, &u, "member").await;
    (c.login(user, "MemberPassword1", Some(project)).await, p)
}

/// Polls a volume until it leaves `creating`/`extending`.
async fn settled(c: &Cloud, t: &str, id: &str) -> Value {
    for _ in 0..100 {
        let (s, v) = c.get(&format!("{V}/volumes/{id}"), t).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let st = v["volume"]["status"].as_str().unwrap();
        if st != "creating" && st != "extending" {
            return v["volume"].clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("volume {id} never settled");
}

async fn create(c: &Cloud, t: &str, body: Value) -> Value {
    let (s, v) = c
        .post(&format!("{V}/volumes"), t, json!({ "volume": body }))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["volume"]["status"], "creating");
    settled(c, t, v["volume"]["id"].as_str().unwrap()).await
}

#[tokio::test]
async fn version_documents_and_microversions() {
    let c = Cloud::new(Preset::Default);
    let (s, _, v) = c.call(Method::GET, "/volume/", None, None).await;
    assert_eq!(s, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(v["versions"][0]["id"], "v3.0");
    assert_eq!(v["versions"][0]["version"], "3.71");
    assert_eq!(v["versions"][0]["min_version"], "3.0");
    let (s, _, v) = c.call(Method::GET, "/volume/v3/", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["versions"][0]["links"][1]["href"]
        .as_str()
        .unwrap()
        .ends_with("/volume/v3/"));
    let admin = c.admin().await;
    let (s, h, _) = c
        .raw(
            Method::GET,
            &format!("{V}/volumes"),
            Some(&admin),
            None,
            &[("openstack-api-version", "volume 3.50")],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["openstack-api-version"], "volume 3.50");
    assert_eq!(h["vary"], "OpenStack-API-Version");
    let (s, _, v) = c
        .raw(
            Method::GET,
            &format!("{V}/volumes"),
            Some(&admin),
            None,
            &[("openstack-api-version", "volume 3.99")],
        )
        .await;
    cinder_error(s, &v, 406, "notAcceptable");
    let (s, _, v) = c
        .raw(
            Method::GET,
            &format!("{V}/volumes"),
            Some(&admin),
            None,
            &[("openstack-api-version", "volume x")],
        )
        .await;
    cinder_error(s, &v, 400, "badRequest");
    let (s, _, _) = c
        .call(Method::GET, &format!("{V}/volumes"), None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn volume_lifecycle_shapes_and_actions() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let (alice, pa) = member(&c, &admin, "pa", "alice").await;
    let v = create(&c, &alice, json!({"size": 1, "name": "v1", "metadata": {"a": "b"}, "volume_type": null, "imageRef": null})).await;
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["status"], "available");
    assert_eq!(v["size"], 1);
    assert_eq!(v["bootable"], "false");
    assert_eq!(v["volume_type"], "__DEFAULT__");
    assert_eq!(v["os-vol-tenant-attr:tenant_id"], pa.as_str());
    assert!(
        v.get("volume_type_id").is_none(),
        "3.0 has no volume_type_id"
    );
    assert!(
        v.get("os-vol-host-attr:host").is_none(),
        "admin-only key shown to a member"
    );
    // gophercloud's timestamp format: no zone.
    let created = v["created_at"].as_str().unwrap();
    assert!(!created.ends_with('Z') && created.len() == 26, "{created}");
    // The bytes are a real sparse file of the right size.
    let file = c.dir.path().join(format!("volumes/{id}.raw"));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 1 << 30);
    // A newer microversion adds its keys.
    let (_, _, nv) = c
        .raw(
            Method::GET,
            &format!("{V}/volumes/{id}"),
            Some(&alice),
            None,
            &[("openstack-api-version", "volume 3.71")],
        )
        .await;
    assert_eq!(
        nv["volume"]["volume_type_id"],
        kiln_controller::volume::model::DEFAULT_TYPE_ID
    );
    assert_eq!(nv["volume"]["shared_targets"], false);
    assert_eq!(nv["volume"]["consumes_quota"], true);
    // The project-id URL form answers the same.
    let (s, pv) = c.get(&format!("{V}/{pa}/volumes/{id}"), &alice).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(pv["volume"]["id"], id.as_str());
    // List, detail, filters, pagination.
    create(&c, &alice, json!({"size": 2, "name": "v2"})).await;
    create(&c, &alice, json!({"size": 3, "name": "v3"})).await;
    let (_, l) = c.get(&format!("{V}/volumes"), &alice).await;
    assert_eq!(l["volumes"].as_array().unwrap().len(), 3);
    assert_eq!(
        l["volumes"][0].as_object().unwrap().len(),
        3,
        "summary is id, name, links"
    );
    let (_, l) = c.get(&format!("{V}/volumes/detail?name=v2"), &alice).await;
    assert_eq!(l["volumes"][0]["size"], 2);
    let (_, l) = c
        .get(
            &format!("{V}/volumes/detail?sort=size:asc&limit=2&with_count=true"),
            &alice,
        )
        .await;
    assert_eq!(l["volumes"][0]["size"], 1);
    assert_eq!(l["count"], 3);
    let next = l["volumes_links"][0]["href"].as_str().unwrap();
    let (_, l2) = c
        .get(
            &format!(
                "{V}/volumes/detail?sort=size:asc&{}",
                next.split('?').nth(1).unwrap()
            ),
            &alice,
        )
        .await;
    assert_eq!(l2["volumes"][0]["size"], 3);
    // Update and metadata.
    let (s, u) = c
        .call(
            Method::PUT,
            &format!("{V}/volumes/{id}"),
            Some(&alice),
            Some(json!({"volume": {"name": "renamed"}})),
        )
        .await
        .into_parts();
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(u["volume"]["name"], "renamed");
    let (s, m) = c
        .post(
            &format!("{V}/volumes/{id}/metadata"),
            &alice,
            json!({"metadata": {"c": "d"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert_eq!(m["metadata"], json!({"a": "b", "c": "d"}));
    let (s, _, _) = c
        .call(
            Method::DELETE,
            &format!("{V}/volumes/{id}/metadata/a"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, e) = c
        .call(
            Method::DELETE,
            &format!("{V}/volumes/{id}/metadata/a"),
            Some(&alice),
            None,
        )
        .await;
    cinder_error(s, &e, 404, "itemNotFound");
    // Extend, bootable.
    let act_path = format!("{V}/volumes/{id}/action");
    let act = |body: Value| c.post(&act_path, &alice, body);
    let (s, _) = act(json!({"os-extend": {"new_size": 2}})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let v = settled(&c, &alice, &id).await;
    assert_eq!(v["size"], 2);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 2 << 30);
    let (s, e) = act(json!({"os-extend": {"new_size": 1}})).await;
    cinder_error(s, &e, 400, "badRequest");
    let (s, _) = act(json!({"os-set_bootable": {"bootable": true}})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = act(json!({"os-frobnicate": {}})).await;
    cinder_error(s, &e, 400, "badRequest");
    // Admin-only actions.
    let (s, e) = act(json!({"os-reset_status": {"status": "error"}})).await;
    cinder_error(s, &e, 403, "forbidden");
    let (s, _) = c
        .post(
            &format!("{V}/volumes/{id}/action"),
            &admin,
            json!({"os-reset_status": {"status": "error"}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (_, v) = c.get(&format!("{V}/volumes/{id}"), &alice).await;
    assert_eq!(v["volume"]["status"], "error");
    let (s, _) = c
        .post(
            &format!("{V}/volumes/{id}/action"),
            &admin,
            json!({"os-force_detach": {}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (_, v) = c.get(&format!("{V}/volumes/{id}"), &admin).await;
    assert_eq!(v["volume"]["status"], "available");
    assert_eq!(v["volume"]["bootable"], "true");
    assert!(v["volume"].get("os-vol-host-attr:host").is_some());
    // Bad input and other projects.
    for body in [
        json!({"volume": {"size": 0}}),
        json!({"volume": {"size": "x"}}),
        json!({"volume": {}}),
        json!({"nope": {}}),
        json!({"volume": {"size": 1, "availability_zone": "mars"}}),
    ] {
        let (s, e) = c.post(&format!("{V}/volumes"), &alice, body.clone()).await;
        cinder_error(s, &e, 400, "badRequest");
    }
    let (s, e) = c
        .post(
            &format!("{V}/volumes"),
            &alice,
            json!({"volume": {"size": 1, "imageRef": "abc"}}),
        )
        .await;
    cinder_error(s, &e, 400, "badRequest");
    let (s, e) = c
        .post(
            &format!("{V}/volumes"),
            &alice,
            json!({"volume": {"size": 1, "volume_type": "gold"}}),
        )
        .await;
    cinder_error(s, &e, 404, "itemNotFound");
    let (bob, _) = member(&c, &admin, "pb", "bob").await;
    let (s, e) = c.get(&format!("{V}/volumes/{id}"), &bob).await;
    cinder_error(s, &e, 404, "itemNotFound");
    let (_, l) = c.get(&format!("{V}/volumes"), &bob).await;
    assert_eq!(l["volumes"], json!([]));
    let (_, l) = c.get(&format!("{V}/volumes?all_tenants=1"), &admin).await;
    assert_eq!(l["volumes"].as_array().unwrap().len(), 3);
    // Delete: the record and the file go.
    let (s, _, _) = c
        .call(
            Method::DELETE,
            &format!("{V}/volumes/{id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, e) = c.get(&format!("{V}/volumes/{id}"), &alice).await;
    cinder_error(s, &e, 404, "itemNotFound");
    assert!(!file.exists());
}

trait Parts {
    fn into_parts(self) -> (StatusCode, Value);
}
impl Parts for (StatusCode, axum::http::HeaderMap, Value) {
    fn into_parts(self) -> (StatusCode, Value) {
        (self.0, self.2)
    }
}

#[tokio::test]
async fn snapshots_and_volumes_from_them() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let (alice, _) = member(&c, &admin, "pa", "alice").await;
    let v = create(&c, &alice, json!({"size": 1, "name": "src"})).await;
    let vid = v["id"].as_str().unwrap().to_string();
    let (s, sn) = c
        .post(
            &format!("{V}/snapshots"),
            &alice,
            json!({"snapshot": {"volume_id": vid, "name": "s1"}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{sn}");
    let sid = sn["snapshot"]["id"].as_str().unwrap().to_string();
    let (s, sn) = c.get(&format!("{V}/snapshots/{sid}"), &alice).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(sn["snapshot"]["status"], "available");
    assert_eq!(sn["snapshot"]["size"], 1);
    assert_eq!(sn["snapshot"]["volume_id"], vid.as_str());
    let (_, l) = c.get(&format!("{V}/snapshots/detail"), &alice).await;
    assert_eq!(l["snapshots"].as_array().unwrap().len(), 1);
    // A volume from the snapshot; too small → 400.
    let (s, e) = c
        .post(
            &format!("{V}/volumes"),
            &alice,
            json!({"volume": {"snapshot_id": sid, "size": 0}}),
        )
        .await;
    cinder_error(s, &e, 400, "badRequest");
    let nv = create(&c, &alice, json!({"snapshot_id": sid, "size": 2})).await;
    assert_eq!(nv["status"], "available");
    assert_eq!(nv["snapshot_id"], sid.as_str());
    assert_eq!(nv["size"], 2);
    // A volume with snapshots cannot be deleted without cascade.
    let (s, _, e) = c
        .call(
            Method::DELETE,
            &format!("{V}/volumes/{vid}"),
            Some(&alice),
            None,
        )
        .await;
    cinder_error(s, &e, 400, "badRequest");
    let (s, _, _) = c
        .call(
            Method::DELETE,
            &format!("{V}/snapshots/{sid}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, e) = c.get(&format!("{V}/snapshots/{sid}"), &alice).await;
    cinder_error(s, &e, 404, "itemNotFound");
    let (s, _, _) = c
        .call(
            Method::DELETE,
            &format!("{V}/volumes/{vid}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    // Cascade deletes snapshots too.
    let nid = nv["id"].as_str().unwrap();
    c.post(
        &format!("{V}/snapshots"),
        &alice,
        json!({"snapshot": {"volume_id": nid}}),
    )
    .await;
    let (s, _, _) = c
        .call(
            Method::DELETE,
            &format!("{V}/volumes/{nid}?cascade=true"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (_, l) = c.get(&format!("{V}/snapshots"), &alice).await;
    assert_eq!(l["snapshots"], json!([]));
}

#[tokio::test]
async fn attach_and_detach_for_compute() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let (alice, _) = member(&c, &admin, "pa", "alice").await;
    let v = create(&c, &alice, json!({"size": 1})).await;
    let id = v["id"].as_str().unwrap().to_string();
    let store = c.state.identity.store().clone();
    let a = ops::attach(&*store, &id, "server-1", "node-a", Some("/dev/vdb")).unwrap();
    let (_, v) = c.get(&format!("{V}/volumes/{id}"), &alice).await;
    assert_eq!(v["volume"]["status"], "in-use");
    assert_eq!(v["volume"]["attachments"][0]["server_id"], "server-1");
    assert_eq!(
        v["volume"]["attachments"][0]["attachment_id"],
        a.id.as_str()
    );
    assert_eq!(v["volume"]["attachments"][0]["device"], "/dev/vdb");
    assert!(ops::attach(&*store, &id, "server-2", "node-a", None).is_err());
    // In use: no delete, no snapshot without force.
    let (s, _, e) = c
        .call(
            Method::DELETE,
            &format!("{V}/volumes/{id}"),
            Some(&alice),
            None,
        )
        .await;
    cinder_error(s, &e, 400, "badRequest");
    let (s, e) = c
        .post(
            &format!("{V}/snapshots"),
            &alice,
            json!({"snapshot": {"volume_id": id}}),
        )
        .await;
    cinder_error(s, &e, 400, "badRequest");
    let (s, _) = c
        .post(
            &format!("{V}/snapshots"),
            &alice,
            json!({"snapshot": {"volume_id": id, "force": true}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert!(ops::detach(&*store, &id, "server-9").is_err());
    ops::detach(&*store, &id, "server-1").unwrap();
    let (_, v) = c.get(&format!("{V}/volumes/{id}"), &alice).await;
    assert_eq!(v["volume"]["status"], "available");
    assert_eq!(v["volume"]["attachments"], json!([]));
    assert!(ops::attach(&*store, "nope", "s", "h", None).is_err());
}

#[tokio::test]
async fn types_limits_and_quotas() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let (alice, pa) = member(&c, &admin, "pa", "alice").await;
    let (s, t) = c.get(&format!("{V}/types"), &alice).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(t["volume_types"][0]["name"], "__DEFAULT__");
    let (_, d) = c.get(&format!("{V}/types/default"), &alice).await;
    assert_eq!(d["volume_type"]["name"], "__DEFAULT__");
    let (s, e) = c
        .post(
            &format!("{V}/types"),
            &alice,
            json!({"volume_type": {"name": "gold"}}),
        )
        .await;
    cinder_error(s, &e, 403, "forbidden");
    let (s, g) = c
        .post(
            &format!("{V}/types"),
            &admin,
            json!({"volume_type": {"name": "gold"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{g}");
    let (s, e) = c
        .post(
            &format!("{V}/types"),
            &admin,
            json!({"volume_type": {"name": "gold"}}),
        )
        .await;
    cinder_error(s, &e, 409, "conflictingRequest");
    let v = create(&c, &alice, json!({"size": 1, "volume_type": "gold"})).await;
    assert_eq!(v["volume_type"], "gold");
    let (s, q) = c
        .get(&format!("{V}/os-quota-sets/{pa}?usage=true"), &alice)
        .await;
    assert_eq!(s, StatusCode::OK, "{q}");
    assert_eq!(q["quota_set"]["volumes"]["in_use"], 1);
    let (s, e) = c
        .call(
            Method::PUT,
            &format!("{V}/os-quota-sets/{pa}"),
            Some(&alice),
            Some(json!({"quota_set": {"volumes": 1}})),
        )
        .await
        .into_parts();
    cinder_error(s, &e, 403, "forbidden");
    let (s, q) = c
        .call(
            Method::PUT,
            &format!("{V}/os-quota-sets/{pa}"),
            Some(&admin),
            Some(json!({"quota_set": {"volumes": 1, "gigabytes": 5}})),
        )
        .await
        .into_parts();
    assert_eq!(s, StatusCode::OK, "{q}");
    assert_eq!(q["quota_set"]["volumes"], 1);
    let (s, e) = c
        .post(
            &format!("{V}/volumes"),
            &alice,
            json!({"volume": {"size": 1}}),
        )
        .await;
    cinder_error(s, &e, 413, "overLimit");
    let (_, l) = c.get(&format!("{V}/limits"), &alice).await;
    assert_eq!(l["limits"]["absolute"]["maxTotalVolumes"], 1);
    assert_eq!(l["limits"]["absolute"]["totalVolumesUsed"], 1);
    assert_eq!(l["limits"]["absolute"]["totalGigabytesUsed"], 1);
    let (_, z) = c.get(&format!("{V}/os-availability-zone"), &alice).await;
    assert_eq!(z["availabilityZoneInfo"][0]["zoneName"], "nova");
}
