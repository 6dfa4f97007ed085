//! The real `kiln-node up` binary: first start on a free port, client files, token
//! issue over HTTP, `kill -9`, restart on the same data dir (state, tokens and a
//! created project intact, files rewritten with the new port), then SIGTERM for a
//! clean exit.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

struct Running {
    child: Child,
    auth_url: String,
    lines: Vec<String>,
    rest: mpsc::Receiver<String>,
}

/// Starts `kiln-node up` and waits for its ready line (a generous guard against a
/// hang, not a timing assertion).
fn start(dir: &Path) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln-node"))
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        let line = match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no ready line ({e}); saw {lines:?}");
            }
        };
        lines.push(line.clone());
        if let Some(url) = line.strip_prefix("kiln: ready at ") {
            return Running {
                child,
                auth_url: url.to_string(),
                lines,
                rest: rx,
            };
        }
    }
}

/// A failed assertion must not leave the server running.
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn openrc_value(dir: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(dir.join("openrc")).unwrap();
    let prefix = format!("export {key}='");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("{key} not in openrc:\n{text}"));
    line[prefix.len()..line.len() - 1].to_string()
}

fn login(agent: &ureq::Agent, auth_url: &str, password: &str) -> (String, Value) {
    let mut resp = agent
        .post(&format!("{auth_url}/auth/tokens"))
        .send_json(json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"name": "Default"}, "password": password}}},
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}}))
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
    (token, body)
}

#[test]
fn up_bootstraps_survives_kill_9_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kiln");
    let agent = agent();

    // First start.
    let mut first = start(&data);
    assert!(
        first.lines.iter().any(|l| l.contains("bootstrapped")),
        "{:?}",
        first.lines
    );
    assert!(first.auth_url.starts_with("http://127.0.0.1:"));
    assert!(first.auth_url.ends_with("/v3"));
    assert!(first
        .lines
        .iter()
        .any(|l| l.contains(&*data.join("openrc").to_string_lossy())));
    for f in ["openrc", "clouds.yaml", "admin-password"] {
        let mode = std::fs::metadata(data.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    assert_eq!(openrc_value(&data, "OS_AUTH_URL"), first.auth_url);
    assert_eq!(openrc_value(&data, "OS_USER_DOMAIN_NAME"), "Default");
    assert_eq!(openrc_value(&data, "OS_IDENTITY_API_VERSION"), "3");
    let password = openrc_value(&data, "OS_PASSWORD");
    let kept = std::fs::read_to_string(data.join("admin-password")).unwrap();
    assert_eq!(kept.trim_end(), password);
    let clouds = std::fs::read_to_string(data.join("clouds.yaml")).unwrap();
    assert!(clouds.contains("  kiln:"));
    assert!(clouds.contains(&first.auth_url));

    // Version document and a token over real HTTP.
    let mut resp = agent.get(&first.auth_url).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.body_mut().read_json().unwrap();
    assert_eq!(
        v["version"]["links"][0]["href"],
        format!("{}/", first.auth_url)
    );
    let (token, body) = login(&agent, &first.auth_url, &password);
    assert_eq!(body["token"]["project"]["name"], "admin");
    let resp = agent
        .post(&format!("{}/projects", first.auth_url))
        .header("x-auth-token", &token)
        .send_json(json!({"project": {"name": "persist-me"}}))
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);

    // kill -9.
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    // Restart on the same data dir (a new free port).
    let mut second = start(&data);
    assert!(
        second.lines.iter().any(|l| l.contains("reusing")),
        "{:?}",
        second.lines
    );
    assert_eq!(openrc_value(&data, "OS_AUTH_URL"), second.auth_url);
    assert_eq!(openrc_value(&data, "OS_PASSWORD"), password);
    let (token2, _) = login(&agent, &second.auth_url, &password);
    let mut resp = agent
        .get(&format!("{}/projects?name=persist-me", second.auth_url))
        .header("x-auth-token", &token2)
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.body_mut().read_json().unwrap();
    assert_eq!(v["projects"].as_array().unwrap().len(), 1, "{v}");
    // The token issued before the kill still validates.
    let resp = agent
        .get(&format!("{}/auth/tokens", second.auth_url))
        .header("x-auth-token", &token2)
        .header("x-subject-token", &token)
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // SIGTERM: graceful stop, exit 0.
    let pid = i32::try_from(second.child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid with a valid signal number has no memory
    // effects in this process.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = second.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // The reader thread ends at EOF, which follows the exit.
    let tail: Vec<String> = second.rest.iter().collect();
    assert!(tail.iter().any(|l| l == "kiln: stopped"), "{tail:?}");
}
