//! The worker thread of one virtio-net queue pair (one per pair with
//! multi-queue, each on its own TAP queue). It sleeps in epoll on the tx
//! queue's ioeventfd, the rx queue's ioeventfd, the TAP (readable), a stop
//! eventfd and, with multi-queue, its pair's switch, and per wake-up:
//! - tx: pops the available chains in batches of `TX_BATCH`, hands each
//!   chain's buffers (header + frame, device-readable only) to the TAP as
//!   one writev SQE of an io_uring, submits the batch in one
//!   `io_uring_enter` (the TAP's writes complete inline), and returns the
//!   chains used once all completed;
//! - rx: `rx::Rx` reads frames into posted chains in io_uring batches.
//!   With no buffer posted the TAP is taken out of the epoll set (frames
//!   wait in, or are dropped by, the TAP's own queue) until the guest
//!   posts buffers and notifies.
//!
//! Hostile chains (wrong direction, too short, outside guest memory, longer
//! than `MAX_IOVECS`) drop the frame and are returned with length 0; an
//! avail index running more than a ring ahead marks the device broken.
//! Interrupts are raised once per batch when EVENT_IDX says the driver wants one.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use io_uring::{opcode, types, IoUring};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryBackend;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::rx::{Rx, RxOutcome};
use super::HDR_LEN;
use crate::devices::virtio::{wants_interrupt, Interrupt, VirtioError, INT_USED_RING};
use crate::memory::GuestMemory;

/// Buffers one frame may span.
pub const MAX_IOVECS: usize = 64;
/// Largest frame (with its header) sent to the TAP: 64 KiB plus the header
/// and an Ethernet header.
pub const MAX_TX_BYTES: usize = 65536 + HDR_LEN + 14;

/// Frames handed to the TAP per `io_uring_enter` (one writev SQE each).
pub const TX_BATCH: usize = 64;

const EV_STOP: u64 = 0;
const EV_TX: u64 = 1;
const EV_RX: u64 = 2;
const EV_TAP: u64 = 3;
const EV_SWITCH: u64 = 4;

/// One queue pair as the driver made it ready.
pub struct PairQueues {
    pub rx: Queue,
    pub tx: Queue,
    pub rx_notify: EventFd,
    pub tx_notify: EventFd,
    /// With multi-queue: whether the guest enabled the pair.
    pub switch: Option<Arc<PairSwitch>>,
}

/// Whether a multi-queue pair is enabled (the guest's VQ_PAIRS_SET), and
/// the eventfd that tells its worker to look again.
pub struct PairSwitch {
    pub enabled: AtomicBool,
    pub wake: EventFd,
}

/// Why no chain was popped.
pub(super) enum Chain {
    /// Nothing available.
    Empty,
    /// The driver is broken.
    Broken,
}

/// The state of a device's worker thread.
pub struct NetWorker {
    mem: GuestMemory,
    rx: Rx,
    tx: Queue,
    rx_notify: EventFd,
    tx_notify: EventFd,
    stop: EventFd,
    tap: File,
    switch: Option<Arc<PairSwitch>>,
    interrupt: Arc<Interrupt>,
    epoll: Epoll,
    tap_watched: bool,
    iovecs: Vec<libc::iovec>,
    /// The tx batch: every frame's iovecs back to back (capacity
    /// `TX_BATCH * MAX_IOVECS`, never grown, so SQEs may point into it),
    /// and per frame its head and (start, count) in `tx_iov`, or None when
    /// the chain was bad and its frame is dropped.
    tx_iov: Vec<libc::iovec>,
    tx_batch: Vec<(u16, Option<(usize, usize)>)>,
    ring: IoUring,
    tx_added: bool,
}

// SAFETY: the iovec buffer holds only raw pointers into guest memory that are
// rebuilt for every frame and never used outside the worker thread.
unsafe impl Send for NetWorker {}

