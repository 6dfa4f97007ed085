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
//!
//! Multi-queue (`queue_pairs` > 1 in the config): CTRL_VQ and MQ are
//! offered with `max_virtqueue_pairs`; the TAP is opened once per pair with
//! IFF_MULTI_QUEUE, each pair the driver makes ready gets its own worker
//! on its own TAP queue, and the control queue (`ctrl`) switches pairs on
//! and off (one is on until the driver asks for more). A driver without MQ
//! uses pair 0 only.

pub mod ctrl;
pub mod rx;
pub mod tap;
pub mod worker;

use std::fs::File;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use super::threads::DeviceThreads;
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
pub const F_CTRL_VQ: u64 = 1 << 17;
pub const F_MQ: u64 = 1 << 22;
/// Most queue pairs a NIC may have.
pub const MAX_PAIRS: u16 = 8;
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

/// A virtio-net device on a TAP (one TAP queue per queue pair).
pub struct Net {
    taps: Vec<File>,
    tap_name: String,
    mac: [u8; 6],
    id: String,
    /// rx0, tx0 (, rx1, tx1, …, ctrl with multi-queue).
    sizes: Vec<u16>,
    /// Pair workers and the control queue's thread.
    threads: DeviceThreads,
}

impl Net {
    /// Open (or create) the TAP of `cfg`; `index` names the NIC when it has no id.
    pub fn new(cfg: &NicConfig, index: usize) -> Result<Self, VirtioError> {
        let pairs = cfg.queue_pairs;
        if !(1..=MAX_PAIRS).contains(&pairs) {
            return Err(VirtioError::PairCount(pairs));
        }
        let taps = (0..pairs)
            .map(|_| tap::open(&cfg.tap, pairs > 1))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| VirtioError::Tap {
                name: cfg.tap.clone(),
                source,
            })?;
        let sizes = if pairs > 1 {
            vec![QUEUE_SIZE; 2 * usize::from(pairs) + 1]
        } else {
            vec![QUEUE_SIZE; 2]
        };
        let mac = match &cfg.mac {
            Some(m) => parse_mac(m).ok_or_else(|| VirtioError::Mac(m.clone()))?,
            None => default_mac(index),
        };
        Ok(Net {
            taps,
            tap_name: cfg.tap.clone(),
            mac,
            id: cfg.id.clone().unwrap_or_else(|| format!("nic{index}")),
            sizes,
            threads: DeviceThreads::default(),
        })
    }

    /// Queue pairs offered.
    fn pairs(&self) -> usize {
        self.taps.len()
    }

    /// The config space (virtio 1.2, 5.1.4): mac, status, max_virtqueue_pairs.
    pub fn config_space(&self) -> [u8; 10] {
        let mut c = [0u8; 10];
        c[..6].copy_from_slice(&self.mac);
        c[6..8].copy_from_slice(&S_LINK_UP.to_le_bytes());
        c[8..10].copy_from_slice(&(self.pairs() as u16).to_le_bytes());
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
            | if self.pairs() > 1 {
                F_CTRL_VQ | F_MQ
            } else {
                0
            }
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }

    /// rx0 and tx0; further pairs and the control queue are optional.
    fn required_queues(&self) -> usize {
        2
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space(), offset, data);
    }

    fn activate(&mut self, a: Activation) -> Result<(), VirtioError> {
        self.reset();
        let acked = a.features;
        if let Err(e) = tap::set_offload(&self.taps[0], acked) {
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
        // The ready queues by index.
        let mut ready: Vec<Option<(Queue, EventFd)>> =
            (0..self.sizes.len()).map(|_| None).collect();
        for ((q, n), i) in a.queues.into_iter().zip(a.notifiers).zip(a.indices) {
            if let Some(slot) = ready.get_mut(i) {
                *slot = Some((q, n));
            }
        }
        let mq = acked & F_MQ != 0 && self.pairs() > 1;
        // The control queue follows the pairs the driver may use (5.1.2).
        let ctrl_index = (acked & F_CTRL_VQ != 0).then(|| if mq { 2 * self.pairs() } else { 2 });
        let ctrl = ctrl_index.and_then(|i| ready.get_mut(i).and_then(Option::take));
        // Leading pairs with both queues ready get a worker.
        let mut pairs = Vec::new();
        for p in 0..if mq { self.pairs() } else { 1 } {
            let rx = ready.get_mut(2 * p).and_then(Option::take);
            let tx = ready.get_mut(2 * p + 1).and_then(Option::take);
            match (rx, tx) {
                (Some(rx), Some(tx)) => pairs.push((rx, tx)),
                _ => break,
            }
        }
        if pairs.is_empty() {
            return Err(VirtioError::BadQueue(TX));
        }
        let multi = self.pairs() > 1;
        let mut switches = Vec::new();
        for (p, ((rx, rx_notify), (tx, tx_notify))) in pairs.into_iter().enumerate() {
            let switch = if multi {
                let s = Arc::new(worker::PairSwitch {
                    // One pair until the driver asks for more (5.1.6.5.5).
                    enabled: AtomicBool::new(p == 0),
                    wake: EventFd::new(libc::EFD_NONBLOCK).map_err(VirtioError::EventFd)?,
                });
                switches.push(s.clone());
                Some(s)
            } else {
                None
            };
            let queues = worker::PairQueues {
                rx,
                tx,
                rx_notify,
                tx_notify,
                switch,
            };
            let tap = self.taps[p].try_clone().map_err(VirtioError::EventFd)?;
            let (mem, interrupt) = (a.mem.clone(), a.interrupt.clone());
            let name = match multi {
                true => format!("net-{}-p{p}", self.id),
                false => format!("net-{}", self.id),
            };
            self.threads.spawn(name, |stop| {
                let w =
                    worker::NetWorker::new(mem, interrupt, queues, tap, stop, mergeable, rx_need)?;
                Ok(move || w.run())
            })?;
        }
        if multi {
            let taps = self
                .taps
                .iter()
                .map(File::try_clone)
                .collect::<Result<Vec<_>, _>>()
                .map_err(VirtioError::EventFd)?;
            let pairs = Arc::new(ctrl::Pairs {
                taps,
                switches,
                tap_name: self.tap_name.clone(),
            });
            // Pair 0 only: detach the others' TAP queues until asked.
            pairs.set_enabled(1);
            if let Some((queue, notify)) = ctrl {
                let (mem, interrupt) = (a.mem.clone(), a.interrupt.clone());
                self.threads
                    .spawn(format!("net-{}-ctrl", self.id), |stop| {
                        let w = ctrl::CtrlWorker {
                            mem,
                            queue,
                            notify,
                            stop,
                            interrupt,
                            pairs,
                        };
                        Ok(move || w.run())
                    })?;
            }
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.threads.stop_all();
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

    #[test]
    fn out_of_range_queue_pairs_are_refused_before_any_tap_opens() {
        for bad in [0, MAX_PAIRS + 1] {
            let cfg = NicConfig {
                // An invalid name: reaching tap::open would fail differently.
                tap: String::new(),
                mac: None,
                id: None,
                queue_pairs: bad,
            };
            assert!(matches!(Net::new(&cfg, 0), Err(VirtioError::PairCount(n)) if n == bad));
        }
    }
}
