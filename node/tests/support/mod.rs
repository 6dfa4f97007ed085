//! Test support for acceptance tests: a real `kiln-node up` on a free loopback
//! port, and the real `openstack` CLI (python-openstackclient from PyPI) in a
//! venv under `target/`, created on first use.
#![allow(dead_code)]

pub mod hostnet;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Version of python-openstackclient the tests drive (the same `.ci/run` installs).
pub const OPENSTACKCLIENT: &str = "python-openstackclient==10.5.0";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("node/ sits in the workspace")
        .to_path_buf()
}

/// Path of the `openstack` executable, creating the venv if needed. Several test
/// binaries may race to create it: a file lock serialises them.
pub fn openstack_cli() -> PathBuf {
    let venv = std::env::var_os("KILN_OPENSTACK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/venv"));
    let cli = venv.join("bin/openstack");
    if cli.exists() {
        return cli;
    }
    fs::create_dir_all(workspace_root().join("target")).unwrap();
    let lock = File::create(workspace_root().join("target/venv.lock")).unwrap();
    lock.lock().unwrap();
    if !cli.exists() {
        eprintln!(
            "creating {} with {OPENSTACKCLIENT} (first run only)",
            venv.display()
        );
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap()
            .success();
        assert!(ok, "python3 -m venv failed");
        let ok = Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "-q",
                "--disable-pip-version-check",
                OPENSTACKCLIENT,
            ])
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "pip install {OPENSTACKCLIENT} failed (PyPI must be reachable)"
        );
    }
    cli
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory under `target/` removed on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = workspace_root().join(format!(
            "target/test-scratch/{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A running all-in-one cloud (`kiln-node up`), stopped on drop.
pub struct Cloud {
    child: Option<Child>,
    pub data_dir: PathBuf,
    /// The identity endpoint, e.g. `http://127.0.0.1:PORT/v3`.
    pub auth_url: String,
    /// `host:port` the cloud listens on.
    pub addr: String,
    /// The admin's environment, read from the openrc the cloud wrote.
    pub admin_env: BTreeMap<String, String>,
}

impl Cloud {
    /// Start `kiln-node up` on a free loopback port (unless `extra` names a
    /// `--listen`) with its data in `data_dir`, with the simulated driver
    /// unless `extra` names a `--driver`.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Cloud {
        let driver: &[&str] = if extra.contains(&"--driver") {
            &[]
        } else {
            &["--driver", "sim"]
        };
        let listen: &[&str] = if extra.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln-node"))
            .arg("up")
            .arg("--data-dir")
            .arg(data_dir)
            .args(listen)
            .args(driver)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn kiln-node up");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("[kiln-node] {line}");
                if !sent {
                    if let Some(url) = line.strip_prefix("kiln: ready at ") {
                        let _ = tx.send(url.trim().to_string());
                        sent = true;
                    }
                }
            }
        });
        let auth_url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("kiln-node up did not print its ready line within 60 s");
            }
        };
        let addr = auth_url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let admin_env = parse_openrc(&data_dir.join("openrc"));
        assert_eq!(
            admin_env.get("OS_AUTH_URL"),
            Some(&auth_url),
            "openrc names the URL the cloud listens on"
        );
        Cloud {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            auth_url,
            addr,
            admin_env,
        }
    }

    /// Stop with SIGTERM and require a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(
                        status.success(),
                        "kiln-node up exited with {status} on SIGTERM"
                    );
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("kiln-node up did not stop within 30 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// A server's status as `openstack server show` prints it.
    pub fn status(&self, server: &str) -> String {
        self.admin(&["server", "show", server, "-c", "status", "-f", "value"])
            .ok()
            .trim()
            .to_string()
    }

    /// Polls until the server shows `want` (the CLI has no --wait for every
    /// action); fails after 60 s.
    pub fn wait_for(&self, server: &str, want: &str) {
        self.wait_status(&["server", "show", server], want);
    }

    /// Polls until the volume shows `want`; fails after 60 s.
    pub fn wait_for_volume(&self, volume: &str, want: &str) {
        self.wait_status(&["volume", "show", volume], want);
    }

    /// Polls `openstack SHOW... -c status` until it answers `want`.
    fn wait_status(&self, show: &[&str], want: &str) {
        let what = show.last().copied().unwrap_or("?");
        let mut args = show.to_vec();
        args.extend(["-c", "status", "-f", "value"]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = self.admin(&args).ok().trim().to_string();
            if now == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what} stuck in {now}, wanted {want}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run `openstack ARGS` as the admin from the openrc.
    pub fn admin(&self, args: &[&str]) -> Cli {
        self.openstack(&self.admin_env, args)
    }

    /// Create security group `name` with one rule: ICMP in (so a test
    /// namespace can ping the guests in it). The group's and the rule's JSON.
    pub fn icmp_security_group(&self, name: &str) -> (serde_json::Value, serde_json::Value) {
        let group = self
            .admin(&["security", "group", "create", name, "-f", "json"])
            .json();
        let rule = [
            "security",
            "group",
            "rule",
            "create",
            "--ingress",
            "--protocol",
            "icmp",
        ];
        let rule = self
            .admin(&[&rule[..], &[name, "-f", "json"]].concat())
            .json();
        (group, rule)
    }

    /// The admin's environment with some variables replaced (`""` removes one).
    pub fn env_with(&self, changes: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut env = self.admin_env.clone();
        for (k, v) in changes {
            if v.is_empty() {
                env.remove(*k);
            } else {
                env.insert(k.to_string(), v.to_string());
            }
        }
        env
    }

    /// The environment of a password user scoped to a project in the Default domain.
    pub fn user_env(&self, user: &str, password: &str, project: &str) -> BTreeMap<String, String> {
        self.env_with(&[
            ("OS_USERNAME", user),
            ("OS_PASSWORD", password),
            ("OS_PROJECT_NAME", project),
        ])
    }

    /// Run `openstack ARGS` with exactly the given OS_* environment.
    pub fn openstack(&self, env: &BTreeMap<String, String>, args: &[&str]) -> Cli {
        let mut cmd = Command::new(openstack_cli());
        for (k, _) in std::env::vars() {
            if k.starts_with("OS_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env)
            .env("PYTHONWARNINGS", "ignore")
            .args(args)
            .stdin(Stdio::null());
        let out = cmd.output().expect("run openstack");
        Cli::new(args, out)
    }

    /// A raw HTTP/1.1 request to the cloud; returns (status, headers, body).
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, String, String) {
        http_request(&self.addr, method, path, headers, body)
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The outcome of one `openstack` invocation.
pub struct Cli {
    pub args: String,
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Cli {
    fn new(args: &[&str], out: Output) -> Cli {
        Cli {
            args: args.join(" "),
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Require success and return stdout.
    pub fn ok(&self) -> &str {
        assert!(
            self.status.success(),
            "`openstack {}` failed ({}):\nstdout: {}\nstderr: {}",
            self.args,
            self.status,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// Require success and parse stdout as JSON (use with `-f json`).
    pub fn json(&self) -> serde_json::Value {
        let out = self.ok();
        serde_json::from_str(out)
            .unwrap_or_else(|e| panic!("`openstack {}` printed no JSON ({e}): {out}", self.args))
    }

    /// Require failure, and that stderr or stdout mentions `needle`.
    pub fn fails_with(&self, needle: &str) {
        assert!(
            !self.status.success(),
            "`openstack {}` should have failed but printed: {}",
            self.args,
            self.stdout
        );
        assert!(
            self.stderr.contains(needle) || self.stdout.contains(needle),
            "`openstack {}` failed, but without {needle:?}:\nstdout: {}\nstderr: {}",
            self.args,
            self.stdout,
            self.stderr
        );
    }
}

/// Parse `export K='V'` lines.
pub fn parse_openrc(path: &Path) -> BTreeMap<String, String> {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut env = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("export ") else {
            continue;
        };
        let Some((k, v)) = rest.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = v
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
            .unwrap_or(v);
        env.insert(k.trim().to_string(), v.to_string());
    }
    env
}

/// A minimal HTTP/1.1 client over std (one request per connection).
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, head.to_string(), body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The value of a header in a raw response head.
pub fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Pids of the processes whose command line mentions `dir`.
pub fn pids_under(dir: &Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().into_owned();
    let mut pids = vec![];
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(c) = fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&c).contains(&needle) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// A string field of a JSON object the CLI printed (panics naming it when absent).
pub fn field(v: &serde_json::Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("no {k} in {v}"))
        .to_string()
}

/// Polls `ok` every 200 ms; fails naming `what` after `secs` seconds.
pub fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether `pid` runs (a zombie does not).
pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z"))
        .unwrap_or(false)
}

/// On drop, SIGKILLs every process started under a test's directory (a
/// failed assertion must not leave a kiln-vmm running).
pub struct Reaper(pub PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in pids_under(&self.0) {
            // SAFETY: kill(2) on a process the test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Whether /dev/kvm opens read-write (tests needing it skip, saying why).
pub fn kvm_usable() -> bool {
    let ok = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        eprintln!("skipping: /dev/kvm is not usable here");
    }
    ok
}

/// Run a command; its output whatever the status.
pub fn run(args: &[&str]) -> Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

/// Run a command that must succeed; its standard output.
pub fn must(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command inside network namespace `ns`.
pub fn in_ns(ns: &str, args: &[&str]) -> Output {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    run(&v)
}

/// Run a command that must succeed inside network namespace `ns`.
pub fn must_in(ns: &str, args: &[&str]) -> String {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    must(&v)
}

/// Why a test that needs root and these tools (`(tool, version flag, apt
/// package)`) cannot run here, if it cannot.
pub fn missing_root_or_tools(tools: &[(&str, &str, &str)]) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, nf_tables)".into());
    }
    tools.iter().find_map(|(tool, arg, apt)| {
        Command::new(tool)
            .arg(arg)
            .output()
            .is_err()
            .then(|| format!("needs `{tool}` (apt: {apt})"))
    })
}

impl Cloud {
    /// Upload `file` to the image service as raw image `name` with the given
    /// extra `--property` values.
    pub fn upload_image(&self, file: &Path, name: &str, properties: &[&str]) {
        let file = file.to_str().unwrap();
        let mut args = vec!["image", "create", "--file", file];
        for p in properties {
            args.extend(["--property", p]);
        }
        args.extend(["--disk-format", "raw", "--container-format", "bare", name]);
        self.admin(&args).ok();
    }
}
