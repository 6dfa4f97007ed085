//! Glance v2 through `app()`: images, data (streamed upload, ranged download,
//! hashes), status transitions, JSON patch, tags, members, visibility and errors.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{assert_error, Cloud};
use http_body_util::BodyExt;
use kiln_controller::identity::compliance::Preset;
use md5::Md5;
use serde_json::{json, Value};
use sha2::{Digest, Sha512};
use tower::ServiceExt;

const PATCH_TYPE: &str = "application/openstack-images-v2.1-json-patch";

async fn send(
    cloud: &Cloud,
    method: Method,
    path: &str,
    token: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("x-auth-token", token);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = cloud
        .app
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, bytes)
}

async fn patch(cloud: &Cloud, token: &str, id: &str, ops: Value) -> (StatusCode, Value) {
    let (s, _, b) = send(
        cloud,
        Method::PATCH,
        &format!("/image/v2/images/{id}"),
        token,
        ops.to_string().into_bytes(),
        &[("content-type", PATCH_TYPE)],
    )
    .await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

async fn upload(cloud: &Cloud, token: &str, id: &str, data: &[u8]) -> StatusCode {
    send(
        cloud,
        Method::PUT,
        &format!("/image/v2/images/{id}/file"),
        token,
        data.to_vec(),
        &[("content-type", "application/octet-stream")],
    )
    .await
    .0
}

async fn create(cloud: &Cloud, token: &str, body: Value) -> Value {
    let (s, v) = cloud.post("/image/v2/images", token, body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

/// A member user in its own project; returns (project id, token).
async fn member_of(cloud: &Cloud, admin: &str, name: &str) -> (String, String) {
    let p = cloud.project(admin, name).await;
    let u = cloud
        .user(admin, &format!("{name}-user"), "UserPassword12345")
        .await;
    cloud.grant(admin, &p, &u, "member").await;
    let t = cloud
        .login(&format!("{name}-user"), "UserPassword12345", Some(name))
        .await;
    (p, t)
}

#[tokio::test]
async fn discovery_needs_no_token() {
    let cloud = Cloud::new(Preset::Default);
    for path in ["/image", "/image/", "/image/v2/"] {
        let (s, _, v) = cloud.call(Method::GET, path, None, None).await;
        assert_eq!(s, StatusCode::MULTIPLE_CHOICES, "{path}");
        assert_eq!(v["versions"][0]["status"], "CURRENT");
        assert_eq!(v["versions"][0]["id"], "v2.16");
        assert_eq!(
            v["versions"][0]["links"][0]["href"],
            "http://kiln.test/image/v2/"
        );
    }
    let (s, _, v) = cloud
        .call(Method::GET, "/image/v2/images", None, None)
        .await;
    assert_error(s, &v, 401);
    let admin = cloud.admin().await;
    let (s, v) = cloud.get("/image/v2/schemas/image", &admin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["name"], "image");
    assert_eq!(v["additionalProperties"]["type"], "string");
    let (s, v) = cloud.get("/image/v2/schemas/images", &admin).await;
    assert_eq!((s, v["name"].clone()), (StatusCode::OK, json!("images")));
    let (s, v) = cloud.get("/image/v2/nothing-here", &admin).await;
    assert_error(s, &v, 404);
}

#[tokio::test]
async fn create_upload_download_with_hashes_and_ranges() {
    let cloud = Cloud::new(Preset::Default);
    let admin = cloud.admin().await;
    let v = create(
        &cloud,
        &admin,
        json!({"name": "cirros", "disk_format": "raw", "container_format": "bare",
               "owner_specified.openstack.md5": "", "kernel_id": "k1", "tags": ["a", "a", "b"]}),
    )
    .await;
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["status"], "queued");
    assert_eq!(v["visibility"], "shared");
    assert_eq!(v["kernel_id"], "k1");
    assert_eq!(v["owner_specified.openstack.md5"], "");
    assert_eq!(v["tags"], json!(["a", "b"]));
    assert_eq!(v["size"], Value::Null);
    assert_eq!(v["self"], format!("/v2/images/{id}"));
    assert_eq!(v["file"], format!("/v2/images/{id}/file"));
    assert!(v["created_at"].as_str().unwrap().ends_with('Z'));

    // No data yet: 204.
    let (s, _, _) = send(
        &cloud,
        Method::GET,
        &format!("/image/v2/images/{id}/file"),
        &admin,
        vec![],
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        upload(&cloud, &admin, &id, &data).await,
        StatusCode::NO_CONTENT
    );
    let (_, v) = cloud.get(&format!("/image/v2/images/{id}"), &admin).await;
    assert_eq!(v["status"], "active");
    assert_eq!(v["size"], data.len());
    let md5: String = Md5::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let sha: String = Sha512::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v["checksum"], md5);
    assert_eq!(v["os_hash_algo"], "sha512");
    assert_eq!(v["os_hash_value"], sha);

    let file = format!("/image/v2/images/{id}/file");
    let (s, h, body) = send(&cloud, Method::GET, &file, &admin, vec![], &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, data);
    assert_eq!(h["content-md5"], md5.as_str());
    assert_eq!(h["content-type"], "application/octet-stream");

    let (s, h, body) = send(
        &cloud,
        Method::GET,
        &file,
        &admin,
        vec![],
        &[("range", "bytes=10-19")],
    )
    .await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &data[10..20]);
    assert_eq!(
        h["content-range"],
        format!("bytes 10-19/{}", data.len()).as_str()
    );
    let (s, _, body) = send(
        &cloud,
        Method::GET,
        &file,
        &admin,
        vec![],
        &[("range", "bytes=-5")],
    )
    .await;
    assert_eq!(
        (s, body.as_slice()),
        (StatusCode::PARTIAL_CONTENT, &data[data.len() - 5..])
    );
    let (s, _, _) = send(
        &cloud,
        Method::GET,
        &file,
        &admin,
        vec![],
        &[("range", "bytes=999999-")],
    )
    .await;
    assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);

    // A second upload is a status conflict.
    assert_eq!(
        upload(&cloud, &admin, &id, b"again").await,
        StatusCode::CONFLICT
    );

    // Deactivate: metadata visible, data refused to non-admins; reactivate.
    let (_, t) = member_of(&cloud, &admin, "p1").await;
    let s = cloud
        .post(
            &format!("/image/v2/images/{id}/actions/deactivate"),
            &admin,
            json!({}),
        )
        .await
        .0;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, v) = cloud.get(&format!("/image/v2/images/{id}"), &admin).await;
    assert_eq!(v["status"], "deactivated");
    let (s, v) = patch(
        &cloud,
        &admin,
        &id,
        json!([{"op": "replace", "path": "/visibility", "value": "public"}]),
    )
    .await;
    assert_eq!(
        (s, v["visibility"].clone()),
        (StatusCode::OK, json!("public"))
    );
    let (s, _, _) = send(&cloud, Method::GET, &file, &t, vec![], &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let s = cloud
        .post(
            &format!("/image/v2/images/{id}/actions/reactivate"),
            &admin,
            json!({}),
        )
        .await
        .0;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, body) = send(&cloud, Method::GET, &file, &t, vec![], &[]).await;
    assert_eq!((s, body.len()), (StatusCode::OK, data.len()));

    // Delete removes the file.
    let path = cloud.dir.path().join("images").join(&id);
    assert!(path.exists());
    assert_eq!(
        cloud
            .delete(&format!("/image/v2/images/{id}"), &admin)
            .await,
        StatusCode::NO_CONTENT
    );
    assert!(!path.exists());
    let (s, v) = cloud.get(&format!("/image/v2/images/{id}"), &admin).await;
    assert_error(s, &v, 404);
}

