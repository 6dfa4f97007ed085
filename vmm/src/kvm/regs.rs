//! Initial architectural state of the boot vCPU: general registers, segments
//! and control registers for the 64-bit or PVH entry, the FPU, and the LAPIC's
//! LINT pins. Also writes the GDT and identity page tables those need.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use super::{KvmError, Step};
use crate::config::Entry;
use crate::layout::{BOOT_GDT, BOOT_IDT, BOOT_STACK, PD, PDPT, PML4};
use crate::memory::GuestMemory;

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// GDT entries: null, code, data, TSS. The code entry is 64-bit for the
/// Linux entry and 32-bit for PVH.
fn gdt(entry: Entry) -> [u64; 4] {
    let code = match entry {
        Entry::Linux64 => 0x00af_9b00_0000_ffff,
        Entry::Pvh => 0x00cf_9b00_0000_ffff,
    };
    [0, code, 0x00cf_9300_0000_ffff, 0x008f_8b00_0000_ffff]
}

/// Decode a GDT descriptor into KVM's segment form.
fn segment(desc: u64, index: u16) -> kvm_segment {
    let base = ((desc >> 16) & 0xff_ffff) | ((desc >> 32) & 0xff00_0000);
    let limit_raw = ((desc & 0xffff) | ((desc >> 32) & 0xf_0000)) as u32;
    let g = ((desc >> 55) & 1) as u8;
    let limit = if g == 1 {
        (limit_raw << 12) | 0xfff
    } else {
        limit_raw
    };
    kvm_segment {
        base,
        limit,
        selector: index * 8,
        type_: ((desc >> 40) & 0xf) as u8,
        present: ((desc >> 47) & 1) as u8,
        dpl: ((desc >> 45) & 3) as u8,
        db: ((desc >> 54) & 1) as u8,
        s: ((desc >> 44) & 1) as u8,
        l: ((desc >> 53) & 1) as u8,
        g,
        avl: ((desc >> 52) & 1) as u8,
        unusable: if (desc >> 47) & 1 == 1 { 0 } else { 1 },
        padding: 0,
    }
}

/// Write the GDT, an empty IDT and (for the 64-bit entry) the identity map
/// of the first GiB in 2 MiB pages.
pub fn write_boot_tables(mem: &GuestMemory, entry: Entry) -> Result<(), KvmError> {
    let gdt = gdt(entry);
    let bytes: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();
    mem.write_slice(&bytes, GuestAddress(BOOT_GDT))?;
    mem.write_obj(0u64, GuestAddress(BOOT_IDT))?;
    if entry == Entry::Linux64 {
        mem.write_obj(PDPT | 0x03, GuestAddress(PML4))?;
        mem.write_obj(PD | 0x03, GuestAddress(PDPT))?;
        let pd: Vec<u8> = (0u64..512)
            .flat_map(|i| ((i << 21) | 0x83).to_le_bytes())
            .collect();
        mem.write_slice(&pd, GuestAddress(PD))?;
    }
    Ok(())
}

/// Segments and control registers for `entry`.
pub fn setup_sregs(vcpu: &VcpuFd, entry: Entry) -> Result<(), KvmError> {
    let mut sregs: kvm_sregs = vcpu.get_sregs().step("get_sregs")?;
    let gdt = gdt(entry);
    let code = segment(gdt[1], 1);
    let data = segment(gdt[2], 2);
    let tss = segment(gdt[3], 3);
    sregs.gdt.base = BOOT_GDT;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = BOOT_IDT;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    match entry {
        Entry::Linux64 => {
            sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_PG;
            sregs.cr3 = PML4;
            sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
            sregs.efer = EFER_LME | EFER_LMA;
        }
        Entry::Pvh => {
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    vcpu.set_sregs(&sregs).step("set_sregs")
}

/// General registers: entry point, stack, and the boot-info pointer
/// (rsi for the Linux entry, rbx for PVH).
pub fn setup_regs(vcpu: &VcpuFd, entry: Entry, rip: u64, boot_info: u64) -> Result<(), KvmError> {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip,
        rsp: BOOT_STACK,
        rbp: BOOT_STACK,
        ..Default::default()
    };
    match entry {
        Entry::Linux64 => regs.rsi = boot_info,
        Entry::Pvh => regs.rbx = boot_info,
    }
    vcpu.set_regs(&regs).step("set_regs")
}

/// x87 and SSE control words at their reset values.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), KvmError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).step("set_fpu")
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// LINT0 as ExtINT (the legacy PIC), LINT1 as NMI, as a PC wires them.
pub fn setup_lapic(vcpu: &VcpuFd) -> Result<(), KvmError> {
    let mut lapic = vcpu.get_lapic().step("get_lapic")?;
    let set = |regs: &mut [i8], off: usize, mode: u32| {
        let mut b = [0u8; 4];
        for (i, v) in b.iter_mut().enumerate() {
            *v = regs[off + i] as u8;
        }
        let v = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
        for (i, x) in v.to_le_bytes().iter().enumerate() {
            regs[off + i] = *x as i8;
        }
    };
    set(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
    set(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic).step("set_lapic")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_decode() {
        let cs = segment(gdt(Entry::Linux64)[1], 1);
        assert_eq!(
            (cs.selector, cs.l, cs.db, cs.type_, cs.present),
            (8, 1, 0, 0xb, 1)
        );
        assert_eq!(cs.limit, 0xffff_ffff);
        let cs32 = segment(gdt(Entry::Pvh)[1], 1);
        assert_eq!((cs32.l, cs32.db), (0, 1));
        let tr = segment(gdt(Entry::Pvh)[3], 3);
        assert_eq!((tr.selector, tr.type_, tr.s), (24, 0xb, 0));
    }
}