impl NetWorker {
    /// `mergeable`: the driver took mergeable rx buffers; `rx_need`: the
    /// largest frame (with its header) the TAP may deliver.
    pub fn new(
        mem: GuestMemory,
        interrupt: Arc<Interrupt>,
        pair: PairQueues,
        tap: File,
        stop: EventFd,
        mergeable: bool,
        rx_need: usize,
    ) -> Result<Self, VirtioError> {
        let PairQueues {
            rx,
            tx,
            rx_notify,
            tx_notify,
            switch,
        } = pair;
        let epoll = Epoll::new().map_err(VirtioError::EventFd)?;
        let ring = IoUring::new(TX_BATCH as u32).map_err(VirtioError::Uring)?;
        let w = NetWorker {
            mem,
            rx: Rx::new(rx, mergeable, rx_need)?,
            tx,
            rx_notify,
            tx_notify,
            stop,
            tap,
            switch,
            interrupt,
            epoll,
            tap_watched: false,
            iovecs: Vec::with_capacity(MAX_IOVECS),
            tx_iov: Vec::with_capacity(TX_BATCH * MAX_IOVECS),
            tx_batch: Vec::with_capacity(TX_BATCH),
            ring,
            tx_added: false,
        };
        let mut fds = vec![
            (w.stop.as_raw_fd(), EV_STOP),
            (w.tx_notify.as_raw_fd(), EV_TX),
            (w.rx_notify.as_raw_fd(), EV_RX),
        ];
        if let Some(s) = &w.switch {
            fds.push((s.wake.as_raw_fd(), EV_SWITCH));
        }
        for (fd, tag) in fds {
            w.epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, tag),
                )
                .map_err(VirtioError::EventFd)?;
        }
        Ok(w)
    }

    /// Whether the guest has this pair enabled (always, without multi-queue).
    fn enabled(&self) -> bool {
        self.switch
            .as_ref()
            .is_none_or(|s| s.enabled.load(Ordering::Acquire))
    }

    /// Serve both queues until the stop eventfd fires.
    pub fn run(mut self) {
        self.watch_tap(self.enabled());
        // Chains made available before activation are served at once.
        self.serve_tx();
        self.serve_rx();
        self.notify_guest();
        let mut events = [EpollEvent::default(); 5];
        loop {
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => {
                    eprintln!("kiln-vmm: virtio-net epoll failed: {e}");
                    self.interrupt.mark_broken();
                    return;
                }
            };
            let (mut tx, mut rx) = (false, false);
            for ev in events.iter().take(n) {
                match ev.data() {
                    EV_STOP => return,
                    EV_TX => {
                        let _ = self.tx_notify.read();
                        tx = true;
                    }
                    EV_RX => {
                        let _ = self.rx_notify.read();
                        rx = true;
                    }
                    EV_SWITCH => {
                        if let Some(s) = &self.switch {
                            let _ = s.wake.read();
                        }
                        rx = true;
                    }
                    _ => rx = true,
                }
            }
            if self.interrupt.is_broken() {
                // Stop serving until reset; only the stop eventfd matters now.
                self.watch_tap(false);
                continue;
            }
            if tx {
                self.serve_tx();
            }
            if rx {
                self.serve_rx();
            }
            self.notify_guest();
        }
    }

    fn watch_tap(&mut self, on: bool) {
        if on == self.tap_watched {
            return;
        }
        let op = if on {
            ControlOperation::Add
        } else {
            ControlOperation::Delete
        };
        let ok = self
            .epoll
            .ctl(
                op,
                self.tap.as_raw_fd(),
                EpollEvent::new(EventSet::IN, EV_TAP),
            )
            .is_ok();
        if ok {
            self.tap_watched = on;
        } else {
            self.interrupt.mark_broken();
        }
    }

    /// Send every frame the driver made available, then ask to be notified
    /// again (serving what slipped in meanwhile).
    fn serve_tx(&mut self) {
        loop {
            let _ = self.tx.disable_notification(&self.mem);
            let mut served = 0usize;
            loop {
                let (n, broken) = self.tx_batch();
                served += n;
                if broken {
                    self.interrupt.mark_broken();
                    return;
                }
                if n < TX_BATCH || served > usize::from(self.tx.size()) {
                    break;
                }
            }
            match self.tx.enable_notification(&self.mem) {
                Ok(true) => continue,
                Ok(false) => return,
                Err(_) => {
                    self.interrupt.mark_broken();
                    return;
                }
            }
        }
    }

    /// Pop up to `TX_BATCH` chains, write their frames to the TAP with one
    /// writev SQE each in one `io_uring_enter`, and return the chains used
    /// once every write completed. Returns (chains popped, driver broken).
    fn tx_batch(&mut self) -> (usize, bool) {
        let mem = self.mem.clone();
        self.tx_iov.clear();
        self.tx_batch.clear();
        let mut broken = false;
        while self.tx_batch.len() < TX_BATCH {
            let (head, total, ok) =
                match pop_chain(&mut self.tx, &mem, &mut self.iovecs, false, MAX_TX_BYTES) {
                    Err(Chain::Broken) => {
                        broken = true;
                        break;
                    }
                    Err(_) => break,
                    Ok(p) => p,
                };
            // A frame needs its header and at least an Ethernet header.
            let frame = (ok && total >= HDR_LEN + 14).then(|| {
                let start = self.tx_iov.len();
                // Within capacity: at most MAX_IOVECS per chain, TX_BATCH chains.
                self.tx_iov.extend_from_slice(&self.iovecs);
                (start, self.iovecs.len())
            });
            self.tx_batch.push((head, frame));
        }
        if !self.write_batch() {
            broken = true;
        }
        let popped = self.tx_batch.len();
        for i in 0..popped {
            let head = self.tx_batch[i].0;
            if self.tx.add_used(&mem, head, 0).is_err() {
                return (popped, true);
            }
            self.tx_added = true;
        }
        (popped, broken)
    }

    /// Submit the batch's writes and wait until all completed (the guest
    /// gets its buffers back only after); false when the ring failed.
    fn write_batch(&mut self) -> bool {
        let fd = types::Fd(self.tap.as_raw_fd());
        let mut queued = 0usize;
        for (i, (_, frame)) in self.tx_batch.iter().enumerate() {
            let Some((start, count)) = *frame else {
                continue;
            };
            let Some(iov) = self.tx_iov.get(start..start + count) else {
                continue;
            };
            let e = opcode::Writev::new(fd, iov.as_ptr(), count as u32)
                .build()
                .user_data(i as u64);
            // SAFETY: the iovecs (in `tx_iov`, untouched until every write
            // completed) point into guest memory vm-memory checked, mapped
            // while `self.mem` lives; the kernel only reads them.
            if unsafe { self.ring.submission().push(&e) }.is_err() {
                break; // cannot happen: the ring holds TX_BATCH entries
            }
            queued += 1;
        }
        // A failed write (a full TAP queue, a link down) drops its frame.
        complete_all(&mut self.ring, queued, |_| {}).is_ok()
    }

    /// Receive frames while both a frame and a buffer chain are there (and
    /// the pair is enabled: a disabled pair's TAP queue is detached).
    fn serve_rx(&mut self) {
        if !self.enabled() {
            self.watch_tap(false);
            return;
        }
        loop {
            let _ = self.rx.queue.disable_notification(&self.mem);
            match self.rx.serve(&self.mem, self.tap.as_raw_fd()) {
                RxOutcome::Broken => {
                    self.interrupt.mark_broken();
                    return;
                }
                // The TAP wakes us when a frame comes; buffers are posted:
                // no notification needed. After a ring's worth, tx gets a
                // turn and epoll (the TAP is watched) brings us back.
                RxOutcome::TapEmpty | RxOutcome::Yield => {
                    self.watch_tap(true);
                    return;
                }
                RxOutcome::NoBuffers => {}
            }
            // No buffer: stop watching the TAP until the driver posts some.
            self.watch_tap(false);
            match self.rx.queue.enable_notification(&self.mem) {
                Ok(true) => self.watch_tap(true),
                Ok(false) => return,
                Err(_) => {
                    self.interrupt.mark_broken();
                    return;
                }
            }
        }
    }

    fn notify_guest(&mut self) {
        let mut raise = false;
        if std::mem::take(&mut self.tx_added) {
            raise |= wants_interrupt(&mut self.tx, &self.mem);
        }
        if std::mem::take(&mut self.rx.added) {
            raise |= wants_interrupt(&mut self.rx.queue, &self.mem);
        }
        if raise {
            self.interrupt.trigger(INT_USED_RING);
        }
    }
}

