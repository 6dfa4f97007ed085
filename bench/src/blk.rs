//! `kiln-bench blk`: block I/O through virtio-blk on a raw file, kiln-vmm
//! against the host itself (fio, io_uring, O_DIRECT, same file, same
//! settings) and QEMU microvm (`virtio-blk-device`, `aio=io_uring,cache=none`)
//! running the same firmware job, in the same run.
//!
//! - The file (default 1 GiB) is written in full first, so reads hit real
//!   blocks, not holes.
//! - Cases: 4 KiB randread and randwrite at QD1 and QD32, 128 KiB
//!   sequential read at QD8; each `--runs` times per system, medians and
//!   spreads reported. The systems take turns run by run (the first one
//!   rotates), so a slow minute of the shared disk hits them alike; each
//!   round's kiln/reference ratio is kept too.
//! - `--poll-us` (default 50) is kiln's disk `poll_us`: its queue thread
//!   polls while the guest keeps I/O coming. QEMU gets the same window
//!   through an iothread's adaptive polling (`poll-max-ns`); 0 turns both
//!   off.
//! - kiln's guest RAM asks for transparent huge pages (as QEMU's does): a
//!   128 KiB O_DIRECT read then pins one page instead of 32.
//! - `--queues N` (default 1) gives both VMMs' disk N virtio-blk queues
//!   and the guest spreads its requests over them.
//! - `--placement auto` (default) runs kiln's vCPU off the CPUs that take
//!   the test disk's interrupts and its queue threads on them (kiln-vmm's
//!   `vcpu_affinity` / `queue_affinity`); the JSON's `settings.placement`
//!   says what was chosen, or why nothing. QEMU stays unpinned unless
//!   `--pin-qemu` (its threads pinned the same way right after spawn): here
//!   that made QEMU slower (47-49k vs 57-62k IOPS at QD32), so the default
//!   compares against its better setup.
//! - Guests run `kiln.mode=blk-bench rw=… bs=… qd=… seconds=… kiln.after=idle`
//!   and print one line (IOPS, MiB/s, p50/p99 completion latency); while the
//!   guest idles afterwards the VMM's threads' CPU time is read from /proc
//!   (all threads but the vCPU, which spins polling in the guest), giving VMM
//!   CPU per I/O; fio reports its own CPU.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde_json::{json, Map, Value};

use crate::placement::Placement;
use crate::report::Report;
use crate::scratch::{GuestBinaries, Scratch};
use crate::stats::summarize;

#[derive(Args, Debug)]
pub struct BlkArgs {
    /// References measured in the same run: `host`, `qemu` or `host,qemu`.
    #[arg(long, value_delimiter = ',')]
    pub vs: Vec<String>,
    /// Runs per case and system (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Size of the test file.
    #[arg(long, default_value_t = 1024)]
    pub file_mib: u64,
    /// Directory for the test file (default: the system temp directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Guests (both VMMs') poll this long without a completion before
    /// sleeping until the device interrupts; default: poll all the time.
    #[arg(long)]
    pub spin_us: Option<u64>,
    /// kiln's disk `poll_us` (its queue thread polls this long after
    /// activity) and QEMU's iothread `poll-max-ns` (in µs); 0: neither polls.
    #[arg(long, default_value_t = 50)]
    pub poll_us: u32,
    /// virtio-blk queues (both VMMs); the guest spreads its requests
    /// round-robin over them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4))]
    pub queues: u32,
    /// `auto`: kiln's vCPU runs off the CPUs that take the test disk's
    /// interrupts and its queue threads on them (see `placement`); `none`:
    /// the scheduler decides. fio is never pinned.
    #[arg(long, default_value = "auto", value_parser = ["auto", "none"])]
    pub placement: String,
    /// Pin QEMU's threads like kiln's (default: QEMU runs unpinned).
    #[arg(long)]
    pub pin_qemu: bool,
    /// Only these cases (default all): randread_qd1, randread_qd32,
    /// randwrite_qd1, randwrite_qd32, seqread_128k_qd8.
    #[arg(long, value_delimiter = ',')]
    pub cases: Vec<String>,
    #[command(flatten)]
    pub binaries: GuestBinaries,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One workload.
struct Case {
    name: &'static str,
    rw: &'static str,
    bs: u64,
    qd: u64,
}

const CASES: &[Case] = &[
    Case {
        name: "randread_qd1",
        rw: "randread",
        bs: 4096,
        qd: 1,
    },
    Case {
        name: "randread_qd32",
        rw: "randread",
        bs: 4096,
        qd: 32,
    },
    Case {
        name: "randwrite_qd1",
        rw: "randwrite",
        bs: 4096,
        qd: 1,
    },
    Case {
        name: "randwrite_qd32",
        rw: "randwrite",
        bs: 4096,
        qd: 32,
    },
    Case {
        name: "seqread_128k_qd8",
        rw: "read",
        bs: 128 * 1024,
        qd: 8,
    },
];

/// One run's figures.
#[derive(Default, Clone, Copy)]
struct Sample {
    iops: f64,
    mibps: f64,
    p50_us: f64,
    p99_us: f64,
    /// CPU µs per I/O of the VMM's non-vCPU threads (fio: fio itself).
    cpu_us_per_io: f64,
}

/// Write `mib` MiB of non-zero data and sync it.
fn make_file(path: &Path, mib: u64) -> anyhow::Result<()> {
    let mut f = std::fs::File::create(path)?;
    let mut chunk = vec![0u8; 1 << 20];
    for (i, b) in chunk.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(7);
    }
    for _ in 0..mib {
        f.write_all(&chunk)?;
    }
    f.sync_all()?;
    Ok(())
}

