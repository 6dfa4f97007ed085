//! The block jobs of the firmware (`kiln.mode=blk-check`, `blk-write-hold`,
//! `blk-watch`, `blk-bench`) and the checks `serve` runs on a hot-attached
//! disk, over the polling driver `kiln_firmware::virtio_blk` and one static
//! data buffer.

use kiln_firmware::bench::{self, Histogram, Rng, Spread};
use kiln_firmware::cmdline;
use kiln_firmware::line::Line;
use kiln_firmware::virtio_blk::{self, Blk};

use super::{fixed, idle_until_ctrl_alt_del, irq, rdtsc, say, tsc_hz, write_com1, Waker};

/// Data buffer of the block jobs (identity-mapped, so its address is the
/// guest-physical one the device sees).
#[repr(C, align(4096))]
struct DataBuf([u8; DATA_BUF]);
const DATA_BUF: usize = 4 << 20;
static mut DATA: DataBuf = DataBuf([0; DATA_BUF]);

/// Bytes per request of blk-check.
const CHECK_CHUNK: usize = 64 * 1024;

/// The first virtio-blk device among the command line's virtio-mmio slots
/// (empty slots and other device types are skipped), set up with one queue.
fn open_blk(cmdline: &[u8]) -> Option<Blk> {
    open_blk_queues(cmdline, 1)
}

/// As `open_blk`, driving up to `queues` of the device's queues.
fn open_blk_queues(cmdline: &[u8], queues: usize) -> Option<Blk> {
    for dev in cmdline::virtio_mmio_devices(cmdline) {
        // SAFETY: the slot is an MMIO window in the identity map, and this is
        // the only driver instance (a failed init leaves nothing behind).
        match unsafe { Blk::init_queues(dev.addr as usize, 0, queues) } {
            Ok(b) => {
                let mut l = Line::new();
                l.bytes(b"blk: ").dec(b.sectors).bytes(b" sectors");
                if b.read_only {
                    l.bytes(b", read-only");
                }
                l.bytes(b"\n");
                write_com1(l.as_bytes());
                return Some(b);
            }
            Err(virtio_blk::InitError::WrongType) => continue,
            Err(e) => {
                say(&[b"blk: cannot set up the device: ", e.text()]);
                return None;
            }
        }
    }
    say(&[b"blk: no virtio-blk device among the virtio-mmio slots"]);
    None
}

fn status_line(what: &[u8], status: u8, sector: u64) {
    let mut l = Line::new();
    l.bytes(b"blk-check: ")
        .bytes(what)
        .bytes(b" failed: status ")
        .dec(u64::from(status))
        .bytes(match status {
            virtio_blk::S_IOERR => b" (IOERR)",
            2 => b" (UNSUPP)",
            _ => b"",
        })
        .bytes(b" at sector ")
        .dec(sector)
        .bytes(b"\n");
    write_com1(l.as_bytes());
}

/// `kiln.mode=blk-check [bytes=N]`: write the pattern over the first N bytes
/// (default 1 MiB, at most the disk), flush, read back and verify. With
/// `hold`, stop after the flush, print `blk-flushed <bytes>` and idle until
/// Ctrl-Alt-Del (the crash test kills the VMM meanwhile).
pub fn blk_check(cmdline: &[u8], hold: bool) {
    let Some(mut blk) = open_blk(cmdline) else {
        return;
    };
    let mut id = [0u8; 20];
    // SAFETY: `id` lives until the request completes (run waits).
    let st = unsafe { blk.run(virtio_blk::T_GET_ID, 0, id.as_mut_ptr(), 20) };
    if st == virtio_blk::S_OK {
        let n = id.iter().position(|b| *b == 0).unwrap_or(20);
        say(&[b"blk: id ", &id[..n]]);
    }
    let want = cmdline::value(cmdline, b"bytes")
        .and_then(cmdline::parse_mem)
        .unwrap_or(1 << 20);
    let bytes = want.min(blk.sectors * 512) & !511;
    if !check_write(&mut blk, 0, bytes) {
        return;
    }
    if hold {
        let mut l = Line::new();
        l.bytes(b"blk-flushed ").dec(bytes).bytes(b"\n");
        write_com1(l.as_bytes());
        // Its first keyboard look also makes the VMM write out the console line.
        idle_until_ctrl_alt_del(cmdline);
        return;
    }
    check_read(&mut blk, 0, bytes);
}

