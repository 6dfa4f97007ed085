//! virtio-blk end to end on the real /dev/kvm: the firmware's blk-check on a
//! raw file (buffered and O_DIRECT), a read-only disk refusing writes, data
//! covered by an acknowledged FLUSH surviving `kill -9` of the VMM, and a
//! backing-file swap seen by the running guest; blk-bench on one queue and
//! spread over two.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use support::{ask, finish, kvm_available, wait_socket, Guest, Vmm};

/// Offset of the first byte of `file` (from 0) that differs from the
/// firmware's pattern, over `len` bytes.
fn pattern_mismatch(file: &[u8], len: usize) -> Option<usize> {
    (0..len / 8).map(|i| i * 8).find(|&o| {
        let want = kiln_firmware::virtio_blk::pattern(o as u64).to_le_bytes();
        file[o..o + 8] != want
    })
}

#[test]
fn blk_check_passes_on_a_raw_file_buffered_and_with_o_direct() {
    if !kvm_available() {
        return;
    }
    for direct in [false, true] {
        let g = Guest::new();
        let disk = g.disk("disk.raw", 8 << 20, 0);
        let child = g.spawn(
            "kiln.mode=blk-check bytes=4M",
            // The O_DIRECT run also exercises the queue thread's poll mode.
            json!([{"path": disk, "id": "data-disk", "direct": direct, "poll_us": if direct { 200 } else { 0 }}]),
        );
        let out = finish(child);
        let console = g.console();
        assert!(out.status.success(), "direct={direct}: {out:?}\n{console}");
        assert!(console.contains("blk: 16384 sectors\n"), "{console}");
        assert!(console.contains("blk: id data-disk\n"), "{console}");
        assert!(
            console.contains("blk-check ok 4194304\n"),
            "direct={direct}: {console}"
        );
        let data = std::fs::read(&disk).unwrap();
        assert_eq!(data.len(), 8 << 20, "the file keeps its size");
        assert_eq!(
            pattern_mismatch(&data, 4 << 20),
            None,
            "the host sees the guest's data"
        );
        assert!(
            data[4 << 20..].iter().all(|b| *b == 0),
            "nothing past the range written"
        );
    }
}

#[test]
fn a_read_only_disk_refuses_writes() {
    if !kvm_available() {
        return;
    }
    let g = Guest::new();
    let disk = g.disk("ro.raw", 1 << 20, 0x5a);
    let out = finish(g.spawn(
        "kiln.mode=blk-check",
        json!([{"path": disk, "read_only": true}]),
    ));
    let console = g.console();
    assert!(out.status.success(), "{out:?}");
    assert!(
        console.contains("blk: 2048 sectors, read-only\n"),
        "{console}"
    );
    assert!(console.contains("blk: id disk0\n"), "{console}");
    assert!(
        console.contains("blk-check: write failed: status 1 (IOERR) at sector 0\n"),
        "{console}"
    );
    assert!(!console.contains("blk-check ok"), "{console}");
    assert!(std::fs::read(&disk).unwrap().iter().all(|b| *b == 0x5a));
}

#[test]
fn flushed_data_survives_kill_9_of_the_vmm() {
    if !kvm_available() {
        return;
    }
    for direct in [false, true] {
        let g = Guest::new();
        let disk = g.disk("crash.raw", 4 << 20, 0);
        let mut child = g.spawn(
            "kiln.mode=blk-write-hold bytes=3M",
            json!([{"path": disk, "direct": direct}]),
        );
        g.wait_console(&mut child, "blk-flushed 3145728\n");
        child.kill().unwrap(); // SIGKILL: no clean-up runs in the VMM
        child.wait().unwrap();
        let data = std::fs::read(&disk).unwrap();
        assert_eq!(pattern_mismatch(&data, 3 << 20), None, "direct={direct}");
    }
}

