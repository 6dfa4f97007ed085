//! The Linux 64-bit boot protocol: `boot_params` (the zero page) with the
//! setup header, command line, initrd and e820 map.

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::BootError;
use crate::layout::{CMDLINE, EBDA, HIMEM, ZERO_PAGE};
use crate::memory::GuestMemory;

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;

/// The guest's memory map: low RAM, the BIOS hole, RAM from 1 MiB on.
pub fn e820(mem: &GuestMemory) -> Vec<(u64, u64, u32)> {
    let mut map = vec![(0, EBDA, E820_RAM), (EBDA, HIMEM - EBDA, E820_RESERVED)];
    for r in mem.iter() {
        let (start, len) = (r.start_addr().0, r.len());
        if start == 0 {
            if len > HIMEM {
                map.push((HIMEM, len - HIMEM, E820_RAM));
            }
        } else {
            map.push((start, len, E820_RAM));
        }
    }
    map
}

/// Fill and write the zero page.
pub fn write_boot_params(
    mem: &GuestMemory,
    header: Option<setup_header>,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
    rsdp: u64,
) -> Result<(), BootError> {
    let mut params = boot_params::default();
    if let Some(h) = header {
        params.hdr = h;
    } else {
        params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
        params.hdr.header = KERNEL_HDR_MAGIC;
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = CMDLINE as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    params.acpi_rsdp_addr = rsdp;
    let map = e820(mem);
    for (i, (addr, size, r#type)) in map.iter().enumerate().take(params.e820_table.len()) {
        params.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: *r#type,
        };
    }
    params.e820_entries = map.len().min(params.e820_table.len()) as u8;
    LinuxBootConfigurator::write_bootparams::<GuestMemory>(
        &BootParams::new::<boot_params>(&params, GuestAddress(ZERO_PAGE)),
        mem,
    )
    .map_err(|e| BootError::Write(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_covers_low_and_high_ram() {
        let mem = crate::memory::create(4 * 1024, crate::memory::Backing::Small).unwrap();
        let m = e820(&mem);
        assert_eq!(m[0], (0, EBDA, E820_RAM));
        assert_eq!(m[2], (HIMEM, crate::layout::MMIO_START - HIMEM, E820_RAM));
        assert_eq!(m[3].0, crate::layout::MMIO_END);
    }
}
