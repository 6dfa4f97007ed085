//! Counters the control socket reports: vCPU exits by reason, boot time and
//! memory use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use serde::Serialize;

static START: OnceLock<Instant> = OnceLock::new();

/// Mark the VMM's start; call first thing in `main`.
pub fn mark_start() {
    let _ = START.set(Instant::now());
    if tracing() {
        eprintln!(
            "kiln-vmm: trace start monotonic_ns {}",
            clock_ns(libc::CLOCK_MONOTONIC)
        );
    }
}

fn tracing() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("KILN_VMM_TRACE").is_some())
}

/// A clock's reading in ns (0 if it cannot be read).
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Print a start-up phase with its time since start and the calling
/// thread's CPU time when `KILN_VMM_TRACE` is set.
pub fn trace(phase: &str) {
    if tracing() {
        let cpu_us = clock_ns(libc::CLOCK_THREAD_CPUTIME_ID) / 1000;
        let thread = std::thread::current();
        eprintln!(
            "kiln-vmm: trace {:>6} us {phase} [{} cpu {cpu_us} us]",
            since_start_us(),
            thread.name().unwrap_or("?")
        );
    }
}

/// µs since `mark_start` (or since the first call).
pub fn since_start_us() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Why a vCPU left KVM_RUN.
#[derive(Debug, Clone, Copy)]
pub enum ExitKind {
    IoIn,
    IoOut,
    MmioRead,
    MmioWrite,
    Hlt,
    Shutdown,
    Interrupted,
    Other,
}

const KINDS: usize = 8;
const NAMES: [&str; KINDS] = [
    "io_in",
    "io_out",
    "mmio_read",
    "mmio_write",
    "hlt",
    "shutdown",
    "interrupted",
    "other",
];

/// Exit counters shared by all vCPU threads.
#[derive(Debug, Default)]
pub struct ExitCounters {
    counts: [AtomicU64; KINDS],
}

impl ExitCounters {
    pub fn count(&self, kind: ExitKind) {
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> serde_json::Map<String, serde_json::Value> {
        NAMES
            .iter()
            .zip(&self.counts)
            .map(|(n, c)| (n.to_string(), c.load(Ordering::Relaxed).into()))
            .collect()
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// What the `metrics` control request answers.
#[derive(Debug, Serialize)]
pub struct Metrics {
    pub exits: serde_json::Map<String, serde_json::Value>,
    pub exits_total: u64,
    /// µs from VMM start to the guest's boot-timer write.
    pub boot_time_us: Option<u64>,
    pub uptime_us: u64,
    /// The VMM process's resident set.
    pub rss_kib: u64,
    /// Guest RAM that is resident (touched).
    pub guest_resident_kib: u64,
    /// `rss_kib - guest_resident_kib`: what the VMM itself costs.
    pub overhead_kib: u64,
    pub memory_mib: u64,
    pub vcpus: u32,
}

/// The process's resident set size, from /proc/self/statm.
pub fn rss_kib() -> u64 {
    let page_kib = {
        // SAFETY: sysconf has no memory-safety preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 {
            p as u64 / 1024
        } else {
            4
        }
    };
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
        })
        .map(|pages| pages * page_kib)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_rss() {
        let c = ExitCounters::default();
        c.count(ExitKind::IoOut);
        c.count(ExitKind::IoOut);
        c.count(ExitKind::Hlt);
        let s = c.snapshot();
        assert_eq!(s["io_out"], 2);
        assert_eq!(s["hlt"], 1);
        assert_eq!(c.total(), 3);
        assert!(rss_kib() > 0);
    }
}