/// Parse `blk-bench ... iops=N mibps=X p50_us=Y p99_us=Z errors=E`.
fn parse_line(line: &str) -> anyhow::Result<(Sample, u64, u64)> {
    let field = |k: &str| -> anyhow::Result<f64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .ok_or_else(|| anyhow!("no {k} in {line:?}"))?
            .parse::<f64>()
            .map_err(|e| anyhow!("bad {k} in {line:?}: {e}"))
    };
    Ok((
        Sample {
            iops: field("iops")?,
            mibps: field("mibps")?,
            p50_us: field("p50_us")?,
            p99_us: field("p99_us")?,
            cpu_us_per_io: 0.0,
        },
        field("ios")? as u64,
        field("errors")? as u64,
    ))
}

/// The threads of `pid`: (thread id, name, its /proc directory).
fn threads(pid: u32) -> Vec<(u32, String, PathBuf)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let tid = t.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            Some((tid, comm.trim().to_string(), t.path()))
        })
        .collect()
}

/// CPU seconds (user + system) of `pid`'s threads that `skip` (given the
/// thread id and name) does not leave out.
fn thread_cpu_secs(pid: u32, skip: &dyn Fn(u32, &str) -> bool) -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as f64,
        _ => 100.0,
    };
    let mut ticks = 0u64;
    for (tid, name, dir) in threads(pid) {
        if skip(tid, &name) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the ")" that closes comm: state is field 3, utime 14, stime 15.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            ticks += num(11) + num(12);
        }
    }
    ticks as f64 / hz
}

/// Run a guest until its blk-bench line, read its VMM's thread CPU, stop it.
fn run_guest(
    mut cmd: Command,
    vcpu_thread: fn(pid: u32, tid: u32, name: &str) -> bool,
    seconds: u64,
    after_spawn: &dyn Fn(u32),
) -> anyhow::Result<Sample> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("spawning the VMM")?;
    after_spawn(child.id());
    let result = read_result(&mut child, seconds);
    let pid = child.id();
    let cpu = thread_cpu_secs(pid, &|tid, name| vcpu_thread(pid, tid, name));
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let (mut s, ios, errors) = result.with_context(|| format!("stderr: {}", stderr.trim()))?;
    if errors > 0 {
        bail!("{errors} of {ios} I/Os failed in the guest");
    }
    s.cpu_us_per_io = if ios > 0 { cpu * 1e6 / ios as f64 } else { 0.0 };
    Ok(s)
}

