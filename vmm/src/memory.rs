//! Guest memory: lazily mapped anonymous (or huge-page) RAM split around the
//! MMIO hole, and how much of it the guest has actually touched.

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
};

use crate::layout::{MMIO_END, MMIO_START};

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot map {mib} MiB of guest memory{}: {source}", if *.hugepages { " in huge pages" } else { "" })]
    Map {
        mib: u64,
        hugepages: bool,
        source: vm_memory::mmap::MmapRegionError,
    },
    #[error("guest memory regions overlap or are empty")]
    Regions,
}

pub type GuestMemory = GuestMemoryMmap<()>;

/// The RAM ranges for `size` bytes: below the MMIO hole, then above 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, u64)> {
    if size <= MMIO_START {
        vec![(GuestAddress(0), size)]
    } else {
        vec![
            (GuestAddress(0), MMIO_START),
            (GuestAddress(MMIO_END), size - MMIO_START),
        ]
    }
}

/// How guest RAM is backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Small pages.
    Small,
    /// Small pages with MADV_HUGEPAGE: the kernel backs 2 MiB ranges with
    /// transparent huge pages where it can.
    Transparent,
    /// hugetlbfs pages (MAP_HUGETLB; they must be reserved on the host).
    HugeTlb,
}

/// Map guest RAM. Nothing is touched (no pre-fault): pages are allocated on
/// first guest access, so start-up cost does not grow with the guest's size.
///
/// Transparent huge pages make an O_DIRECT read into guest memory pin one
/// page where it pinned 32 (128 KiB reads: 15k instead of 6-8k IOPS here),
/// but a first touch zeroes 2 MiB: boot p90 rose from ~3.5 to ~12 ms and a
/// booted firmware guest's RSS from 1.9 to 3.7 MiB. So they are opt-in.
pub fn create(memory_mib: u64, backing: Backing) -> Result<GuestMemory, MemoryError> {
    let hugepages = backing == Backing::HugeTlb;
    let size = memory_mib << 20;
    let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    if hugepages {
        flags |= libc::MAP_HUGETLB;
    }
    let mut regions = Vec::new();
    for (base, len) in ram_ranges(size) {
        let map_err = |source| MemoryError::Map {
            mib: memory_mib,
            hugepages,
            source,
        };
        let region = MmapRegionBuilder::new(len as usize)
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(flags)
            .build()
            .map_err(map_err)?;
        if backing == Backing::Transparent {
            // SAFETY: advice on a mapping this function just created and
            // owns; it changes how pages are allocated, not their contents.
            let rc =
                unsafe { libc::madvise(region.as_ptr().cast(), len as usize, libc::MADV_HUGEPAGE) };
            if rc != 0 {
                // A kernel without THP: small pages, still correct.
                eprintln!(
                    "kiln-vmm: MADV_HUGEPAGE: {}; guest RAM stays in small pages",
                    std::io::Error::last_os_error()
                );
            }
        }
        regions.push(GuestRegionMmap::new(region, base).ok_or(MemoryError::Regions)?);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|_| MemoryError::Regions)
}

/// Fault in guest RAM `[start, start + len)` (clipped to its region) with
/// one `madvise(MADV_POPULATE_WRITE)` before the VMM writes it, instead of
/// one page fault per page (~7 µs each on this host). Best effort: on a
/// kernel without it (before 5.14) or outside RAM, pages fault in as before.
pub fn populate(mem: &GuestMemory, start: GuestAddress, len: u64) {
    let Some(region) = mem.find_region(start) else {
        return;
    };
    let offset = start.0 - region.start_addr().0;
    let len = len.min(region.len() - offset);
    let Ok(host) = region.get_host_address(vm_memory::MemoryRegionAddress(offset)) else {
        return;
    };
    // madvise wants a page-aligned start.
    let page_off = host as usize % 4096;
    // SAFETY: the range lies inside this region's live anonymous mapping;
    // MADV_POPULATE_WRITE only faults its pages in (their contents stay zero).
    unsafe {
        libc::madvise(
            host.sub(page_off).cast(),
            len as usize + page_off,
            libc::MADV_POPULATE_WRITE,
        )
    };
}

/// End of RAM below the MMIO hole.
pub fn low_ram_end(mem: &GuestMemory) -> u64 {
    mem.iter()
        .map(|r| r.start_addr().0 + r.len())
        .filter(|end| *end <= MMIO_START)
        .max()
        .unwrap_or(0)
}

/// Bytes of guest RAM resident in host memory (pages the guest or the VMM
/// has touched), measured with mincore(2) over every region.
pub fn resident_bytes(mem: &GuestMemory) -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    };
    let mut total = 0u64;
    for r in mem.iter() {
        let len = r.len();
        let pages = len.div_ceil(page) as usize;
        let mut vec = vec![0u8; pages];
        let Ok(host) = r.get_host_address(vm_memory::MemoryRegionAddress(0)) else {
            continue;
        };
        // SAFETY: `host..host+len` is this region's live mapping and `vec`
        // holds one byte per page of it.
        let rc = unsafe { libc::mincore(host.cast(), len as usize, vec.as_mut_ptr()) };
        if rc == 0 {
            total += vec.iter().filter(|b| **b & 1 != 0).count() as u64 * page;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn ranges_split_around_the_mmio_hole() {
        assert_eq!(ram_ranges(1 << 30), vec![(GuestAddress(0), 1 << 30)]);
        let r = ram_ranges(4 << 30);
        assert_eq!(r[0], (GuestAddress(0), MMIO_START));
        assert_eq!(r[1], (GuestAddress(MMIO_END), (4 << 30) - MMIO_START));
    }

    #[test]
    fn memory_is_lazy_and_residency_is_measured() {
        let mem = create(64, Backing::Small).unwrap();
        assert_eq!(resident_bytes(&mem), 0);
        mem.write_obj(1u64, GuestAddress(0x10_0000)).unwrap();
        mem.write_obj(1u64, GuestAddress(0x20_0000)).unwrap();
        assert_eq!(resident_bytes(&mem), 2 * 4096);
        assert_eq!(low_ram_end(&mem), 64 << 20);
        populate(&mem, GuestAddress(0x30_0800), 3 * 4096);
        // 0x300000..0x303fff: four pages (the start was not page-aligned).
        assert_eq!(resident_bytes(&mem), 6 * 4096);
        let v: u64 = mem.read_obj(GuestAddress(0x30_1000)).unwrap();
        assert_eq!(v, 0);
        populate(&mem, GuestAddress(1 << 40), 4096);
        assert_eq!(resident_bytes(&mem), 6 * 4096);
    }

    /// The VmFlags line of the mapping that holds `addr`, from smaps.
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(a), Ok(b)) =
                        (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                    {
                        inside = (a..b).contains(&addr);
                        continue;
                    }
                }
            }
            if inside {
                if let Some(f) = line.strip_prefix("VmFlags:") {
                    return f.trim().to_string();
                }
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    fn transparent_backing_asks_for_huge_pages() {
        let host = |m: &GuestMemory| m.get_host_address(GuestAddress(0)).unwrap() as usize;
        let thp = create(16, Backing::Transparent).unwrap();
        let small = create(16, Backing::Small).unwrap();
        let has_hg = |f: String| f.split_whitespace().any(|w| w == "hg");
        assert!(has_hg(vm_flags(host(&thp))), "{}", vm_flags(host(&thp)));
        assert!(!has_hg(vm_flags(host(&small))));
    }
}
