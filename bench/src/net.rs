//! `kiln-bench net`: UDP through virtio-net on a TAP, kiln-vmm against QEMU
//! microvm (`virtio-net-device`, TAP, no vhost) running the same firmware
//! job, in the same run.
//!
//! Set-up: a network namespace of this run (`kiln-bnet-<pid>`, deleted by a
//! Drop guard even on failure; IPv6 off so only the bench's frames flow). The
//! VMM runs in it (`ip netns exec`) and creates the TAP `kbtap0` there; once
//! the guest prints `net-bench ready`, the TAP gets 10.98.0.1/24 and goes up.
//! The guest is 10.98.0.2. No traffic leaves the namespace.
//!
//! The guest runs `kiln.mode=net-bench ip=10.98.0.2/24 dst=10.98.0.1
//! port=9999 size=S seconds=T`: it resolves 10.98.0.1 by ARP, then for T
//! seconds sends S-byte UDP payloads to 10.98.0.1:9999 as fast as its tx ring
//! takes them while counting UDP that arrives for it, and prints one line.
//! For each payload size (64 and 1400 bytes) two guests are booted per run:
//!
//! - `g2h` (guest→host): nothing is sent to the guest. A UDP socket in the
//!   namespace (bound to :9999, on a thread that entered it with setns)
//!   counts the S-byte datagrams that arrive, from the first to the last;
//!   pps = (count − 1) / (last − first). `guest_tx_pps` is the frames the
//!   guest's tx ring accepted over the same window (the gap to `pps` is
//!   what the host side dropped).
//! - `h2g` (host→guest): once the first guest datagram reaches the
//!   namespace (the guest is in its measuring loop), a thread in the
//!   namespace sends S-byte datagrams to 10.98.0.2:9999 for T seconds
//!   with a connected socket (`host_sent_pps` is what send() accepted);
//!   the guest's printed rx_frames is the count. The
//!   firmware cannot stop sending, so the guest transmits at the same time:
//!   this direction is measured under bidirectional load.
//!
//! All rates use the host's clock over the window in which the guest's
//! datagrams arrive (first to last): g2h pps = host-counted datagrams over
//! it, h2g pps = the guest's printed rx_frames over it. Guests time their
//! window with the TSC at the rate the bench measured on the host
//! (`tsc_khz=`; QEMU microvm has no port 0x61, so the firmware cannot time
//! the PIT there); their printed rates are kept as `guest_clock_pps`. A
//! 1-second calibration boot per system still checks how many guest seconds
//! make `--seconds` host seconds (`guest_clock` in the results), and the
//! rates use the host's clock over the real window either way.
//!
//! Gbit/s counts Ethernet frame bytes (14 + 28 + S per datagram), as the
//! firmware does. Each figure is the median over `--runs`.

use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde_json::{json, Map, Value};

use crate::report::Report;
use crate::scratch::{GuestBinaries, Scratch};
use crate::stats::summarize;

