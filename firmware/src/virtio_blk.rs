//! A polling virtio-blk driver over virtio-mmio (modern, version 2) for the
//! ring-3 firmware: one split queue in static memory, no interrupts (the
//! used ring is polled), request slots of three descriptors each (header,
//! data, status). Guest memory is identity-mapped, so a buffer's address is
//! its guest-physical address.

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{fence, Ordering};

/// virtio-mmio registers.
const MAGIC: usize = 0x000;
const VERSION: usize = 0x004;
const DEVICE_ID: usize = 0x008;
const DEVICE_FEATURES: usize = 0x010;
const DEVICE_FEATURES_SEL: usize = 0x014;
const DRIVER_FEATURES: usize = 0x020;
const DRIVER_FEATURES_SEL: usize = 0x024;
const QUEUE_SEL: usize = 0x030;
const QUEUE_NUM_MAX: usize = 0x034;
const QUEUE_NUM: usize = 0x038;
const QUEUE_READY: usize = 0x044;
const QUEUE_NOTIFY: usize = 0x050;
const STATUS: usize = 0x070;
const QUEUE_DESC: usize = 0x080;
const QUEUE_AVAIL: usize = 0x090;
const QUEUE_USED: usize = 0x0a0;
const CONFIG_GENERATION: usize = 0x0fc;
const CONFIG: usize = 0x100;

const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;
const F_EVENT_IDX: u64 = 1 << 29;
const F_VERSION_1: u64 = 1 << 32;

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;

/// Request types and statuses.
pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
/// Status of a request still in flight.
pub const S_PENDING: u8 = 0xff;

/// Descriptors in the queue (three per request slot).
pub const QUEUE_SIZE: u16 = 256;
/// Requests that can be in flight at once.
pub const SLOTS: usize = QUEUE_SIZE as usize / 3;

#[repr(C)]
#[derive(Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Header {
    kind: u32,
    reserved: u32,
    sector: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct UsedElem {
    id: u32,
    len: u32,
}

/// Bytes of the descriptor table and available ring; the used ring starts
/// at the next page.
const AVAIL_END: usize = 16 * QUEUE_SIZE as usize + 4 + 2 * QUEUE_SIZE as usize + 2;
const PAD: usize = AVAIL_END.next_multiple_of(4096) - AVAIL_END;

#[repr(C, align(4096))]
struct Rings {
    desc: [Desc; QUEUE_SIZE as usize],
    avail_flags: u16,
    avail_idx: u16,
    avail_ring: [u16; QUEUE_SIZE as usize],
    used_event: u16,
    _pad: [u8; PAD],
    used_flags: u16,
    used_idx: u16,
    used_ring: [UsedElem; QUEUE_SIZE as usize],
    avail_event: u16,
}

#[repr(C, align(64))]
struct Slots {
    headers: [Header; SLOTS],
    status: [u8; SLOTS],
}

static mut RINGS: Rings = Rings {
    desc: [Desc {
        addr: 0,
        len: 0,
        flags: 0,
        next: 0,
    }; QUEUE_SIZE as usize],
    avail_flags: 0,
    avail_idx: 0,
    avail_ring: [0; QUEUE_SIZE as usize],
    used_event: 0,
    _pad: [0; PAD],
    used_flags: 0,
    used_idx: 0,
    used_ring: [UsedElem { id: 0, len: 0 }; QUEUE_SIZE as usize],
    avail_event: 0,
};

static mut SLOT_MEM: Slots = Slots {
    headers: [Header {
        kind: 0,
        reserved: 0,
        sector: 0,
    }; SLOTS],
    status: [0; SLOTS],
};

/// Why the device could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitError {
    NotVirtio,
    NotBlock,
    FeaturesRefused,
    QueueTooSmall,
}

impl InitError {
    pub fn text(self) -> &'static [u8] {
        match self {
            InitError::NotVirtio => b"not a virtio-mmio version 2 device",
            InitError::NotBlock => b"not a block device",
            InitError::FeaturesRefused => b"the device refused our features",
            InitError::QueueTooSmall => b"queue 0 is too small",
        }
    }
}

