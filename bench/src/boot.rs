//! `kiln-bench boot`: spawn → `kiln-firmware: booted` on the console, for
//! kiln-vmm and, in the same run, QEMU microvm booting the same ELF.
//!
//! - kiln: N sequential runs of `kiln-vmm` (probe job, console on stdout);
//!   the time runs from just before `spawn` to the booted line arriving on
//!   the stdout pipe. The VMM's own boot-timer figure (µs from its start to
//!   the guest's boot-timer write) is read from its stderr.
//! - qemu: the same ELF through its PVH note on `-M microvm`, serial on
//!   stdio, `isa-debug-exit` at port 0xf4 to power off.
//! - overhead: a few idle guests; `metrics` over the control socket gives
//!   the VMM's RSS minus the guest RAM resident (mincore), i.e. what the VMM
//!   itself costs.
//! - parallel: P guests spawned at once; every one must boot and exit 0.
//! - Throughout, the bench holds an idle VM ([`KvmKeeper`]), as kiln-node
//!   does: without any VM on the host, KVM rewrites kernel text at every
//!   VM's creation and exit (see `kiln_vmm::kvm::keeper`). `--cold-kvm`
//!   measures without it. QEMU runs under the same conditions.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde_json::{json, Value};

use kiln_vmm::kvm::keeper::KvmKeeper;

use crate::report::Report;
use crate::scratch::{GuestBinaries, Scratch};
use crate::stats::summarize;

const BOOTED: &str = "kiln-firmware: booted";
/// A guest that has not booted by then counts as a failure.
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Args, Debug)]
pub struct BootArgs {
    /// Also measure this reference in the same run (only `qemu`).
    #[arg(long)]
    pub vs: Option<String>,
    /// Sequential boots per system.
    #[arg(long, default_value_t = 30)]
    pub runs: usize,
    /// Also start this many kiln guests at once and count failures (0: skip).
    #[arg(long, default_value_t = 0)]
    pub parallel: usize,
    /// Guest memory for every system.
    #[arg(long, default_value_t = 128)]
    pub memory_mib: u64,
    #[command(flatten)]
    pub binaries: GuestBinaries,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Do not hold an idle VM while measuring (every VM then starts on a
    /// host with no other VM, as on a node with no guests and no keeper).
    #[arg(long)]
    pub cold_kvm: bool,
}

/// One boot: spawn → booted line, and the VMM's boot-timer value if any.
struct Boot {
    ms: f64,
    timer_us: Option<f64>,
}

/// Write a kiln-vmm config for `mode` into `scratch`; returns its path.
fn kiln_config(a: &Setup, scratch: &Scratch, mode: &str, socket: bool) -> anyhow::Result<PathBuf> {
    let mut c = json!({
        "vcpus": 1,
        "memory_mib": a.memory_mib,
        "firmware": {"path": a.firmware, "cmdline": format!("kiln.mode={mode}")},
        "console": {"stdout": true},
    });
    if socket {
        c["control_socket"] = json!(scratch.dir.join("control.sock"));
    }
    let path = scratch.dir.join("vm.json");
    std::fs::write(&path, c.to_string())?;
    Ok(path)
}

/// Read `child`'s stdout until the booted line; returns when it came.
fn wait_booted(child: &mut Child, t0: Instant) -> anyhow::Result<f64> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout pipe"))?;
    let mut lines = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            bail!("console closed before the booted line");
        }
        if line.contains(BOOTED) {
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            // Keep draining so the guest never blocks on a full pipe.
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut lines, &mut std::io::sink());
            });
            return Ok(ms);
        }
    }
}

