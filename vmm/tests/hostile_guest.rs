//! A hostile guest against virtio-blk, without KVM: the test plays the
//! driver through the real virtio-mmio transport (register reads/writes as a
//! vCPU would make them) over a real `GuestMemoryMmap`, writes descriptor
//! tables, avail rings and indirect tables of its own choosing, kicks the
//! queue's notifier as KVM's ioeventfd would, and watches the used ring and
//! the device status.
//!
//! What must hold for any input: every popped request is answered (a status
//! byte and a used entry) or the device reports DEVICE_NEEDS_RESET; the queue
//! thread never panics or hangs (a reset — which joins it — returns); and
//! after a reset the same device serves a well-formed read correctly. Fixed
//! cases cover loops, bad lengths, addresses outside guest memory, wrong
//! directions, huge and nested indirect tables and a runaway avail index;
//! proptest then throws random chains at it. `hostile_guest_mq/` does the
//! same for a disk with several queues.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kiln_vmm::config::{DirectMode, DiskConfig};
use kiln_vmm::devices::virtio::blk::{Blk, S_IOERR, S_OK, T_FLUSH, T_GET_ID, T_IN, T_OUT};
use kiln_vmm::devices::virtio::mmio::*;
use kiln_vmm::devices::virtio::{
    VirtioError, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC, STATUS_NEEDS_RESET,
};
use proptest::prelude::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

const MEM: u64 = 1 << 20;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x3000;
const USED: u64 = 0x4000;
const INDIRECT: u64 = 0x6000;
const HDR: u64 = 0x10000;
const DATA: u64 = 0x20000;
const STATUS: u64 = 0x18000;
const DISK_BYTES: usize = 1 << 20;

const NEXT: u16 = 1;
const WRITE: u16 = 2;
const INDIRECT_F: u16 = 4;

struct Driver {
    t: MmioTransport,
    mem: GuestMemoryMmap<()>,
    size: u16,
    /// The slot's irqfd as KVM would see it (a clone of the transport's).
    irq: EventFd,
    _dir: tempfile::TempDir,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Every request got a used entry.
    Answered,
    /// The device gave up on the driver.
    NeedsReset,
}

impl Driver {
    fn new(read_only: bool) -> Self {
        Driver::build(read_only, true, "hostile", 1)
    }

    /// A driver of an empty disk slot (`path` null).
    fn empty() -> Self {
        Driver::build(false, false, "hostile", 1)
    }

    /// A driver of a disk with `queues` queues whose id (and so its queue
    /// threads' names, `blk-<id>-q<i>`) is `id`.
    fn multi(id: &str, queues: u32) -> Self {
        Driver::build(false, true, id, queues)
    }

    fn build(read_only: bool, with_file: bool, id: &str, num_queues: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        std::fs::write(&path, vec![0xab; DISK_BYTES]).unwrap();
        let cfg = DiskConfig {
            path: with_file.then_some(path),
            read_only,
            direct: DirectMode::Off,
            id: Some(id.into()),
            num_queues,
            poll_us: if read_only { 0 } else { 100 },
            queue_affinity: Vec::new(),
        };
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let irq_seen = irq.try_clone().unwrap();
        let t = MmioTransport::new(Box::new(Blk::new(&cfg, 0).unwrap()), mem.clone(), irq).unwrap();
        Driver {
            t,
            mem,
            size: 0,
            irq: irq_seen,
            _dir: dir,
        }
    }

    fn w(&mut self, reg: u64, v: u32) {
        self.t.write(reg, &v.to_le_bytes());
    }

