//! TAP devices through `/dev/net/tun` ioctls (netlink refuses kind "tun"): multi-queue, vnet header, persist, owner, offloads.
//!
//! A TAP made here is a plain link afterwards: enslave it and bring it up with
//! [`super::Links`]. A persistent TAP outlives its fds; a VMM attaches to it
//! later by name with [`attach`] and the same flags.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// The clone device.
pub const TUN_PATH: &str = "/dev/net/tun";

/// Size of `struct virtio_net_hdr_v1` (with `num_buffers`), what virtio-net
/// with VIRTIO_F_VERSION_1 uses.
pub const VNET_HDR_V1_LEN: i32 = 12;

/// What went wrong with a TAP.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// `/dev/net/tun` could not be opened.
    #[error("open {TUN_PATH}: {0}")]
    Open(#[source] io::Error),
    /// An ioctl on the tun fd failed.
    #[error("{ioctl} on TAP {name}: {source}")]
    Ioctl {
        /// Which ioctl.
        ioctl: &'static str,
        /// The TAP's name.
        name: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// The requested name cannot be an interface name.
    #[error("invalid TAP name {0:?}")]
    InvalidName(String),
    /// Zero queues were asked for.
    #[error("a TAP needs at least one queue")]
    NoQueues,
}

/// How to create (or attach to) a TAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapConfig {
    /// Interface name (at most 15 bytes).
    pub name: String,
    /// Number of queues; more than one sets IFF_MULTI_QUEUE and opens one fd per queue.
    pub queues: u16,
    /// Prepend a virtio-net header to every frame (IFF_VNET_HDR).
    pub vnet_hdr: bool,
    /// Header size when `vnet_hdr` is set (TUNSETVNETHDRSZ); `None` keeps the kernel's 10.
    pub vnet_hdr_size: Option<i32>,
    /// TUN_F_* offload flags (TUNSETOFFLOAD), only with `vnet_hdr`.
    pub offloads: Option<u32>,
    /// Keep the device when the last fd closes (TUNSETPERSIST).
    pub persist: bool,
    /// User allowed to attach (TUNSETOWNER).
    pub owner: Option<u32>,
    /// Group allowed to attach (TUNSETGROUP).
    pub group: Option<u32>,
}

impl TapConfig {
    /// A single-queue TAP with vnet headers, not persistent, no owner.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            queues: 1,
            vnet_hdr: true,
            vnet_hdr_size: None,
            offloads: None,
            persist: false,
            owner: None,
            group: None,
        }
    }

    fn iff_flags(&self) -> libc::c_short {
        let mut f = libc::IFF_TAP | libc::IFF_NO_PI;
        if self.vnet_hdr {
            f |= libc::IFF_VNET_HDR;
        }
        if self.queues > 1 {
            f |= libc::IFF_MULTI_QUEUE;
        }
        // The IFF_* tun flags all fit in 16 bits.
        f as libc::c_short
    }
}

/// An open TAP: its name and one fd per queue. Dropping it closes the fds
/// (a non-persistent TAP then disappears).
#[derive(Debug)]
pub struct Tap {
    name: String,
    queues: Vec<OwnedFd>,
}

impl Tap {
    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One fd per queue, for reads and writes of frames.
    pub fn queues(&self) -> &[OwnedFd] {
        &self.queues
    }

    /// Take the queue fds (e.g. to hand them to a VMM process).
    pub fn into_queues(self) -> Vec<OwnedFd> {
        self.queues
    }
}

