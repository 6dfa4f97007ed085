//! The recipe for a VM: validate the config, open KVM, map memory, create
//! the VM, load the guest, create devices and vCPUs, start the vCPU threads.
//!
//! Start-up cost matters (spawn → guest output is a benchmark), and on this
//! 2-CPU, nested host a thread hand-off costs more than the work it hides:
//! everything up to vCPU 0's first KVM_RUN runs on the calling thread, in
//! order, and vCPU 0 later runs on that same thread ([`Vm::run`]). KVM's
//! supported CPUID comes from a per-host cache file ([`cpuid_cache`]); the PIT
//! (whose creation waits for a KVM SRCU grace period, milliseconds here) is
//! created by the VMM thread once the guest runs.

use std::fs::OpenOptions;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use crate::boot::{self, BootError, BootPlan};
use crate::config::{BootSource, ConfigError, VmConfig};
use crate::control::{ControlError, ControlServer};
use crate::devices::serial::Console;
use crate::devices::virtio::{self, blk::Blk, mmio::MmioTransport, net::Net, VirtioError};
use crate::devices::{DeviceError, Devices, COM1, COM1_GSI, I8042_GSI};
use crate::kvm::vcpu::{self, VcpuControl, VcpuSetup};
use crate::kvm::{cpuid, cpuid_cache, regs, vm, KvmError, Step};
use crate::memory::{self, GuestMemory, MemoryError};
use crate::metrics::{trace, ExitCounters};
use crate::vmm::{ExitSignal, Vm};

/// Everything that can stop a VM from being built; each is one clear line.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Kvm(#[from] KvmError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Virtio(#[from] VirtioError),
    #[error("cannot start a vCPU thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot install a signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
}

/// Stack of each vCPU thread (the run loop is shallow).
const VCPU_STACK: usize = 256 * 1024;

/// The guest loaded and its devices made, before its vCPUs run.
struct Prepared {
    plan: BootPlan,
    devices: Devices,
    exit: Arc<ExitSignal>,
    server: Option<ControlServer>,
}

/// What a vCPU thread needs to run its vCPU.
pub(crate) struct VcpuStart {
    fd: VcpuFd,
    devices: Arc<Devices>,
    control: Arc<VcpuControl>,
    exit: Arc<ExitSignal>,
    counters: Arc<ExitCounters>,
    mem: GuestMemory,
    index: usize,
    /// Host CPUs this vCPU runs on (empty: any).
    affinity: Vec<usize>,
}

impl VcpuStart {
    /// Run the vCPU on the calling thread until the VM ends.
    pub(crate) fn run(self) {
        crate::affinity::pin_or_warn(&self.affinity, &format!("vCPU {}", self.index));
        vcpu::run(
            self.fd,
            self.devices,
            self.control,
            self.exit,
            self.counters,
            self.mem,
        );
    }
}

/// Build the VM described by `config`: everything but running vCPU 0, which
/// [`Vm::run`] does on the calling thread (vCPUs 1.. already run on theirs).
pub fn build(config: &VmConfig) -> Result<Vm, BuildError> {
    let source = config.validate()?;
    trace("config valid");
    let kvm = vm::open_kvm()?;
    let vcpus = config.vcpus as u8;
    let mask: Vec<cpuid::FeatureBit> = config
        .cpuid_mask
        .iter()
        .filter_map(|n| cpuid::feature(n))
        .collect();
    let mem = memory::create(config.memory_mib, config.memory_backing())?;
    let vm_fd = Arc::new(vm::create(&kvm, &mem)?);
    trace("vm created");
    let Prepared {
        plan,
        devices,
        exit,
        server,
    } = prepare(&kvm, config, &source, &mem, &vm_fd)?;
    let (supported, from) = cpuid_cache::supported(&kvm, config.cpuid_cache.as_deref())?;
    trace(match from {
        cpuid_cache::Source::Cache => "supported cpuid (cache)",
        cpuid_cache::Source::Kvm => "supported cpuid (kvm)",
    });
    drop(kvm);
    let mut fds = Vec::with_capacity(vcpus as usize);
    for index in 0..vcpus {
        let setup = VcpuSetup {
            index,
            count: vcpus,
            entry: plan.entry,
            rip: plan.rip,
            boot_info: plan.boot_info,
            supported_cpuid: &supported,
            mask: &mask,
        };
        fds.push(vcpu::create(&vm_fd, &setup)?);
    }
    trace("vcpus configured");
    vmm_sys_util::signal::register_signal_handler(vcpu::kick_signal(), vcpu::kick_handler)
        .map_err(BuildError::Signal)?;
    exit.catch_termination().map_err(BuildError::Signal)?;

    let devices = Arc::new(devices);
    let control = Arc::new(VcpuControl::new());
    let counters = Arc::new(ExitCounters::default());
    let mut starts = fds
        .into_iter()
        .enumerate()
        .map(|(index, fd)| VcpuStart {
            fd,
            index,
            affinity: config.vcpu_affinity.get(index).cloned().unwrap_or_default(),
            devices: devices.clone(),
            control: control.clone(),
            exit: exit.clone(),
            counters: counters.clone(),
            mem: mem.clone(),
        })
        .collect::<Vec<_>>()
        .into_iter();
    let boot_vcpu = starts.next();
    let mut vm = Vm {
        mem: mem.clone(),
        _vm: vm_fd,
        boot_vcpu,
        boot_thread: None,
        boot_done: Arc::new(AtomicBool::new(false)),
        vcpus: Vec::with_capacity(vcpus as usize),
        vcpu_count: usize::from(vcpus),
        control,
        exit,
        devices,
        counters,
        server,
        memory_mib: config.memory_mib,
        shutdown_timeout: Duration::from_millis(config.shutdown_timeout_ms),
        paused: false,
        shutdown_deadline: None,
    };
    for (i, start) in starts.enumerate() {
        match std::thread::Builder::new()
            .name(format!("vcpu{}", i + 1))
            .stack_size(VCPU_STACK)
            .spawn(move || start.run())
        {
            Ok(t) => vm.vcpus.push(t),
            Err(e) => {
                // Stop the vCPUs already running; dropping `vm` removes the socket.
                vm.abort();
                return Err(BuildError::Thread(e));
            }
        }
    }
    trace("vcpu threads started");
    Ok(vm)
}

