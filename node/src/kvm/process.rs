//! One `kiln-vmm` process: started detached (its own session, stdin null,
//! stdout/stderr to `vmm.log`) so it outlives kiln-node; its pid file; a
//! watcher thread that learns when it exits (waitpid for our children, a
//! pidfd for processes adopted after a restart); the control socket client.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

pub const CONFIG_FILE: &str = "vmm.json";
pub const CONSOLE_FILE: &str = "console.log";
pub const SOCKET_FILE: &str = "control.sock";
pub const PID_FILE: &str = "vmm.pid";
pub const LOG_FILE: &str = "vmm.log";

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {path}: {source}")]
    Start {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket: {0}")]
    Control(std::io::Error),
    #[error("kiln-vmm refused {action}: {error}")]
    Refused { action: String, error: String },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// How a VMM ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// An adopted process (not our child): the status is not ours to read.
    Unknown,
}

impl Exit {
    /// A clean guest power-off (kiln-vmm's exit 0).
    pub fn clean(self) -> bool {
        self == Exit::Code(0)
    }

    pub fn describe(self) -> String {
        match self {
            Exit::Code(0) => "the guest powered off".into(),
            Exit::Code(1) => "kiln-vmm failed".into(),
            Exit::Code(2) => "the guest crashed (triple fault or KVM internal error)".into(),
            Exit::Code(3) => "the guest ignored a shutdown and was stopped".into(),
            Exit::Code(4) => "kiln-vmm was stopped by a signal".into(),
            Exit::Code(c) => format!("kiln-vmm exited with status {c}"),
            Exit::Signal(s) => format!("kiln-vmm was killed by signal {s}"),
            Exit::Unknown => "kiln-vmm exited".into(),
        }
    }
}

/// A live VMM as the driver holds it.
#[derive(Debug, Clone)]
pub struct Vmm {
    pub pid: u32,
    /// Set before the driver stops or kills it on purpose: the watcher then
    /// stays quiet.
    pub expected: Arc<AtomicBool>,
    /// `Some` once it exited.
    pub exited: watch::Receiver<Option<Exit>>,
}

impl Vmm {
    pub fn alive(&self) -> bool {
        self.exited.borrow().is_none()
    }

    /// Waits until the process is gone.
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exited.clone();
        let exit = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.unwrap_or(Exit::Unknown),
            Err(_) => Exit::Unknown,
        };
        exit
    }

    /// SIGKILL (the exit is expected) and waits for it.
    pub async fn kill(&self) -> Exit {
        self.expected.store(true, Ordering::SeqCst);
        if self.alive() {
            // SAFETY: kill(2) with a pid we started or adopted; no memory effects.
            unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        }
        self.wait().await
    }
}

/// Called once when a VMM exits unexpectedly, with how it ended.
pub type OnExit = Box<dyn FnOnce(Exit) + Send>;

/// Starts `kiln-vmm --config DIR/vmm.json` in `dir` (the control socket path
/// in the config is relative to it) and watches it.
pub fn launch(vmm_path: &Path, dir: &Path, on_exit: OnExit) -> Result<Vmm, ProcessError> {
    let log = std::fs::File::create(dir.join(LOG_FILE))?;
    let mut cmd = Command::new(vmm_path);
    cmd.arg("--config")
        .arg(dir.join(CONFIG_FILE))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no memory of ours; it
    // makes the VMM a session leader so it outlives kiln-node and its
    // terminal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| ProcessError::Start {
        path: vmm_path.to_path_buf(),
        source,
    })?;
    let pid = child.id();
    std::fs::write(dir.join(PID_FILE), pid.to_string())?;
    Ok(watch_exit(pid, on_exit, move || match child.wait() {
        Ok(st) => match (st.code(), st.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(s)) => Exit::Signal(s),
            _ => Exit::Unknown,
        },
        Err(_) => Exit::Unknown,
    })?)
}

/// A thread that blocks in `wait` until the VMM is gone, publishes how it
/// ended and, unless the driver expected it, calls `on_exit`.
fn watch_exit(
    pid: u32,
    on_exit: OnExit,
    wait: impl FnOnce() -> Exit + Send + 'static,
) -> std::io::Result<Vmm> {
    let expected = Arc::new(AtomicBool::new(false));
    let (tx, rx) = watch::channel(None);
    let exp = expected.clone();
    std::thread::Builder::new()
        .name(format!("vmm-{pid}"))
        .spawn(move || {
            let exit = wait();
            let _ = tx.send(Some(exit));
            // Whoever flips `expected` first owns the report (see KvmDriver::boot).
            if !exp.swap(true, Ordering::SeqCst) {
                on_exit(exit);
            }
        })?;
    Ok(Vmm {
        pid,
        expected,
        exited: rx,
    })
}

/// Takes over a VMM started by an earlier kiln-node: `Some` when the pid file
/// names a live kiln-vmm running this directory's config.
pub fn adopt(dir: &Path, on_exit: OnExit) -> Option<Vmm> {
    let pid: i32 = std::fs::read_to_string(dir.join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let config = dir.join(CONFIG_FILE);
    let ours = cmdline.split(|b| *b == 0).any(|arg| {
        Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(arg)) == config
    });
    if !ours {
        return None;
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a fresh descriptor we own from here on.
    let pidfd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    watch_exit(pid as u32, on_exit, move || {
        use std::os::fd::AsRawFd;
        let mut p = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a pidfd becomes readable when the
        // process exits.
        while unsafe { libc::poll(&mut p, 1, -1) } < 0 {}
        Exit::Unknown
    })
    .ok()
}

/// The control socket of `dir`, reached through `/proc/self/fd` so the path
/// stays short whatever the data directory's length.
fn connect(dir: &Path) -> std::io::Result<UnixStream> {
    let d = std::fs::File::open(dir)?;
    use std::os::fd::AsRawFd;
    let path = format!("/proc/self/fd/{}/{SOCKET_FILE}", d.as_raw_fd());
    let s = UnixStream::connect(path)?;
    drop(d);
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// One request on the control socket (blocking); the answer's JSON.
pub fn control(dir: &Path, request: &Value) -> Result<Value, ProcessError> {
    let mut s = connect(dir).map_err(ProcessError::Control)?;
    let mut line = request.to_string();
    line.push('\n');
    s.write_all(line.as_bytes())
        .map_err(ProcessError::Control)?;
    let mut answer = String::new();
    BufReader::new(s)
        .read_line(&mut answer)
        .map_err(ProcessError::Control)?;
    let v: Value = serde_json::from_str(&answer)
        .map_err(|e| ProcessError::Control(std::io::Error::other(e.to_string())))?;
    if v.get("ok").and_then(Value::as_bool) == Some(true) {
        Ok(v)
    } else {
        Err(ProcessError::Refused {
            action: request
                .get("action")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string(),
            error: v
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no reason given")
                .to_string(),
        })
    }
}

/// Whether the control socket answers `state`.
pub fn answers(dir: &Path) -> bool {
    control(dir, &serde_json::json!({"action": "state"})).is_ok()
}

/// The last `max` bytes of `path` from `from` on, as text.
pub fn tail(path: &Path, from: u64, max: u64) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = from.max(len.saturating_sub(max));
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(max).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).trim().to_string()
}

/// The length of `path` (0 when missing).
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Whether `needle` appears in `path` after byte `from`.
pub fn contains_after(path: &Path, from: u64, needle: &[u8]) -> bool {
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    if f.seek(SeekFrom::Start(from)).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return false;
    }
    buf.windows(needle.len()).any(|w| w == needle)
}
