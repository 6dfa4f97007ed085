//! `/v3/auth/*`: every auth method and scope, the token body's shape, validation,
//! revocation, and the caller's catalog/projects/domains/system.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::{assert_error, password_auth, Cloud, ADMIN_PW};
use kiln_controller::identity::compliance::Preset;
use serde_json::{json, Value};

fn is_keystone_time(v: &Value) -> bool {
    let s = v.as_str().unwrap_or("");
    // 2026-01-02T03:04:05.123456Z
    s.len() == 27 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s.as_bytes()[19] == b'.'
}

#[tokio::test]
async fn project_scoped_password_token_has_keystones_shape() {
    let c = Cloud::new(Preset::Default);
    let (s, token, v) = c
        .auth(password_auth("admin", ADMIN_PW, Some("admin")))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(token.unwrap().len() >= 32);
    let t = &v["token"];
    assert_eq!(t["methods"], json!(["password"]));
    assert_eq!(t["user"]["name"], "admin");
    assert_eq!(
        t["user"]["domain"],
        json!({"id": "default", "name": "Default"})
    );
    assert!(t["user"]["password_expires_at"].is_null());
    assert_eq!(t["project"]["name"], "admin");
    assert_eq!(
        t["project"]["domain"],
        json!({"id": "default", "name": "Default"})
    );
    assert_eq!(t["is_domain"], false);
    let mut roles: Vec<&str> = t["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    roles.sort();
    assert_eq!(roles, ["admin", "member", "reader"]);
    assert!(t["roles"][0]["id"].is_string());
    assert!(is_keystone_time(&t["expires_at"]), "{}", t["expires_at"]);
    assert!(is_keystone_time(&t["issued_at"]), "{}", t["issued_at"]);
    assert_eq!(t["audit_ids"].as_array().unwrap().len(), 1);
    let types: Vec<&str> = t["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for want in [
        "identity",
        "compute",
        "network",
        "image",
        "block-storage",
        "volumev3",
        "placement",
    ] {
        assert!(types.contains(&want), "{want} missing from {types:?}");
    }
    let compute = t["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "compute")
        .unwrap();
    assert_eq!(
        compute["endpoints"][0]["url"],
        "http://kiln.test/compute/v2.1"
    );
}

#[tokio::test]
async fn auth_by_ids_domain_and_system_scope_unscoped_and_nocatalog() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let (_, v) = c.get("/v3/users?name=admin", &admin).await;
    let uid = v["users"][0]["id"].as_str().unwrap().to_string();
    let (_, v) = c.get("/v3/projects?name=admin", &admin).await;
    let pid = v["projects"][0]["id"].as_str().unwrap().to_string();

    let by_id = |scope: Value| {
        json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "id": uid, "password": ADMIN_PW}}}, "scope": scope}})
    };
    let (s, _, v) = c.auth(by_id(json!({"project": {"id": pid}}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["token"]["project"]["id"], pid.as_str());

    let (s, _, v) = c.auth(by_id(json!({"system": {"all": true}}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["token"]["system"], json!({"all": true}));
    assert!(v["token"]["catalog"].is_array());

    // The admin has no domain role yet: 401; after a grant, a domain token.
    let (s, _, v) = c.auth(by_id(json!({"domain": {"id": "default"}}))).await;
    assert_error(s, &v, 401);
    let rid = c.role_id(&admin, "admin").await;
    let st = c
        .put(
            &format!("/v3/domains/default/users/{uid}/roles/{rid}"),
            &admin,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (s, _, v) = c.auth(by_id(json!({"domain": {"name": "Default"}}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["token"]["domain"],
        json!({"id": "default", "name": "Default"})
    );

    // Explicitly unscoped: no roles, no catalog.
    let (s, _, v) = c.auth(by_id(json!("unscoped"))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(v["token"].get("project").is_none());
    assert!(v["token"].get("catalog").is_none());

    // No scope: the default project (the admin's is `admin`).
    let mut body = by_id(json!(null));
    body["auth"].as_object_mut().unwrap().remove("scope");
    let (s, _, v) = c.auth(body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["token"]["project"]["name"], "admin");

    // ?nocatalog, and by domain id for the user.
    let (s, _, v) = c
        .call(
            Method::POST,
            "/v3/auth/tokens?nocatalog",
            None,
            Some(
                json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"id": "default"}, "password": ADMIN_PW}}},
                "scope": {"project": {"id": pid}}}}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(v["token"].get("catalog").is_none());
    assert!(v["token"]["roles"].is_array());
}

#[tokio::test]
async fn bad_credentials_are_401() {
    let c = Cloud::new(Preset::Default);
    for body in [
        password_auth("admin", "wrong", Some("admin")),
        password_auth("nobody", ADMIN_PW, Some("admin")),
        password_auth("admin", ADMIN_PW, Some("no-such-project")),
        json!({"auth": {"identity": {"methods": ["token"], "token": {"id": "bogus"}}}}),
        json!({"auth": {"identity": {"methods": ["totp"]}}}),
    ] {
        let (s, t, v) = c.auth(body).await;
        assert_error(s, &v, 401);
        assert!(t.is_none());
    }
    // A name without a domain is a bad request.
    let (s, _, v) = c
        .auth(
            json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "password": ADMIN_PW}}}}}),
        )
        .await;
    assert_error(s, &v, 400);
}

