//! Shared by the virtio integration tests: run the real kiln-vmm with the
//! real firmware ELF on /dev/kvm, watch its console, talk to its socket.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const VMM: &str = env!("CARGO_BIN_EXE_kiln-vmm");

/// Whether /dev/kvm can be opened; says why not when it cannot.
pub fn kvm_available() -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipping: /dev/kvm is not usable here ({e})");
            false
        }
    }
}

/// target/<profile>/kiln-firmware, next to the directory this test runs from.
pub fn firmware() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let fw = profile_dir.join("kiln-firmware");
    assert!(
        fw.is_file(),
        "{} is missing: build it first with `cargo firmware`",
        fw.display()
    );
    fw
}

/// A guest in its own temporary directory.
pub struct Guest {
    pub dir: tempfile::TempDir,
}

impl Guest {
    pub fn new() -> Self {
        Guest {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn sock(&self) -> PathBuf {
        self.path("control.sock")
    }
    /// A file of `len` bytes, each `byte`.
    pub fn disk(&self, name: &str, len: usize, byte: u8) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, vec![byte; len]).unwrap();
        p
    }
    pub fn log(&self) -> PathBuf {
        self.path("console.log")
    }
    /// Write vm.json: one vCPU, 64 MiB, the firmware in probe mode, a console
    /// log and a control socket, with `extra`'s top-level keys replacing those.
    pub fn config(&self, extra: Value) -> PathBuf {
        let mut c = json!({
            "vcpus": 1,
            "memory_mib": 64,
            "firmware": {"path": firmware(), "cmdline": "kiln.mode=probe"},
            "console": {"log": self.log()},
            "control_socket": self.sock(),
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        let cfg = self.path("vm.json");
        std::fs::write(&cfg, c.to_string()).unwrap();
        cfg
    }
    /// Start kiln-vmm with [`Guest::config`]`(extra)`.
    pub fn spawn_with(&self, extra: Value) -> Child {
        Command::new(VMM)
            .arg("--config")
            .arg(self.config(extra))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
    /// Start kiln-vmm with [`Guest::config`]`(extra)` inside network namespace `ns`.
    pub fn spawn_in(&self, ns: &Netns, extra: Value) -> Vmm {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, VMM, "--config"])
            .arg(self.config(extra))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Vmm(Some(child))
    }
    /// Start kiln-vmm running the firmware with `cmdline` and `disks`.
    pub fn spawn(&self, cmdline: &str, disks: Value) -> Child {
        self.spawn_with(json!({
            "firmware": {"path": firmware(), "cmdline": cmdline},
            "disks": disks,
        }))
    }
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
    /// Wait until the console contains `text` (panics with the console if
    /// kiln-vmm exits first or nothing comes within 30 s).
    pub fn wait_console(&self, child: &mut Child, text: &str) {
        self.wait_console_times(child, text, 1);
    }

    /// Wait until `text` has appeared `times` times on the console.
    pub fn wait_console_times(&self, child: &mut Child, text: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.console().matches(text).count() < times {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "kiln-vmm exited ({status}) before printing {text:?}; console:\n{}",
                    self.console()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("no {text:?} on the console:\n{}", self.console());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Wait for kiln-vmm to exit (killing it after 30 s).
pub fn finish(mut child: Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "kiln-vmm did not exit; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

/// One request on the control socket, its answer.
pub fn ask(sock: &Path, req: Value) -> Value {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

/// Wait for the control socket to accept connections.
pub fn wait_socket(sock: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(sock).is_err() {
        assert!(Instant::now() < deadline, "control socket never came up");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A network namespace of a test, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A fresh namespace, or None (with the reason printed) when this host
    /// cannot make one.
    pub fn new(tag: &str) -> Option<Netns> {
        let name = format!("kiln-{tag}-{}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "skipping: cannot create a network namespace ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        // No IPv6 chatter (router solicitations, MLD) on the TAP: the only
        // frames the guest sees are the answers to what the test sends.
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name, "sysctl", "-q", "-w"])
            .args([
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "sysctl: {out:?}");
        Some(ns)
    }

    /// `ip -n <ns> args…`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        ip_in(&self.name, args);
    }

    /// Run `f` on a thread that has entered the namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(path).unwrap();
            // SAFETY: setns on an open namespace fd changes only this thread's
            // network namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A kiln-vmm process, killed on drop unless it was waited for.
pub struct Vmm(pub Option<Child>);

impl Drop for Vmm {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `ip -n NS ARGS`, which must succeed (usable from inside `Netns::run`,
/// where the `Netns` itself cannot go).
pub fn ip_in(ns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .arg("-n")
        .arg(ns)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}
