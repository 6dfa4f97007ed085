//! The pure parts of `kiln.mode=blk-bench`: its arguments, the random
//! offsets, how in-flight requests spread over the device's queues, and a
//! log-linear latency histogram with percentiles (no allocation: fixed
//! arrays).

use crate::cmdline;
use crate::virtio_blk::MAX_QUEUES;

/// Access pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rw {
    RandRead,
    RandWrite,
    Read,
    Write,
}

impl Rw {
    pub fn name(self) -> &'static [u8] {
        match self {
            Rw::RandRead => b"randread",
            Rw::RandWrite => b"randwrite",
            Rw::Read => b"read",
            Rw::Write => b"write",
        }
    }
    pub fn writes(self) -> bool {
        matches!(self, Rw::RandWrite | Rw::Write)
    }
    pub fn random(self) -> bool {
        matches!(self, Rw::RandRead | Rw::RandWrite)
    }
}

/// `rw=… bs=… qd=… seconds=… [spin_us=…] [queues=…]` with fio-like defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchArgs {
    pub rw: Rw,
    pub bs: u64,
    pub qd: u64,
    pub seconds: u64,
    /// How long to poll the used ring without progress before sleeping
    /// until the device interrupts; None polls all the time.
    pub spin_us: Option<u64>,
    /// Device queues the requests are spread over (1 to `MAX_QUEUES`).
    pub queues: u64,
}

/// Parse the arguments; the error names the bad one.
pub fn parse_args(cmdline: &[u8]) -> Result<BenchArgs, &'static [u8]> {
    let rw = match cmdline::value(cmdline, b"rw").unwrap_or(b"randread") {
        b"randread" => Rw::RandRead,
        b"randwrite" => Rw::RandWrite,
        b"read" => Rw::Read,
        b"write" => Rw::Write,
        _ => return Err(b"rw must be randread, randwrite, read or write"),
    };
    let num = |key: &[u8], default: u64| -> Option<u64> {
        match cmdline::value(cmdline, key) {
            Some(v) => cmdline::parse_mem(v),
            None => Some(default),
        }
    };
    let bs = num(b"bs", 4096).ok_or(b"bad bs".as_slice())?;
    let qd = num(b"qd", 1).ok_or(b"bad qd".as_slice())?;
    let seconds = num(b"seconds", 5).ok_or(b"bad seconds".as_slice())?;
    let queues = num(b"queues", 1).ok_or(b"bad queues".as_slice())?;
    if queues == 0 || queues > MAX_QUEUES as u64 {
        return Err(b"queues must be 1 to 4");
    }
    if bs == 0 || bs % 512 != 0 || bs > 1 << 20 {
        return Err(b"bs must be a multiple of 512 up to 1M");
    }
    if qd == 0 {
        return Err(b"qd must be at least 1");
    }
    let spin_us = match cmdline::value(cmdline, b"spin_us") {
        Some(v) => Some(cmdline::parse_u64(v).ok_or(b"bad spin_us".as_slice())?),
        None => None,
    };
    Ok(BenchArgs {
        rw,
        bs,
        qd,
        seconds,
        spin_us,
        queues,
    })
}

/// Round-robin of in-flight requests over `n` queues at depth `qd`: each
/// queue holds at most its share of `qd` (`cap`), a new request goes to the
/// next queue in turn that has room, and the request that is number `i` in
/// flight on queue `q` uses buffer `i * n + q` (always below `qd`).
#[derive(Debug)]
pub struct Spread {
    n: usize,
    qd: usize,
    next: usize,
    in_flight: [usize; MAX_QUEUES],
}

impl Spread {
    /// `n` is clamped to 1..=`MAX_QUEUES`, `qd` to at least `n`.
    pub fn new(n: usize, qd: usize) -> Self {
        let n = n.clamp(1, MAX_QUEUES);
        Spread {
            n,
            qd: qd.max(n),
            next: 0,
            in_flight: [0; MAX_QUEUES],
        }
    }

    /// The most requests queue `q` holds at once.
    pub fn cap(&self, q: usize) -> usize {
        self.qd / self.n + usize::from(q < self.qd % self.n)
    }

    /// The queue the next request goes to (and count it), if one has room.
    pub fn take(&mut self) -> Option<usize> {
        for _ in 0..self.n {
            let q = self.next;
            self.next = (q + 1) % self.n;
            if self.in_flight[q] < self.cap(q) {
                self.in_flight[q] += 1;
                return Some(q);
            }
        }
        None
    }

    /// A request on queue `q` completed.
    pub fn done(&mut self, q: usize) {
        if let Some(c) = self.in_flight.get_mut(q) {
            *c = c.saturating_sub(1);
        }
    }

