//! The real `kiln-controller serve --config FILE` binary: a TOML config (strict
//! preset, explicit public URL, a given bootstrap password), the ready line, the
//! catalog on the configured URL, the strict rules live, and a clean SIGTERM stop.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

const ADMIN_PW: &str = "ServeConfigAdminPassword1";

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn serve_runs_from_a_toml_config() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let config = dir.path().join("controller.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:0"
data_dir = "{}"
public_url = "http://cloud.invalid:5000/"
token_ttl = 600
bootstrap_admin_password = "{ADMIN_PW}"
[security_compliance]
preset = "strict"
[password_hashing]
memory_kib = 64
iterations = 1
parallelism = 1
"#,
            data.display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kiln-controller"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let stdout = guard.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut listening = None;
    let auth_url = loop {
        let line = rx.recv_timeout(Duration::from_secs(300)).unwrap();
        if let Some(addr) = line.strip_prefix("kiln: listening on ") {
            listening = Some(addr.to_string());
        }
        if let Some(url) = line.strip_prefix("kiln: ready at ") {
            break url.to_string();
        }
    };
    // The advertised URL is the configured public one; the socket is the real port.
    assert_eq!(auth_url, "http://cloud.invalid:5000/v3");
    let real = format!("http://{}/v3", listening.unwrap());
    let rc = std::fs::read_to_string(data.join("openrc")).unwrap();
    assert!(rc.contains("export OS_AUTH_URL='http://cloud.invalid:5000/v3'"));
    assert!(rc.contains(&format!("export OS_PASSWORD='{ADMIN_PW}'")));

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(&format!("{real}/auth/tokens"))
        .send_json(json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"id": "default"}, "password": ADMIN_PW}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}))
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let token = resp
        .headers()
        .get("x-subject-token")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = resp.body_mut().read_json().unwrap();
    let url = body["token"]["catalog"][0]["endpoints"][0]["url"]
        .as_str()
        .unwrap();
    assert!(url.starts_with("http://cloud.invalid:5000/"), "{url}");
    // The strict preset is live.
    let mut resp = agent
        .post(&format!("{real}/users"))
        .header("x-auth-token", &token)
        .send_json(json!({"user": {"name": "weak", "password": "weak"}}))
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.body_mut().read_json().unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("20 characters"));

    let pid = i32::try_from(guard.0.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid with a valid signal number has no memory
    // effects in this process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = guard.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_bad_config_fails_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "listen = \"nowhere\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln-controller"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen"), "{err}");

    // A weak bootstrap password under the strict preset is refused up front.
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\nbootstrap_admin_password = \"weak\"\n[security_compliance]\npreset = \"strict\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln-controller"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bootstrap admin password"), "{err}");
}
