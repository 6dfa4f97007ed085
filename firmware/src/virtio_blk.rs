//! A polling virtio-blk driver over virtio-mmio (modern, version 2) for the
//! ring-3 firmware: one split queue per device (`MAX_UNITS` of them in
//! static memory), no interrupts for requests (the
//! used ring is polled), request slots of three descriptors each (header,
//! data, status). Guest memory is identity-mapped, so a buffer's address is
//! its guest-physical address.

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

pub use crate::virtio_mmio::InitError;
use crate::virtio_mmio::{
    Desc, Device, Queue, Split, DESC_F_NEXT, DESC_F_WRITE, F_EVENT_IDX, ID_BLOCK,
};

const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;

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
struct Header {
    kind: u32,
    reserved: u32,
    sector: u64,
}

#[repr(C, align(64))]
struct Slots {
    headers: [Header; SLOTS],
    status: [u8; SLOTS],
}

/// Devices driven at once (one static queue and request memory each).
pub const MAX_UNITS: usize = 8;

static mut RINGS: [Split<{ QUEUE_SIZE as usize }>; MAX_UNITS] = [const { Split::new() }; MAX_UNITS];

static mut SLOT_MEM: [Slots; MAX_UNITS] = [const {
    Slots {
        headers: [Header {
            kind: 0,
            reserved: 0,
            sector: 0,
        }; SLOTS],
        status: [0; SLOTS],
    }
}; MAX_UNITS];

/// The driver of one virtio-blk device, on static memory unit `unit`: at
/// most one `Blk` per unit may exist.
pub struct Blk {
    dev: Device,
    unit: usize,
    queue: Queue<{ QUEUE_SIZE as usize }>,
    pub read_only: bool,
    pub flush: bool,
    /// Capacity in 512-byte sectors.
    pub sectors: u64,
    free: [bool; SLOTS],
}

impl Blk {
    /// Reset and set up the device at `base` on unit 0.
    ///
    /// # Safety
    /// As for `init_unit`.
    pub unsafe fn init(base: usize) -> Result<Blk, InitError> {
        // SAFETY: caller's contract.
        unsafe { Blk::init_unit(base, 0) }
    }

    /// Reset and set up the device at `base` on the static memory of `unit`
    /// (`unit` < `MAX_UNITS`, else `QueueTooSmall`).
    ///
    /// # Safety
    /// `base` must be a virtio-mmio window mapped for this code, and no other
    /// `Blk` on `unit` may be alive (they would share its queue).
    pub unsafe fn init_unit(base: usize, unit: usize) -> Result<Blk, InitError> {
        if unit >= MAX_UNITS {
            return Err(InitError::QueueTooSmall);
        }
        // SAFETY: caller's contract.
        let (dev, agreed) = unsafe { Device::init(base, ID_BLOCK, F_RO | F_FLUSH | F_EVENT_IDX)? };
        // SAFETY: only this driver uses the unit's rings (caller's contract).
        let queue = unsafe { Queue::new(addr_of_mut!(RINGS[unit]), agreed & F_EVENT_IDX != 0) };
        let mut b = Blk {
            dev,
            unit,
            queue,
            read_only: agreed & F_RO != 0,
            flush: agreed & F_FLUSH != 0,
            sectors: 0,
            free: [true; SLOTS],
        };
        b.dev.setup_queue(0, &mut b.queue)?;
        b.dev.driver_ok();
        b.read_config();
        Ok(b)
    }

    /// Re-read the capacity (consistently, under the config generation);
    /// returns the generation it was read under.
    pub fn read_config(&mut self) -> u32 {
        loop {
            let g = self.dev.config_generation();
            self.sectors =
                u64::from(self.dev.config32(0)) | (u64::from(self.dev.config32(4)) << 32);
            if self.dev.config_generation() == g {
                return g;
            }
        }
    }

    /// The device's config generation (changes when e.g. the disk is swapped).
    pub fn config_generation(&self) -> u32 {
        self.dev.config_generation()
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
        // SAFETY: a raw pointer to this unit's request memory (unit <
        // MAX_UNITS, checked at init; indexing is bounds-checked anyway).
        let slots = unsafe { addr_of_mut!(SLOT_MEM[self.unit]) };
        self.free[slot] = false;
        let d = (slot * 3) as u16;
        // SAFETY: slot < SLOTS (indexing checks) and the driver owns the
        // slot memory of a free slot.
        let (header, status) = unsafe {
            (*slots).headers[slot] = Header {
                kind,
                reserved: 0,
                sector,
            };
            write_volatile(addr_of_mut!((*slots).status[slot]), S_PENDING);
            (
                addr_of!((*slots).headers[slot]) as u64,
                addr_of!((*slots).status[slot]) as u64,
            )
        };
        let has_data = len > 0;
        self.queue.set_desc(
            d,
            Desc {
                addr: header,
                len: 16,
                flags: DESC_F_NEXT,
                next: if has_data { d + 1 } else { d + 2 },
            },
        );
        if has_data {
            self.queue.set_desc(
                d + 1,
                Desc {
                    addr: buf as u64,
                    len,
                    flags: DESC_F_NEXT | if kind == T_OUT { 0 } else { DESC_F_WRITE },
                    next: d + 2,
                },
            );
        }
        self.queue.set_desc(
            d + 2,
            Desc {
                addr: status,
                len: 1,
                flags: DESC_F_WRITE,
                next: 0,
            },
        );
        self.queue.offer(d);
    }

    /// Publish queued requests and notify the device unless it said (with
    /// EVENT_IDX) that it is already looking.
    pub fn kick(&mut self, old_avail: u16) {
        if self.queue.publish(old_avail) {
            self.dev.notify(0);
        }
    }

    /// The avail index now (pass it to `kick` after queueing).
    pub fn avail_index(&self) -> u16 {
        self.queue.avail_index()
    }

    /// Ask for an interrupt at the next completion (or stop asking).
    pub fn set_interrupts(&mut self, on: bool) {
        self.queue.set_interrupts(on);
    }

    /// Whether a completion is waiting (without taking it).
    pub fn peek_used(&self) -> bool {
        self.queue.has_used()
    }

    /// One completed request, if any: (slot, status byte).
    pub fn poll(&mut self) -> Option<(usize, u8)> {
        let used = self.queue.pop_used()?;
        let slot = (used.id / 3) as usize;
        if slot >= SLOTS {
            return None;
        }
        self.free[slot] = true;
        // SAFETY: as in `queue`.
        let slots = unsafe { addr_of!(SLOT_MEM[self.unit]) };
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
        let old = self.avail_index();
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
}
