//! The coalesced-I/O ring: writes to registered ports/addresses that KVM
//! queues in a page shared with the VMM instead of exiting for each one.
//! Mapped separately from `VcpuFd` so it can be drained while a `VcpuExit`
//! (which borrows the vCPU) is still being handled.

use std::os::unix::io::AsRawFd;
use std::sync::atomic::{fence, Ordering};

use kvm_bindings::{kvm_coalesced_mmio, kvm_coalesced_mmio_ring, KVM_COALESCED_MMIO_PAGE_OFFSET};
use kvm_ioctls::VcpuFd;

/// One queued write.
pub struct Write {
    pub pio: bool,
    pub addr: u64,
    pub len: usize,
    pub data: [u8; 8],
}

/// The ring page, read-write mapped from a vCPU fd.
pub struct Ring {
    page: *mut kvm_coalesced_mmio_ring,
    size: usize,
    max: u32,
}

// SAFETY: the mapping is process-wide memory; only the owning vCPU thread reads it.
unsafe impl Send for Ring {}

impl Ring {
    /// Map the ring page of `vcpu`.
    pub fn map(vcpu: &VcpuFd) -> Option<Ring> {
        // SAFETY: sysconf has no memory-safety preconditions.
        let size = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as usize,
            _ => return None,
        };
        // SAFETY: mapping one page of the vCPU fd at KVM's documented offset;
        // the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu.as_raw_fd(),
                (KVM_COALESCED_MMIO_PAGE_OFFSET as usize * size) as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        let entries = (size - std::mem::size_of::<kvm_coalesced_mmio_ring>())
            / std::mem::size_of::<kvm_coalesced_mmio>();
        Some(Ring {
            page: ptr.cast(),
            size,
            max: entries as u32,
        })
    }

    /// Take the oldest queued write, if any.
    pub fn pop(&mut self) -> Option<Write> {
        // SAFETY: `page` is the live ring mapping; KVM only advances `last`,
        // the VMM only advances `first`; entries below `last` are complete
        // once `last` is read (fence below).
        unsafe {
            let ring = &mut *self.page;
            let first = std::ptr::read_volatile(&ring.first);
            let last = std::ptr::read_volatile(&ring.last);
            if first == last || first >= self.max {
                return None;
            }
            fence(Ordering::Acquire);
            let e = std::ptr::read_volatile(ring.coalesced_mmio.as_ptr().add(first as usize));
            fence(Ordering::Release);
            std::ptr::write_volatile(&mut ring.first, (first + 1) % self.max);
            Some(Write {
                pio: e.__bindgen_anon_1.pio != 0,
                addr: e.phys_addr,
                len: (e.len as usize).min(8),
                data: e.data,
            })
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the page `map` mapped.
        unsafe { libc::munmap(self.page.cast(), self.size) };
    }
}
