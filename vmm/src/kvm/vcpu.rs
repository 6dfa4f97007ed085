//! vCPU threads: create and configure each vCPU, then run it, handing port
//! and MMIO exits to the devices. The main thread pauses, resumes and stops
//! vCPUs through `VcpuControl` and a kick signal.
//!
//! Kicking: the main thread sets the wanted state, then sends `SIGRTMIN` to
//! every vCPU thread. The handler sets `immediate_exit` in the thread's
//! `kvm_run`, so a kick that lands just before KVM_RUN is not lost; KVM_RUN
//! returns EINTR and the thread looks at the wanted state.

use std::cell::Cell;
use std::sync::{Arc, Condvar, Mutex};

use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use super::{cpuid, msrs, regs, KvmError, Step};
use crate::config::Entry;
use crate::devices::Devices;
use crate::memory::GuestMemory;
use crate::metrics::{ExitCounters, ExitKind};
use crate::vmm::{ExitReason, ExitSignal};

/// What the main thread wants the vCPUs to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    Run,
    Pause,
    Stop,
}

/// Shared between the main thread and the vCPU threads.
pub struct VcpuControl {
    state: Mutex<ControlState>,
    changed: Condvar,
}

struct ControlState {
    wanted: Wanted,
    /// vCPUs currently parked (paused or exited).
    parked: usize,
}

impl VcpuControl {
    pub fn new() -> Self {
        VcpuControl {
            state: Mutex::new(ControlState {
                wanted: Wanted::Run,
                parked: 0,
            }),
            changed: Condvar::new(),
        }
    }

    pub fn set(&self, wanted: Wanted) {
        if let Ok(mut s) = self.state.lock() {
            s.wanted = wanted;
        }
        self.changed.notify_all();
    }

    pub fn wanted(&self) -> Wanted {
        self.state.lock().map(|s| s.wanted).unwrap_or(Wanted::Stop)
    }

    /// Wait until `n` vCPUs are parked, or `timeout` passes.
    pub fn wait_parked(&self, n: usize, timeout: std::time::Duration) -> bool {
        let Ok(guard) = self.state.lock() else {
            return false;
        };
        match self
            .changed
            .wait_timeout_while(guard, timeout, |s| s.parked < n)
        {
            Ok((s, _)) => s.parked >= n,
            Err(_) => false,
        }
    }

    /// Called by a vCPU thread after EINTR: park while paused.
    /// Returns false when the thread must end.
    fn park_if_asked(&self) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        if s.wanted == Wanted::Run {
            return true;
        }
        s.parked += 1;
        self.changed.notify_all();
        while s.wanted == Wanted::Pause {
            s = match self.changed.wait(s) {
                Ok(s) => s,
                Err(_) => return false,
            };
        }
        if s.wanted == Wanted::Stop {
            return false;
        }
        s.parked -= 1;
        true
    }
}

impl Default for VcpuControl {
    fn default() -> Self {
        Self::new()
    }
}

thread_local! {
    static KVM_RUN: Cell<*mut kvm_bindings::kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The kick signal's handler: make the current or next KVM_RUN return.
pub extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(|r| r.get());
    if !run.is_null() {
        // SAFETY: the pointer is this thread's own mmapped kvm_run, set by the
        // vCPU loop before any KVM_RUN and valid for the thread's life.
        unsafe { (*run).immediate_exit = 1 };
    }
}

/// The signal used to kick vCPU threads.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

/// Everything a vCPU needs to be configured.
pub struct VcpuSetup<'a> {
    pub index: u8,
    pub count: u8,
    pub entry: Entry,
    pub rip: u64,
    pub boot_info: u64,
    pub supported_cpuid: &'a kvm_bindings::CpuId,
    pub mask: &'a [cpuid::FeatureBit],
}

/// Create and configure one vCPU.
pub fn create(vm: &VmFd, s: &VcpuSetup) -> Result<VcpuFd, KvmError> {
    let vcpu = create_unplaced(vm, s.index, s.count, s.supported_cpuid, s.mask)?;
    if s.index == 0 {
        place_boot_vcpu(&vcpu, s.entry, s.rip, s.boot_info)?;
    }
    Ok(vcpu)
}

/// Create a vCPU with its CPUID, MSRs, FPU and LAPIC, but not yet the
/// registers that depend on where the guest was loaded.
pub fn create_unplaced(
    vm: &VmFd,
    index: u8,
    count: u8,
    supported_cpuid: &kvm_bindings::CpuId,
    mask: &[cpuid::FeatureBit],
) -> Result<VcpuFd, KvmError> {
    let vcpu = vm.create_vcpu(u64::from(index)).step("create_vcpu")?;
    let mut cpuid = supported_cpuid.clone();
    cpuid::adjust(&mut cpuid, index, count, mask);
    vcpu.set_cpuid2(&cpuid).step("set_cpuid2")?;
    msrs::setup(&vcpu)?;
    regs::setup_fpu(&vcpu)?;
    regs::setup_lapic(&vcpu)?;
    Ok(vcpu)
}

/// The boot vCPU's segment, control and general registers for `entry`.
pub fn place_boot_vcpu(
    vcpu: &VcpuFd,
    entry: Entry,
    rip: u64,
    boot_info: u64,
) -> Result<(), KvmError> {
    regs::setup_sregs(vcpu, entry)?;
    regs::setup_regs(vcpu, entry, rip, boot_info)
}