/// Write the blk-check pattern over `bytes` bytes from byte `start` (both
/// multiples of 512) and flush; false (said on the console) on an error.
pub fn check_write(blk: &mut Blk, start: u64, bytes: u64) -> bool {
    // SAFETY: DATA is only used by one job at a time, single-threaded.
    let buf = unsafe { &mut *core::ptr::addr_of_mut!(DATA.0) };
    let chunk = &mut buf[..CHECK_CHUNK];
    let mut off = start;
    while off < start + bytes {
        let n = (start + bytes - off).min(CHECK_CHUNK as u64) as usize;
        virtio_blk::fill_pattern(&mut chunk[..n], off);
        // SAFETY: the chunk stays untouched until `run` returns.
        let st = unsafe { blk.run(virtio_blk::T_OUT, off / 512, chunk.as_mut_ptr(), n as u32) };
        if st != virtio_blk::S_OK {
            status_line(b"write", st, off / 512);
            return false;
        }
        off += n as u64;
    }
    // SAFETY: a flush carries no data.
    let st = unsafe { blk.run(virtio_blk::T_FLUSH, 0, core::ptr::null_mut(), 0) };
    if st != virtio_blk::S_OK {
        status_line(b"flush", st, 0);
        return false;
    }
    true
}

/// Read `bytes` bytes from byte `start` back and compare them with the
/// pattern; prints `blk-check ok <bytes>` or the first mismatch.
pub fn check_read(blk: &mut Blk, start: u64, bytes: u64) -> bool {
    // SAFETY: DATA is only used by one job at a time, single-threaded.
    let buf = unsafe { &mut *core::ptr::addr_of_mut!(DATA.0) };
    let chunk = &mut buf[..CHECK_CHUNK];
    let mut off = start;
    while off < start + bytes {
        let n = (start + bytes - off).min(CHECK_CHUNK as u64) as usize;
        chunk[..n].fill(0);
        // SAFETY: as above.
        let st = unsafe { blk.run(virtio_blk::T_IN, off / 512, chunk.as_mut_ptr(), n as u32) };
        if st != virtio_blk::S_OK {
            status_line(b"read", st, off / 512);
            return false;
        }
        if let Some((at, got, wanted)) = virtio_blk::check_pattern(&chunk[..n], off) {
            let mut l = Line::new();
            l.bytes(b"blk-check mismatch at byte ")
                .dec(off + at)
                .bytes(b": got ")
                .hex(got)
                .bytes(b" want ")
                .hex(wanted)
                .bytes(b"\n");
            write_com1(l.as_bytes());
            return false;
        }
        off += n as u64;
    }
    let mut l = Line::new();
    l.bytes(b"blk-check ok ").dec(bytes).bytes(b"\n");
    write_com1(l.as_bytes());
    true
}

/// Where [`check_preserving`] keeps the bytes it overwrites: past the chunk
/// the checks use, inside the same static buffer.
const SAVE_AT: usize = CHECK_CHUNK;

/// Copy `bytes` bytes between the disk (from byte `start`) and the save area,
/// in `CHECK_CHUNK` requests; `kind` is `T_IN` (save) or `T_OUT` (restore).
fn save_area_io(blk: &mut Blk, kind: u32, start: u64, bytes: u64) -> bool {
    // SAFETY: DATA is only used by one job at a time, single-threaded.
    let buf = unsafe { &mut *core::ptr::addr_of_mut!(DATA.0) };
    let mut off = 0u64;
    while off < bytes {
        let n = (bytes - off).min(CHECK_CHUNK as u64) as usize;
        let at = SAVE_AT + off as usize;
        // SAFETY: the slice stays untouched until `run` returns.
        let st = unsafe {
            blk.run(
                kind,
                (start + off) / 512,
                buf[at..at + n].as_mut_ptr(),
                n as u32,
            )
        };
        if st != virtio_blk::S_OK {
            status_line(
                if kind == virtio_blk::T_IN {
                    b"save"
                } else {
                    b"restore"
                },
                st,
                (start + off) / 512,
            );
            return false;
        }
        off += n as u64;
    }
    true
}

/// The check `serve` runs on a hot-attached read-write disk, without losing
/// the user's data: the region is read aside first, then pattern-written,
/// flushed, verified, and written back (and flushed) whatever the outcome.
/// `bytes` must fit the save area (at most 1 MiB here).
pub fn check_preserving(blk: &mut Blk, start: u64, bytes: u64) {
    let bytes = bytes.min((DATA_BUF - SAVE_AT) as u64);
    if !save_area_io(blk, virtio_blk::T_IN, start, bytes) {
        return;
    }
    if check_write(blk, start, bytes) {
        check_read(blk, start, bytes);
    }
    if save_area_io(blk, virtio_blk::T_OUT, start, bytes) {
        // SAFETY: a flush carries no data.
        let st = unsafe { blk.run(virtio_blk::T_FLUSH, 0, core::ptr::null_mut(), 0) };
        if st != virtio_blk::S_OK {
            status_line(b"flush", st, 0);
        }
    }
}

