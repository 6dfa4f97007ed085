//! Arbitrary JSON (and non-JSON) bodies against every writing endpoint: the answer
//! is always a 4xx in OpenStack's error shape or a success, never a 5xx, never a
//! crash (the daemons abort on panic).
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::Method;
use common::Cloud;
use kiln_controller::identity::compliance::Preset;
use proptest::prelude::*;
use serde_json::{json, Value};

/// JSON values up to a small depth, with the keys our bodies use, so the fuzzer
/// reaches past the first `missing field`.
fn json_value() -> impl Strategy<Value = Value> {
    let keys = prop_oneof![
        Just("auth"),
        Just("identity"),
        Just("methods"),
        Just("password"),
        Just("user"),
        Just("name"),
        Just("id"),
        Just("domain"),
        Just("scope"),
        Just("project"),
        Just("system"),
        Just("all"),
        Just("token"),
        Just("application_credential"),
        Just("secret"),
        Just("roles"),
        Just("expires_at"),
        Just("enabled"),
        Just("tags"),
        Just("original_password"),
        Just("options"),
        Just("parent_id"),
        Just("domain_id"),
        Just("group"),
        Just("role"),
        Just("unrestricted"),
        Just("x")
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9é/ ._-]{0,12}".prop_map(Value::String),
        Just(json!("password")),
        Just(json!("unscoped")),
        Just(json!("2030-01-01T00:00:00")),
    ];
    leaf.prop_recursive(4, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..5).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

const PATHS: &[&str] = &[
    "/v3/auth/tokens",
    "/v3/projects",
    "/v3/users",
    "/v3/domains",
    "/v3/groups",
    "/v3/roles",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn no_body_makes_a_5xx(body in json_value(), raw in "\\PC{0,40}", which in 0usize..6) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let c = Cloud::new(Preset::Strict);
            let admin = c.admin().await;
            let path = PATHS[which];
            for payload in [body.to_string(), raw.clone()] {
                let (s, _, v) = c.raw(Method::POST, path, Some(&admin), Some(payload.clone()), &[]).await;
                assert!(s.as_u16() < 500, "{path} {payload} -> {s} {v}");
                if !s.is_success() {
                    assert_eq!(v["error"]["code"], s.as_u16(), "{v}");
                }
            }
            let uid = {
                let (_, v) = c.get("/v3/users?name=admin", &admin).await;
                v["users"][0]["id"].as_str().unwrap().to_string()
            };
            for path in [
                format!("/v3/users/{uid}/password"),
                format!("/v3/users/{uid}/application_credentials"),
            ] {
                let (s, _, v) = c.raw(Method::POST, &path, Some(&admin), Some(body.to_string()), &[]).await;
                assert!(s.as_u16() < 500, "{path} {body} -> {s} {v}");
            }
            let (s, _, v) = c.raw(Method::PATCH, &format!("/v3/users/{uid}"), Some(&admin), Some(body.to_string()), &[]).await;
            assert!(s.as_u16() < 500, "patch {body} -> {s} {v}");
        });
    }
}
