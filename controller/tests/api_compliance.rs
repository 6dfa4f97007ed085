//! `[security_compliance]` through the API: the strict preset (lockout, complexity,
//! history, minimum age) and password expiry / change upon first use.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::{assert_error, password_auth, Cloud};
use kiln_controller::identity::compliance::Preset;
use serde_json::json;

const GOOD: &str = "Abcdefghijklmnopqrs1";
const GOOD2: &str = "Abcdefghijklmnopqrs2";

#[tokio::test]
async fn strict_locks_after_five_failures_even_with_the_right_password() {
    let c = Cloud::new(Preset::Strict);
    let admin = c.admin().await;
    let p = c.project(&admin, "p").await;
    let u = c.user(&admin, "lock", GOOD).await;
    c.grant(&admin, &p, &u, "member").await;
    c.login("lock", GOOD, Some("p")).await;
    for _ in 0..5 {
        let (s, _, v) = c.auth(password_auth("lock", "wrong", Some("p"))).await;
        assert_error(s, &v, 401);
    }
    let (s, _, v) = c.auth(password_auth("lock", GOOD, Some("p"))).await;
    assert_error(s, &v, 401);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("locked"),
        "{v}"
    );
    // An admin re-enabling the user clears the lock.
    let (s, _) = c
        .patch(
            &format!("/v3/users/{u}"),
            &admin,
            json!({"user": {"enabled": true}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    c.login("lock", GOOD, Some("p")).await;
}

#[tokio::test]
async fn four_failures_then_success_resets_the_count() {
    let c = Cloud::new(Preset::Strict);
    let admin = c.admin().await;
    let p = c.project(&admin, "p").await;
    let u = c.user(&admin, "reset", GOOD).await;
    c.grant(&admin, &p, &u, "member").await;
    for round in 0..2 {
        for _ in 0..4 {
            let (s, _, _) = c.auth(password_auth("reset", "wrong", Some("p"))).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "round {round}");
        }
        c.login("reset", GOOD, Some("p")).await;
    }
}

#[tokio::test]
async fn strict_password_rules_are_400_with_the_rule() {
    let c = Cloud::new(Preset::Strict);
    let admin = c.admin().await;
    for weak in [
        "short1A",
        "alllowercaseandlong12",
        "ALLUPPERCASEANDLONG12",
        "NoDigitsButLongEnough",
    ] {
        let (s, v) = c
            .post(
                "/v3/users",
                &admin,
                json!({"user": {"name": "w", "password": weak}}),
            )
            .await;
        assert_error(s, &v, 400);
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("20 characters"),
            "{v}"
        );
    }
    let u = c.user(&admin, "h", GOOD).await;
    // Minimum age: the owner cannot change it yet.
    let (s, _, v) = c
        .call(
            Method::POST,
            &format!("/v3/users/{u}/password"),
            None,
            Some(json!({"user": {"password": GOOD2, "original_password": GOOD}})),
        )
        .await;
    assert_error(s, &v, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("minimum password age"),
        "{v}"
    );
    // History: an admin reset to the current password is refused.
    let (s, v) = c
        .patch(
            &format!("/v3/users/{u}"),
            &admin,
            json!({"user": {"password": GOOD}}),
        )
        .await;
    assert_error(s, &v, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("previous password"),
        "{v}"
    );
    let (s, v) = c
        .patch(
            &format!("/v3/users/{u}"),
            &admin,
            json!({"user": {"password": GOOD2}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = c
        .patch(
            &format!("/v3/users/{u}"),
            &admin,
            json!({"user": {"password": GOOD}}),
        )
        .await;
    assert_error(s, &v, 400);
}

#[tokio::test]
async fn expired_passwords_and_change_upon_first_use() {
    let mut sc = Preset::Default.settings();
    sc.change_password_upon_first_use = true;
    let c = Cloud::with(sc);
    let admin = c.admin().await;
    let p = c.project(&admin, "p").await;
    let u = c.user(&admin, "first", "initial").await;
    c.grant(&admin, &p, &u, "member").await;
    let (s, _, v) = c.auth(password_auth("first", "initial", Some("p"))).await;
    assert_error(s, &v, 401);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("expired"),
        "{v}"
    );
    let (_, v) = c.get(&format!("/v3/users/{u}"), &admin).await;
    assert!(v["user"]["password_expires_at"].is_string(), "{v}");
    // The owner changes it without a token, then logs in.
    let (s, _, v) = c
        .call(
            Method::POST,
            &format!("/v3/users/{u}/password"),
            None,
            Some(json!({"user": {"password": "chosen", "original_password": "initial"}})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    c.login("first", "chosen", Some("p")).await;
}

#[tokio::test]
async fn password_expiry_days_is_shown_in_tokens() {
    let mut sc = Preset::Default.settings();
    sc.password_expires_days = 90;
    let c = Cloud::with(sc);
    let admin = c.admin().await;
    let p = c.project(&admin, "p").await;
    let u = c.user(&admin, "exp", "pw").await;
    c.grant(&admin, &p, &u, "member").await;
    let (s, _, v) = c.auth(password_auth("exp", "pw", Some("p"))).await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(v["token"]["user"]["password_expires_at"].is_string(), "{v}");
}
