//! Acceptance with openstacksdk (the library under the CLI, Ansible and many
//! users' scripts) against `kiln-node up --driver sim`: the script in
//! `tests/sdk/lifecycle.py` drives image, compute, network and block storage
//! through the SDK's proxies and exits non-zero on the first surprise.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};

use support::{openstack_cli, Cloud, ScratchDir};

#[test]
fn openstacksdk_drives_every_service() {
    let dir = ScratchDir::new("acc-sdk");
    let cloud = Cloud::start(&dir.0, &["--driver", "sim", "--sim-delay-ms", "30"]);
    // The venv that holds the CLI also holds openstacksdk (its dependency).
    let python = openstack_cli().with_file_name("python3");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/lifecycle.py");
    let mut cmd = Command::new(&python);
    for (k, _) in std::env::vars() {
        if k.starts_with("OS_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .envs(&cloud.admin_env)
        .env("PYTHONWARNINGS", "ignore")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("sdk ok"),
        "openstacksdk script failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}
