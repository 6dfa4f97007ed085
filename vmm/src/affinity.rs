//! Host CPU affinity for the VMM's threads (`vcpu_affinity` and a disk's
//! `queue_affinity` in the config): each thread pins itself when it starts.

/// Highest host CPU number a set may name (the size of `cpu_set_t`).
pub const MAX_CPU: usize = libc::CPU_SETSIZE as usize - 1;

/// Restrict the calling thread to `cpus` (nothing to do when empty).
pub fn pin_current_thread(cpus: &[usize]) -> std::io::Result<()> {
    pin_thread(0, cpus)
}

/// Restrict thread `tid` (0: the calling one) to `cpus` (nothing to do
/// when empty).
pub fn pin_thread(tid: libc::pid_t, cpus: &[usize]) -> std::io::Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if c > MAX_CPU {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: c < CPU_SETSIZE, checked above.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Pin the calling thread, or say on stderr why not (the VM runs on
/// unpinned rather than not at all: the set was valid when checked).
pub fn pin_or_warn(cpus: &[usize], what: &str) {
    if let Err(e) = pin_current_thread(cpus) {
        eprintln!("kiln-vmm: cannot pin {what} to CPUs {cpus:?}: {e}");
    }
}

/// The CPUs this process may run on now, or None if the kernel will not say.
pub fn allowed_cpus() -> Option<Vec<usize>> {
    // SAFETY: as in `pin_current_thread`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most size_of::<cpu_set_t>() bytes into `set`.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return None;
    }
    // SAFETY: c < CPU_SETSIZE.
    Some(
        (0..=MAX_CPU)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_pins_itself_to_an_allowed_cpu() {
        let allowed = allowed_cpus().expect("sched_getaffinity");
        let first = allowed[0];
        let seen = std::thread::spawn(move || {
            pin_current_thread(&[first]).expect("pin");
            allowed_cpus()
        })
        .join()
        .expect("thread");
        assert_eq!(seen, Some(vec![first]));
        assert!(pin_current_thread(&[MAX_CPU + 1]).is_err());
        assert!(pin_current_thread(&[]).is_ok());
    }
}
