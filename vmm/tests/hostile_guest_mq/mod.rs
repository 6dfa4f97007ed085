//! The hostile-guest driver against a disk with several queues
//! (VIRTIO_BLK_F_MQ): queues driven at once complete on their own used
//! rings, a driver without MQ needs and gets queue 0 only, bad queue
//! counts are refused, and random chains on one queue never hang another.

use super::*;
use kiln_vmm::devices::virtio::blk::F_MQ;

/// Queue size of the multi-queue cases.
const MQ_SIZE: u16 = 16;
/// Requests a multi-queue case offers on one queue (three descriptors each).
const MQ_REQUESTS: u16 = 5;

impl Driver {
    /// Reset, negotiate `features` and make the queues in `queues` ready
    /// (rings zeroed), then DRIVER_OK.
    fn setup_queues(&mut self, features: u64, queues: &[u32]) {
        self.negotiate(features);
        for q in queues {
            let r = ring(*q);
            self.mem
                .write_slice(&[0u8; 0x3000], GuestAddress(r.desc))
                .unwrap();
            self.ready(*q, MQ_SIZE, r.desc, r.avail, r.used);
        }
        self.w(REG_STATUS, 1 | 2 | 8 | 4);
        self.size = MQ_SIZE;
    }

    /// Offer `MQ_REQUESTS` one-sector reads on queue `q` (request `k` reads
    /// sector `first + k`) and kick the queue's notifier.
    fn reads_on(&self, q: u32, first: u64) {
        let r = ring(q);
        for k in 0..MQ_REQUESTS {
            let i = u64::from(k);
            let (h, d) = (r.hdr + i * 16, k * 3);
            self.mem.write_obj(T_IN, GuestAddress(h)).unwrap();
            self.mem.write_obj(first + i, GuestAddress(h + 8)).unwrap();
            self.desc(r.desc, d, h, 16, NEXT, d + 1);
            self.desc(r.desc, d + 1, r.data + i * 512, 512, NEXT | WRITE, d + 2);
            self.desc(r.desc, d + 2, r.status + i, 1, WRITE, 0);
            self.mem
                .write_obj(0xffu8, GuestAddress(r.status + i))
                .unwrap();
            self.mem
                .write_obj(d, GuestAddress(r.avail + 4 + i * 2))
                .unwrap();
        }
        self.mem
            .write_obj(MQ_REQUESTS, GuestAddress(r.avail + 2))
            .unwrap();
        self.t.notifiers()[q as usize].write(1).unwrap();
    }

    /// The reads of `reads_on(q, first)` all succeeded and came back on
    /// queue `q`'s own used ring; with `first`, their data is that of the
    /// sectors `number_sectors` wrote.
    fn reads_done_on(&self, q: u32, first: Option<u64>) {
        let r = ring(q);
        let mut heads = Vec::new();
        for k in 0..u64::from(MQ_REQUESTS) {
            assert_eq!(self.status_at(r.status + k), S_OK, "queue {q} request {k}");
            if let Some(first) = first {
                let mut buf = [0u8; 512];
                self.mem
                    .read_slice(&mut buf, GuestAddress(r.data + k * 512))
                    .unwrap();
                let want = sector_byte(first + k);
                assert!(
                    buf.iter().all(|b| *b == want),
                    "queue {q} sector {}",
                    first + k
                );
            }
            let e = GuestAddress(r.used + 4 + k * 8);
            let head: u32 = self.mem.read_obj(e).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(e.0 + 4)).unwrap();
            assert_eq!(len, 513, "queue {q}");
            heads.push(head);
        }
        heads.sort_unstable();
        assert_eq!(heads, [0, 3, 6, 9, 12], "queue {q}'s used ring");
    }

    /// Give every sector of the disk file its own byte (`sector_byte`).
    fn number_sectors(&self) {
        let data: Vec<u8> = (0..DISK_BYTES / 512)
            .flat_map(|s| [sector_byte(s as u64); 512])
            .collect();
        std::fs::write(self._dir.path().join("disk.raw"), data).unwrap();
    }
}

