//! COM1: vm-superio's 16550 model writing to the console (a log file and/or
//! the VMM's stdout). Bytes are gathered per exit and written with one
//! `write` per sink, so a line printed with `rep outsb` costs one syscall.

use std::fs::File;
use std::io::Write;

use vm_superio::serial::NoEvents;
use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

/// An interrupt line backed by an irqfd.
pub struct IrqLine(pub EventFd);

impl Trigger for IrqLine {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

pub type Serial = vm_superio::Serial<IrqLine, NoEvents, Console>;

pub fn new(irq: EventFd, console: Console) -> Serial {
    vm_superio::Serial::new(IrqLine(irq), console)
}

/// Console sinks plus the bytes of the current exit.
pub struct Console {
    log: Option<File>,
    stdout: bool,
    pending: Vec<u8>,
}

impl Console {
    pub fn new(log: Option<File>, stdout: bool) -> Self {
        Console {
            log,
            stdout,
            pending: Vec::with_capacity(256),
        }
    }

    /// Write out what the guest sent during this exit.
    pub fn drain(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if let Some(log) = &mut self.log {
            let _ = log.write_all(&self.pending);
        }
        if self.stdout {
            let _ = std::io::stdout().lock().write_all(&self.pending);
        }
        if self.pending.ends_with(b"\n") {
            crate::metrics::trace("console line");
        }
        self.pending.clear();
    }
}

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    /// vm-superio flushes after every byte; the real write happens in `drain`.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.drain();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_reach_the_log_on_drain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let file = File::create(&path).unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut serial = new(irq.try_clone().unwrap(), Console::new(Some(file), false));
        for b in b"hi\n" {
            serial.write(0, *b).unwrap();
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        serial.writer_mut().drain();
        assert_eq!(std::fs::read(&path).unwrap(), b"hi\n");
    }
}
