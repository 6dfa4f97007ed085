//! A built VM and how it runs: vCPU 0 on the thread that built it, and the
//! VMM thread's loop (create the PIT, wait for the guest to end, serve the
//! control socket, pause/resume/stop the vCPUs).

use std::os::unix::io::AsRawFd;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_ioctls::VmFd;
use serde_json::{json, Value};
use vmm_sys_util::eventfd::EventFd;

use crate::builder::VcpuStart;
use crate::control::{ControlServer, Request};
use crate::devices::Devices;
use crate::kvm::vcpu::{kick_signal, VcpuControl, Wanted};
use crate::memory::{resident_bytes, GuestMemory};
use crate::metrics::{rss_kib, since_start_us, trace, ExitCounters, Metrics};

/// Why the VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest reset the CPU through the i8042 (its way to power off).
    GuestReset,
    /// The guest halted with no way to wake up.
    GuestHalt,
    /// The guest triple-faulted.
    GuestTripleFault,
    /// KVM could not run the guest (internal error, failed entry, ...).
    GuestCrash(String),
    /// The VMM failed running a vCPU.
    VcpuError(String),
    /// A requested shutdown was not honoured in time; the VM was stopped.
    ShutdownTimeout,
    /// The VMM got SIGTERM, SIGINT or SIGHUP and stopped the VM.
    Terminated,
}

impl ExitReason {
    /// The process exit status: 0 clean guest shutdown, 1 VMM error,
    /// 2 guest crash, 3 hard stop after a shutdown timeout.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitReason::GuestReset | ExitReason::GuestHalt => 0,
            ExitReason::VcpuError(_) => 1,
            ExitReason::GuestTripleFault | ExitReason::GuestCrash(_) => 2,
            ExitReason::ShutdownTimeout => 3,
            ExitReason::Terminated => 4,
        }
    }

    /// One line for stderr, or None for a clean end.
    pub fn message(&self) -> Option<String> {
        match self {
            ExitReason::GuestReset | ExitReason::GuestHalt => None,
            ExitReason::GuestTripleFault => Some("guest triple-faulted".into()),
            ExitReason::GuestCrash(m) => Some(format!("guest crashed: {m}")),
            ExitReason::VcpuError(m) => Some(m.clone()),
            ExitReason::ShutdownTimeout => {
                Some("guest ignored the shutdown request; stopped after the timeout".into())
            }
            ExitReason::Terminated => Some("terminated by a signal; VM stopped".into()),
        }
    }
}

/// Stack of the VMM thread (poll loop and control requests).
const VMM_STACK: usize = 256 * 1024;

/// The exit eventfd, for the termination signal handler.
static TERM_FD: AtomicI32 = AtomicI32::new(-1);
static TERMINATED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_terminate(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    TERMINATED.store(true, Ordering::SeqCst);
    let fd = TERM_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; `one` is 8 readable bytes.
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

/// The first reason the VM must end, plus an eventfd that wakes the main thread.
pub struct ExitSignal {
    evt: EventFd,
    reason: Mutex<Option<ExitReason>>,
}

impl ExitSignal {
    pub fn new() -> std::io::Result<Self> {
        Ok(ExitSignal {
            evt: EventFd::new(libc::EFD_NONBLOCK)?,
            reason: Mutex::new(None),
        })
    }

    /// Record `reason` (the first one wins) and wake the main thread.
    pub fn request(&self, reason: ExitReason) {
        if let Ok(mut r) = self.reason.lock() {
            if r.is_none() {
                *r = Some(reason);
            }
        }
        let _ = self.evt.write(1);
    }

    pub fn reason(&self) -> Option<ExitReason> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }

    /// Turn SIGTERM, SIGINT and SIGHUP into `ExitReason::Terminated`, so the
    /// VM is stopped and the control socket removed on the way out.
    pub fn catch_termination(&self) -> Result<(), vmm_sys_util::errno::Error> {
        TERM_FD.store(self.evt.as_raw_fd(), Ordering::SeqCst);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            vmm_sys_util::signal::register_signal_handler(sig, on_terminate)?;
        }
        Ok(())
    }
}

