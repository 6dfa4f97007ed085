//! Every compute microversion from 2.1 to the advertised maximum against one
//! server: the exact key set of show, list detail, update and rebuild for an
//! admin and for a project member at each version (the expectation is built
//! here from Nova's version history, independently of the views), and the
//! request rules that change at a boundary (a key introduced at 2.x is a 400
//! below it, a removed one a 400 above).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use axum::http::{HeaderMap, Method, StatusCode};
use common::servers::{add_image, fake_node, register, report, settle, IMAGE};
use common::Cloud;
use kiln_controller::identity::compliance::Preset;
use kiln_controller::microversion::MAX;
use kiln_controller::protocol::VmState;
use serde_json::{json, Value};

const S: &str = "/compute/v2.1/servers";

struct Cx {
    cloud: Cloud,
    admin: String,
    member: String,
}

impl Cx {
    async fn call(
        &self,
        m: Method,
        path: &str,
        token: &str,
        minor: u32,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let hdr = format!("compute 2.{minor}");
        self.cloud
            .raw(
                m,
                path,
                Some(token),
                body.map(|b| b.to_string()),
                &[("OpenStack-API-Version", hdr.as_str())],
            )
            .await
    }

    async fn status(&self, m: Method, path: &str, minor: u32, body: Value) -> (StatusCode, Value) {
        let (s, _, v) = self.call(m, path, &self.admin, minor, Some(body)).await;
        (s, v)
    }
}