    /// The buffer of the request in per-queue slot `i` of queue `q`
    /// (`i` below `cap(q)`: the driver hands out the lowest free slot).
    pub fn buffer(&self, q: usize, i: usize) -> usize {
        i * self.n + q
    }
}

/// xorshift64*: cheap, good enough to spread offsets.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform-ish in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Sub-buckets per power of two (≈3 % resolution).
const SUB: usize = 32;
const BUCKETS: usize = 64 * SUB;

/// Latency histogram over u64 values (nanoseconds, ticks…).
pub struct Histogram {
    counts: [u32; BUCKETS],
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub const fn new() -> Self {
        Histogram {
            counts: [0; BUCKETS],
            total: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < SUB as u64 {
            return v as usize;
        }
        let log = 63 - v.leading_zeros() as usize; // >= 5
        let shift = log - 5;
        let sub = ((v >> shift) as usize) & (SUB - 1);
        (shift + 1) * SUB + sub
    }

    /// The smallest value of bucket `i` (inverse of `index`).
    fn value(i: usize) -> u64 {
        if i < SUB {
            return i as u64;
        }
        let shift = i / SUB - 1;
        ((SUB + i % SUB) as u64) << shift
    }

    pub fn add(&mut self, v: u64) {
        if let Some(c) = self.counts.get_mut(Self::index(v)) {
            *c = c.saturating_add(1);
        }
        self.total += 1;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `per_mille`/1000 (0 when empty).
    pub fn quantile(&self, per_mille: u64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = (self.total * per_mille).div_ceil(1000).max(1);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return Self::value(i);
            }
        }
        Self::value(BUCKETS - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_parse_with_defaults_and_errors() {
        let a = parse_args(b"kiln.mode=blk-bench rw=randwrite bs=4K qd=32 seconds=3").unwrap();
        assert_eq!(
            a,
            BenchArgs {
                rw: Rw::RandWrite,
                bs: 4096,
                qd: 32,
                seconds: 3,
                spin_us: None,
                queues: 1,
            }
        );
        assert_eq!(parse_args(b"queues=4").unwrap().queues, 4);
        assert!(parse_args(b"queues=0").is_err());
        assert!(parse_args(b"queues=5").is_err());
        assert!(parse_args(b"queues=x").is_err());
        assert_eq!(parse_args(b"spin_us=20").unwrap().spin_us, Some(20));
        assert!(parse_args(b"spin_us=x").is_err());
        let d = parse_args(b"").unwrap();
        assert_eq!((d.rw, d.bs, d.qd, d.seconds), (Rw::RandRead, 4096, 1, 5));
        assert!(parse_args(b"rw=trim").is_err());
        assert!(parse_args(b"bs=100").is_err());
        assert!(parse_args(b"qd=0").is_err());
    }

    #[test]
    fn quantiles_are_within_bucket_resolution() {
        let mut h = Histogram::new();
        for v in 1..=10_000u64 {
            h.add(v * 1000);
        }
        let p50 = h.quantile(500) as f64;
        let p99 = h.quantile(990) as f64;
        assert!((p50 / 5_000_000.0 - 1.0).abs() < 0.04, "{p50}");
        assert!((p99 / 9_900_000.0 - 1.0).abs() < 0.04, "{p99}");
        assert_eq!(Histogram::new().quantile(500), 0);
        for v in [0u64, 1, 31, 32, 33, 1 << 40, u64::MAX] {
            let i = Histogram::index(v);
            assert!(Histogram::value(i) <= v, "{v}");
        }
    }

    #[test]
    fn requests_spread_round_robin_within_each_queues_share() {
        // 32 deep over 2 queues: alternating, 16 each, then full.
        let mut s = Spread::new(2, 32);
        let taken: Vec<usize> = core::iter::from_fn(|| s.take()).collect();
        assert_eq!(taken.len(), 32);
        assert!(taken.iter().enumerate().all(|(k, q)| *q == k % 2));
        // A completion on queue 1 makes room there only.
        s.done(1);
        assert_eq!((s.take(), s.take()), (Some(1), None));
        // Uneven: 5 over 3 queues → shares 2, 2, 1; buffers stay below qd.
        let s = Spread::new(3, 5);
        assert_eq!((s.cap(0), s.cap(1), s.cap(2)), (2, 2, 1));
        for q in 0..3 {
            for i in 0..s.cap(q) {
                assert!(s.buffer(q, i) < 5, "q{q} i{i}");
            }
        }
        // One queue: exactly the old lowest-free-slot numbering.
        let s = Spread::new(1, 8);
        assert_eq!(s.cap(0), 8);
        assert_eq!(s.buffer(0, 7), 7);
    }

    #[test]
    fn random_offsets_stay_in_range() {
        let mut r = Rng::new(7);
        assert!((0..10_000).all(|_| r.below(1000) < 1000));
    }
}
