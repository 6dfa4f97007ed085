//! KVM state: the VM (irqchip, PIT, memory slots), vCPUs and their
//! architectural set-up (CPUID, MSRs, registers, LAPIC).

pub mod coalesced;
pub mod cpuid;
pub mod cpuid_cache;
pub mod emulate;
pub mod keeper;
pub mod msrs;
pub mod regs;
pub mod vcpu;
pub mod vm;

/// Errors from KVM ioctls, named by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error("cannot open /dev/kvm: {0}")]
    Open(kvm_ioctls::Error),
    #[error("KVM API version {0} is not supported (need 12)")]
    ApiVersion(i32),
    #[error("KVM: {step}: {source}")]
    Ioctl {
        step: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("KVM: set_msrs set {set} of {wanted} boot MSRs")]
    Msrs { set: usize, wanted: usize },
    #[error("KVM: cannot build {0}")]
    Fam(&'static str),
    #[error("guest memory: {0}")]
    GuestMemory(#[from] vm_memory::GuestMemoryError),
}

/// Attach the failing step's name to a KVM error.
pub(crate) trait Step<T> {
    fn step(self, step: &'static str) -> Result<T, KvmError>;
}

impl<T> Step<T> for Result<T, kvm_ioctls::Error> {
    fn step(self, step: &'static str) -> Result<T, KvmError> {
        self.map_err(|source| KvmError::Ioctl { step, source })
    }
}
