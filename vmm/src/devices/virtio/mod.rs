//! virtio devices on the virtio-mmio (version 2) transport: the register
//! window (`mmio`), the interrupt shared by a transport and its device's
//! queue threads (`Interrupt`), and the devices themselves (`blk`, `net`).
//!
//! How a request travels: the guest writes QueueNotify, which KVM turns into
//! an ioeventfd signal (no exit to the VMM); the device's queue thread wakes,
//! pops every available descriptor chain (virtio-queue), submits the I/O to
//! its io_uring, reaps completions, writes statuses and used entries, and
//! signals the slot's irqfd once per batch (EVENT_IDX respected).

pub mod blk;
pub mod mmio;
pub mod net;
pub mod threads;

use std::sync::atomic::{AtomicU32, Ordering};

use virtio_queue::Queue;
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestMemory;

/// Device status bits (virtio 1.2, 2.1).
pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_NEEDS_RESET: u32 = 64;
pub const STATUS_FAILED: u32 = 128;

/// Feature bits every kiln device offers.
pub const F_RING_INDIRECT_DESC: u64 = 1 << 28;
pub const F_RING_EVENT_IDX: u64 = 1 << 29;
pub const F_VERSION_1: u64 = 1 << 32;

/// Interrupt status bits.
pub const INT_USED_RING: u32 = 1;
pub const INT_CONFIG: u32 = 2;

/// virtio device ids.
pub const TYPE_NET: u32 = 1;
pub const TYPE_BLOCK: u32 = 2;

/// Size of one virtio-mmio register window (one slot).
pub const MMIO_SLOT_SIZE: u64 = 0x1000;
/// Slots the VMM offers (GSIs `FIRST_GSI..FIRST_GSI + MAX_SLOTS`).
pub const MAX_SLOTS: usize = 8;
/// First GSI of the virtio-mmio slots (1 is the i8042, 4 COM1).
pub const FIRST_GSI: u32 = 5;

/// Errors creating or running virtio devices.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("cannot open disk {path}: {source}")]
    Open {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("disk {path} cannot be opened with O_DIRECT (\"direct\": true): {source}")]
    Direct {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not a regular file or block device")]
    NotADisk(std::path::PathBuf),
    #[error("cannot create an io_uring: {0}")]
    Uring(std::io::Error),
    #[error("cannot start a queue thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot open TAP {name}: {source}")]
    Tap {
        name: String,
        source: std::io::Error,
    },
    #[error("bad MAC address {0:?} (want aa:bb:cc:dd:ee:ff, unicast)")]
    Mac(String),
    #[error("virtio queue {0} is not valid (size or ring addresses)")]
    BadQueue(usize),
    #[error("a disk has 1 to {max} queues, not {0}", max = blk::MAX_QUEUES)]
    QueueCount(u32),
    #[error("a NIC has 1 to {max} queue pairs, not {0}", max = net::MAX_PAIRS)]
    PairCount(u16),
}

/// The interrupt line of one slot: the status register bits the guest reads
/// and acknowledges, the irqfd wired to the slot's GSI, and the device state
/// the queue threads may change (needs-reset, config generation).
pub struct Interrupt {
    status: AtomicU32,
    irqfd: EventFd,
    needs_reset: AtomicU32,
    generation: AtomicU32,
}

impl Interrupt {
    pub fn new(irqfd: EventFd) -> Self {
        Interrupt {
            status: AtomicU32::new(0),
            irqfd,
            needs_reset: AtomicU32::new(0),
            generation: AtomicU32::new(0),
        }
    }

    /// Set `bits` in the interrupt status and raise the line.
    pub fn trigger(&self, bits: u32) {
        self.status.fetch_or(bits, Ordering::SeqCst);
        // A full eventfd counter already means "raised".
        let _ = self.irqfd.write(1);
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The device found the driver broken: it stops serving until reset.
    pub fn mark_broken(&self) {
        if self.needs_reset.swap(1, Ordering::SeqCst) == 0 {
            self.trigger(INT_CONFIG);
        }
    }

    pub fn is_broken(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst) != 0
    }

