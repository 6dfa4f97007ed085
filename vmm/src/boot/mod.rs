//! Loading what the guest boots (ELF firmware, ELF vmlinux or bzImage, an
//! initrd and the command line) and writing the tables it reads at entry:
//! Linux boot params with the e820 map, or the PVH start_info, plus ACPI.

pub mod acpi;
pub mod linux;
pub mod pvh;

use std::fs::File;

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::{self, BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Bytes, GuestAddress};

use crate::config::{BootSource, Entry};
use crate::layout::{CMDLINE, CMDLINE_MAX, HIMEM, PD, PVH_INFO, ZERO_PAGE};
use crate::memory::{low_ram_end, populate, GuestMemory};

/// Errors loading the guest.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot load {path}: {source}")]
    Load {
        path: std::path::PathBuf,
        source: loader::Error,
    },
    #[error("{0} has no PVH entry note; use \"entry\": \"linux64\"")]
    NoPvhEntry(std::path::PathBuf),
    #[error("a bzImage boots only through the Linux 64-bit entry")]
    BzImagePvh,
    #[error("command line: {0}")]
    Cmdline(linux_loader::cmdline::Error),
    #[error("too little memory: {what} needs {need_kib} KiB below {limit:#x}, the guest has {have_kib} KiB")]
    TooLittleMemory {
        what: &'static str,
        need_kib: u64,
        have_kib: u64,
        limit: u64,
    },
    #[error("cannot read initrd: {0}")]
    Initrd(std::io::Error),
    #[error("cannot write boot tables: {0}")]
    Write(String),
}

impl From<vm_memory::GuestMemoryError> for BootError {
    fn from(e: vm_memory::GuestMemoryError) -> Self {
        BootError::Write(e.to_string())
    }
}

/// Where the boot vCPU starts and what it is handed.
#[derive(Debug, Clone, Copy)]
pub struct BootPlan {
    pub entry: Entry,
    pub rip: u64,
    /// rsi (Linux entry: zero page) or rbx (PVH: start_info).
    pub boot_info: u64,
}

/// Load the image, initrd and command line, and write the boot tables.
pub fn load(mem: &GuestMemory, src: &BootSource, vcpus: u8) -> Result<BootPlan, BootError> {
    let mut image = File::open(&src.image).map_err(|source| BootError::Open {
        path: src.image.clone(),
        source,
    })?;
    let low_end = low_ram_end(mem);
    let image_len = image.metadata().map(|m| m.len()).unwrap_or(0);
    if HIMEM + image_len > low_end {
        return Err(BootError::TooLittleMemory {
            what: "the image",
            need_kib: (HIMEM + image_len).div_ceil(1024),
            have_kib: low_end / 1024,
            limit: low_end,
        });
    }
    // The pages the VMM is about to write (boot tables, command line, zero
    // page, stack; the image) are faulted in with one call each.
    populate(mem, GuestAddress(0), CMDLINE + CMDLINE_MAX as u64);
    populate(mem, GuestAddress(PVH_INFO), PD + 0x1000 - PVH_INFO);
    populate(mem, GuestAddress(HIMEM), image_len);
    let load_err = |source| BootError::Load {
        path: src.image.clone(),
        source,
    };
    // ELF first (firmware and vmlinux), then bzImage.
    let (result, is_elf) = match Elf::load(mem, None, &mut image, Some(GuestAddress(HIMEM))) {
        Ok(r) => (r, true),
        Err(loader::Error::Elf(loader::elf::Error::InvalidElfMagicNumber)) if !src.firmware => {
            let r = BzImage::load(mem, None, &mut image, Some(GuestAddress(HIMEM)))
                .map_err(load_err)?;
            (r, false)
        }
        Err(e) => return Err(load_err(e)),
    };

    let mut cmdline = Cmdline::new(CMDLINE_MAX).map_err(BootError::Cmdline)?;
    if !src.cmdline.is_empty() {
        cmdline
            .insert_str(&src.cmdline)
            .map_err(BootError::Cmdline)?;
    }
    loader::load_cmdline(mem, GuestAddress(CMDLINE), &cmdline).map_err(load_err)?;
    let cmdline_len = cmdline
        .as_cstring()
        .map(|c| c.as_bytes_with_nul().len())
        .unwrap_or(1);

    let initrd = match &src.initrd {
        Some(path) => Some(load_initrd(mem, path, result.kernel_end)?),
        None => None,
    };
    let rsdp = acpi::write(mem, vcpus)?;

    match src.entry {
        Entry::Linux64 => {
            let rip = if is_elf {
                // The ELF entry point is where linux-loader reports the load.
                elf_entry(&image, &src.image)?
            } else {
                // The 64-bit entry of a bzImage is 0x200 past its load address.
                result.kernel_load.0 + 0x200
            };
            linux::write_boot_params(mem, result.setup_header, cmdline_len, initrd, rsdp)?;
            Ok(BootPlan {
                entry: Entry::Linux64,
                rip,
                boot_info: ZERO_PAGE,
            })
        }
        Entry::Pvh => {
            if !is_elf {
                return Err(BootError::BzImagePvh);
            }
            let PvhBootCapability::PvhEntryPresent(addr) = result.pvh_boot_cap else {
                return Err(BootError::NoPvhEntry(src.image.clone()));
            };
            pvh::write_start_info(mem, initrd, rsdp)?;
            Ok(BootPlan {
                entry: Entry::Pvh,
                rip: addr.0,
                boot_info: PVH_INFO,
            })
        }
    }
}

/// Read `e_entry` from an ELF64 header (linux-loader reports only the load
/// address).
fn elf_entry(image: &File, path: &std::path::Path) -> Result<u64, BootError> {
    use std::os::unix::fs::FileExt;
    let mut hdr = [0u8; 32];
    image
        .read_exact_at(&mut hdr, 0)
        .map_err(|source| BootError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let mut e = [0u8; 8];
    e.copy_from_slice(&hdr[24..32]);
    Ok(u64::from_le_bytes(e))
}

/// The initrd goes at the top of low RAM, page-aligned, above the kernel.
fn load_initrd(
    mem: &GuestMemory,
    path: &std::path::Path,
    kernel_end: u64,
) -> Result<(u64, u64), BootError> {
    let data = std::fs::read(path).map_err(BootError::Initrd)?;
    let size = data.len() as u64;
    let top = low_ram_end(mem);
    let addr = top.checked_sub(size).map(|a| a & !0xfff);
    match addr {
        Some(addr) if addr >= kernel_end => {
            mem.write_slice(&data, GuestAddress(addr))?;
            Ok((addr, size))
        }
        _ => Err(BootError::TooLittleMemory {
            what: "kernel and initrd",
            need_kib: (kernel_end + size).div_ceil(1024),
            have_kib: top / 1024,
            limit: top,
        }),
    }
}
