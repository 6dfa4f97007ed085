//! The control queue of a multi-queue virtio-net device (virtio 1.2,
//! 5.1.6.5) and the queue pairs it switches. Its thread sleeps in poll(2)
//! on the queue's ioeventfd and a stop eventfd and answers each command
//! chain (`class`, `command`, data; a device-writable ack byte last).
//!
//! Only VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET is understood (no other control
//! feature is offered): it enables pairs 0..n. A pair is enabled by
//! attaching its TAP queue and then waking its worker, and disabled the
//! other way round, both before the command's used entry is written (the
//! device must not fill a disabled pair's receive queue after that).
//! Anything else, a pair count out of range, or a chain too short is
//! answered VIRTIO_NET_ERR; a chain with no writable byte is returned with
//! length 0.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::tap;
use super::worker::PairSwitch;
use crate::devices::virtio::{wants_interrupt, Interrupt, INT_USED_RING};
use crate::memory::GuestMemory;

/// Command classes, commands and acks.
pub const CLASS_MQ: u8 = 4;
pub const MQ_VQ_PAIRS_SET: u8 = 0;
pub const ACK_OK: u8 = 0;
pub const ACK_ERR: u8 = 1;
/// Bytes of a command read (class, command and the largest data we use).
const CMD_MAX: usize = 16;

/// The TAP queues and switches of a device's pairs.
pub struct Pairs {
    /// One TAP queue per pair offered (`taps[0]` stays attached).
    pub taps: Vec<File>,
    /// One per pair the driver made ready (a worker serves each).
    pub switches: Vec<Arc<PairSwitch>>,
    pub tap_name: String,
}

impl Pairs {
    /// Enable pairs 0..n (n ≥ 1, at most the ready ones) and disable the
    /// rest; false (and nothing changed) for a count out of range.
    pub fn set_enabled(&self, n: usize) -> bool {
        if n == 0 || n > self.switches.len() {
            return false;
        }
        for (p, t) in self.taps.iter().enumerate() {
            let on = p < n;
            let switch = self.switches.get(p);
            if !on {
                // Stop the worker reading before its queue goes away.
                if let Some(s) = switch {
                    if s.enabled.swap(false, Ordering::AcqRel) {
                        let _ = s.wake.write(1);
                    }
                }
            }
            if let Err(e) = tap::set_queue(t, on) {
                // Attaching an attached queue fails with EINVAL: harmless.
                if e.raw_os_error() != Some(libc::EINVAL) {
                    eprintln!(
                        "kiln-vmm: TAP {} queue {p}: TUNSETQUEUE {}: {e}",
                        self.tap_name,
                        if on { "attach" } else { "detach" }
                    );
                }
            }
            if on {
                if let Some(s) = switch {
                    if !s.enabled.swap(true, Ordering::AcqRel) {
                        let _ = s.wake.write(1);
                    }
                }
            }
        }
        true
    }
}

/// The control queue's thread state.
pub struct CtrlWorker {
    pub mem: GuestMemory,
    pub queue: Queue,
    pub notify: EventFd,
    pub stop: EventFd,
    pub interrupt: Arc<Interrupt>,
    pub pairs: Arc<Pairs>,
}

impl CtrlWorker {
    /// Answer commands until the stop eventfd fires.
    pub fn run(mut self) {
        loop {
            self.serve();
            let mut fds = [
                libc::pollfd {
                    fd: self.stop.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.notify.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: `fds` is an array of two pollfds that outlives the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if n < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                self.interrupt.mark_broken();
                return;
            }
            if fds[0].revents != 0 {
                return;
            }
            if fds[1].revents != 0 {
                let _ = self.notify.read();
            }
        }
    }

    /// Answer every available command, then raise the interrupt if wanted.
    fn serve(&mut self) {
        if self.interrupt.is_broken() {
            return;
        }
        let mem = self.mem.clone();
        let mut added = false;
        for _ in 0..=self.queue.size() {
            let chain = match self.queue.iter(&mem) {
                Ok(mut it) => it.next(),
                Err(_) => {
                    self.interrupt.mark_broken();
                    return;
                }
            };
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            let mut cmd = [0u8; CMD_MAX];
            let mut got = 0usize;
            let mut ack: Option<GuestAddress> = None;
            for d in chain {
                if d.is_write_only() {
                    if d.len() > 0 {
                        ack = Some(d.addr());
                    }
                    continue;
                }
                let take = (d.len() as usize).min(CMD_MAX - got);
                if take > 0 && mem.read_slice(&mut cmd[got..got + take], d.addr()).is_ok() {
                    got += take;
                }
            }
            let len = match ack {
                Some(a) => {
                    let answer = self.answer(&cmd[..got]);
                    match mem.write_obj(answer, a) {
                        Ok(()) => 1,
                        Err(_) => 0,
                    }
                }
                None => 0,
            };
            if self.queue.add_used(&mem, head, len).is_err() {
                self.interrupt.mark_broken();
                return;
            }
            added = true;
        }
        if added && wants_interrupt(&mut self.queue, &mem) {
            self.interrupt.trigger(INT_USED_RING);
        }
    }

    /// Carry out one command; its ack.
    fn answer(&self, cmd: &[u8]) -> u8 {
        match cmd {
            [CLASS_MQ, MQ_VQ_PAIRS_SET, lo, hi, ..] => {
                let n = usize::from(u16::from_le_bytes([*lo, *hi]));
                if self.pairs.set_enabled(n) {
                    ACK_OK
                } else {
                    ACK_ERR
                }
            }
            _ => ACK_ERR,
        }
    }
}
