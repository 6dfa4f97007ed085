//! Nova's extras through `app()`: os-services (2.1 action forms and the 2.53 PUT),
//! os-hypervisors (capacity fields before 2.88, uptime in show from 2.88,
//! `with_servers`), os-server-groups (2.1 `policies`, 2.64 `policy` + `rules`,
//! quotas) and os-simple-tenant-usage over a fake server directory.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use common::Cloud;
use kiln_controller::compute::nodes::Registration;
use kiln_controller::compute::usage::{ServerDirectory, ServerRef, UsageRecord};
use kiln_controller::error::ApiResult;
use kiln_controller::identity::compliance::Preset;
use kiln_controller::microversion::{accept_through, EXACT_MAX_WITHOUT_SERVERS};
use serde_json::{json, Value};

const C: &str = "/compute/v2.1";

fn fault(status: StatusCode, body: &Value, code: u16, name: &str) {
    assert_eq!(status.as_u16(), code, "{body}");
    assert_eq!(body[name]["code"], code, "{body}");
    assert!(body[name]["message"].is_string(), "{body}");
}

async fn at(
    cloud: &Cloud,
    method: Method,
    path: &str,
    token: &str,
    mv: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let v = format!("compute {mv}");
    cloud.at_version(&v, method, path, token, body).await
}

fn register(cloud: &Cloud, id: &str) {
    cloud
        .state
        .services
        .compute
        .register_node(Registration {
            id: id.into(),
            host: format!("{id}.example"),
            az: "nova".into(),
            vcpus: 8,
            ram_mb: 16384,
            disk_gb: 200,
        })
        .unwrap();
}

async fn member(cloud: &Cloud, admin: &str, name: &str) -> (String, String) {
    let p = cloud.project(admin, name).await;
    let u = cloud
        .user(admin, &format!("{name}-u"), "UserPassword12345")
        .await;
    cloud.grant(admin, &p, &u, "member").await;
    (
        p,
        cloud
            .login(&format!("{name}-u"), "UserPassword12345", Some(name))
            .await,
    )
}

struct Fake {
    node: String,
    project: String,
}

impl ServerDirectory for Fake {
    fn servers_on_node(&self, node_id: &str) -> ApiResult<Vec<ServerRef>> {
        Ok(if node_id == self.node {
            vec![ServerRef {
                uuid: "11111111-1111-1111-1111-111111111111".into(),
                name: "vm1".into(),
            }]
        } else {
            vec![]
        })
    }
    fn usage_records(&self, project: Option<&str>, _: i64, _: i64) -> ApiResult<Vec<UsageRecord>> {
        let mk = |id: &str, start: i64, end: Option<i64>| UsageRecord {
            instance_id: id.into(),
            name: id.into(),
            tenant_id: self.project.clone(),
            flavor: "m1.small".into(),
            vcpus: 2,
            memory_mb: 2048,
            local_gb: 20,
            started_at: start,
            ended_at: end,
            state: if end.is_some() { "deleted" } else { "active" }.into(),
        };
        const H: i64 = 3_600_000_000;
        // 2020-01-01T00:00:00Z in microseconds.
        let base = 1_577_836_800_000_000;
        let all = vec![mk("a", base, Some(base + 2 * H)), mk("b", base + H, None)];
        Ok(all
            .into_iter()
            .filter(|r| project.is_none_or(|p| p == r.tenant_id))
            .collect())
    }
}

