//! What the firmware's polling virtio drivers share: the virtio-mmio
//! (modern, version 2) register window with reset, feature negotiation and
//! queue set-up (`Device`), and a split virtqueue in static memory driven
//! without interrupts (`Split`, `Queue`). Guest memory is identity-mapped,
//! so a buffer's address is its guest-physical address.

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

/// Feature bits every driver cares about.
pub const F_EVENT_IDX: u64 = 1 << 29;
pub const F_VERSION_1: u64 = 1 << 32;

/// Descriptor flags.
pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;

/// Device ids.
pub const ID_NET: u32 = 1;
pub const ID_BLOCK: u32 = 2;

/// Why a device could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitError {
    NotVirtio,
    /// A virtio device of another type.
    WrongType,
    FeaturesRefused,
    QueueTooSmall,
}

impl InitError {
    pub fn text(self) -> &'static [u8] {
        match self {
            InitError::NotVirtio => b"not a virtio-mmio version 2 device",
            InitError::WrongType => b"not the device type wanted",
            InitError::FeaturesRefused => b"the device refused our features",
            InitError::QueueTooSmall => b"a queue is too small",
        }
    }
}

/// One virtio-mmio register window.
pub struct Device {
    base: usize,
}

impl Device {
    /// Reset the device at `base` if it is a virtio device of type `id`,
    /// and negotiate `wanted & offered` (VERSION_1 is required). Returns
    /// the device and the features agreed; queues come next
    /// (`setup_queue`), then `driver_ok`.
    ///
    /// # Safety
    /// `base` must be a virtio-mmio window mapped for this code.
    pub unsafe fn init(base: usize, id: u32, wanted: u64) -> Result<(Device, u64), InitError> {
        let d = Device { base };
        if d.r(MAGIC) != 0x7472_6976 || d.r(VERSION) != 2 {
            return Err(InitError::NotVirtio);
        }
        if d.r(DEVICE_ID) != id {
            return Err(InitError::WrongType);
        }
        d.w(STATUS, 0);
        d.w(STATUS, 1 | 2);
        d.w(DEVICE_FEATURES_SEL, 0);
        let lo = u64::from(d.r(DEVICE_FEATURES));
        d.w(DEVICE_FEATURES_SEL, 1);
        let offered = lo | (u64::from(d.r(DEVICE_FEATURES)) << 32);
        if offered & F_VERSION_1 == 0 {
            return Err(InitError::FeaturesRefused);
        }
        let agreed = offered & (wanted | F_VERSION_1);
        d.w(DRIVER_FEATURES_SEL, 0);
        d.w(DRIVER_FEATURES, agreed as u32);
        d.w(DRIVER_FEATURES_SEL, 1);
        d.w(DRIVER_FEATURES, (agreed >> 32) as u32);
        d.w(STATUS, 1 | 2 | 8);
        if d.r(STATUS) & 8 == 0 {
            return Err(InitError::FeaturesRefused);
        }
        Ok((d, agreed))
    }

    /// Give queue `index` the rings of `q` (reset to empty).
    pub fn setup_queue<const N: usize>(
        &self,
        index: u32,
        q: &mut Queue<N>,
    ) -> Result<(), InitError> {
        self.w(QUEUE_SEL, index);
        if self.r(QUEUE_NUM_MAX) < N as u32 {
            return Err(InitError::QueueTooSmall);
        }
        self.w(QUEUE_NUM, N as u32);
        let (desc, avail, used) = q.reset();
        self.w64(QUEUE_DESC, desc);
        self.w64(QUEUE_AVAIL, avail);
        self.w64(QUEUE_USED, used);
        self.w(QUEUE_READY, 1);
        Ok(())
    }

    /// Tell the device the driver is ready.
    pub fn driver_ok(&self) {
        self.w(STATUS, 1 | 2 | 8 | 4);
    }

    /// Notify queue `index`.
    pub fn notify(&self, index: u32) {
        self.w(QUEUE_NOTIFY, index);
    }

    pub fn config_generation(&self) -> u32 {
        self.r(CONFIG_GENERATION)
    }

    /// A 32-bit word of the config space.
    pub fn config32(&self, off: usize) -> u32 {
        self.r(CONFIG + off)
    }

