//! virtio-net on a TAP: the device (features, config space with the MAC and
//! link status), the TAP it opens (`tap`), the worker thread that moves
//! frames between the guest's queues and the TAP (`worker`), and its receive
//! side (`rx`).
//!
//! Offered: VERSION_1, RING_EVENT_IDX, RING_INDIRECT_DESC, NET_F_MAC,
//! NET_F_STATUS, mergeable receive buffers, and the checksum and TCP
//! segmentation offloads in both directions (CSUM, HOST_TSO4/6, HOST_ECN;
//! GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN). The 12-byte `virtio_net_hdr_v1`
//! passes through unchanged in both directions (the TAP is opened with
//! IFF_VNET_HDR and a header size of 12), so what a guest asks of the host
//! (a partial checksum, a 64 KiB TCP segment) is done by the host kernel;
//! what the guest accepts is told to the TAP with TUNSETOFFLOAD at every
//! activation, so the kernel hands it partial checksums and large segments
//! only when it said it can take them.

pub mod rx;
pub mod tap;
pub mod worker;

use std::fs::File;
use std::thread::JoinHandle;

use vmm_sys_util::eventfd::EventFd;

use super::{
    read_config_bytes, Activation, VirtioDevice, VirtioError, F_RING_EVENT_IDX,
    F_RING_INDIRECT_DESC, F_VERSION_1, TYPE_NET,
};
use crate::config::NicConfig;

/// Feature bits (virtio 1.2, 5.1.3).
pub const F_CSUM: u64 = 1 << 0;
pub const F_GUEST_CSUM: u64 = 1 << 1;
pub const F_MAC: u64 = 1 << 5;
pub const F_GUEST_TSO4: u64 = 1 << 7;
pub const F_GUEST_TSO6: u64 = 1 << 8;
pub const F_GUEST_ECN: u64 = 1 << 9;
pub const F_HOST_TSO4: u64 = 1 << 11;
pub const F_HOST_TSO6: u64 = 1 << 12;
pub const F_HOST_ECN: u64 = 1 << 13;
pub const F_MRG_RXBUF: u64 = 1 << 15;
pub const F_STATUS: u64 = 1 << 16;
/// The offloads offered (each direction's checksum and TSO).
const OFFLOADS: u64 = F_CSUM
    | F_HOST_TSO4
    | F_HOST_TSO6
    | F_HOST_ECN
    | F_GUEST_CSUM
    | F_GUEST_TSO4
    | F_GUEST_TSO6
    | F_GUEST_ECN;
/// Largest frame the TAP delivers with TSO on: a 64 KiB IP packet, an
/// Ethernet and a VLAN header, and the vnet header.
const MAX_GSO_FRAME: usize = HDR_LEN + 14 + 4 + 65535;
/// Config status bit: the link is up.
pub const S_LINK_UP: u16 = 1;
/// Bytes of `virtio_net_hdr_v1` (without mergeable buffers it still carries
/// `num_buffers` in version 1).
pub const HDR_LEN: usize = 12;
/// Descriptors per queue.
pub const QUEUE_SIZE: u16 = 256;
/// Queue indices.
pub const RX: usize = 0;
pub const TX: usize = 1;

/// A virtio-net device on one TAP queue.
pub struct Net {
    tap: File,
    tap_name: String,
    mac: [u8; 6],
    id: String,
    sizes: [u16; 2],
    worker: Option<(EventFd, JoinHandle<()>)>,
}

impl Net {
    /// Open (or create) the TAP of `cfg`; `index` names the NIC when it has no id.
    pub fn new(cfg: &NicConfig, index: usize) -> Result<Self, VirtioError> {
        let tap = tap::open(&cfg.tap).map_err(|source| VirtioError::Tap {
            name: cfg.tap.clone(),
            source,
        })?;
        let mac = match &cfg.mac {
            Some(m) => parse_mac(m).ok_or_else(|| VirtioError::Mac(m.clone()))?,
            None => default_mac(index),
        };
        Ok(Net {
            tap,
            tap_name: cfg.tap.clone(),
            mac,
            id: cfg.id.clone().unwrap_or_else(|| format!("nic{index}")),
            sizes: [QUEUE_SIZE, QUEUE_SIZE],
            worker: None,
        })
    }

