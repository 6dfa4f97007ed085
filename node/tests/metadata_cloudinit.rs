//! The metadata service as cloud-init sees it. Guests here run the project's
//! firmware, not Linux (a Linux boot takes minutes on this nested host, see
//! PLATFORM.md), so this test runs cloud-init's own code (Debian's package,
//! unpacked, never installed) against the node's metadata router: its
//! OpenStack reader (`read_v2`), its conversion of `network_data.json` to a
//! network config, and its EC2 reader. A second server on the same network
//! and an unknown address check that each caller sees only its own data.
#![allow(clippy::unwrap_used)]

mod support;

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use base64::Engine;
use kiln_controller::protocol::Spawn;
use kiln_node::net::metadata::{router, Registry};
use serde_json::{json, Value};
use support::{openstack_cli, workspace_root};

/// Where cloud-init's Python package lives, fetched on first use with
/// `apt-get download` into `target/cloud-init`; Err(why) when it cannot be.
fn cloud_init_path() -> Result<PathBuf, String> {
    let dir = workspace_root().join("target/cloud-init");
    let pkg = dir.join("usr/lib/python3/dist-packages");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let lock = File::create(workspace_root().join("target/cloud-init.lock")).unwrap();
    // SAFETY: flock on a file we own, released when `lock` drops.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    if pkg.join("cloudinit").is_dir() {
        return Ok(pkg);
    }
    let download = || {
        Command::new("apt-get")
            .args(["download", "-q", "cloud-init"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let fetched = download()
        || (Command::new("apt-get")
            .args(["update", "-qq"])
            .status()
            .is_ok_and(|s| s.success())
            && download());
    if !fetched {
        return Err("`apt-get download cloud-init` failed (no apt or no network)".into());
    }
    let deb = std::fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("no .deb after apt-get download")?;
    let ok = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    if !ok || !pkg.join("cloudinit").is_dir() {
        return Err(format!("dpkg-deb -x {} failed", deb.display()));
    }
    Ok(pkg)
}

/// The venv's python with what cloud-init's readers import (Debian would
/// install these as the package's dependencies).
fn python_with_deps() -> PathBuf {
    let python = openstack_cli().with_file_name("python3");
    let have = Command::new(&python)
        .args(["-c", "import configobj, jinja2, jsonschema, oauthlib, yaml"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        let ok = Command::new(python.with_file_name("pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .args(["configobj", "jinja2", "jsonschema", "oauthlib", "pyyaml"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "pip install of cloud-init's dependencies failed");
    }
    python
}

fn spawn(id: &str, name: &str, ip: &str, mac: &str, key: Option<&str>, user_data: &str) -> Spawn {
    serde_json::from_value(json!({
        "server_id": id,
        "name": name,
        "flavor": {"id": "1", "vcpus": 1, "ram_mb": 512, "disk_gb": 1,
                   "ephemeral_gb": 0, "swap_mb": 0},
        "image": {"id": "img"},
        "ports": [{"port_id": format!("port-{id}"), "network_id": "net-a",
                   "mac": mac, "ips": [ip]}],
        "user_data": base64::engine::general_purpose::STANDARD.encode(user_data),
        "key": key,
        "metadata": {"role": name},
        "instance": {"project_id": "proj", "availability_zone": "nova",
                     "hostname": name, "key_name": key.map(|_| "mykey")},
    }))
    .unwrap()
}

/// GET `path` from `addr` with the connection's source address `from`.
async fn get_from(from: &str, addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_init_reads_each_guest_its_own_metadata() {
    let pkg = match cloud_init_path() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipping: cloud-init's code is not available here: {why}");
            return;
        }
    };
    let python = python_with_deps();

    // Two servers on one network; requests from 127.0.0.1 are server A's.
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKilnKilnKilnKilnKilnKilnKilnKilnKilnKilnKil test@kiln";
    let user_data = "#cloud-config\nruncmd:\n  - echo kiln\n";
    let registry = Arc::new(Registry::default());
    registry.insert(&spawn(
        "srv-a",
        "guest-a",
        "127.0.0.1",
        "fa:16:3e:00:00:0a",
        Some(key),
        user_data,
    ));
    registry.insert(&spawn(
        "srv-b",
        "guest-b",
        "127.0.0.2",
        "fa:16:3e:00:00:0b",
        None,
        "b",
    ));
    registry.set_mtu("net-a", 1450);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router("net-a", registry).into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cloudinit/read_metadata.py");
    let (python2, base) = (python.clone(), format!("http://{addr}"));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python2)
            .arg(script)
            .arg(base)
            .arg("fa:16:3e:00:00:0a")
            .env("PYTHONPATH", pkg)
            .env("PYTHONWARNINGS", "ignore")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cloud-init's readers failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_str(&stdout).unwrap();

    // The OpenStack layout, as cloud-init parsed it.
    let md = &got["metadata"];
    assert_eq!(md["uuid"], "srv-a", "{got}");
    assert_eq!(md["hostname"], "guest-a");
    assert_eq!(md["availability_zone"], "nova");
    assert_eq!(md["meta"]["role"], "guest-a");
    assert_eq!(md["public_keys"]["mykey"], key);
    assert_eq!(got["userdata"], user_data);
    // network_data.json became a network config on the guest's NIC by MAC.
    let nc = &got["network_config"];
    assert_eq!(nc["version"], 1, "{nc}");
    let phy = nc["config"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "physical")
        .unwrap_or_else(|| panic!("no physical interface in {nc}"));
    assert_eq!(phy["mac_address"], "fa:16:3e:00:00:0a");
    assert_eq!(phy["name"], "eth0");
    assert_eq!(phy["mtu"], 1450);
    assert_eq!(phy["subnets"][0]["type"], "dhcp4", "{phy}");

    // The EC2 layout, as cloud-init parsed it.
    let ec2 = &got["ec2_metadata"];
    assert_eq!(ec2["instance-id"], "srv-a", "{ec2}");
    assert_eq!(ec2["local-ipv4"], "127.0.0.1");
    assert_eq!(ec2["placement"]["availability-zone"], "nova");
    let keys = ec2["public-keys"].to_string();
    assert!(keys.contains("AAAAC3NzaC1lZDI1NTE5"), "{keys}");
    assert_eq!(got["ec2_userdata"], user_data);

    // Server B sees its own data; an address no port holds sees nothing.
    let (status, body) = get_from("127.0.0.2", addr, "/openstack/latest/meta_data.json").await;
    assert_eq!(status, 200);
    let b: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(b["uuid"], "srv-b");
    assert_eq!(b["public_keys"], json!({}));
    let (status, _) = get_from("127.0.0.2", addr, "/latest/meta-data/public-keys/").await;
    assert_eq!(status, 404);
    let (status, _) = get_from("127.0.0.3", addr, "/openstack/latest/meta_data.json").await;
    assert_eq!(status, 404);
    server.abort();
}
