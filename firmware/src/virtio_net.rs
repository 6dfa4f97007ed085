//! A polling virtio-net driver over virtio-mmio for the ring-3 firmware:
//! receive queue 0 and transmit queue 1 in static memory, one 2 KiB buffer
//! per descriptor (a 12-byte `virtio_net_hdr_v1` and a frame of at most
//! 1514 bytes), no offloads, EVENT_IDX when offered, interrupts only
//! when the caller asks for them before sleeping.

use core::ptr::{addr_of, addr_of_mut};

use crate::virtio_mmio::{
    Desc, Device, InitError, Queue, Split, DESC_F_WRITE, F_EVENT_IDX, ID_NET,
};

const F_MAC: u64 = 1 << 5;

/// Descriptors (and buffers) per queue.
pub const QUEUE_SIZE: usize = 64;
/// Bytes of one buffer.
pub const BUF: usize = 2048;
/// Bytes of the header before every frame.
pub const HDR_LEN: usize = 12;
/// Largest frame sent.
pub const MAX_FRAME: usize = BUF - HDR_LEN;

#[repr(C, align(4096))]
struct Buffers([[u8; BUF]; QUEUE_SIZE]);

static mut RX_RING: Split<QUEUE_SIZE> = Split::new();
static mut TX_RING: Split<QUEUE_SIZE> = Split::new();
static mut RX_BUF: Buffers = Buffers([[0; BUF]; QUEUE_SIZE]);
static mut TX_BUF: Buffers = Buffers([[0; BUF]; QUEUE_SIZE]);

/// The driver of one virtio-net device. Only one may exist (its queues and
/// buffers live in static memory).
pub struct Net {
    dev: Device,
    rx: Queue<QUEUE_SIZE>,
    tx: Queue<QUEUE_SIZE>,
    tx_free: [bool; QUEUE_SIZE],
    pub mac: [u8; 6],
    /// Frames received, sent, and dropped for want of a tx buffer.
    pub received: u64,
    pub sent: u64,
    pub tx_dropped: u64,
}

impl Net {
    /// Reset and set up the device at `base`, with every receive buffer posted.
    ///
    /// # Safety
    /// `base` must be a virtio-mmio window mapped for this code, and no other
    /// `Net` may be alive (they share the static queues and buffers).
    pub unsafe fn init(base: usize) -> Result<Net, InitError> {
        // SAFETY: caller's contract.
        let (dev, agreed) = unsafe { Device::init(base, ID_NET, F_MAC | F_EVENT_IDX)? };
        // With EVENT_IDX the driver notifies only when the device asked to
        // hear about the avail index it publishes (once per device wake-up,
        // not once per frame while the device's thread is waking up).
        let event_idx = agreed & F_EVENT_IDX != 0;
        // SAFETY: only this driver uses the rings (caller's contract).
        let (rx, tx) = unsafe {
            (
                Queue::new(addr_of_mut!(RX_RING), event_idx),
                Queue::new(addr_of_mut!(TX_RING), event_idx),
            )
        };
        let mut mac = [0x52, 0x54, 0, 0x6b, 0x69, 0x6c];
        if agreed & F_MAC != 0 {
            for (i, b) in mac.iter_mut().enumerate() {
                *b = dev.config8(i);
            }
        }
        let mut n = Net {
            dev,
            rx,
            tx,
            tx_free: [true; QUEUE_SIZE],
            mac,
            received: 0,
            sent: 0,
            tx_dropped: 0,
        };
        n.dev.setup_queue(0, &mut n.rx)?;
        n.dev.setup_queue(1, &mut n.tx)?;
        n.dev.driver_ok();
        let old = n.rx.avail_index();
        for i in 0..QUEUE_SIZE as u16 {
            n.post_rx(i);
        }
        if n.rx.publish(old) {
            n.dev.notify(0);
        }
        Ok(n)
    }

    /// Before sleeping: ask for an interrupt when a frame arrives; false
    /// (interrupts left off) when one already has, so the caller must not
    /// sleep. Turn them off again after waking (`rx_interrupts_off`): while
    /// the driver polls, each interrupt would only cost an exit.
    pub fn rx_interrupts_before_sleep(&mut self) -> bool {
        self.rx.set_interrupts(true);
        if self.rx.has_used() {
            self.rx.set_interrupts(false);
            return false;
        }
        true
    }

    pub fn rx_interrupts_off(&mut self) {
        self.rx.set_interrupts(false);
    }

    /// Put receive buffer `i` in the avail ring (published by the caller).
    fn post_rx(&mut self, i: u16) {
        let bufs = addr_of!(RX_BUF);
        // SAFETY: address of one buffer of the static array; nothing is read.
        let addr = unsafe { addr_of!((*bufs).0[usize::from(i) % QUEUE_SIZE]) } as u64;
        self.rx.set_desc(
            i,
            Desc {
                addr,
                len: BUF as u32,
                flags: DESC_F_WRITE,
                next: 0,
            },
        );
        self.rx.offer(i);
    }

    /// Hand every received frame (without its header) to `f`, reposting
    /// each buffer after; returns how many frames there were.
    pub fn receive(&mut self, mut f: impl FnMut(&mut Net, &[u8])) -> usize {
        let old = self.rx.avail_index();
        let mut n = 0;
        while let Some(used) = self.rx.pop_used() {
            let i = used.id as usize;
            if i >= QUEUE_SIZE {
                continue;
            }
            let len = (used.len as usize).min(BUF);
            if len > HDR_LEN {
                let bufs = addr_of!(RX_BUF);
                // SAFETY: the device returned buffer i (it no longer writes
                // it) and it stays untouched until reposted below.
                let frame = unsafe { &(&(*bufs).0)[i][HDR_LEN..len] };
                self.received += 1;
                f(self, frame);
            }
            self.post_rx(i as u16);
            n += 1;
        }
        if n > 0 && self.rx.publish(old) {
            self.dev.notify(0);
        }
        n
    }

    /// Take back transmit buffers the device is done with.
    fn reap_tx(&mut self) {
        while let Some(used) = self.tx.pop_used() {
            if let Some(f) = self.tx_free.get_mut(used.id as usize) {
                *f = true;
            }
        }
    }

    /// Queue one frame (at most `MAX_FRAME` bytes, built by `fill` into the
    /// buffer it is given; it returns the length, or None to send nothing)
    /// and notify the device. False when nothing was sent.
    pub fn send_with(&mut self, fill: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        self.reap_tx();
        let Some(i) = self.tx_free.iter().position(|f| *f) else {
            self.tx_dropped += 1;
            return false;
        };
        let bufs = addr_of_mut!(TX_BUF);
        // SAFETY: buffer i is free (not in the device's hands).
        let buf = unsafe { &mut (&mut (*bufs).0)[i] };
        buf[..HDR_LEN].fill(0);
        let Some(len) = fill(&mut buf[HDR_LEN..]) else {
            return false;
        };
        let len = len.min(MAX_FRAME);
        self.tx_free[i] = false;
        self.tx.set_desc(
            i as u16,
            Desc {
                addr: buf.as_ptr() as u64,
                len: (HDR_LEN + len) as u32,
                flags: 0,
                next: 0,
            },
        );
        let old = self.tx.avail_index();
        self.tx.offer(i as u16);
        if self.tx.publish(old) {
            self.dev.notify(1);
        }
        self.sent += 1;
        true
    }
}