/// A built VM: vCPUs 1.. run on their threads, vCPU 0 waits for [`Vm::run`].
pub struct Vm {
    pub(crate) mem: GuestMemory,
    pub(crate) _vm: Arc<VmFd>,
    /// vCPU 0, until `run` runs it on the calling thread.
    pub(crate) boot_vcpu: Option<VcpuStart>,
    /// The thread running vCPU 0 (set by `run`), to kick it.
    pub(crate) boot_thread: Option<libc::pthread_t>,
    /// vCPU 0 has returned (or will never run).
    pub(crate) boot_done: Arc<AtomicBool>,
    /// Threads of vCPUs 1...
    pub(crate) vcpus: Vec<JoinHandle<()>>,
    pub(crate) vcpu_count: usize,
    pub(crate) control: Arc<VcpuControl>,
    pub(crate) exit: Arc<ExitSignal>,
    pub(crate) devices: Arc<Devices>,
    pub(crate) counters: Arc<ExitCounters>,
    pub(crate) server: Option<ControlServer>,
    pub(crate) memory_mib: u64,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) paused: bool,
    pub(crate) shutdown_deadline: Option<Instant>,
}

impl Vm {
    /// Run vCPU 0 on the calling thread and everything else (PIT, control
    /// socket, exits) on a new VMM thread until the guest ends; stop the
    /// vCPUs and return why it ended. The control socket file is removed
    /// before this returns.
    pub fn run(mut self) -> ExitReason {
        let boot = self.boot_vcpu.take();
        let done = self.boot_done.clone();
        // SAFETY: pthread_self has no preconditions. This thread outlives the
        // VMM thread (it joins it below), so the id stays valid for kicks.
        self.boot_thread = Some(unsafe { libc::pthread_self() });
        let service = match std::thread::Builder::new()
            .name("vmm".into())
            .stack_size(VMM_STACK)
            .spawn(move || self.serve())
        {
            Ok(t) => t,
            // `self` went with the closure: the socket is removed, the
            // process ends with vCPUs 1.. when the caller returns.
            Err(e) => return ExitReason::VcpuError(format!("cannot start the VMM thread: {e}")),
        };
        if let Some(b) = boot {
            b.run();
        }
        done.store(true, Ordering::SeqCst);
        service
            .join()
            .unwrap_or_else(|_| ExitReason::VcpuError("the VMM thread died".into()))
    }