fn read_result(child: &mut Child, seconds: u64) -> anyhow::Result<(Sample, u64, u64)> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout pipe"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("blk-bench ") {
                let _ = tx.send(Ok(line));
                return;
            }
            if line.starts_with("blk") || line.contains("error") {
                seen.push_str(&line);
                seen.push('\n');
            }
        }
        let _ = tx.send(Err(seen));
    });
    let timeout = Duration::from_secs(seconds + 60);
    match rx.recv_timeout(timeout) {
        Ok(Ok(line)) => parse_line(&line),
        Ok(Err(seen)) => bail!("the guest ended without a result: {}", seen.trim()),
        Err(_) => bail!("no result within {timeout:?}"),
    }
}

/// The cases `names` asks for (all when empty).
fn selected(names: &[String]) -> impl Iterator<Item = &'static Case> + '_ {
    CASES
        .iter()
        .filter(move |c| names.is_empty() || names.iter().any(|n| n == c.name))
}

fn guest_cmdline(c: &Case, g: &Setup) -> String {
    let spin = g
        .spin_us
        .map(|us| format!(" spin_us={us}"))
        .unwrap_or_default();
    format!(
        "kiln.mode=blk-bench rw={} bs={} qd={} seconds={}{spin} queues={} {} kiln.after=idle",
        c.rw,
        c.bs,
        c.qd,
        g.seconds,
        g.queues,
        crate::tsc::guest_arg()
    )
}

/// What every guest run of one invocation shares.
struct Setup<'a> {
    fw: &'a Path,
    file: &'a Path,
    seconds: u64,
    spin_us: Option<u64>,
    poll_us: u32,
    queues: u32,
    placement: Placement,
    pin_qemu: bool,
}

fn kiln_run(vmm: &Path, scratch: &Scratch, g: &Setup, c: &Case) -> anyhow::Result<Sample> {
    // Transparent huge pages for guest RAM, as QEMU asks for its RAM.
    let cfg = json!({
        "vcpus": 1,
        "memory_mib": 128,
        "transparent_hugepages": true,
        "firmware": {"path": g.fw, "cmdline": guest_cmdline(c, g)},
        "disks": [{"path": g.file, "direct": true, "poll_us": g.poll_us, "num_queues": g.queues}],
        "console": {"stdout": true},
    });
    let mut cfg = cfg;
    if let Placement::Pinned { vcpu, io } = &g.placement {
        cfg["vcpu_affinity"] = json!([vcpu]);
        cfg["disks"][0]["queue_affinity"] = json!(io);
    }
    let path = scratch.dir.join("vm.json");
    std::fs::write(&path, cfg.to_string())?;
    let mut cmd = Command::new(vmm);
    cmd.arg("--config").arg(&path);
    // kiln-vmm runs the boot vCPU on its main thread (tid = pid), the
    // others on `vcpuN` threads.
    run_guest(
        cmd,
        |pid, tid, name| tid == pid || name.starts_with("vcpu"),
        g.seconds,
        &|_| {},
    )
}