#[repr(C)]
struct IfReqFlags {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn ifreq(name: &str, flags: libc::c_short) -> Result<IfReqFlags, TapError> {
    if !super::names::is_valid(name) {
        return Err(TapError::InvalidName(name.to_string()));
    }
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags,
        _pad: [0; 22],
    };
    for (dst, src) in req.name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn check(rc: libc::c_int, ioctl: &'static str, name: &str) -> Result<(), TapError> {
    if rc < 0 {
        return Err(TapError::Ioctl {
            ioctl,
            name: name.to_string(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn ioctl_int(
    fd: &File,
    req: libc::Ioctl,
    what: &'static str,
    name: &str,
    arg: libc::c_ulong,
) -> Result<(), TapError> {
    // SAFETY: the TUNSET* ioctls used here take an integer argument by value.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) }, what, name)
}

fn ioctl_ptr_int(
    fd: &File,
    req: libc::Ioctl,
    what: &'static str,
    name: &str,
    v: &mut libc::c_int,
) -> Result<(), TapError> {
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is valid.
    check(
        unsafe { libc::ioctl(fd.as_raw_fd(), req, v as *mut libc::c_int) },
        what,
        name,
    )
}

fn open_queue(cfg: &TapConfig) -> Result<File, TapError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(TUN_PATH)
        .map_err(TapError::Open)?;
    let mut req = ifreq(&cfg.name, cfg.iff_flags())?;
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `req` has its size
    // and layout (name, then the flags union member, padded).
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReqFlags) };
    check(rc, "TUNSETIFF", &cfg.name)?;
    if cfg.vnet_hdr {
        if let Some(mut sz) = cfg.vnet_hdr_size {
            ioctl_ptr_int(
                &f,
                libc::TUNSETVNETHDRSZ,
                "TUNSETVNETHDRSZ",
                &cfg.name,
                &mut sz,
            )?;
        }
        if let Some(off) = cfg.offloads {
            ioctl_int(
                &f,
                libc::TUNSETOFFLOAD,
                "TUNSETOFFLOAD",
                &cfg.name,
                off.into(),
            )?;
        }
    }
    Ok(f)
}

/// Create a TAP (or attach to an existing persistent one of the same name and
/// flags) and open `cfg.queues` queues on it.
pub fn create(cfg: &TapConfig) -> Result<Tap, TapError> {
    if cfg.queues == 0 {
        return Err(TapError::NoQueues);
    }
    let mut queues = Vec::with_capacity(usize::from(cfg.queues));
    for i in 0..cfg.queues {
        let f = open_queue(cfg)?;
        if i == 0 {
            if let Some(uid) = cfg.owner {
                ioctl_int(&f, libc::TUNSETOWNER, "TUNSETOWNER", &cfg.name, uid.into())?;
            }
            if let Some(gid) = cfg.group {
                ioctl_int(&f, libc::TUNSETGROUP, "TUNSETGROUP", &cfg.name, gid.into())?;
            }
            if cfg.persist {
                ioctl_int(&f, libc::TUNSETPERSIST, "TUNSETPERSIST", &cfg.name, 1)?;
            }
        }
        queues.push(OwnedFd::from(f));
    }
    Ok(Tap {
        name: cfg.name.clone(),
        queues,
    })
}

/// Attach to an existing persistent TAP (same as [`create`]; named for intent).
/// A persistent TAP is removed like any link, with [`super::Links::delete`].
pub fn attach(cfg: &TapConfig) -> Result<Tap, TapError> {
    create(cfg)
}

/// The TUN flags (IFF_*) of an open queue fd (TUNGETIFF).
pub fn flags_of(fd: &OwnedFd) -> io::Result<i32> {
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    // SAFETY: TUNGETIFF writes a `struct ifreq` into `req`, which has its layout.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF, &mut req as *mut IfReqFlags) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(i32::from(req.flags) & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_layout_matches_the_kernel() {
        assert_eq!(std::mem::size_of::<IfReqFlags>(), 40);
        assert!(matches!(ifreq("a/b", 0), Err(TapError::InvalidName(_))));
        assert!(matches!(
            ifreq("sixteen-chars-xx", 0),
            Err(TapError::InvalidName(_))
        ));
        let r = ifreq("ktap-1", 0x1002).unwrap();
        assert_eq!(r.name[0], b'k' as libc::c_char);
        assert_eq!(r.name[6], 0);
    }

    #[test]
    fn flags_follow_the_config() {
        let mut c = TapConfig::new("t");
        assert_eq!(
            i32::from(c.iff_flags()),
            libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR
        );
        c.queues = 4;
        c.vnet_hdr = false;
        assert_eq!(
            i32::from(c.iff_flags()),
            libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE
        );
        assert!(matches!(
            create(&TapConfig { queues: 0, ..c }),
            Err(TapError::NoQueues)
        ));
    }
}
