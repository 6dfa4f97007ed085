//! The virtio-mmio version 2 register window of one slot: feature
//! negotiation, queue set-up, status and reset, interrupt status and
//! acknowledgement, config generation and the device's config space.
//! Queue notifications never reach this code: KVM delivers them to the
//! per-queue ioeventfds registered at QueueNotify.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::{
    Activation, Interrupt, VirtioDevice, VirtioError, F_VERSION_1, STATUS_DRIVER_OK, STATUS_FAILED,
    STATUS_FEATURES_OK, STATUS_NEEDS_RESET,
};
use crate::memory::GuestMemory;

const MAGIC: u32 = 0x7472_6976;
const VERSION: u32 = 2;
const VENDOR: u32 = 0x4e4c_494b; // "KILN"

/// Register offsets.
pub const REG_MAGIC: u64 = 0x000;
pub const REG_VERSION: u64 = 0x004;
pub const REG_DEVICE_ID: u64 = 0x008;
pub const REG_VENDOR_ID: u64 = 0x00c;
pub const REG_DEVICE_FEATURES: u64 = 0x010;
pub const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
pub const REG_DRIVER_FEATURES: u64 = 0x020;
pub const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
pub const REG_QUEUE_SEL: u64 = 0x030;
pub const REG_QUEUE_NUM_MAX: u64 = 0x034;
pub const REG_QUEUE_NUM: u64 = 0x038;
pub const REG_QUEUE_READY: u64 = 0x044;
pub const REG_QUEUE_NOTIFY: u64 = 0x050;
pub const REG_INTERRUPT_STATUS: u64 = 0x060;
pub const REG_INTERRUPT_ACK: u64 = 0x064;
pub const REG_STATUS: u64 = 0x070;
pub const REG_QUEUE_DESC_LOW: u64 = 0x080;
pub const REG_QUEUE_DESC_HIGH: u64 = 0x084;
pub const REG_QUEUE_AVAIL_LOW: u64 = 0x090;
pub const REG_QUEUE_AVAIL_HIGH: u64 = 0x094;
pub const REG_QUEUE_USED_LOW: u64 = 0x0a0;
pub const REG_QUEUE_USED_HIGH: u64 = 0x0a4;
pub const REG_CONFIG_GENERATION: u64 = 0x0fc;
pub const REG_CONFIG: u64 = 0x100;

/// One virtio-mmio slot with its device.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemory,
    interrupt: Arc<Interrupt>,
    notifiers: Vec<EventFd>,
    queues: Vec<Queue>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    active: bool,
}