/// Pin a running QEMU's threads as `placement` says: "CPU n/KVM" threads
/// to the vCPU set, the rest (main loop, iothread) to the I/O set. Waits
/// (up to 2 s) for the vCPU thread to exist; threads QEMU starts later
/// inherit their creator's set.
fn pin_qemu(pid: u32, placement: &Placement) {
    let Placement::Pinned { vcpu, io } = placement else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let threads = threads(pid);
        let has_vcpu = threads.iter().any(|(_, n, _)| n.starts_with("CPU "));
        if has_vcpu || Instant::now() > deadline {
            for (tid, name, _) in threads {
                let set = if name.starts_with("CPU ") { vcpu } else { io };
                if let Err(e) = kiln_vmm::affinity::pin_thread(tid as libc::pid_t, set) {
                    eprintln!("kiln-bench: cannot pin QEMU thread {name}: {e}");
                }
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn qemu_run(g: &Setup, c: &Case) -> anyhow::Result<Sample> {
    let mut cmd = qemu_microvm(g.fw, &guest_cmdline(c, g));
    cmd.arg("-drive").arg(format!(
        "id=d0,file={},format=raw,if=none,aio=io_uring,cache=none",
        g.file.display()
    ));
    let device = format!("virtio-blk-device,drive=d0,num-queues={}", g.queues);
    if g.poll_us > 0 {
        // QEMU polls only in iothreads (adaptively, up to poll-max-ns).
        cmd.arg("-object")
            .arg(format!(
                "iothread,id=io0,poll-max-ns={}",
                u64::from(g.poll_us) * 1000
            ))
            .arg("-device")
            .arg(format!("{device},iothread=io0"));
    } else {
        cmd.arg("-device").arg(device);
    }
    let placement = match g.pin_qemu {
        true => g.placement.clone(),
        false => Placement::Unpinned("QEMU is not pinned without --pin-qemu".into()),
    };
    run_guest(
        cmd,
        |_, _, name| name.starts_with("CPU "),
        g.seconds,
        &move |pid| pin_qemu(pid, &placement),
    )
}

/// QEMU microvm (KVM, 1 vCPU, 128 MiB, serial on stdout, modern
/// virtio-mmio) booting `fw` with `append`; the caller adds the devices.
pub(crate) fn qemu_microvm(fw: &Path, append: &str) -> Command {
    // microvm's virtio-mmio transports: 512 bytes each from 0xfeb00000, IRQ 5
    // upwards; the firmware takes the first that holds its device.
    let mut append = append.to_string();
    for k in 0..24u64 {
        append.push_str(&format!(
            " virtio_mmio.device=512@{:#x}:{}",
            0xfeb0_0000 + k * 512,
            5 + k
        ));
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-M",
        "microvm",
        "-accel",
        "kvm",
        "-cpu",
        "host,-arch-capabilities",
    ])
    .args([
        "-m",
        "128",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
    ])
    .args(["-serial", "stdio", "-monitor", "none"])
    .args(["-global", "virtio-mmio.force-legacy=false"])
    .arg("-kernel")
    .arg(fw)
    .arg("-append")
    .arg(append);
    cmd
}

fn fio_run(file: &Path, c: &Case, seconds: u64) -> anyhow::Result<Sample> {
    let out = Command::new("fio")
        .args([
            "--name=kiln",
            "--ioengine=io_uring",
            "--direct=1",
            "--time_based",
        ])
        .arg(format!("--filename={}", file.display()))
        .arg(format!("--rw={}", c.rw))
        .arg(format!("--bs={}", c.bs))
        .arg(format!("--iodepth={}", c.qd))
        .arg(format!("--runtime={seconds}"))
        .arg("--output-format=json")
        .output()
        .context("running fio (apt-get install fio)")?;
    if !out.status.success() {
        bail!(
            "fio failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("fio's JSON")?;
    let job = &v["jobs"][0];
    let side = if c.rw.contains("write") {
        &job["write"]
    } else {
        &job["read"]
    };
    let iops = side["iops"].as_f64().unwrap_or(0.0);
    let pct = |p: &str| side["clat_ns"]["percentile"][p].as_f64().unwrap_or(0.0) / 1000.0;
    let ios = side["total_ios"].as_f64().unwrap_or(0.0);
    let cpu = (job["usr_cpu"].as_f64().unwrap_or(0.0) + job["sys_cpu"].as_f64().unwrap_or(0.0))
        / 100.0
        * seconds as f64;
    Ok(Sample {
        iops,
        mibps: side["bw_bytes"].as_f64().unwrap_or(0.0) / f64::from(1 << 20),
        p50_us: pct("50.000000"),
        p99_us: pct("99.000000"),
        cpu_us_per_io: if ios > 0.0 { cpu * 1e6 / ios } else { 0.0 },
    })
}

fn median(samples: &[Sample], f: fn(&Sample) -> f64) -> Value {
    let v: Vec<f64> = samples.iter().map(f).collect();
    summarize(&v).map_or(Value::Null, |s| {
        Value::from((s.median * 100.0).round() / 100.0)
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn summary(samples: &[Sample]) -> Value {
    let iops: Vec<f64> = samples.iter().map(|s| s.iops).collect();
    json!({
        "iops": median(samples, |s| s.iops),
        // (p90 - p10) / median over the runs.
        "iops_spread": summarize(&iops).map(|s| round3(s.spread)),
        "mibps": median(samples, |s| s.mibps),
        "p50_us": median(samples, |s| s.p50_us),
        "p99_us": median(samples, |s| s.p99_us),
        "cpu_us_per_io": median(samples, |s| s.cpu_us_per_io),
        "runs": samples.len(),
    })
}

pub fn run(a: BlkArgs) -> anyhow::Result<()> {
    if let Some(bad) = a.cases.iter().find(|n| !CASES.iter().any(|c| c.name == *n)) {
        bail!("--cases: no case {bad:?}");
    }
    let (vmm, fw) = a.binaries.resolve()?;
    for v in &a.vs {
        if v != "host" && v != "qemu" {
            bail!("--vs takes host and/or qemu, not {v:?}");
        }
    }
    let base = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = Scratch::new(&base, "blk")?;
    let file = scratch.dir.join("disk.raw");
    if !a.json {
        eprintln!(
            "writing a {} MiB test file in {} ...",
            a.file_mib,
            base.display()
        );
    }
    make_file(&file, a.file_mib)?;
    let setup = Setup {
        fw: &fw,
        file: &file,
        seconds: a.seconds,
        spin_us: a.spin_us,
        poll_us: a.poll_us,
        queues: a.queues,
        pin_qemu: a.pin_qemu,
        placement: match a.placement.as_str() {
            "auto" => crate::placement::for_file(
                &file,
                &kiln_vmm::affinity::allowed_cpus().unwrap_or_default(),
            ),
            _ => Placement::Unpinned("--placement none".into()),
        },
    };
    let mut report = Report::new("blk", a.runs);
    let mut systems: Vec<&str> = vec!["kiln"];
    systems.extend(a.vs.iter().map(String::as_str));
    let mut per_system: Map<String, Value> = Map::new();
    let mut round_ratios = Map::new();
    for c in selected(&a.cases) {
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); systems.len()];
        let mut failed = vec![false; systems.len()];
        for round in 0..a.runs {
            for k in 0..systems.len() {
                let i = (round + k) % systems.len();
                if failed[i] {
                    continue;
                }
                let system = systems[i];
                let t0 = Instant::now();
                let r = match system {
                    "kiln" => kiln_run(&vmm, &scratch, &setup, c),
                    "qemu" => qemu_run(&setup, c),
                    _ => fio_run(&file, c, a.seconds),
                };
                match r {
                    Ok(s) => samples[i].push(s),
                    Err(e) => {
                        report.unavailable(&format!("{system}.{}", c.name), &format!("{e:#}"));
                        failed[i] = true;
                        continue;
                    }
                }
                if !a.json {
                    eprintln!(
                        "{system} {} run {} done in {:.1} s",
                        c.name,
                        round + 1,
                        t0.elapsed().as_secs_f64()
                    );
                }
            }
        }
        for (i, system) in systems.iter().enumerate() {
            if failed[i] {
                continue;
            }
            let entry = per_system
                .entry(system.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = entry {
                m.insert(c.name.to_string(), summary(&samples[i]));
            }
        }
        // Ratios of the medians, and of each round's pair.
        for (i, reference) in systems.iter().enumerate().skip(1) {
            if failed[0] || failed[i] {
                continue;
            }
            let name = format!("kiln_over_{reference}_{}_iops", c.name);
            let iops = |v: &[Sample]| summarize(&v.iter().map(|s| s.iops).collect::<Vec<_>>());
            if let (Some(k), Some(r)) = (iops(&samples[0]), iops(&samples[i])) {
                report.ratio(&name, k.median, r.median);
            }
            let pairs: Vec<f64> = samples[0]
                .iter()
                .zip(&samples[i])
                .filter(|(_, r)| r.iops > 0.0)
                .map(|(k, r)| k.iops / r.iops)
                .collect();
            if let Some(s) = summarize(&pairs) {
                round_ratios.insert(
                    name,
                    json!({"median": round3(s.median), "min": round3(s.min), "max": round3(s.max)}),
                );
            }
        }
    }
    for (system, v) in per_system {
        report.result(&system, v);
    }
    report.result(
        "settings",
        json!({
            "kiln_poll_us": a.poll_us,
            "kiln_transparent_hugepages": true,
            "queues": a.queues,
            "qemu_iothread_poll_max_ns": u64::from(a.poll_us) * 1000,
            "placement": setup.placement.to_json(),
            "qemu_pinned": a.pin_qemu,
        }),
    );
    if !round_ratios.is_empty() {
        report.result("round_ratios", Value::Object(round_ratios));
    }
    report.print(a.json);
    Ok(())
}
