//! Acceptance: the real `openstack` CLI against `kiln-node up` — Nova's flavors,
//! keypairs, limits, quotas and availability zones as users drive them.
#![allow(clippy::unwrap_used)]

mod support;

use support::{header, Cloud, ScratchDir};

#[test]
fn flavors_keypairs_quotas() {
    let dir = ScratchDir::new("acc-compute");
    let cloud = Cloud::start(&dir.0, &[]);

    let flavors = cloud.admin(&["flavor", "list", "-f", "json"]).json();
    let names: Vec<&str> = flavors
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["Name"].as_str())
        .collect();
    assert!(
        names.contains(&"m1.tiny") && names.contains(&"m1.small"),
        "{flavors}"
    );

    let f = cloud
        .admin(&[
            "flavor",
            "create",
            "--ram",
            "256",
            "--vcpus",
            "1",
            "--disk",
            "1",
            "--property",
            "hw:cpu_policy=shared",
            "k1.mini",
            "-f",
            "json",
        ])
        .json();
    assert_eq!(f["name"], "k1.mini", "{f}");
    assert_eq!(f["ram"], 256);
    let shown = cloud
        .admin(&["flavor", "show", "k1.mini", "-f", "json"])
        .json();
    assert!(
        shown["properties"].to_string().contains("hw:cpu_policy"),
        "{shown}"
    );
    cloud
        .admin(&["flavor", "show", "no-such-flavor"])
        .fails_with("No Flavor found");
    cloud.admin(&["flavor", "delete", "k1.mini"]).ok();

    // A generated key: the private key is printed once.
    let gen = cloud.admin(&["keypair", "create", "gen1"]).ok().to_string();
    assert!(gen.contains("BEGIN OPENSSH PRIVATE KEY"), "{gen}");
    let pub_path = dir.0.join("k.pub");
    std::fs::write(&pub_path, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti user@example.com\n").unwrap();
    let imp = cloud
        .admin(&[
            "keypair",
            "create",
            "--public-key",
            pub_path.to_str().unwrap(),
            "imp1",
            "-f",
            "json",
        ])
        .json();
    assert_eq!(imp["name"], "imp1", "{imp}");
    let list = cloud.admin(&["keypair", "list", "-f", "json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let shown = cloud
        .admin(&["keypair", "show", "imp1", "-f", "json"])
        .json();
    assert_eq!(shown["fingerprint"], imp["fingerprint"]);
    cloud
        .admin(&[
            "keypair",
            "create",
            "--public-key",
            pub_path.to_str().unwrap(),
            "imp1",
        ])
        .fails_with("409");
    cloud.admin(&["keypair", "delete", "imp1"]).ok();
    cloud
        .admin(&["keypair", "show", "imp1"])
        .fails_with("No Keypair found");

    // Quota exceeded → 403 with Nova's message.
    cloud
        .admin(&["quota", "set", "--key-pairs", "1", "admin"])
        .ok();
    cloud
        .admin(&["keypair", "create", "gen2"])
        .fails_with("Quota exceeded");

    let zones = cloud
        .admin(&["availability", "zone", "list", "--compute", "-f", "json"])
        .json();
    assert!(zones.to_string().contains("nova"), "{zones}");

    // Raw: the microversion headers and Nova's fault shape.
    let token = cloud.admin(&["token", "issue", "-f", "json"]).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, head, body) = cloud.http(
        "GET",
        "/compute/v2.1/flavors",
        &[
            ("X-Auth-Token", &token),
            ("OpenStack-API-Version", "compute latest"),
        ],
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        header(&head, "openstack-api-version").as_deref(),
        Some("compute 2.96")
    );
    let (code, _, body) = cloud.http(
        "GET",
        "/compute/v2.1/flavors",
        &[
            ("X-Auth-Token", &token),
            ("OpenStack-API-Version", "compute 9.9"),
        ],
        None,
    );
    assert_eq!(code, 406, "{body}");
    assert!(body.contains("computeFault"), "{body}");
    let (code, _, body) = cloud.http(
        "GET",
        "/compute/v2.1/limits",
        &[("X-Auth-Token", &token)],
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"maxTotalKeypairs\":1"), "{body}");
}
