//! The i8042 keyboard controller, as much as guests need: the CPU-reset
//! command (0xfe on port 0x64 ends the VM cleanly) and a Ctrl-Alt-Del key
//! sequence the VMM injects to ask a guest to shut down.

use std::collections::VecDeque;
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use crate::vmm::{ExitReason, ExitSignal};

/// Status register: output buffer full.
const SR_OBF: u8 = 0x01;
/// Status register: system flag (self-test passed).
const SR_SYS: u8 = 0x04;
/// Command: pulse the CPU reset line.
const CMD_RESET_CPU: u8 = 0xfe;
/// Command: read the command byte.
const CMD_READ_CTR: u8 = 0x20;
/// Command: write the command byte (next data byte).
const CMD_WRITE_CTR: u8 = 0x60;
/// Command: self-test (answers 0x55).
const CMD_SELF_TEST: u8 = 0xaa;
/// Scancode set 1: Ctrl, Alt, Delete (E0 53) pressed, then released.
const CTRL_ALT_DEL: [u8; 8] = [0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d];

pub struct I8042 {
    out: VecDeque<u8>,
    ctr: u8,
    expect_ctr: bool,
    irq: EventFd,
    exit: Arc<ExitSignal>,
}

impl I8042 {
    pub fn new(irq: EventFd, exit: Arc<ExitSignal>) -> Self {
        I8042 {
            out: VecDeque::new(),
            ctr: 0x01, // keyboard interrupt enabled
            expect_ctr: false,
            irq,
            exit,
        }
    }

    pub fn read(&mut self, port: u16) -> u8 {
        if port == super::I8042_CMD {
            let obf = if self.out.is_empty() { 0 } else { SR_OBF };
            return SR_SYS | obf;
        }
        let b = self.out.pop_front().unwrap_or(0);
        if !self.out.is_empty() {
            self.interrupt();
        }
        b
    }

    pub fn write(&mut self, port: u16, value: u8) {
        if port == super::I8042_CMD {
            match value {
                CMD_RESET_CPU => self.exit.request(ExitReason::GuestReset),
                CMD_READ_CTR => self.out.push_back(self.ctr),
                CMD_WRITE_CTR => self.expect_ctr = true,
                CMD_SELF_TEST => self.out.push_back(0x55),
                _ => {}
            }
        } else if std::mem::take(&mut self.expect_ctr) {
            self.ctr = value;
        }
    }

    /// Queue Ctrl-Alt-Del and raise the keyboard interrupt.
    pub fn ctrl_alt_del(&mut self) {
        self.out.extend(CTRL_ALT_DEL);
        self.interrupt();
    }

    fn interrupt(&self) {
        if self.ctr & 0x01 != 0 {
            let _ = self.irq.write(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> (I8042, Arc<ExitSignal>) {
        let exit = Arc::new(ExitSignal::new().unwrap());
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        (I8042::new(irq, exit.clone()), exit)
    }

    #[test]
    fn reset_command_requests_a_clean_exit() {
        let (mut k, exit) = dev();
        k.write(super::super::I8042_CMD, 0x01);
        assert_eq!(exit.reason(), None);
        k.write(super::super::I8042_CMD, CMD_RESET_CPU);
        assert_eq!(exit.reason(), Some(ExitReason::GuestReset));
    }

    #[test]
    fn ctrl_alt_del_is_read_back_in_order() {
        let (mut k, _) = dev();
        assert_eq!(k.read(super::super::I8042_CMD) & SR_OBF, 0);
        k.ctrl_alt_del();
        let mut got = Vec::new();
        while k.read(super::super::I8042_CMD) & SR_OBF != 0 {
            got.push(k.read(super::super::I8042_DATA));
        }
        assert_eq!(got, CTRL_ALT_DEL);
    }
}
