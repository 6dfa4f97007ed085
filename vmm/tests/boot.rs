//! kiln-vmm end to end on the real /dev/kvm with the real kiln-firmware ELF:
//! boots (1 and 2 vCPUs, Linux 64-bit and PVH entries), the control socket
//! (state, pause/resume, metrics, shutdown), exit statuses, and bad configs.
//! Needs /dev/kvm (skips with a message without it) and the firmware built
//! into the same target profile directory (fails with a hint without it).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod support;
use support::{finish, firmware, kvm_available, Guest, VMM};

struct Control {
    reader: BufReader<UnixStream>,
}

impl Control {
    fn connect(path: &Path) -> Self {
        let stream = UnixStream::connect(path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Control {
            reader: BufReader::new(stream),
        }
    }
    fn ask(&mut self, req: Value) -> Value {
        let mut line = req.to_string();
        line.push('\n');
        self.reader.get_mut().write_all(line.as_bytes()).unwrap();
        let mut answer = String::new();
        self.reader.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap()
    }
}

fn probe(extra: Value) -> (Guest, Output) {
    let g = Guest::new();
    let child = g.spawn_with(extra);
    let out = finish(child);
    (g, out)
}

fn assert_clean_boot(g: &Guest, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(
        g.console().contains("kiln-firmware: booted\n"),
        "console: {}",
        g.console()
    );
    assert!(
        stderr.contains("kiln-vmm: guest boot time "),
        "stderr: {stderr}"
    );
    assert!(!g.sock().exists(), "control socket left behind");
}

#[test]
fn firmware_boots_with_one_vcpu_and_powers_off_through_the_i8042() {
    if !kvm_available() {
        return;
    }
    let (g, out) = probe(json!({
        "firmware": {"path": firmware(), "cmdline": "kiln.mode=probe virtio_mmio.device=4K@0xd0001000:5"}
    }));
    assert_clean_boot(&g, &out);
    assert!(g
        .console()
        .contains("kiln-firmware: virtio-mmio 0xd0001000 irq 5\n"));
}

#[test]
fn firmware_boots_with_two_vcpus() {
    if !kvm_available() {
        return;
    }
    let (g, out) = probe(json!({"vcpus": 2}));
    assert_clean_boot(&g, &out);
}

#[test]
fn firmware_boots_through_the_pvh_entry() {
    if !kvm_available() {
        return;
    }
    let (g, out) = probe(json!({
        "vcpus": 2,
        "firmware": {"path": firmware(), "cmdline": "kiln.mode=probe", "entry": "pvh"}
    }));
    assert_clean_boot(&g, &out);
}

#[test]
fn console_goes_to_stdout_when_asked() {
    if !kvm_available() {
        return;
    }
    let (_g, out) = probe(json!({"console": {"stdout": true}}));
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("kiln-firmware: booted\n"));
}

#[test]
fn unknown_mode_prints_an_error_and_powers_off() {
    if !kvm_available() {
        return;
    }
    let (g, out) =
        probe(json!({"firmware": {"path": firmware(), "cmdline": "kiln.mode=nonsense"}}));
    assert_eq!(out.status.code(), Some(0));
    assert!(g
        .console()
        .contains("kiln-firmware: error: unknown mode nonsense\n"));
}

#[test]
fn shutdown_through_the_control_socket_is_clean() {
    if !kvm_available() {
        return;
    }
    let g = Guest::new();
    let mut child =
        g.spawn_with(json!({"firmware": {"path": firmware(), "cmdline": "kiln.mode=idle"}}));
    g.wait_console(&mut child, "kiln-firmware: booted\n");
    let mut c = Control::connect(&g.sock());
    assert_eq!(c.ask(json!({"action": "state"}))["state"], "running");
    let a = c.ask(json!({"action": "shutdown", "timeout_ms": 10000}));
    assert_eq!(a["ok"], true);
    assert_eq!(a["state"], "stopping");
    let out = finish(child);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(g.console().contains("ctrl-alt-del, powering off"));
    assert!(!g.sock().exists());
}

#[test]
fn shutdown_of_a_deaf_guest_is_forced_after_the_timeout() {
    if !kvm_available() {
        return;
    }
    let g = Guest::new();
    let mut child =
        g.spawn_with(json!({"firmware": {"path": firmware(), "cmdline": "kiln.mode=hang"}}));
    g.wait_console(&mut child, "kiln-firmware: booted\n");
    let mut c = Control::connect(&g.sock());
    assert_eq!(
        c.ask(json!({"action": "shutdown", "timeout_ms": 200}))["ok"],
        true
    );
    let out = finish(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("stopped after the timeout"), "{stderr}");
    assert!(!g.sock().exists());
}

