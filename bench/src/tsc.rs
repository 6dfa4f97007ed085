//! The host's TSC rate, handed to guests as `tsc_khz=` so they time their
//! windows without the PIT (QEMU microvm has no port 0x61 to watch the PIT
//! through). Under KVM without TSC scaling a guest's TSC ticks at the host's
//! rate, so both VMMs' guests get the same figure.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn rdtsc() -> u64 {
    // SAFETY: rdtsc reads a counter and has no memory effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// `tsc_khz=N` for a guest command line, measured once per run.
pub fn guest_arg() -> String {
    static KHZ: OnceLock<u64> = OnceLock::new();
    format!("tsc_khz={}", KHZ.get_or_init(host_tsc_khz))
}

/// TSC kHz, measured against the monotonic clock over 100 ms.
fn host_tsc_khz() -> u64 {
    let (t0, c0) = (Instant::now(), rdtsc());
    std::thread::sleep(Duration::from_millis(100));
    let (t1, c1) = (Instant::now(), rdtsc());
    let ns = t1.duration_since(t0).as_nanos().max(1) as u64;
    c1.wrapping_sub(c0).saturating_mul(1_000_000) / ns
}