    /// The VMM thread: the PIT, then serve until the guest ends.
    fn serve(mut self) -> ExitReason {
        // Created here, with the guest already running: its creation waits
        // for a KVM SRCU grace period (milliseconds on this platform).
        match crate::kvm::vm::create_pit(&self._vm) {
            Ok(()) => trace("pit created"),
            Err(e) => self.exit.request(ExitReason::VcpuError(e.to_string())),
        }
        let reason = loop {
            if TERMINATED.load(Ordering::SeqCst) {
                self.exit.request(ExitReason::Terminated);
            }
            if let Some(r) = self.exit.reason() {
                break r;
            }
            let timeout_ms = match self.shutdown_deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break ExitReason::ShutdownTimeout;
                    }
                    left.as_millis().clamp(1, i32::MAX as u128) as i32
                }
                None => -1,
            };
            let control_fds = self.server.as_ref().map(|s| s.fds()).unwrap_or_default();
            let mut fds: Vec<libc::pollfd> = std::iter::once(self.exit.evt.as_raw_fd())
                .chain(control_fds.iter().copied())
                .map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: `fds` is a valid array of pollfd of the given length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            if n <= 0 {
                continue;
            }
            if fds[0].revents != 0 {
                let _ = self.exit.evt.read();
            }
            if fds.len() > 1 && fds[1].revents != 0 {
                if let Some(s) = self.server.as_mut() {
                    s.accept();
                }
            }
            // Serve clients in reverse so removals do not shift pending ones.
            for i in (2..fds.len()).rev() {
                if fds[i].revents != 0 {
                    if let Some(mut s) = self.server.take() {
                        s.serve(i - 2, &mut |req| self.handle(req));
                        self.server = Some(s);
                    }
                }
            }
        };
        self.stop_vcpus();
        drop(self.server.take());
        reason
    }

    /// Answer one control request.
    fn handle(&mut self, req: Request) -> Value {
        match req {
            Request::State => json!({"ok": true, "state": self.state(), "disks": self.disks()}),
            Request::Pause => {
                if !self.paused {
                    self.control.set(Wanted::Pause);
                    self.kick();
                    if !self
                        .control
                        .wait_parked(self.vcpu_count, Duration::from_secs(2))
                    {
                        return crate::control::error("vCPUs did not pause within 2 s");
                    }
                    self.paused = true;
                }
                json!({"ok": true, "state": self.state()})
            }
            Request::Resume => {
                if self.paused {
                    self.control.set(Wanted::Run);
                    self.paused = false;
                }
                json!({"ok": true, "state": self.state()})
            }
            Request::Shutdown { timeout_ms } => {
                if self.paused {
                    self.control.set(Wanted::Run);
                    self.paused = false;
                }
                if let Ok(mut k) = self.devices.i8042.lock() {
                    k.ctrl_alt_del();
                }
                let t = timeout_ms
                    .map(Duration::from_millis)
                    .unwrap_or(self.shutdown_timeout);
                let deadline = Instant::now() + t;
                self.shutdown_deadline =
                    Some(self.shutdown_deadline.map_or(deadline, |d| d.min(deadline)));
                json!({"ok": true, "state": self.state()})
            }
            Request::SwapDisk { id, path } => self.swap_disk(&id, path.as_deref()),
            Request::DetachDisk { id } => self.swap_disk(&id, None),
            Request::Metrics => {
                let rss = rss_kib();
                let guest = resident_bytes(&self.mem) / 1024;
                let m = Metrics {
                    exits: self.counters.snapshot(),
                    exits_total: self.counters.total(),
                    boot_time_us: self.devices.boot_timer.booted_us(),
                    uptime_us: since_start_us(),
                    rss_kib: rss,
                    guest_resident_kib: guest,
                    overhead_kib: rss.saturating_sub(guest),
                    memory_mib: self.memory_mib,
                    vcpus: self.vcpu_count as u32,
                };
                json!({"ok": true, "metrics": m, "disks": self.disks()})
            }
        }
    }

    /// What each disk slot holds (id, path or null, bytes, read_only).
    fn disks(&self) -> Vec<crate::devices::virtio::blk::DiskInfo> {
        self.devices
            .virtio
            .iter()
            .filter_map(|slot| slot.lock().ok().and_then(|t| t.device().disk_info()))
            .collect()
    }

    /// Give disk `id` a new backing file, or none (the guest gets a
    /// config-change interrupt).
    fn swap_disk(&self, id: &str, path: Option<&std::path::Path>) -> Value {
        for slot in &self.devices.virtio {
            let Ok(mut t) = slot.lock() else { continue };
            if t.device().disk_id() == Some(id) {
                return match t.swap_backing(path) {
                    Ok(()) => json!({"ok": true}),
                    Err(e) => crate::control::error(&e),
                };
            }
        }
        crate::control::error(&format!("no disk with id {id:?}"))
    }

    fn state(&self) -> &'static str {
        if self.shutdown_deadline.is_some() {
            "stopping"
        } else if self.paused {
            "paused"
        } else {
            "running"
        }
    }

    /// Send the kick signal to every vCPU thread.
    fn kick(&self) {
        for t in &self.vcpus {
            // SAFETY: the thread handle is not yet joined, so its pthread_t is valid.
            unsafe { libc::pthread_kill(t.as_pthread_t(), kick_signal()) };
        }
        if let Some(b) = self.boot_thread {
            if !self.boot_done.load(Ordering::SeqCst) {
                // SAFETY: vCPU 0's thread lives until it has joined this one.
                unsafe { libc::pthread_kill(b, kick_signal()) };
            }
        }
    }

    /// Stop the vCPUs of a VM that will not be run (build failed late).
    pub(crate) fn abort(&mut self) {
        self.boot_vcpu = None;
        self.boot_done.store(true, Ordering::SeqCst);
        self.exit
            .request(ExitReason::VcpuError("VM build aborted".into()));
        self.stop_vcpus();
    }

    fn stop_vcpus(&mut self) {
        self.control.set(Wanted::Stop);
        // A kick that lands before a new thread has registered its kvm_run
        // is lost, so kick until every thread has finished.
        let deadline = Instant::now() + Duration::from_secs(5);
        let running = |vm: &Self| {
            !vm.boot_done.load(Ordering::SeqCst) || vm.vcpus.iter().any(|t| !t.is_finished())
        };
        while running(self) && Instant::now() < deadline {
            self.kick();
            std::thread::sleep(Duration::from_micros(500));
        }
        for t in self.vcpus.drain(..) {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}
