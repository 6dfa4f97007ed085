//! The receive side of a virtio-net device: frames from the TAP into the
//! guest's rx buffers, read through io_uring in batches.
//!
//! Chains popped from the avail ring wait in `pending` (in order) until a
//! frame fills them, so a read that finds the TAP empty gives nothing back
//! and nothing is popped twice. Per batch the pending chains are cut into
//! groups — one chain each, or with mergeable buffers as many chains as hold
//! the largest frame the TAP can deliver (`need`) — and every group gets one
//! readv SQE; all go to the kernel in one `io_uring_enter`. The reads carry
//! RWF_NOWAIT, so one that finds no frame completes with EAGAIN instead of
//! waiting (io_uring ignores O_NONBLOCK on a TAP, which supports nowait, and
//! would arm a poll). The reads run in submission order, so frames land in order;
//! a read's frame fills its group's chains from the first, and chains it did
//! not need stay pending for the next frame. The batch size follows the
//! traffic: it doubles while every read finds a frame and falls back to what
//! the last batch found.
//!
//! Every frame's `num_buffers` (the header's last field, which the TAP
//! leaves alone) is set: 1, or the chains a mergeable frame spans.
//!
//! A chain that is not usable (device-readable, outside guest memory, too
//! many buffers) is returned with length 0; when it is the first one waiting
//! it also drops one frame in its place, so a driver that posts only bad
//! buffers cannot stall the TAP; an error
//! from a read (a frame larger than a non-mergeable chain) drops that frame
//! and returns the chain with length 0.

use std::collections::VecDeque;
use std::os::unix::io::RawFd;

use io_uring::{opcode, types, IoUring};
use virtio_queue::{Queue, QueueOwnedT, QueueT};

use super::worker::{complete_all, pop_chain, Chain};
use super::HDR_LEN;
use crate::devices::virtio::VirtioError;
use crate::memory::GuestMemory;

/// Reads in one batch (SQEs per `io_uring_enter`).
pub const RX_BATCH: usize = 32;
/// Buffers one read may span (Linux's UIO_MAXIOV).
const MAX_READ_IOVECS: usize = 1024;
/// Offset of `num_buffers` in `virtio_net_hdr_v1`.
const NUM_BUFFERS_AT: usize = 10;

/// A chain popped from the avail ring, waiting for a frame.
struct Pending {
    head: u16,
    cap: usize,
    iov: Vec<libc::iovec>,
}

/// What a call to `serve` ended with.
pub enum RxOutcome {
    /// Every posted chain is in use or pending: the driver must post more.
    NoBuffers,
    /// The TAP has no frame; chains are waiting for one.
    TapEmpty,
    /// Served a ring's worth; come back after tx had a turn.
    Yield,
    /// The driver broke the queue.
    Broken,
}

/// The rx queue and its io_uring.
pub struct Rx {
    pub queue: Queue,
    ring: IoUring,
    pending: VecDeque<Pending>,
    /// Spare iovec vectors, so popping allocates nothing in steady state.
    spare: Vec<Vec<libc::iovec>>,
    /// Per read of a batch: its iovecs (the SQEs point into these, so they
    /// are not touched until the batch completed) and its chains (count
    /// from the front of `pending`, in order).
    reads: Vec<(Vec<libc::iovec>, usize)>,
    results: Vec<i32>,
    mergeable: bool,
    /// Bytes one group must hold (mergeable buffers only).
    need: usize,
    hint: usize,
    /// Used entries added since the guest was last interrupted.
    pub added: bool,
}

// SAFETY: the iovecs hold raw pointers into guest memory, used only by the
// worker thread that owns this value (and by the kernel during a batch).
unsafe impl Send for Rx {}

impl Rx {
    /// `need`: the largest frame (with its header) the TAP may deliver,
    /// used to size mergeable groups.
    pub fn new(queue: Queue, mergeable: bool, need: usize) -> Result<Self, VirtioError> {
        let ring = IoUring::new(RX_BATCH as u32).map_err(VirtioError::Uring)?;
        Ok(Rx {
            queue,
            ring,
            pending: VecDeque::with_capacity(256),
            spare: Vec::new(),
            reads: (0..RX_BATCH)
                .map(|_| (Vec::with_capacity(MAX_READ_IOVECS), 0))
                .collect(),
            results: Vec::with_capacity(RX_BATCH),
            mergeable,
            need: need.max(HDR_LEN + 14),
            hint: 1,
            added: false,
        })
    }