#[test]
fn pause_stops_the_vcpus_and_resume_restarts_them() {
    if !kvm_available() {
        return;
    }
    let g = Guest::new();
    let mut child = g.spawn_with(json!({
        "vcpus": 2,
        "firmware": {"path": firmware(), "cmdline": "kiln.mode=idle"}
    }));
    g.wait_console(&mut child, "kiln-firmware: booted\n");
    let mut c = Control::connect(&g.sock());
    let exits = |c: &mut Control| {
        c.ask(json!({"action": "metrics"}))["metrics"]["exits_total"]
            .as_u64()
            .unwrap()
    };

    let a = c.ask(json!({"action": "pause"}));
    assert_eq!(a["state"], "paused", "{a}");
    assert_eq!(c.ask(json!({"action": "state"}))["state"], "paused");
    // The idle guest polls the i8042 (an exit each time) whenever it runs.
    let paused_at = exits(&mut c);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(exits(&mut c), paused_at, "the guest ran while paused");

    assert_eq!(c.ask(json!({"action": "resume"}))["state"], "running");
    let deadline = Instant::now() + Duration::from_secs(10);
    while exits(&mut c) == paused_at {
        assert!(
            Instant::now() < deadline,
            "the guest did not run again after resume"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Shutting down a paused-then-resumed guest still works.
    assert_eq!(c.ask(json!({"action": "pause"}))["state"], "paused");
    assert_eq!(c.ask(json!({"action": "shutdown"}))["ok"], true);
    let out = finish(child);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_report_the_boot_timer_exits_and_memory() {
    if !kvm_available() {
        return;
    }
    let g = Guest::new();
    let mut child =
        g.spawn_with(json!({"firmware": {"path": firmware(), "cmdline": "kiln.mode=idle"}}));
    g.wait_console(&mut child, "kiln-firmware: booted\n");
    let mut c = Control::connect(&g.sock());
    // The boot-timer write follows the booted line; wait for it to land.
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = c.ask(json!({"action": "metrics"}));
        assert_eq!(m["ok"], true, "{m}");
        // ... and for the idle loop's first i8042 poll.
        if m["metrics"]["boot_time_us"].is_u64()
            && m["metrics"]["exits"]["io_in"].as_u64() > Some(0)
        {
            break m["metrics"].clone();
        }
        assert!(Instant::now() < deadline, "no boot time reported: {m}");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(m["boot_time_us"].as_u64().unwrap() > 0);
    assert!(m["boot_time_us"].as_u64().unwrap() <= m["uptime_us"].as_u64().unwrap());
    assert!(m["exits"]["mmio_write"].as_u64().unwrap() >= 1, "{m}");
    assert!(m["exits"]["io_in"].as_u64().unwrap() >= 1, "{m}");
    let rss = m["rss_kib"].as_u64().unwrap();
    let guest = m["guest_resident_kib"].as_u64().unwrap();
    assert!(guest > 0 && guest < 64 * 1024, "{m}");
    assert_eq!(m["overhead_kib"].as_u64().unwrap(), rss - guest);
    assert_eq!(m["memory_mib"], 64);
    let bad = c.ask(json!({"action": "explode"}));
    assert_eq!(bad["ok"], false);
    assert!(bad["error"].as_str().unwrap().contains("bad request"));
    c.ask(json!({"action": "shutdown"}));
    assert_eq!(finish(child).status.code(), Some(0));
}

#[test]
fn sigterm_stops_the_vm_and_removes_the_socket() {
    if !kvm_available() {
        return;
    }
    let g = Guest::new();
    let mut child =
        g.spawn_with(json!({"firmware": {"path": firmware(), "cmdline": "kiln.mode=idle"}}));
    g.wait_console(&mut child, "kiln-firmware: booted\n");
    assert!(g.sock().exists());
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = finish(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("terminated by a signal"), "{stderr}");
    assert!(!g.sock().exists(), "control socket left behind");
}

#[test]
fn a_guest_exception_ends_the_vm_as_a_crash() {
    if !kvm_available() {
        return;
    }
    let (g, out) = probe(json!({"firmware": {"path": firmware(), "cmdline": "kiln.mode=fault"}}));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("guest triple-faulted"), "{stderr}");
    assert!(g.console().contains("kiln-firmware: fault\n"));
    assert!(!g.sock().exists());
}

/// Run kiln-vmm on a raw config text; expect exit 1 and exactly one line.
fn expect_config_error(g: &Guest, config_text: Option<&str>, wanted: &str) {
    let path = g.dir.path().join("bad.json");
    if let Some(text) = config_text {
        std::fs::write(&path, text).unwrap();
    }
    let out = Command::new(VMM)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("kiln-vmm: "), "{stderr}");
    assert!(stderr.contains(wanted), "wanted {wanted:?} in {stderr}");
    assert!(!g.sock().exists(), "control socket left behind");
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_configs_give_one_clear_line_and_leave_nothing_behind() {
    let g = Guest::new();
    let fw = firmware();
    let sock = g.sock();
    let cfg = |v: Value| v.to_string();
    expect_config_error(&g, None, "cannot read config");
    expect_config_error(&g, Some("{\"vcpus\": "), "bad config JSON");
    expect_config_error(
        &g,
        Some(&cfg(json!({"vcpu": 1, "firmware": {"path": fw}}))),
        "unknown field",
    );
    expect_config_error(
        &g,
        Some(&cfg(
            json!({"memory_mib": 0, "firmware": {"path": fw}, "control_socket": sock}),
        )),
        "memory_mib must be between",
    );
    expect_config_error(
        &g,
        Some(&cfg(
            json!({"vcpus": 0, "firmware": {"path": fw}, "control_socket": sock}),
        )),
        "vcpus must be between",
    );
    expect_config_error(
        &g,
        Some(&cfg(
            json!({"firmware": {"path": "/nonexistent/kiln-firmware"}, "control_socket": sock}),
        )),
        "does not exist",
    );
    expect_config_error(
        &g,
        Some(&cfg(
            json!({"firmware": {"path": fw}, "nics": [{"tap": "tap/0"}], "control_socket": sock}),
        )),
        "NIC tap name",
    );
    expect_config_error(
        &g,
        Some(&cfg(
            json!({"firmware": {"path": fw}, "cpuid_mask": ["warp-drive"], "control_socket": sock}),
        )),
        "unknown CPUID feature",
    );
    if !kvm_available() {
        return;
    }
    // An image bigger than the guest's RAM: fails at load, after KVM was opened.
    let big = g.dir.path().join("big.img");
    std::fs::write(&big, vec![0u8; 12 << 20]).unwrap();
    expect_config_error(
        &g,
        Some(&cfg(
            json!({"memory_mib": 8, "kernel": {"path": big}, "control_socket": sock}),
        )),
        "too little memory",
    );
    // A file that is neither ELF nor bzImage.
    let junk = g.dir.path().join("junk.img");
    std::fs::write(&junk, vec![0x5au8; 64 << 10]).unwrap();
    expect_config_error(
        &g,
        Some(&cfg(
            json!({"kernel": {"path": junk}, "control_socket": sock}),
        )),
        "cannot load",
    );
}

#[test]
fn usage_errors_exit_non_zero() {
    let out = Command::new(VMM).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: kiln-vmm --config FILE"));
}

/// The `Cpus_allowed_list` of every thread of `pid`, by thread id and name.
fn thread_cpus(pid: u32) -> Vec<(u32, String, String)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let tid: u32 = t.file_name().to_str().unwrap().parse().unwrap();
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or("")
            .trim()
            .to_string();
        out.push((tid, comm.trim().to_string(), cpus));
    }
    out
}