#[tokio::test]
async fn upload_needs_formats_and_deactivate_needs_active() {
    let cloud = Cloud::new(Preset::Default);
    let admin = cloud.admin().await;
    let v = create(&cloud, &admin, json!({"name": "bare"})).await;
    let id = v["id"].as_str().unwrap();
    assert_eq!(
        upload(&cloud, &admin, id, b"x").await,
        StatusCode::BAD_REQUEST
    );
    let (s, v) = cloud
        .post(
            &format!("/image/v2/images/{id}/actions/deactivate"),
            &admin,
            json!({}),
        )
        .await;
    assert_error(s, &v, 409);
    let (s, v) = cloud
        .post("/image/v2/images", &admin, json!({"disk_format": "floppy"}))
        .await;
    assert_error(s, &v, 400);
    let (s, v) = cloud
        .post("/image/v2/images", &admin, json!({"status": "active"}))
        .await;
    assert_error(s, &v, 403);
    let (s, v) = cloud
        .post("/image/v2/images", &admin, json!({"prop": 5}))
        .await;
    assert_error(s, &v, 400);
    let (s, v) = cloud
        .post("/image/v2/images", &admin, json!({"id": "not-a-uuid"}))
        .await;
    assert_error(s, &v, 400);
    let fixed = "11111111-2222-3333-4444-555555555555";
    create(&cloud, &admin, json!({"id": fixed})).await;
    let (s, v) = cloud
        .post("/image/v2/images", &admin, json!({"id": fixed}))
        .await;
    assert_error(s, &v, 409);
}

