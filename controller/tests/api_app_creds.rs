//! Application credentials: create (secret once, generated or given), roles a
//! subset of the creator's, authenticate by id or by name + user, list, delete.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::{assert_error, Cloud};
use kiln_controller::identity::compliance::Preset;
use serde_json::json;

#[tokio::test]
async fn create_authenticate_list_delete() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let p = c.project(&admin, "p").await;
    let u = c.user(&admin, "ann", "pw").await;
    c.grant(&admin, &p, &u, "member").await;
    let t = c.login("ann", "pw", Some("p")).await;
    let base = format!("/v3/users/{u}/application_credentials");

    let (s, v) = c
        .post(
            &base,
            &t,
            json!({"application_credential": {"name": "ci", "roles": [{"name": "reader"}]}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let ac = &v["application_credential"];
    let id = ac["id"].as_str().unwrap().to_string();
    let secret = ac["secret"].as_str().unwrap().to_string();
    assert!(secret.len() >= 32);
    assert_eq!(ac["project_id"], p.as_str());
    assert_eq!(ac["roles"][0]["name"], "reader");
    assert_eq!(ac["unrestricted"], false);

    let (s, v) = c
        .post(&base, &t, json!({"application_credential": {"name": "ci"}}))
        .await;
    assert_error(s, &v, 409);
    let (s, v) = c
        .post(
            &base,
            &t,
            json!({"application_credential": {"name": "x", "roles": [{"name": "admin"}]}}),
        )
        .await;
    assert_error(s, &v, 403);
    let (s, v) = c
        .post(
            &base,
            &t,
            json!({"application_credential": {"name": "old", "expires_at": "2001-01-01T00:00:00"}}),
        )
        .await;
    assert_error(s, &v, 400);

    // By id.
    let (s, tok, v) = c
        .auth(
            json!({"auth": {"identity": {"methods": ["application_credential"],
            "application_credential": {"id": id, "secret": secret}}}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["token"]["project"]["id"], p.as_str());
    assert_eq!(v["token"]["application_credential"]["id"], id.as_str());
    assert_eq!(v["token"]["application_credential"]["restricted"], true);
    assert_eq!(v["token"]["methods"], json!(["application_credential"]));
    let names: Vec<&str> = v["token"]["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["reader"]);
    let ac_token = tok.unwrap();
    // A restricted credential cannot mint another.
    let (s, v) = c
        .post(
            &base,
            &ac_token,
            json!({"application_credential": {"name": "y"}}),
        )
        .await;
    assert_error(s, &v, 403);

    // By name + user; wrong secret refused.
    let (s, _, v) = c
        .auth(
            json!({"auth": {"identity": {"methods": ["application_credential"],
            "application_credential": {"name": "ci", "secret": secret,
                "user": {"name": "ann", "domain": {"name": "Default"}}}}}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _, v) = c
        .auth(
            json!({"auth": {"identity": {"methods": ["application_credential"],
            "application_credential": {"id": id, "secret": "nope"}}}}),
        )
        .await;
    assert_error(s, &v, 401);

    // A given secret.
    let (s, v) = c
        .post(&base, &t, json!({"application_credential": {"name": "mine", "secret": "s3cr3t", "unrestricted": true}}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(v["application_credential"]["secret"], "s3cr3t");

    // List (no secrets) and show.
    let (s, v) = c.get(&base, &t).await;
    assert_eq!(s, StatusCode::OK);
    let list = v["application_credentials"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|a| a.get("secret").is_none()));
    let (_, v) = c.get(&format!("{base}?name=ci"), &t).await;
    assert_eq!(v["application_credentials"].as_array().unwrap().len(), 1);
    let (s, v) = c.get(&format!("{base}/{id}"), &t).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["application_credential"]["name"], "ci");

    // Another user cannot see them; the admin can.
    let other = c.user(&admin, "bo", "pw").await;
    c.grant(&admin, &p, &other, "member").await;
    let bo = c.login("bo", "pw", Some("p")).await;
    let (s, v) = c.get(&base, &bo).await;
    assert_error(s, &v, 403);
    let (s, v) = c
        .get(
            &format!("/v3/users/{other}/application_credentials/{id}"),
            &bo,
        )
        .await;
    assert_error(s, &v, 404);
    let (s, _) = c.get(&base, &admin).await;
    assert_eq!(s, StatusCode::OK);
    // Creating for someone else is refused even for an admin.
    let (s, v) = c
        .post(
            &base,
            &admin,
            json!({"application_credential": {"name": "z"}}),
        )
        .await;
    assert_error(s, &v, 403);

    // Delete: its tokens die and it no longer authenticates.
    assert_eq!(
        c.delete(&format!("{base}/{id}"), &t).await,
        StatusCode::NO_CONTENT
    );
    let (s, v) = c.get("/v3/auth/catalog", &ac_token).await;
    assert_error(s, &v, 401);
    let (s, _, v) = c
        .auth(
            json!({"auth": {"identity": {"methods": ["application_credential"],
            "application_credential": {"id": id, "secret": secret}}}}),
        )
        .await;
    assert_error(s, &v, 401);
}

#[tokio::test]
async fn unscoped_tokens_cannot_create_credentials() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let u = c.user(&admin, "nos", "pw").await;
    let t = c.login("nos", "pw", None).await;
    let (s, v) = c
        .post(
            &format!("/v3/users/{u}/application_credentials"),
            &t,
            json!({"application_credential": {"name": "a"}}),
        )
        .await;
    assert_error(s, &v, 400);
}