#[test]
fn vcpus_and_queue_threads_run_on_the_cpus_the_config_names() {
    if !kvm_available() {
        return;
    }
    let allowed = kiln_vmm::affinity::allowed_cpus().unwrap();
    let (first, last) = (allowed[0], allowed[allowed.len() - 1]);
    let g = Guest::new();
    let disk = g.disk("d.raw", 1 << 20, 0);
    let mut child = g.spawn_with(json!({
        "vcpus": 2,
        "vcpu_affinity": [[last], [first]],
        "firmware": {"path": firmware(), "cmdline": "kiln.mode=blk-bench qd=1 seconds=1 kiln.after=idle"},
        "disks": [{"path": disk, "queue_affinity": [first]}],
    }));
    g.wait_console(&mut child, "blk-bench rw=");
    let threads = thread_cpus(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let cpus_of = |pick: &dyn Fn(u32, &str) -> bool| -> Vec<String> {
        threads
            .iter()
            .filter(|(tid, name, _)| pick(*tid, name))
            .map(|(_, _, c)| c.clone())
            .collect()
    };
    let pid = child.id();
    // vCPU 0 runs on the main thread, vCPU 1 on "vcpu1".
    assert_eq!(
        cpus_of(&|tid, _| tid == pid),
        [last.to_string()],
        "{threads:?}"
    );
    assert_eq!(
        cpus_of(&|_, n| n == "vcpu1"),
        [first.to_string()],
        "{threads:?}"
    );
    assert_eq!(
        cpus_of(&|_, n| n.starts_with("blk-")),
        [first.to_string()],
        "{threads:?}"
    );
    // Threads the config says nothing of stay unpinned.
    let unpinned = cpus_of(&|_, n| n == "vmm");
    assert_eq!(unpinned.len(), 1, "{threads:?}");
    if allowed.len() > 1 {
        assert_ne!(unpinned[0], last.to_string(), "{threads:?}");
    }
}
