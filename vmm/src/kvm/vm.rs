//! The KVM VM: opened once per process with the in-kernel irqchip, PIT and
//! guest memory slots.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use super::{KvmError, Step};
use crate::layout::{KVM_IDENTITY_MAP, KVM_TSS};
use crate::memory::GuestMemory;

/// Open /dev/kvm and check the API version.
pub fn open_kvm() -> Result<Kvm, KvmError> {
    let kvm = Kvm::new().map_err(KvmError::Open)?;
    let v = kvm.get_api_version();
    if v != 12 {
        return Err(KvmError::ApiVersion(v));
    }
    Ok(kvm)
}

/// Create the VM: memory slots, TSS and identity-map pages, irqchip.
pub fn create(kvm: &Kvm, mem: &GuestMemory) -> Result<VmFd, KvmError> {
    let vm = kvm.create_vm().step("create_vm")?;
    crate::metrics::trace("create_vm");
    for (slot, region) in mem.iter().enumerate() {
        let host = region.get_host_address(MemoryRegionAddress(0))?;
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mapping owned by `mem`, which outlives
        // the VM (the builder keeps both until the process ends).
        unsafe { vm.set_user_memory_region(r) }.step("set_user_memory_region")?;
    }
    crate::metrics::trace("memory slots");
    vm.set_tss_address(KVM_TSS as usize)
        .step("set_tss_address")?;
    vm.set_identity_map_address(KVM_IDENTITY_MAP)
        .step("set_identity_map_address")?;
    vm.create_irq_chip().step("create_irq_chip")?;
    Ok(vm)
}

/// The in-kernel i8254 PIT (with a dummy speaker port). Separate from
/// `create` because its creation waits for an SRCU grace period: the builder
/// calls it once the vCPUs are running.
pub fn create_pit(vm: &VmFd) -> Result<(), KvmError> {
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).step("create_pit2")
}
