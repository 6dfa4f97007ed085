//! Cinder responses checked against the Block Storage API reference's shapes at
//! 3.0 and 3.71 (schemas in `tests/schemas/volume/`).
#![allow(clippy::unwrap_used)]

mod common;
mod schema_support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::Cloud;
use kiln_controller::identity::compliance::Preset;
use schema_support::check;
use serde_json::{json, Value};

const V: &str = "/volume/v3";

async fn call(
    c: &Cloud,
    t: &str,
    m: Method,
    path: &str,
    mv: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let hdr = format!("volume {mv}");
    let (s, _, v) = c
        .raw(
            m,
            &format!("{V}{path}"),
            Some(t),
            body.map(|b| b.to_string()),
            &[("OpenStack-API-Version", hdr.as_str())],
        )
        .await;
    (s, v)
}

async fn ok(
    c: &Cloud,
    t: &str,
    m: Method,
    path: &str,
    mv: &str,
    body: Option<Value>,
    schema: &str,
) -> Value {
    let (s, v) = call(c, t, m, path, mv, body).await;
    assert!(s.is_success(), "{path} at {mv}: {s} {v}");
    check("volume", schema, &v);
    v
}

async fn available(c: &Cloud, t: &str, kind: &str, id: &str) {
    for _ in 0..200 {
        let (_, v) = call(c, t, Method::GET, &format!("/{kind}s/{id}"), "3.0", None).await;
        if v[kind]["status"] == "available" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{kind} {id} never became available");
}

#[tokio::test]
async fn every_volume_response_at_3_0_and_3_71() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let p = c.project(&admin, "vp").await;
    let u = c.user(&admin, "vu", "UserPassword12345").await;
    c.grant(&admin, &p, &u, "member").await;
    let t = c.login("vu", "UserPassword12345", Some("vp")).await;
    let (_, _, v) = c.call(Method::GET, "/volume/", None, None).await;
    check("volume", "versions", &v);
    let (_, _, v) = c.call(Method::GET, "/volume/v3/", None, None).await;
    // Cinder answers its v3 root with the one-entry versions list.
    check("volume", "versions", &v);
    for mv in ["3.0", "3.71"] {
        let vol = ok(
            &c,
            &t,
            Method::POST,
            "/volumes",
            mv,
            Some(json!({"volume": {"size": 1, "name": "a", "metadata": {"k": "v"}}})),
            &format!("volume_{mv}"),
        )
        .await;
        let id = vol["volume"]["id"].as_str().unwrap().to_string();
        available(&c, &t, "volume", &id).await;
        ok(
            &c,
            &t,
            Method::GET,
            &format!("/volumes/{id}"),
            mv,
            None,
            &format!("volume_{mv}"),
        )
        .await;
        ok(
            &c,
            &admin,
            Method::GET,
            &format!("/volumes/{id}"),
            mv,
            None,
            &format!("volume_admin_{mv}"),
        )
        .await;
        ok(&c, &t, Method::GET, "/volumes", mv, None, "volumes").await;
        ok(
            &c,
            &t,
            Method::GET,
            "/volumes/detail",
            mv,
            None,
            &format!("volumes_detail_{mv}"),
        )
        .await;
        ok(
            &c,
            &t,
            Method::GET,
            "/volumes/detail?limit=1",
            mv,
            None,
            &format!("volumes_detail_{mv}"),
        )
        .await;
        ok(
            &c,
            &t,
            Method::PUT,
            &format!("/volumes/{id}"),
            mv,
            Some(json!({"volume": {"name": "b"}})),
            &format!("volume_{mv}"),
        )
        .await;
        ok(
            &c,
            &t,
            Method::GET,
            &format!("/volumes/{id}/metadata"),
            mv,
            None,
            "metadata",
        )
        .await;
        ok(
            &c,
            &t,
            Method::POST,
            &format!("/volumes/{id}/metadata"),
            mv,
            Some(json!({"metadata": {"x": "y"}})),
            "metadata",
        )
        .await;
        ok(
            &c,
            &t,
            Method::PUT,
            &format!("/volumes/{id}/metadata"),
            mv,
            Some(json!({"metadata": {"x": "z"}})),
            "metadata",
        )
        .await;
        ok(
            &c,
            &t,
            Method::GET,
            &format!("/volumes/{id}/metadata/x"),
            mv,
            None,
            "meta",
        )
        .await;
        ok(
            &c,
            &t,
            Method::PUT,
            &format!("/volumes/{id}/metadata/x"),
            mv,
            Some(json!({"meta": {"x": "w"}})),
            "meta",
        )
        .await;
        let s = ok(
            &c,
            &t,
            Method::POST,
            "/snapshots",
            mv,
            Some(json!({"snapshot": {"volume_id": id, "name": "s"}})),
            &format!("snapshot_{mv}"),
        )
        .await;
        let sid = s["snapshot"]["id"].as_str().unwrap().to_string();
        available(&c, &t, "snapshot", &sid).await;
        ok(
            &c,
            &t,
            Method::GET,
            &format!("/snapshots/{sid}"),
            mv,
            None,
            &format!("snapshot_{mv}"),
        )
        .await;
        ok(
            &c,
            &t,
            Method::GET,
            "/snapshots",
            mv,
            None,
            &format!("snapshots_{mv}"),
        )
        .await;
        ok(
            &c,
            &t,
            Method::GET,
            "/snapshots/detail",
            mv,
            None,
            &format!("snapshots_{mv}"),
        )
        .await;
        ok(
            &c,
            &t,
            Method::PUT,
            &format!("/snapshots/{sid}"),
            mv,
            Some(json!({"snapshot": {"name": "s2"}})),
            &format!("snapshot_{mv}"),
        )
        .await;
        ok(&c, &t, Method::GET, "/types", mv, None, "volume_types").await;
        ok(
            &c,
            &t,
            Method::GET,
            "/types/default",
            mv,
            None,
            "volume_type",
        )
        .await;
        ok(&c, &t, Method::GET, "/limits", mv, None, "limits").await;
        ok(
            &c,
            &t,
            Method::GET,
            &format!("/os-quota-sets/{p}"),
            mv,
            None,
            "quota_set",
        )
        .await;
        ok(
            &c,
            &t,
            Method::GET,
            &format!("/os-quota-sets/{p}/defaults"),
            mv,
            None,
            "quota_set",
        )
        .await;
        ok(
            &c,
            &t,
            Method::GET,
            "/os-availability-zone",
            mv,
            None,
            "availability_zones",
        )
        .await;
    }
    let ty = ok(
        &c,
        &admin,
        Method::POST,
        "/types",
        "3.0",
        Some(json!({"volume_type": {"name": "gold", "extra_specs": {"tier": "1"}}})),
        "volume_type",
    )
    .await;
    let tid = ty["volume_type"]["id"].as_str().unwrap().to_string();
    ok(
        &c,
        &admin,
        Method::GET,
        &format!("/types/{tid}"),
        "3.0",
        None,
        "volume_type",
    )
    .await;
    ok(
        &c,
        &admin,
        Method::PUT,
        &format!("/os-quota-sets/{p}"),
        "3.0",
        Some(json!({"quota_set": {"volumes": 5}})),
        "quota_set_update",
    )
    .await;
    let (s, v) = call(
        &c,
        &t,
        Method::GET,
        "/volumes/00000000-0000-0000-0000-000000000000",
        "3.0",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    check("volume", "fault", &v);
}
