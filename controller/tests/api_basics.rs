//! Version discovery, error shapes for bad requests, unknown paths and methods, and
//! the 501 placeholders — through `app()` over a real redb file.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::{assert_error, Cloud};
use kiln_controller::identity::compliance::Preset;
use serde_json::json;

#[tokio::test]
async fn version_documents_without_a_token_use_the_host() {
    let c = Cloud::new(Preset::Default);
    let (s, _, v) = c
        .raw(
            Method::GET,
            "/",
            None,
            None,
            &[("host", "cloud.example:5000")],
        )
        .await;
    assert_eq!(s, StatusCode::MULTIPLE_CHOICES);
    let entry = &v["versions"]["values"][0];
    assert_eq!(entry["id"], "v3.14");
    assert_eq!(entry["status"], "stable");
    assert_eq!(entry["links"][0]["rel"], "self");
    assert_eq!(entry["links"][0]["href"], "http://cloud.example:5000/v3/");

    for path in ["/v3", "/v3/"] {
        let (s, _, v) = c
            .raw(
                Method::GET,
                path,
                None,
                None,
                &[("host", "h:1"), ("x-forwarded-proto", "https")],
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["version"]["links"][0]["href"], "https://h:1/v3/");
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_json() {
    let c = Cloud::new(Preset::Default);
    let (s, _, v) = c.call(Method::GET, "/v3/nothing-here", None, None).await;
    assert_error(s, &v, 404);
    let (s, _, v) = c.call(Method::PUT, "/v3", None, None).await;
    assert_error(s, &v, 405);
    let (s, _, v) = c.call(Method::DELETE, "/v3/auth/catalog", None, None).await;
    assert_error(s, &v, 405);
}

#[tokio::test]
async fn other_services_answer_501_per_prefix() {
    let c = Cloud::new(Preset::Default);
    for path in ["/placement/"] {
        let (s, _, v) = c.call(Method::GET, path, None, None).await;
        assert_error(s, &v, 501);
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not implemented"));
    }
}

#[tokio::test]
async fn malformed_bodies_are_400_in_keystone_shape() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    // Malformed JSON.
    let (s, _, v) = c
        .raw(
            Method::POST,
            "/v3/auth/tokens",
            None,
            Some("{nope".into()),
            &[],
        )
        .await;
    assert_error(s, &v, 400);
    // Wrong type.
    let (s, _, v) = c
        .call(
            Method::POST,
            "/v3/auth/tokens",
            None,
            Some(json!({"auth": {"identity": {"methods": "password"}}})),
        )
        .await;
    assert_error(s, &v, 400);
    // Missing field.
    let (s, _, v) = c
        .call(
            Method::POST,
            "/v3/auth/tokens",
            None,
            Some(json!({"auth": {}})),
        )
        .await;
    assert_error(s, &v, 400);
    // Empty body.
    let (s, _, v) = c
        .raw(Method::POST, "/v3/projects", Some(&admin), None, &[])
        .await;
    assert_error(s, &v, 400);
    // Wrong types inside a resource.
    let (s, v) = c
        .post("/v3/projects", &admin, json!({"project": {"name": 5}}))
        .await;
    assert_error(s, &v, 400);
    let (s, v) = c
        .post(
            "/v3/users",
            &admin,
            json!({"user": {"name": "x", "enabled": "yes"}}),
        )
        .await;
    assert_error(s, &v, 400);
    // A bad query flag.
    let (s, v) = c.get("/v3/projects?enabled=perhaps", &admin).await;
    assert_error(s, &v, 400);
}

#[tokio::test]
async fn missing_or_bad_tokens_are_401() {
    let c = Cloud::new(Preset::Default);
    let (s, _, v) = c.call(Method::GET, "/v3/projects", None, None).await;
    assert_error(s, &v, 401);
    let (s, v) = c.get("/v3/projects", "not-a-token").await;
    assert_error(s, &v, 401);
}

#[tokio::test]
async fn a_name_in_an_id_slot_is_404_not_500() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    for path in [
        "/v3/projects/admin",
        "/v3/users/admin",
        "/v3/domains/Default",
        "/v3/roles/admin",
        "/v3/groups/nobody",
    ] {
        let (s, v) = c.get(path, &admin).await;
        assert_error(s, &v, 404);
    }
}

#[tokio::test]
async fn services_endpoints_and_regions_mirror_the_catalog() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let (s, v) = c.get("/v3/services?type=compute", &admin).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let services = v["services"].as_array().unwrap();
    assert_eq!(services.len(), 1);
    let sid = services[0]["id"].as_str().unwrap().to_string();
    let (_, v) = c.get("/v3/services", &admin).await;
    assert_eq!(v["services"].as_array().unwrap().len(), 7);
    let (s, v) = c.get(&format!("/v3/services/{sid}"), &admin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["service"]["name"], "nova");
    let (_, v) = c
        .get(
            &format!("/v3/endpoints?service_id={sid}&interface=public"),
            &admin,
        )
        .await;
    let eps = v["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0]["url"], "http://kiln.test/compute/v2.1");
    let eid = eps[0]["id"].as_str().unwrap().to_string();
    let (s, _) = c.get(&format!("/v3/endpoints/{eid}"), &admin).await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = c.get("/v3/regions", &admin).await;
    assert_eq!(v["regions"][0]["id"], "RegionOne");
    let (s, v) = c.get("/v3/regions/Elsewhere", &admin).await;
    assert_error(s, &v, 404);
    let (s, v) = c
        .post("/v3/services", &admin, json!({"service": {"type": "x"}}))
        .await;
    assert_error(s, &v, 501);
}

#[tokio::test]
async fn keystone_features_not_built_answer_501() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    for path in [
        "/v3/credentials",
        "/v3/OS-TRUST/trusts",
        "/v3/projects/abc/tags",
        "/v3/roles/abc/implies/def",
        "/v3/domains/config/default",
    ] {
        let (s, v) = c.get(path, &admin).await;
        assert_error(s, &v, 501);
    }
    // Resources next to them still work.
    let (s, _) = c.get("/v3/domains/default", &admin).await;
    assert_eq!(s, StatusCode::OK);
}
