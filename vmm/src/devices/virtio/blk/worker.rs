//! The queue thread of a virtio-blk device: one io_uring per queue that
//! also watches the queue's ioeventfd and a stop eventfd. Per notification
//! it pops every available chain, pushes one SQE per data segment, submits
//! them in one `io_uring_enter`, and reaps completions in batches; each
//! batch writes statuses and used entries and raises the irqfd at most once
//! (when EVENT_IDX says the driver wants it).
//!
//! Guest data moves straight between guest memory and the file: an SQE's
//! buffer is the host address of a guest range vm-memory has checked. The
//! thread never exits with I/O in flight, so guest memory (kept alive by the
//! thread's own `GuestMemory` handle) outlives every operation.

use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use io_uring::{opcode, squeue, types, IoUring};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::EventFd;

use super::request::{self, Segment};
use super::{
    BlkSettings, DiskFiles, SharedDisk, ID_BYTES, SECTOR, SEG_MAX, S_IOERR, S_OK, S_UNSUPP,
    T_DISCARD, T_FLUSH, T_GET_ID, T_IN, T_OUT, T_WRITE_ZEROES,
};
use crate::devices::virtio::{wants_interrupt, Interrupt, VirtioError, INT_USED_RING};
use crate::memory::GuestMemory;

/// user_data tags of the two poll operations; I/O uses `head | len << 16`.
const TAG_NOTIFY: u64 = 1 << 63;
const TAG_STOP: u64 = (1 << 63) | 1;
/// Submission queue entries per ring.
const RING_ENTRIES: u32 = 512;
/// Times a full submission queue is flushed before a request fails.
const PUSH_RETRIES: usize = 16;
/// `io_uring_enter` flag: wait for (and, on a deferred ring, post)
/// completions.
const IORING_ENTER_GETEVENTS: u32 = 1;

