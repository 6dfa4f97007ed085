//! The VM's devices and the port/MMIO dispatch the vCPU threads call on exits.
//! Devices are few and fixed, so dispatch is a `match` on the address; each
//! device owns its state behind its own lock (virtio-mmio slots: one lock per
//! slot, so a slow or broken device never blocks another).

pub mod boot_timer;
pub mod i8042;
pub mod serial;
pub mod virtio;

use std::sync::Mutex;

use vmm_sys_util::eventfd::EventFd;

use crate::layout::{BOOT_TIMER, BOOT_TIMER_PORT, VIRTIO_MMIO_START};
use crate::vmm::ExitSignal;
use boot_timer::BootTimer;
use i8042::I8042;
use serial::{Console, Serial};

/// COM1 base port and its 8 registers.
pub const COM1: u16 = 0x3f8;
/// i8042 data and command/status ports.
pub const I8042_DATA: u16 = 0x60;
pub const I8042_CMD: u16 = 0x64;
/// IRQ lines (GSIs on the in-kernel IO-APIC).
pub const COM1_GSI: u32 = 4;
pub const I8042_GSI: u32 = 1;

/// Errors creating devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("cannot open console log {path}: {source}")]
    ConsoleLog {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Every device of a VM.
pub struct Devices {
    pub serial: Mutex<Serial>,
    pub i8042: Mutex<I8042>,
    pub boot_timer: BootTimer,
    /// virtio-mmio slots, in address order from `VIRTIO_MMIO_START`.
    pub virtio: Vec<Mutex<virtio::mmio::MmioTransport>>,
}

/// Interrupt lines the devices raise; the builder registers them as irqfds.
pub struct DeviceIrqs {
    pub serial: EventFd,
    pub i8042: EventFd,
}

impl Devices {
    pub fn new(
        console: Console,
        exit: std::sync::Arc<ExitSignal>,
    ) -> Result<(Self, DeviceIrqs), DeviceError> {
        let serial_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(DeviceError::EventFd)?;
        let kbd_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(DeviceError::EventFd)?;
        let irqs = DeviceIrqs {
            serial: serial_evt.try_clone().map_err(DeviceError::EventFd)?,
            i8042: kbd_evt.try_clone().map_err(DeviceError::EventFd)?,
        };
        let devices = Devices {
            serial: Mutex::new(serial::new(serial_evt, console)),
            i8042: Mutex::new(I8042::new(kbd_evt, exit)),
            boot_timer: BootTimer::default(),
            virtio: Vec::new(),
        };
        Ok((devices, irqs))
    }

    /// A guest `in` from `port`; unclaimed ports read as all ones.
    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        match port {
            COM1..=0x3ff => {
                if let Ok(mut s) = self.serial.lock() {
                    for b in data.iter_mut() {
                        *b = s.read((port - COM1) as u8);
                    }
                }
            }
            I8042_DATA | I8042_CMD => {
                if let Ok(mut k) = self.i8042.lock() {
                    for b in data.iter_mut() {
                        *b = k.read(port);
                    }
                }
            }
            _ => data.fill(0xff),
        }
    }

    /// A guest `out` to `port` (a string `rep outsb` arrives as one call with
    /// every byte); unclaimed ports are ignored.
    pub fn pio_write(&self, port: u16, data: &[u8]) {
        match port {
            COM1..=0x3ff => {
                if let Ok(mut s) = self.serial.lock() {
                    for b in data {
                        // A console sink that fails loses bytes, never the VM.
                        let _ = s.write((port - COM1) as u8, *b);
                    }
                }
            }
            I8042_DATA | I8042_CMD => {
                if let Ok(mut k) = self.i8042.lock() {
                    for b in data {
                        k.write(port, *b);
                    }
                }
            }
            BOOT_TIMER_PORT => {
                if let [v] = data {
                    self.boot_timer.write(*v);
                }
            }
            _ => {}
        }
    }

    /// Write out console bytes gathered during this exit (one write per sink).
    pub fn flush_console(&self) {
        if let Ok(mut s) = self.serial.lock() {
            s.writer_mut().drain();
        }
    }

    /// The virtio-mmio slot at `addr` and the offset inside its window.
    fn virtio_slot(&self, addr: u64) -> Option<(&Mutex<virtio::mmio::MmioTransport>, u64)> {
        let rel = addr.checked_sub(VIRTIO_MMIO_START)?;
        let slot = self.virtio.get((rel / virtio::MMIO_SLOT_SIZE) as usize)?;
        Some((slot, rel % virtio::MMIO_SLOT_SIZE))
    }

    /// A guest MMIO read; unclaimed addresses read as zero.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some((slot, offset)) = self.virtio_slot(addr) {
            if let Ok(t) = slot.lock() {
                t.read(offset, data);
            }
        }
    }

    /// A guest MMIO write.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        if let Some((slot, offset)) = self.virtio_slot(addr) {
            if let Ok(mut t) = slot.lock() {
                t.write(offset, data);
            }
            return;
        }
        if addr == BOOT_TIMER {
            if let [v] = data {
                self.boot_timer.write(*v);
            }
        }
    }
}