    /// The config space (virtio 1.2, 5.1.4): mac, status, max_virtqueue_pairs.
    pub fn config_space(&self) -> [u8; 10] {
        let mut c = [0u8; 10];
        c[..6].copy_from_slice(&self.mac);
        c[6..8].copy_from_slice(&S_LINK_UP.to_le_bytes());
        c[8..10].copy_from_slice(&1u16.to_le_bytes());
        c
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn tap_name(&self) -> &str {
        &self.tap_name
    }
}

/// Parse `aa:bb:cc:dd:ee:ff` (hex, either case); a multicast MAC is refused.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in mac.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    if parts.next().is_some() || mac[0] & 1 != 0 {
        return None;
    }
    Some(mac)
}

/// A locally administered unicast MAC for NIC `index` of this process.
fn default_mac(index: usize) -> [u8; 6] {
    let pid = std::process::id().to_be_bytes();
    [0x52, 0x54, pid[1], pid[2], pid[3], index as u8]
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn features(&self) -> u64 {
        F_VERSION_1
            | F_RING_EVENT_IDX
            | F_RING_INDIRECT_DESC
            | F_MAC
            | F_STATUS
            | F_MRG_RXBUF
            | OFFLOADS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space(), offset, data);
    }

    fn activate(&mut self, a: Activation) -> Result<(), VirtioError> {
        self.reset();
        let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(VirtioError::EventFd)?;
        let tap = self.tap.try_clone().map_err(VirtioError::EventFd)?;
        let acked = a.features;
        if let Err(e) = tap::set_offload(&tap, acked) {
            // The guest then gets complete, checksummed frames only: still right.
            eprintln!("kiln-vmm: TUNSETOFFLOAD on {}: {e}", self.tap_name);
        }
        let mergeable = acked & F_MRG_RXBUF != 0;
        // Only mergeable groups are sized by it; others take one chain a frame.
        let rx_need = if !mergeable {
            0
        } else if acked & (F_GUEST_TSO4 | F_GUEST_TSO6) != 0 {
            MAX_GSO_FRAME
        } else {
            // Frames up to the TAP's MTU (read now: a larger MTU set later
            // drops frames that do not fit a mergeable group).
            HDR_LEN + 14 + 4 + tap::mtu(&self.tap_name).unwrap_or(1500)
        };
        let stop_fd = stop.try_clone().map_err(VirtioError::EventFd)?;
        let w = worker::NetWorker::new(a, tap, stop_fd, mergeable, rx_need)?;
        let handle = std::thread::Builder::new()
            .name(format!("net-{}", self.id))
            .stack_size(256 * 1024)
            .spawn(move || w.run())
            .map_err(VirtioError::Thread)?;
        self.worker = Some((stop, handle));
        Ok(())
    }

    fn reset(&mut self) {
        if let Some((stop, handle)) = self.worker.take() {
            let _ = stop.write(1);
            let _ = handle.join();
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_mac("52:54:00:AB:cd:01"),
            Some([0x52, 0x54, 0, 0xab, 0xcd, 1])
        );
        assert_eq!(parse_mac("52:54:00:ab:cd"), None);
        assert_eq!(parse_mac("52:54:00:ab:cd:01:02"), None);
        assert_eq!(parse_mac("52:54:00:ab:cd:1"), None);
        assert_eq!(parse_mac("52:54:00:ab:cd:zz"), None);
        assert_eq!(parse_mac("01:00:5e:00:00:01"), None, "multicast");
        assert_eq!(default_mac(3)[0] & 1, 0);
    }
}
