//! Every compute response kiln owns outside servers, checked against the Nova
//! API reference's shapes at 2.1 and at
//! [`EXACT_MAX_WITHOUT_SERVERS`] (schemas in `tests/schemas/compute/`).
#![allow(clippy::unwrap_used)]

mod common;
mod schema_support;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use common::Cloud;
use kiln_controller::compute::nodes::Registration;
use kiln_controller::compute::usage::{ServerDirectory, ServerRef, UsageRecord};
use kiln_controller::error::ApiResult;
use kiln_controller::identity::compliance::Preset;
use kiln_controller::microversion::{accept_through, EXACT_MAX_WITHOUT_SERVERS};
use schema_support::check;
use serde_json::{json, Value};

const C: &str = "/compute/v2.1";
const NEW: &str = "2.96";

struct Cx {
    cloud: Cloud,
    admin: String,
}

impl Cx {
    async fn call(
        &self,
        m: Method,
        path: &str,
        mv: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let hdr = format!("compute {mv}");
        let (s, _, v) = self
            .cloud
            .raw(
                m,
                &format!("{C}{path}"),
                Some(&self.admin),
                body.map(|b| b.to_string()),
                &[("OpenStack-API-Version", hdr.as_str())],
            )
            .await;
        (s, v)
    }

    async fn ok(
        &self,
        m: Method,
        path: &str,
        mv: &str,
        body: Option<Value>,
        schema: &str,
    ) -> Value {
        let (s, v) = self.call(m, path, mv, body).await;
        assert!(s.is_success(), "{path} at {mv}: {s} {v}");
        check("compute", schema, &v);
        v
    }

    async fn get(&self, path: &str, mv: &str, schema: &str) -> Value {
        self.ok(Method::GET, path, mv, None, schema).await
    }
}

struct OneServer(String);

impl ServerDirectory for OneServer {
    fn servers_on_node(&self, _: &str) -> ApiResult<Vec<ServerRef>> {
        Ok(vec![ServerRef {
            uuid: "22222222-2222-2222-2222-222222222222".into(),
            name: "s".into(),
        }])
    }
    fn usage_records(&self, _: Option<&str>, _: i64, _: i64) -> ApiResult<Vec<UsageRecord>> {
        Ok(vec![UsageRecord {
            instance_id: "22222222-2222-2222-2222-222222222222".into(),
            name: "s".into(),
            tenant_id: self.0.clone(),
            flavor: "m1.tiny".into(),
            vcpus: 1,
            memory_mb: 512,
            local_gb: 1,
            started_at: 1_577_836_800_000_000,
            ended_at: None,
            state: "active".into(),
        }])
    }
}

async fn setup() -> Cx {
    accept_through(EXACT_MAX_WITHOUT_SERVERS);
    let cloud = Cloud::new(Preset::Default);
    let admin = cloud.admin().await;
    cloud
        .state
        .services
        .compute
        .register_node(Registration {
            id: "n1".into(),
            host: "n1.example".into(),
            az: "nova".into(),
            vcpus: 4,
            ram_mb: 8192,
            disk_gb: 100,
        })
        .unwrap();
    Cx { cloud, admin }
}