#[derive(Args, Debug)]
pub struct NetArgs {
    /// References measured in the same run: only `qemu`.
    #[arg(long, value_delimiter = ',')]
    pub vs: Vec<String>,
    /// Runs per case and system (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Seconds each guest sends (and the host sends, for h2g).
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    #[command(flatten)]
    pub binaries: GuestBinaries,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

const SIZES: [usize; 2] = [64, 1400];
const TAP: &str = "kbtap0";
const MAC: &str = "52:54:00:6b:62:01";
const HOST_IP: &str = "10.98.0.1";
const GUEST_IP: &str = "10.98.0.2";
const PORT: u16 = 9999;

/// A network namespace of this run, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> anyhow::Result<Netns> {
        let name = format!("kiln-bnet-{}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]))
            .context("creating a network namespace (needs root)")?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        run_ok(
            Command::new("ip")
                .args(["netns", "exec", &ns.name, "sysctl", "-q", "-w"])
                .args([
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ]),
        )?;
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        run_ok(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Move the calling thread into the namespace.
    fn enter(path: &Path) -> anyhow::Result<()> {
        let f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
        // SAFETY: setns on an open namespace fd changes only this thread's
        // network namespace; the fd outlives the call.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn run_ok(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A VMM process, killed on drop.
struct Guest(Child);

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One direction's figures from one run.
#[derive(Default, Clone, Copy)]
struct Sample {
    pps: f64,
    gbps: f64,
    /// What the guest's tx ring accepted (g2h) or the host sent (h2g), pps.
    offered_pps: f64,
    /// Seconds between the first and last guest datagram seen by the host.
    window_s: f64,
    /// The same direction's pps as the guest computed it (its own clock).
    guest_pps: f64,
}

/// What the host-side sink saw.
#[derive(Default)]
struct Sink {
    count: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Sink {
    fn window(&self) -> f64 {
        match (self.first, self.last) {
            (Some(a), Some(b)) => (b - a).as_secs_f64(),
            _ => 0.0,
        }
    }

    fn pps(&self) -> f64 {
        match (self.first, self.last) {
            (Some(a), Some(b)) if b > a && self.count > 1 => {
                (self.count - 1) as f64 / (b - a).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

fn frame_gbps(pps: f64, size: usize) -> f64 {
    pps * (14 + 28 + size) as f64 * 8.0 / 1e9
}

fn guest_cmdline(size: usize, seconds: u64) -> String {
    format!(
        "kiln.mode=net-bench ip={GUEST_IP}/24 dst={HOST_IP} port={PORT} size={size} seconds={seconds} {}",
        crate::tsc::guest_arg()
    )
}

fn kiln_cmd(vmm: &Path, fw: &Path, scratch: &Scratch, cmdline: &str) -> anyhow::Result<Command> {
    let cfg = json!({
        "vcpus": 1,
        "memory_mib": 128,
        "firmware": {"path": fw, "cmdline": cmdline},
        "nics": [{"tap": TAP, "mac": MAC, "id": "eth0"}],
        "console": {"stdout": true},
    });
    let path = scratch.dir.join("vm.json");
    std::fs::write(&path, cfg.to_string())?;
    let mut cmd = Command::new(vmm);
    cmd.arg("--config").arg(path);
    Ok(cmd)
}

fn qemu_cmd(fw: &Path, cmdline: &str) -> Command {
    let mut cmd = crate::blk::qemu_microvm(fw, cmdline);
    cmd.arg("-netdev")
        .arg(format!(
            "tap,id=n0,ifname={TAP},script=no,downscript=no,vhost=off"
        ))
        .arg("-device")
        .arg(format!("virtio-net-device,netdev=n0,mac={MAC}"));
    cmd
}

/// Value of `key=` in the firmware's result line.
fn field(line: &str, key: &str) -> anyhow::Result<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .ok_or_else(|| anyhow!("no {key} in {line:?}"))?
        .parse::<f64>()
        .map_err(|e| anyhow!("bad {key} in {line:?}: {e}"))
}

/// Boot one guest in `ns` running net-bench for `guest_seconds` of its own
/// clock; with `blast`, the host sends to it for `seconds` while it measures.
fn one_run(
    ns: &Netns,
    vm: Command,
    size: usize,
    seconds: u64,
    blast: bool,
    guest_seconds: u64,
) -> anyhow::Result<Sample> {
    let ns_path = ns.path();
    let stop = Arc::new(AtomicBool::new(false));
    // The sink: bound before the guest boots.
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let sink = {
        let (stop, path) = (stop.clone(), ns_path.clone());
        std::thread::spawn(move || -> Sink {
            let mut sink = Sink::default();
            let sock = Netns::enter(&path).and_then(|()| {
                let s = UdpSocket::bind(("0.0.0.0", PORT))?;
                s.set_read_timeout(Some(Duration::from_millis(200)))?;
                Ok(s)
            });
            let sock = match sock {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return sink;
                }
            };
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    if n != size {
                        continue;
                    }
                    let now = Instant::now();
                    if sink.first.is_none() {
                        sink.first = Some(now);
                        let _ = go_tx.send(());
                    }
                    sink.last = Some(now);
                    sink.count += 1;
                }
            }
            sink
        })
    };
    ready_rx
        .recv()
        .map_err(|_| anyhow!("the sink thread died"))??;
    // The sender: waits for the guest's first datagram, then sends for `seconds`.
    let sender = blast.then(|| {
        let (stop, path) = (stop.clone(), ns_path.clone());
        std::thread::spawn(move || -> anyhow::Result<u64> {
            Netns::enter(&path)?;
            let s = UdpSocket::bind(("0.0.0.0", 0))?;
            loop {
                if stop.load(Ordering::Relaxed) {
                    return Ok(0);
                }
                if go_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                    break;
                }
            }
            // The TAP has its address now: the guest's datagram came through it.
            s.connect((GUEST_IP, PORT))?;
            let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let end = Instant::now() + Duration::from_secs(seconds);
            let mut sent = 0u64;
            while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    if s.send(&payload).is_ok() {
                        sent += 1;
                    }
                }
            }
            Ok(sent)
        })
    });
    let result = drive_guest(ns, vm, guest_seconds.max(seconds));
    stop.store(true, Ordering::Relaxed);
    let sink = sink
        .join()
        .map_err(|_| anyhow!("the sink thread panicked"))?;
    let sent = match sender {
        Some(h) => h
            .join()
            .map_err(|_| anyhow!("the sender thread panicked"))??,
        None => 0,
    };
    let line = result?;
    let window = sink.window();
    if sink.count < 2 || window <= 0.0 {
        bail!("too little from the guest arrived in the namespace: {line}");
    }
    let pps = if blast {
        let rx = field(&line, "rx_frames")?;
        if rx == 0.0 {
            bail!("the guest received nothing ({sent} sent): {line}");
        }
        rx / window
    } else {
        sink.pps()
    };
    Ok(Sample {
        pps,
        gbps: frame_gbps(pps, size),
        offered_pps: if blast {
            sent as f64 / seconds.max(1) as f64
        } else {
            field(&line, "tx_frames")? / window
        },
        window_s: window,
        guest_pps: field(&line, if blast { "rx_pps" } else { "tx_pps" })?,
    })
}

/// Spawn the VMM in the namespace, configure the TAP once the guest is
/// ready, and return its result line.
fn drive_guest(ns: &Netns, vm: Command, seconds: u64) -> anyhow::Result<String> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name])
        .arg(vm.get_program())
        .args(vm.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut guest = Guest(cmd.spawn().context("spawning the VMM")?);
    let stdout = guest
        .0
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout pipe"))?;
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let outcome = (|| -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = String::new();
        let next = |deadline: Instant, seen: &mut String| -> anyhow::Result<String> {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .map_err(|_| anyhow!("no net-bench line in time; console: {}", seen.trim()))?;
            seen.push_str(&line);
            seen.push('\n');
            Ok(line)
        };
        loop {
            let line = next(deadline, &mut seen)?;
            if line.starts_with("net-bench ready") {
                break;
            }
            if line.starts_with("net-bench:") || line.starts_with("net:") {
                bail!("the guest failed: {line}");
            }
        }
        ns.ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", TAP])?;
        ns.ip(&["link", "set", TAP, "up"])?;
        let deadline = Instant::now() + Duration::from_secs(seconds + 30);
        loop {
            let line = next(deadline, &mut seen)?;
            if line.starts_with("net-bench size=") {
                return Ok(line);
            }
            if line.starts_with("net-bench:") {
                bail!("the guest failed: {line}");
            }
        }
    })();
    if outcome.is_err() {
        let _ = guest.0.kill();
        let _ = guest.0.wait();
        let mut stderr = String::new();
        if let Some(mut e) = guest.0.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        return outcome.with_context(|| format!("stderr: {}", stderr.trim()));
    }
    outcome
}