#[tokio::test]
async fn services_list_update_delete() {
    accept_through(EXACT_MAX_WITHOUT_SERVERS);
    let cloud = Cloud::new(Preset::Default);
    let admin = cloud.admin().await;
    let (_p, user) = member(&cloud, &admin, "svc").await;
    register(&cloud, "n1");
    let (s, v) = cloud.get(&format!("{C}/os-services"), &admin).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let list = v["services"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{v}");
    let compute = list.iter().find(|s| s["binary"] == "nova-compute").unwrap();
    assert_eq!(compute["host"], "n1.example");
    assert_eq!(compute["state"], "up");
    assert_eq!(compute["status"], "enabled");
    assert_eq!(compute["zone"], "nova");
    assert!(compute["id"].is_u64());
    assert!(
        compute.get("forced_down").is_none(),
        "2.1 has no forced_down"
    );
    let (s, v) = cloud
        .get(&format!("{C}/os-services?binary=nova-scheduler"), &admin)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["services"].as_array().unwrap().len(), 1);
    assert_eq!(v["services"][0]["zone"], "internal");
    let (s, v) = cloud.get(&format!("{C}/os-services"), &user).await;
    fault(s, &v, 403, "forbidden");

    // 2.1 action forms.
    let body =
        json!({"host": "n1.example", "binary": "nova-compute", "disabled_reason": "rack move"});
    let (s, _, v) = cloud
        .call(
            Method::PUT,
            &format!("{C}/os-services/disable-log-reason"),
            Some(&admin),
            Some(body),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"service": {"host": "n1.example", "binary": "nova-compute", "status": "disabled", "disabled_reason": "rack move"}})
    );
    let (_, v) = cloud
        .get(&format!("{C}/os-services?binary=nova-compute"), &admin)
        .await;
    assert_eq!(v["services"][0]["status"], "disabled");
    assert_eq!(v["services"][0]["disabled_reason"], "rack move");
    let nodes = cloud.state.services.compute.nodes().unwrap();
    assert!(
        !nodes[0].enabled,
        "a disabled service's node is not schedulable"
    );
    let body = json!({"host": "n1.example", "binary": "nova-compute"});
    let (s, _, v) = cloud
        .call(
            Method::PUT,
            &format!("{C}/os-services/enable"),
            Some(&admin),
            Some(body),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["service"]["status"], "enabled");
    let body = json!({"host": "nope", "binary": "nova-compute"});
    let (s, _, v) = cloud
        .call(
            Method::PUT,
            &format!("{C}/os-services/disable"),
            Some(&admin),
            Some(body),
        )
        .await;
    fault(s, &v, 404, "itemNotFound");
    let body = json!({"host": "n1.example"});
    let (s, _, v) = cloud
        .call(
            Method::PUT,
            &format!("{C}/os-services/disable"),
            Some(&admin),
            Some(body),
        )
        .await;
    fault(s, &v, 400, "badRequest");

    // 2.53: uuid ids, PUT by id, forced_down.
    let (s, v) = at(
        &cloud,
        Method::GET,
        &format!("{C}/os-services?binary=nova-compute"),
        &admin,
        "2.53",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let svc = v["services"][0].clone();
    let id = svc["id"].as_str().unwrap().to_string();
    assert_eq!(svc["forced_down"], false);
    let (s, v) = at(
        &cloud,
        Method::PUT,
        &format!("{C}/os-services/{id}"),
        &admin,
        "2.53",
        Some(json!({"status": "disabled", "disabled_reason": "x", "forced_down": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["service"]["status"], "disabled");
    assert_eq!(v["service"]["state"], "down");
    assert_eq!(v["service"]["forced_down"], true);
    assert_eq!(v["service"]["id"], id.as_str());
    let (s, v) = at(
        &cloud,
        Method::PUT,
        &format!("{C}/os-services/{id}"),
        &admin,
        "2.53",
        Some(json!({"status": "enabled", "disabled_reason": "x"})),
    )
    .await;
    fault(s, &v, 400, "badRequest");
    let (s, v) = at(
        &cloud,
        Method::PUT,
        &format!("{C}/os-services/{id}"),
        &admin,
        "2.53",
        Some(json!({})),
    )
    .await;
    fault(s, &v, 400, "badRequest");
    let (s, v) = at(
        &cloud,
        Method::PUT,
        &format!("{C}/os-services/disable"),
        &admin,
        "2.53",
        Some(json!({"host": "n1.example", "binary": "nova-compute"})),
    )
    .await;
    fault(s, &v, 400, "badRequest");
    let (s, v) = at(
        &cloud,
        Method::PUT,
        &format!("{C}/os-services/{}", uuid::Uuid::new_v4()),
        &admin,
        "2.53",
        Some(json!({"status": "enabled"})),
    )
    .await;
    fault(s, &v, 404, "itemNotFound");

    // Delete takes the hypervisor too; a second delete is 404.
    let (s, v) = at(
        &cloud,
        Method::DELETE,
        &format!("{C}/os-services/{id}"),
        &admin,
        "2.53",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, v) = at(
        &cloud,
        Method::DELETE,
        &format!("{C}/os-services/{id}"),
        &admin,
        "2.53",
        None,
    )
    .await;
    fault(s, &v, 404, "itemNotFound");
    let (_, v) = cloud.get(&format!("{C}/os-hypervisors"), &admin).await;
    assert_eq!(v["hypervisors"], json!([]));
    let (s, v) = cloud.get(&format!("{C}/os-services/abc"), &admin).await;
    fault(s, &v, 405, "badMethod");
}

#[tokio::test]
async fn hypervisors_by_microversion() {
    accept_through(EXACT_MAX_WITHOUT_SERVERS);
    let cloud = Cloud::new(Preset::Default);
    let admin = cloud.admin().await;
    let (_p, user) = member(&cloud, &admin, "hyp").await;
    register(&cloud, "n1");
    register(&cloud, "n2");
    cloud
        .state
        .services
        .compute
        .set_server_directory(Arc::new(Fake {
            node: "n1".into(),
            project: "x".into(),
        }));
    let (s, v) = cloud.get(&format!("{C}/os-hypervisors"), &admin).await;
    assert_eq!(s, StatusCode::OK);
    let h = &v["hypervisors"][0];
    assert_eq!(h.as_object().unwrap().len(), 4, "{h}");
    assert_eq!(h["hypervisor_hostname"], "n1.example");
    let id = h["id"].as_u64().unwrap();
    let (s, v) = cloud.get(&format!("{C}/os-hypervisors/{id}"), &admin).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let hv = &v["hypervisor"];
    assert_eq!(hv["memory_mb"], 16384);
    assert_eq!(hv["running_vms"], 1);
    assert!(hv["cpu_info"].is_string());
    assert!(hv.get("uptime").is_none());
    let (s, v) = cloud
        .get(&format!("{C}/os-hypervisors/statistics"), &admin)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["hypervisor_statistics"]["count"], 2);
    assert_eq!(v["hypervisor_statistics"]["vcpus"], 16);
    let (s, v) = cloud
        .get(&format!("{C}/os-hypervisors/{id}/uptime"), &admin)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["hypervisor"]["uptime"]
        .as_str()
        .unwrap()
        .contains("load average"));
    let (s, v) = cloud
        .get(&format!("{C}/os-hypervisors/n1/servers"), &admin)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["hypervisors"][0]["servers"][0]["name"], "vm1");
    let (s, v) = cloud
        .get(&format!("{C}/os-hypervisors/zzz/search"), &admin)
        .await;
    fault(s, &v, 404, "itemNotFound");
    let (s, v) = cloud.get(&format!("{C}/os-hypervisors/999"), &admin).await;
    fault(s, &v, 404, "itemNotFound");
    let (s, v) = cloud.get(&format!("{C}/os-hypervisors"), &user).await;
    fault(s, &v, 403, "forbidden");

    // 2.28: cpu_info is an object; 2.33 paging.
    let (_, v) = at(
        &cloud,
        Method::GET,
        &format!("{C}/os-hypervisors/detail?limit=1"),
        &admin,
        "2.33",
        None,
    )
    .await;
    assert!(v["hypervisors"][0]["cpu_info"].is_object());
    assert_eq!(v["hypervisors"].as_array().unwrap().len(), 1);
    assert!(v["hypervisors_links"][0]["href"]
        .as_str()
        .unwrap()
        .contains("marker="));
    // 2.75: with_servers always gives the list; 2.88 drops capacity and stats.
    let (s, v) = at(
        &cloud,
        Method::GET,
        &format!("{C}/os-hypervisors?with_servers=true"),
        &admin,
        "2.75",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let hs = v["hypervisors"].as_array().unwrap();
    assert_eq!(
        hs[0]["servers"][0]["uuid"],
        "11111111-1111-1111-1111-111111111111"
    );
    assert_eq!(hs[1]["servers"], json!([]));
    let uuid = hs[0]["id"].as_str().unwrap().to_string();
    let (s, v) = at(
        &cloud,
        Method::GET,
        &format!("{C}/os-hypervisors/{uuid}"),
        &admin,
        "2.88",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["hypervisor"].get("memory_mb").is_none());
    assert!(v["hypervisor"]["uptime"].is_string());
    assert!(v["hypervisor"]["service"]["id"].is_string());
    let (s, v) = at(
        &cloud,
        Method::GET,
        &format!("{C}/os-hypervisors/statistics"),
        &admin,
        "2.88",
        None,
    )
    .await;
    fault(s, &v, 404, "itemNotFound");
    let (s, v) = at(
        &cloud,
        Method::GET,
        &format!("{C}/os-hypervisors/{id}"),
        &admin,
        "2.53",
        None,
    )
    .await;
    fault(s, &v, 404, "itemNotFound");
}

#[tokio::test]
async fn server_groups_by_microversion() {
    accept_through(EXACT_MAX_WITHOUT_SERVERS);
    let cloud = Cloud::new(Preset::Default);
    let admin = cloud.admin().await;
    let (p1, t1) = member(&cloud, &admin, "sg1").await;
    let (_p2, t2) = member(&cloud, &admin, "sg2").await;
    let (s, v) = cloud
        .post(
            &format!("{C}/os-server-groups"),
            &t1,
            json!({"server_group": {"name": "web", "policies": ["anti-affinity"]}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let g = &v["server_group"];
    assert_eq!(g["policies"], json!(["anti-affinity"]));
    assert_eq!(g["metadata"], json!({}));
    assert_eq!(g["members"], json!([]));
    assert!(g.get("project_id").is_none());
    let id = g["id"].as_str().unwrap().to_string();
    // Soft policies need 2.15; unknown keys and two policies are 400.
    for body in [
        json!({"server_group": {"name": "x", "policies": ["soft-affinity"]}}),
        json!({"server_group": {"name": "x", "policies": ["affinity", "anti-affinity"]}}),
        json!({"server_group": {"name": "x", "policy": "affinity"}}),
        json!({"server_group": {"policies": ["affinity"]}}),
        json!({"nope": {}}),
    ] {
        let (s, v) = cloud
            .post(&format!("{C}/os-server-groups"), &t1, body)
            .await;
        fault(s, &v, 400, "badRequest");
    }
    let (s, v) = at(&cloud, Method::POST, &format!("{C}/os-server-groups"), &t1, "2.64",
        Some(json!({"server_group": {"name": "db", "policy": "anti-affinity", "rules": {"max_server_per_host": 2}}}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let g = &v["server_group"];
    assert_eq!(g["policy"], "anti-affinity");
    assert_eq!(g["rules"], json!({"max_server_per_host": 2}));
    assert_eq!(g["project_id"], p1.as_str());
    assert!(g.get("policies").is_none() && g.get("metadata").is_none());
    let (s, v) = at(&cloud, Method::POST, &format!("{C}/os-server-groups"), &t1, "2.64",
        Some(json!({"server_group": {"name": "db", "policy": "affinity", "rules": {"max_server_per_host": 2}}}))).await;
    fault(s, &v, 400, "badRequest");

    let (_, v) = cloud.get(&format!("{C}/os-server-groups"), &t1).await;
    assert_eq!(v["server_groups"].as_array().unwrap().len(), 2);
    let (_, v) = cloud
        .get(&format!("{C}/os-server-groups?all_projects=True"), &t2)
        .await;
    assert_eq!(v["server_groups"], json!([]));
    let (_, v) = cloud
        .get(
            &format!("{C}/os-server-groups?all_projects=True&limit=1"),
            &admin,
        )
        .await;
    assert_eq!(v["server_groups"].as_array().unwrap().len(), 1);
    let (s, v) = cloud.get(&format!("{C}/os-server-groups/{id}"), &t2).await;
    fault(s, &v, 404, "itemNotFound");
    let (s, _) = cloud.get(&format!("{C}/os-server-groups/{id}"), &t1).await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = cloud.get(&format!("{C}/limits"), &t1).await;
    assert_eq!(v["limits"]["absolute"]["totalServerGroupsUsed"], 2);

    // Quota: server_groups = 2 for p1.
    let (s, _, _) = cloud
        .call(
            Method::PUT,
            &format!("{C}/os-quota-sets/{p1}"),
            Some(&admin),
            Some(json!({"quota_set": {"server_groups": 2}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = cloud
        .post(
            &format!("{C}/os-server-groups"),
            &t1,
            json!({"server_group": {"name": "third", "policies": ["affinity"]}}),
        )
        .await;
    fault(s, &v, 403, "forbidden");
    assert_eq!(
        cloud
            .delete(&format!("{C}/os-server-groups/{id}"), &t2)
            .await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        cloud
            .delete(&format!("{C}/os-server-groups/{id}"), &t1)
            .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        cloud
            .delete(&format!("{C}/os-server-groups/{id}"), &t1)
            .await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn simple_tenant_usage() {
    accept_through(EXACT_MAX_WITHOUT_SERVERS);
    let cloud = Cloud::new(Preset::Default);
    let admin = cloud.admin().await;
    let (p1, t1) = member(&cloud, &admin, "use1").await;
    let (p2, t2) = member(&cloud, &admin, "use2").await;
    cloud
        .state
        .services
        .compute
        .set_server_directory(Arc::new(Fake {
            node: "n1".into(),
            project: p1.clone(),
        }));
    let w = "start=2020-01-01T00:00:00&end=2020-01-01T04:00:00";
    let (s, v) = cloud
        .get(&format!("{C}/os-simple-tenant-usage?{w}"), &admin)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let t = &v["tenant_usages"][0];
    assert_eq!(t["tenant_id"], p1.as_str());
    assert_eq!(t["total_hours"], 5.0);
    assert_eq!(t["total_vcpus_usage"], 10.0);
    assert_eq!(t["start"], "2020-01-01T00:00:00.000000");
    assert!(t.get("server_usages").is_none());
    let (_, v) = cloud
        .get(
            &format!("{C}/os-simple-tenant-usage?{w}&detailed=1"),
            &admin,
        )
        .await;
    let su = &v["tenant_usages"][0]["server_usages"];
    assert_eq!(su[0]["instance_id"], "a");
    assert_eq!(su[0]["hours"], 2.0);
    assert_eq!(su[0]["ended_at"], "2020-01-01T02:00:00.000000");
    assert_eq!(su[1]["ended_at"], Value::Null);
    let (s, v) = cloud
        .get(&format!("{C}/os-simple-tenant-usage?{w}"), &t1)
        .await;
    fault(s, &v, 403, "forbidden");
    let (s, v) = cloud
        .get(&format!("{C}/os-simple-tenant-usage/{p1}?{w}"), &t1)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["tenant_usage"]["server_usages"].as_array().unwrap().len(),
        2
    );
    let (s, v) = cloud
        .get(&format!("{C}/os-simple-tenant-usage/{p1}?{w}"), &t2)
        .await;
    fault(s, &v, 403, "forbidden");
    let (s, v) = cloud
        .get(&format!("{C}/os-simple-tenant-usage/{p2}?{w}"), &t2)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, json!({"tenant_usage": {}}));
    let (s, v) = cloud
        .get(
            &format!(
                "{C}/os-simple-tenant-usage?start=2020-01-02T00:00:00&end=2020-01-01T00:00:00"
            ),
            &admin,
        )
        .await;
    fault(s, &v, 400, "badRequest");
    let (s, v) = cloud
        .get(
            &format!("{C}/os-simple-tenant-usage?start=yesterday"),
            &admin,
        )
        .await;
    fault(s, &v, 400, "badRequest");
    // 2.40 paging by instance.
    let (s, v) = at(
        &cloud,
        Method::GET,
        &format!("{C}/os-simple-tenant-usage?{w}&detailed=1&limit=1"),
        &admin,
        "2.40",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["tenant_usages"][0]["total_hours"], 2.0);
    let next = v["tenant_usages_links"][0]["href"].as_str().unwrap();
    assert!(next.contains("marker=a"), "{next}");
    let (_, v) = at(
        &cloud,
        Method::GET,
        &format!("{C}/os-simple-tenant-usage?{w}&detailed=1&limit=1&marker=a"),
        &admin,
        "2.40",
        None,
    )
    .await;
    assert_eq!(
        v["tenant_usages"][0]["server_usages"][0]["instance_id"],
        "b"
    );
}
