//! Acceptance: the real `openstack` CLI (python-openstackclient from PyPI)
//! against a real `kiln-node up` — Keystone v3 as users drive it.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::Value;
use support::{header, Cloud, ScratchDir};

/// Passwords that satisfy the provider's strict policy (lower, upper, digit, ≥ 20).
const STRONG_1: &str = "Acceptance-Strong-Passw0rd-One";
const STRONG_2: &str = "Acceptance-Strong-Passw0rd-Two";

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("expected a JSON list, got {list}"))
        .iter()
        .filter_map(|e| e[key].as_str().map(str::to_string))
        .collect()
}

#[test]
fn token_issue_and_catalog() {
    let dir = ScratchDir::new("acc-token");
    let cloud = Cloud::start(&dir.0, &[]);

    let token = cloud.admin(&["token", "issue", "-f", "json"]).json();
    assert!(token["id"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(token["project_id"].as_str().is_some_and(|p| !p.is_empty()));
    assert!(token["user_id"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(token["expires"].as_str().is_some());

    let catalog = cloud.admin(&["catalog", "list", "-f", "json"]).json();
    let types = names(&catalog, "Type");
    for t in [
        "identity",
        "compute",
        "network",
        "image",
        "block-storage",
        "placement",
    ] {
        assert!(types.iter().any(|x| x == t), "catalog lacks {t}: {types:?}");
    }
    // Each entry's endpoints point at this cloud.
    let text = catalog.to_string();
    assert!(
        text.contains(&cloud.addr),
        "catalog URLs name {}: {text}",
        cloud.addr
    );

    // The token the CLI got validates over the plain HTTP API, and revokes.
    let t = token["id"].as_str().unwrap();
    let (code, _, body) = cloud.http(
        "GET",
        "/v3/auth/tokens",
        &[("X-Auth-Token", t), ("X-Subject-Token", t)],
        None,
    );
    assert_eq!(code, 200, "{body}");
    cloud.admin(&["token", "revoke", t]).ok();
    let (code, _, _) = cloud.http(
        "GET",
        "/v3/auth/tokens",
        &[("X-Auth-Token", t), ("X-Subject-Token", t)],
        None,
    );
    assert_eq!(code, 401, "a revoked token is refused");

    // Version discovery needs no token.
    let (code, _, body) = cloud.http("GET", "/", &[], None);
    assert_eq!(code, 300, "{body}");
    let (code, _, body) = cloud.http("GET", "/v3", &[], None);
    assert_eq!(code, 200, "{body}");

    // A wrong password is refused with 401 in Keystone's error shape.
    let env = cloud.env_with(&[("OS_PASSWORD", "not-the-password")]);
    cloud.openstack(&env, &["token", "issue"]).fails_with("401");
}

#[test]
fn project_lifecycle() {
    let dir = ScratchDir::new("acc-project");
    let cloud = Cloud::start(&dir.0, &[]);

    let p = cloud
        .admin(&[
            "project",
            "create",
            "demo",
            "--description",
            "first",
            "-f",
            "json",
        ])
        .json();
    assert_eq!(p["name"], "demo");
    assert_eq!(p["description"], "first");
    assert_eq!(p["domain_id"], "default");
    let id = p["id"].as_str().unwrap().to_string();

    // A second project of the same name in the same domain conflicts.
    cloud
        .admin(&["project", "create", "demo"])
        .fails_with("409");

    let list = cloud.admin(&["project", "list", "-f", "json"]).json();
    assert!(names(&list, "Name").contains(&"demo".to_string()));
    assert!(names(&list, "Name").contains(&"admin".to_string()));

    cloud
        .admin(&[
            "project",
            "set",
            "demo",
            "--description",
            "second",
            "--disable",
        ])
        .ok();
    let shown = cloud.admin(&["project", "show", &id, "-f", "json"]).json();
    assert_eq!(shown["description"], "second");
    assert_eq!(shown["enabled"], false);

    let list = cloud
        .admin(&["project", "list", "--domain", "default", "-f", "json"])
        .json();
    assert!(names(&list, "ID").contains(&id));

    cloud.admin(&["project", "delete", "demo"]).ok();
    cloud
        .admin(&["project", "show", "demo"])
        .fails_with("No Project found for demo");
}

#[test]
fn users_roles_and_assignments() {
    let dir = ScratchDir::new("acc-users");
    let cloud = Cloud::start(&dir.0, &[]);

    cloud.admin(&["project", "create", "team"]).ok();
    let u = cloud
        .admin(&[
            "user",
            "create",
            "alice",
            "--project",
            "team",
            "--password",
            STRONG_1,
            "--email",
            "alice@example.org",
            "-f",
            "json",
        ])
        .json();
    assert_eq!(u["name"], "alice");
    assert_eq!(u["enabled"], true);
    cloud
        .admin(&["user", "create", "alice", "--password", STRONG_1])
        .fails_with("409");

    // Without a role alice cannot get a token scoped to the project.
    let alice = cloud.user_env("alice", STRONG_1, "team");
    cloud
        .openstack(&alice, &["token", "issue"])
        .fails_with("401");

    cloud
        .admin(&[
            "role",
            "add",
            "--user",
            "alice",
            "--project",
            "team",
            "member",
        ])
        .ok();
    let a = cloud
        .admin(&[
            "role",
            "assignment",
            "list",
            "--user",
            "alice",
            "--project",
            "team",
            "--names",
            "-f",
            "json",
        ])
        .json();
    let roles = names(&a, "Role");
    assert_eq!(roles, vec!["member".to_string()], "{a}");

    let tok = cloud
        .openstack(&alice, &["token", "issue", "-f", "json"])
        .json();
    assert!(tok["id"].as_str().is_some());

    // A member is not an admin: it may not create projects or users.
    cloud
        .openstack(&alice, &["project", "create", "sneaky"])
        .fails_with("403");
    cloud
        .openstack(
            &alice,
            &["user", "create", "mallory", "--password", STRONG_2],
        )
        .fails_with("403");
    // ...but may read itself.
    let me = cloud
        .openstack(
            &alice,
            &["user", "show", u["id"].as_str().unwrap(), "-f", "json"],
        )
        .json();
    assert_eq!(me["name"], "alice");

    // Changing the user: description, then disabling refuses her tokens.
    cloud
        .admin(&["user", "set", "alice", "--description", "on call"])
        .ok();
    let shown = cloud.admin(&["user", "show", "alice", "-f", "json"]).json();
    assert_eq!(shown["description"], "on call");
    cloud.admin(&["user", "set", "alice", "--disable"]).ok();
    cloud
        .openstack(&alice, &["token", "issue"])
        .fails_with("401");
    cloud.admin(&["user", "set", "alice", "--enable"]).ok();
    cloud.openstack(&alice, &["token", "issue"]).ok();

    // Removing the role takes the project away again.
    cloud
        .admin(&[
            "role",
            "remove",
            "--user",
            "alice",
            "--project",
            "team",
            "member",
        ])
        .ok();
    let a = cloud
        .admin(&[
            "role",
            "assignment",
            "list",
            "--user",
            "alice",
            "-f",
            "json",
        ])
        .json();
    assert_eq!(a.as_array().map(Vec::len), Some(0), "{a}");
    cloud
        .openstack(&alice, &["token", "issue"])
        .fails_with("401");

    // Roles themselves: create, list, delete.
    cloud.admin(&["role", "create", "auditor"]).ok();
    let roles = cloud.admin(&["role", "list", "-f", "json"]).json();
    let roles = names(&roles, "Name");
    for r in ["admin", "member", "reader", "auditor"] {
        assert!(roles.contains(&r.to_string()), "{roles:?}");
    }
    cloud.admin(&["role", "delete", "auditor"]).ok();

    cloud.admin(&["user", "delete", "alice"]).ok();
    cloud
        .admin(&["user", "show", "alice"])
        .fails_with("No User found for alice");
}

#[test]
fn application_credentials_authenticate() {
    let dir = ScratchDir::new("acc-appcred");
    let cloud = Cloud::start(&dir.0, &[]);

    let cred = cloud
        .admin(&[
            "application",
            "credential",
            "create",
            "ci-robot",
            "-f",
            "json",
        ])
        .json();
    let id = cred["ID"].as_str().unwrap().to_string();
    let secret = cred["Secret"].as_str().unwrap().to_string();
    assert!(
        !secret.is_empty(),
        "the secret is returned once, at creation"
    );

    let list = cloud
        .admin(&["application", "credential", "list", "-f", "json"])
        .json();
    assert!(names(&list, "Name").contains(&"ci-robot".to_string()));

    let app_env = |id: &str, secret: &str| {
        let mut env = std::collections::BTreeMap::new();
        for (k, v) in [
            ("OS_AUTH_URL", cloud.auth_url.as_str()),
            ("OS_AUTH_TYPE", "v3applicationcredential"),
            ("OS_APPLICATION_CREDENTIAL_ID", id),
            ("OS_APPLICATION_CREDENTIAL_SECRET", secret),
            ("OS_IDENTITY_API_VERSION", "3"),
            ("OS_REGION_NAME", "RegionOne"),
            ("OS_INTERFACE", "public"),
        ] {
            env.insert(k.to_string(), v.to_string());
        }
        env
    };
    let tok = cloud
        .openstack(&app_env(&id, &secret), &["token", "issue", "-f", "json"])
        .json();
    assert!(tok["project_id"].as_str().is_some());
    cloud
        .openstack(&app_env(&id, "wrong-secret"), &["token", "issue"])
        .fails_with("401");

    cloud
        .admin(&["application", "credential", "delete", "ci-robot"])
        .ok();
    cloud
        .openstack(&app_env(&id, &secret), &["token", "issue"])
        .fails_with("401");
}

#[test]
fn user_changes_own_password() {
    let dir = ScratchDir::new("acc-passwd");
    let cloud = Cloud::start(&dir.0, &[]);

    cloud.admin(&["project", "create", "team"]).ok();
    cloud
        .admin(&[
            "user",
            "create",
            "bob",
            "--project",
            "team",
            "--password",
            STRONG_1,
        ])
        .ok();
    cloud
        .admin(&[
            "role",
            "add",
            "--user",
            "bob",
            "--project",
            "team",
            "member",
        ])
        .ok();
    let bob = cloud.user_env("bob", STRONG_1, "team");
    cloud
        .openstack(
            &bob,
            &[
                "user",
                "password",
                "set",
                "--original-password",
                STRONG_1,
                "--password",
                STRONG_2,
            ],
        )
        .ok();
    cloud.openstack(&bob, &["token", "issue"]).fails_with("401");
    let bob2 = cloud.user_env("bob", STRONG_2, "team");
    cloud.openstack(&bob2, &["token", "issue"]).ok();
    // The wrong original password is refused.
    cloud
        .openstack(
            &bob2,
            &[
                "user",
                "password",
                "set",
                "--original-password",
                "nope",
                "--password",
                STRONG_1,
            ],
        )
        .fails_with("401");
}

#[test]
fn strict_preset_enforces_provider_policy() {
    let dir = ScratchDir::new("acc-strict");
    let cloud = Cloud::start(&dir.0, &["--security-compliance", "strict"]);

    // The bootstrap admin works under the strict policy.
    cloud.admin(&["token", "issue"]).ok();

    cloud.admin(&["project", "create", "team"]).ok();
    // Too short; no upper case; no digit: each refused with 400.
    for weak in [
        "Sh0rt",
        "all-lower-case-and-digits-123",
        "No-Digits-In-This-Long-Password",
    ] {
        cloud
            .admin(&["user", "create", "carol", "--password", weak])
            .fails_with("400");
    }
    cloud
        .admin(&[
            "user",
            "create",
            "carol",
            "--project",
            "team",
            "--password",
            STRONG_1,
        ])
        .ok();
    cloud
        .admin(&[
            "role",
            "add",
            "--user",
            "carol",
            "--project",
            "team",
            "member",
        ])
        .ok();
    let carol = cloud.user_env("carol", STRONG_1, "team");
    cloud.openstack(&carol, &["token", "issue"]).ok();

    // Minimum password age: a change within a day of the last is refused (400).
    cloud
        .openstack(
            &carol,
            &[
                "user",
                "password",
                "set",
                "--original-password",
                STRONG_1,
                "--password",
                STRONG_2,
            ],
        )
        .fails_with("400");

    // Lockout: five failures lock the account; then even the right password is refused.
    let wrong = cloud.user_env("carol", "Wrong-Passw0rd-For-Carol-123", "team");
    for _ in 0..5 {
        cloud
            .openstack(&wrong, &["token", "issue"])
            .fails_with("401");
    }
    cloud
        .openstack(&carol, &["token", "issue"])
        .fails_with("401");
    // The admin is not affected.
    cloud.admin(&["token", "issue"]).ok();
}

#[test]
fn state_survives_restart() {
    let dir = ScratchDir::new("acc-restart");
    let mut cloud = Cloud::start(&dir.0, &[]);
    let password = cloud.admin_env["OS_PASSWORD"].clone();
    cloud.admin(&["project", "create", "kept"]).ok();
    cloud
        .admin(&[
            "user",
            "create",
            "dave",
            "--project",
            "kept",
            "--password",
            STRONG_1,
        ])
        .ok();
    cloud
        .admin(&[
            "role",
            "add",
            "--user",
            "dave",
            "--project",
            "kept",
            "reader",
        ])
        .ok();
    let token = cloud.admin(&["token", "issue", "-f", "json"]).json();
    let token = token["id"].as_str().unwrap().to_string();
    cloud.stop();

    let cloud = Cloud::start(&dir.0, &[]);
    assert_eq!(
        cloud.admin_env["OS_PASSWORD"], password,
        "the admin keeps its password"
    );
    cloud.admin(&["project", "show", "kept"]).ok();
    let a = cloud
        .admin(&[
            "role",
            "assignment",
            "list",
            "--user",
            "dave",
            "--names",
            "-f",
            "json",
        ])
        .json();
    assert_eq!(names(&a, "Role"), vec!["reader".to_string()]);
    let dave = cloud.user_env("dave", STRONG_1, "kept");
    cloud.openstack(&dave, &["token", "issue"]).ok();

    // A token issued before the restart is still valid.
    let (code, head, body) = cloud.http(
        "GET",
        "/v3/auth/tokens",
        &[("X-Auth-Token", &token), ("X-Subject-Token", &token)],
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        header(&head, "X-Subject-Token").as_deref(),
        Some(token.as_str())
    );
}
