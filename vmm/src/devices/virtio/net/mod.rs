//! virtio-net on a TAP: the device (features, config space with the MAC and
//! link status), the TAP it opens (`tap`), and the worker thread that moves
//! frames between the guest's queues and the TAP (`worker`).
//!
//! Negotiated: VERSION_1, RING_EVENT_IDX, RING_INDIRECT_DESC, NET_F_MAC and
//! NET_F_STATUS. No checksum or segmentation offloads are offered (the TAP
//! gets no TUNSETOFFLOAD, so the kernel hands over only complete,
//! checksummed frames) and no mergeable receive buffers: the 12-byte
//! `virtio_net_hdr_v1` passes through unchanged in both directions (the TAP
//! is opened with IFF_VNET_HDR and a header size of 12).

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
pub const F_MAC: u64 = 1 << 5;
pub const F_STATUS: u64 = 1 << 16;
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
        F_VERSION_1 | F_RING_EVENT_IDX | F_RING_INDIRECT_DESC | F_MAC | F_STATUS
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
        let w = worker::NetWorker::new(a, tap, stop.try_clone().map_err(VirtioError::EventFd)?)?;
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
