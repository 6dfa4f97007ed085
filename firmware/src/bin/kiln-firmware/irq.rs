//! Sleeping without burning a host core. Ring 3 cannot `hlt`, so the jobs
//! execute `ud2`, whose #UD handler in `entry.S` is the tiny ring-0 sleep
//! (`sti; hlt; iretq` past the ud2).
//! What wakes it: the LAPIC timer (periodic, `TICK_NS`) and the IO-APIC
//! pins of the i8042 (Ctrl-Alt-Del) and of every virtio-mmio slot on the
//! command line, all programmed here from ring 3 through the identity map
//! (each register write is one exit to KVM's in-kernel irqchip). The legacy
//! PIC's line (LINT0) is masked, so nothing arrives on an unprogrammed vector.

use core::arch::asm;
use core::ptr::{addr_of_mut, read_volatile, write_volatile};

use kiln_firmware::cmdline;

const LAPIC: usize = 0xfee0_0000;
const LAPIC_TPR: usize = 0x080;
const LAPIC_SVR: usize = 0x0f0;
const LAPIC_LVT_TIMER: usize = 0x320;
const LAPIC_LVT0: usize = 0x350;
const LAPIC_TIMER_INIT: usize = 0x380;
const LAPIC_TIMER_DIV: usize = 0x3e0;
const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;
/// Divide configuration 0b1011: divide by 1.
const DIV_BY_1: u32 = 0xb;

const IOAPIC: usize = 0xfec0_0000;
const IOAPIC_SEL: usize = 0x00;
const IOAPIC_WIN: usize = 0x10;
const IOAPIC_PINS: u32 = 24;

/// Vectors (must match the IDT in `entry.S`).
const VEC_DEV: u32 = 0x30;
const VEC_TIMER: u32 = 0x40;
const VEC_SPURIOUS: u32 = 0xff;

/// The i8042's IRQ (keyboard).
const I8042_IRQ: u32 = 1;

/// Period of the LAPIC timer. KVM's APIC bus runs at 1 GHz, so with the
/// divider at 1 this is nanoseconds.
pub const TICK_NS: u32 = 20_000_000;

extern "C" {
    /// Set by the ring-0 handler of `VEC_DEV` (`entry.S`).
    static mut kiln_dev_irq: u8;
}

static mut READY: bool = false;

fn lapic_write(reg: usize, v: u32) {
    // SAFETY: the LAPIC page is in the firmware's identity map (user
    // accessible); a write is an exit to KVM's in-kernel LAPIC.
    unsafe { write_volatile((LAPIC + reg) as *mut u32, v) };
}

fn ioapic_write(reg: u32, v: u32) {
    // SAFETY: as for the LAPIC: the IO-APIC's two registers in the identity map.
    unsafe {
        write_volatile((IOAPIC + IOAPIC_SEL) as *mut u32, reg);
        write_volatile((IOAPIC + IOAPIC_WIN) as *mut u32, v);
    }
}

/// Route `pin` (edge, active high, fixed delivery) to CPU 0 at `VEC_DEV`.
fn route(pin: u32) {
    if pin >= IOAPIC_PINS {
        return;
    }
    ioapic_write(0x11 + 2 * pin, 0);
    ioapic_write(0x10 + 2 * pin, VEC_DEV);
}

/// Program the LAPIC and IO-APIC once (later calls do nothing).
pub fn init(cmdline: &[u8]) {
    // SAFETY: single-threaded firmware; READY is only touched here.
    unsafe {
        if READY {
            return;
        }
        READY = true;
    }
    lapic_write(LAPIC_SVR, 0x100 | VEC_SPURIOUS);
    lapic_write(LAPIC_TPR, 0);
    lapic_write(LAPIC_LVT0, LVT_MASKED);
    lapic_write(LAPIC_TIMER_DIV, DIV_BY_1);
    lapic_write(LAPIC_LVT_TIMER, VEC_TIMER | LVT_PERIODIC);
    lapic_write(LAPIC_TIMER_INIT, TICK_NS);
    route(I8042_IRQ);
    for dev in cmdline::virtio_mmio_devices(cmdline) {
        route(dev.irq);
    }
}

/// Halt until the next interrupt (a timer tick at the latest); true when a
/// device pin fired since the last call. Interrupts that arrived while
/// ring 3 ran stay pending and end the halt at once, so none is lost
/// between looking for work and sleeping.
pub fn sleep() -> bool {
    // SAFETY: the #UD handler skips the two-byte ud2 and runs `sti; hlt;
    // iretq`, coming back with every register and the flags as they were;
    // the interrupt handlers it lets in only write kiln_dev_irq and the EOI.
    unsafe { asm!("ud2", options(nostack)) };
    took_dev_irq()
}

/// True (once) when a device pin fired since the last look.
pub fn took_dev_irq() -> bool {
    // SAFETY: a byte in .data written by the ring-0 handler; this is the
    // only ring-3 code touching it, and the firmware is single-threaded.
    unsafe {
        let p = addr_of_mut!(kiln_dev_irq);
        let v = read_volatile(p);
        if v != 0 {
            write_volatile(p, 0);
        }
        v != 0
    }
}