#[tokio::test]
async fn versions_and_faults() {
    let cx = setup().await;
    let (_, _, v) = cx.cloud.call(Method::GET, "/compute/", None, None).await;
    check("compute", "versions", &v);
    let (_, _, v) = cx
        .cloud
        .call(Method::GET, "/compute/v2.1/", None, None)
        .await;
    check("compute", "version", &v);
    let (s, v) = cx.call(Method::GET, "/flavors/nope", "2.1", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    check("compute", "fault", &v);
    let (s, v) = cx.call(Method::GET, "/flavors", "2.97", None).await;
    assert_eq!(s, StatusCode::NOT_ACCEPTABLE);
    check("compute", "fault", &v);
}

#[tokio::test]
async fn flavors_keypairs_limits_quotas_zones() {
    let cx = setup().await;
    for mv in ["2.1", NEW] {
        cx.get("/flavors", mv, &format!("flavors_list_{mv}")).await;
        cx.get("/flavors?limit=1", mv, &format!("flavors_list_{mv}"))
            .await;
        cx.get("/flavors/detail", mv, &format!("flavors_detail_{mv}"))
            .await;
        cx.get("/flavors/1", mv, &format!("flavor_{mv}")).await;
        let id = format!("f{}", mv.replace('.', ""));
        let mut f = json!({"name": id, "id": id, "ram": 256, "vcpus": 1, "disk": 1, "swap": 0});
        if mv == NEW {
            f["description"] = json!("small");
        }
        cx.ok(
            Method::POST,
            "/flavors",
            mv,
            Some(json!({"flavor": f})),
            &format!("flavor_{mv}"),
        )
        .await;
        cx.ok(
            Method::POST,
            &format!("/flavors/{id}/os-extra_specs"),
            mv,
            Some(json!({"extra_specs": {"hw:cpu_policy": "shared"}})),
            "flavor_extra_specs",
        )
        .await;
        cx.get(
            &format!("/flavors/{id}/os-extra_specs"),
            mv,
            "flavor_extra_specs",
        )
        .await;
        let v = cx
            .get(&format!("/flavors/{id}"), mv, &format!("flavor_{mv}"))
            .await;
        if mv == NEW {
            assert_eq!(v["flavor"]["extra_specs"]["hw:cpu_policy"], "shared");
            assert_eq!(v["flavor"]["swap"], 0);
            cx.ok(
                Method::PUT,
                &format!("/flavors/{id}"),
                mv,
                Some(json!({"flavor": {"description": "changed"}})),
                &format!("flavor_{mv}"),
            )
            .await;
        }
        let p = json!({"name": format!("p{id}"), "id": format!("p{id}"), "ram": 256, "vcpus": 1, "disk": 1, "os-flavor-access:is_public": false});
        cx.ok(
            Method::POST,
            "/flavors",
            mv,
            Some(json!({"flavor": p})),
            &format!("flavor_{mv}"),
        )
        .await;
        cx.ok(
            Method::POST,
            &format!("/flavors/p{id}/action"),
            mv,
            Some(json!({"addTenantAccess": {"tenant": "someproject"}})),
            "flavor_access",
        )
        .await;
        cx.get(
            &format!("/flavors/p{id}/os-flavor-access"),
            mv,
            "flavor_access",
        )
        .await;

        let k = format!("k{}", mv.replace('.', ""));
        let pk =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti x";
        cx.ok(
            Method::POST,
            "/os-keypairs",
            mv,
            Some(json!({"keypair": {"name": k, "public_key": pk}})),
            &format!("keypair_create_{mv}"),
        )
        .await;
        cx.get("/os-keypairs", mv, &format!("keypairs_{mv}")).await;
        cx.get(&format!("/os-keypairs/{k}"), mv, &format!("keypair_{mv}"))
            .await;
        cx.get("/limits", mv, &format!("limits_{mv}")).await;
        let (p, _) = (cx.cloud.project(&cx.admin, &format!("qp{k}")).await, ());
        cx.get(
            &format!("/os-quota-sets/{p}"),
            mv,
            &format!("quota_set_{mv}"),
        )
        .await;
        cx.get(
            &format!("/os-quota-sets/{p}/defaults"),
            mv,
            &format!("quota_set_{mv}"),
        )
        .await;
        cx.get(
            &format!("/os-quota-sets/{p}/detail"),
            mv,
            &format!("quota_set_detail_{mv}"),
        )
        .await;
        cx.ok(
            Method::PUT,
            &format!("/os-quota-sets/{p}"),
            mv,
            Some(json!({"quota_set": {"cores": 30}})),
            &format!("quota_set_update_{mv}"),
        )
        .await;
        cx.get("/os-availability-zone", mv, "availability_zones")
            .await;
        cx.get(
            "/os-availability-zone/detail",
            mv,
            "availability_zones_detail",
        )
        .await;
    }
    // Generated keys exist until 2.91; 2.92 refuses them.
    cx.ok(
        Method::POST,
        "/os-keypairs",
        "2.91",
        Some(json!({"keypair": {"name": "gen"}})),
        "keypair_create_generated_2.91",
    )
    .await;
    let (s, _) = cx
        .call(
            Method::POST,
            "/os-keypairs",
            NEW,
            Some(json!({"keypair": {"name": "gen2"}})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Keypair paging (2.35) links.
    let v = cx.get("/os-keypairs?limit=1", NEW, "keypairs_2.96").await;
    assert!(v["keypairs_links"].is_array(), "{v}");
}

#[tokio::test]
async fn services_hypervisors_groups_usage() {
    let cx = setup().await;
    let p = cx.cloud.project(&cx.admin, "usagep").await;
    cx.cloud
        .state
        .services
        .compute
        .set_server_directory(Arc::new(OneServer(p.clone())));
    for mv in ["2.1", NEW] {
        cx.get("/os-services", mv, &format!("services_{mv}")).await;
        cx.get("/os-hypervisors", mv, &format!("hypervisors_{mv}"))
            .await;
        let v = cx
            .get(
                "/os-hypervisors/detail",
                mv,
                &format!("hypervisors_detail_{mv}"),
            )
            .await;
        let id = v["hypervisors"][0]["id"]
            .to_string()
            .trim_matches('"')
            .to_string();
        cx.get(
            &format!("/os-hypervisors/{id}"),
            mv,
            &format!("hypervisor_{mv}"),
        )
        .await;
        let body = if mv == NEW {
            json!({"server_group": {"name": "g", "policy": "anti-affinity", "rules": {"max_server_per_host": 3}}})
        } else {
            json!({"server_group": {"name": "g", "policies": ["affinity"]}})
        };
        let g = cx
            .ok(
                Method::POST,
                "/os-server-groups",
                mv,
                Some(body),
                &format!("server_group_{mv}"),
            )
            .await;
        let gid = g["server_group"]["id"].as_str().unwrap().to_string();
        cx.get(
            &format!("/os-server-groups/{gid}"),
            mv,
            &format!("server_group_{mv}"),
        )
        .await;
        cx.get(
            "/os-server-groups?all_projects=true",
            mv,
            &format!("server_groups_{mv}"),
        )
        .await;
        let w = "start=2020-01-01T00:00:00&end=2020-01-02T00:00:00";
        cx.get(
            &format!("/os-simple-tenant-usage?{w}"),
            mv,
            &format!("usages_{mv}"),
        )
        .await;
        cx.get(
            &format!("/os-simple-tenant-usage?{w}&detailed=1"),
            mv,
            &format!("usages_{mv}"),
        )
        .await;
        cx.get(
            &format!("/os-simple-tenant-usage/{p}?{w}"),
            mv,
            &format!("usage_{mv}"),
        )
        .await;
        cx.get(
            &format!("/os-simple-tenant-usage/nobody?{w}"),
            mv,
            &format!("usage_{mv}"),
        )
        .await;
    }
    cx.get(
        "/os-hypervisors?with_servers=true&limit=1",
        NEW,
        "hypervisors_2.96",
    )
    .await;
    cx.get(
        "/os-hypervisors/detail?with_servers=true",
        NEW,
        "hypervisors_detail_2.96",
    )
    .await;
    cx.get(
        "/os-simple-tenant-usage?start=2020-01-01T00:00:00&end=2020-01-02T00:00:00&limit=1",
        NEW,
        "usages_2.96",
    )
    .await;
    cx.get(
        "/os-hypervisors/statistics",
        "2.1",
        "hypervisor_statistics_2.1",
    )
    .await;
    let v = cx.get("/os-hypervisors", "2.1", "hypervisors_2.1").await;
    let id = v["hypervisors"][0]["id"].as_u64().unwrap();
    cx.get(
        &format!("/os-hypervisors/{id}/uptime"),
        "2.1",
        "hypervisor_uptime_2.1",
    )
    .await;
    let body = json!({"host": "n1.example", "binary": "nova-compute", "disabled_reason": "r"});
    cx.ok(
        Method::PUT,
        "/os-services/disable-log-reason",
        "2.1",
        Some(body),
        "service_action_2.1",
    )
    .await;
    let body = json!({"host": "n1.example", "binary": "nova-compute"});
    cx.ok(
        Method::PUT,
        "/os-services/enable",
        "2.1",
        Some(body),
        "service_action_2.1",
    )
    .await;
    let body = json!({"host": "n1.example", "binary": "nova-compute", "forced_down": false});
    cx.ok(
        Method::PUT,
        "/os-services/force-down",
        "2.11",
        Some(body),
        "service_force_down_2.11",
    )
    .await;
    let v = cx
        .get("/os-services?binary=nova-compute", NEW, "services_2.96")
        .await;
    let sid = v["services"][0]["id"].as_str().unwrap().to_string();
    cx.ok(
        Method::PUT,
        &format!("/os-services/{sid}"),
        NEW,
        Some(json!({"status": "disabled", "disabled_reason": "x"})),
        "service_update_2.96",
    )
    .await;
}

/// Servers: create, list, show, detail, update, rebuild, createImage, console
/// output, tags, metadata and instance actions at 2.1, 2.47, 2.79 and the max.
#[tokio::test]
async fn servers_at_each_version() {
    use common::servers::{add_image, fake_node, register, report, settle, IMAGE};
    use kiln_controller::protocol::VmState;
    let cloud = Cloud::new(Preset::Default);
    add_image(&cloud);
    let admin = cloud.admin().await;
    let url = fake_node().await;
    register(&cloud, "s1", 64 * 1024, &url).await;
    let cx = Cx { cloud, admin };
    for mv in ["2.1", "2.47", "2.79", NEW] {
        let mut server = json!({"name": format!("vm-{mv}"), "imageRef": IMAGE, "flavorRef": "1"});
        if mv != "2.1" {
            server["networks"] = json!("none");
        }
        let v = cx
            .ok(
                Method::POST,
                "/servers",
                mv,
                Some(json!({"server": server.clone()})),
                "server_create",
            )
            .await;
        let id = v["server"]["id"].as_str().unwrap().to_string();
        server["return_reservation_id"] = json!(true);
        cx.ok(
            Method::POST,
            "/servers",
            mv,
            Some(json!({"server": server})),
            "server_create_reservation",
        )
        .await;
        report(&cx.cloud, "s1", &id, VmState::Active, None, "spawn").await;
        let s = format!("/servers/{id}");
        cx.get("/servers", mv, "servers_list").await;
        cx.get("/servers?limit=1", mv, "servers_list").await;
        cx.get(&s, mv, &format!("server_{mv}")).await;
        cx.get("/servers/detail", mv, &format!("servers_detail_{mv}"))
            .await;
        let body = json!({"server": {"name": format!("vm-{mv}-b")}});
        cx.ok(
            Method::PUT,
            &s,
            mv,
            Some(body),
            &format!("server_update_{mv}"),
        )
        .await;
        cx.ok(
            Method::POST,
            &format!("{s}/metadata"),
            mv,
            Some(json!({"metadata": {"k": "v"}})),
            "server_metadata",
        )
        .await;
        if mv != "2.1" {
            cx.ok(
                Method::PUT,
                &format!("{s}/tags"),
                mv,
                Some(json!({"tags": ["a", "b"]})),
                "server_tags",
            )
            .await;
            cx.ok(
                Method::POST,
                &format!("{s}/action"),
                mv,
                Some(json!({"createImage": {"name": "snap"}})),
                "server_create_image_2.45",
            )
            .await;
            report(&cx.cloud, "s1", &id, VmState::Active, None, "snapshot").await;
        }
        let (st, v) = cx
            .call(
                Method::POST,
                &format!("{s}/action"),
                mv,
                Some(json!({"os-getConsoleOutput": {"length": 10}})),
            )
            .await;
        // The fake node answers no console body: the shape is checked when
        // there is one, and a failure is Nova's 409, never a 5xx.
        if st.is_success() {
            check("compute", "server_console_output", &v);
        } else {
            assert_eq!(st, StatusCode::CONFLICT, "{v}");
            check("compute", "fault", &v);
        }
        cx.ok(
            Method::POST,
            &format!("{s}/action"),
            mv,
            Some(json!({"rebuild": {"imageRef": IMAGE}})),
            &format!("server_rebuild_{mv}"),
        )
        .await;
        settle().await;
        report(&cx.cloud, "s1", &id, VmState::Active, None, "rebuild").await;
        let v = cx
            .get(
                &format!("{s}/os-instance-actions"),
                mv,
                &format!("instance_actions_{mv}"),
            )
            .await;
        let req = v["instanceActions"][0]["request_id"]
            .as_str()
            .unwrap()
            .to_string();
        cx.get(
            &format!("{s}/os-instance-actions/{req}"),
            mv,
            &format!("instance_action_{mv}"),
        )
        .await;
    }
}
