//! What this host offers guests: whether /dev/kvm is usable, and the node's
//! capacity (CPUs, RAM, disk of the data directory) as it registers.

use std::path::Path;

use crate::driver::Capacity;

/// Whether `/dev/kvm` exists and opens read-write (what kiln-vmm needs).
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// `MemTotal` of /proc/meminfo in MiB (0 when unreadable).
fn ram_mb() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib / 1024)
        .unwrap_or(0)
}

/// Size in GiB of the file system holding `dir` (0 when unknown).
fn disk_gb(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs is plain old data; zeroed is a valid value for it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    (st.f_blocks as u64).saturating_mul(st.f_frsize as u64) >> 30
}

/// The host's CPUs, RAM and the disk holding `data_dir`.
pub fn capacity(data_dir: &Path) -> Capacity {
    Capacity {
        vcpus: std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1),
        ram_mb: ram_mb(),
        disk_gb: disk_gb(data_dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_measured() {
        let c = capacity(Path::new("/"));
        assert!(c.vcpus >= 1);
        assert!(c.ram_mb > 0);
        assert!(c.disk_gb > 0);
    }
}