#[tokio::test]
async fn token_method_rescopes_and_keeps_expiry() {
    let c = Cloud::new(Preset::Default);
    let (_, unscoped, v0) = c.auth(password_auth("admin", ADMIN_PW, None)).await;
    let unscoped = unscoped.unwrap();
    // Unscoped password auth with a default project lands on it; ask explicitly instead.
    let (s, t, v) = c
        .auth(
            json!({"auth": {"identity": {"methods": ["token"], "token": {"id": unscoped}},
            "scope": {"system": {"all": true}}}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(t.is_some());
    assert_eq!(v["token"]["methods"][0], "token");
    assert_eq!(v["token"]["system"], json!({"all": true}));
    assert!(
        v["token"]["expires_at"].as_str().unwrap() <= v0["token"]["expires_at"].as_str().unwrap()
    );
}

#[tokio::test]
async fn validate_check_and_revoke() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let other = c.admin().await;
    let (s, h, v) = c
        .raw(
            Method::GET,
            "/v3/auth/tokens",
            Some(&admin),
            None,
            &[("x-subject-token", &other)],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(h.get("x-subject-token").unwrap(), other.as_str());
    assert_eq!(v["token"]["user"]["name"], "admin");
    assert!(v["token"]["catalog"].is_array());

    let (s, _, v) = c
        .raw(
            Method::GET,
            "/v3/auth/tokens?nocatalog=1",
            Some(&admin),
            None,
            &[("x-subject-token", &other)],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["token"].get("catalog").is_none());

    let (s, _, _) = c
        .raw(
            Method::HEAD,
            "/v3/auth/tokens",
            Some(&admin),
            None,
            &[("x-subject-token", &other)],
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    let (s, _, _) = c
        .raw(
            Method::DELETE,
            "/v3/auth/tokens",
            Some(&admin),
            None,
            &[("x-subject-token", &other)],
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, v) = c
        .raw(
            Method::GET,
            "/v3/auth/tokens",
            Some(&admin),
            None,
            &[("x-subject-token", &other)],
        )
        .await;
    assert_error(s, &v, 404);
    let (s, v) = c.get("/v3/auth/catalog", &other).await;
    assert_error(s, &v, 401);
    // Missing subject header.
    let (s, _, v) = c
        .call(Method::GET, "/v3/auth/tokens", Some(&admin), None)
        .await;
    assert_error(s, &v, 400);
}

#[tokio::test]
async fn a_user_validates_only_its_own_tokens() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let p = c.project(&admin, "p1").await;
    let u = c.user(&admin, "alice", "alice-pw").await;
    c.grant(&admin, &p, &u, "member").await;
    let alice = c.login("alice", "alice-pw", Some("p1")).await;
    let alice2 = c.login("alice", "alice-pw", Some("p1")).await;
    let (s, _, _) = c
        .raw(
            Method::GET,
            "/v3/auth/tokens",
            Some(&alice),
            None,
            &[("x-subject-token", &alice2)],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, v) = c
        .raw(
            Method::GET,
            "/v3/auth/tokens",
            Some(&alice),
            None,
            &[("x-subject-token", &admin)],
        )
        .await;
    assert_error(s, &v, 403);
}

#[tokio::test]
async fn auth_catalog_projects_domains_system() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let (s, v) = c.get("/v3/auth/catalog", &admin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["catalog"].as_array().unwrap().len(), 7);
    assert!(v["links"]["self"]
        .as_str()
        .unwrap()
        .ends_with("/v3/auth/catalog"));

    let p = c.project(&admin, "p1").await;
    let _disabled = c.project(&admin, "p2").await;
    let u = c.user(&admin, "bob", "bob-pw").await;
    c.grant(&admin, &p, &u, "reader").await;
    let bob = c.login("bob", "bob-pw", None).await;
    let (s, v) = c.get("/v3/auth/projects", &bob).await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = v["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["p1"]);
    let (_, v) = c.get("/v3/auth/domains", &bob).await;
    assert_eq!(v["domains"], json!([]));
    let (_, v) = c.get("/v3/auth/system", &bob).await;
    assert_eq!(v["system"], json!([]));
    let (_, v) = c.get("/v3/auth/system", &admin).await;
    assert_eq!(v["system"], json!([{"all": true}]));
}

#[tokio::test]
async fn tokens_survive_a_restart() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let dir = c.dir;
    drop(c.app);
    drop(c.state);
    let state = common::open_state(dir.path(), Preset::Default.settings());
    let app2 = kiln_controller::app(state.clone());
    let c2 = Cloud {
        dir,
        app: app2,
        state,
    };
    let (s, v) = c2.get("/v3/auth/catalog", &admin).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}
