//! The PVH boot protocol: `hvm_start_info` with the command line, an
//! optional initrd module and the memory map.

use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Bytes, GuestAddress};

use super::linux::e820;
use super::BootError;
use crate::layout::{CMDLINE, PVH_INFO, PVH_MEMMAP};
use crate::memory::GuestMemory;

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// Write start_info, its module list and memory map.
pub fn write_start_info(
    mem: &GuestMemory,
    initrd: Option<(u64, u64)>,
    rsdp: u64,
) -> Result<(), BootError> {
    let map = e820(mem);
    let entry_size = std::mem::size_of::<hvm_memmap_table_entry>() as u64;
    for (i, (addr, size, type_)) in map.iter().enumerate() {
        let e = hvm_memmap_table_entry {
            addr: *addr,
            size: *size,
            type_: *type_,
            reserved: 0,
        };
        mem.write_obj(e, GuestAddress(PVH_MEMMAP + i as u64 * entry_size))?;
    }
    let modlist = PVH_INFO + std::mem::size_of::<hvm_start_info>() as u64;
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE,
        rsdp_paddr: rsdp,
        memmap_paddr: PVH_MEMMAP,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    if let Some((paddr, size)) = initrd {
        let m = hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        };
        mem.write_obj(m, GuestAddress(modlist))?;
        info.nr_modules = 1;
        info.modlist_paddr = modlist;
    }
    mem.write_obj(info, GuestAddress(PVH_INFO))?;
    Ok(())
}
