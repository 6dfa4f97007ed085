//! An idle VM that keeps KVM's global switches on while no guest runs.
//!
//! KVM turns some kernel-wide static keys on when the first VM (or the first
//! in-kernel LAPIC) appears and off when the last one goes: the scheduler's
//! preempt notifiers at KVM_CREATE_VM, the LAPIC's "software disabled" key
//! at vCPU creation. Each switch rewrites kernel text and waits for every
//! CPU to take an IPI (`smp_text_poke_batch_finish`). On this nested host a
//! VMM that starts while no other VM exists paid ~250 µs of CPU for it
//! (perf: `static_key_slow_inc` under KVM_CREATE_VM and `kvm_create_lapic`),
//! and the same again when it exits. A host that holds one idle VM with one
//! never-run vCPU keeps those keys on: every guest's start and end skip the
//! rewrite. The idle VM costs a few pages of kernel memory and no CPU.
//!
//! kiln-node should hold one for its lifetime; `kiln-bench boot` holds one
//! while it measures (as a node would), unless told not to.

use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use super::{vm, KvmError, Step};

/// Holds the idle VM; dropping it lets the keys go.
pub struct KvmKeeper {
    _vcpu: VcpuFd,
    _vm: VmFd,
}

impl KvmKeeper {
    /// Create the idle VM: in-kernel irqchip and one vCPU (never run).
    pub fn new() -> Result<Self, KvmError> {
        let kvm: Kvm = vm::open_kvm()?;
        let vm = kvm.create_vm().step("create_vm")?;
        vm.create_irq_chip().step("create_irq_chip")?;
        let vcpu = vm.create_vcpu(0).step("create_vcpu")?;
        Ok(KvmKeeper {
            _vcpu: vcpu,
            _vm: vm,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_vm_is_held_and_released() {
        if Kvm::new().is_err() {
            eprintln!("skipping: /dev/kvm is not available");
            return;
        }
        let a = KvmKeeper::new().unwrap();
        // Several keepers coexist (one per node process, tests in parallel).
        let b = KvmKeeper::new().unwrap();
        drop(a);
        drop(b);
    }
}