/// Wait for exit with a deadline; kill on timeout.
fn wait_exit(child: &mut Child) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("did not exit within {BOOT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Wait for the exit, then collect stderr.
fn finish(child: &mut Child) -> (anyhow::Result<std::process::ExitStatus>, String) {
    let status = wait_exit(child);
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    (status, stderr)
}

struct Setup {
    vmm: PathBuf,
    firmware: PathBuf,
    memory_mib: u64,
}

fn kiln_boot(a: &Setup, tag: &str) -> anyhow::Result<Boot> {
    let scratch = Scratch::new(&std::env::temp_dir(), &format!("boot-{tag}"))?;
    let cfg = kiln_config(a, &scratch, "probe", false)?;
    let mut cmd = Command::new(&a.vmm);
    cmd.arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd.spawn().context("spawning kiln-vmm")?;
    let booted = wait_booted(&mut child, t0);
    let (status, stderr) = finish(&mut child);
    let ms = booted.with_context(|| format!("kiln-vmm: {}", stderr.trim()))?;
    let status = status?;
    if !status.success() {
        bail!("kiln-vmm exited with {status}: {}", stderr.trim());
    }
    let timer_us = stderr
        .lines()
        .find_map(|l| l.strip_prefix("kiln-vmm: guest boot time "))
        .and_then(|l| l.trim_end_matches(" us").parse::<f64>().ok());
    Ok(Boot { ms, timer_us })
}

fn qemu_boot(a: &Setup) -> anyhow::Result<Boot> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-M",
        "microvm",
        "-accel",
        "kvm",
        "-cpu",
        "host,-arch-capabilities",
    ])
    .args(["-m", &a.memory_mib.to_string()])
    .args([
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
    ])
    .args(["-serial", "stdio", "-monitor", "none"])
    .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
    .arg("-kernel")
    .arg(&a.firmware)
    .args(["-append", "kiln.mode=probe"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd.spawn().context("spawning qemu-system-x86_64")?;
    let booted = wait_booted(&mut child, t0);
    let (status, stderr) = finish(&mut child);
    let ms = booted.with_context(|| format!("qemu: {}", stderr.trim()))?;
    // isa-debug-exit: the guest writes 0, QEMU exits with (0 << 1) | 1 = 1.
    match status?.code() {
        Some(0) | Some(1) => Ok(Boot { ms, timer_us: None }),
        other => bail!("qemu exited with {other:?}: {}", stderr.trim()),
    }
}

/// Boot an idle guest, read its metrics over the control socket, shut it down.
fn kiln_overhead(a: &Setup, tag: &str) -> anyhow::Result<Value> {
    let scratch = Scratch::new(&std::env::temp_dir(), &format!("boot-{tag}"))?;
    let cfg = kiln_config(a, &scratch, "idle", true)?;
    let mut child = Command::new(&a.vmm)
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning kiln-vmm")?;
    let result = (|| -> anyhow::Result<Value> {
        wait_booted(&mut child, Instant::now())?;
        let stream = UnixStream::connect(scratch.dir.join("control.sock"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(stream);
        let mut ask = |req: Value| -> anyhow::Result<Value> {
            reader.get_mut().write_all(format!("{req}\n").as_bytes())?;
            let mut line = String::new();
            reader.read_line(&mut line)?;
            Ok(serde_json::from_str(&line)?)
        };
        let m = ask(json!({"action": "metrics"}))?;
        ask(json!({"action": "shutdown", "timeout_ms": 5000}))?;
        m.get("metrics")
            .cloned()
            .ok_or_else(|| anyhow!("bad metrics answer: {m}"))
    })();
    let status = wait_exit(&mut child);
    let m = result?;
    let status = status?;
    if !status.success() {
        bail!("idle kiln-vmm exited with {status}");
    }
    Ok(m)
}

/// P guests at once: (failures, wall ms, per-guest spawn→booted ms).
fn kiln_parallel(a: &Setup, p: usize) -> (usize, f64, Vec<f64>, Vec<String>) {
    let t0 = Instant::now();
    let results: Vec<anyhow::Result<Boot>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..p)
            .map(|i| s.spawn(move || kiln_boot(a, &format!("par{i}"))))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("runner thread died")))
            })
            .collect()
    });
    let wall = t0.elapsed().as_secs_f64() * 1000.0;
    let mut errors = Vec::new();
    let mut ms = Vec::new();
    for r in results {
        match r {
            Ok(b) => ms.push(b.ms),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    (errors.len(), wall, ms, errors)
}

fn summary_json(samples: &[f64]) -> Value {
    match summarize(samples) {
        Some(s) => json!({
            "median_ms": s.median, "p90_ms": s.p90, "min_ms": s.min, "max_ms": s.max,
            "spread": s.spread, "n": s.n,
        }),
        None => json!({"median_ms": null}),
    }
}

pub fn run(args: BootArgs) -> anyhow::Result<()> {
    let (vmm, firmware) = args.binaries.resolve()?;
    let setup = Setup {
        vmm,
        firmware,
        memory_mib: args.memory_mib,
    };
    if !Path::new("/dev/kvm").exists() {
        bail!("/dev/kvm is missing: kiln-bench boot needs KVM");
    }
    let runs = args.runs.max(1);
    let mut report = Report::new("boot", runs);
    let keeper = if args.cold_kvm {
        None
    } else {
        Some(KvmKeeper::new().context("holding an idle VM (try --cold-kvm)")?)
    };

    // Warm the page cache for both binaries and the firmware.
    let _ = kiln_boot(&setup, "warm");
    let mut kiln_ms = Vec::new();
    let mut timer_us = Vec::new();
    let mut kiln_errors = Vec::new();
    for i in 0..runs {
        match kiln_boot(&setup, &format!("seq{i}")) {
            Ok(b) => {
                kiln_ms.push(b.ms);
                timer_us.extend(b.timer_us);
            }
            Err(e) => kiln_errors.push(format!("{e:#}")),
        }
    }
    let mut overhead_kib = Vec::new();
    let mut rss_kib = Vec::new();
    for i in 0..3 {
        match kiln_overhead(&setup, &format!("idle{i}")) {
            Ok(m) => {
                overhead_kib.extend(m["overhead_kib"].as_f64());
                rss_kib.extend(m["rss_kib"].as_f64());
            }
            Err(e) => kiln_errors.push(format!("overhead: {e:#}")),
        }
    }
    let mut kiln = summary_json(&kiln_ms);
    kiln["failures"] = json!(kiln_errors.len());
    if !kiln_errors.is_empty() {
        kiln["errors"] = json!(kiln_errors.iter().take(5).collect::<Vec<_>>());
    }
    kiln["boot_timer_median_us"] = json!(summarize(&timer_us).map(|s| s.median));
    let overhead = summarize(&overhead_kib).map(|s| s.median / 1024.0);
    kiln["overhead_rss_mib"] = json!(overhead.map(|m| (m * 100.0).round() / 100.0));
    kiln["rss_mib"] =
        json!(summarize(&rss_kib).map(|s| (s.median / 1024.0 * 100.0).round() / 100.0));
    kiln["memory_mib"] = json!(args.memory_mib);
    kiln["kvm_keeper"] = json!(keeper.is_some());
    report.result("kiln", kiln);

    if args.parallel > 0 {
        let (failures, wall, ms, errors) = kiln_parallel(&setup, args.parallel);
        let mut par = summary_json(&ms);
        par["guests"] = json!(args.parallel);
        par["failures"] = json!(failures);
        par["wall_ms"] = json!(wall);
        if !errors.is_empty() {
            par["errors"] = json!(errors.iter().take(5).collect::<Vec<_>>());
        }
        report.result("kiln_parallel", par);
    }

    match args.vs.as_deref() {
        None => {}
        Some("qemu") => {
            let found = Command::new("qemu-system-x86_64")
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !found {
                report.unavailable(
                    "qemu",
                    "qemu-system-x86_64 not found (apt-get install qemu-system-x86)",
                );
            } else {
                let _ = qemu_boot(&setup);
                let mut q_ms = Vec::new();
                let mut q_errors = Vec::new();
                for _ in 0..runs {
                    match qemu_boot(&setup) {
                        Ok(b) => q_ms.push(b.ms),
                        Err(e) => q_errors.push(format!("{e:#}")),
                    }
                }
                if q_ms.is_empty() {
                    let why = q_errors.first().cloned().unwrap_or_default();
                    report.unavailable("qemu", &format!("every QEMU boot failed: {why}"));
                } else {
                    let mut q = summary_json(&q_ms);
                    q["failures"] = json!(q_errors.len());
                    q["machine"] = json!("microvm, PVH entry, -cpu host,-arch-capabilities");
                    report.result("qemu", q);
                    let (qm, km) = (
                        summarize(&q_ms).map(|s| s.median).unwrap_or(f64::NAN),
                        summarize(&kiln_ms).map(|s| s.median).unwrap_or(f64::NAN),
                    );
                    report.ratio("qemu_over_kiln_boot", qm, km);
                }
            }
        }
        Some(other) => bail!("unknown reference {other:?} (only \"qemu\")"),
    }
    drop(keeper);
    report.print(args.json);
    Ok(())
}
