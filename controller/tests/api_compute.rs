//! Nova v2.1 through `app()`: version documents, microversion negotiation, Nova's
//! fault shape, flavors (manage, extra specs, access), keypairs (import, generate,
//! quota), limits, availability zones and quota sets.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::Cloud;
use kiln_controller::identity::compliance::Preset;
use serde_json::{json, Value};

const C: &str = "/compute/v2.1";

/// Asserts Nova's fault shape `{"<name>": {"code", "message"}}`.
fn assert_fault(status: StatusCode, body: &Value, code: u16, name: &str) {
    assert_eq!(status.as_u16(), code, "{body}");
    assert_eq!(body[name]["code"], code, "{body}");
    assert!(body[name]["message"].is_string(), "{body}");
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
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

#[tokio::test]
async fn versions_and_microversions() {
    let cloud = Cloud::new(Preset::Default);
    let (s, _, v) = cloud.call(Method::GET, "/compute/", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let v21 = &v["versions"][1];
    assert_eq!(v21["id"], "v2.1");
    assert_eq!(v21["min_version"], "2.1");
    assert_eq!(v21["links"][0]["href"], "http://kiln.test/compute/v2.1/");
    let (s, _, v) = cloud.call(Method::GET, "/compute/v2.1/", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["version"]["status"], "CURRENT");
    assert_eq!(
        v["version"]["version"],
        kiln_controller::microversion::MAX.to_string()
    );

    let admin = cloud.admin().await;
    let (s, h, _) = cloud
        .raw(
            Method::GET,
            &format!("{C}/flavors"),
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["openstack-api-version"], "compute 2.1");
    assert_eq!(h["x-openstack-nova-api-version"], "2.1");
    assert!(h["vary"]
        .to_str()
        .unwrap()
        .contains("X-OpenStack-Nova-API-Version"));
    let (s, h, _) = cloud
        .raw(
            Method::GET,
            &format!("{C}/flavors"),
            Some(&admin),
            None,
            &[("OpenStack-API-Version", "compute latest")],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        h["openstack-api-version"],
        format!("compute {}", kiln_controller::microversion::MAX).as_str()
    );
    let (s, _, v) = cloud
        .raw(
            Method::GET,
            &format!("{C}/flavors"),
            Some(&admin),
            None,
            &[("OpenStack-API-Version", "compute 2.999")],
        )
        .await;
    assert_eq!(s, StatusCode::NOT_ACCEPTABLE);
    assert!(
        v["computeFault"]["message"]
            .as_str()
            .unwrap()
            .contains("not supported"),
        "{v}"
    );
    let (s, _, v) = cloud
        .raw(
            Method::GET,
            &format!("{C}/flavors"),
            Some(&admin),
            None,
            &[("X-OpenStack-Nova-API-Version", "abc")],
        )
        .await;
    assert_fault(s, &v, 400, "badRequest");

    // Nova's fault shape for 401, 404, 405 and the resources not built yet (501).
    let (s, _, v) = cloud
        .call(Method::GET, &format!("{C}/flavors"), None, None)
        .await;
    assert_fault(s, &v, 401, "unauthorized");
    let (s, v) = cloud.get(&format!("{C}/nothing"), &admin).await;
    assert_fault(s, &v, 404, "itemNotFound");
    let (s, v) = cloud.get(&format!("{C}/os-aggregates"), &admin).await;
    assert_fault(s, &v, 501, "notImplemented");
    let (s, _, v) = cloud
        .call(
            Method::PATCH,
            &format!("{C}/flavors"),
            Some(&admin),
            Some(json!({})),
        )
        .await;
    assert_fault(s, &v, 405, "badMethod");
}

#[tokio::test]
async fn flavors_default_manage_specs_access() {
    let cloud = Cloud::new(Preset::Default);
    let admin = cloud.admin().await;
    let (_p1, t1) = member(&cloud, &admin, "p1").await;
    let (s, v) = cloud.get(&format!("{C}/flavors/detail"), &t1).await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = v["flavors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["m1.tiny", "m1.small", "m1.medium", "m1.large", "m1.xlarge"]
    );
    let tiny = &v["flavors"][0];
    let mut keys: Vec<&str> = tiny
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "OS-FLV-DISABLED:disabled",
            "OS-FLV-EXT-DATA:ephemeral",
            "disk",
            "id",
            "links",
            "name",
            "os-flavor-access:is_public",
            "ram",
            "rxtx_factor",
            "swap",
            "vcpus"
        ]
    );
    assert_eq!(tiny["swap"], "");
    assert_eq!(tiny["ram"], 512);
    assert_eq!(
        tiny["links"][0]["href"],
        "http://kiln.test/compute/v2.1/flavors/1"
    );
    let (_, v) = cloud.get(&format!("{C}/flavors"), &t1).await;
    assert_eq!(v["flavors"][0].as_object().unwrap().len(), 3);
    let (_, v) = cloud
        .get(&format!("{C}/flavors?minRam=4096&limit=2"), &t1)
        .await;
    assert_eq!(v["flavors"].as_array().unwrap().len(), 2);
    assert!(v["flavors_links"][0]["href"]
        .as_str()
        .unwrap()
        .contains("marker=4"));

    // Manage: admin only; duplicates 409; bad input 400; name in an id slot 404.
    let body = json!({"flavor": {"name": "k1.private", "ram": 256, "vcpus": 1, "disk": 0, "id": "k1", "os-flavor-access:is_public": false, "swap": 128}});
    let (s, v) = cloud.post(&format!("{C}/flavors"), &t1, body.clone()).await;
    assert_fault(s, &v, 403, "forbidden");
    let (s, v) = cloud
        .post(&format!("{C}/flavors"), &admin, body.clone())
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["flavor"]["swap"], 128);
    let (s, v) = cloud.post(&format!("{C}/flavors"), &admin, body).await;
    assert_fault(s, &v, 409, "conflictingRequest");
    for bad in [
        json!({"flavor": {"name": "x", "ram": 0, "vcpus": 1, "disk": 0}}),
        json!({"flavor": {"name": "x", "ram": 1, "disk": 0}}),
        json!({"flavor": {"name": "", "ram": 1, "vcpus": 1, "disk": 0}}),
        json!({"flavor": {"name": "x", "ram": "lots", "vcpus": 1, "disk": 0}}),
        json!({"flavor": {"name": "x", "ram": 1, "vcpus": 1, "disk": 0, "description": "at 2.55"}}),
        json!({"nope": {}}),
    ] {
        let (s, v) = cloud
            .post(&format!("{C}/flavors"), &admin, bad.clone())
            .await;
        assert_fault(s, &v, 400, "badRequest");
    }
    let (s, v) = cloud.get(&format!("{C}/flavors/m1.tiny"), &t1).await;
    assert_fault(s, &v, 404, "itemNotFound");

    // A private flavor is invisible to p1 until shared.
    let (s, _) = cloud.get(&format!("{C}/flavors/k1"), &t1).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let p1 = _p1.clone();
    let (s, v) = cloud
        .post(
            &format!("{C}/flavors/k1/action"),
            &admin,
            json!({"addTenantAccess": {"tenant": p1}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["flavor_access"],
        json!([{"flavor_id": "k1", "tenant_id": p1}])
    );
    let (s, v) = cloud
        .post(
            &format!("{C}/flavors/k1/action"),
            &admin,
            json!({"addTenantAccess": {"tenant": p1}}),
        )
        .await;
    assert_fault(s, &v, 409, "conflictingRequest");
    let (s, _) = cloud.get(&format!("{C}/flavors/k1"), &t1).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = cloud
        .get(&format!("{C}/flavors/1/os-flavor-access"), &admin)
        .await;
    assert_fault(s, &v, 404, "itemNotFound");

    // Extra specs.
    let (s, v) = cloud
        .post(
            &format!("{C}/flavors/k1/os-extra_specs"),
            &admin,
            json!({"extra_specs": {"hw:cpu_policy": "dedicated", "n": 1}}),
        )
        .await;
    assert_eq!(
        (s, v["extra_specs"]["n"].clone()),
        (StatusCode::OK, json!("1"))
    );
    let (s, v) = cloud
        .post(
            &format!("{C}/flavors/k1/os-extra_specs"),
            &t1,
            json!({"extra_specs": {"a": "b"}}),
        )
        .await;
    assert_fault(s, &v, 403, "forbidden");
    // From 2.86 known specs are validated: hw:vif_multiqueue_enabled is a
    // boolean (accepted as given before).
    let mq = |v: &str| json!({"extra_specs": {"hw:vif_multiqueue_enabled": v}});
    let specs = format!("{C}/flavors/k1/os-extra_specs");
    let (s, v) = cloud
        .at_version(
            "compute 2.85",
            Method::POST,
            &specs,
            &admin,
            Some(mq("maybe")),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = cloud
        .at_version(
            "compute 2.86",
            Method::POST,
            &specs,
            &admin,
            Some(mq("maybe")),
        )
        .await;
    assert_fault(s, &v, 400, "badRequest");
    let one = format!("{specs}/hw:vif_multiqueue_enabled");
    let body = json!({"hw:vif_multiqueue_enabled": "2"});
    let (s, v) = cloud
        .at_version("compute 2.86", Method::PUT, &one, &admin, Some(body))
        .await;
    assert_fault(s, &v, 400, "badRequest");
    let (s, v) = cloud
        .at_version(
            "compute 2.86",
            Method::POST,
            &specs,
            &admin,
            Some(mq("True")),
        )
        .await;
    assert_eq!(
        (s, v["extra_specs"]["hw:vif_multiqueue_enabled"].clone()),
        (StatusCode::OK, json!("True"))
    );
    let (_, _, v) = cloud
        .call(
            Method::PUT,
            &format!("{C}/flavors/k1/os-extra_specs/n"),
            Some(&admin),
            Some(json!({"n": "2"})),
        )
        .await;
    assert_eq!(v, json!({"n": "2"}));
    let (s, _, v) = cloud
        .call(
            Method::PUT,
            &format!("{C}/flavors/k1/os-extra_specs/n"),
            Some(&admin),
            Some(json!({"m": "2"})),
        )
        .await;
    assert_fault(s, &v, 400, "badRequest");
    let (_, v) = cloud
        .get(&format!("{C}/flavors/k1/os-extra_specs/hw:cpu_policy"), &t1)
        .await;
    assert_eq!(v, json!({"hw:cpu_policy": "dedicated"}));
    assert_eq!(
        cloud
            .delete(&format!("{C}/flavors/k1/os-extra_specs/n"), &admin)
            .await,
        StatusCode::OK
    );
    assert_eq!(
        cloud
            .delete(&format!("{C}/flavors/k1/os-extra_specs/n"), &admin)
            .await,
        StatusCode::NOT_FOUND
    );

    assert_eq!(
        cloud.delete(&format!("{C}/flavors/k1"), &t1).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        cloud.delete(&format!("{C}/flavors/k1"), &admin).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        cloud.delete(&format!("{C}/flavors/k1"), &admin).await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn keypairs_import_generate_and_quota() {
    let cloud = Cloud::new(Preset::Default);
    let admin = cloud.admin().await;
    let (p1, t1) = member(&cloud, &admin, "p1").await;
    let (s, v) = cloud
        .post(
            &format!("{C}/os-keypairs"),
            &t1,
            json!({"keypair": {"name": "gen"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let kp = &v["keypair"];
    assert!(kp["private_key"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    assert!(kp["public_key"]
        .as_str()
        .unwrap()
        .starts_with("ssh-ed25519 "));
    assert_eq!(kp["fingerprint"].as_str().unwrap().len(), 47);
    let pubkey = kp["public_key"].as_str().unwrap().to_string();

    // Import the same public key under another name: same fingerprint, no private key.
    let (s, v) = cloud
        .post(
            &format!("{C}/os-keypairs"),
            &t1,
            json!({"keypair": {"name": "imp", "public_key": pubkey}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["keypair"].get("private_key").is_none());
    assert_eq!(v["keypair"]["fingerprint"], kp["fingerprint"]);

    let (s, v) = cloud
        .post(
            &format!("{C}/os-keypairs"),
            &t1,
            json!({"keypair": {"name": "imp"}}),
        )
        .await;
    assert_fault(s, &v, 409, "conflictingRequest");
    let (s, v) = cloud
        .post(
            &format!("{C}/os-keypairs"),
            &t1,
            json!({"keypair": {"name": "bad", "public_key": "ssh-rsa nonsense"}}),
        )
        .await;
    assert_fault(s, &v, 400, "badRequest");
    let (s, v) = cloud
        .post(
            &format!("{C}/os-keypairs"),
            &t1,
            json!({"keypair": {"name": "x", "type": "ssh"}}),
        )
        .await;
    assert_fault(s, &v, 400, "badRequest");
    let (s, v) = cloud
        .post(
            &format!("{C}/os-keypairs"),
            &t1,
            json!({"keypair": {"name": "a/b"}}),
        )
        .await;
    assert_fault(s, &v, 400, "badRequest");

    let (_, v) = cloud.get(&format!("{C}/os-keypairs"), &t1).await;
    let list = v["keypairs"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["keypair"].as_object().unwrap().len(), 3);
    let (s, v) = cloud.get(&format!("{C}/os-keypairs/gen"), &t1).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["keypair"]["deleted"], false);
    assert!(v["keypair"].get("private_key").is_none());
    assert!(!v["keypair"]["created_at"].as_str().unwrap().ends_with('Z'));
    // Keypairs are per user: the admin does not see p1's.
    let (s, v) = cloud.get(&format!("{C}/os-keypairs/gen"), &admin).await;
    assert_fault(s, &v, 404, "itemNotFound");

    // Quota: key_pairs = 2 for p1 → the third is refused with 403.
    let (s, _, v) = cloud
        .call(
            Method::PUT,
            &format!("{C}/os-quota-sets/{p1}"),
            Some(&admin),
            Some(json!({"quota_set": {"key_pairs": 2}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = cloud
        .post(
            &format!("{C}/os-keypairs"),
            &t1,
            json!({"keypair": {"name": "third"}}),
        )
        .await;
    assert_fault(s, &v, 403, "forbidden");
    assert!(v["forbidden"]["message"]
        .as_str()
        .unwrap()
        .contains("Quota exceeded"));
    assert_eq!(
        cloud.delete(&format!("{C}/os-keypairs/imp"), &t1).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        cloud.delete(&format!("{C}/os-keypairs/imp"), &t1).await,
        StatusCode::NOT_FOUND
    );
    let (s, _) = cloud
        .post(
            &format!("{C}/os-keypairs"),
            &t1,
            json!({"keypair": {"name": "third"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn quotas_limits_and_zones() {
    let cloud = Cloud::new(Preset::Default);
    let admin = cloud.admin().await;
    let (p1, t1) = member(&cloud, &admin, "p1").await;
    let (p2, _t2) = member(&cloud, &admin, "p2").await;
    let (s, v) = cloud.get(&format!("{C}/os-quota-sets/{p1}"), &t1).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["quota_set"]["id"], p1);
    assert_eq!(v["quota_set"]["instances"], 10);
    assert_eq!(v["quota_set"].as_object().unwrap().len(), 15);
    let (s, v) = cloud.get(&format!("{C}/os-quota-sets/{p2}"), &t1).await;
    assert_fault(s, &v, 403, "forbidden");
    let (s, _, v) = cloud
        .call(
            Method::PUT,
            &format!("{C}/os-quota-sets/{p1}"),
            Some(&t1),
            Some(json!({"quota_set": {"instances": 50}})),
        )
        .await;
    assert_fault(s, &v, 403, "forbidden");
    let (s, _, v) = cloud
        .call(
            Method::PUT,
            &format!("{C}/os-quota-sets/{p1}"),
            Some(&admin),
            Some(json!({"quota_set": {"instances": 3, "cores": "7"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["quota_set"]["instances"].clone(),
            v["quota_set"]["cores"].clone()
        ),
        (json!(3), json!(7))
    );
    assert!(v["quota_set"].get("id").is_none());
    for bad in [
        json!({"quota_set": {"bogus": 1}}),
        json!({"quota_set": {"instances": -2}}),
        json!({"x": 1}),
    ] {
        let (s, _, v) = cloud
            .call(
                Method::PUT,
                &format!("{C}/os-quota-sets/{p1}"),
                Some(&admin),
                Some(bad),
            )
            .await;
        assert_fault(s, &v, 400, "badRequest");
    }
    let (_, v) = cloud.get(&format!("{C}/limits"), &t1).await;
    assert_eq!(v["limits"]["absolute"]["maxTotalInstances"], 3);
    assert_eq!(v["limits"]["absolute"]["maxTotalCores"], 7);
    assert_eq!(v["limits"]["rate"], json!([]));
    let (_, v) = cloud
        .get(&format!("{C}/os-quota-sets/{p1}/detail"), &t1)
        .await;
    assert_eq!(
        v["quota_set"]["instances"],
        json!({"in_use": 0, "limit": 3, "reserved": 0})
    );
    let (_, v) = cloud
        .get(&format!("{C}/os-quota-sets/{p1}/defaults"), &t1)
        .await;
    assert_eq!(v["quota_set"]["instances"], 10);
    assert_eq!(
        cloud
            .delete(&format!("{C}/os-quota-sets/{p1}"), &admin)
            .await,
        StatusCode::ACCEPTED
    );
    let (_, v) = cloud.get(&format!("{C}/os-quota-sets/{p1}"), &t1).await;
    assert_eq!(v["quota_set"]["instances"], 10);

    let (_, v) = cloud.get(&format!("{C}/os-availability-zone"), &t1).await;
    assert_eq!(v["availabilityZoneInfo"][0]["zoneName"], "nova");
    let (s, v) = cloud
        .get(&format!("{C}/os-availability-zone/detail"), &t1)
        .await;
    assert_fault(s, &v, 403, "forbidden");
}