fn sector_byte(sector: u64) -> u8 {
    (sector % 251) as u8
}

/// The names of this process's threads that start with `prefix`, sorted,
/// once they are `want` and every thread this one started has named itself
/// (a new thread carries its parent's name until it first runs, and a
/// joined one may linger in /proc a moment); at most 5 s, then whatever
/// they are. The test thread's own name must be unique among the tests.
fn settled_threads(prefix: &str, want: &[&str]) -> Vec<String> {
    let me = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let names = threads(prefix);
        if (names == want && threads(&me).len() <= 1) || Instant::now() >= deadline {
            return names;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The names of this process's threads that start with `prefix`, sorted.
fn threads(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|n| n.starts_with(prefix.trim_end()))
        .map(|n| n.trim_end().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn a_four_queue_disk_serves_queues_0_and_3_at_once_each_on_its_own_ring() {
    let mut d = Driver::multi("mq4", 4);
    d.number_sectors();
    d.w(REG_DEVICE_FEATURES_SEL, 0);
    assert_ne!(u64::from(d.r(REG_DEVICE_FEATURES)) & F_MQ, 0, "MQ offered");
    let mut n = [0u8; 2];
    d.t.read(REG_CONFIG + 34, &mut n);
    assert_eq!(u16::from_le_bytes(n), 4, "config num_queues");
    for q in 0..4 {
        d.w(REG_QUEUE_SEL, q);
        assert_eq!(d.r(REG_QUEUE_NUM_MAX), 256, "queue {q}");
    }
    d.w(REG_QUEUE_SEL, 4);
    assert_eq!(d.r(REG_QUEUE_NUM_MAX), 0, "no fifth queue");

    // Queues 1 and 2 are left alone: the device still starts.
    d.setup_queues(F_MQ | F_RING_EVENT_IDX, &[0, 3]);
    assert_eq!(d.r(REG_STATUS) & STATUS_NEEDS_RESET, 0);
    let want = ["blk-mq4-q0", "blk-mq4-q3"];
    assert_eq!(settled_threads("blk-mq4-", &want), want);
    // Both queues have requests in flight at once.
    d.reads_on(0, 10);
    d.reads_on(3, 100);
    assert_eq!(d.wait_on(0, MQ_REQUESTS), Outcome::Answered);
    assert_eq!(d.wait_on(3, MQ_REQUESTS), Outcome::Answered);
    d.reads_done_on(0, Some(10));
    d.reads_done_on(3, Some(100));
    d.w(REG_STATUS, 0);
    assert_eq!(
        settled_threads("blk-mq4-", &[]),
        [""; 0],
        "reset joins every queue thread"
    );
}

#[test]
fn without_mq_queue_0_alone_is_required_and_served() {
    let mut d = Driver::multi("nomq", 4);
    d.number_sectors();
    d.setup_queues(F_RING_EVENT_IDX, &[0]);
    assert_eq!(d.r(REG_STATUS) & STATUS_NEEDS_RESET, 0);
    assert_eq!(
        settled_threads("blk-nomq-", &["blk-nomq-q0"]),
        ["blk-nomq-q0"]
    );
    d.reads_on(0, 7);
    assert_eq!(d.wait_on(0, MQ_REQUESTS), Outcome::Answered);
    d.reads_done_on(0, Some(7));
    // Another queue readied without MQ negotiated is not served.
    d.setup_queues(F_RING_EVENT_IDX, &[0, 2]);
    assert_eq!(
        settled_threads("blk-nomq-", &["blk-nomq-q0"]),
        ["blk-nomq-q0"]
    );
    // Queue 0 is required, with or without MQ.
    d.setup_queues(F_MQ, &[1]);
    assert_ne!(d.r(REG_STATUS) & STATUS_NEEDS_RESET, 0);
    assert_eq!(settled_threads("blk-nomq-", &[]), [""; 0]);
    // MQ negotiated, queue 0 alone used: fine too.
    d.setup_queues(F_MQ, &[0]);
    d.reads_on(0, 20);
    assert_eq!(d.wait_on(0, MQ_REQUESTS), Outcome::Answered);
    d.reads_done_on(0, Some(20));
    assert_eq!(
        settled_threads("blk-nomq-", &["blk-nomq-q0"]),
        ["blk-nomq-q0"]
    );
}

#[test]
fn a_backing_swap_waits_for_every_queue_thread() {
    let mut d = Driver::multi("mqswap", 2);
    d.number_sectors();
    d.setup_queues(F_MQ, &[0, 1]);
    d.reads_on(0, 0);
    d.reads_on(1, 50);
    assert_eq!(d.wait_on(0, MQ_REQUESTS), Outcome::Answered);
    assert_eq!(d.wait_on(1, MQ_REQUESTS), Outcome::Answered);
    d.reads_done_on(1, Some(50));
    // Both threads hold the old file: the swap must wake and wait for
    // each (an error after 5 s if one kept it).
    d.t.swap_backing(None).unwrap();
    let file = d._dir.path().join("disk.raw");
    d.t.swap_backing(Some(&file)).unwrap();
    let mut cap = [0u8; 8];
    d.t.read(REG_CONFIG, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), (DISK_BYTES / 512) as u64);
}

#[test]
fn num_queues_out_of_range_is_refused() {
    for n in [0, 17, u32::MAX] {
        let cfg: DiskConfig = serde_json::from_value(serde_json::json!({"num_queues": n})).unwrap();
        assert!(
            matches!(Blk::new(&cfg, 0), Err(VirtioError::QueueCount(got)) if got == n),
            "{n}"
        );
    }
}

proptest! {
    #![proptest_config(cases(200))]

    /// Random chains on queue 1 (inside its own memory) while queue 0
    /// serves good reads: queue 0's reads complete, or the device as a
    /// whole asks for a reset; nothing hangs, and it recovers.
    #[test]
    fn a_hostile_queue_cannot_hang_the_others(
        descs in prop::collection::vec(any_desc_in(ring(1).hdr, ring(1).data + 0x4000), 16),
        heads in prop::collection::vec(0u16..20, 0..16),
        extra_idx in prop_oneof![Just(0u16), 0u16..40, any::<u16>()],
        kinds in prop::collection::vec(prop_oneof![Just(T_IN), Just(T_OUT), Just(4u32), Just(8), any::<u32>()], 16),
        sectors in prop::collection::vec(prop_oneof![0u64..2048, any::<u64>()], 16),
    ) {
        let mut d = Driver::multi("mqh", 2);
        d.setup_queues(F_MQ | F_RING_INDIRECT_DESC, &[0, 1]);
        let r = ring(1);
        for (i, (addr, len, flags, next)) in descs.iter().enumerate() {
            d.desc(r.desc, i as u16, *addr, *len, *flags, *next);
        }
        for (i, (k, s)) in kinds.iter().zip(&sectors).enumerate() {
            let h = r.hdr + i as u64 * 16;
            d.mem.write_obj(*k, GuestAddress(h)).unwrap();
            d.mem.write_obj(*s, GuestAddress(h + 8)).unwrap();
        }
        for (i, h) in heads.iter().enumerate() {
            d.mem.write_obj(*h, GuestAddress(r.avail + 4 + i as u64 * 2)).unwrap();
        }
        let n = if extra_idx > 40 { extra_idx } else { heads.len() as u16 };
        d.mem.write_obj(n, GuestAddress(r.avail + 2)).unwrap();
        d.t.notifiers()[1].write(1).unwrap();
        d.reads_on(0, 0);
        // (Queue 1 may write any sector: the data is not checked here.)
        if d.wait_on(0, MQ_REQUESTS) == Outcome::Answered {
            d.reads_done_on(0, None);
        }
        if n > 16 {
            d.wait_broken();
        } else {
            d.wait_on(1, n);
        }
        d.recovers();
    }
}
