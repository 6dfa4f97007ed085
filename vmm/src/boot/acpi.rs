//! ACPI tables for N vCPUs (RSDP, XSDT, FADT, DSDT, MADT) in the BIOS area
//! at 0xe0000, where Linux finds the RSDP by scanning. Guests without
//! MP-table support (Debian's cloud kernel) learn their CPUs from the MADT.

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress};

use super::BootError;
use crate::layout::{ACPI_END, ACPI_START, IOAPIC, LAPIC};
use crate::memory::GuestMemory;

const OEM_ID: [u8; 6] = *b"KILN  ";
const OEM_TABLE: [u8; 8] = *b"KILNVMM ";

fn bytes(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

/// The MADT: one enabled local APIC per vCPU, the IO-APIC, and the ISA
/// IRQ 0 → GSI 2 override every PC has.
pub fn madt(vcpus: u8) -> Vec<u8> {
    let mut t = Sdt::new(*b"APIC", 44, 5, OEM_ID, OEM_TABLE, 1);
    t.write_u32(36, LAPIC as u32);
    t.write_u32(40, 1); // PCAT_COMPAT: dual 8259s present
    for i in 0..vcpus {
        // type 0 (processor local APIC), length 8, uid, APIC id, flags: enabled
        t.append_slice(&[0, 8, i, i, 1, 0, 0, 0]);
    }
    let mut ioapic = vec![1, 12, 0, 0];
    ioapic.extend_from_slice(&(IOAPIC as u32).to_le_bytes());
    ioapic.extend_from_slice(&0u32.to_le_bytes());
    t.append_slice(&ioapic);
    // type 2 (interrupt source override), bus 0, source 0 → GSI 2, flags 0
    t.append_slice(&[2, 10, 0, 0, 2, 0, 0, 0, 0, 0]);
    t.update_checksum();
    t.as_slice().to_vec()
}

/// Write the tables; returns the RSDP's address.
pub fn write(mem: &GuestMemory, vcpus: u8) -> Result<u64, BootError> {
    let rsdp_addr = ACPI_START;
    let mut next = ACPI_START + 64;
    let mut place = |data: &[u8]| -> Result<u64, BootError> {
        let addr = next;
        if addr + data.len() as u64 > ACPI_END {
            return Err(BootError::Write("ACPI tables do not fit".into()));
        }
        mem.write_slice(data, GuestAddress(addr))?;
        next = (addr + data.len() as u64 + 15) & !15;
        Ok(addr)
    };
    // An empty DSDT: no AML devices yet (virtio-mmio is on the command line).
    let dsdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE, 1);
    let dsdt_addr = place(dsdt.as_slice())?;
    let fadt = FADTBuilder::new(OEM_ID, OEM_TABLE, 1)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .finalize();
    let fadt_addr = place(&bytes(&fadt))?;
    let madt_addr = place(&madt(vcpus))?;
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE, 1);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt_addr = place(&bytes(&xsdt))?;
    mem.write_slice(
        &bytes(&Rsdp::new(OEM_ID, xsdt_addr)),
        GuestAddress(rsdp_addr),
    )?;
    Ok(rsdp_addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum_ok(t: &[u8]) -> bool {
        t.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    #[test]
    fn madt_lists_every_vcpu_and_sums_to_zero() {
        let t = madt(3);
        assert_eq!(&t[0..4], b"APIC");
        assert_eq!(
            u32::from_le_bytes([t[4], t[5], t[6], t[7]]) as usize,
            t.len()
        );
        assert_eq!(t.len(), 44 + 3 * 8 + 12 + 10);
        assert!(checksum_ok(&t));
        assert_eq!(&t[44..52], &[0, 8, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&t[60..68], &[0, 8, 2, 2, 1, 0, 0, 0]);
    }

    #[test]
    fn tables_are_written_and_linked() {
        let mem = crate::memory::create(16, crate::memory::Backing::Small).unwrap();
        let rsdp = write(&mem, 2).unwrap();
        let mut sig = [0u8; 8];
        mem.read_slice(&mut sig, GuestAddress(rsdp)).unwrap();
        assert_eq!(&sig, b"RSD PTR ");
        let xsdt: u64 = mem.read_obj(GuestAddress(rsdp + 24)).unwrap();
        let mut xsig = [0u8; 4];
        mem.read_slice(&mut xsig, GuestAddress(xsdt)).unwrap();
        assert_eq!(&xsig, b"XSDT");
        let madt: u64 = mem.read_obj(GuestAddress(xsdt + 36 + 8)).unwrap();
        mem.read_slice(&mut xsig, GuestAddress(madt)).unwrap();
        assert_eq!(&xsig, b"APIC");
    }
}