/// Read `bytes` bytes from byte `start` (a read-only disk's check);
/// prints `blk-check readable <bytes>` or the failed request.
pub fn check_readable(blk: &mut Blk, start: u64, bytes: u64) {
    // SAFETY: DATA is only used by one job at a time, single-threaded.
    let buf = unsafe { &mut *core::ptr::addr_of_mut!(DATA.0) };
    let mut off = start;
    while off < start + bytes {
        let n = (start + bytes - off).min(CHECK_CHUNK as u64) as u32;
        // SAFETY: the buffer stays untouched until `run` returns.
        let st = unsafe { blk.run(virtio_blk::T_IN, off / 512, buf.as_mut_ptr(), n) };
        if st != virtio_blk::S_OK {
            return status_line(b"read", st, off / 512);
        }
        off += u64::from(n);
    }
    let mut l = Line::new();
    l.bytes(b"blk-check readable ").dec(bytes).bytes(b"\n");
    write_com1(l.as_bytes());
}

/// Print the capacity and the first word of sector 0.
fn blk_report(blk: &mut Blk, what: &[u8]) -> bool {
    // SAFETY: DATA is only used by this single-threaded job.
    let buf = unsafe { &mut *core::ptr::addr_of_mut!(DATA.0) };
    // SAFETY: the buffer stays untouched until `run` returns.
    let st = unsafe { blk.run(virtio_blk::T_IN, 0, buf.as_mut_ptr(), 512) };
    if st != virtio_blk::S_OK {
        status_line(b"read", st, 0);
        return false;
    }
    let mut w = [0u8; 8];
    w.copy_from_slice(&buf[..8]);
    let mut l = Line::new();
    l.bytes(b"blk-watch: ")
        .bytes(what)
        .bytes(b" sectors ")
        .dec(blk.sectors)
        .bytes(b" word0 ")
        .hex(u64::from_le_bytes(w))
        .bytes(b"\n");
    write_com1(l.as_bytes());
    true
}

/// `kiln.mode=blk-watch`: report the disk, wait for its configuration to
/// change (a backing-file swap), report it again, power off.
pub fn blk_watch(cmdline: &[u8]) {
    let Some(mut blk) = open_blk(cmdline) else {
        return;
    };
    let generation = blk.read_config();
    if !blk_report(&mut blk, b"before") {
        return;
    }
    irq::init(cmdline);
    let mut waker = Waker::new();
    // The config-change interrupt wakes the sleep; the generation is read
    // (an exit) only then and on the safety-net ticks.
    while !waker.keyboard_due() || blk.config_generation() == generation {
        waker.sleep();
    }
    blk.read_config();
    blk_report(&mut blk, b"after");
}