/// An emulation failure KVM reported with the instruction bytes: let
/// [`emulate`](super::emulate) try it. True if handled.
fn emulate_unsupported(
    vcpu: &VcpuFd,
    run: *const kvm_bindings::kvm_run,
    mem: &GuestMemory,
) -> bool {
    // SAFETY: as in `internal_error`.
    let internal = unsafe { (*run).__bindgen_anon_1.internal };
    // suberror 1 = KVM_INTERNAL_ERROR_EMULATION; data[0] bit 0 = instruction
    // bytes present; then insn_size (one byte) and up to 15 bytes.
    if internal.suberror != 1 || internal.ndata < 2 || internal.data[0] & 1 == 0 {
        return false;
    }
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&internal.data[1].to_le_bytes());
    raw[8..].copy_from_slice(&internal.data[2].to_le_bytes());
    let size = usize::from(raw[0]).min(15);
    super::emulate::handle(vcpu, mem, &raw[1..1 + size])
}

/// "KVM internal error" with its suberror, data words and the guest RIP, so a
/// crash line says where the guest stopped (suberror 1 = emulation failure).
fn internal_error(vcpu: &VcpuFd, run: *const kvm_bindings::kvm_run) -> String {
    // SAFETY: `run` is this vCPU's mapped kvm_run, valid while `vcpu` lives;
    // after a KVM_EXIT_INTERNAL_ERROR its `internal` member is the active one.
    let internal = unsafe { (*run).__bindgen_anon_1.internal };
    let n = (internal.ndata as usize).min(internal.data.len());
    let data: Vec<String> = internal.data[..n]
        .iter()
        .map(|d| format!("{d:#x}"))
        .collect();
    let rip = vcpu
        .get_regs()
        .map_or_else(|e| format!("? ({e})"), |r| format!("{:#x}", r.rip));
    format!(
        "KVM internal error (suberror {}, data [{}]) at rip {rip}",
        internal.suberror,
        data.join(", ")
    )
}

/// Replay the writes KVM queued in the coalesced ring.
fn drain_coalesced(ring: &mut super::coalesced::Ring, devices: &Devices) {
    while let Some(w) = ring.pop() {
        if w.pio {
            devices.pio_write(w.addr as u16, &w.data[..w.len]);
        } else {
            devices.mmio_write(w.addr, &w.data[..w.len]);
        }
    }
}

/// Run a vCPU until the VM ends (an exit reported through `exit`) or the
/// main thread asks it to stop.
pub fn run(
    mut vcpu: VcpuFd,
    devices: Arc<Devices>,
    control: Arc<VcpuControl>,
    exit: Arc<ExitSignal>,
    counters: Arc<ExitCounters>,
    mem: GuestMemory,
) {
    let run_ptr: *mut kvm_bindings::kvm_run = vcpu.get_kvm_run();
    KVM_RUN.with(|r| r.set(run_ptr));
    let mut first_exit = true;
    // COM1's data register is a coalesced port (see builder): its writes
    // queue in a ring shared with KVM instead of exiting to us, and are
    // replayed here, in order, before the exit that follows them.
    let mut ring = super::coalesced::Ring::map(&vcpu);
    crate::metrics::trace("first run");
    loop {
        // The VM is over, or the main thread wants us parked or gone.
        if exit.reason().is_some() || (control.wanted() != Wanted::Run && !control.park_if_asked())
        {
            break;
        }
        let result = vcpu.run();
        if let Some(ring) = ring.as_mut() {
            drain_coalesced(ring, &devices);
        }
        let kind = match result {
            Ok(VcpuExit::IoOut(port, data)) => {
                if first_exit {
                    crate::metrics::trace("first exit");
                    first_exit = false;
                }
                devices.pio_write(port, data);
                ExitKind::IoOut
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                devices.pio_read(port, data);
                ExitKind::IoIn
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                devices.mmio_write(addr, data);
                ExitKind::MmioWrite
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                devices.mmio_read(addr, data);
                ExitKind::MmioRead
            }
            Ok(VcpuExit::Hlt) => {
                // Only reached without an in-kernel LAPIC; treat as power-off.
                exit.request(ExitReason::GuestHalt);
                ExitKind::Hlt
            }
            Ok(VcpuExit::Shutdown) => {
                exit.request(ExitReason::GuestTripleFault);
                ExitKind::Shutdown
            }
            Ok(VcpuExit::InternalError) => {
                if !emulate_unsupported(&vcpu, run_ptr, &mem) {
                    exit.request(ExitReason::GuestCrash(internal_error(&vcpu, run_ptr)));
                }
                ExitKind::Other
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                exit.request(ExitReason::GuestCrash(format!(
                    "KVM failed entry (hardware reason {reason:#x}, cpu {cpu})"
                )));
                ExitKind::Other
            }
            Ok(VcpuExit::SystemEvent(..)) => {
                exit.request(ExitReason::GuestReset);
                ExitKind::Other
            }
            Ok(other) => {
                exit.request(ExitReason::GuestCrash(format!(
                    "unexpected vCPU exit {other:?}"
                )));
                ExitKind::Other
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                vcpu.set_kvm_immediate_exit(0);
                ExitKind::Interrupted
            }
            Err(e) => {
                exit.request(ExitReason::VcpuError(format!("KVM_RUN failed: {e}")));
                ExitKind::Other
            }
        };
        devices.flush_console();
        counters.count(kind);
    }
    KVM_RUN.with(|r| r.set(std::ptr::null_mut()));
}
