//! The guest-physical address map every kiln guest sees.

/// GDT the VMM builds for the boot vCPU.
pub const BOOT_GDT: u64 = 0x500;
/// Empty IDT for the boot vCPU.
pub const BOOT_IDT: u64 = 0x520;
/// PVH `hvm_start_info`, then its memory map.
pub const PVH_INFO: u64 = 0x6000;
pub const PVH_MEMMAP: u64 = 0x6100;
/// Linux zero page (`struct boot_params`).
pub const ZERO_PAGE: u64 = 0x7000;
/// Initial stack of the boot vCPU.
pub const BOOT_STACK: u64 = 0x8ff0;
/// Identity page tables for the 64-bit entry (PML4, PDPT, PD: first 1 GiB).
pub const PML4: u64 = 0x9000;
pub const PDPT: u64 = 0xa000;
pub const PD: u64 = 0xb000;
/// Kernel command line and its capacity, in the page right after the boot
/// GDT's: on a guest fault KVM also maps the host-present pages that run
/// contiguously from the start of the faulting page's 32 KiB-aligned group, so
/// the guest's first read of the zero page (0x7000) maps page 0 and this one
/// with it — one fault (~30 µs here) fewer before the booted line.
pub const CMDLINE: u64 = 0x1000;
pub const CMDLINE_MAX: usize = 4096;
/// Start of the extended BIOS data area: low RAM ends here.
pub const EBDA: u64 = 0x9fc00;
/// ACPI tables (RSDP first) in the BIOS read-only area Linux scans.
pub const ACPI_START: u64 = 0xe0000;
pub const ACPI_END: u64 = 0x100000;
/// Kernels and firmware load at 1 MiB.
pub const HIMEM: u64 = 0x100000;
/// The MMIO hole below 4 GiB: devices live here, RAM continues above 4 GiB.
pub const MMIO_START: u64 = 0xd000_0000;
pub const MMIO_END: u64 = 0x1_0000_0000;
/// Boot-timer device (Firecracker's address): a byte write of 123 at offset 0.
pub const BOOT_TIMER: u64 = MMIO_START;
/// Boot-timer I/O port (Firecracker's newer x86 convention), same magic.
pub const BOOT_TIMER_PORT: u16 = 0x3f0;
/// virtio-mmio slots follow the boot timer, 4 KiB each.
pub const VIRTIO_MMIO_START: u64 = MMIO_START + 0x1000;
/// IO-APIC and local APIC (KVM's in-kernel irqchip).
pub const IOAPIC: u64 = 0xfec0_0000;
pub const LAPIC: u64 = 0xfee0_0000;
/// KVM's TSS and identity-map pages for real-mode emulation (just below the IO-APIC's
/// neighbourhood, inside the MMIO hole).
pub const KVM_TSS: u64 = 0xfffb_d000;
pub const KVM_IDENTITY_MAP: u64 = 0xfffb_c000;