    fn r(&self, reg: u64) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(reg, &mut b);
        u32::from_le_bytes(b)
    }

    /// Reset, negotiate `features` (plus VERSION_1) and set up queue 0.
    fn setup(&mut self, size: u16, features: u64, used: u64) {
        self.negotiate(features);
        self.ready(0, size, DESC, AVAIL, used);
        self.w(REG_STATUS, 1 | 2 | 8 | 4);
        self.size = size;
    }

    /// Reset and negotiate `features` (plus VERSION_1); queue 0's rings
    /// are zeroed.
    fn negotiate(&mut self, features: u64) {
        self.w(REG_STATUS, 0);
        for a in [DESC, AVAIL, USED] {
            self.mem
                .write_slice(&[0u8; 0x1000], GuestAddress(a))
                .unwrap();
        }
        self.w(REG_STATUS, 1 | 2);
        let f = features | (1 << 32);
        self.w(REG_DRIVER_FEATURES_SEL, 0);
        self.w(REG_DRIVER_FEATURES, f as u32);
        self.w(REG_DRIVER_FEATURES_SEL, 1);
        self.w(REG_DRIVER_FEATURES, (f >> 32) as u32);
        self.w(REG_STATUS, 1 | 2 | 8);
        assert_ne!(self.r(REG_STATUS) & 8, 0, "features refused");
    }

    /// Give queue `q` its rings and make it ready.
    fn ready(&mut self, q: u32, size: u16, desc: u64, avail: u64, used: u64) {
        self.w(REG_QUEUE_SEL, q);
        self.w(REG_QUEUE_NUM, u32::from(size));
        self.w(REG_QUEUE_DESC_LOW, desc as u32);
        self.w(REG_QUEUE_AVAIL_LOW, avail as u32);
        self.w(REG_QUEUE_USED_LOW, used as u32);
        self.w(REG_QUEUE_USED_HIGH, (used >> 32) as u32);
        self.w(REG_QUEUE_READY, 1);
    }

    fn desc(&self, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let a = GuestAddress(table + u64::from(i) * 16);
        self.mem.write_obj(addr, a).unwrap();
        self.mem.write_obj(len, GuestAddress(a.0 + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(a.0 + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(a.0 + 14)).unwrap();
    }

    fn header(&self, slot: u64, kind: u32, sector: u64) -> u64 {
        let a = HDR + slot * 16;
        self.mem.write_obj(kind, GuestAddress(a)).unwrap();
        self.mem.write_obj(sector, GuestAddress(a + 8)).unwrap();
        a
    }

    /// Offer `heads` in the avail ring, set avail idx to `idx`, kick.
    fn offer(&self, heads: &[u16], idx: u16) {
        for (i, h) in heads.iter().enumerate() {
            let slot = (i % usize::from(self.size.max(1))) as u64;
            self.mem
                .write_obj(*h, GuestAddress(AVAIL + 4 + slot * 2))
                .unwrap();
        }
        self.mem.write_obj(idx, GuestAddress(AVAIL + 2)).unwrap();
        self.t.notifiers()[0].write(1).unwrap();
    }

    fn used_idx_on(&self, q: u32) -> u16 {
        self.mem.read_obj(GuestAddress(ring(q).used + 2)).unwrap()
    }

    fn used_entry(&self, i: u16) -> (u32, u32) {
        let a = USED + 4 + u64::from(i % self.size) * 8;
        (
            self.mem.read_obj(GuestAddress(a)).unwrap(),
            self.mem.read_obj(GuestAddress(a + 4)).unwrap(),
        )
    }

    fn status_at(&self, a: u64) -> u8 {
        self.mem.read_obj(GuestAddress(a)).unwrap()
    }

    /// Wait until `n` used entries exist or the device wants a reset.
    fn wait(&self, n: u16) -> Outcome {
        self.wait_on(0, n)
    }

    /// As `wait`, on queue `q`'s used ring.
    fn wait_on(&self, q: u32, n: u16) -> Outcome {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.r(REG_STATUS) & STATUS_NEEDS_RESET != 0 {
                return Outcome::NeedsReset;
            }
            if self.used_idx_on(q) == n {
                return Outcome::Answered;
            }
            assert!(
                Instant::now() < deadline,
                "queue {q} neither answered {n} requests (used idx {}) nor asked for a reset",
                self.used_idx_on(q)
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Wait until the device asks for a reset.
    fn wait_broken(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.r(REG_STATUS) & STATUS_NEEDS_RESET == 0 {
            assert!(
                Instant::now() < deadline,
                "the device never asked for a reset"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// After anything: a reset returns (the queue thread ends) and a clean
    /// read of sector 1 works.
    fn recovers(&mut self) {
        self.setup(16, F_RING_EVENT_IDX, USED);
        let h = self.header(0, T_IN, 1);
        self.mem
            .write_slice(&[0u8; 512], GuestAddress(DATA))
            .unwrap();
        self.desc(DESC, 0, h, 16, NEXT, 1);
        self.desc(DESC, 1, DATA, 512, NEXT | WRITE, 2);
        self.desc(DESC, 2, STATUS, 1, WRITE, 0);
        self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        self.offer(&[0], 1);
        assert_eq!(self.wait(1), Outcome::Answered);
        assert_eq!(self.status_at(STATUS), S_OK);
        assert_eq!(self.used_entry(0), (0, 513));
        let mut buf = [0u8; 512];
        self.mem.read_slice(&mut buf, GuestAddress(DATA)).unwrap();
        assert!(buf.iter().all(|b| *b == 0xab));
        self.w(REG_STATUS, 0);
    }
}

/// True when the irqfd was raised since the last look (and clears it).
fn interrupted(d: &Driver) -> bool {
    d.irq.read().is_ok()
}

/// Whether the irqfd fires within a second: the worker raises it just after
/// writing the used entries the test has already seen.
fn interrupt_arrives(d: &Driver) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if interrupted(d) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// No interrupt within 50 ms of the used entries (none is on its way).
fn no_interrupt(d: &Driver) -> bool {
    std::thread::sleep(Duration::from_millis(50));
    !interrupted(d)
}

#[test]
fn interrupts_follow_no_interrupt_flag_and_used_event() {
    // Without EVENT_IDX: VRING_AVAIL_F_NO_INTERRUPT set → no interrupt.
    let mut d = Driver::new(false);
    d.setup(16, 0, USED);
    let _ = interrupted(&d);
    d.mem.write_obj(1u16, GuestAddress(AVAIL)).unwrap();
    request(&d, T_IN, 1, Some((DATA, 512, WRITE)));
    assert_eq!(d.wait(1), Outcome::Answered);
    assert_eq!(d.status_at(STATUS), S_OK);
    assert!(
        no_interrupt(&d),
        "interrupt despite VRING_AVAIL_F_NO_INTERRUPT"
    );
    // Flag cleared → the next completion interrupts.
    d.mem.write_obj(0u16, GuestAddress(AVAIL)).unwrap();
    d.offer(&[0, 0], 2);
    assert_eq!(d.wait(2), Outcome::Answered);
    assert!(interrupt_arrives(&d), "no interrupt with the flag cleared");

    // With EVENT_IDX: used_event far ahead → none; any used_event value
    // (also a "hostile" one far outside the ring) only moves the threshold.
    d.setup(16, F_RING_EVENT_IDX, USED);
    let _ = interrupted(&d);
    let used_event = GuestAddress(AVAIL + 4 + 2 * 16);
    d.mem.write_obj(0x8000u16, used_event).unwrap();
    request(&d, T_IN, 1, Some((DATA, 512, WRITE)));
    assert_eq!(d.wait(1), Outcome::Answered);
    assert!(no_interrupt(&d), "interrupt before used_event was reached");
    // used_event = 1: the second completion (used idx 1 → 2) interrupts.
    d.mem.write_obj(1u16, used_event).unwrap();
    d.offer(&[0, 0], 2);
    assert_eq!(d.wait(2), Outcome::Answered);
    assert!(interrupt_arrives(&d), "no interrupt at used_event");
    d.recovers();
}

/// A request type, its sector and its data descriptor (address, length, flags).
type Case = (u32, u64, Option<(u64, u32, u16)>);

/// One request with header, optional data and status descriptors.
fn request(d: &Driver, kind: u32, sector: u64, data: Option<(u64, u32, u16)>) {
    let h = d.header(0, kind, sector);
    match data {
        Some((addr, len, flags)) => {
            d.desc(DESC, 0, h, 16, NEXT, 1);
            d.desc(DESC, 1, addr, len, flags | NEXT, 2);
        }
        None => d.desc(DESC, 0, h, 16, NEXT, 2),
    }
    d.desc(DESC, 2, STATUS, 1, WRITE, 0);
    d.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    d.offer(&[0], 1);
}

fn answered_with(d: &mut Driver, status: u8) {
    assert_eq!(d.wait(1), Outcome::Answered);
    assert_eq!(d.status_at(STATUS), status);
    d.recovers();
}

#[test]
fn good_requests_work_and_get_id_answers() {
    let mut d = Driver::new(false);
    d.setup(16, 0, USED);
    request(&d, T_OUT, 2, Some((DATA, 4096, 0)));
    answered_with(&mut d, S_OK);
    d.setup(16, 0, USED);
    request(&d, T_GET_ID, 0, Some((DATA, 20, WRITE)));
    assert_eq!(d.wait(1), Outcome::Answered);
    let mut id = [0u8; 7];
    d.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id, b"hostile");
    d.recovers();
}

#[test]
fn wrong_directions_bad_lengths_and_ranges_fail_the_request() {
    let mut d = Driver::new(false);
    let cases: &[Case] = &[
        (T_IN, 0, Some((DATA, 512, 0))), // IN into a device-readable buffer
        (T_OUT, 0, Some((DATA, 512, WRITE))), // OUT from a device-writable buffer
        (T_IN, 0, Some((DATA, 100, WRITE))), // not a whole sector
        (T_IN, 2047, Some((DATA, 1024, WRITE))), // past the end of the disk
        (T_IN, u64::MAX / 256, Some((DATA, 512, WRITE))), // sector overflow
        (T_IN, 0, Some((MEM - 256, 512, WRITE))), // runs out of guest memory
        (T_IN, 0, Some((u64::MAX - 100, 512, WRITE))), // address wraps
        (T_OUT, 0, Some((1 << 40, 4096, 0))), // far outside guest memory
        (T_IN, 0, Some((DATA, !511u32, WRITE))), // 4 GiB segment
    ];
    for (kind, sector, data) in cases {
        d.setup(16, 0, USED);
        request(&d, *kind, *sector, *data);
        assert_eq!(d.wait(1), Outcome::Answered, "{kind} {sector} {data:?}");
        assert_eq!(d.status_at(STATUS), S_IOERR, "{kind} {sector} {data:?}");
        d.recovers();
    }
    // Unknown request types are unsupported, not errors.
    d.setup(16, 0, USED);
    request(&d, 99, 0, None);
    answered_with(&mut d, 2);
}

#[test]
fn an_empty_slot_fails_io_until_a_file_is_swapped_in_and_again_after_detach() {
    let mut d = Driver::empty();
    let io: &[Case] = &[
        (T_IN, 0, Some((DATA, 512, WRITE))),
        (T_OUT, 0, Some((DATA, 512, 0))),
        (T_FLUSH, 0, None),
        (11, 0, Some((DATA, 16, 0))),
    ];
    for (kind, sector, data) in io {
        d.setup(16, 0, USED);
        request(&d, *kind, *sector, *data);
        assert_eq!(d.wait(1), Outcome::Answered, "{kind}");
        assert_eq!(d.status_at(STATUS), S_IOERR, "{kind}");
        d.w(REG_STATUS, 0);
    }
    // Capacity 0 in the config space; GET_ID still answers.
    let mut cap = [0u8; 8];
    d.t.read(REG_CONFIG, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 0);
    d.setup(16, 0, USED);
    request(&d, T_GET_ID, 0, Some((DATA, 20, WRITE)));
    answered_with_status_only(&mut d, S_OK);

    // Attach while the queue thread runs, then detach: I/O follows the slot.
    let file = d._dir.path().join("disk.raw");
    d.setup(16, 0, USED);
    d.t.swap_backing(Some(&file)).unwrap();
    d.t.read(REG_CONFIG, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), (DISK_BYTES / 512) as u64);
    request(&d, T_IN, 1, Some((DATA, 512, WRITE)));
    answered_with_status_only(&mut d, S_OK);
    d.recovers();
    d.setup(16, 0, USED);
    d.t.swap_backing(None).unwrap();
    request(&d, T_IN, 1, Some((DATA, 512, WRITE)));
    answered_with_status_only(&mut d, S_IOERR);
    // A directory is no disk: refused, the slot stays empty.
    assert!(d.t.swap_backing(Some(d._dir.path())).is_err());
    d.t.read(REG_CONFIG, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 0);
}

fn answered_with_status_only(d: &mut Driver, status: u8) {
    assert_eq!(d.wait(1), Outcome::Answered);
    assert_eq!(d.status_at(STATUS), status);
    d.w(REG_STATUS, 0);
}

#[test]
fn a_read_only_disk_fails_writes_discards_and_write_zeroes() {
    let mut d = Driver::new(true);
    for kind in [T_OUT, 11, 13] {
        d.setup(16, 0, USED);
        request(&d, kind, 0, Some((DATA, 512, 0)));
        answered_with(&mut d, S_IOERR);
    }
}

#[test]
fn chains_without_header_or_status_are_returned_unanswered() {
    let mut d = Driver::new(false);
    // Only a status descriptor: no header.
    d.setup(16, 0, USED);
    d.desc(DESC, 0, STATUS, 1, WRITE, 0);
    d.offer(&[0], 1);
    assert_eq!(d.wait(1), Outcome::Answered);
    assert_eq!(d.status_at(STATUS), S_IOERR);
    // Last descriptor device-readable: nowhere to put a status.
    d.setup(16, 0, USED);
    let h = d.header(0, T_IN, 0);
    d.desc(DESC, 0, h, 16, 0, 0);
    d.offer(&[0], 1);
    assert_eq!(d.wait(1), Outcome::Answered);
    assert_eq!(d.used_entry(0), (0, 0));
    d.recovers();
}

#[test]
fn descriptor_loops_and_huge_chains_end() {
    let mut d = Driver::new(false);
    // 0 → 1 → 0 → ... with NEXT everywhere.
    d.setup(16, 0, USED);
    let h = d.header(0, T_IN, 0);
    d.desc(DESC, 0, h, 16, NEXT, 1);
    d.desc(DESC, 1, DATA, 512, NEXT | WRITE, 0);
    d.offer(&[0], 1);
    assert_eq!(d.wait(1), Outcome::Answered);
    d.recovers();
    // A chain through all 256 descriptors (more segments than seg_max).
    d.setup(256, 0, USED);
    d.desc(DESC, 0, h, 16, NEXT, 1);
    for i in 1..255 {
        d.desc(DESC, i, DATA + u64::from(i) * 512, 512, NEXT | WRITE, i + 1);
    }
    d.desc(DESC, 255, STATUS, 1, WRITE, 0);
    d.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    d.offer(&[0], 1);
    assert_eq!(d.wait(1), Outcome::Answered);
    assert_eq!(d.status_at(STATUS), S_IOERR);
    d.recovers();
}

#[test]
fn hostile_indirect_tables_fail_cleanly() {
    let mut d = Driver::new(false);
    let h = d.header(0, T_IN, 0);
    // A valid indirect request works.
    d.setup(16, F_RING_INDIRECT_DESC, USED);
    d.desc(INDIRECT, 0, h, 16, NEXT, 1);
    d.desc(INDIRECT, 1, DATA, 512, NEXT | WRITE, 2);
    d.desc(INDIRECT, 2, STATUS, 1, WRITE, 0);
    d.desc(DESC, 0, INDIRECT, 48, INDIRECT_F, 0);
    d.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    d.offer(&[0], 1);
    answered_with(&mut d, S_OK);
    for (addr, len) in [
        (INDIRECT, 0xfff0u32), // 4095 entries, mostly zero descriptors
        (INDIRECT, 47),        // not a whole number of descriptors
        (MEM - 16, 64),        // runs off the end of guest memory
        (u64::MAX - 15, 16),   // wraps
        (INDIRECT, !15u32),    // a 4 GiB table
    ] {
        d.setup(16, F_RING_INDIRECT_DESC, USED);
        d.desc(DESC, 0, addr, len, INDIRECT_F, 0);
        d.offer(&[0], 1);
        assert_eq!(d.wait(1), Outcome::Answered, "{addr:#x} {len}");
        d.recovers();
    }
    // An indirect descriptor inside an indirect table.
    d.setup(16, F_RING_INDIRECT_DESC, USED);
    d.desc(INDIRECT, 0, h, 16, NEXT, 1);
    d.desc(INDIRECT, 1, INDIRECT, 32, INDIRECT_F, 0);
    d.desc(DESC, 0, INDIRECT, 32, INDIRECT_F, 0);
    d.offer(&[0], 1);
    assert_eq!(d.wait(1), Outcome::Answered);
    d.recovers();
}

#[test]
fn a_runaway_avail_index_or_duplicate_heads_mark_the_device_broken() {
    let mut d = Driver::new(false);
    d.setup(16, F_RING_EVENT_IDX, USED);
    d.offer(&[], 1000);
    d.wait_broken();
    d.recovers();
    // The same head offered 16 times while its first read is in flight
    // either completes each time or is caught as a duplicate.
    d.setup(16, 0, USED);
    request(&d, T_IN, 0, Some((DATA, 64 * 1024, WRITE)));
    d.offer(&[0; 16], 16);
    let o = d.wait(16);
    assert!(matches!(o, Outcome::Answered | Outcome::NeedsReset));
    d.recovers();
}

#[test]
fn rings_outside_guest_memory_are_refused_at_driver_ok() {
    let mut d = Driver::new(false);
    d.setup(16, 0, MEM - 8);
    assert_ne!(d.r(REG_STATUS) & STATUS_NEEDS_RESET, 0);
    d.setup(16, 0, 1 << 44);
    assert_ne!(d.r(REG_STATUS) & STATUS_NEEDS_RESET, 0);
    d.recovers();
}

#[test]
fn the_transport_ignores_odd_register_accesses() {
    let mut d = Driver::new(false);
    let mut b = [0u8; 8];
    for off in [0u64, 3, 0x50, 0x7f, 0xfff, 0x100, 0x13c, u64::MAX] {
        d.t.read(off, &mut b);
        d.t.write(off, &[1, 2, 3]);
        d.t.write(off, &[0xff; 8]);
    }
    d.w(REG_QUEUE_SEL, 7);
    d.w(REG_QUEUE_NUM, 3);
    d.w(REG_QUEUE_READY, 1);
    // Features not offered: FEATURES_OK does not stick.
    d.w(REG_STATUS, 0);
    d.w(REG_STATUS, 3);
    d.w(REG_DRIVER_FEATURES_SEL, 1);
    d.w(REG_DRIVER_FEATURES, 0xffff_ffff);
    d.w(REG_STATUS, 3 | 8);
    assert_eq!(d.r(REG_STATUS) & 8, 0);
    d.recovers();
}

/// A random descriptor: address inside the request area, anywhere in guest
/// memory, at its edge or far outside; any length; any flags.
fn any_desc() -> impl Strategy<Value = (u64, u32, u16, u16)> {
    any_desc_in(HDR, MEM)
}

/// As `any_desc`, with in-memory addresses from `lo..hi`.
fn any_desc_in(lo: u64, hi: u64) -> impl Strategy<Value = (u64, u32, u16, u16)> {
    (
        prop_oneof![
            (lo..hi).prop_map(|a| a),
            Just(MEM - 1),
            any::<u64>(),
            Just(INDIRECT),
        ],
        prop_oneof![
            Just(16u32),
            Just(512),
            Just(1),
            Just(0),
            0..70000u32,
            any::<u32>()
        ],
        0u16..8,
        0u16..20,
    )
}

/// `default` cases, or PROPTEST_CASES=N for a longer run.
fn cases(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    // 1000 cases by default (a few seconds).
    #![proptest_config(cases(1000))]

    #[test]
    fn random_chains_never_break_the_device(
        descs in prop::collection::vec(any_desc(), 16),
        indirect in prop::collection::vec(any_desc(), 8),
        heads in prop::collection::vec(0u16..20, 0..16),
        extra_idx in prop_oneof![Just(0u16), 0u16..40, any::<u16>()],
        kinds in prop::collection::vec(prop_oneof![Just(T_IN), Just(T_OUT), Just(4u32), Just(8), Just(11), Just(13), any::<u32>()], 16),
        sectors in prop::collection::vec(prop_oneof![0u64..2048, any::<u64>()], 16),
        event_idx in any::<bool>(),
    ) {
        let mut d = Driver::new(false);
        d.setup(16, F_RING_INDIRECT_DESC | if event_idx { F_RING_EVENT_IDX } else { 0 }, USED);
        for (i, (addr, len, flags, next)) in descs.iter().enumerate() {
            d.desc(DESC, i as u16, *addr, *len, *flags, *next);
        }
        for (i, (addr, len, flags, next)) in indirect.iter().enumerate() {
            d.desc(INDIRECT, i as u16, *addr, *len, *flags & !INDIRECT_F, *next);
        }
        for (i, (k, s)) in kinds.iter().zip(&sectors).enumerate() {
            d.header(i as u64, *k, *s);
        }
        let n = if extra_idx > 40 { extra_idx } else { heads.len() as u16 };
        d.offer(&heads, n);
        if n > 16 {
            d.wait_broken();
        } else {
            d.wait(n);
        }
        d.recovers();
    }
}

/// Guest memory of queue `q`: its rings, request headers, status bytes and
/// data. Queue 0 keeps the single-queue layout; the others get 32 KiB each
/// from 0x48000, clear of it.
struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    hdr: u64,
    status: u64,
    data: u64,
}

fn ring(q: u32) -> Ring {
    if q == 0 {
        return Ring {
            desc: DESC,
            avail: AVAIL,
            used: USED,
            hdr: HDR,
            status: STATUS,
            data: DATA,
        };
    }
    let base = 0x40000 + u64::from(q) * 0x8000;
    Ring {
        desc: base,
        avail: base + 0x1000,
        used: base + 0x2000,
        hdr: base + 0x3000,
        status: base + 0x3800,
        data: base + 0x4000,
    }
}

/// The cases of a disk with several queues (a short module name: a test's
/// thread is named after its path, and the kernel keeps 15 bytes of it,
/// which `settled_threads` needs to tell the tests apart).
#[path = "hostile_guest_mq/mod.rs"]
mod mq;
