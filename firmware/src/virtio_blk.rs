//! A polling virtio-blk driver over virtio-mmio (modern, version 2) for the
//! ring-3 firmware: one split queue per device, or up to `MAX_QUEUES` with
//! VIRTIO_BLK_F_MQ (`MAX_UNITS` devices' worth of rings in static memory),
//! no interrupts for requests (the used ring is polled), request slots of
//! three descriptors each (header, data, status). Guest memory is
//! identity-mapped, so a buffer's address is its guest-physical address.

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

pub use crate::virtio_mmio::InitError;
use crate::virtio_mmio::{
    Desc, Device, Queue, Split, DESC_F_NEXT, DESC_F_WRITE, F_EVENT_IDX, ID_BLOCK,
};

const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;
const F_MQ: u64 = 1 << 12;
/// Offset of `num_queues` (u16) in the config space.
const CONFIG_NUM_QUEUES: usize = 34;

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
/// Requests that can be in flight at once on one queue. Slot numbers run
/// over all queues: slot `s` is request `s % SLOTS` of queue `s / SLOTS`.
pub const SLOTS: usize = QUEUE_SIZE as usize / 3;
/// Most queues one device is driven through.
pub const MAX_QUEUES: usize = 4;

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

type Rings = Split<{ QUEUE_SIZE as usize }>;

static mut RINGS: [[Rings; MAX_QUEUES]; MAX_UNITS] =
    [const { [const { Split::new() }; MAX_QUEUES] }; MAX_UNITS];

static mut SLOT_MEM: [[Slots; MAX_QUEUES]; MAX_UNITS] = [const {
    [const {
        Slots {
            headers: [Header {
                kind: 0,
                reserved: 0,
                sector: 0,
            }; SLOTS],
            status: [0; SLOTS],
        }
    }; MAX_QUEUES]
}; MAX_UNITS];

/// The driver of one virtio-blk device, on static memory unit `unit`: at
/// most one `Blk` per unit may exist.
pub struct Blk {
    dev: Device,
    unit: usize,
    /// The unit's queues; the first `nq` are set up.
    queues: [Queue<{ QUEUE_SIZE as usize }>; MAX_QUEUES],
    nq: usize,
    /// Each queue's avail index as last published (`kick`).
    published: [u16; MAX_QUEUES],
    /// The queue `poll` looks at first (rotates, so none starves).
    next_poll: usize,
    pub read_only: bool,
    pub flush: bool,
    /// Capacity in 512-byte sectors.
    pub sectors: u64,
    free: [[bool; SLOTS]; MAX_QUEUES],
}

impl Blk {
    /// Reset and set up the device at `base` on the static memory of `unit`
    /// (`unit` < `MAX_UNITS`, else `QueueTooSmall`).
    ///
    /// # Safety
    /// `base` must be a virtio-mmio window mapped for this code, and no other
    /// `Blk` on `unit` may be alive (they would share its queue).
    pub unsafe fn init_unit(base: usize, unit: usize) -> Result<Blk, InitError> {
        // SAFETY: caller's contract.
        unsafe { Blk::init_queues(base, unit, 1) }
    }