fn median(samples: &[Sample], f: fn(&Sample) -> f64) -> f64 {
    let v: Vec<f64> = samples.iter().map(f).collect();
    summarize(&v).map_or(0.0, |s| s.median)
}

fn round(x: f64, places: i32) -> Value {
    let p = 10f64.powi(places);
    Value::from((x * p).round() / p)
}

pub fn run(a: NetArgs) -> anyhow::Result<()> {
    let (vmm, fw) = a.binaries.resolve()?;
    for v in &a.vs {
        if v != "qemu" {
            bail!("--vs takes only qemu, not {v:?}");
        }
    }
    let scratch = Scratch::new(&std::env::temp_dir(), "net")?;
    let ns = Netns::new()?;
    let mut report = Report::new("net", a.runs);
    let mut systems: Vec<&str> = vec!["kiln"];
    if a.vs.iter().any(|v| v == "qemu") {
        let found = Command::new("qemu-system-x86_64")
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if found {
            systems.push("qemu");
        } else {
            report.unavailable(
                "qemu",
                "qemu-system-x86_64 not found (apt-get install qemu-system-x86)",
            );
        }
    }
    // (system, "g2h"/"h2g", size) → median pps.
    let mut pps: std::collections::HashMap<(String, &str, usize), f64> = Default::default();
    for system in &systems {
        let mut cases = Map::new();
        // The guest times its window with the TSC, calibrated against the
        // PIT; under QEMU microvm that clock runs fast (its "2 s" lasted
        // ~0.15 s of host time here). A 1-second calibration boot measures
        // host seconds per guest second, and guests are then asked for as
        // many guest seconds as make `--seconds` on the host's clock.
        let cmdline = guest_cmdline(64, 1);
        let vm = match *system {
            "kiln" => kiln_cmd(&vmm, &fw, &scratch, &cmdline)?,
            _ => qemu_cmd(&fw, &cmdline),
        };
        let scale = match one_run(&ns, vm, 64, 1, false, 1) {
            Ok(s) => s.window_s,
            Err(e) => {
                report.unavailable(system, &format!("calibration boot: {e:#}"));
                continue;
            }
        };
        let guest_seconds = ((a.seconds as f64 / scale.max(0.01)).round() as u64).max(1);
        cases.insert(
            "guest_clock".to_string(),
            json!({"host_s_per_guest_s": round(scale, 3), "guest_seconds": guest_seconds}),
        );
        for size in SIZES {
            for (dir, blast) in [("g2h", false), ("h2g", true)] {
                let name = format!("{dir}_{size}");
                let mut samples = Vec::new();
                let mut failure = None;
                for _ in 0..a.runs {
                    let t0 = Instant::now();
                    let cmdline = guest_cmdline(size, guest_seconds);
                    let vm = match *system {
                        "kiln" => kiln_cmd(&vmm, &fw, &scratch, &cmdline)?,
                        _ => qemu_cmd(&fw, &cmdline),
                    };
                    match one_run(&ns, vm, size, a.seconds, blast, guest_seconds) {
                        Ok(s) => samples.push(s),
                        Err(e) => {
                            failure = Some(format!("{e:#}"));
                            break;
                        }
                    }
                    if !a.json {
                        eprintln!(
                            "{system} {name} run done in {:.1} s",
                            t0.elapsed().as_secs_f64()
                        );
                    }
                }
                if let Some(why) = failure {
                    report.unavailable(&format!("{system}.{name}"), &why);
                    continue;
                }
                let p = median(&samples, |s| s.pps);
                pps.insert((system.to_string(), dir, size), p);
                let offered = if blast {
                    "host_sent_pps"
                } else {
                    "guest_tx_pps"
                };
                let mut v = json!({
                    "pps": round(p, 0),
                    "gbps": round(median(&samples, |s| s.gbps), 3),
                    "window_s": round(median(&samples, |s| s.window_s), 3),
                    "guest_clock_pps": round(median(&samples, |s| s.guest_pps), 0),
                    "runs": samples.len(),
                });
                v[offered] = round(median(&samples, |s| s.offered_pps), 0);
                cases.insert(name, v);
            }
        }
        report.result(system, Value::Object(cases));
    }
    if systems.contains(&"qemu") {
        for size in SIZES {
            for dir in ["g2h", "h2g"] {
                let get = |s: &str| pps.get(&(s.to_string(), dir, size)).copied();
                let (k, q) = (get("kiln").unwrap_or(0.0), get("qemu").unwrap_or(0.0));
                // The headline ratio: guest→host at 64 bytes.
                let name = if dir == "g2h" && size == 64 {
                    "kiln_over_qemu_pps_64".to_string()
                } else {
                    format!("kiln_over_qemu_pps_{dir}_{size}")
                };
                report.ratio(&name, k, q);
            }
        }
    }
    report.print(a.json);
    Ok(())
}