    /// A byte of the config space.
    pub fn config8(&self, off: usize) -> u8 {
        // SAFETY: `base` is the device window (init's contract).
        unsafe { read_volatile((self.base + CONFIG + off) as *const u8) }
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
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct UsedElem {
    pub id: u32,
    pub len: u32,
}

#[repr(C, align(2))]
pub struct Avail<const N: usize> {
    flags: u16,
    idx: u16,
    ring: [u16; N],
    used_event: u16,
}

#[repr(C, align(4))]
pub struct Used<const N: usize> {
    flags: u16,
    idx: u16,
    ring: [UsedElem; N],
    avail_event: u16,
}

/// The memory of one split virtqueue of `N` descriptors (put it in a `static`).
#[repr(C, align(4096))]
pub struct Split<const N: usize> {
    desc: [Desc; N],
    avail: Avail<N>,
    used: Used<N>,
}

impl<const N: usize> Split<N> {
    pub const fn new() -> Self {
        Split {
            desc: [Desc {
                addr: 0,
                len: 0,
                flags: 0,
                next: 0,
            }; N],
            avail: Avail {
                flags: 0,
                idx: 0,
                ring: [0; N],
                used_event: 0,
            },
            used: Used {
                flags: 0,
                idx: 0,
                ring: [UsedElem { id: 0, len: 0 }; N],
                avail_event: 0,
            },
        }
    }
}

impl<const N: usize> Default for Split<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// The driver side of a split virtqueue: the next avail and used indices
/// over a `Split` the driver alone owns. Interrupts are off unless
/// `set_interrupts` turns them on.
pub struct Queue<const N: usize> {
    ring: *mut Split<N>,
    avail: u16,
    used: u16,
    event_idx: bool,
    /// The driver asked for interrupts (`set_interrupts`).
    interrupts: bool,
}

impl<const N: usize> Queue<N> {
    /// # Safety
    /// `ring` must point at a `Split` used by this queue only, alive for as
    /// long as the device may use it.
    pub unsafe fn new(ring: *mut Split<N>, event_idx: bool) -> Self {
        Queue {
            ring,
            avail: 0,
            used: 0,
            event_idx,
            interrupts: false,
        }
    }

    /// Empty the rings; returns the addresses of (desc, avail, used).
    fn reset(&mut self) -> (u64, u64, u64) {
        let r = self.ring;
        self.avail = 0;
        self.used = 0;
        self.interrupts = false;
        // SAFETY: the driver owns the rings (`new`'s contract); the device
        // has not been given them yet.
        unsafe {
            write_volatile(addr_of_mut!((*r).avail.idx), 0);
            write_volatile(addr_of_mut!((*r).used.idx), 0);
            // No interrupts: the used ring is polled.
            write_volatile(addr_of_mut!((*r).avail.flags), 1);
            write_volatile(addr_of_mut!((*r).avail.used_event), 0x7fff);
            (
                addr_of!((*r).desc) as u64,
                addr_of!((*r).avail) as u64,
                addr_of!((*r).used) as u64,
            )
        }
    }

    /// Ask the device for an interrupt when it returns buffers (or not: the
    /// default). With EVENT_IDX the device ignores the flag and looks at
    /// `used_event` instead: "on" asks for one at the next used entry,
    /// "off" puts the threshold half the index space ahead.
    pub fn set_interrupts(&mut self, on: bool) {
        let r = self.ring;
        self.interrupts = on;
        if self.event_idx {
            let event = if on {
                self.used
            } else {
                self.used.wrapping_add(0x7fff)
            };
            // SAFETY: as in `reset`; the driver owns avail.used_event.
            unsafe { write_volatile(addr_of_mut!((*r).avail.used_event), event) };
            fence(Ordering::SeqCst);
        } else {
            // SAFETY: as in `reset`; the driver owns avail.flags.
            unsafe { write_volatile(addr_of_mut!((*r).avail.flags), u16::from(!on)) };
        }
    }

    /// Write descriptor `i` (out-of-range indices wrap).
    pub fn set_desc(&mut self, i: u16, d: Desc) {
        // SAFETY: as in `reset`; a descriptor is written only while the
        // device does not own it (the caller's bookkeeping).
        unsafe { write_volatile(addr_of_mut!((*self.ring).desc[usize::from(i) % N]), d) };
    }

    /// Put chain `head` in the avail ring (not yet visible: see `publish`).
    pub fn offer(&mut self, head: u16) {
        let slot = usize::from(self.avail) % N;
        // SAFETY: as in `reset`; avail entries past avail.idx are the driver's.
        unsafe { write_volatile(addr_of_mut!((*self.ring).avail.ring[slot]), head) };
        self.avail = self.avail.wrapping_add(1);
    }

    /// The avail index the next `offer` uses (pass it to `publish`).
    pub fn avail_index(&self) -> u16 {
        self.avail
    }

    /// Make the chains offered since `old` visible; true when the device
    /// asked to be notified about them.
    pub fn publish(&mut self, old: u16) -> bool {
        let r = self.ring;
        fence(Ordering::SeqCst);
        // SAFETY: as in `reset`.
        unsafe { write_volatile(addr_of_mut!((*r).avail.idx), self.avail) };
        fence(Ordering::SeqCst);
        if self.event_idx {
            // SAFETY: avail_event is device-written memory of our rings.
            let event = unsafe { read_volatile(addr_of!((*r).used.avail_event)) };
            self.avail.wrapping_sub(event).wrapping_sub(1) < self.avail.wrapping_sub(old)
        } else {
            // SAFETY: as above.
            let flags = unsafe { read_volatile(addr_of!((*r).used.flags)) };
            flags & 1 == 0
        }
    }

    /// True when the device returned entries not popped yet.
    pub fn has_used(&self) -> bool {
        fence(Ordering::SeqCst);
        // SAFETY: used.idx is device-written memory of our rings.
        unsafe { read_volatile(addr_of!((*self.ring).used.idx)) != self.used }
    }

    /// The next used entry, if the device returned one.
    pub fn pop_used(&mut self) -> Option<UsedElem> {
        let r = self.ring;
        // SAFETY: used.idx is device-written memory of our rings.
        let idx = unsafe { read_volatile(addr_of!((*r).used.idx)) };
        if idx == self.used {
            return None;
        }
        fence(Ordering::SeqCst);
        // SAFETY: entries before used.idx are written by the device.
        let e = unsafe { read_volatile(addr_of!((*r).used.ring[usize::from(self.used) % N])) };
        self.used = self.used.wrapping_add(1);
        if self.event_idx && !self.interrupts {
            // Keep the interrupt threshold far ahead: we never want one.
            // SAFETY: the driver owns used_event.
            unsafe {
                write_volatile(
                    addr_of_mut!((*r).avail.used_event),
                    self.used.wrapping_add(0x7fff),
                )
            };
        }
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_have_the_split_queue_layout() {
        assert_eq!(core::mem::size_of::<Desc>(), 16);
        assert_eq!(core::mem::offset_of!(Split<256>, avail), 16 * 256);
        assert_eq!(core::mem::offset_of!(Split<256>, used) % 4, 0);
        assert_eq!(core::mem::offset_of!(Avail<256>, used_event), 4 + 2 * 256);
        assert_eq!(core::mem::offset_of!(Used<256>, avail_event), 4 + 8 * 256);
        assert_eq!(core::mem::align_of::<Split<64>>(), 4096);
    }

    #[test]
    fn publish_follows_event_idx_and_used_entries_pop_in_order() {
        let mut s = Box::new(Split::<8>::new());
        let r: *mut Split<8> = &mut *s;
        // SAFETY: `s` outlives the queue and nothing else touches it.
        let mut q = unsafe { Queue::new(r, true) };
        q.reset();
        let old = q.avail_index();
        q.offer(3);
        // avail_event 0: the device wants to hear about index 0 → notify.
        assert!(q.publish(old));
        s.used.avail_event = 5;
        let old = q.avail_index();
        q.offer(4);
        assert!(!q.publish(old));
        assert!(q.pop_used().is_none());
        s.used.ring[0] = UsedElem { id: 3, len: 60 };
        s.used.idx = 1;
        assert_eq!(q.pop_used().map(|e| (e.id, e.len)), Some((3, 60)));
        assert!(q.pop_used().is_none());
    }

    #[test]
    fn interrupts_ask_through_used_event_with_event_idx() {
        let mut s = Box::new(Split::<8>::new());
        let r: *mut Split<8> = &mut *s;
        // SAFETY: `s` outlives the queue and nothing else touches it.
        let mut q = unsafe { Queue::new(r, true) };
        q.reset();
        // Off by default: the threshold is half the index space ahead.
        assert_eq!(s.avail.used_event, 0x7fff);
        s.used.ring[0] = UsedElem { id: 1, len: 0 };
        s.used.idx = 1;
        assert!(q.pop_used().is_some());
        assert_eq!(s.avail.used_event, 0x8000);
        // On: an interrupt at the next used entry, kept while popping.
        q.set_interrupts(true);
        assert_eq!(s.avail.used_event, 1);
        s.used.idx = 2;
        assert!(q.pop_used().is_some());
        assert_eq!(s.avail.used_event, 1);
        q.set_interrupts(false);
        assert_eq!(s.avail.used_event, 2u16.wrapping_add(0x7fff));
        // The flag is left alone (the device ignores it with EVENT_IDX).
        assert_eq!(s.avail.flags, 1);
    }
}
