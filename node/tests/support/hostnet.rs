//! Host-network pieces of the KVM acceptance tests: why such a test skips,
//! the links and namespaces it must leave behind clean, and a probe
//! namespace plugged into a tenant network as a Neutron port.

use serde_json::Value;

use super::{
    field, in_ns, kvm_usable, missing_root_or_tools, must, run, workspace_root, Cloud, Reaper,
    ScratchDir,
};

/// Why a test booting networked guests cannot run here, if it cannot.
pub fn kvm_net_skip_reason() -> Option<String> {
    if !kvm_usable() {
        return Some("needs a usable /dev/kvm".into());
    }
    missing_root_or_tools(&[
        ("ip", "-V", "iproute2"),
        ("ping", "-V", "iputils-ping"),
        ("nft", "-v", "nftables"),
    ])
}

/// What the test and the node created on the host, removed on drop: probe
/// namespaces, and the links and namespace the node derives from the test's
/// network and ports (left only if the test failed half-way).
pub struct HostLeftovers {
    pub namespaces: Vec<String>,
    pub links: Vec<String>,
    /// Whether the node's nf_tables tables were absent when the test began
    /// (then they are the test's to remove).
    tables: bool,
}

impl HostLeftovers {
    /// Nothing yet; notes whether the node's tables exist already.
    pub fn new() -> Self {
        let tables = run(&["nft", "list", "tables"]).stdout;
        HostLeftovers {
            namespaces: Vec::new(),
            links: Vec::new(),
            tables: !String::from_utf8_lossy(&tables).contains(" kiln"),
        }
    }
}

impl Drop for HostLeftovers {
    fn drop(&mut self) {
        for l in &self.links {
            let _ = run(&["ip", "link", "del", l]);
        }
        for ns in &self.namespaces {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        // The node's tables go when its last port goes; after a failure
        // half-way they may still be there.
        if self.tables {
            for family in ["inet", "bridge"] {
                let table = kiln_netdp::secgroup::layout::TABLE;
                let _ = run(&["nft", "delete", "table", family, table]);
            }
        }
    }
}

/// The first IPv4 address of a port as the CLI shows it.
pub fn port_ip(port: &Value) -> String {
    let first = port["fixed_ips"]
        .as_array()
        .and_then(|a| a.first())
        .unwrap_or_else(|| panic!("port has no fixed IP: {port}"));
    field(first, "ip_address")
}

pub fn ping(ns: &str, to: &str) -> bool {
    in_ns(ns, &["ping", "-n", "-q", "-c", "1", "-W", "1", to])
        .status
        .success()
}

/// A namespace on a tenant network through a Neutron port of its own.
pub struct Probe {
    pub ns: String,
    pub port_id: String,
    pub ip: String,
}

/// Plugs namespace `ns` into `network` as a Neutron port (`name`) bound to
/// `node`: a veth whose host end carries the port's TAP name. The port is
/// bound only once the veth exists, or the node would make a TAP first.
/// The namespace and veth are recorded in `host`.
pub fn plug_probe(
    cloud: &Cloud,
    host: &mut HostLeftovers,
    network: &str,
    node: &str,
    name: &str,
    ns: &str,
) -> Probe {
    let port = cloud
        .admin(&[
            "port",
            "create",
            "--network",
            network,
            "--device-owner",
            "compute:probe",
            "-f",
            "json",
            name,
        ])
        .json();
    let port_id = field(&port, "id");
    let ip = port_ip(&port);
    let tap = kiln_netdp::link::names::tap(&port_id);
    host.links.push(tap.clone());
    must(&["ip", "netns", "add", ns]);
    host.namespaces.push(ns.to_string());
    must(&[
        "ip", "link", "add", &tap, "type", "veth", "peer", "name", "eth0", "netns", ns,
    ]);
    let mac = field(&port, "mac_address");
    let addr = format!("{ip}/24");
    for cmd in [
        &["ip", "link", "set", "eth0", "address", &mac][..],
        &["ip", "addr", "add", &addr, "dev", "eth0"],
        &["ip", "link", "set", "eth0", "up"],
        &["ip", "link", "set", "lo", "up"],
    ] {
        let out = in_ns(ns, cmd);
        assert!(out.status.success(), "{cmd:?}: {out:?}");
    }
    cloud.admin(&["port", "set", "--host", node, &port_id]).ok();
    Probe {
        ns: ns.to_string(),
        port_id,
        ip,
    }
}

/// An all-in-one cloud with the KVM driver for a networked-guest test, the
/// firmware uploaded as image `fw`. Dropped in field order: the cloud, the
/// host leftovers, then any process left under the data directory, then the
/// directory.
pub struct KvmCloud {
    pub cloud: Cloud,
    pub host: HostLeftovers,
    _reaper: Reaper,
    pub dir: ScratchDir,
    node: String,
}

impl KvmCloud {
    /// Starts it (node id `node`, data under a scratch dir tagged `tag`);
    /// None, after saying why, when this host cannot run such a test.
    pub fn start(tag: &str, node: &str) -> Option<KvmCloud> {
        if let Some(why) = kvm_net_skip_reason() {
            eprintln!("skipping: {why}");
            return None;
        }
        let firmware = workspace_root().join("target/release/kiln-firmware");
        assert!(
            firmware.is_file(),
            "build it first: cargo build --release -p kiln-vmm && cargo firmware"
        );
        let dir = ScratchDir::new(tag);
        let reaper = Reaper(dir.0.clone());
        let host = HostLeftovers::new();
        let cloud = Cloud::start(&dir.0, &["--driver", "kvm", "--node-id", node]);
        cloud.upload_image(&firmware, "fw", &["kiln_firmware=true"]);
        Some(KvmCloud {
            cloud,
            host,
            _reaper: reaper,
            dir,
            node: node.to_string(),
        })
    }

    /// Creates network `name` with an IPv4 subnet on `cidr`; records the
    /// bridge and DHCP namespace the node will make for it. Its id.
    pub fn network(&mut self, name: &str, cidr: &str) -> String {
        let net = self
            .cloud
            .admin(&["network", "create", name, "-f", "json"])
            .json();
        let id = field(&net, "id");
        self.host.links.push(kiln_netdp::link::names::bridge(&id));
        self.host.namespaces.push(kiln_node::net::dhcpns::ns_name(
            &kiln_node::net::dhcpns::node_tag(&self.node),
            &id,
        ));
        let subnet = format!("{name}-v4");
        self.cloud
            .admin(&[
                "subnet",
                "create",
                "--network",
                name,
                "--subnet-range",
                cidr,
                &subnet,
            ])
            .ok();
        id
    }
}