/// The driver of one virtio-blk device. Only one may exist (its queue lives
/// in static memory).
pub struct Blk {
    base: usize,
    event_idx: bool,
    pub read_only: bool,
    pub flush: bool,
    /// Capacity in 512-byte sectors.
    pub sectors: u64,
    avail: u16,
    used: u16,
    free: [bool; SLOTS],
}

impl Blk {
    /// Reset and set up the device at `base`.
    ///
    /// # Safety
    /// `base` must be a virtio-mmio window mapped for this code, and no other
    /// `Blk` may be alive (they share the static queue).
    pub unsafe fn init(base: usize) -> Result<Blk, InitError> {
        let mut b = Blk {
            base,
            event_idx: false,
            read_only: false,
            flush: false,
            sectors: 0,
            avail: 0,
            used: 0,
            free: [true; SLOTS],
        };
        if b.r(MAGIC) != 0x7472_6976 || b.r(VERSION) != 2 {
            return Err(InitError::NotVirtio);
        }
        if b.r(DEVICE_ID) != 2 {
            return Err(InitError::NotBlock);
        }
        b.w(STATUS, 0);
        b.w(STATUS, 1 | 2);
        b.w(DEVICE_FEATURES_SEL, 0);
        let lo = u64::from(b.r(DEVICE_FEATURES));
        b.w(DEVICE_FEATURES_SEL, 1);
        let offered = lo | (u64::from(b.r(DEVICE_FEATURES)) << 32);
        if offered & F_VERSION_1 == 0 {
            return Err(InitError::FeaturesRefused);
        }
        let wanted = offered & (F_VERSION_1 | F_RO | F_FLUSH | F_EVENT_IDX);
        b.event_idx = wanted & F_EVENT_IDX != 0;
        b.read_only = wanted & F_RO != 0;
        b.flush = wanted & F_FLUSH != 0;
        b.w(DRIVER_FEATURES_SEL, 0);
        b.w(DRIVER_FEATURES, wanted as u32);
        b.w(DRIVER_FEATURES_SEL, 1);
        b.w(DRIVER_FEATURES, (wanted >> 32) as u32);
        b.w(STATUS, 1 | 2 | 8);
        if b.r(STATUS) & 8 == 0 {
            return Err(InitError::FeaturesRefused);
        }
        b.w(QUEUE_SEL, 0);
        if b.r(QUEUE_NUM_MAX) < u32::from(QUEUE_SIZE) {
            return Err(InitError::QueueTooSmall);
        }
        b.w(QUEUE_NUM, u32::from(QUEUE_SIZE));
        let rings = addr_of_mut!(RINGS);
        // SAFETY: only this driver touches RINGS (caller's contract).
        unsafe {
            write_volatile(addr_of_mut!((*rings).avail_idx), 0);
            write_volatile(addr_of_mut!((*rings).used_idx), 0);
            // Interrupts are never wanted: polling only.
            write_volatile(addr_of_mut!((*rings).avail_flags), 1);
        }
        // SAFETY: field addresses of the static rings; nothing is read.
        let (desc, avail, used) = unsafe {
            (
                addr_of!((*rings).desc) as u64,
                addr_of!((*rings).avail_flags) as u64,
                addr_of!((*rings).used_flags) as u64,
            )
        };
        b.w64(QUEUE_DESC, desc);
        b.w64(QUEUE_AVAIL, avail);
        b.w64(QUEUE_USED, used);
        b.w(QUEUE_READY, 1);
        b.w(STATUS, 1 | 2 | 8 | 4);
        b.read_config();
        Ok(b)
    }

    /// Re-read the capacity (consistently, under the config generation);
    /// returns the generation it was read under.
    pub fn read_config(&mut self) -> u32 {
        loop {
            let g = self.r(CONFIG_GENERATION);
            self.sectors = u64::from(self.r(CONFIG)) | (u64::from(self.r(CONFIG + 4)) << 32);
            if self.r(CONFIG_GENERATION) == g {
                return g;
            }
        }
    }

