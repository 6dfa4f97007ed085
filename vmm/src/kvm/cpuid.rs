//! CPUID for each vCPU: KVM's supported set with the VMM's adjustments
//! (APIC ids, topology, hypervisor bit) and the features the config masks.

use kvm_bindings::CpuId;

/// Where a named feature bit lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureBit {
    pub leaf: u32,
    pub subleaf: u32,
    pub reg: Reg,
    pub bit: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

const fn f(leaf: u32, subleaf: u32, reg: Reg, bit: u8) -> FeatureBit {
    FeatureBit {
        leaf,
        subleaf,
        reg,
        bit,
    }
}

/// Feature names `cpuid_mask` accepts (Linux's /proc/cpuinfo spelling).
pub const FEATURES: &[(&str, FeatureBit)] = &[
    ("sse3", f(1, 0, Reg::Ecx, 0)),
    ("pclmulqdq", f(1, 0, Reg::Ecx, 1)),
    ("ssse3", f(1, 0, Reg::Ecx, 9)),
    ("fma", f(1, 0, Reg::Ecx, 12)),
    ("cx16", f(1, 0, Reg::Ecx, 13)),
    ("pcid", f(1, 0, Reg::Ecx, 17)),
    ("sse4_1", f(1, 0, Reg::Ecx, 19)),
    ("sse4_2", f(1, 0, Reg::Ecx, 20)),
    ("x2apic", f(1, 0, Reg::Ecx, 21)),
    ("movbe", f(1, 0, Reg::Ecx, 22)),
    ("popcnt", f(1, 0, Reg::Ecx, 23)),
    ("tsc_deadline_timer", f(1, 0, Reg::Ecx, 24)),
    ("aes", f(1, 0, Reg::Ecx, 25)),
    ("xsave", f(1, 0, Reg::Ecx, 26)),
    ("osxsave", f(1, 0, Reg::Ecx, 27)),
    ("avx", f(1, 0, Reg::Ecx, 28)),
    ("f16c", f(1, 0, Reg::Ecx, 29)),
    ("rdrand", f(1, 0, Reg::Ecx, 30)),
    ("bmi1", f(7, 0, Reg::Ebx, 3)),
    ("avx2", f(7, 0, Reg::Ebx, 5)),
    ("smep", f(7, 0, Reg::Ebx, 7)),
    ("bmi2", f(7, 0, Reg::Ebx, 8)),
    ("erms", f(7, 0, Reg::Ebx, 9)),
    ("invpcid", f(7, 0, Reg::Ebx, 10)),
    ("avx512f", f(7, 0, Reg::Ebx, 16)),
    ("rdseed", f(7, 0, Reg::Ebx, 18)),
    ("adx", f(7, 0, Reg::Ebx, 19)),
    ("smap", f(7, 0, Reg::Ebx, 20)),
    ("pku", f(7, 0, Reg::Ecx, 3)),
    ("la57", f(7, 0, Reg::Ecx, 16)),
    ("xsaveopt", f(0xd, 1, Reg::Eax, 0)),
    ("xsavec", f(0xd, 1, Reg::Eax, 1)),
    ("xgetbv1", f(0xd, 1, Reg::Eax, 2)),
    ("xsaves", f(0xd, 1, Reg::Eax, 3)),
    ("lahf_lm", f(0x8000_0001, 0, Reg::Ecx, 0)),
    ("abm", f(0x8000_0001, 0, Reg::Ecx, 5)),
    ("nx", f(0x8000_0001, 0, Reg::Edx, 20)),
    ("pdpe1gb", f(0x8000_0001, 0, Reg::Edx, 26)),
    ("rdtscp", f(0x8000_0001, 0, Reg::Edx, 27)),
];

/// Look a feature name up.
pub fn feature(name: &str) -> Option<FeatureBit> {
    FEATURES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// Leaf 1 ECX: running under a hypervisor.
const HYPERVISOR_BIT: u32 = 1 << 31;
/// Leaf 1 EDX: multiple logical processors.
const HTT_BIT: u32 = 1 << 28;

/// Adjust KVM's supported CPUID for vCPU `index` of `count`, then clear
/// every masked feature. Unknown names were rejected by config validation.
pub fn adjust(cpuid: &mut CpuId, index: u8, count: u8, mask: &[FeatureBit]) {
    // Bits needed to number `count` logical CPUs (x2APIC id shift).
    let shift = (u32::from(count).next_power_of_two()).trailing_zeros();
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(index) << 24) | (u32::from(count) << 16);
                e.ecx |= HYPERVISOR_BIT;
                if count > 1 {
                    e.edx |= HTT_BIT;
                } else {
                    e.edx &= !HTT_BIT;
                }
            }
            0xb => {
                // Extended topology: one thread per core, `count` cores.
                e.edx = u32::from(index);
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 1 << 8;
                    }
                    1 => {
                        e.eax = shift;
                        e.ebx = u32::from(count);
                        e.ecx = (2 << 8) | 1;
                    }
                    n => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = n;
                    }
                }
            }
            _ => {}
        }
        for m in mask {
            if e.function == m.leaf && e.index == m.subleaf {
                let r = match m.reg {
                    Reg::Eax => &mut e.eax,
                    Reg::Ebx => &mut e.ebx,
                    Reg::Ecx => &mut e.ecx,
                    Reg::Edx => &mut e.edx,
                };
                *r &= !(1u32 << m.bit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: u32::MAX,
            ebx: u32::MAX,
            ecx: u32::MAX,
            edx: u32::MAX,
            ..Default::default()
        }
    }

    #[test]
    fn apic_ids_topology_and_masks() {
        let mut c =
            CpuId::from_entries(&[entry(1, 0), entry(0xb, 0), entry(0xb, 1), entry(7, 0)]).unwrap();
        let mask = [feature("cx16").unwrap(), feature("avx2").unwrap()];
        adjust(&mut c, 3, 4, &mask);
        let e = c.as_slice();
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_eq!(e[0].ecx & (1 << 13), 0);
        assert_ne!(e[0].ecx & HYPERVISOR_BIT, 0);
        assert_eq!(e[1].edx, 3);
        assert_eq!(e[2].eax, 2);
        assert_eq!(e[2].ebx, 4);
        assert_eq!(e[3].ebx & (1 << 5), 0);
        assert_ne!(e[3].ebx & (1 << 3), 0);
    }

    #[test]
    fn names_resolve() {
        assert!(feature("xsave").is_some());
        assert!(feature("XSAVE").is_none());
    }
}