async fn setup() -> (Cx, String) {
    let cloud = Cloud::new(Preset::Default);
    add_image(&cloud);
    let admin = cloud.admin().await;
    let url = fake_node().await;
    register(&cloud, "n1", 64 * 1024, &url).await;
    // A project member (not admin) in the admin project sees the same server.
    cloud.user(&admin, "mv-member", "MemberPassword123").await;
    let uid = {
        let (_, v) = cloud.get("/v3/users?name=mv-member", &admin).await;
        v["users"][0]["id"].as_str().unwrap().to_string()
    };
    let pid = {
        let (_, v) = cloud.get("/v3/projects?name=admin", &admin).await;
        v["projects"][0]["id"].as_str().unwrap().to_string()
    };
    cloud.grant(&admin, &pid, &uid, "member").await;
    let member = cloud
        .login("mv-member", "MemberPassword123", Some("admin"))
        .await;
    let cx = Cx {
        cloud,
        admin,
        member,
    };
    let (s, v) = cx
        .status(
            Method::POST,
            S,
            1,
            json!({"server": {"name": "walker", "imageRef": IMAGE, "flavorRef": "1"}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let id = v["server"]["id"].as_str().unwrap().to_string();
    report(&cx.cloud, "n1", &id, VmState::Active, None, "spawn").await;
    (cx, id)
}

#[derive(Clone, Copy, PartialEq)]
enum Call {
    Show,
    Detail,
    Update,
    Rebuild,
}

/// The keys Nova's server view has at `2.minor` for `call` (admin or not),
/// for an ACTIVE server with a security group — from the version history.
fn expected(minor: u32, call: Call, admin: bool) -> BTreeSet<&'static str> {
    let mut k: BTreeSet<&str> = [
        "id",
        "name",
        "status",
        "tenant_id",
        "user_id",
        "metadata",
        "hostId",
        "image",
        "flavor",
        "created",
        "updated",
        "addresses",
        "accessIPv4",
        "accessIPv6",
        "links",
        "OS-DCF:diskConfig",
        "progress",
    ]
    .into();
    let everything = matches!(call, Call::Show | Call::Detail) || minor >= 75;
    if everything {
        k.extend([
            "OS-EXT-AZ:availability_zone",
            "config_drive",
            "key_name",
            "OS-SRV-USG:launched_at",
            "OS-SRV-USG:terminated_at",
            "security_groups",
            "OS-EXT-STS:task_state",
            "OS-EXT-STS:vm_state",
            "OS-EXT-STS:power_state",
            "os-extended-volumes:volumes_attached",
        ]);
        if admin {
            k.extend([
                "OS-EXT-SRV-ATTR:host",
                "OS-EXT-SRV-ATTR:instance_name",
                "OS-EXT-SRV-ATTR:hypervisor_hostname",
            ]);
            if minor >= 3 {
                k.extend([
                    "OS-EXT-SRV-ATTR:reservation_id",
                    "OS-EXT-SRV-ATTR:launch_index",
                    "OS-EXT-SRV-ATTR:hostname",
                    "OS-EXT-SRV-ATTR:kernel_id",
                    "OS-EXT-SRV-ATTR:ramdisk_id",
                    "OS-EXT-SRV-ATTR:root_device_name",
                ]);
                if call != Call::Rebuild {
                    k.insert("OS-EXT-SRV-ATTR:user_data");
                }
            }
            if minor >= 16 {
                k.insert("host_status");
            }
        }
    }
    if call == Call::Rebuild {
        k.insert("adminPass");
        if minor >= 54 {
            k.insert("key_name");
        }
        if minor >= 57 {
            k.insert("user_data");
        }
    }
    for (min, key) in [
        (9, "locked"),
        (19, "description"),
        (26, "tags"),
        (63, "trusted_image_certificates"),
        (73, "locked_reason"),
        (90, "OS-EXT-SRV-ATTR:hostname"),
        (96, "pinned_availability_zone"),
    ] {
        if minor >= min {
            k.insert(key);
        }
    }
    if minor >= 71 && call != Call::Detail {
        k.insert("server_groups");
    }
    k
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

#[tokio::test]
async fn every_version_shows_exactly_its_keys() {
    let (cx, id) = setup().await;
    let path = format!("{S}/{id}");
    for minor in 1..=MAX.minor {
        for (token, admin) in [(&cx.admin, true), (&cx.member, false)] {
            let (s, h, v) = cx.call(Method::GET, &path, token, minor, None).await;
            assert_eq!(s, StatusCode::OK, "2.{minor}: {v}");
            assert_eq!(h["openstack-api-version"], format!("compute 2.{minor}"));
            let server = &v["server"];
            assert_eq!(
                keys(server),
                expected(minor, Call::Show, admin),
                "show at 2.{minor} (admin {admin})"
            );
            // The embedded flavor changes shape at 2.47.
            if minor >= 47 {
                assert_eq!(server["flavor"]["original_name"], "m1.tiny", "{server}");
                assert!(server["flavor"].get("id").is_none());
            } else {
                assert_eq!(server["flavor"]["id"], "1");
            }
            let (s, _, v) = cx
                .call(Method::GET, &format!("{S}/detail"), token, minor, None)
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            assert_eq!(
                keys(&v["servers"][0]),
                expected(minor, Call::Detail, admin),
                "detail at 2.{minor} (admin {admin})"
            );
            let (s, _, v) = cx.call(Method::GET, S, token, minor, None).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            assert_eq!(
                keys(&v["servers"][0]),
                ["id", "links", "name"].into(),
                "list at 2.{minor}"
            );
            let (s, _, v) = cx
                .call(
                    Method::PUT,
                    &path,
                    token,
                    minor,
                    Some(json!({"server": {"name": "walker"}})),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            assert_eq!(
                keys(&v["server"]),
                expected(minor, Call::Update, admin),
                "update at 2.{minor} (admin {admin})"
            );
            // Below 2.75 update's addresses lack the OS-EXT-IPS keys; the
            // server has none here, so the map itself is what is checked.
            assert!(v["server"]["addresses"].is_object());
        }
    }
    // Rebuild at each boundary that changes its answer.
    for minor in [1, 3, 53, 54, 56, 57, 74, 75, 89, 90, MAX.minor] {
        let (s, h, v) = cx
            .call(
                Method::POST,
                &format!("{path}/action"),
                &cx.admin,
                minor,
                Some(json!({"rebuild": {"imageRef": IMAGE}})),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "rebuild at 2.{minor}: {v}");
        assert!(h["location"].to_str().unwrap().ends_with(&id));
        let mut want = expected(minor, Call::Rebuild, true);
        // Rebuilding: status REBUILD, which still shows progress.
        assert_eq!(v["server"]["status"], "REBUILD");
        want.insert("progress");
        assert_eq!(keys(&v["server"]), want, "rebuild at 2.{minor}");
        settle().await;
        report(&cx.cloud, "n1", &id, VmState::Active, None, "rebuild").await;
    }
}

#[tokio::test]
async fn request_keys_follow_their_versions() {
    let (cx, id) = setup().await;
    let create = |extra: Value| {
        let mut server = json!({"name": "x", "imageRef": IMAGE, "flavorRef": "1"});
        for (k, v) in extra.as_object().unwrap() {
            server[k] = v.clone();
        }
        json!({"server": server})
    };
    // (key and value, first version that accepts it); one below is a 400.
    let cases = [
        (json!({"description": "d"}), 19),
        (json!({"networks": "none", "tags": ["a"]}), 52),
        (json!({"networks": "none"}), 37),
        (json!({"networks": "none", "hostname": "h1"}), 90),
        (
            json!({"networks": "none", "hostname": "h1.example.com"}),
            94,
        ),
        (
            json!({"networks": "none", "trusted_image_certificates": null}),
            63,
        ),
    ];
    for (extra, from) in cases {
        let body = create(extra.clone());
        let below = if from == 94 { 93 } else { from - 1 };
        let (s, v) = cx.status(Method::POST, S, below, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{extra} at 2.{below}: {v}");
        let (s, v) = cx.status(Method::POST, S, from, body).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{extra} at 2.{from}: {v}");
        let new = v["server"]["id"].as_str().unwrap().to_string();
        let (s, _, _) = cx
            .call(Method::DELETE, &format!("{S}/{new}"), &cx.admin, 1, None)
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }
    // networks becomes required at 2.37; personality goes at 2.57.
    let (s, _) = cx.status(Method::POST, S, 36, create(json!({}))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, v) = cx.status(Method::POST, S, 37, create(json!({}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["badRequest"]["message"]
        .as_str()
        .unwrap()
        .contains("'networks' is a required property"));
    let personality = json!({"networks": "none", "personality": []});
    let (s, _) = cx.status(Method::POST, S, 57, create(personality)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // A device tag on a network: 2.32, not 2.33–2.41, again from 2.42.
    let net = json!({"networks": [{"port": "p", "tag": "t"}]});
    for (minor, ok) in [(31, false), (33, false), (41, false)] {
        let (s, v) = cx.status(Method::POST, S, minor, create(net.clone())).await;
        assert_eq!(s == StatusCode::BAD_REQUEST, !ok, "2.{minor}: {v}");
        assert!(v.to_string().contains("'tag' was unexpected"), "{v}");
    }
    let (_, v) = cx.status(Method::POST, S, 42, create(net)).await;
    assert!(!v.to_string().contains("'tag' was unexpected"), "{v}");
    // hostname: one label at 2.90, not with several servers.
    let two = json!({"networks": "none", "hostname": "h", "max_count": 2});
    let (s, _) = cx.status(Method::POST, S, 90, create(two)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let rename = json!({"server": {"hostname": "renamed"}});
    for (minor, want) in [(89, StatusCode::BAD_REQUEST), (90, StatusCode::OK)] {
        let (s, v) = cx
            .status(Method::PUT, &format!("{S}/{id}"), minor, rename.clone())
            .await;
        assert_eq!(s, want, "2.{minor}: {v}");
    }
    let (_, _, v) = cx
        .call(Method::GET, &format!("{S}/{id}"), &cx.member, 90, None)
        .await;
    assert_eq!(v["server"]["OS-EXT-SRV-ATTR:hostname"], "renamed", "{v}");

    // List filters: changes-before (2.66), locked (2.73), unknown params (2.75).
    let list = |q: &str| format!("{S}?{q}");
    let (s, _, _) = cx
        .call(Method::GET, &list("bogus=1"), &cx.admin, 74, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, v) = cx
        .call(Method::GET, &list("bogus=1"), &cx.admin, 75, None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (_, _, v) = cx
        .call(
            Method::GET,
            &list("changes-before=2000-01-01T00:00:00Z"),
            &cx.admin,
            65,
            None,
        )
        .await;
    assert!(
        !v["servers"].as_array().unwrap().is_empty(),
        "ignored below 2.66"
    );
    let (_, _, v) = cx
        .call(
            Method::GET,
            &list("changes-before=2000-01-01T00:00:00Z"),
            &cx.admin,
            66,
            None,
        )
        .await;
    assert!(v["servers"].as_array().unwrap().is_empty(), "{v}");
    let (s, _, _) = cx
        .call(
            Method::GET,
            &list("changes-since=2001-01-01T00:00:00Z&changes-before=2000-01-01T00:00:00Z"),
            &cx.admin,
            66,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // lock: the reason counts from 2.73.
    let action = format!("{S}/{id}/action");
    let reason = json!({"lock": {"locked_reason": "maintenance"}});
    let (s, _) = cx.status(Method::POST, &action, 73, reason).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (_, _, v) = cx
        .call(Method::GET, &format!("{S}/{id}"), &cx.admin, 73, None)
        .await;
    assert_eq!(v["server"]["locked_reason"], "maintenance", "{v}");
    let (_, _, v) = cx
        .call(Method::GET, &list("locked=true"), &cx.admin, 73, None)
        .await;
    assert_eq!(v["servers"].as_array().unwrap().len(), 1, "{v}");
    let (_, _, v) = cx
        .call(Method::GET, &list("locked=false"), &cx.admin, 73, None)
        .await;
    assert!(v["servers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["id"] != id.as_str()));
    let (s, _) = cx
        .status(Method::POST, &action, 73, json!({"unlock": null}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let bad = json!({"lock": {"locked_reason": "r", "extra": 1}});
    let (s, _) = cx.status(Method::POST, &action, 73, bad).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // rebuild: user_data from 2.57, personality until 2.56.
    let ud = json!({"rebuild": {"imageRef": IMAGE, "user_data": null}});
    let (s, _) = cx.status(Method::POST, &action, 56, ud).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let p = json!({"rebuild": {"imageRef": IMAGE, "personality": []}});
    let (s, _) = cx.status(Method::POST, &action, 57, p).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let d = json!({"rebuild": {"imageRef": IMAGE, "description": "x"}});
    let (s, _) = cx.status(Method::POST, &action, 18, d).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // createImage: Location until 2.44, an image_id body from 2.45.
    let snap = json!({"createImage": {"name": "s"}});
    let (s, h, v) = cx
        .call(Method::POST, &action, &cx.admin, 44, Some(snap.clone()))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert!(h.get("location").is_some());
    assert!(v.is_null(), "{v}");
    report(&cx.cloud, "n1", &id, VmState::Active, None, "snapshot").await;
    let (s, h, v) = cx
        .call(Method::POST, &action, &cx.admin, 45, Some(snap))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert!(h.get("location").is_none());
    assert_eq!(keys(&v), ["image_id"].into());
    report(&cx.cloud, "n1", &id, VmState::Active, None, "snapshot").await;

    // unshelve: a body from 2.77; `host` from 2.91.
    let (s, _) = cx
        .status(Method::POST, &action, 77, json!({"unshelve": {}}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = cx
        .status(
            Method::POST,
            &action,
            77,
            json!({"unshelve": {"availability_zone": "nova", "host": "n1"}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "host only from 2.91");

    // os-instance-actions: updated_at from 2.58, event hostId 2.62, details 2.84.
    let acts = format!("{S}/{id}/os-instance-actions");
    let (_, _, v) = cx.call(Method::GET, &acts, &cx.admin, 57, None).await;
    assert!(v["instanceActions"][0].get("updated_at").is_none(), "{v}");
    let (_, _, v) = cx.call(Method::GET, &acts, &cx.admin, 58, None).await;
    assert!(v["instanceActions"][0]["updated_at"].is_string(), "{v}");
    let req = v["instanceActions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "create")
        .unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let one = format!("{acts}/{req}");
    let event_keys = |v: &Value| {
        keys(&v["instanceAction"]["events"][0])
            .into_iter()
            .map(str::to_string)
            .collect::<BTreeSet<_>>()
    };
    let (_, _, v) = cx.call(Method::GET, &one, &cx.admin, 61, None).await;
    assert!(!event_keys(&v).contains("hostId"), "{v}");
    let (_, _, v) = cx.call(Method::GET, &one, &cx.admin, 84, None).await;
    let ek = event_keys(&v);
    assert!(
        ek.contains("hostId") && ek.contains("host") && ek.contains("details"),
        "{v}"
    );
    // A member sees events from 2.51, never the traceback or host.
    let (_, _, v) = cx.call(Method::GET, &one, &cx.member, 50, None).await;
    assert!(v["instanceAction"].get("events").is_none(), "{v}");
    let (_, _, v) = cx.call(Method::GET, &one, &cx.member, 84, None).await;
    let ek = event_keys(&v);
    assert!(
        ek.contains("hostId") && !ek.contains("host") && !ek.contains("traceback"),
        "{v}"
    );
}
