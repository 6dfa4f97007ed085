//! Acceptance: the real `openstack` CLI against a real `kiln-node up` — networks,
//! subnets, ports, security groups and rules (remote-group rules too), routers
//! with gateways and interfaces, floating IPs, cross-project refusals, and
//! concurrent port creates that never share an address.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;

use support::{Cloud, ScratchDir};

/// A second project with a member user; returns the user's environment.
fn other_project(cloud: &Cloud) -> std::collections::BTreeMap<String, String> {
    cloud.admin(&["project", "create", "pb"]).ok();
    cloud
        .admin(&["user", "create", "--password", "BobPassword12345", "bob"])
        .ok();
    cloud
        .admin(&["role", "add", "--project", "pb", "--user", "bob", "member"])
        .ok();
    cloud.user_env("bob", "BobPassword12345", "pb")
}

#[test]
fn network_lifecycle_with_the_cli() {
    let dir = ScratchDir::new("acc-net");
    let cloud = Cloud::start(&dir.0, &[]);

    let net = cloud
        .admin(&["network", "create", "net1", "-f", "json"])
        .json();
    assert_eq!(net["status"], "ACTIVE");
    assert_eq!(net["mtu"], 1450);
    let net_id = net["id"].as_str().unwrap().to_string();
    let sub = cloud
        .admin(&[
            "subnet",
            "create",
            "--network",
            "net1",
            "--subnet-range",
            "10.0.0.0/24",
            "--dns-nameserver",
            "8.8.8.8",
            "sub1",
            "-f",
            "json",
        ])
        .json();
    assert_eq!(sub["gateway_ip"], "10.0.0.1");
    let sub6 = cloud
        .admin(&[
            "subnet",
            "create",
            "--network",
            "net1",
            "--ip-version",
            "6",
            "--subnet-range",
            "fd00:1::/64",
            "--ipv6-address-mode",
            "slaac",
            "--ipv6-ra-mode",
            "slaac",
            "sub6",
            "-f",
            "json",
        ])
        .json();
    assert_eq!(sub6["gateway_ip"], "fd00:1::1");

    let port = cloud
        .admin(&[
            "port",
            "create",
            "--network",
            "net1",
            "--fixed-ip",
            "subnet=sub1,ip-address=10.0.0.10",
            "p1",
            "-f",
            "json",
        ])
        .json();
    assert_eq!(port["status"], "DOWN");
    assert!(port["mac_address"]
        .as_str()
        .unwrap()
        .starts_with("fa:16:3e:"));
    assert!(
        port["fixed_ips"].to_string().contains("10.0.0.10"),
        "{port}"
    );
    cloud.admin(&["port", "set", "--name", "p1b", "p1"]).ok();
    let shown = cloud.admin(&["port", "show", "p1b", "-f", "json"]).json();
    assert_eq!(shown["id"], port["id"]);
    let ports = cloud
        .admin(&["port", "list", "--network", "net1", "-f", "json"])
        .json();
    assert_eq!(ports.as_array().unwrap().len(), 1);
    cloud
        .admin(&["network", "set", "--name", "net1b", "net1"])
        .ok();
    let nets = cloud
        .admin(&["network", "list", "--name", "net1b", "-f", "json"])
        .json();
    assert_eq!(nets[0]["ID"], net_id.as_str());
    cloud
        .admin(&["subnet", "set", "--name", "sub1b", "sub1"])
        .ok();
    let subs = cloud
        .admin(&["subnet", "list", "--network", "net1b", "-f", "json"])
        .json();
    assert_eq!(subs.as_array().unwrap().len(), 2);

    // Security groups and rules, including a remote-group rule and a duplicate.
    let sg = cloud
        .admin(&["security", "group", "create", "web", "-f", "json"])
        .json();
    let sg_id = sg["id"].as_str().unwrap().to_string();
    let rule = cloud
        .admin(&[
            "security",
            "group",
            "rule",
            "create",
            "--protocol",
            "tcp",
            "--dst-port",
            "22",
            "--remote-ip",
            "10.0.0.0/8",
            "web",
            "-f",
            "json",
        ])
        .json();
    cloud
        .admin(&[
            "security",
            "group",
            "rule",
            "create",
            "--protocol",
            "tcp",
            "--dst-port",
            "22",
            "--remote-ip",
            "10.0.0.0/8",
            "web",
        ])
        .fails_with("already exists");
    let remote = cloud
        .admin(&[
            "security",
            "group",
            "rule",
            "create",
            "--remote-group",
            &sg_id,
            "--protocol",
            "icmp",
            "web",
            "-f",
            "json",
        ])
        .json();
    assert_eq!(remote["remote_group_id"], sg_id.as_str());
    let rules = cloud
        .admin(&["security", "group", "rule", "list", "web", "-f", "json"])
        .json();
    assert_eq!(rules.as_array().unwrap().len(), 4, "{rules}");
    cloud
        .admin(&[
            "security",
            "group",
            "rule",
            "delete",
            rule["id"].as_str().unwrap(),
        ])
        .ok();
    let groups = cloud
        .admin(&["security", "group", "list", "-f", "json"])
        .json();
    assert!(groups.to_string().contains("default"), "{groups}");
    cloud
        .admin(&["port", "set", "--security-group", "web", "p1b"])
        .ok();
    cloud
        .admin(&["security", "group", "delete", "web"])
        .fails_with("in use");

    // External network, router with gateway and interface, floating IP.
    cloud
        .admin(&["network", "create", "--external", "public"])
        .ok();
    cloud
        .admin(&[
            "subnet",
            "create",
            "--network",
            "public",
            "--subnet-range",
            "203.0.113.0/24",
            "pubsub",
        ])
        .ok();
    cloud.admin(&["router", "create", "r1"]).ok();
    cloud
        .admin(&["router", "set", "--external-gateway", "public", "r1"])
        .ok();
    cloud
        .admin(&["router", "add", "subnet", "r1", "sub1b"])
        .ok();
    let router = cloud.admin(&["router", "show", "r1", "-f", "json"]).json();
    assert!(
        router["external_gateway_info"]
            .to_string()
            .contains("203.0.113."),
        "{router}"
    );
    cloud
        .admin(&["router", "delete", "r1"])
        .fails_with("still has ports");
    let fip = cloud
        .admin(&["floating", "ip", "create", "public", "-f", "json"])
        .json();
    let fip_id = fip["id"].as_str().unwrap().to_string();
    assert!(fip["floating_ip_address"]
        .as_str()
        .unwrap()
        .starts_with("203.0.113."));
    cloud
        .admin(&["floating", "ip", "set", "--port", "p1b", &fip_id])
        .ok();
    let shown = cloud
        .admin(&["floating", "ip", "show", &fip_id, "-f", "json"])
        .json();
    assert_eq!(shown["port_id"], port["id"]);
    assert_eq!(shown["fixed_ip_address"], "10.0.0.10");
    cloud
        .admin(&["floating", "ip", "unset", "--port", &fip_id])
        .ok();
    cloud.admin(&["floating", "ip", "delete", &fip_id]).ok();
    cloud
        .admin(&["router", "remove", "subnet", "r1", "sub1b"])
        .ok();
    cloud
        .admin(&["router", "unset", "--external-gateway", "r1"])
        .ok();
    cloud.admin(&["router", "delete", "r1"]).ok();

    // Another project can neither see nor join this project's network; an
    // admin cannot attach it on the other project's behalf either.
    let bob = other_project(&cloud);
    cloud
        .openstack(&bob, &["port", "create", "--network", &net_id, "intruder"])
        .fails_with("No Network found");
    cloud
        .admin(&[
            "port",
            "create",
            "--network",
            &net_id,
            "--project",
            "pb",
            "intruder",
        ])
        .fails_with("403");
    let bob_router = cloud
        .openstack(&bob, &["router", "create", "rb", "-f", "json"])
        .json();
    cloud
        .admin(&[
            "router",
            "add",
            "subnet",
            bob_router["id"].as_str().unwrap(),
            "sub1b",
        ])
        .fails_with("403");

    cloud.admin(&["port", "delete", "p1b"]).ok();
    cloud.admin(&["subnet", "delete", "sub1b"]).ok();
    cloud.admin(&["network", "delete", "net1b"]).ok();
    cloud
        .admin(&["network", "show", &net_id])
        .fails_with("No Network found");
}

#[test]
fn concurrent_cli_port_creates_get_distinct_addresses() {
    let dir = ScratchDir::new("acc-ipam");
    let cloud = Cloud::start(&dir.0, &[]);
    cloud.admin(&["network", "create", "busy"]).ok();
    cloud
        .admin(&[
            "subnet",
            "create",
            "--network",
            "busy",
            "--subnet-range",
            "10.9.0.0/28",
            "busy-sub",
        ])
        .ok();
    let addresses: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let cloud = &cloud;
                s.spawn(move || {
                    let name = format!("c{i}");
                    let p = cloud
                        .admin(&["port", "create", "--network", "busy", &name, "-f", "json"])
                        .json();
                    let fixed = &p["fixed_ips"];
                    // The CLI prints fixed_ips as a list of dicts.
                    fixed[0]["ip_address"].as_str().unwrap().to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let unique: HashSet<&String> = addresses.iter().collect();
    assert_eq!(unique.len(), addresses.len(), "{addresses:?}");
    // The subnet's /28 holds 13 pool addresses: 8 taken, 5 left.
    let ports = cloud
        .admin(&["port", "list", "--network", "busy", "-f", "json"])
        .json();
    assert_eq!(ports.as_array().unwrap().len(), 8);
}