impl MmioTransport {
    /// A transport for `device`; `irqfd` raises the slot's GSI. One
    /// notifier eventfd is created per queue (see `notifiers`).
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        irqfd: EventFd,
    ) -> Result<Self, VirtioError> {
        let mut queues = Vec::new();
        let mut notifiers = Vec::new();
        for (i, max) in device.queue_max_sizes().iter().enumerate() {
            queues.push(Queue::new(*max).map_err(|_| VirtioError::BadQueue(i))?);
            notifiers.push(EventFd::new(libc::EFD_NONBLOCK).map_err(VirtioError::EventFd)?);
        }
        Ok(MmioTransport {
            device,
            mem,
            interrupt: Arc::new(Interrupt::new(irqfd)),
            notifiers,
            queues,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            active: false,
        })
    }

    /// The queue notifiers, in queue order (register them as ioeventfds on
    /// QueueNotify with the queue index as datamatch).
    pub fn notifiers(&self) -> &[EventFd] {
        &self.notifiers
    }

    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    pub fn device(&self) -> &dyn VirtioDevice {
        self.device.as_ref()
    }

    /// Replace a disk's backing file and tell the guest its config changed.
    pub fn swap_backing(&mut self, path: Option<&std::path::Path>) -> Result<(), String> {
        self.device.swap_backing(path)?;
        self.interrupt.config_changed();
        Ok(())
    }

    fn status(&self) -> u32 {
        if self.interrupt.is_broken() {
            self.status | STATUS_NEEDS_RESET
        } else {
            self.status
        }
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        if self.active {
            return None;
        }
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// A guest read of `data.len()` bytes at `offset` in the window.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= REG_CONFIG {
            self.device.read_config(offset - REG_CONFIG, data);
            return;
        }
        let v = match offset {
            REG_MAGIC => MAGIC,
            REG_VERSION => VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.max_size())),
            REG_QUEUE_READY => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.ready())),
            REG_INTERRUPT_STATUS => self.interrupt.status(),
            REG_STATUS => self.status(),
            REG_CONFIG_GENERATION => self.interrupt.generation(),
            _ => 0,
        };
        let bytes = v.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(i).copied().unwrap_or(0);
        }
    }

    /// A guest write at `offset`; registers take 32-bit writes only.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= REG_CONFIG {
            return; // kiln's devices have read-only config spaces
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        let v = u32::from_le_bytes(bytes);
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            REG_DRIVER_FEATURES if self.status & STATUS_FEATURES_OK == 0 => {
                let shift = match self.driver_features_sel {
                    0 => 0,
                    1 => 32,
                    _ => return,
                };
                self.driver_features =
                    (self.driver_features & !(0xffff_ffff << shift)) | (u64::from(v) << shift);
            }
            REG_QUEUE_SEL => self.queue_sel = v,
            REG_QUEUE_NUM => {
                if let Some(q) = self.selected() {
                    q.set_size(v as u16);
                }
            }
            REG_QUEUE_READY => {
                if let Some(q) = self.selected() {
                    q.set_ready(v == 1);
                }
            }
            REG_QUEUE_DESC_LOW => self.with_queue(|q| q.set_desc_table_address(Some(v), None)),
            REG_QUEUE_DESC_HIGH => self.with_queue(|q| q.set_desc_table_address(None, Some(v))),
            REG_QUEUE_AVAIL_LOW => self.with_queue(|q| q.set_avail_ring_address(Some(v), None)),
            REG_QUEUE_AVAIL_HIGH => self.with_queue(|q| q.set_avail_ring_address(None, Some(v))),
            REG_QUEUE_USED_LOW => self.with_queue(|q| q.set_used_ring_address(Some(v), None)),
            REG_QUEUE_USED_HIGH => self.with_queue(|q| q.set_used_ring_address(None, Some(v))),
            REG_QUEUE_NOTIFY => {
                // Only reached when the ioeventfd is missing: forward it.
                if let Some(n) = self.notifiers.get(v as usize) {
                    let _ = n.write(1);
                }
            }
            REG_INTERRUPT_ACK => self.interrupt.ack(v),
            REG_STATUS => self.set_status(v),
            _ => {}
        }
    }

    fn with_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        if let Some(q) = self.selected() {
            f(q);
        }
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let new = v & !self.status;
        let mut v = v & !STATUS_NEEDS_RESET;
        if new & STATUS_FEATURES_OK != 0 {
            let offered = self.device.features();
            if self.driver_features & !offered != 0 || self.driver_features & F_VERSION_1 == 0 {
                v &= !STATUS_FEATURES_OK; // the driver reads it back and gives up
            }
        }
        if new & STATUS_DRIVER_OK != 0 && !self.active {
            if v & STATUS_FEATURES_OK == 0 || self.status & STATUS_FEATURES_OK == 0 {
                v |= STATUS_FAILED;
                self.status = v;
                return;
            }
            self.status = v;
            self.activate();
            return;
        }
        self.status = v;
    }

    /// DRIVER_OK: hand the device its ready queues. A queue the device
    /// requires that is not ready, or a ready queue whose rings are not
    /// valid guest memory, marks the device broken; queues the driver left
    /// alone (fewer than offered, or MQ not negotiated) are skipped.
    fn activate(&mut self) {
        let event_idx = self.driver_features & super::F_RING_EVENT_IDX != 0;
        let required = self.device.required_queues();
        let mut queues = Vec::with_capacity(self.queues.len());
        let mut notifiers = Vec::with_capacity(self.queues.len());
        let mut indices = Vec::with_capacity(self.queues.len());
        for (i, (q, n)) in self.queues.iter_mut().zip(&self.notifiers).enumerate() {
            if !q.ready() {
                if i < required {
                    self.interrupt.mark_broken();
                    return;
                }
                continue;
            }
            q.set_event_idx(event_idx);
            let copy = Queue::try_from(q.state());
            match (copy, n.try_clone()) {
                (Ok(c), Ok(n)) if q.is_valid(&self.mem) => {
                    queues.push(c);
                    notifiers.push(n);
                    indices.push(i);
                }
                _ => {
                    self.interrupt.mark_broken();
                    return;
                }
            }
        }
        let activation = Activation {
            mem: self.mem.clone(),
            queues,
            notifiers,
            indices,
            interrupt: self.interrupt.clone(),
            features: self.driver_features,
        };
        match self.device.activate(activation) {
            Ok(()) => self.active = true,
            Err(e) => {
                eprintln!("kiln-vmm: virtio device failed to start: {e}");
                self.interrupt.mark_broken();
            }
        }
    }

    fn reset(&mut self) {
        if self.active {
            self.device.reset();
            self.active = false;
        }
        for q in &mut self.queues {
            q.reset();
        }
        // Drain notifications left from before the reset.
        for n in &self.notifiers {
            let _ = n.read();
        }
        self.interrupt.reset();
        self.status = 0;
        self.queue_sel = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
    }
}

impl Drop for MmioTransport {
    fn drop(&mut self) {
        if self.active {
            self.device.reset();
        }
    }
}
