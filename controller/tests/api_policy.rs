//! Policy through the API: admin, member, reader, cross-project refusals, self
//! service, and token revocation on user/project changes.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::{assert_error, Cloud};
use kiln_controller::identity::compliance::Preset;
use serde_json::json;

struct Setup {
    c: Cloud,
    admin: String,
    p1: String,
    p2: String,
    member_id: String,
    member: String,
    reader: String,
}

async fn setup() -> Setup {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let p1 = c.project(&admin, "p1").await;
    let p2 = c.project(&admin, "p2").await;
    let member_id = c.user(&admin, "mia", "mia-pw").await;
    let reader_id = c.user(&admin, "rex", "rex-pw").await;
    c.grant(&admin, &p1, &member_id, "member").await;
    c.grant(&admin, &p1, &reader_id, "reader").await;
    let member = c.login("mia", "mia-pw", Some("p1")).await;
    let reader = c.login("rex", "rex-pw", Some("p1")).await;
    Setup {
        c,
        admin,
        p1,
        p2,
        member_id,
        member,
        reader,
    }
}

#[tokio::test]
async fn non_admins_cannot_manage_identity() {
    let s = setup().await;
    let c = &s.c;
    for t in [&s.member, &s.reader] {
        let (st, v) = c
            .post("/v3/projects", t, json!({"project": {"name": "x"}}))
            .await;
        assert_error(st, &v, 403);
        let (st, v) = c.post("/v3/users", t, json!({"user": {"name": "x"}})).await;
        assert_error(st, &v, 403);
        let (st, v) = c
            .post("/v3/domains", t, json!({"domain": {"name": "x"}}))
            .await;
        assert_error(st, &v, 403);
        let (st, v) = c.post("/v3/roles", t, json!({"role": {"name": "x"}})).await;
        assert_error(st, &v, 403);
        let (st, v) = c.get("/v3/users", t).await;
        assert_error(st, &v, 403);
        let (st, v) = c
            .patch(
                &format!("/v3/projects/{}", s.p1),
                t,
                json!({"project": {"name": "y"}}),
            )
            .await;
        assert_error(st, &v, 403);
        let rid = c.role_id(&s.admin, "admin").await;
        let st = c
            .put(
                &format!("/v3/projects/{}/users/{}/roles/{rid}", s.p1, s.member_id),
                t,
            )
            .await;
        assert_eq!(st, StatusCode::FORBIDDEN);
    }
}

#[tokio::test]
async fn own_project_readable_others_refused() {
    let s = setup().await;
    let c = &s.c;
    for t in [&s.member, &s.reader] {
        let (st, v) = c.get(&format!("/v3/projects/{}", s.p1), t).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let (st, v) = c.get(&format!("/v3/projects/{}", s.p2), t).await;
        assert_error(st, &v, 403);
        // Listing shows only their own.
        let (st, v) = c.get("/v3/projects", t).await;
        assert_eq!(st, StatusCode::OK);
        let names: Vec<&str> = v["projects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["p1"]);
        let (st, _) = c
            .get(
                &format!("/v3/role_assignments?scope.project.id={}", s.p1),
                t,
            )
            .await;
        assert_eq!(st, StatusCode::OK);
        let (st, v) = c
            .get(
                &format!("/v3/role_assignments?scope.project.id={}", s.p2),
                t,
            )
            .await;
        assert_error(st, &v, 403);
    }
}

#[tokio::test]
async fn users_see_and_manage_themselves() {
    let s = setup().await;
    let c = &s.c;
    let (st, v) = c
        .get(&format!("/v3/users/{}", s.member_id), &s.member)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["user"]["name"], "mia");
    let (st, v) = c
        .get(&format!("/v3/users/{}", s.member_id), &s.reader)
        .await;
    assert_error(st, &v, 403);
    let (st, v) = c
        .get(&format!("/v3/users/{}/projects", s.member_id), &s.member)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["projects"][0]["name"], "p1");
    // Self-service password change (no token needed; original password proves it).
    let (st, _, v) = c
        .call(
            Method::POST,
            &format!("/v3/users/{}/password", s.member_id),
            None,
            Some(json!({"user": {"password": "mia-new", "original_password": "mia-pw"}})),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    // Old tokens are revoked, the old password is refused, the new one works.
    let (st, v) = c
        .get(&format!("/v3/users/{}", s.member_id), &s.member)
        .await;
    assert_error(st, &v, 401);
    let (st, _, v) = c
        .auth(common::password_auth("mia", "mia-pw", Some("p1")))
        .await;
    assert_error(st, &v, 401);
    c.login("mia", "mia-new", Some("p1")).await;
    // Wrong original password.
    let (st, _, v) = c
        .call(
            Method::POST,
            &format!("/v3/users/{}/password", s.member_id),
            None,
            Some(json!({"user": {"password": "x", "original_password": "wrong"}})),
        )
        .await;
    assert_error(st, &v, 401);
}

#[tokio::test]
async fn disabling_users_and_projects_revokes_tokens() {
    let s = setup().await;
    let c = &s.c;
    let (st, _) = c
        .patch(
            &format!("/v3/users/{}", s.member_id),
            &s.admin,
            json!({"user": {"enabled": false}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = c.get("/v3/auth/catalog", &s.member).await;
    assert_error(st, &v, 401);
    let (st, _, v) = c
        .auth(common::password_auth("mia", "mia-pw", Some("p1")))
        .await;
    assert_error(st, &v, 401);

    // The reader's p1 token dies with p1's disabling; p1 tokens cannot be issued.
    let (st, _) = c
        .patch(
            &format!("/v3/projects/{}", s.p1),
            &s.admin,
            json!({"project": {"enabled": false}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = c.get("/v3/auth/catalog", &s.reader).await;
    assert_error(st, &v, 401);
    let (st, _, v) = c
        .auth(common::password_auth("rex", "rex-pw", Some("p1")))
        .await;
    assert_error(st, &v, 401);
}

#[tokio::test]
async fn deleting_a_project_revokes_its_tokens_and_grants() {
    let s = setup().await;
    let c = &s.c;
    assert_eq!(
        c.delete(&format!("/v3/projects/{}", s.p1), &s.admin).await,
        StatusCode::NO_CONTENT
    );
    let (st, v) = c.get("/v3/auth/catalog", &s.member).await;
    assert_error(st, &v, 401);
    let (_, v) = c
        .get(
            &format!("/v3/role_assignments?user.id={}", s.member_id),
            &s.admin,
        )
        .await;
    assert_eq!(v["role_assignments"], json!([]));
}
