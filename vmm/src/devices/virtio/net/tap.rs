//! Opening a TAP for virtio-net: `/dev/net/tun` with IFF_TAP | IFF_NO_PI |
//! IFF_VNET_HDR (created when it does not exist yet), non-blocking, with a
//! 12-byte vnet header; with IFF_MULTI_QUEUE once per queue pair, whose
//! queues are attached and detached (TUNSETQUEUE) as the guest enables pairs.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;

/// ioctls and flags from <linux/if_tun.h>.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETQUEUE: libc::c_ulong = 0x4004_54d9;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const IFF_ATTACH_QUEUE: libc::c_short = 0x0200;
const IFF_DETACH_QUEUE: libc::c_short = 0x0400;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;
const TUN_F_TSO6: libc::c_ulong = 0x04;
const TUN_F_TSO_ECN: libc::c_ulong = 0x08;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl IfReq {
    /// An ifreq naming `name` (already checked to fit) with `flags`.
    fn new(name: &str, flags: libc::c_short) -> Self {
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        req
    }
}

/// Open the TAP `name` (created when missing) for one queue; `multi_queue`
/// opens one queue of a multi-queue TAP (every queue of such a TAP must be).
pub fn open(name: &str, multi_queue: bool) -> io::Result<File> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a TAP name is 1 to 15 bytes without '/', ' ' or NUL",
        ));
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let mq = if multi_queue { IFF_MULTI_QUEUE } else { 0 };
    let mut req = IfReq::new(name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | mq);
    // SAFETY: TUNSETIFF reads (and may update) one ifreq, which outlives the call.
    if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let size: libc::c_int = super::HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int, which outlives the call.
    if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETVNETHDRSZ, &size as *const libc::c_int) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}

/// Attach a multi-queue TAP's queue `f` (the kernel steers frames to it
/// and takes frames from it) or detach it (the kernel skips it; reads and
/// writes on it fail with EBADFD until it is attached again).
pub fn set_queue(f: &File, attach: bool) -> io::Result<()> {
    // TUNSETQUEUE looks only at the flags; the queue is the fd's.
    let flags = if attach {
        IFF_ATTACH_QUEUE
    } else {
        IFF_DETACH_QUEUE
    };
    let mut req = IfReq::new("", flags);
    // SAFETY: TUNSETQUEUE reads one ifreq, which outlives the call.
    if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETQUEUE, &mut req as *mut IfReq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Tell the TAP which offloads the guest took (virtio-net feature bits it
/// acked): partial checksums with GUEST_CSUM, TCP segments up to 64 KiB with
/// GUEST_TSO4/6 (the kernel refuses TSO without checksum offload, as the
/// spec makes GUEST_TSO depend on GUEST_CSUM). None clears them all.
pub fn set_offload(tap: &File, acked: u64) -> io::Result<()> {
    use super::{F_GUEST_CSUM, F_GUEST_ECN, F_GUEST_TSO4, F_GUEST_TSO6};
    let mut flags: libc::c_ulong = 0;
    if acked & F_GUEST_CSUM != 0 {
        flags |= TUN_F_CSUM;
        if acked & F_GUEST_TSO4 != 0 {
            flags |= TUN_F_TSO4;
        }
        if acked & F_GUEST_TSO6 != 0 {
            flags |= TUN_F_TSO6;
        }
        if acked & F_GUEST_ECN != 0 && flags & (TUN_F_TSO4 | TUN_F_TSO6) != 0 {
            flags |= TUN_F_TSO_ECN;
        }
    }
    // SAFETY: TUNSETOFFLOAD takes its flags by value and touches no memory of ours.
    if unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETOFFLOAD, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The MTU of interface `name` in this network namespace.
pub fn mtu(name: &str) -> Option<usize> {
    // SAFETY: a plain socket() call; the fd is owned right after.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a fresh, open descriptor that nothing else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return None;
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads the name from and writes the MTU into `req`,
    // which outlives the call.
    if unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFMTU,
            &mut req as *mut libc::ifreq,
        )
    } < 0
    {
        return None;
    }
    // SAFETY: SIOCGIFMTU filled the ifru_mtu member of the union.
    usize::try_from(unsafe { req.ifr_ifru.ifru_mtu }).ok()
}
