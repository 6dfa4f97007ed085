//! Where the block benchmark's VMM threads run: the vCPU (which spins
//! polling in the guest) off the CPUs that take the host disk's interrupts,
//! the I/O thread on them. On a nested host an interrupt that lands on a
//! CPU running guest code costs a VM exit; measured here, the wrong way
//! round costs ~20 % of QD32 IOPS and makes runs swing with the scheduler's
//! choice.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// The CPUs for the vCPU and for the VMM's I/O thread, or why there are none.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    Pinned { vcpu: Vec<usize>, io: Vec<usize> },
    Unpinned(String),
}

impl Placement {
    pub fn to_json(&self) -> Value {
        match self {
            Placement::Pinned { vcpu, io } => json!({"vcpu": vcpu, "io": io}),
            Placement::Unpinned(why) => json!({"unpinned": why}),
        }
    }
}

/// Place the threads for I/O on `file`, among `allowed` CPUs.
pub fn for_file(file: &Path, allowed: &[usize]) -> Placement {
    let irq_cpus = match disk_irq_cpus(file) {
        Ok(c) => c,
        Err(why) => return Placement::Unpinned(why),
    };
    split(&irq_cpus, allowed)
}

/// vCPU on the allowed CPUs outside `irq_cpus`, I/O on those inside.
fn split(irq_cpus: &[usize], allowed: &[usize]) -> Placement {
    let (io, vcpu): (Vec<usize>, Vec<usize>) = allowed.iter().partition(|c| irq_cpus.contains(c));
    if io.is_empty() || vcpu.is_empty() {
        return Placement::Unpinned(format!(
            "the disk's interrupts go to CPUs {irq_cpus:?} of the allowed {allowed:?}: nothing to split"
        ));
    }
    Placement::Pinned { vcpu, io }
}

/// The CPUs the interrupts of the device holding `file` were delivered to.
fn disk_irq_cpus(file: &Path) -> Result<Vec<usize>, String> {
    let dev = std::fs::metadata(file)
        .map_err(|e| format!("{}: {e}", file.display()))?
        .dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let link = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let mut dir = std::fs::canonicalize(&link)
        .map_err(|e| format!("{}: {e} (not on a block device?)", link.display()))?;
    // Up from the block device to the (PCI) device with MSI vectors.
    let irqs = loop {
        if let Ok(entries) = std::fs::read_dir(dir.join("msi_irqs")) {
            break entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .collect::<Vec<_>>();
        }
        if !dir.pop() || dir == Path::new("/sys/devices") {
            return Err(format!("no MSI interrupts found above {}", link.display()));
        }
    };
    let fired = fired_irqs();
    let mut cpus: Vec<usize> = irqs
        .iter()
        .filter(|irq| fired.contains(irq))
        .filter_map(|irq| {
            std::fs::read_to_string(format!("/proc/irq/{irq}/effective_affinity_list")).ok()
        })
        .flat_map(|list| parse_cpu_list(list.trim()))
        .collect();
    cpus.sort_unstable();
    cpus.dedup();
    if cpus.is_empty() {
        return Err("the disk's interrupts have not fired yet".into());
    }
    Ok(cpus)
}

/// IRQ numbers with a non-zero count in /proc/interrupts.
fn fired_irqs() -> Vec<u32> {
    let text = std::fs::read_to_string("/proc/interrupts").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let irq = words.next()?.strip_suffix(':')?.parse::<u32>().ok()?;
            let any = words.map_while(|w| w.parse::<u64>().ok()).any(|n| n > 0);
            any.then_some(irq)
        })
        .collect()
}

/// "0-2,5" → [0, 1, 2, 5] (bad parts are skipped).
fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<usize>().ok()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0-2,5"), vec![0, 1, 2, 5]);
        assert_eq!(parse_cpu_list("1"), vec![1]);
        assert_eq!(parse_cpu_list(""), Vec::<usize>::new());
        assert_eq!(parse_cpu_list("x,3"), vec![3]);
    }

    #[test]
    fn the_vcpu_goes_off_the_interrupt_cpus() {
        assert_eq!(
            split(&[1], &[0, 1]),
            Placement::Pinned {
                vcpu: vec![0],
                io: vec![1]
            }
        );
        assert!(matches!(split(&[0, 1], &[0, 1]), Placement::Unpinned(_)));
        assert!(matches!(split(&[4], &[0, 1]), Placement::Unpinned(_)));
    }
}
