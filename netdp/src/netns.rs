//! Named network namespaces (`/run/netns/NAME`, as iproute2 names them): create, delete, list, run code inside.
//!
//! Netlink and tun sockets belong to the namespace they were created in, so a
//! socket opened by a closure run here keeps working on that namespace after the
//! closure returns. The switch happens on a scoped thread: the caller's thread
//! never changes namespace.
//!
//! A namespace is created the way `ip netns add` does it: a thread unshares its
//! network namespace and bind-mounts `/proc/thread-self/ns/net` onto an empty
//! file `/run/netns/NAME`; the mount keeps the namespace alive after the thread
//! ends. Deleting detaches the mount and removes the file; the kernel frees the
//! namespace once nothing else (a socket, a process) holds it.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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

/// Run `f` on a thread inside a fresh, unnamed network namespace that
/// disappears when `f` returns (and nothing it returned holds it).
pub fn run_in_scratch<T, F>(f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: unshare only changes this thread's namespace membership.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("namespace worker thread panicked"))?
    })
}

fn check_name(name: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid network namespace name {name:?}"),
        ))
    }
}

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Create the named network namespace (like `ip netns add NAME`).
/// Fails with `AlreadyExists` if the name is taken.
pub fn create(name: &str) -> io::Result<()> {
    check_name(name)?;
    std::fs::create_dir_all(NETNS_RUN_DIR)?;
    let target = path(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)?;
    let target_c = c_path(&target)?;
    let mounted = std::thread::scope(|s| {
        s.spawn(|| -> io::Result<()> {
            // SAFETY: unshare only changes this thread's namespace membership.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let source = c"/proc/thread-self/ns/net";
            // SAFETY: both paths are valid NUL-terminated strings; a bind mount
            // takes no data argument.
            let rc = unsafe {
                libc::mount(
                    source.as_ptr(),
                    target_c.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
        .join()
        .map_err(|_| io::Error::other("namespace worker thread panicked"))?
    });
    if let Err(e) = mounted {
        let _ = std::fs::remove_file(&target);
        return Err(e);
    }
    Ok(())
}

/// Delete the named network namespace (like `ip netns delete NAME`).
/// Fails with `NotFound` if there is no such namespace.
pub fn delete(name: &str) -> io::Result<()> {
    check_name(name)?;
    let target = path(name);
    let target_c = c_path(&target)?;
    // SAFETY: a valid NUL-terminated path; MNT_DETACH needs no other argument.
    let rc = unsafe { libc::umount2(target_c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        // EINVAL: the file exists but is not a mount point (a half-made
        // namespace); remove the file anyway.
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(err);
        }
    }
    std::fs::remove_file(&target)
}

/// Names of the namespaces under `/run/netns`, sorted.
pub fn list() -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(NETNS_RUN_DIR) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Whether the named namespace exists.
pub fn exists(name: &str) -> bool {
    check_name(name).is_ok() && path(name).exists()
}

/// A named namespace that is deleted when this value is dropped; for tests,
/// probes and anything else that must not leave a namespace behind.
#[derive(Debug)]
pub struct OwnedNetns {
    name: String,
}

impl OwnedNetns {
    /// Create the named namespace and own it.
    pub fn create(name: &str) -> io::Result<Self> {
        create(name)?;
        Ok(Self {
            name: name.to_string(),
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for OwnedNetns {
    fn drop(&mut self) {
        if let Err(e) = delete(&self.name) {
            tracing::warn!(netns = %self.name, error = %e, "could not delete network namespace");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_slashes_or_dots_are_refused() {
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_name("klk-1-2").is_ok());
    }
}