    /// The device's config generation (changes when e.g. the disk is swapped).
    pub fn config_generation(&self) -> u32 {
        self.r(CONFIG_GENERATION)
    }

    fn r(&self, off: usize) -> u32 {
        // SAFETY: `base` is the device window (init's contract).
        unsafe { read_volatile((self.base + off) as *const u32) }
    }

    fn w(&self, off: usize, v: u32) {
        // SAFETY: as for `r`.
        unsafe { write_volatile((self.base + off) as *mut u32, v) }
    }

    fn w64(&self, off: usize, v: u64) {
        self.w(off, v as u32);
        self.w(off + 4, (v >> 32) as u32);
    }

    /// A free request slot, if any.
    pub fn free_slot(&self) -> Option<usize> {
        self.free.iter().position(|f| *f)
    }

    /// Queue one request in `slot` (no notification yet): `kind` at
    /// `sector` with `len` bytes at `buf` (`len` 0: no data descriptor).
    ///
    /// # Safety
    /// `buf..buf+len` must stay valid (and untouched for writes to the
    /// disk) until the request completes.
    pub unsafe fn queue(&mut self, slot: usize, kind: u32, sector: u64, buf: *mut u8, len: u32) {
        let rings = addr_of_mut!(RINGS);
        let slots = addr_of_mut!(SLOT_MEM);
        self.free[slot] = false;
        let d = (slot * 3) as u16;
        // SAFETY: slot < SLOTS (indexing checks) and the driver owns the
        // static rings; the descriptors of a free slot are not in the device's hands.
        unsafe {
            (*slots).headers[slot] = Header {
                kind,
                reserved: 0,
                sector,
            };
            write_volatile(addr_of_mut!((*slots).status[slot]), S_PENDING);
            let status_desc = Desc {
                addr: addr_of!((*slots).status[slot]) as u64,
                len: 1,
                flags: DESC_F_WRITE,
                next: 0,
            };
            let has_data = len > 0;
            (*rings).desc[d as usize] = Desc {
                addr: addr_of!((*slots).headers[slot]) as u64,
                len: 16,
                flags: DESC_F_NEXT,
                next: if has_data { d + 1 } else { d + 2 },
            };
            if has_data {
                (*rings).desc[d as usize + 1] = Desc {
                    addr: buf as u64,
                    len,
                    flags: DESC_F_NEXT | if kind == T_OUT { 0 } else { DESC_F_WRITE },
                    next: d + 2,
                };
            }
            (*rings).desc[d as usize + 2] = status_desc;
            (*rings).avail_ring[usize::from(self.avail % QUEUE_SIZE)] = d;
        }
        self.avail = self.avail.wrapping_add(1);
    }

    /// Publish queued requests and notify the device unless it said (with
    /// EVENT_IDX) that it is already looking.
    pub fn kick(&mut self, old_avail: u16) {
        let rings = addr_of_mut!(RINGS);
        fence(Ordering::SeqCst);
        // SAFETY: the driver owns the avail ring.
        unsafe { write_volatile(addr_of_mut!((*rings).avail_idx), self.avail) };
        fence(Ordering::SeqCst);
        let notify = if self.event_idx {
            // SAFETY: avail_event is device-written memory of our static rings.
            let event = unsafe { read_volatile(addr_of!((*rings).avail_event)) };
            self.avail.wrapping_sub(event).wrapping_sub(1) < self.avail.wrapping_sub(old_avail)
        } else {
            // SAFETY: as above.
            let flags: u16 = unsafe { read_volatile(addr_of!((*rings).used_flags)) };
            flags & 1 == 0
        };
        if notify {
            self.w(QUEUE_NOTIFY, 0);
        }
    }

    /// The avail index now (pass it to `kick` after queueing).
    pub fn avail_index(&self) -> u16 {
        self.avail
    }