/// The queue's ring. Where the kernel has them (6.1+), one issuer and
/// deferred completion work: an O_DIRECT completion then only queues work
/// for this thread's next `io_uring_enter` instead of interrupting or
/// waking it, and a waiting thread is woken once enough completions are
/// ready. Such a ring is created disabled: the queue thread, not the one
/// activating the device, becomes its issuer when it enables it. Returns
/// whether the ring is deferred.
fn new_ring() -> std::io::Result<(IoUring, bool)> {
    let deferred = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_r_disabled()
        .build(RING_ENTRIES);
    match deferred {
        Ok(ring) => Ok((ring, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            Ok((IoUring::new(RING_ENTRIES)?, false))
        }
        Err(e) => Err(e),
    }
}

/// One descriptor head's request while its I/O is in flight.
#[derive(Clone, Copy, Default)]
struct Slot {
    busy: bool,
    pending: u32,
    failed: bool,
    status: GuestAddress,
    used_len: u32,
}

/// A queue thread's state.
pub struct QueueWorker {
    mem: GuestMemory,
    queue: Queue,
    notifier: EventFd,
    stop: EventFd,
    interrupt: Arc<Interrupt>,
    disk: Arc<SharedDisk>,
    files: Option<Arc<DiskFiles>>,
    files_generation: u64,
    settings: BlkSettings,
    ring: IoUring,
    /// The ring defers completion work to this thread's next wait (see
    /// `new_ring`): it must enter the kernel to see completions.
    deferred: bool,
    slots: Vec<Slot>,
    segments: Vec<Segment>,
    in_flight: usize,
    added: bool,
}

impl QueueWorker {
    pub fn new(
        mem: GuestMemory,
        queue: Queue,
        notifier: EventFd,
        stop: EventFd,
        interrupt: Arc<Interrupt>,
        disk: Arc<SharedDisk>,
        settings: BlkSettings,
    ) -> Result<Self, VirtioError> {
        let (ring, deferred) = new_ring().map_err(VirtioError::Uring)?;
        let slots = vec![Slot::default(); usize::from(queue.size().max(1))];
        Ok(QueueWorker {
            mem,
            queue,
            notifier,
            stop,
            interrupt,
            files_generation: disk.generation(),
            files: disk.current(),
            disk,
            settings,
            ring,
            deferred,
            slots,
            segments: Vec::with_capacity(SEG_MAX as usize + 2),
            in_flight: 0,
            added: false,
        })
    }

    /// Serve the queue until the stop eventfd fires; in-flight I/O is
    /// completed before returning.
    ///
    /// For `settings.poll` after the last activity (a request popped or an
    /// I/O completed) the thread polls instead of sleeping, with guest
    /// notifications off: it looks at the avail ring and reaps completions
    /// in a loop, so a driver that keeps its queue full pays neither
    /// notification exits nor a cross-CPU wake-up of this thread per
    /// request (both tens of µs on a nested host). This keeps the device's
    /// queue full: at QD32 on the measured host it holds ~30 of 32 requests
    /// in flight instead of ~26, for ~1.4× the IOPS. The price is a host
    /// CPU spent spinning while the guest does I/O, so it is opt-in
    /// (`poll_us`, default 0). Otherwise, and after the window, it sleeps in
    /// `io_uring_enter` with notifications on.
    pub fn run(mut self) {
        crate::affinity::pin_or_warn(&self.settings.affinity, "a virtio-blk queue thread");
        if self.deferred && self.ring.submitter().register_enable_rings().is_err() {
            self.interrupt.mark_broken();
            return;
        }
        let (n, s) = (self.notifier.as_raw_fd(), self.stop.as_raw_fd());
        if !self.arm_poll(n, TAG_NOTIFY) || !self.arm_poll(s, TAG_STOP) {
            self.interrupt.mark_broken();
            return;
        }
        let mut last_activity = Instant::now();
        let mut notifications_on = true;
        loop {
            let busy =
                !self.settings.poll.is_zero() && last_activity.elapsed() < self.settings.poll;
            let wait = if busy {
                if notifications_on {
                    let _ = self.queue.disable_notification(&self.mem);
                    notifications_on = false;
                }
                0
            } else {
                if !notifications_on {
                    // About to sleep: ask for notifications, then look once
                    // more (a request may have slipped in meanwhile).
                    notifications_on = true;
                    match self.queue.enable_notification(&self.mem) {
                        Ok(true) => {
                            last_activity = Instant::now();
                            continue;
                        }
                        Ok(false) => {}
                        Err(_) => self.interrupt.mark_broken(),
                    }
                }
                // Wake for a quarter of what is in flight (at least one):
                // fewer wake-ups, completions still flow while the rest runs.
                self.in_flight.div_ceil(4).max(1)
            };
            if let Err(e) = self.enter(wait) {
                eprintln!("kiln-vmm: virtio-blk io_uring failed: {e}");
                self.interrupt.mark_broken();
                self.drain();
                return;
            }
            let (notified, stopped, reaped) = self.reap();
            if stopped {
                self.drain();
                self.notify_guest();
                return;
            }
            if notified {
                let _ = self.notifier.read();
                if !self.arm_poll(n, TAG_NOTIFY) {
                    self.interrupt.mark_broken();
                }
            }
            let popped = self.process_queue();
            if popped > 0 {
                // The avail event the driver sees is stale now: re-enable
                // before the next sleep.
                notifications_on = false;
            }
            if reaped || popped > 0 || notified {
                last_activity = Instant::now();
            }
            self.notify_guest();
            if busy && !reaped && popped == 0 {
                std::hint::spin_loop();
            }
        }
    }

    /// Submit what is queued and wait for `wait` completions (0: none).
    /// A deferred ring enters the kernel even then, since its completions
    /// are posted only while this thread is inside `io_uring_enter`.
    fn enter(&mut self, wait: usize) -> std::io::Result<()> {
        let pending = self.ring.submission().len();
        if wait == 0 && pending == 0 && !self.deferred {
            return Ok(());
        }
        let flags = if wait > 0 || self.deferred {
            IORING_ENTER_GETEVENTS
        } else {
            0
        };
        loop {
            // SAFETY: no argument struct is passed; the SQEs being submitted
            // were checked when pushed (see `push`).
            let r = unsafe {
                self.ring.submitter().enter::<libc::sigset_t>(
                    pending as u32,
                    wait as u32,
                    flags,
                    None,
                )
            };
            match r {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {
                    if wait == 0 {
                        return Ok(());
                    }
                }
                // The completion queue is full: reap, then come back.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Wait for every in-flight operation (on stop or failure).
    fn drain(&mut self) {
        while self.in_flight > 0 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(_) => return,
            }
            self.reap();
        }
    }

    /// Handle every completion available; say whether the notifier or the
    /// stop eventfd fired and whether any I/O completed.
    fn reap(&mut self) -> (bool, bool, bool) {
        let (mut notified, mut stopped, mut reaped) = (false, false, false);
        loop {
            let Some(cqe) = self.ring.completion().next() else {
                break;
            };
            match cqe.user_data() {
                TAG_NOTIFY => notified = true,
                TAG_STOP => stopped = true,
                data => {
                    reaped = true;
                    let head = (data & 0xffff) as u16;
                    let want = (data >> 16) as u32;
                    let ok = cqe.result() >= 0 && cqe.result() as u32 == want;
                    self.segment_done(head, ok);
                }
            }
        }
        (notified, stopped, reaped)
    }

    fn segment_done(&mut self, head: u16, ok: bool) {
        let Some(slot) = self.slots.get_mut(usize::from(head)) else {
            return;
        };
        if !slot.busy || slot.pending == 0 {
            return;
        }
        slot.pending -= 1;
        slot.failed |= !ok;
        self.in_flight = self.in_flight.saturating_sub(1);
        if slot.pending == 0 {
            self.finish(head);
        }
    }

    /// Write the status and the used entry of a request whose I/O is done.
    fn finish(&mut self, head: u16) {
        let Some(slot) = self.slots.get_mut(usize::from(head)) else {
            return;
        };
        let status = if slot.failed { S_IOERR } else { S_OK };
        let (addr, len) = (slot.status, slot.used_len);
        *slot = Slot::default();
        self.complete(head, Some(addr), status, len);
    }

    /// Answer a request: status byte (when there is one) and used entry.
    fn complete(&mut self, head: u16, status_addr: Option<GuestAddress>, status: u8, len: u32) {
        if let Some(a) = status_addr {
            // The address was inside guest memory when parsed; a failed write
            // only leaves the guest without its status.
            let _ = self.mem.write_obj(status, a);
        }
        if self.queue.add_used(&self.mem, head, len).is_err() {
            self.interrupt.mark_broken();
        }
        self.added = true;
    }

    /// Raise the interrupt if requests completed and the driver wants it.
    fn notify_guest(&mut self) {
        if !self.added {
            return;
        }
        self.added = false;
        if wants_interrupt(&mut self.queue, &self.mem) {
            self.interrupt.trigger(INT_USED_RING);
        }
    }

    fn arm_poll(&mut self, fd: i32, tag: u64) -> bool {
        let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .build()
            .user_data(tag);
        self.push(&e)
    }

    /// Queue one SQE, flushing a full submission queue a few times.
    fn push(&mut self, e: &squeue::Entry) -> bool {
        for _ in 0..PUSH_RETRIES {
            // SAFETY: every buffer an entry points at is guest memory checked
            // by vm-memory (kept mapped by `self.mem` until the thread ends,
            // and the thread drains its I/O before ending) or nothing at all.
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return true;
            }
            if self.ring.submit().is_err() {
                return false;
            }
        }
        false
    }

    /// Pop and start every available request (at most a ring's worth);
    /// returns how many. Notifications are the caller's business.
    fn process_queue(&mut self) -> usize {
        if self.disk.generation() != self.files_generation {
            if self.in_flight > 0 {
                // A swap or detach: let the old file's requests complete
                // first (new ones wait in the ring meanwhile).
                return 0;
            }
            self.files_generation = self.disk.generation();
            self.files = self.disk.current();
        }
        if self.interrupt.is_broken() {
            return 0;
        }
        let mem = self.mem.clone();
        let mut popped = 0usize;
        while popped <= usize::from(self.queue.size()) {
            // Re-create the iterator each time: `start` borrows `self`.
            let chain = match self.queue.iter(&mem) {
                Ok(mut it) => it.next(),
                Err(_) => {
                    // Avail index more than a ring ahead: a broken driver.
                    self.interrupt.mark_broken();
                    break;
                }
            };
            let Some(chain) = chain else { break };
            let parsed = request::parse(chain, &mem, &mut self.segments, SEG_MAX as usize);
            self.start(parsed);
            popped += 1;
            if self.interrupt.is_broken() {
                break;
            }
        }
        popped
    }

    /// Start one parsed request (or answer it at once).
    fn start(&mut self, p: request::Parsed) {
        let head = p.head;
        match self.slots.get(usize::from(head)) {
            Some(slot) if !slot.busy => {}
            // The same head twice in flight: the driver is broken.
            _ => {
                self.interrupt.mark_broken();
                return;
            }
        }
        let Some(status) = p.status else {
            self.complete(head, None, S_IOERR, 0);
            return;
        };
        let Some((kind, sector)) = p.header else {
            self.complete(head, Some(status), S_IOERR, 1);
            return;
        };
        if kind == T_GET_ID {
            // Answered from the settings: an empty slot has an id too.
            let seg = self.segments.first().copied();
            let st = match seg {
                Some(s) if s.device_writes => {
                    let n = (s.len as usize).min(ID_BYTES);
                    match self.mem.write_slice(&self.settings.id[..n], s.addr) {
                        Ok(()) => S_OK,
                        Err(_) => S_IOERR,
                    }
                }
                _ => S_IOERR,
            };
            let len = seg.map_or(0, |s| s.len.min(ID_BYTES as u32));
            self.complete(head, Some(status), st, len + 1);
            return;
        }
        // An empty slot (or a swap in progress) has no file: I/O fails.
        let Some(files) = self.files.clone() else {
            self.complete(head, Some(status), S_IOERR, 1);
            return;
        };
        let writes_disk = matches!(kind, T_OUT | T_DISCARD | T_WRITE_ZEROES);
        if writes_disk && self.settings.read_only {
            self.complete(head, Some(status), S_IOERR, 1);
            return;
        }
        match kind {
            T_IN | T_OUT => self.start_rw(head, status, kind == T_IN, sector, &files),
            T_FLUSH => {
                let e = opcode::Fsync::new(types::Fd(files.buffered.as_raw_fd()))
                    .flags(types::FsyncFlags::DATASYNC)
                    .build();
                self.start_ops(head, status, 1, &[e]);
            }
            T_DISCARD | T_WRITE_ZEROES => self.start_discard(head, status, kind, &files),
            _ => self.complete(head, Some(status), S_UNSUPP, 1),
        }
    }

    fn start_rw(
        &mut self,
        head: u16,
        status: GuestAddress,
        read: bool,
        sector: u64,
        files: &DiskFiles,
    ) {
        let total: u64 = self.segments.iter().map(|s| u64::from(s.len)).sum();
        let in_range = sector
            .checked_mul(SECTOR)
            .and_then(|start| start.checked_add(total))
            .is_some_and(|end| end <= files.sectors * SECTOR);
        let directions_ok = self.segments.iter().all(|s| s.device_writes == read);
        if !in_range || !directions_ok || !total.is_multiple_of(SECTOR) {
            self.complete(head, Some(status), S_IOERR, 1);
            return;
        }
        let mut offset = sector * SECTOR;
        let used_len = if read { total as u32 + 1 } else { 1 };
        self.begin(head, status, used_len);
        let mut failed = false;
        for i in 0..self.segments.len() {
            let s = self.segments[i];
            if s.len == 0 {
                continue;
            }
            let Ok(slice) = GuestMemoryBackend::get_slice(&self.mem, s.addr, s.len as usize) else {
                failed = true;
                break;
            };
            let ptr = slice.ptr_guard_mut().as_ptr();
            let aligned = (ptr as u64 | u64::from(s.len) | offset).is_multiple_of(SECTOR);
            let fd = match (&files.direct, aligned) {
                (Some(d), true) => d.as_raw_fd(),
                _ => files.buffered.as_raw_fd(),
            };
            let e = if read {
                opcode::Read::new(types::Fd(fd), ptr, s.len)
                    .offset(offset)
                    .build()
            } else {
                opcode::Write::new(types::Fd(fd), ptr, s.len)
                    .offset(offset)
                    .build()
            };
            if !self.push_op(head, s.len, e) {
                failed = true;
                break;
            }
            offset += u64::from(s.len);
        }
        self.end(head, failed);
    }

    fn start_discard(&mut self, head: u16, status: GuestAddress, kind: u32, files: &DiskFiles) {
        let range = match self.segments.first() {
            Some(s) if !s.device_writes && s.len >= 16 => {
                let sector = self.mem.read_obj::<u64>(s.addr).ok();
                let count = s
                    .addr
                    .0
                    .checked_add(8)
                    .and_then(|a| self.mem.read_obj::<u32>(GuestAddress(a)).ok());
                let flags = s
                    .addr
                    .0
                    .checked_add(12)
                    .and_then(|a| self.mem.read_obj::<u32>(GuestAddress(a)).ok());
                match (sector, count, flags) {
                    (Some(a), Some(b), Some(c)) => {
                        Some((u64::from_le(a), u32::from_le(b), u32::from_le(c)))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let Some((sector, count, flags)) = range else {
            self.complete(head, Some(status), S_IOERR, 1);
            return;
        };
        let in_range = sector
            .checked_add(u64::from(count))
            .is_some_and(|end| end <= files.sectors);
        if !in_range || self.segments.len() != 1 {
            self.complete(head, Some(status), S_IOERR, 1);
            return;
        }
        if count == 0 {
            self.complete(head, Some(status), S_OK, 1);
            return;
        }
        let unmap = kind == T_DISCARD || flags & 1 != 0;
        let mode = libc::FALLOC_FL_KEEP_SIZE
            | if unmap {
                libc::FALLOC_FL_PUNCH_HOLE
            } else {
                libc::FALLOC_FL_ZERO_RANGE
            };
        let e = opcode::Fallocate::new(
            types::Fd(files.buffered.as_raw_fd()),
            u64::from(count) * SECTOR,
        )
        .offset(sector * SECTOR)
        .mode(mode)
        .build();
        self.start_ops(head, status, 1, &[e]);
    }

    fn start_ops(&mut self, head: u16, status: GuestAddress, used_len: u32, ops: &[squeue::Entry]) {
        self.begin(head, status, used_len);
        let mut failed = false;
        for e in ops {
            if !self.push_op(head, 0, e.clone()) {
                failed = true;
                break;
            }
        }
        self.end(head, failed);
    }

    fn begin(&mut self, head: u16, status: GuestAddress, used_len: u32) {
        if let Some(slot) = self.slots.get_mut(usize::from(head)) {
            *slot = Slot {
                busy: true,
                pending: 0,
                failed: false,
                status,
                used_len,
            };
        }
    }

    /// After the last op of a request was pushed: a request with nothing in
    /// flight is answered now.
    fn end(&mut self, head: u16, failed: bool) {
        let Some(slot) = self.slots.get_mut(usize::from(head)) else {
            return;
        };
        slot.failed |= failed;
        if slot.pending == 0 {
            self.finish(head);
        }
    }

    fn push_op(&mut self, head: u16, want: u32, e: squeue::Entry) -> bool {
        let e = e.user_data(u64::from(head) | (u64::from(want) << 16));
        if !self.push(&e) {
            return false;
        }
        if let Some(slot) = self.slots.get_mut(usize::from(head)) {
            slot.pending += 1;
        }
        self.in_flight += 1;
        true
    }
}
