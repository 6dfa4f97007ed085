//! Opening a TAP for virtio-net: `/dev/net/tun` with IFF_TAP | IFF_NO_PI |
//! IFF_VNET_HDR (created when it does not exist yet), non-blocking, with a
//! 12-byte vnet header.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;

/// ioctls and flags from <linux/if_tun.h>.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
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

/// Open the TAP `name` (created when missing) for one queue.
pub fn open(name: &str) -> io::Result<File> {
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
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
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