/// Submit what `ring` holds and wait until `n` completions came, handing
/// each to `each`; Err when the ring failed (the error is printed).
pub(super) fn complete_all(
    ring: &mut IoUring,
    n: usize,
    mut each: impl FnMut(&io_uring::cqueue::Entry),
) -> Result<(), ()> {
    let mut done = 0usize;
    while done < n {
        match ring.submit_and_wait(n - done) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => {
                eprintln!("kiln-vmm: virtio-net io_uring failed: {e}");
                return Err(());
            }
        }
        for cqe in ring.completion() {
            each(&cqe);
            done += 1;
        }
    }
    Ok(())
}

/// Pop the next chain of `queue`, its buffers' host addresses into
/// `iovecs`: (head, total length, usable). A chain is usable when every
/// buffer has the direction wanted (`device_writes`), lies in one region of
/// guest memory, and they number at most `MAX_IOVECS` and `max_bytes` bytes.
/// `Err` says the queue is empty or broken.
pub(super) fn pop_chain(
    queue: &mut Queue,
    mem: &GuestMemory,
    iovecs: &mut Vec<libc::iovec>,
    device_writes: bool,
    max_bytes: usize,
) -> Result<(u16, usize, bool), Chain> {
    let chain = match queue.iter(mem) {
        Ok(mut it) => it.next(),
        Err(_) => return Err(Chain::Broken),
    };
    let Some(chain) = chain else {
        return Err(Chain::Empty);
    };
    let head = chain.head_index();
    iovecs.clear();
    let mut ok = true;
    let mut total = 0usize;
    for d in chain {
        if !ok {
            continue; // drain the iterator; the frame is dropped
        }
        total = total.saturating_add(d.len() as usize);
        ok = d.is_write_only() == device_writes
            && iovecs.len() < MAX_IOVECS
            && total <= max_bytes
            && push_iovec(iovecs, mem, d.addr(), d.len());
    }
    Ok((head, total, ok))
}

/// Append the host address of guest range `addr..addr+len`; false when it
/// is not all in one region of guest memory.
fn push_iovec(
    iovecs: &mut Vec<libc::iovec>,
    mem: &GuestMemory,
    addr: vm_memory::GuestAddress,
    len: u32,
) -> bool {
    if len == 0 {
        return true;
    }
    let Ok(slice) = GuestMemoryBackend::get_slice(mem, addr, len as usize) else {
        return false;
    };
    iovecs.push(libc::iovec {
        iov_base: slice.ptr_guard_mut().as_ptr().cast(),
        iov_len: len as usize,
    });
    true
}
