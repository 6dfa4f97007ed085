//! kiln-vmm: a KVM virtual machine monitor, one process per guest.
//!
//! The contract: `builder::build` turns a validated `config::VmConfig` into a
//! running `vmm::Vm` (vCPU threads started); `Vm::run` serves the control
//! socket until the guest ends and returns the `ExitReason`, whose
//! `exit_code` the binary exits with (0 clean guest shutdown, 1 VMM error,
//! 2 guest crash, 3 forced stop after a shutdown timeout, 4 stopped by a
//! termination signal).
//!
//! Layout: `builder` (the recipe), `kvm/` (VM, vCPU, CPUID, MSRs, registers),
//! `memory`, `layout` (guest address map), `boot/` (loaders, boot params,
//! PVH, ACPI), `devices/` (serial, i8042, boot timer), `control` (socket),
//! `metrics`, `vmm` (the running VM).

pub mod affinity;
pub mod boot;
pub mod builder;
pub mod config;
pub mod control;
pub mod devices;
pub mod kvm;
pub mod layout;
pub mod memory;
pub mod metrics;
pub mod process;
pub mod vmm;

pub use builder::{build, BuildError};
pub use config::VmConfig;
pub use vmm::{ExitReason, Vm};