#[test]
fn a_swapped_backing_file_is_seen_by_the_guest() {
    if !kvm_available() {
        return;
    }
    let g = Guest::new();
    let first = g.disk("first.raw", 1 << 20, 0x11);
    let second = g.disk("second.raw", 2 << 20, 0x22);
    let mut child = g.spawn("kiln.mode=blk-watch", json!([{"path": first, "id": "vol"}]));
    g.wait_console(
        &mut child,
        "blk-watch: before sectors 2048 word0 0x1111111111111111\n",
    );
    wait_socket(&g.sock());
    let bad = ask(
        &g.sock(),
        json!({"action": "swap-disk", "id": "nope", "path": second}),
    );
    assert_eq!(bad["ok"], false, "{bad}");
    let missing = ask(
        &g.sock(),
        json!({"action": "swap-disk", "id": "vol", "path": g.path("missing.raw")}),
    );
    assert_eq!(missing["ok"], false, "{missing}");
    let ok = ask(
        &g.sock(),
        json!({"action": "swap-disk", "id": "vol", "path": second}),
    );
    assert_eq!(ok["ok"], true, "{ok}");
    g.wait_console(
        &mut child,
        "blk-watch: after sectors 4096 word0 0x2222222222222222\n",
    );
    let out = finish(child);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn blk_bench_runs_and_reports_its_figures() {
    if !kvm_available() {
        return;
    }
    let g = Guest::new();
    let disk = g.disk("bench.raw", 4 << 20, 0x33);
    let out = finish(g.spawn(
        "kiln.mode=blk-bench rw=randwrite bs=4K qd=8 seconds=1",
        json!([{"path": disk}]),
    ));
    let line = bench_line(&g, &out);
    let field = |k: &str| field(&line, k);
    assert!(
        line.starts_with("blk-bench rw=randwrite bs=4096 qd=8 "),
        "{line}"
    );
    assert!(field("ios=") > 0.0, "{line}");
    assert_eq!(field("errors="), 0.0, "{line}");
    assert!(field("p99_us=") >= field("p50_us="), "{line}");
    assert!(!line.contains("queues="), "one queue: today's line: {line}");
    let data = std::fs::read(&disk).unwrap();
    assert!(
        data.iter().any(|b| *b != 0x33),
        "the guest's writes reached the file"
    );
}

/// The console's blk-bench line (the VMM must have exited cleanly).
fn bench_line(g: &Guest, out: &std::process::Output) -> String {
    let console = g.console();
    assert!(out.status.success(), "{out:?}\n{console}");
    console
        .lines()
        .find(|l| l.starts_with("blk-bench "))
        .unwrap_or_else(|| panic!("no blk-bench line:\n{console}"))
        .to_string()
}

/// The number after `key` (e.g. `ios=`) in a blk-bench line.
fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        .parse()
        .unwrap()
}

#[test]
fn blk_bench_spreads_its_requests_over_two_queues() {
    if !kvm_available() {
        return;
    }
    let g = Guest::new();
    let disk = g.disk("mq.raw", 4 << 20, 0x44);
    // Killed on drop if an assertion fails before it exits.
    let mut vmm = Vmm(Some(g.spawn(
        "kiln.mode=blk-bench rw=randread bs=4K qd=8 seconds=1 queues=2",
        json!([{"path": disk, "id": "mq", "num_queues": 2}]),
    )));
    // The bench ends only once every request came back, each on the used
    // ring of the queue it went to; the guest counts them per queue, so
    // each queue's thread must have served some (a thread listing taken
    // while the 1 s bench runs can miss it on a loaded CI machine).
    let line = bench_line(&g, &finish(vmm.0.take().unwrap()));
    assert!(
        line.starts_with("blk-bench rw=randread bs=4096 qd=8 "),
        "{line}"
    );
    assert!(line.contains(" queues=2 "), "{line}");
    let per_queue: Vec<u64> = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("queue_ios="))
        .unwrap_or_else(|| panic!("no queue_ios= in {line}"))
        .split('/')
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(per_queue.len(), 2, "{line}");
    assert!(
        per_queue.iter().all(|&n| n > 0),
        "both queues served: {line}"
    );
    assert_eq!(
        per_queue.iter().sum::<u64>() as f64,
        field(&line, "ios="),
        "{line}"
    );
    assert!(field(&line, "ios=") >= 8.0, "{line}");
    assert_eq!(field(&line, "errors="), 0.0, "{line}");
}