/// The boot source with one `virtio_mmio.device=<size>@<addr>:<gsi>` entry
/// per virtio-mmio slot appended to its command line (Linux's syntax, which
/// the firmware parses as well).
fn announce_virtio_slots(source: &BootSource, slots: usize) -> BootSource {
    let mut s = source.clone();
    for i in 0..slots {
        s.cmdline.push_str(&format!(
            " virtio_mmio.device=4K@{:#x}:{}",
            virtio::slot_addr(i).0,
            virtio::FIRST_GSI + i as u32
        ));
    }
    s
}

/// One virtio-mmio slot for `device`: its irqfd on the slot's GSI and one
/// ioeventfd per queue on QueueNotify (datamatch: the queue index).
fn virtio_slot(
    vm_fd: &VmFd,
    mem: &GuestMemory,
    index: usize,
    device: Box<dyn virtio::VirtioDevice>,
) -> Result<MmioTransport, BuildError> {
    let irq =
        vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).map_err(VirtioError::EventFd)?;
    vm_fd
        .register_irqfd(&irq, virtio::FIRST_GSI + index as u32)
        .step("register_irqfd(virtio)")?;
    let t = MmioTransport::new(device, mem.clone(), irq)?;
    let notify = virtio::slot_addr(index).0 + virtio::mmio::REG_QUEUE_NOTIFY;
    for (q, n) in t.notifiers().iter().enumerate() {
        vm_fd
            .register_ioevent(n, &kvm_ioctls::IoEventAddress::Mmio(notify), q as u32)
            .step("register_ioevent(virtio)")?;
    }
    Ok(t)
}

/// Guest image and tables, devices and the control socket.
fn prepare(
    kvm: &Kvm,
    config: &VmConfig,
    source: &BootSource,
    mem: &GuestMemory,
    vm_fd: &VmFd,
) -> Result<Prepared, BuildError> {
    let source = announce_virtio_slots(source, config.disks.len() + config.nics.len());
    let plan = boot::load(mem, &source, config.vcpus as u8)?;
    regs::write_boot_tables(mem, plan.entry)?;
    trace("guest loaded");

    let log = match &config.console.log {
        Some(path) => Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| DeviceError::ConsoleLog {
                    path: path.clone(),
                    source,
                })?,
        ),
        None => None,
    };
    let exit = Arc::new(ExitSignal::new().map_err(DeviceError::EventFd)?);
    let (mut devices, irqs) = Devices::new(Console::new(log, config.console.stdout), exit.clone())?;
    vm_fd
        .register_irqfd(&irqs.serial, COM1_GSI)
        .step("register_irqfd(serial)")?;
    vm_fd
        .register_irqfd(&irqs.i8042, I8042_GSI)
        .step("register_irqfd(i8042)")?;
    // Bytes written to COM1's data register need no answer: KVM queues them
    // (coalesced PIO) instead of exiting to the VMM for each one; the vCPU
    // thread replays them in order at its next exit. Without the capability
    // every byte simply exits.
    if kvm.check_extension(kvm_ioctls::Cap::CoalescedPio) {
        let _ = vm_fd.register_coalesced_mmio(kvm_ioctls::IoEventAddress::Pio(u64::from(COM1)), 1);
    }
    for (i, disk) in config.disks.iter().enumerate() {
        devices.virtio.push(Mutex::new(virtio_slot(
            vm_fd,
            mem,
            i,
            Box::new(Blk::new(disk, i)?),
        )?));
    }
    // NICs take the slots after the disks.
    for (i, nic) in config.nics.iter().enumerate() {
        devices.virtio.push(Mutex::new(virtio_slot(
            vm_fd,
            mem,
            config.disks.len() + i,
            Box::new(Net::new(nic, i)?),
        )?));
    }
    let server = match &config.control_socket {
        Some(path) => Some(ControlServer::bind(path)?),
        None => None,
    };
    trace("devices ready");
    Ok(Prepared {
        plan,
        devices,
        exit,
        server,
    })
}