    /// Move frames into posted chains until the TAP is empty, the chains
    /// run out, or a ring's worth was served.
    pub fn serve(&mut self, mem: &GuestMemory, tap: RawFd) -> RxOutcome {
        let mut served = 0usize;
        loop {
            match self.fill(mem, tap) {
                Ok(None) => {}
                Ok(Some(outcome)) => return outcome,
                Err(()) => return RxOutcome::Broken,
            }
            let reads = self.plan();
            if reads == 0 {
                return RxOutcome::NoBuffers;
            }
            let Some(frames) = self.read_batch(mem, tap, reads) else {
                return RxOutcome::Broken;
            };
            served += frames;
            if frames < reads {
                self.hint = frames.max(1);
                return RxOutcome::TapEmpty;
            }
            self.hint = (self.hint * 2).min(RX_BATCH);
            if served > usize::from(self.queue.size()) {
                return RxOutcome::Yield;
            }
        }
    }

    /// Pop chains until `pending` can feed `hint` reads or the avail ring
    /// is empty. A bad chain at the front drops one frame; Some(TapEmpty)
    /// when there was no frame to drop (the chain waits for one).
    fn fill(&mut self, mem: &GuestMemory, tap: RawFd) -> Result<Option<RxOutcome>, ()> {
        // Summed once here and kept up as chains are added below.
        let mut cap: usize = self.pending.iter().map(|p| p.cap).sum();
        loop {
            let enough = if self.mergeable {
                cap >= self.need * self.hint
            } else {
                self.pending.len() >= self.hint
            };
            if enough {
                return Ok(None);
            }
            let mut iov = self.spare.pop().unwrap_or_default();
            let popped = pop_chain(&mut self.queue, mem, &mut iov, true, usize::MAX);
            let (head, total, ok) = match popped {
                Ok(p) => p,
                Err(Chain::Broken) => return Err(()),
                Err(_) => {
                    self.spare.push(iov);
                    return Ok(None);
                }
            };
            if ok && total >= HDR_LEN {
                cap += total;
                self.pending.push_back(Pending {
                    head,
                    cap: total,
                    iov,
                });
                continue;
            }
            self.spare.push(iov);
            // A bad chain behind good ones is returned at once (putting it
            // back would leave it in front of any later buffers, and with
            // too few pending for a mergeable frame the worker would spin
            // on an avail ring that never gets shorter).
            if self.pending.is_empty() && !drop_one_frame(tap) {
                self.queue.go_to_previous_position();
                return Ok(Some(RxOutcome::TapEmpty));
            }
            if self.queue.add_used(mem, head, 0).is_err() {
                return Err(());
            }
            self.added = true;
        }
    }

    /// Cut the front of `pending` into at most `hint` reads; how many.
    fn plan(&mut self) -> usize {
        let mut reads = 0usize;
        let mut next = 0usize;
        while reads < self.hint && next < self.pending.len() {
            let (iov, chains) = &mut self.reads[reads];
            iov.clear();
            *chains = 0;
            let mut cap = 0usize;
            for p in self.pending.iter().skip(next) {
                if iov.len() + p.iov.len() > MAX_READ_IOVECS {
                    break;
                }
                iov.extend_from_slice(&p.iov);
                cap += p.cap;
                *chains += 1;
                if !self.mergeable || cap >= self.need {
                    break;
                }
            }
            if *chains == 0
                || (self.mergeable && cap < self.need && next + *chains == self.pending.len())
            {
                // Not enough buffers posted for another whole frame.
                break;
            }
            next += *chains;
            reads += 1;
        }
        reads
    }

