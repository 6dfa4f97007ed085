//! Domains, projects, users and groups: CRUD, filters, conflicts and cascades.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::{assert_error, Cloud};
use kiln_controller::identity::compliance::Preset;
use serde_json::{json, Value};

fn names(v: &Value, key: &str) -> Vec<String> {
    let mut n: Vec<String> = v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

#[tokio::test]
async fn domains_crud_and_delete_rules() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let (s, v) = c
        .post(
            "/v3/domains",
            &admin,
            json!({"domain": {"name": "acme", "description": "d"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["domain"]["id"].as_str().unwrap().to_string();
    assert_eq!(v["domain"]["enabled"], true);
    assert!(v["domain"]["links"]["self"]
        .as_str()
        .unwrap()
        .ends_with(&id));
    let (s, v) = c
        .post("/v3/domains", &admin, json!({"domain": {"name": "acme"}}))
        .await;
    assert_error(s, &v, 409);
    let (s, v) = c.get("/v3/domains?name=acme", &admin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(names(&v, "domains"), ["acme"]);
    assert!(v["links"]["self"].is_string());
    assert!(v["links"]["next"].is_null());
    // An enabled domain cannot be deleted.
    let st = c.delete(&format!("/v3/domains/{id}"), &admin).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (s, v) = c
        .patch(
            &format!("/v3/domains/{id}"),
            &admin,
            json!({"domain": {"enabled": false}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["domain"]["enabled"], false);
    let (_, v) = c.get("/v3/domains?enabled=false", &admin).await;
    assert_eq!(names(&v, "domains"), ["acme"]);
    assert_eq!(
        c.delete(&format!("/v3/domains/{id}"), &admin).await,
        StatusCode::NO_CONTENT
    );
    let (s, v) = c.get(&format!("/v3/domains/{id}"), &admin).await;
    assert_error(s, &v, 404);
}

#[tokio::test]
async fn projects_crud_filters_and_conflicts() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let p1 = c.project(&admin, "p1").await;
    let (s, v) = c
        .post(
            "/v3/projects",
            &admin,
            json!({"project": {"name": "child", "parent_id": p1, "tags": ["a", "b"]}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["project"]["parent_id"], p1.as_str());
    assert_eq!(v["project"]["domain_id"], "default");
    assert_eq!(v["project"]["is_domain"], false);
    let child = v["project"]["id"].as_str().unwrap().to_string();
    let (s, v) = c
        .post("/v3/projects", &admin, json!({"project": {"name": "p1"}}))
        .await;
    assert_error(s, &v, 409);
    let (s, v) = c
        .post(
            "/v3/projects",
            &admin,
            json!({"project": {"name": "x", "is_domain": true}}),
        )
        .await;
    assert_error(s, &v, 400);
    let (s, v) = c
        .post(
            "/v3/projects",
            &admin,
            json!({"project": {"name": "x", "domain_id": "nope"}}),
        )
        .await;
    assert_error(s, &v, 404);

    let (_, v) = c.get("/v3/projects?domain_id=default", &admin).await;
    assert_eq!(names(&v, "projects"), ["admin", "child", "p1"]);
    let (_, v) = c.get(&format!("/v3/projects?parent_id={p1}"), &admin).await;
    assert_eq!(names(&v, "projects"), ["child"]);
    let (_, v) = c.get("/v3/projects?tags=a", &admin).await;
    assert_eq!(names(&v, "projects"), ["child"]);
    let (_, v) = c.get("/v3/projects?name=p1", &admin).await;
    assert_eq!(names(&v, "projects"), ["p1"]);

    let (s, v) = c
        .patch(
            &format!("/v3/projects/{p1}"),
            &admin,
            json!({"project": {"name": "p1-renamed", "description": "x", "enabled": false}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["project"]["name"], "p1-renamed");
    let (_, v) = c.get("/v3/projects?enabled=false", &admin).await;
    assert_eq!(names(&v, "projects"), ["p1-renamed"]);
    // Renaming onto a taken name conflicts.
    let (s, v) = c
        .patch(
            &format!("/v3/projects/{child}"),
            &admin,
            json!({"project": {"name": "admin"}}),
        )
        .await;
    assert_error(s, &v, 409);
    // A parent with children cannot go first.
    assert_eq!(
        c.delete(&format!("/v3/projects/{p1}"), &admin).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        c.delete(&format!("/v3/projects/{child}"), &admin).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.delete(&format!("/v3/projects/{p1}"), &admin).await,
        StatusCode::NO_CONTENT
    );
    let (s, v) = c.get(&format!("/v3/projects/{p1}"), &admin).await;
    assert_error(s, &v, 404);
    // The name is free again.
    c.project(&admin, "p1").await;
}

#[tokio::test]
async fn users_crud_and_filters() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let p = c.project(&admin, "p").await;
    let (s, v) = c
        .post(
            "/v3/users",
            &admin,
            json!({"user": {"name": "carol", "password": "pw", "email": "c@example.org",
                "default_project_id": p, "options": {"ignore_lockout_failure_attempts": true}}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let u = &v["user"];
    assert_eq!(u["email"], "c@example.org");
    assert_eq!(u["default_project_id"], p.as_str());
    assert_eq!(u["options"]["ignore_lockout_failure_attempts"], true);
    assert!(u.get("password").is_none(), "{u}");
    assert!(u["password_expires_at"].is_null());
    let id = u["id"].as_str().unwrap().to_string();
    let (s, v) = c
        .post("/v3/users", &admin, json!({"user": {"name": "carol"}}))
        .await;
    assert_error(s, &v, 409);

    let (_, v) = c.get("/v3/users?name=carol", &admin).await;
    assert_eq!(names(&v, "users"), ["carol"]);
    let (_, v) = c
        .get("/v3/users?domain_id=default&enabled=true", &admin)
        .await;
    assert_eq!(names(&v, "users"), ["admin", "carol"]);

    let (s, v) = c
        .patch(
            &format!("/v3/users/{id}"),
            &admin,
            json!({"user": {"name": "carol2", "enabled": false, "description": "now"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["user"]["name"], "carol2");
    assert_eq!(v["user"]["description"], "now");
    let (_, v) = c.get("/v3/users?enabled=false", &admin).await;
    assert_eq!(names(&v, "users"), ["carol2"]);
    let (s, v) = c
        .patch(
            &format!("/v3/users/{id}"),
            &admin,
            json!({"user": {"domain_id": "other"}}),
        )
        .await;
    assert_error(s, &v, 400);
    assert_eq!(
        c.delete(&format!("/v3/users/{id}"), &admin).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.delete(&format!("/v3/users/{id}"), &admin).await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn groups_and_membership() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let u = c.user(&admin, "dave", "pw").await;
    let (s, v) = c
        .post("/v3/groups", &admin, json!({"group": {"name": "ops"}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let g = v["group"]["id"].as_str().unwrap().to_string();
    let (s, v) = c
        .post("/v3/groups", &admin, json!({"group": {"name": "ops"}}))
        .await;
    assert_error(s, &v, 409);
    let member = format!("/v3/groups/{g}/users/{u}");
    assert_eq!(c.head(&member, &admin).await, StatusCode::NOT_FOUND);
    assert_eq!(c.put(&member, &admin).await, StatusCode::NO_CONTENT);
    assert_eq!(c.head(&member, &admin).await, StatusCode::NO_CONTENT);
    let (_, v) = c.get(&format!("/v3/groups/{g}/users"), &admin).await;
    assert_eq!(names(&v, "users"), ["dave"]);
    let (_, v) = c.get(&format!("/v3/users/{u}/groups"), &admin).await;
    assert_eq!(names(&v, "groups"), ["ops"]);
    let (_, v) = c.get("/v3/groups?name=ops", &admin).await;
    assert_eq!(names(&v, "groups"), ["ops"]);
    let (s, v) = c
        .patch(
            &format!("/v3/groups/{g}"),
            &admin,
            json!({"group": {"description": "x"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["group"]["description"], "x");
    assert_eq!(c.delete(&member, &admin).await, StatusCode::NO_CONTENT);
    assert_eq!(c.delete(&member, &admin).await, StatusCode::NOT_FOUND);
    assert_eq!(c.put(&member, &admin).await, StatusCode::NO_CONTENT);
    assert_eq!(
        c.delete(&format!("/v3/groups/{g}"), &admin).await,
        StatusCode::NO_CONTENT
    );
    let (_, v) = c.get(&format!("/v3/users/{u}/groups"), &admin).await;
    assert_eq!(v["groups"], json!([]));
}

#[tokio::test]
async fn roles_crud() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let (s, v) = c
        .post("/v3/roles", &admin, json!({"role": {"name": "auditor"}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["role"]["id"].as_str().unwrap().to_string();
    let (s, v) = c
        .post("/v3/roles", &admin, json!({"role": {"name": "auditor"}}))
        .await;
    assert_error(s, &v, 409);
    let (_, v) = c.get("/v3/roles", &admin).await;
    assert_eq!(names(&v, "roles"), ["admin", "auditor", "member", "reader"]);
    let (s, v) = c
        .patch(
            &format!("/v3/roles/{id}"),
            &admin,
            json!({"role": {"name": "auditor2"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["role"]["name"], "auditor2");
    assert_eq!(
        c.delete(&format!("/v3/roles/{id}"), &admin).await,
        StatusCode::NO_CONTENT
    );
    let (s, v) = c.get(&format!("/v3/roles/{id}"), &admin).await;
    assert_error(s, &v, 404);
}