/// `kiln.mode=blk-bench rw=randread|randwrite|read|write bs=… qd=… seconds=…
/// [queues=N]`: a fio-like engine on the first disk; one line with IOPS,
/// MiB/s and completion-latency p50/p99. With `queues=N` (and a device
/// offering that many) the in-flight requests are spread round-robin over
/// N queues and the line ends in ` queues=N queue_ios=a/b/…` (completions
/// each queue's used ring returned).
pub fn blk_bench(cmdline: &[u8]) {
    let args = match bench::parse_args(cmdline) {
        Ok(a) => a,
        Err(e) => return say(&[b"blk-bench: ", e]),
    };
    let Some(mut blk) = open_blk_queues(cmdline, args.queues as usize) else {
        return;
    };
    if args.rw.writes() && blk.read_only {
        return say(&[b"blk-bench: the disk is read-only"]);
    }
    let Some(hz) = tsc_hz(cmdline) else {
        return say(&[b"blk-bench: no PIT to calibrate the TSC against (pass tsc_khz=)"]);
    };
    let bs = args.bs;
    let nq = blk.queues();
    let qd = args
        .qd
        .min((virtio_blk::SLOTS * nq) as u64)
        .min(DATA_BUF as u64 / bs);
    let mut spread = Spread::new(nq, qd as usize);
    let blocks = blk.sectors * 512 / bs;
    if blocks == 0 {
        return say(&[b"blk-bench: the disk is smaller than one block"]);
    }
    let kind = if args.rw.writes() {
        virtio_blk::T_OUT
    } else {
        virtio_blk::T_IN
    };
    // SAFETY: DATA is only used by this single-threaded job.
    let base = unsafe { core::ptr::addr_of_mut!(DATA.0) }.cast::<u8>();
    let mut rng = Rng::new(rdtsc());
    let mut hist = Histogram::new();
    let mut started = [0u64; virtio_blk::SLOTS * virtio_blk::MAX_QUEUES];
    // Completions per queue: each came back on that queue's used ring.
    let mut queue_ios = [0u64; virtio_blk::MAX_QUEUES];
    let (mut in_flight, mut ios, mut errors, mut next_block) = (0u64, 0u64, 0u64, 0u64);
    let t0 = rdtsc();
    let end = t0 + args.seconds * hz;
    let mut now = t0;
    let spin_ticks = match args.spin_us {
        Some(us) => {
            irq::init(cmdline);
            us.saturating_mul(hz) / 1_000_000
        }
        None => u64::MAX,
    };
    let (mut idle_since, mut sleeps) = (t0, 0u64);
    loop {
        let mut queued = false;
        while in_flight < qd && now < end {
            let Some(q) = spread.take() else { break };
            let Some(slot) = blk.free_slot_on(q) else {
                spread.done(q);
                break;
            };
            let buffer = spread.buffer(q, slot % virtio_blk::SLOTS);
            let block = if args.rw.random() {
                rng.below(blocks)
            } else {
                let b = next_block;
                next_block = (next_block + 1) % blocks;
                b
            };
            // SAFETY: buffer < qd (the queue's lowest free slot is below
            // its share of qd: `Spread`), so buffer*bs..+bs is inside DATA
            // and used by this request only.
            unsafe {
                blk.queue(
                    slot,
                    kind,
                    block * bs / 512,
                    base.add(buffer * bs as usize),
                    bs as u32,
                )
            };
            started[slot] = now;
            in_flight += 1;
            queued = true;
        }
        if queued {
            blk.kick();
        }
        now = rdtsc();
        let mut done = 0u64;
        while let Some((slot, status)) = blk.poll() {
            hist.add(now.saturating_sub(started[slot]));
            let q = slot / virtio_blk::SLOTS;
            spread.done(q);
            queue_ios[q] += 1;
            done += 1;
            if status != virtio_blk::S_OK {
                errors += 1;
            }
        }
        if done > 0 {
            idle_since = now;
        } else if in_flight > 0 && now.saturating_sub(idle_since) > spin_ticks {
            // Nothing for a while: sleep until the device interrupts (or
            // the next tick), giving the host CPU back to the VMM's queue
            // thread and the host's block layer. Asking first and looking
            // once more means no completion waits for the tick.
            blk.set_interrupts(true);
            if blk.peek_used() {
                blk.set_interrupts(false);
                continue;
            }
            irq::sleep();
            blk.set_interrupts(false);
            sleeps += 1;
            now = rdtsc();
            idle_since = now;
        }
        in_flight -= done;
        ios += done;
        if now >= end && in_flight == 0 {
            break;
        }
    }
    let elapsed = now.saturating_sub(t0).max(1);
    let mut l = Line::new();
    l.bytes(b"blk-bench rw=")
        .bytes(args.rw.name())
        .bytes(b" bs=")
        .dec(bs)
        .bytes(b" qd=")
        .dec(qd)
        .bytes(b" ios=")
        .dec(ios)
        .bytes(b" iops=")
        .dec((u128::from(ios) * u128::from(hz) / u128::from(elapsed)) as u64)
        .bytes(b" mibps=");
    fixed(
        &mut l,
        ((u128::from(ios * bs) * u128::from(hz) * 100 / u128::from(elapsed)) >> 20) as u64,
        2,
    );
    let us10 = |ticks: u64| (u128::from(ticks) * 10_000_000 / u128::from(hz)) as u64;
    l.bytes(b" p50_us=");
    fixed(&mut l, us10(hist.quantile(500)), 1);
    l.bytes(b" p99_us=");
    fixed(&mut l, us10(hist.quantile(990)), 1);
    l.bytes(b" errors=").dec(errors);
    l.bytes(b" sleeps=").dec(sleeps);
    if nq > 1 {
        l.bytes(b" queues=").dec(nq as u64).bytes(b" queue_ios=");
        for (q, n) in queue_ios[..nq].iter().enumerate() {
            if q > 0 {
                l.bytes(b"/");
            }
            l.dec(*n);
        }
    }
    l.bytes(b"\n");
    write_com1(l.as_bytes());
}
