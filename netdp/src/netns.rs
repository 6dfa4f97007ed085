//! Running code inside a named network namespace (`/run/netns/NAME`, as iproute2 names them).
//!
//! Netlink and tun sockets belong to the namespace they were created in, so a
//! socket opened by a closure run here keeps working on that namespace after the
//! closure returns. The switch happens on a scoped thread: the caller's thread
//! never changes namespace.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// Where iproute2 keeps named network namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Path of the named namespace's handle.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_RUN_DIR).join(name)
}

/// Run `f` on a thread that has entered the named network namespace.
pub fn run_in<T, F>(name: &str, f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let handle = File::open(path(name))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns on a valid, open namespace fd affects only this thread.
            let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("namespace worker thread panicked"))?
    })
}