    /// Submit the planned reads in one `io_uring_enter`, then hand each
    /// frame to its chains. Frames read, or None when the ring failed.
    fn read_batch(&mut self, mem: &GuestMemory, tap: RawFd, reads: usize) -> Option<usize> {
        let fd = types::Fd(tap);
        for (i, (iov, _)) in self.reads.iter().take(reads).enumerate() {
            let e = opcode::Readv::new(fd, iov.as_ptr(), iov.len() as u32)
                .rw_flags(libc::RWF_NOWAIT)
                .build()
                .user_data(i as u64);
            // SAFETY: the iovecs (in `reads`, untouched until every read
            // completed) point into device-writable guest memory vm-memory
            // checked, mapped while `mem` lives.
            if unsafe { self.ring.submission().push(&e) }.is_err() {
                return None; // cannot happen: the ring holds RX_BATCH entries
            }
        }
        self.results.clear();
        self.results.resize(reads, -libc::ECANCELED);
        let results = &mut self.results;
        complete_all(&mut self.ring, reads, |cqe| {
            if let Some(r) = results.get_mut(cqe.user_data() as usize) {
                *r = cqe.result();
            }
        })
        .ok()?;
        let mut frames = 0usize;
        // Chains of earlier reads that a frame did not need stay pending,
        // ahead of later reads' chains: `keep` counts them at the front.
        let mut keep = 0usize;
        for i in 0..reads {
            let chains = self.reads[i].1;
            let res = self.results[i];
            // EBADFD: a multi-queue TAP's queue detached meanwhile (its
            // pair was disabled): no frame, the chains stay posted.
            if res == -libc::EAGAIN || res == -libc::ECANCELED || res == -libc::EBADFD {
                keep += chains;
                continue;
            }
            let used = if res > 0 {
                frames += 1;
                self.deliver(mem, keep, res as usize)
            } else if !self.mergeable {
                // The TAP dropped a frame that did not fit this chain.
                self.complete(mem, keep, 0).map(|()| 1)
            } else {
                Some(0)
            };
            keep += chains - used?;
        }
        Some(frames)
    }

    /// A frame of `len` bytes was read into the chains from `pending[at]`
    /// on: return as many as it fills (setting `num_buffers`); how many.
    fn deliver(&mut self, mem: &GuestMemory, at: usize, len: usize) -> Option<usize> {
        let mut count = 0usize;
        let mut left = len;
        for p in self.pending.iter().skip(at) {
            count += 1;
            left = left.saturating_sub(p.cap);
            if left == 0 || !self.mergeable {
                break;
            }
        }
        if let Some(first) = self.pending.get(at) {
            // SAFETY: the iovecs point into device-writable guest memory
            // vm-memory checked; the frame is ours until it is returned.
            unsafe { write_u16_at(&first.iov, NUM_BUFFERS_AT, count as u16) };
        }
        let mut left = len;
        for _ in 0..count {
            let cap = self.pending.get(at)?.cap;
            let n = left.min(cap);
            left -= n;
            self.complete(mem, at, n as u32)?;
        }
        Some(count)
    }

    /// Return `pending[at]` to the driver with `len` bytes written.
    fn complete(&mut self, mem: &GuestMemory, at: usize, len: u32) -> Option<()> {
        let p = self.pending.remove(at)?;
        self.spare.push(p.iov);
        self.queue.add_used(mem, p.head, len).ok()?;
        self.added = true;
        Some(())
    }
}

/// Read (and so drop) one frame from the TAP; false when it had none.
fn drop_one_frame(tap: RawFd) -> bool {
    // The TAP refuses reads shorter than its vnet header; the rest of a
    // frame that does not fit is discarded.
    let mut scratch = [0u8; 64];
    // SAFETY: reads at most 64 bytes into `scratch`.
    let n = unsafe { libc::read(tap, scratch.as_mut_ptr().cast(), scratch.len()) };
    // EBADFD: a detached multi-queue TAP queue has no frames either.
    !(n < 0
        && matches!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EAGAIN | libc::EBADFD)
        ))
}

/// Write `v` (little endian) at byte `at` of the buffers `iov`, across
/// buffer boundaries.
///
/// # Safety
/// Every iovec must point to writable memory of its length.
unsafe fn write_u16_at(iov: &[libc::iovec], at: usize, v: u16) {
    let bytes = v.to_le_bytes();
    let mut skip = at;
    let mut i = 0usize;
    for b in iov {
        let mut off = skip;
        while off < b.iov_len && i < bytes.len() {
            // SAFETY: off < iov_len, within the buffer (the caller's promise).
            unsafe { std::ptr::write_volatile(b.iov_base.cast::<u8>().add(off), bytes[i]) };
            off += 1;
            i += 1;
        }
        if i == bytes.len() {
            return;
        }
        skip = skip.saturating_sub(b.iov_len);
    }
}