    /// The device's configuration changed: bump the generation and tell the guest.
    pub fn config_changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.trigger(INT_CONFIG);
    }

    pub fn generation(&self) -> u32 {
        self.generation.load(Ordering::SeqCst)
    }

    fn reset(&self) {
        self.status.store(0, Ordering::SeqCst);
        self.needs_reset.store(0, Ordering::SeqCst);
    }
}

/// What the transport hands a device when the driver sets DRIVER_OK: the
/// queues the driver made ready (a driver may use fewer than offered), in
/// ascending index order; `indices[k]` is the queue index of `queues[k]`,
/// whose notifier is `notifiers[k]`.
pub struct Activation {
    pub mem: GuestMemory,
    pub queues: Vec<Queue>,
    pub notifiers: Vec<EventFd>,
    pub indices: Vec<usize>,
    pub interrupt: std::sync::Arc<Interrupt>,
    pub features: u64,
}

/// A virtio device behind a transport.
pub trait VirtioDevice: Send {
    fn device_type(&self) -> u32;
    /// Feature bits offered to the driver.
    fn features(&self) -> u64;
    /// Maximum size of each queue (their count is the number of queues).
    fn queue_max_sizes(&self) -> &[u16];
    /// How many leading queues (0..n) the driver must make ready before
    /// DRIVER_OK; the others are optional. Default: every queue.
    fn required_queues(&self) -> usize {
        self.queue_max_sizes().len()
    }
    /// Read device-specific configuration space at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Start serving the queues.
    fn activate(&mut self, activation: Activation) -> Result<(), VirtioError>;
    /// Stop serving (queue threads end after their in-flight I/O completes).
    fn reset(&mut self);
    /// The disk id, for devices that are disks.
    fn disk_id(&self) -> Option<&str> {
        None
    }
    /// Replace a disk's backing file (None: empty the slot); in-flight
    /// requests on the old file complete first.
    fn swap_backing(&mut self, _path: Option<&std::path::Path>) -> Result<(), String> {
        Err("not a disk".into())
    }
    /// What a disk slot holds, for devices that are disks.
    fn disk_info(&self) -> Option<blk::DiskInfo> {
        None
    }
}

/// Read `data.len()` bytes of a little-endian config structure at `offset`;
/// bytes beyond the structure read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| config.get(o))
            .copied()
            .unwrap_or(0);
    }
}

/// The guest address of the slot with `index`.
pub fn slot_addr(index: usize) -> GuestAddress {
    GuestAddress(crate::layout::VIRTIO_MMIO_START + index as u64 * MMIO_SLOT_SIZE)
}

/// Whether the driver wants an interrupt for the entries just added to
/// `queue`'s used ring. With EVENT_IDX virtio-queue decides (`used_event`);
/// without it, virtio-queue always says yes, so the driver's
/// VRING_AVAIL_F_NO_INTERRUPT flag is honoured here: a polling driver
/// then takes no interrupt (each one is emulated ring-0 work in the guest).
/// An avail ring outside guest memory counts as "wants one".
pub fn wants_interrupt(queue: &mut Queue, mem: &GuestMemory) -> bool {
    use virtio_queue::QueueT;
    use vm_memory::Bytes;
    if queue.event_idx_enabled() {
        return queue.needs_notification(mem).unwrap_or(true);
    }
    // Used entries are written before the flag is read (the driver writes
    // the flag before it looks at the used ring once more).
    std::sync::atomic::fence(Ordering::SeqCst);
    match mem.load::<u16>(GuestAddress(queue.avail_ring()), Ordering::Acquire) {
        Ok(flags) => flags & VRING_AVAIL_F_NO_INTERRUPT == 0,
        Err(_) => true,
    }
}

/// The driver's "no interrupts, please" bit in the avail ring's flags.
pub const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;
