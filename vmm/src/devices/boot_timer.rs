//! The boot-timer device: the guest writes the magic byte 123 (Firecracker's
//! convention) and the VMM records the time since it started.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::since_start_us;

/// The byte a guest writes when it has booted.
pub const MAGIC: u8 = 123;

/// Records the first boot signal.
#[derive(Debug, Default)]
pub struct BootTimer {
    /// µs since VMM start at the first magic write; 0 = not yet.
    booted_us: AtomicU64,
}

impl BootTimer {
    pub fn write(&self, value: u8) {
        if value != MAGIC {
            return;
        }
        let us = since_start_us().max(1);
        if self
            .booted_us
            .compare_exchange(0, us, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            eprintln!("kiln-vmm: guest boot time {us} us");
        }
    }

    /// µs from VMM start to the guest's boot signal, if it came.
    pub fn booted_us(&self) -> Option<u64> {
        match self.booted_us.load(Ordering::SeqCst) {
            0 => None,
            us => Some(us),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_magic_counts_and_only_once() {
        let t = BootTimer::default();
        t.write(1);
        assert_eq!(t.booted_us(), None);
        t.write(MAGIC);
        let first = t.booted_us().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        t.write(MAGIC);
        assert_eq!(t.booted_us(), Some(first));
    }
}
