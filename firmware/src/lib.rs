//! kiln-firmware's pure parts: command-line parsing and line formatting, kept
//! free of hardware access so they are unit-tested on the host. The freestanding
//! ELF (entry code, ring-3 main, port I/O) is `src/bin/kiln-firmware.rs`.
#![cfg_attr(not(test), no_std)]

pub mod cmdline;
pub mod line;
