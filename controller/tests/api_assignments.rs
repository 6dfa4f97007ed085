//! Role grants in all their forms, `GET /v3/role_assignments` with filters,
//! effective expansion and names, and the token revocation a removal causes.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::{assert_error, Cloud};
use kiln_controller::identity::compliance::Preset;
use serde_json::{json, Value};

fn count(v: &Value) -> usize {
    v["role_assignments"].as_array().unwrap().len()
}

#[tokio::test]
async fn grants_on_projects_domains_and_system() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let p = c.project(&admin, "p").await;
    let u = c.user(&admin, "erin", "pw").await;
    let member = c.role_id(&admin, "member").await;
    let reader = c.role_id(&admin, "reader").await;
    let (_, v) = c
        .post("/v3/groups", &admin, json!({"group": {"name": "g"}}))
        .await;
    let g = v["group"]["id"].as_str().unwrap().to_string();

    for path in [
        format!("/v3/projects/{p}/users/{u}/roles/{member}"),
        format!("/v3/projects/{p}/groups/{g}/roles/{reader}"),
        format!("/v3/domains/default/users/{u}/roles/{reader}"),
        format!("/v3/domains/default/groups/{g}/roles/{member}"),
        format!("/v3/system/users/{u}/roles/{reader}"),
        format!("/v3/system/groups/{g}/roles/{reader}"),
    ] {
        assert_eq!(c.head(&path, &admin).await, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(c.put(&path, &admin).await, StatusCode::NO_CONTENT, "{path}");
        assert_eq!(
            c.head(&path, &admin).await,
            StatusCode::NO_CONTENT,
            "{path}"
        );
        assert_eq!(
            c.call(axum::http::Method::GET, &path, Some(&admin), None)
                .await
                .0,
            StatusCode::NO_CONTENT
        );
    }
    let (s, v) = c
        .get(&format!("/v3/projects/{p}/users/{u}/roles"), &admin)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["roles"][0]["name"], "member");
    let (_, v) = c.get(&format!("/v3/system/users/{u}/roles"), &admin).await;
    assert_eq!(v["roles"][0]["name"], "reader");

    // Unknown parts are 404.
    assert_eq!(
        c.put(
            &format!("/v3/projects/{p}/users/nobody/roles/{member}"),
            &admin
        )
        .await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.put(
            &format!("/v3/projects/nope/users/{u}/roles/{member}"),
            &admin
        )
        .await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.put(&format!("/v3/projects/{p}/users/{u}/roles/nope"), &admin)
            .await,
        StatusCode::NOT_FOUND
    );

    // Filters.
    let (_, v) = c
        .get(&format!("/v3/role_assignments?user.id={u}"), &admin)
        .await;
    assert_eq!(count(&v), 3);
    let (_, v) = c
        .get(&format!("/v3/role_assignments?group.id={g}"), &admin)
        .await;
    assert_eq!(count(&v), 3);
    let (_, v) = c
        .get(
            &format!("/v3/role_assignments?scope.project.id={p}"),
            &admin,
        )
        .await;
    assert_eq!(count(&v), 2);
    let (_, v) = c
        .get("/v3/role_assignments?scope.domain.id=default", &admin)
        .await;
    assert_eq!(count(&v), 2);
    let (_, v) = c
        .get(
            &format!("/v3/role_assignments?scope.system=all&user.id={u}"),
            &admin,
        )
        .await;
    assert_eq!(count(&v), 1);
    assert_eq!(
        v["role_assignments"][0]["scope"],
        json!({"system": {"all": true}})
    );
    let (_, v) = c
        .get(
            &format!("/v3/role_assignments?role.id={member}&scope.project.id={p}"),
            &admin,
        )
        .await;
    assert_eq!(count(&v), 1);
    assert_eq!(v["role_assignments"][0]["user"]["id"], u.as_str());
    assert!(v["role_assignments"][0]["links"]["assignment"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/v3/projects/{p}/users/{u}/roles/{member}")));

    // Effective: the group grant shows up as the member's, with a membership link.
    assert_eq!(
        c.put(&format!("/v3/groups/{g}/users/{u}"), &admin).await,
        StatusCode::NO_CONTENT
    );
    let (_, v) = c
        .get(&format!("/v3/role_assignments?effective&user.id={u}&scope.project.id={p}&include_names=true"), &admin)
        .await;
    assert_eq!(count(&v), 2, "{v}");
    let via = v["role_assignments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["links"].get("membership").is_some())
        .unwrap();
    assert_eq!(via["user"]["name"], "erin");
    assert_eq!(via["role"]["name"], "reader");
    assert_eq!(via["scope"]["project"]["name"], "p");
    assert_eq!(via["scope"]["project"]["domain"]["name"], "Default");

    // Revoke.
    let path = format!("/v3/projects/{p}/users/{u}/roles/{member}");
    assert_eq!(c.delete(&path, &admin).await, StatusCode::NO_CONTENT);
    assert_eq!(c.delete(&path, &admin).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn removing_a_role_revokes_the_users_tokens() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let p = c.project(&admin, "p").await;
    let u = c.user(&admin, "frank", "pw").await;
    c.grant(&admin, &p, &u, "member").await;
    let t = c.login("frank", "pw", Some("p")).await;
    let (s, _) = c.get(&format!("/v3/projects/{p}"), &t).await;
    assert_eq!(s, StatusCode::OK);
    let member = c.role_id(&admin, "member").await;
    assert_eq!(
        c.delete(
            &format!("/v3/projects/{p}/users/{u}/roles/{member}"),
            &admin
        )
        .await,
        StatusCode::NO_CONTENT
    );
    let (s, v) = c.get(&format!("/v3/projects/{p}"), &t).await;
    assert_error(s, &v, 401);
    // No role left: no project token.
    let (s, _, v) = c
        .auth(common::password_auth("frank", "pw", Some("p")))
        .await;
    assert_error(s, &v, 401);
}

#[tokio::test]
async fn group_roles_reach_tokens_and_leave_with_membership() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let p = c.project(&admin, "p").await;
    let u = c.user(&admin, "gina", "pw").await;
    let (_, v) = c
        .post("/v3/groups", &admin, json!({"group": {"name": "devs"}}))
        .await;
    let g = v["group"]["id"].as_str().unwrap().to_string();
    let member = c.role_id(&admin, "member").await;
    assert_eq!(
        c.put(
            &format!("/v3/projects/{p}/groups/{g}/roles/{member}"),
            &admin
        )
        .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.put(&format!("/v3/groups/{g}/users/{u}"), &admin).await,
        StatusCode::NO_CONTENT
    );
    let (s, _, v) = c.auth(common::password_auth("gina", "pw", Some("p"))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let roles: Vec<&str> = v["token"]["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        roles.contains(&"member") && roles.contains(&"reader"),
        "{roles:?}"
    );
    let t = c.login("gina", "pw", Some("p")).await;
    assert_eq!(
        c.delete(&format!("/v3/groups/{g}/users/{u}"), &admin).await,
        StatusCode::NO_CONTENT
    );
    let (s, v) = c.get("/v3/auth/catalog", &t).await;
    assert_error(s, &v, 401);
}