    /// As `init_unit`, driving up to `want` queues (at most `MAX_QUEUES`
    /// and what the device offers; VIRTIO_BLK_F_MQ is asked for only when
    /// `want` > 1). `queues()` says how many it got.
    ///
    /// # Safety
    /// As for `init_unit`.
    pub unsafe fn init_queues(base: usize, unit: usize, want: usize) -> Result<Blk, InitError> {
        if unit >= MAX_UNITS {
            return Err(InitError::QueueTooSmall);
        }
        let mq = if want > 1 { F_MQ } else { 0 };
        // SAFETY: caller's contract.
        let (dev, agreed) =
            unsafe { Device::init(base, ID_BLOCK, F_RO | F_FLUSH | F_EVENT_IDX | mq)? };
        let nq = if agreed & F_MQ != 0 {
            // num_queues is the upper half of the config word at 32.
            let offered = dev.config32(CONFIG_NUM_QUEUES - 2) >> 16;
            want.min(MAX_QUEUES).min(offered as usize).max(1)
        } else {
            1
        };
        let event_idx = agreed & F_EVENT_IDX != 0;
        // SAFETY: only this driver uses the unit's rings (caller's contract);
        // the index is in bounds (unit < MAX_UNITS, q < MAX_QUEUES).
        let queues = core::array::from_fn(|q| unsafe {
            Queue::new(addr_of_mut!(RINGS[unit][q]), event_idx)
        });
        let mut b = Blk {
            dev,
            unit,
            queues,
            nq,
            published: [0; MAX_QUEUES],
            next_poll: 0,
            read_only: agreed & F_RO != 0,
            flush: agreed & F_FLUSH != 0,
            sectors: 0,
            free: [[true; SLOTS]; MAX_QUEUES],
        };
        for (q, queue) in b.queues[..nq].iter_mut().enumerate() {
            b.dev.setup_queue(q as u32, queue)?;
        }
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

    /// The queues driven (1 unless MQ was asked for and offered).
    pub fn queues(&self) -> usize {
        self.nq
    }

    /// A free request slot, if any (lowest first, queue 0 first).
    pub fn free_slot(&self) -> Option<usize> {
        (0..self.nq).find_map(|q| self.free_slot_on(q))
    }

    /// The lowest free request slot of queue `q`, if any.
    pub fn free_slot_on(&self, q: usize) -> Option<usize> {
        if q >= self.nq {
            return None;
        }
        let free = self.free.get(q)?;
        free.iter().position(|f| *f).map(|i| q * SLOTS + i)
    }

    /// Queue one request in `slot` (on the slot's queue; no notification
    /// yet): `kind` at `sector` with `len` bytes at `buf` (`len` 0: no
    /// data descriptor).
    ///
    /// # Safety
    /// `buf..buf+len` must stay valid (and untouched for writes to the
    /// disk) until the request completes.
    pub unsafe fn queue(&mut self, slot: usize, kind: u32, sector: u64, buf: *mut u8, len: u32) {
        let (q, i) = (slot / SLOTS, slot % SLOTS);
        // SAFETY: a raw pointer to this unit's request memory (unit <
        // MAX_UNITS, checked at init; indexing is bounds-checked anyway).
        let slots = unsafe { addr_of_mut!(SLOT_MEM[self.unit][q]) };
        self.free[q][i] = false;
        let d = (i * 3) as u16;
        // SAFETY: i < SLOTS and the driver owns the slot memory of a free slot.
        let (header, status) = unsafe {
            (*slots).headers[i] = Header {
                kind,
                reserved: 0,
                sector,
            };
            write_volatile(addr_of_mut!((*slots).status[i]), S_PENDING);
            (
                addr_of!((*slots).headers[i]) as u64,
                addr_of!((*slots).status[i]) as u64,
            )
        };
        let queue = &mut self.queues[q];
        let has_data = len > 0;
        queue.set_desc(
            d,
            Desc {
                addr: header,
                len: 16,
                flags: DESC_F_NEXT,
                next: if has_data { d + 1 } else { d + 2 },
            },
        );
        if has_data {
            queue.set_desc(
                d + 1,
                Desc {
                    addr: buf as u64,
                    len,
                    flags: DESC_F_NEXT | if kind == T_OUT { 0 } else { DESC_F_WRITE },
                    next: d + 2,
                },
            );
        }
        queue.set_desc(
            d + 2,
            Desc {
                addr: status,
                len: 1,
                flags: DESC_F_WRITE,
                next: 0,
            },
        );
        queue.offer(d);
    }

    /// Publish the requests queued since the last kick, on every queue
    /// that has some, and notify each such queue unless the device said
    /// (with EVENT_IDX) that it is already looking.
    pub fn kick(&mut self) {
        for (q, queue) in self.queues[..self.nq].iter_mut().enumerate() {
            let old = self.published[q];
            if queue.avail_index() == old {
                continue;
            }
            self.published[q] = queue.avail_index();
            if queue.publish(old) {
                self.dev.notify(q as u32);
            }
        }
    }

    /// Ask for an interrupt at the next completion (or stop asking).
    pub fn set_interrupts(&mut self, on: bool) {
        for queue in &mut self.queues[..self.nq] {
            queue.set_interrupts(on);
        }
    }

    /// Whether a completion is waiting (without taking it).
    pub fn peek_used(&self) -> bool {
        self.queues[..self.nq].iter().any(|q| q.has_used())
    }

    /// One completed request, if any: (slot, status byte). Each queue's
    /// completions come from its own used ring; the queues take turns.
    pub fn poll(&mut self) -> Option<(usize, u8)> {
        for _ in 0..self.nq {
            let q = self.next_poll % self.nq.max(1);
            self.next_poll = (q + 1) % self.nq.max(1);
            let Some(used) = self.queues[q].pop_used() else {
                continue;
            };
            let i = (used.id / 3) as usize;
            if i >= SLOTS {
                return None;
            }
            self.free[q][i] = true;
            // SAFETY: as in `queue`.
            let slots = unsafe { addr_of!(SLOT_MEM[self.unit][q]) };
            // SAFETY: the device wrote the status before the used entry.
            let status = unsafe { read_volatile(addr_of!((*slots).status[i])) };
            return Some((q * SLOTS + i, status));
        }
        None
    }

    /// Run one request to completion and return its status.
    ///
    /// # Safety
    /// As for `queue`.
    pub unsafe fn run(&mut self, kind: u32, sector: u64, buf: *mut u8, len: u32) -> u8 {
        let Some(slot) = self.free_slot() else {
            return S_IOERR;
        };
        // SAFETY: caller's contract.
        unsafe { self.queue(slot, kind, sector, buf, len) };
        self.kick();
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
