//! Neutron v2.0 through `app()` over a real redb file: every resource, its
//! failure cases with Neutron's error shape and codes, IPAM under concurrency,
//! and cross-project isolation.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use axum::http::{Method, StatusCode};
use common::Cloud;
use kiln_controller::identity::compliance::Preset;
use serde_json::{json, Value};

const N: &str = "/network/v2.0";

struct Net {
    c: Cloud,
    admin: String,
    alice: String,
    bob: String,
    pa: String,
    pb: String,
}

async fn setup() -> Net {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let pa = c.project(&admin, "pa").await;
    let pb = c.project(&admin, "pb").await;
    let ua = c.user(&admin, "alice", "AlicePassword1").await;
    let ub = c.user(&admin, "bob", "BobPassword1").await;
    c.grant(&admin, &pa, &ua, "member").await;
    c.grant(&admin, &pb, &ub, "member").await;
    let alice = c.login("alice", "AlicePassword1", Some("pa")).await;
    let bob = c.login("bob", "BobPassword1", Some("pb")).await;
    Net {
        c,
        admin,
        alice,
        bob,
        pa,
        pb,
    }
}

/// Asserts Neutron's error shape, the status and the exception type.
fn neutron_error(s: StatusCode, v: &Value, code: u16, kind: &str) {
    assert_eq!(s.as_u16(), code, "{v}");
    assert_eq!(v["NeutronError"]["type"], kind, "{v}");
    assert!(v["NeutronError"]["message"].is_string(), "{v}");
    assert_eq!(v["NeutronError"]["detail"], "", "{v}");
}

impl Net {
    async fn post(&self, path: &str, t: &str, body: Value) -> (StatusCode, Value) {
        self.c.post(&format!("{N}{path}"), t, body).await
    }
    async fn get(&self, path: &str, t: &str) -> (StatusCode, Value) {
        self.c.get(&format!("{N}{path}"), t).await
    }
    async fn put(&self, path: &str, t: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, v) = self
            .c
            .call(Method::PUT, &format!("{N}{path}"), Some(t), Some(body))
            .await;
        (s, v)
    }
    async fn delete(&self, path: &str, t: &str) -> (StatusCode, Value) {
        let (s, _, v) = self
            .c
            .call(Method::DELETE, &format!("{N}{path}"), Some(t), None)
            .await;
        (s, v)
    }
    async fn network(&self, t: &str, body: Value) -> String {
        let (s, v) = self.post("/networks", t, json!({ "network": body })).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["network"]["id"].as_str().unwrap().to_string()
    }
    async fn subnet(&self, t: &str, net: &str, cidr: &str, extra: Value) -> Value {
        let mut body = json!({"network_id": net, "cidr": cidr, "ip_version": if cidr.contains(':') {6} else {4}});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, v) = self.post("/subnets", t, json!({ "subnet": body })).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["subnet"].clone()
    }
    async fn port(&self, t: &str, body: Value) -> (StatusCode, Value) {
        self.post("/ports", t, json!({ "port": body })).await
    }
}