#[tokio::test]
async fn json_patch_rules() {
    let cloud = Cloud::new(Preset::Default);
    let admin = cloud.admin().await;
    let v = create(&cloud, &admin, json!({"name": "a", "extra": "1"})).await;
    let id = v["id"].as_str().unwrap();
    let (s, v) = patch(
        &cloud,
        &admin,
        id,
        json!([
            {"op": "replace", "path": "/name", "value": "b"},
            {"op": "add", "path": "/os_command_line", "value": "console=ttyS0"},
            {"op": "remove", "path": "/extra"},
            {"op": "replace", "path": "/tags", "value": ["t1"]},
            {"op": "replace", "path": "/protected", "value": true},
            {"op": "add", "path": "/min_ram", "value": 64}
        ]),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "b");
    assert_eq!(v["os_command_line"], "console=ttyS0");
    assert!(v.get("extra").is_none());
    assert_eq!(v["tags"], json!(["t1"]));
    assert_eq!(v["min_ram"], 64);
    // Protected: no delete until unprotected.
    let (s, _, b) = send(
        &cloud,
        Method::DELETE,
        &format!("/image/v2/images/{id}"),
        &admin,
        vec![],
        &[],
    )
    .await;
    assert_error(s, &serde_json::from_slice(&b).unwrap(), 403);
    for (ops, code) in [
        (
            json!([{"op": "replace", "path": "/status", "value": "active"}]),
            403,
        ),
        (
            json!([{"op": "replace", "path": "/nope", "value": "x"}]),
            409,
        ),
        (json!([{"op": "remove", "path": "/nope"}]), 409),
        (json!([{"op": "remove", "path": "/name"}]), 403),
        (
            json!([{"op": "replace", "path": "/min_ram", "value": "many"}]),
            400,
        ),
        (json!({"op": "add"}), 400),
    ] {
        let (s, v) = patch(&cloud, &admin, id, ops.clone()).await;
        assert_error(s, &v, code);
    }
    // Wrong media type: 415.
    let (s, _, _) = send(
        &cloud,
        Method::PATCH,
        &format!("/image/v2/images/{id}"),
        &admin,
        b"[]".to_vec(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Tags by URL.
    assert_eq!(
        cloud
            .put(&format!("/image/v2/images/{id}/tags/t2"), &admin)
            .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        cloud
            .delete(&format!("/image/v2/images/{id}/tags/t1"), &admin)
            .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        cloud
            .delete(&format!("/image/v2/images/{id}/tags/t1"), &admin)
            .await,
        StatusCode::NOT_FOUND
    );
    let (_, v) = cloud.get(&format!("/image/v2/images/{id}"), &admin).await;
    assert_eq!(v["tags"], json!(["t2"]));
}

#[tokio::test]
async fn visibility_members_and_list_filters() {
    let cloud = Cloud::new(Preset::Default);
    let admin = cloud.admin().await;
    let (p1, t1) = member_of(&cloud, &admin, "p1").await;
    let (p2, t2) = member_of(&cloud, &admin, "p2").await;
    let private = create(
        &cloud,
        &t1,
        json!({"name": "priv", "visibility": "private"}),
    )
    .await;
    let shared = create(&cloud, &t1, json!({"name": "shr", "tags": ["x"]})).await;
    let (pid, sid) = (
        private["id"].as_str().unwrap(),
        shared["id"].as_str().unwrap(),
    );
    assert_eq!(shared["owner"], p1);
    // Non-admins may not publicize.
    let (s, v) = cloud
        .post("/image/v2/images", &t1, json!({"visibility": "public"}))
        .await;
    assert_error(s, &v, 403);
    let pubid = create(
        &cloud,
        &admin,
        json!({"name": "pub", "visibility": "public"}),
    )
    .await["id"]
        .clone();

    // p2 sees only the public one; a private image of p1 is a 404 for p2.
    let (_, v) = cloud.get("/image/v2/images", &t2).await;
    let names: Vec<&str> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["pub"]);
    let (s, v) = cloud.get(&format!("/image/v2/images/{pid}"), &t2).await;
    assert_error(s, &v, 404);
    let (s, v) = patch(
        &cloud,
        &t2,
        sid,
        json!([{"op": "replace", "path": "/name", "value": "x"}]),
    )
    .await;
    assert_error(s, &v, 404);

    // Share with p2: pending (visible by id, not listed), then accepted (listed).
    let (s, v) = cloud
        .post(
            &format!("/image/v2/images/{sid}/members"),
            &t1,
            json!({"member": p2}),
        )
        .await;
    assert_eq!((s, v["status"].clone()), (StatusCode::OK, json!("pending")));
    let (s, v) = cloud
        .post(
            &format!("/image/v2/images/{sid}/members"),
            &t1,
            json!({"member": p2}),
        )
        .await;
    assert_error(s, &v, 409);
    let (s, v) = cloud
        .post(
            &format!("/image/v2/images/{pid}/members"),
            &t1,
            json!({"member": p2}),
        )
        .await;
    assert_error(s, &v, 403);
    let (s, _) = cloud.get(&format!("/image/v2/images/{sid}"), &t2).await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = cloud.get("/image/v2/images", &t2).await;
    assert_eq!(v["images"].as_array().unwrap().len(), 1);
    // The owner cannot accept for the member; the member can.
    let (s, _, v) = cloud
        .call(
            Method::PUT,
            &format!("/image/v2/images/{sid}/members/{p2}"),
            Some(&t1),
            Some(json!({"status": "accepted"})),
        )
        .await;
    assert_error(s, &v, 403);
    let (s, _, v) = cloud
        .call(
            Method::PUT,
            &format!("/image/v2/images/{sid}/members/{p2}"),
            Some(&t2),
            Some(json!({"status": "accepted"})),
        )
        .await;
    assert_eq!(
        (s, v["status"].clone()),
        (StatusCode::OK, json!("accepted"))
    );
    let (_, v) = cloud.get("/image/v2/images?tag=x", &t2).await;
    assert_eq!(v["images"][0]["id"], sid);
    let (_, v) = cloud
        .get(&format!("/image/v2/images/{sid}/members"), &t1)
        .await;
    assert_eq!(v["members"][0]["member_id"], p2);
    assert_eq!(v["schema"], "/v2/schemas/members");
    // A member may not write the image.
    let (s, v) = patch(
        &cloud,
        &t2,
        sid,
        json!([{"op": "replace", "path": "/name", "value": "x"}]),
    )
    .await;
    assert_error(s, &v, 403);
    assert_eq!(
        cloud
            .delete(&format!("/image/v2/images/{sid}/members/{p2}"), &t1)
            .await,
        StatusCode::NO_CONTENT
    );
    let (s, _) = cloud.get(&format!("/image/v2/images/{sid}"), &t2).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Filters and pagination as p1.
    let (_, v) = cloud.get("/image/v2/images?name=priv", &t1).await;
    assert_eq!(v["images"].as_array().unwrap().len(), 1);
    let (_, v) = cloud
        .get(
            &format!(
                "/image/v2/images?id=in:{pid},{pubid}",
                pubid = pubid.as_str().unwrap()
            ),
            &t1,
        )
        .await;
    assert_eq!(v["images"].as_array().unwrap().len(), 2);
    let (_, v) = cloud
        .get("/image/v2/images?sort_key=name&sort_dir=asc&limit=2", &t1)
        .await;
    let names: Vec<&str> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["priv", "pub"]);
    let next = v["next"].as_str().unwrap().replace("/v2/", "/image/v2/");
    let (_, v) = cloud
        .get(&format!("{next}&sort_key=name&sort_dir=asc"), &t1)
        .await;
    let names: Vec<&str> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["shr"]);
    assert!(v.get("next").is_none());
    let (s, v) = cloud.get("/image/v2/images?marker=nope", &t1).await;
    assert_error(s, &v, 400);
    let (s, v) = cloud.get("/image/v2/images?limit=-1", &t1).await;
    assert_error(s, &v, 400);
    let (s, v) = cloud.get("/image/v2/images?sort_dir=up", &t1).await;
    assert_error(s, &v, 400);
}
