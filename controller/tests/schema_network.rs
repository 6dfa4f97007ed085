//! Neutron responses checked against the Networking API reference's shapes for
//! the extensions kiln advertises (schemas in `tests/schemas/network/`).
#![allow(clippy::unwrap_used)]

mod common;
mod schema_support;

use axum::http::{Method, StatusCode};
use common::Cloud;
use kiln_controller::identity::compliance::Preset;
use schema_support::check;
use serde_json::{json, Value};

const N: &str = "/network/v2.0";

async fn ok(c: &Cloud, t: &str, m: Method, path: &str, body: Option<Value>, schema: &str) -> Value {
    let (s, _, v) = c.call(m, &format!("{N}{path}"), Some(t), body).await;
    assert!(s.is_success(), "{path}: {s} {v}");
    check("network", schema, &v);
    v
}

fn id(v: &Value, k: &str) -> String {
    v[k]["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn every_resource_and_its_collection() {
    let c = Cloud::new(Preset::Default);
    let t = c.admin().await;
    let (_, _, v) = c.call(Method::GET, "/network/", None, None).await;
    check("network", "versions", &v);
    ok(&c, &t, Method::GET, "/", None, "resources").await;
    ok(&c, &t, Method::GET, "/extensions", None, "extensions").await;
    ok(&c, &t, Method::GET, "/extensions/router", None, "extension").await;

    let ext = ok(
        &c,
        &t,
        Method::POST,
        "/networks",
        Some(json!({"network": {"name": "public", "router:external": true}})),
        "network",
    )
    .await;
    let ext_id = id(&ext, "network");
    ok(
        &c,
        &t,
        Method::POST,
        "/subnets",
        Some(json!({"subnet": {"network_id": ext_id, "cidr": "203.0.113.0/24", "ip_version": 4}})),
        "subnet",
    )
    .await;
    let net = ok(
        &c,
        &t,
        Method::POST,
        "/networks",
        Some(json!({"network": {"name": "n1"}})),
        "network",
    )
    .await;
    let net_id = id(&net, "network");
    let sub = ok(&c, &t, Method::POST, "/subnets", Some(json!({"subnet": {"network_id": net_id, "cidr": "10.0.0.0/24", "ip_version": 4, "dns_nameservers": ["8.8.8.8"]}})), "subnet").await;
    let sub_id = id(&sub, "subnet");
    ok(&c, &t, Method::POST, "/subnets", Some(json!({"subnet": {"network_id": net_id, "cidr": "fd00::/64", "ip_version": 6, "ipv6_address_mode": "slaac", "ipv6_ra_mode": "slaac"}})), "subnet").await;
    let port = ok(&c, &t, Method::POST, "/ports", Some(json!({"port": {"network_id": net_id, "name": "p1", "allowed_address_pairs": [{"ip_address": "10.0.0.200"}]}})), "port").await;
    let port_id = id(&port, "port");
    let sg = ok(
        &c,
        &t,
        Method::POST,
        "/security-groups",
        Some(json!({"security_group": {"name": "web"}})),
        "security_group",
    )
    .await;
    let sg_id = id(&sg, "security_group");
    let rule = ok(&c, &t, Method::POST, "/security-group-rules", Some(json!({"security_group_rule": {"security_group_id": sg_id, "direction": "ingress", "protocol": "tcp", "port_range_min": 80, "port_range_max": 80, "remote_ip_prefix": "0.0.0.0/0"}})), "security_group_rule").await;
    let rule_id = id(&rule, "security_group_rule");
    let r = ok(
        &c,
        &t,
        Method::POST,
        "/routers",
        Some(json!({"router": {"name": "r1", "external_gateway_info": {"network_id": ext_id}}})),
        "router",
    )
    .await;
    let r_id = id(&r, "router");
    ok(
        &c,
        &t,
        Method::PUT,
        &format!("/routers/{r_id}/add_router_interface"),
        Some(json!({"subnet_id": sub_id})),
        "router_interface",
    )
    .await;
    let fip = ok(
        &c,
        &t,
        Method::POST,
        "/floatingips",
        Some(json!({"floatingip": {"floating_network_id": ext_id}})),
        "floatingip",
    )
    .await;
    let fip_id = id(&fip, "floatingip");

    for (path, one, many, rid) in [
        ("networks", "network", "networks", &net_id),
        ("subnets", "subnet", "subnets", &sub_id),
        ("ports", "port", "ports", &port_id),
        (
            "security-groups",
            "security_group",
            "security_groups",
            &sg_id,
        ),
        (
            "security-group-rules",
            "security_group_rule",
            "security_group_rules",
            &rule_id,
        ),
        ("routers", "router", "routers", &r_id),
        ("floatingips", "floatingip", "floatingips", &fip_id),
    ] {
        ok(&c, &t, Method::GET, &format!("/{path}"), None, many).await;
        ok(&c, &t, Method::GET, &format!("/{path}?limit=1"), None, many).await;
        ok(&c, &t, Method::GET, &format!("/{path}/{rid}"), None, one).await;
    }
    ok(
        &c,
        &t,
        Method::PUT,
        &format!("/networks/{net_id}"),
        Some(json!({"network": {"name": "n2"}})),
        "network",
    )
    .await;
    ok(
        &c,
        &t,
        Method::PUT,
        &format!("/ports/{port_id}"),
        Some(json!({"port": {"name": "p2"}})),
        "port",
    )
    .await;
    ok(
        &c,
        &t,
        Method::PUT,
        &format!("/floatingips/{fip_id}"),
        Some(json!({"floatingip": {"port_id": port_id}})),
        "floatingip",
    )
    .await;
    // Neutron refuses to remove an interface a floating IP depends on: disassociate first.
    ok(
        &c,
        &t,
        Method::PUT,
        &format!("/floatingips/{fip_id}"),
        Some(json!({"floatingip": {"port_id": null}})),
        "floatingip",
    )
    .await;
    ok(
        &c,
        &t,
        Method::PUT,
        &format!("/routers/{r_id}/remove_router_interface"),
        Some(json!({"subnet_id": sub_id})),
        "router_interface",
    )
    .await;
    let (_, _, me) = c
        .call(Method::GET, "/v3/auth/projects", Some(&t), None)
        .await;
    let project = me["projects"][0]["id"].as_str().unwrap().to_string();
    ok(
        &c,
        &t,
        Method::GET,
        &format!("/quotas/{project}"),
        None,
        "quota",
    )
    .await;
    ok(
        &c,
        &t,
        Method::GET,
        &format!("/quotas/{project}/details"),
        None,
        "quota_details",
    )
    .await;
    ok(
        &c,
        &t,
        Method::PUT,
        &format!("/quotas/{project}"),
        Some(json!({"quota": {"network": 50}})),
        "quota",
    )
    .await;
    ok(&c, &t, Method::GET, "/quotas", None, "quotas").await;
    let (s, _, v) = c
        .call(
            Method::GET,
            &format!("{N}/networks/00000000-0000-0000-0000-000000000000"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    check("network", "error", &v);
}