    /// One completed request, if any: (slot, status byte).
    pub fn poll(&mut self) -> Option<(usize, u8)> {
        let rings = addr_of_mut!(RINGS);
        // SAFETY: used_idx is device-written memory of our static rings.
        let idx = unsafe { read_volatile(addr_of!((*rings).used_idx)) };
        if idx == self.used {
            return None;
        }
        fence(Ordering::SeqCst);
        // SAFETY: entries before used_idx are written by the device.
        let UsedElem { id, .. } = unsafe {
            read_volatile(addr_of!(
                (*rings).used_ring[usize::from(self.used % QUEUE_SIZE)]
            ))
        };
        self.used = self.used.wrapping_add(1);
        if self.event_idx {
            // Keep the interrupt threshold far ahead: we never want one.
            // SAFETY: the driver owns used_event.
            unsafe {
                write_volatile(
                    addr_of_mut!((*rings).used_event),
                    self.used.wrapping_add(0x7fff),
                )
            };
        }
        let slot = (id / 3) as usize;
        if slot >= SLOTS {
            return None;
        }
        self.free[slot] = true;
        let slots = addr_of!(SLOT_MEM);
        // SAFETY: the device wrote the status before the used entry.
        let status = unsafe { read_volatile(addr_of!((*slots).status[slot])) };
        Some((slot, status))
    }

    /// Run one request to completion and return its status.
    ///
    /// # Safety
    /// As for `queue`.
    pub unsafe fn run(&mut self, kind: u32, sector: u64, buf: *mut u8, len: u32) -> u8 {
        let Some(slot) = self.free_slot() else {
            return S_IOERR;
        };
        let old = self.avail;
        // SAFETY: caller's contract.
        unsafe { self.queue(slot, kind, sector, buf, len) };
        self.kick(old);
        loop {
            if let Some((s, status)) = self.poll() {
                if s == slot {
                    return status;
                }
            }
            core::hint::spin_loop();
        }
    }
}

/// The test pattern: the 64-bit word at byte offset `offset` (a multiple of
/// 8) of a disk written by blk-check. Host-side tests recompute it.
pub fn pattern(offset: u64) -> u64 {
    (offset ^ 0x6b69_6c6e_0000_0000).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Fill `buf` with the pattern of the disk range starting at `offset`.
pub fn fill_pattern(buf: &mut [u8], offset: u64) {
    for (i, chunk) in buf.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&pattern(offset + i as u64 * 8).to_le_bytes());
    }
}

/// The first byte offset (relative to `buf`) where `buf` differs from the
/// pattern of the range at `offset`, with the word found and the one wanted.
pub fn check_pattern(buf: &[u8], offset: u64) -> Option<(u64, u64, u64)> {
    for (i, chunk) in buf.chunks_exact(8).enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let got = u64::from_le_bytes(w);
        let want = pattern(offset + i as u64 * 8);
        if got != want {
            return Some((i as u64 * 8, got, want));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_round_trips_and_catches_a_flipped_bit() {
        let mut b = vec![0u8; 4096];
        fill_pattern(&mut b, 8192);
        assert_eq!(check_pattern(&b, 8192), None);
        assert!(check_pattern(&b, 0).is_some());
        b[100] ^= 1;
        assert_eq!(check_pattern(&b, 8192).map(|m| m.0), Some(96));
    }

    #[test]
    fn rings_have_the_split_queue_layout() {
        assert_eq!(core::mem::size_of::<Desc>(), 16);
        assert_eq!(
            core::mem::offset_of!(Rings, avail_flags),
            16 * QUEUE_SIZE as usize
        );
        assert_eq!(core::mem::offset_of!(Rings, used_flags) % 4096, 0);
        assert_eq!(
            core::mem::offset_of!(Rings, avail_event),
            core::mem::offset_of!(Rings, used_ring) + 8 * QUEUE_SIZE as usize
        );
    }
}
