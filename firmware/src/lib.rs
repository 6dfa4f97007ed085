//! kiln-firmware's library: command-line parsing and line formatting (pure,
//! unit-tested on the host) and the polling virtio-blk driver (`virtio_blk`,
//! whose ring layout and test pattern are unit-tested; its MMIO access runs
//! only in the guest). The freestanding ELF (entry code, ring-3 main, port
//! I/O, the jobs) is `src/bin/kiln-firmware.rs`.
#![cfg_attr(not(test), no_std)]

pub mod bench;
pub mod cmdline;
pub mod dhcp;
pub mod line;
pub mod net_echo;
pub mod ping;
pub mod virtio_blk;
pub mod virtio_mmio;
pub mod virtio_net;