#[tokio::test]
async fn version_documents_and_extensions() {
    let n = setup().await;
    for path in ["/network", "/network/"] {
        let (s, _, v) = n.c.call(Method::GET, path, None, None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["versions"][0]["id"], "v2.0");
        assert_eq!(v["versions"][0]["status"], "CURRENT");
        assert!(v["versions"][0]["links"][0]["href"]
            .as_str()
            .unwrap()
            .ends_with("/network/v2.0/"));
    }
    let (s, _, v) = n.c.call(Method::GET, "/network/v2.0/", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["resources"].as_array().unwrap().len() >= 7);
    let (s, v) = n.get("/extensions", &n.alice).await;
    assert_eq!(s, StatusCode::OK);
    let aliases: Vec<&str> = v["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["alias"].as_str().unwrap())
        .collect();
    for a in [
        "router",
        "external-net",
        "security-group",
        "allowed-address-pairs",
        "port-security",
        "quotas",
        "standard-attr-tag",
        "binding",
    ] {
        assert!(aliases.contains(&a), "{a} missing from {aliases:?}");
    }
    assert!(!aliases.contains(&"dvr"));
    let (s, v) = n.get("/extensions/router", &n.alice).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["extension"]["alias"], "router");
    let (s, v) = n.get("/extensions/dvr", &n.alice).await;
    neutron_error(s, &v, 404, "HTTPNotFound");
    // No token: 401.
    let (s, _, _) =
        n.c.call(Method::GET, "/network/v2.0/networks", None, None)
            .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn networks_crud_filters_fields_and_pages() {
    let n = setup().await;
    let (s, v) = n
        .post(
            "/networks",
            &n.alice,
            json!({"network": {"name": "net1", "admin_state_up": true}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let net = &v["network"];
    assert_eq!(net["status"], "ACTIVE");
    assert_eq!(net["mtu"], 1450);
    assert_eq!(net["shared"], false);
    assert_eq!(net["router:external"], false);
    assert_eq!(net["project_id"], n.pa.as_str());
    assert_eq!(net["tenant_id"], n.pa.as_str());
    assert_eq!(net["subnets"], json!([]));
    assert_eq!(net["revision_number"], 0);
    assert!(net.get("kiln_vni").is_none());
    assert!(net["created_at"].as_str().unwrap().ends_with('Z'));
    let id = net["id"].as_str().unwrap().to_string();
    for name in ["net2", "net3"] {
        n.network(&n.alice, json!({ "name": name })).await;
    }
    // Filters, repeated keys, fields.
    let (_, v) = n.get("/networks?name=net2", &n.alice).await;
    assert_eq!(v["networks"].as_array().unwrap().len(), 1);
    let (_, v) = n
        .get(
            &format!("/networks?id={id}&fields=id&fields=name"),
            &n.alice,
        )
        .await;
    assert_eq!(v["networks"], json!([{"id": id, "name": "net1"}]));
    // Sorting and pagination with links.
    let (_, v) = n
        .get("/networks?sort_key=name&sort_dir=desc&limit=2", &n.alice)
        .await;
    let names: Vec<&str> = v["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["net3", "net2"]);
    let next = v["networks_links"][0]["href"].as_str().unwrap();
    let path = next.split("/network/v2.0").nth(1).unwrap();
    let (_, v) = n.get(path, &n.alice).await;
    assert_eq!(v["networks"][0]["name"], "net1");
    // Update and show.
    let (s, v) = n
        .put(
            &format!("/networks/{id}"),
            &n.alice,
            json!({"network": {"name": "renamed", "mtu": 1400}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["network"]["revision_number"], 1);
    let (s, v) = n
        .get(&format!("/networks/{id}?fields=name"), &n.alice)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, json!({"network": {"name": "renamed"}}));
    // Errors: a name in the id slot, bad bodies, admin-only attributes.
    let (s, v) = n.get("/networks/renamed", &n.alice).await;
    neutron_error(s, &v, 404, "NetworkNotFound");
    let (s, v) = n
        .post("/networks", &n.alice, json!({"network": {"bogus": 1}}))
        .await;
    neutron_error(s, &v, 400, "HTTPBadRequest");
    let (s, _, v) =
        n.c.raw(
            Method::POST,
            "/network/v2.0/networks",
            Some(&n.alice),
            Some("{".into()),
            &[],
        )
        .await;
    neutron_error(s, &v, 400, "HTTPBadRequest");
    let (s, v) = n
        .post("/networks", &n.alice, json!({"network": {"shared": true}}))
        .await;
    neutron_error(s, &v, 403, "PolicyNotAuthorized");
    let (s, v) = n
        .put(
            &format!("/networks/{id}"),
            &n.alice,
            json!({"network": {"mtu": 10}}),
        )
        .await;
    neutron_error(s, &v, 400, "HTTPBadRequest");
    let (s, v) = n.get("/networks?limit=abc", &n.alice).await;
    neutron_error(s, &v, 400, "HTTPBadRequest");
    // Bob sees none of alice's networks and cannot touch them.
    let (_, v) = n.get("/networks", &n.bob).await;
    assert_eq!(v["networks"], json!([]));
    let (s, v) = n.delete(&format!("/networks/{id}"), &n.bob).await;
    neutron_error(s, &v, 404, "NetworkNotFound");
    // Admin sees all; delete.
    let (_, v) = n.get("/networks", &n.admin).await;
    assert_eq!(v["networks"].as_array().unwrap().len(), 3);
    let (s, _) = n.delete(&format!("/networks/{id}"), &n.alice).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = n.get(&format!("/networks/{id}"), &n.alice).await;
    neutron_error(s, &v, 404, "NetworkNotFound");
}

#[tokio::test]
async fn tags_on_networks() {
    let n = setup().await;
    let id = n.network(&n.alice, json!({"name": "t"})).await;
    let (s, v) = n
        .put(
            &format!("/networks/{id}/tags"),
            &n.alice,
            json!({"tags": ["a", "b", "a"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["tags"], json!(["a", "b"]));
    let (s, _) = n
        .put(&format!("/networks/{id}/tags/c"), &n.alice, json!({}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _, _) =
        n.c.call(
            Method::GET,
            &format!("{N}/networks/{id}/tags/c"),
            Some(&n.alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, v) = n.get("/networks?tags=a,c", &n.alice).await;
    assert_eq!(v["networks"].as_array().unwrap().len(), 1);
    let (_, v) = n.get("/networks?not-tags-any=c", &n.alice).await;
    assert_eq!(v["networks"].as_array().unwrap().len(), 0);
    let (s, _) = n.delete(&format!("/networks/{id}/tags/a"), &n.alice).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = n.delete(&format!("/networks/{id}/tags/zz"), &n.alice).await;
    neutron_error(s, &v, 404, "TagNotFound");
    let (s, v) = n
        .put(&format!("/networks/{id}/tags/a,b"), &n.alice, json!({}))
        .await;
    neutron_error(s, &v, 400, "HTTPBadRequest");
    let (_, v) = n.get(&format!("/networks/{id}/tags"), &n.alice).await;
    assert_eq!(v["tags"], json!(["b", "c"]));
    let (s, _) = n.delete(&format!("/networks/{id}/tags"), &n.alice).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, v) = n.get(&format!("/networks/{id}"), &n.alice).await;
    assert_eq!(v["network"]["tags"], json!([]));
}

#[tokio::test]
async fn subnets_v4_v6_pools_and_validation() {
    let n = setup().await;
    let net = n.network(&n.alice, json!({"name": "s"})).await;
    let s4 = n.subnet(&n.alice, &net, "10.1.0.0/24", json!({"dns_nameservers": ["8.8.8.8"], "host_routes": [{"destination": "10.9.0.0/16", "nexthop": "10.1.0.5"}]})).await;
    assert_eq!(s4["gateway_ip"], "10.1.0.1");
    assert_eq!(
        s4["allocation_pools"],
        json!([{"start": "10.1.0.2", "end": "10.1.0.254"}])
    );
    assert_eq!(s4["enable_dhcp"], true);
    assert_eq!(s4["ip_version"], 4);
    assert_eq!(s4["dns_nameservers"], json!(["8.8.8.8"]));
    assert_eq!(s4["host_routes"][0]["destination"], "10.9.0.0/16");
    assert_eq!(s4["ipv6_ra_mode"], Value::Null);
    let s6 = n
        .subnet(
            &n.alice,
            &net,
            "fd00:5::/64",
            json!({"ipv6_address_mode": "slaac", "ipv6_ra_mode": "slaac"}),
        )
        .await;
    assert_eq!(s6["gateway_ip"], "fd00:5::1");
    let custom = n
        .subnet(
            &n.alice,
            &net,
            "10.2.0.0/24",
            json!({"gateway_ip": null, "enable_dhcp": false,
        "allocation_pools": [{"start": "10.2.0.10", "end": "10.2.0.20"}]}),
        )
        .await;
    assert_eq!(custom["gateway_ip"], Value::Null);
    assert_eq!(custom["allocation_pools"][0]["start"], "10.2.0.10");
    let (_, v) = n.get(&format!("/networks/{net}"), &n.alice).await;
    assert_eq!(v["network"]["subnets"].as_array().unwrap().len(), 3);
    let (_, v) = n
        .get(&format!("/subnets?network_id={net}&ip_version=6"), &n.alice)
        .await;
    assert_eq!(v["subnets"].as_array().unwrap().len(), 1);
    // Failures.
    for (body, code) in [
        (
            json!({"network_id": net, "cidr": "10.1.0.0/25", "ip_version": 4}),
            400,
        ),
        (
            json!({"network_id": net, "cidr": "10.300.0.0/24", "ip_version": 4}),
            400,
        ),
        (
            json!({"network_id": net, "cidr": "10.3.0.0/24", "ip_version": 6}),
            400,
        ),
        (
            json!({"network_id": net, "cidr": "10.3.0.0/24", "gateway_ip": "10.4.0.1"}),
            400,
        ),
        (
            json!({"network_id": net, "cidr": "10.3.0.0/24", "allocation_pools": [{"start": "10.3.0.9", "end": "10.3.0.2"}]}),
            400,
        ),
        (
            json!({"network_id": net, "cidr": "10.3.0.0/24", "ipv6_address_mode": "slaac"}),
            400,
        ),
        (
            json!({"network_id": net, "cidr": "10.3.0.0/24", "dns_nameservers": ["x"]}),
            400,
        ),
        (
            json!({"network_id": net, "cidr": "10.3.0.0/24", "allocation_pools": [{"start": "10.3.0.1", "end": "10.3.0.5"}]}),
            409,
        ),
    ] {
        let (s, v) = n
            .post("/subnets", &n.alice, json!({ "subnet": body }))
            .await;
        assert_eq!(s.as_u16(), code, "{body} → {v}");
        assert!(v["NeutronError"]["message"].is_string());
    }
    let (s, v) = n
        .post(
            "/subnets",
            &n.alice,
            json!({"subnet": {"network_id": "nope", "cidr": "10.3.0.0/24"}}),
        )
        .await;
    neutron_error(s, &v, 404, "NetworkNotFound");
    // Update.
    let id = s4["id"].as_str().unwrap();
    let (s, v) = n
        .put(
            &format!("/subnets/{id}"),
            &n.alice,
            json!({"subnet": {"name": "x", "dns_nameservers": [], "enable_dhcp": false}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["subnet"]["dns_nameservers"], json!([]));
    // In use → 409, then free.
    let (s, p) = n
        .port(
            &n.alice,
            json!({"network_id": net, "fixed_ips": [{"subnet_id": id}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let (s, v) = n.delete(&format!("/subnets/{id}"), &n.alice).await;
    neutron_error(s, &v, 409, "SubnetInUse");
    let (s, v) = n.delete(&format!("/networks/{net}"), &n.alice).await;
    neutron_error(s, &v, 409, "NetworkInUse");
    let pid = p["port"]["id"].as_str().unwrap();
    assert_eq!(
        n.delete(&format!("/ports/{pid}"), &n.alice).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        n.delete(&format!("/subnets/{id}"), &n.alice).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        n.delete(&format!("/networks/{net}"), &n.alice).await.0,
        StatusCode::NO_CONTENT
    );
    let (s, v) = n
        .get(
            &format!("/subnets/{}", s6["id"].as_str().unwrap()),
            &n.alice,
        )
        .await;
    neutron_error(s, &v, 404, "SubnetNotFound");
}

#[tokio::test]
async fn ports_macs_fixed_ips_security_and_exhaustion() {
    let n = setup().await;
    let net = n.network(&n.alice, json!({"name": "p"})).await;
    let s4 = n.subnet(&n.alice, &net, "192.168.7.0/29", json!({})).await;
    let s6 = n
        .subnet(
            &n.alice,
            &net,
            "fd00:7::/64",
            json!({"ipv6_address_mode": "slaac", "ipv6_ra_mode": "slaac"}),
        )
        .await;
    let sid = s4["id"].as_str().unwrap();
    let (s, v) = n.port(&n.alice, json!({"network_id": net, "name": "p1", "device_id": "vm1", "device_owner": "compute:nova"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let p = &v["port"];
    assert!(p["mac_address"].as_str().unwrap().starts_with("fa:16:3e:"));
    assert_eq!(p["status"], "DOWN");
    assert_eq!(
        p["fixed_ips"][0],
        json!({"subnet_id": sid, "ip_address": "192.168.7.2"})
    );
    assert_eq!(p["fixed_ips"][1]["subnet_id"], s6["id"]);
    assert!(p["fixed_ips"][1]["ip_address"]
        .as_str()
        .unwrap()
        .starts_with("fd00:7::f816:3eff:fe"));
    assert_eq!(p["port_security_enabled"], true);
    assert_eq!(p["security_groups"].as_array().unwrap().len(), 1);
    assert_eq!(p["binding:vif_type"], "unbound");
    assert_eq!(p["binding:vnic_type"], "normal");
    assert_eq!(p["allowed_address_pairs"], json!([]));
    // By address; the same address again → 409; outside the subnet → 400.
    let (s, v) = n
        .port(
            &n.alice,
            json!({"network_id": net, "fixed_ips": [{"ip_address": "192.168.7.5"}],
        "allowed_address_pairs": [{"ip_address": "10.0.0.0/24"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["port"]["fixed_ips"],
        json!([{"subnet_id": sid, "ip_address": "192.168.7.5"}])
    );
    assert_eq!(
        v["port"]["allowed_address_pairs"][0]["mac_address"],
        v["port"]["mac_address"]
    );
    let (s, v) = n.port(&n.alice, json!({"network_id": net, "fixed_ips": [{"subnet_id": sid, "ip_address": "192.168.7.5"}]})).await;
    neutron_error(s, &v, 409, "IpAddressAlreadyAllocated");
    let (s, v) = n.port(&n.alice, json!({"network_id": net, "fixed_ips": [{"subnet_id": sid, "ip_address": "192.168.8.5"}]})).await;
    neutron_error(s, &v, 400, "HTTPBadRequest");
    // The same MAC twice on one network → 409.
    let (s, v) = n
        .port(
            &n.alice,
            json!({"network_id": net, "mac_address": "fa:16:3e:00:00:01", "fixed_ips": []}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = n
        .port(
            &n.alice,
            json!({"network_id": net, "mac_address": "FA:16:3E:00:00:01", "fixed_ips": []}),
        )
        .await;
    neutron_error(s, &v, 409, "MacAddressInUse");
    // /29: .2-.6 usable; .2 and .5 taken; three more, then exhausted.
    let mut got = HashSet::new();
    for _ in 0..3 {
        let (s, v) = n
            .port(
                &n.alice,
                json!({"network_id": net, "fixed_ips": [{"subnet_id": sid}]}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        got.insert(
            v["port"]["fixed_ips"][0]["ip_address"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(
        got,
        ["192.168.7.3", "192.168.7.4", "192.168.7.6"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    let (s, v) = n
        .port(
            &n.alice,
            json!({"network_id": net, "fixed_ips": [{"subnet_id": sid}]}),
        )
        .await;
    neutron_error(s, &v, 409, "IpAddressGenerationFailure");
    // Port security off with groups → 400; with pairs → 409.
    let (s, v) = n.port(&n.alice, json!({"network_id": net, "fixed_ips": [], "port_security_enabled": false, "security_groups": [p["security_groups"][0]]})).await;
    neutron_error(s, &v, 400, "HTTPBadRequest");
    let (s, v) = n.port(&n.alice, json!({"network_id": net, "fixed_ips": [], "port_security_enabled": false, "allowed_address_pairs": [{"ip_address": "1.2.3.4"}]})).await;
    neutron_error(s, &v, 409, "AddressPairAndPortSecurityRequired");
    let (s, v) = n
        .port(
            &n.alice,
            json!({"network_id": net, "fixed_ips": [], "port_security_enabled": false}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["port"]["security_groups"], json!([]));
    // Members may not bind; admins may.
    let pid = p["id"].as_str().unwrap();
    let (s, v) = n
        .put(
            &format!("/ports/{pid}"),
            &n.alice,
            json!({"port": {"binding:host_id": "node1"}}),
        )
        .await;
    neutron_error(s, &v, 403, "PolicyNotAuthorized");
    let (s, v) = n
        .put(
            &format!("/ports/{pid}"),
            &n.admin,
            json!({"port": {"binding:host_id": "node1"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["port"]["binding:vif_type"], "bridge");
    // Update fixed IPs: the old address is released.
    let (s, v) = n.put(&format!("/ports/{pid}"), &n.alice, json!({"port": {"fixed_ips": [{"subnet_id": sid, "ip_address": "192.168.7.2"}], "name": "renamed"}})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["port"]["fixed_ips"].as_array().unwrap().len(), 1);
    // Filters clients send.
    let (_, v) = n.get("/ports?device_id=vm1", &n.alice).await;
    assert_eq!(v["ports"].as_array().unwrap().len(), 1);
    let (_, v) = n
        .get("/ports?fixed_ips=ip_address%3D192.168.7.5", &n.alice)
        .await;
    assert_eq!(v["ports"].as_array().unwrap().len(), 1);
    let (_, v) = n
        .get(&format!("/ports?network_id={net}&fields=id"), &n.alice)
        .await;
    assert_eq!(v["ports"].as_array().unwrap().len(), 7);
    let (s, v) = n.delete("/ports/nope", &n.alice).await;
    neutron_error(s, &v, 404, "PortNotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_port_creates_never_share_an_address() {
    let n = setup().await;
    let net = n.network(&n.alice, json!({"name": "c"})).await;
    let s4 = n.subnet(&n.alice, &net, "10.50.0.0/26", json!({})).await;
    let sid = s4["id"].as_str().unwrap().to_string();
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let app = n.c.app.clone();
        let token = n.alice.clone();
        let body =
            json!({"port": {"network_id": net, "fixed_ips": [{"subnet_id": sid}]}}).to_string();
        tasks.push(tokio::spawn(async move {
            use http_body_util::BodyExt;
            use tower::ServiceExt;
            let req = axum::http::Request::builder()
                .method("POST")
                .uri("/network/v2.0/ports")
                .header("x-auth-token", token)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .unwrap();
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }));
    }
    let mut addresses = HashSet::new();
    for t in tasks {
        let (s, v) = t.await.unwrap();
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let ip = v["port"]["fixed_ips"][0]["ip_address"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(addresses.insert(ip.clone()), "{ip} handed out twice");
    }
    assert_eq!(addresses.len(), 40);
}

#[tokio::test]
async fn security_groups_default_rules_and_duplicates() {
    let n = setup().await;
    let (s, v) = n.get("/security-groups", &n.alice).await;
    assert_eq!(s, StatusCode::OK);
    let groups = v["security_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    let default = &groups[0];
    assert_eq!(default["name"], "default");
    let rules = default["security_group_rules"].as_array().unwrap();
    assert_eq!(rules.len(), 4);
    let did = default["id"].as_str().unwrap();
    assert_eq!(
        rules
            .iter()
            .filter(|r| r["direction"] == "egress" && r["remote_group_id"].is_null())
            .count(),
        2
    );
    assert_eq!(
        rules
            .iter()
            .filter(|r| r["direction"] == "ingress" && r["remote_group_id"] == did)
            .count(),
        2
    );
    // Listing again does not create a second default group.
    let (_, v) = n.get("/security-groups?name=default", &n.alice).await;
    assert_eq!(v["security_groups"].as_array().unwrap().len(), 1);
    let (s, v) = n
        .post(
            "/security-groups",
            &n.alice,
            json!({"security_group": {"name": "web", "description": "w"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let web = v["security_group"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        v["security_group"]["security_group_rules"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (s, v) = n
        .post(
            "/security-groups",
            &n.alice,
            json!({"security_group": {"name": "default"}}),
        )
        .await;
    neutron_error(s, &v, 409, "SecurityGroupDefaultAlreadyExists");
    let rule = |extra: Value| {
        let mut r = json!({"security_group_id": web, "direction": "ingress"});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        json!({ "security_group_rule": r })
    };
    let (s, v) = n.post("/security-group-rules", &n.alice, rule(json!({"protocol": "tcp", "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "10.0.0.7/24"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["security_group_rule"]["remote_ip_prefix"], "10.0.0.0/24");
    assert_eq!(v["security_group_rule"]["ethertype"], "IPv4");
    let first = v["security_group_rule"]["id"].as_str().unwrap().to_string();
    // The same rule with the protocol by number → 409 naming the first rule.
    let (s, v) = n.post("/security-group-rules", &n.alice, rule(json!({"protocol": "6", "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "10.0.0.0/24"}))).await;
    neutron_error(s, &v, 409, "SecurityGroupRuleExists");
    assert_eq!(
        v["NeutronError"]["message"],
        format!("Security group rule already exists. Rule id is {first}.")
    );
    let (s, v) = n
        .post(
            "/security-group-rules",
            &n.alice,
            rule(json!({"protocol": "icmp", "port_range_min": 8, "port_range_max": 0})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = n
        .post(
            "/security-group-rules",
            &n.alice,
            rule(json!({"remote_group_id": did, "ethertype": "IPv6"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["security_group_rule"]["remote_group_id"], did);
    for (extra, code) in [
        (json!({"protocol": "bogus"}), 400),
        (
            json!({"protocol": "tcp", "port_range_min": 90, "port_range_max": 80}),
            400,
        ),
        (
            json!({"protocol": "tcp", "port_range_min": 0, "port_range_max": 80}),
            400,
        ),
        (json!({"port_range_min": 80, "port_range_max": 80}), 400),
        (json!({"protocol": "icmp", "port_range_max": 3}), 400),
        (json!({"protocol": "icmp", "port_range_min": 300}), 400),
        (json!({"remote_ip_prefix": "::/0"}), 400),
        (
            json!({"remote_ip_prefix": "1.2.3.0/24", "remote_group_id": did}),
            400,
        ),
        (json!({"direction": "sideways"}), 400),
        (json!({"remote_group_id": "nope"}), 404),
    ] {
        let (s, v) = n
            .post("/security-group-rules", &n.alice, rule(extra.clone()))
            .await;
        assert_eq!(s.as_u16(), code, "{extra} → {v}");
    }
    let (_, v) = n
        .get(
            &format!("/security-group-rules?security_group_id={web}"),
            &n.alice,
        )
        .await;
    assert_eq!(v["security_group_rules"].as_array().unwrap().len(), 5);
    let (s, _) = n
        .delete(&format!("/security-group-rules/{first}"), &n.alice)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = n
        .get(&format!("/security-group-rules/{first}"), &n.alice)
        .await;
    neutron_error(s, &v, 404, "SecurityGroupRuleNotFound");
    // Bob cannot use alice's group as a remote group or see it.
    let (s, v) = n.get(&format!("/security-groups/{web}"), &n.bob).await;
    neutron_error(s, &v, 404, "SecurityGroupNotFound");
    // In use → 409; the default group cannot be removed by a member.
    let net = n.network(&n.alice, json!({"name": "sg"})).await;
    let (s, p) = n
        .port(
            &n.alice,
            json!({"network_id": net, "security_groups": [web]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["port"]["security_groups"], json!([web]));
    let (s, v) = n.delete(&format!("/security-groups/{web}"), &n.alice).await;
    neutron_error(s, &v, 409, "SecurityGroupInUse");
    let (s, v) = n.delete(&format!("/security-groups/{did}"), &n.alice).await;
    neutron_error(s, &v, 409, "SecurityGroupCannotRemoveDefault");
    let pid = p["port"]["id"].as_str().unwrap();
    n.delete(&format!("/ports/{pid}"), &n.alice).await;
    let (s, _) = n.delete(&format!("/security-groups/{web}"), &n.alice).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = n
        .put(
            &format!("/security-groups/{did}"),
            &n.alice,
            json!({"security_group": {"name": "other"}}),
        )
        .await;
    neutron_error(s, &v, 409, "SecurityGroupCannotUpdateDefault");
}

/// An admin external network with a subnet; returns its id.
async fn external(n: &Net) -> String {
    let ext = n
        .network(&n.admin, json!({"name": "public", "router:external": true}))
        .await;
    n.subnet(&n.admin, &ext, "203.0.113.0/24", json!({})).await;
    ext
}

#[tokio::test]
async fn routers_interfaces_gateways_and_floating_ips() {
    let n = setup().await;
    let ext = external(&n).await;
    let net = n.network(&n.alice, json!({"name": "inside"})).await;
    let sub = n.subnet(&n.alice, &net, "10.20.0.0/24", json!({})).await;
    let sid = sub["id"].as_str().unwrap();
    let (s, v) = n
        .post("/routers", &n.alice, json!({"router": {"name": "r1"}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["router"]["external_gateway_info"], Value::Null);
    assert_eq!(v["router"]["status"], "ACTIVE");
    let rid = v["router"]["id"].as_str().unwrap().to_string();
    // Gateway on a non-external network → 400; on the external one → fixed IP.
    let (s, v) = n
        .put(
            &format!("/routers/{rid}"),
            &n.alice,
            json!({"router": {"external_gateway_info": {"network_id": net}}}),
        )
        .await;
    neutron_error(s, &v, 400, "HTTPBadRequest");
    let (s, v) = n
        .put(
            &format!("/routers/{rid}"),
            &n.alice,
            json!({"router": {"external_gateway_info": {"network_id": ext}}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let gw = &v["router"]["external_gateway_info"];
    assert_eq!(gw["network_id"], ext.as_str());
    assert_eq!(gw["enable_snat"], true);
    assert_eq!(gw["external_fixed_ips"][0]["ip_address"], "203.0.113.2");
    // Interface by subnet; twice → 400; body shape.
    let path = format!("/routers/{rid}/add_router_interface");
    let (s, v) = n.put(&path, &n.alice, json!({"subnet_id": sid})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["id"], rid.as_str());
    assert_eq!(v["subnet_id"], sid);
    assert_eq!(v["network_id"], net.as_str());
    let iface = v["port_id"].as_str().unwrap().to_string();
    let (_, p) = n.get(&format!("/ports/{iface}"), &n.alice).await;
    assert_eq!(p["port"]["device_owner"], "network:router_interface");
    assert_eq!(p["port"]["fixed_ips"][0]["ip_address"], "10.20.0.1");
    let (s, v) = n.put(&path, &n.alice, json!({"subnet_id": sid})).await;
    neutron_error(s, &v, 400, "HTTPBadRequest");
    let (s, v) = n
        .put(&path, &n.alice, json!({"subnet_id": sid, "port_id": iface}))
        .await;
    neutron_error(s, &v, 400, "HTTPBadRequest");
    let (s, v) = n.delete(&format!("/ports/{iface}"), &n.alice).await;
    neutron_error(s, &v, 409, "L3PortInUse");
    let (s, v) = n.delete(&format!("/routers/{rid}"), &n.alice).await;
    neutron_error(s, &v, 409, "RouterInUse");
    // Floating IP: allocate, associate to a VM port, disassociate, delete.
    let (_, vm) = n.port(&n.alice, json!({"network_id": net})).await;
    let vm_id = vm["port"]["id"].as_str().unwrap();
    let (s, v) = n
        .post(
            "/floatingips",
            &n.alice,
            json!({"floatingip": {"floating_network_id": net}}),
        )
        .await;
    neutron_error(s, &v, 400, "HTTPBadRequest");
    let (s, v) = n
        .post(
            "/floatingips",
            &n.alice,
            json!({"floatingip": {"floating_network_id": ext}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let fip = v["floatingip"].clone();
    assert_eq!(fip["status"], "DOWN");
    assert_eq!(fip["port_id"], Value::Null);
    assert_eq!(fip["floating_ip_address"], "203.0.113.3");
    let fid = fip["id"].as_str().unwrap();
    let (s, v) = n
        .put(
            &format!("/floatingips/{fid}"),
            &n.alice,
            json!({"floatingip": {"port_id": vm_id}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["floatingip"]["fixed_ip_address"], "10.20.0.2");
    assert_eq!(v["floatingip"]["router_id"], rid.as_str());
    let (_, v) = n
        .get(&format!("/floatingips?port_id={vm_id}"), &n.alice)
        .await;
    assert_eq!(v["floatingips"].as_array().unwrap().len(), 1);
    // The interface and the gateway are needed by the floating IP now.
    let (s, v) = n
        .put(
            &format!("/routers/{rid}/remove_router_interface"),
            &n.alice,
            json!({"subnet_id": sid}),
        )
        .await;
    neutron_error(s, &v, 409, "RouterInterfaceInUseByFloatingIP");
    let (s, v) = n
        .put(
            &format!("/routers/{rid}"),
            &n.alice,
            json!({"router": {"external_gateway_info": null}}),
        )
        .await;
    neutron_error(s, &v, 409, "RouterExternalGatewayInUseByFloatingIp");
    let (s, v) = n
        .put(
            &format!("/floatingips/{fid}"),
            &n.alice,
            json!({"floatingip": {"port_id": null}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["floatingip"]["port_id"], Value::Null);
    let (s, v) = n
        .put(
            &format!("/routers/{rid}/remove_router_interface"),
            &n.alice,
            json!({"subnet_id": sid}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["port_id"], iface.as_str());
    let (s, v) = n
        .put(
            &format!("/routers/{rid}/remove_router_interface"),
            &n.alice,
            json!({"subnet_id": sid}),
        )
        .await;
    neutron_error(s, &v, 404, "RouterInterfaceNotFoundForSubnet");
    // Without the interface the floating IP cannot reach the port.
    let (s, v) = n
        .put(
            &format!("/floatingips/{fid}"),
            &n.alice,
            json!({"floatingip": {"port_id": vm_id}}),
        )
        .await;
    neutron_error(s, &v, 404, "ExternalGatewayForFloatingIPNotFound");
    assert_eq!(
        n.delete(&format!("/floatingips/{fid}"), &n.alice).await.0,
        StatusCode::NO_CONTENT
    );
    let (s, v) = n.get(&format!("/floatingips/{fid}"), &n.alice).await;
    neutron_error(s, &v, 404, "FloatingIPNotFound");
    let (s, v) = n
        .put(
            &format!("/routers/{rid}"),
            &n.alice,
            json!({"router": {"external_gateway_info": {}}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["router"]["external_gateway_info"], Value::Null);
    assert_eq!(
        n.delete(&format!("/routers/{rid}"), &n.alice).await.0,
        StatusCode::NO_CONTENT
    );
    let (s, v) = n.get(&format!("/routers/{rid}"), &n.alice).await;
    neutron_error(s, &v, 404, "RouterNotFound");
    // Gateway and floating ports are gone: the external network can be deleted.
    assert_eq!(
        n.delete(&format!("/networks/{ext}"), &n.admin).await.0,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn cross_project_connections_are_refused() {
    let n = setup().await;
    let ext = external(&n).await;
    let a_net = n.network(&n.alice, json!({"name": "a"})).await;
    let a_sub = n.subnet(&n.alice, &a_net, "10.30.0.0/24", json!({})).await;
    let a_sid = a_sub["id"].as_str().unwrap();
    // Bob cannot see alice's network, so cannot attach to it.
    let (s, v) = n.port(&n.bob, json!({"network_id": a_net})).await;
    neutron_error(s, &v, 404, "NetworkNotFound");
    // Not even an admin may create a port of project B on project A's network.
    let (s, v) = n
        .port(&n.admin, json!({"network_id": a_net, "project_id": n.pb}))
        .await;
    neutron_error(s, &v, 403, "CrossProjectNetworkAccess");
    // Members cannot name another project.
    let (s, v) = n
        .port(&n.bob, json!({"network_id": a_net, "project_id": n.pa}))
        .await;
    neutron_error(s, &v, 403, "PolicyNotAuthorized");
    // Bob's router cannot take alice's subnet, even through an admin.
    let (_, r) = n
        .post("/routers", &n.bob, json!({"router": {"name": "rb"}}))
        .await;
    let rb = r["router"]["id"].as_str().unwrap();
    let (s, v) = n
        .put(
            &format!("/routers/{rb}/add_router_interface"),
            &n.bob,
            json!({"subnet_id": a_sid}),
        )
        .await;
    neutron_error(s, &v, 404, "SubnetNotFound");
    let (s, v) = n
        .put(
            &format!("/routers/{rb}/add_router_interface"),
            &n.admin,
            json!({"subnet_id": a_sid}),
        )
        .await;
    neutron_error(s, &v, 403, "CrossProjectNetworkAccess");
    // Bob's floating IP cannot point at alice's port.
    let (_, ap) = n.port(&n.alice, json!({"network_id": a_net})).await;
    let ap = ap["port"]["id"].as_str().unwrap();
    let (_, ra) = n
        .post(
            "/routers",
            &n.alice,
            json!({"router": {"external_gateway_info": {"network_id": ext}}}),
        )
        .await;
    let ra = ra["router"]["id"].as_str().unwrap();
    n.put(
        &format!("/routers/{ra}/add_router_interface"),
        &n.alice,
        json!({"subnet_id": a_sid}),
    )
    .await;
    let (s, f) = n
        .post(
            "/floatingips",
            &n.bob,
            json!({"floatingip": {"floating_network_id": ext}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{f}");
    let bf = f["floatingip"]["id"].as_str().unwrap();
    let (s, v) = n
        .put(
            &format!("/floatingips/{bf}"),
            &n.bob,
            json!({"floatingip": {"port_id": ap}}),
        )
        .await;
    neutron_error(s, &v, 404, "PortNotFound");
    let (s, v) = n
        .put(
            &format!("/floatingips/{bf}"),
            &n.admin,
            json!({"floatingip": {"port_id": ap}}),
        )
        .await;
    neutron_error(s, &v, 403, "CrossProjectNetworkAccess");
    // Bob cannot put alice's group on his port.
    let (_, sgs) = n.get("/security-groups", &n.alice).await;
    let a_sg = sgs["security_groups"][0]["id"].as_str().unwrap();
    let b_net = n.network(&n.bob, json!({"name": "b"})).await;
    let (s, v) = n
        .port(
            &n.bob,
            json!({"network_id": b_net, "security_groups": [a_sg]}),
        )
        .await;
    neutron_error(s, &v, 404, "SecurityGroupNotFound");
    // An admin-shared network is usable by everyone.
    let shared = n
        .network(&n.admin, json!({"name": "shared", "shared": true}))
        .await;
    n.subnet(&n.admin, &shared, "10.40.0.0/24", json!({})).await;
    let (_, v) = n.get("/networks?shared=true", &n.bob).await;
    assert_eq!(v["networks"].as_array().unwrap().len(), 1);
    let (s, v) = n.port(&n.bob, json!({"network_id": shared})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["port"]["project_id"], n.pb.as_str());
    // Un-sharing while bob uses it → 409.
    let (s, v) = n
        .put(
            &format!("/networks/{shared}"),
            &n.admin,
            json!({"network": {"shared": false}}),
        )
        .await;
    neutron_error(s, &v, 409, "InvalidSharedSetting");
}

#[tokio::test]
async fn quotas_limit_creates() {
    let n = setup().await;
    let (s, v) = n.get(&format!("/quotas/{}", n.pa), &n.alice).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["quota"]["network"], 100);
    let (s, v) = n.get(&format!("/quotas/{}", n.pb), &n.alice).await;
    neutron_error(s, &v, 403, "PolicyNotAuthorized");
    let (s, v) = n
        .put(
            &format!("/quotas/{}", n.pa),
            &n.alice,
            json!({"quota": {"network": 1}}),
        )
        .await;
    neutron_error(s, &v, 403, "PolicyNotAuthorized");
    let (s, v) = n
        .put(
            &format!("/quotas/{}", n.pa),
            &n.admin,
            json!({"quota": {"network": 1}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["quota"]["network"], 1);
    let (s, v) = n
        .put(
            &format!("/quotas/{}", n.pa),
            &n.admin,
            json!({"quota": {"bananas": 1}}),
        )
        .await;
    neutron_error(s, &v, 400, "HTTPBadRequest");
    n.network(&n.alice, json!({"name": "one"})).await;
    let (s, v) = n
        .post("/networks", &n.alice, json!({"network": {"name": "two"}}))
        .await;
    neutron_error(s, &v, 409, "OverQuota");
    let (_, v) = n.get(&format!("/quotas/{}/details", n.pa), &n.alice).await;
    assert_eq!(
        v["quota"]["network"],
        json!({"limit": 1, "used": 1, "reserved": 0})
    );
    let (_, v) = n.get("/quotas", &n.admin).await;
    assert_eq!(v["quotas"][0]["project_id"], n.pa.as_str());
    assert_eq!(
        n.delete(&format!("/quotas/{}", n.pa), &n.admin).await.0,
        StatusCode::NO_CONTENT
    );
    n.network(&n.alice, json!({"name": "two"})).await;
}

#[tokio::test]
async fn desired_state_for_nodes() {
    let n = setup().await;
    let net = n.network(&n.alice, json!({"name": "d"})).await;
    n.subnet(&n.alice, &net, "10.60.0.0/24", json!({})).await;
    let (_, p) = n
        .port(
            &n.admin,
            json!({"network_id": net, "project_id": n.pa, "binding:host_id": "node-a"}),
        )
        .await;
    let pid = p["port"]["id"].as_str().unwrap();
    n.port(&n.alice, json!({"network_id": net})).await;
    let (s, v) =
        n.c.get("/network/kiln/v1/desired?host=node-a", &n.alice)
            .await;
    neutron_error(s, &v, 403, "PolicyNotAuthorized");
    let (s, v) =
        n.c.get("/network/kiln/v1/desired?host=node-a", &n.admin)
            .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let d = &v["desired"];
    assert_eq!(d["ports"].as_array().unwrap().len(), 1);
    assert_eq!(d["ports"][0]["id"], pid);
    assert_eq!(d["networks"][0]["id"], net.as_str());
    assert!(d["networks"][0]["vni"].as_u64().unwrap() >= 1000);
    let sg = &d["security_groups"][0];
    let remote = sg["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| !r["remote_group_id"].is_null())
        .unwrap();
    // Both ports are in the default group, so both addresses are members.
    assert_eq!(remote["remote_group_ips"].as_array().unwrap().len(), 2);
    let rev = d["revision"].as_u64().unwrap();
    // The node reports the port wired.
    let (s, _, v) =
        n.c.call(
            Method::PUT,
            &format!("/network/kiln/v1/ports/{pid}/status"),
            Some(&n.admin),
            Some(json!({"status": "ACTIVE"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["port"]["status"], "ACTIVE");
    let (_, v) =
        n.c.get("/network/kiln/v1/desired?host=node-a", &n.admin)
            .await;
    assert_ne!(v["desired"]["revision"].as_u64().unwrap(), rev);
    let (_, v) =
        n.c.get("/network/kiln/v1/desired?host=node-b", &n.admin)
            .await;
    assert_eq!(v["desired"]["ports"], json!([]));
}
