//! virtio-net end to end on the real /dev/kvm: kiln-vmm runs inside a
//! network namespace this test creates, opens (creates) its TAP there, and
//! the firmware's net-echo answers ping, UDP and TCP SYNs sent from that
//! namespace, and net-bench's UDP arrives there. No traffic leaves the namespace; a Drop guard stops the VMM
//! and deletes the namespace (and with it the TAP) even when the test fails.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use kiln_vmm::config::NicConfig;
use kiln_vmm::devices::virtio::mmio::*;
use kiln_vmm::devices::virtio::net::Net;
use kiln_vmm::devices::virtio::STATUS_NEEDS_RESET;
use serde_json::json;
use support::{ask, finish, firmware, ip_in, kvm_available, wait_socket, Guest, Netns, Vmm, VMM};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

const TAP: &str = "ktap0";
const MAC: &str = "52:54:00:6b:69:01";

/// Start kiln-vmm inside `ns` with one NIC on TAP `TAP` running `cmdline`.
fn spawn_in(ns: &Netns, g: &Guest, cmdline: &str) -> Vmm {
    g.spawn_in(
        ns,
        json!({
            "firmware": {"path": firmware(), "cmdline": cmdline},
            "nics": [{"tap": TAP, "mac": MAC, "id": "eth0"}],
        }),
    )
}

#[test]
fn net_echo_answers_ping_udp_and_tcp_from_a_test_namespace() {
    if !kvm_available() {
        return;
    }
    let Some(ns) = Netns::new("vnet") else {
        return;
    };
    let g = Guest::new();
    let mut vmm = spawn_in(
        &ns,
        &g,
        "kiln.mode=net-echo ip=10.99.0.2/24 gw=10.99.0.1 tcp=22,8080",
    );
    g.wait_console(
        vmm.0.as_mut().unwrap(),
        "net-echo ready 10.99.0.2/24 52:54:00:6b:69:01\n",
    );
    // kiln-vmm created the TAP in the namespace; give the host side an address.
    ns.ip(&["addr", "add", "10.99.0.1/24", "dev", TAP]);
    ns.ip(&["link", "set", TAP, "up"]);

    let ping = Command::new("ip")
        .args(["netns", "exec", &ns.name, "ping", "-c", "3", "-W", "5"])
        .arg("10.99.0.2")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(
        ping.status.success(),
        "ping failed: {ping:?}\n{}",
        g.console()
    );
    assert!(text.contains("3 received"), "{text}");

    let (echo, from) = ns.run(|| {
        let s = UdpSocket::bind("10.99.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 2048];
        let payload: Vec<u8> = (0..1200u32).map(|i| (i * 7) as u8).collect();
        s.send_to(&payload, "10.99.0.2:7777").unwrap();
        let (n, from) = s.recv_from(&mut buf).unwrap();
        (buf[..n] == payload[..], from)
    });
    assert!(echo, "the UDP datagram came back changed");
    assert_eq!(from, "10.99.0.2:7777".parse::<SocketAddr>().unwrap());

    // A listed port completes the handshake (SYN-ACK); another is refused (RST).
    let (open, closed) = ns.run(|| {
        let t = Duration::from_secs(5);
        let open = TcpStream::connect_timeout(&"10.99.0.2:22".parse().unwrap(), t);
        let closed = TcpStream::connect_timeout(&"10.99.0.2:23".parse().unwrap(), t);
        (open.map(|_| ()), closed.map(|_| ()))
    });
    assert!(open.is_ok(), "port 22: {open:?}");
    assert_eq!(
        closed.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );

    wait_socket(&g.sock());
    let answer = ask(&g.sock(), json!({"action": "shutdown"}));
    assert_eq!(answer["ok"], true, "{answer}");
    let out = finish(vmm.0.take().unwrap());
    let console = g.console();
    assert!(out.status.success(), "{out:?}\n{console}");
    assert!(console.contains("net-echo: received "), "{console}");
}

#[test]
fn net_bench_sends_udp_that_arrives_in_the_namespace() {
    if !kvm_available() {
        return;
    }
    let Some(ns) = Netns::new("vnet-bench") else {
        return;
    };
    let g = Guest::new();
    let mut vmm = spawn_in(
        &ns,
        &g,
        "kiln.mode=net-bench ip=10.99.0.2/24 dst=10.99.0.1 port=9999 size=100 seconds=1",
    );
    g.wait_console(vmm.0.as_mut().unwrap(), "net-bench ready 10.99.0.2/24");
    ns.ip(&["addr", "add", "10.99.0.1/24", "dev", TAP]);
    ns.ip(&["link", "set", TAP, "up"]);
    // A sink in the namespace: the first datagram must be the firmware's.
    let got = ns.run(|| {
        let s = UdpSocket::bind("10.99.0.1:9999").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 2048];
        s.recv_from(&mut buf)
            .map(|(n, from)| (buf[..n].to_vec(), from))
    });
    let got = got.unwrap_or_else(|e| {
        let link = Command::new("ip")
            .args(["-n", &ns.name, "-s", "addr", "show", TAP])
            .output()
            .unwrap();
        panic!(
            "nothing arrived ({e}):\n{}\n{}",
            g.console(),
            String::from_utf8_lossy(&link.stdout)
        )
    });
    assert_eq!(got.1, "10.99.0.2:9999".parse::<SocketAddr>().unwrap());
    assert_eq!(got.0.len(), 100);
    assert!(got.0.iter().enumerate().all(|(i, b)| *b == i as u8));
    let out = finish(vmm.0.take().unwrap());
    let console = g.console();
    assert!(out.status.success(), "{out:?}\n{console}");
    let line = console
        .lines()
        .find(|l| l.starts_with("net-bench size=100 "))
        .unwrap_or_else(|| panic!("no result line:\n{console}"));
    let tx: u64 = line
        .split(' ')
        .find_map(|w| w.strip_prefix("tx_frames="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(tx > 0, "{line}");
}

#[test]
fn a_missing_tap_name_or_bad_mac_is_refused_before_boot() {
    let g = Guest::new();
    for (nic, want) in [
        (json!({"tap": "a/b"}), "tap name"),
        (json!({"tap": "t0", "mac": "01:00:5e:00:00:01"}), "mac"),
    ] {
        let c = json!({
            "firmware": {"path": firmware(), "cmdline": "kiln.mode=probe"},
            "nics": [nic],
        });
        let cfg = g.path("bad.json");
        std::fs::write(&cfg, c.to_string()).unwrap();
        let out = Command::new(VMM)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
    }
}

/// Guest memory layout of the hostile-driver test: per queue a descriptor
/// table, avail and used ring; buffers above.
const MEM: u64 = 1 << 20;
/// rx0, tx0, rx1, tx1, ctrl (the single-pair driver readies the first two).
const RING: [(u64, u64, u64); 5] = [
    (0x1000, 0x2000, 0x3000),
    (0x4000, 0x5000, 0x6000),
    (0x7000, 0x8000, 0x9000),
    (0xa000, 0xb000, 0xc000),
    (0xd000, 0xe000, 0xf000),
];
const BUFS: u64 = 0x10000;
const NEXT: u16 = 1;
const WRITE: u16 = 2;
const QSIZE: u16 = 16;

/// The test as the virtio-net driver, through the real transport (no KVM).
struct NetDriver {
    t: MmioTransport,
    mem: GuestMemoryMmap<()>,
    avail: [u16; 5],
    /// Feature bits the driver acks (VERSION_1 and these).
    features: u64,
    /// Queues the driver makes ready (the first of `RING`).
    ready: usize,
    /// Used entries `rx_split` has taken, per queue.
    seen: [u16; 5],
}

impl NetDriver {
    fn new(tap: &str) -> Self {
        Self::with_features(tap, 0)
    }

    fn with_features(tap: &str, features: u64) -> Self {
        Self::with_pairs(tap, features, 1, 2)
    }

    /// A NIC of `pairs` queue pairs whose driver acks `features` and makes
    /// the first `ready` queues of `RING` ready.
    fn with_pairs(tap: &str, features: u64, pairs: u16, ready: usize) -> Self {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
        let cfg = NicConfig {
            tap: tap.into(),
            mac: Some("52:54:00:00:00:02".into()),
            id: None,
            queue_pairs: pairs,
        };
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let t = MmioTransport::new(Box::new(Net::new(&cfg, 0).unwrap()), mem.clone(), irq).unwrap();
        let mut d = NetDriver {
            t,
            mem,
            avail: [0; 5],
            features,
            ready,
            seen: [0; 5],
        };
        d.setup();
        d
    }

    fn w(&mut self, reg: u64, v: u32) {
        self.t.write(reg, &v.to_le_bytes());
    }

    fn r(&self, reg: u64) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(reg, &mut b);
        u32::from_le_bytes(b)
    }

    fn setup(&mut self) {
        self.w(REG_STATUS, 0);
        self.mem
            .write_slice(&[0u8; 0xf000], GuestAddress(0x1000))
            .unwrap();
        self.avail = [0; 5];
        self.w(REG_STATUS, 1 | 2);
        self.w(REG_DEVICE_FEATURES_SEL, 0);
        assert_ne!(self.r(REG_DEVICE_FEATURES) & (1 << 5), 0, "MAC offered");
        let offered = u64::from(self.r(REG_DEVICE_FEATURES));
        assert_eq!(offered & self.features, self.features, "features offered");
        self.w(REG_DRIVER_FEATURES_SEL, 0);
        self.w(REG_DRIVER_FEATURES, self.features as u32);
        self.w(REG_DRIVER_FEATURES_SEL, 1);
        self.w(REG_DRIVER_FEATURES, 1); // VERSION_1
        self.w(REG_STATUS, 1 | 2 | 8);
        assert_ne!(self.r(REG_STATUS) & 8, 0, "features refused");
        for (q, (desc, avail, used)) in RING.iter().enumerate().take(self.ready) {
            self.w(REG_QUEUE_SEL, q as u32);
            self.w(REG_QUEUE_NUM, u32::from(QSIZE));
            self.w(REG_QUEUE_DESC_LOW, *desc as u32);
            self.w(REG_QUEUE_AVAIL_LOW, *avail as u32);
            self.w(REG_QUEUE_USED_LOW, *used as u32);
            self.w(REG_QUEUE_READY, 1);
        }
        self.w(REG_STATUS, 1 | 2 | 8 | 4);
        assert_eq!(self.r(REG_STATUS) & STATUS_NEEDS_RESET, 0);
        let mut mac = [0u8; 6];
        self.t.read(REG_CONFIG, &mut mac);
        assert_eq!(mac, [0x52, 0x54, 0, 0, 0, 2]);
    }

    fn desc(&self, q: usize, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let a = RING[q].0 + u64::from(i) * 16;
        self.mem.write_obj(addr, GuestAddress(a)).unwrap();
        self.mem.write_obj(len, GuestAddress(a + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(a + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(a + 14)).unwrap();
    }

    /// Offer chain `head` on queue `q` and kick (as KVM's ioeventfd would).
    fn offer(&mut self, q: usize, head: u16) {
        let slot = u64::from(self.avail[q] % QSIZE);
        self.mem
            .write_obj(head, GuestAddress(RING[q].1 + 4 + slot * 2))
            .unwrap();
        self.avail[q] = self.avail[q].wrapping_add(1);
        self.mem
            .write_obj(self.avail[q], GuestAddress(RING[q].1 + 2))
            .unwrap();
        self.t.notifiers()[q].write(1).unwrap();
    }

    fn used_idx(&self, q: usize) -> u16 {
        self.mem.read_obj(GuestAddress(RING[q].2 + 2)).unwrap()
    }

    fn used_entry(&self, q: usize, i: u16) -> (u32, u32) {
        let a = RING[q].2 + 4 + u64::from(i % QSIZE) * 8;
        (
            self.mem.read_obj(GuestAddress(a)).unwrap(),
            self.mem.read_obj(GuestAddress(a + 4)).unwrap(),
        )
    }

    fn broken(&self) -> bool {
        self.r(REG_STATUS) & STATUS_NEEDS_RESET != 0
    }

    /// Wait until queue `q` has `n` used entries (the device must not break).
    fn wait_used(&self, q: usize, n: u16) {
        self.wait_until(q, n, |idx| idx == n);
    }

    /// Wait until queue `q` has at least `n` used entries.
    fn wait_used_at_least(&self, q: usize, n: u16) {
        self.wait_until(q, n, |idx| idx.wrapping_sub(n) < 0x8000);
    }

    fn wait_until(&self, q: usize, n: u16, reached: impl Fn(u16) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !reached(self.used_idx(q)) {
            assert!(!self.broken(), "the device gave up on queue {q}");
            assert!(
                std::time::Instant::now() < deadline,
                "queue {q}: used idx {} never reached {n}",
                self.used_idx(q)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Post `n` device-writable rx buffers of `len` bytes (heads from
    /// `first`, buffers from `at`).
    fn post_rx(&mut self, first: u16, n: u16, at: u64, len: u32) {
        self.post_rx_on(0, first, n, at, len);
    }

    /// `post_rx` on rx queue `q`.
    fn post_rx_on(&mut self, q: usize, first: u16, n: u16, at: u64, len: u32) {
        for i in 0..n {
            self.desc(
                q,
                first + i,
                at + u64::from(i) * u64::from(len),
                len,
                WRITE,
                0,
            );
            self.offer(q, first + i);
        }
    }

    /// Send control command `cmd` (class, command, data) on queue 4 with
    /// descriptors from `head` and buffers at `at`; the device's ack.
    fn ctrl(&mut self, head: u16, at: u64, cmd: &[u8]) -> u8 {
        let ack = at + 0x100;
        self.mem.write_slice(cmd, GuestAddress(at)).unwrap();
        self.mem.write_obj(0xffu8, GuestAddress(ack)).unwrap();
        self.desc(4, head, at, 2, NEXT, head + 1);
        self.desc(4, head + 1, at + 2, cmd.len() as u32 - 2, NEXT, head + 2);
        self.desc(4, head + 2, ack, 1, WRITE, 0);
        let n = self.used_idx(4).wrapping_add(1);
        self.offer(4, head);
        self.wait_used(4, n);
        assert_eq!(self.used_entry(4, n - 1), (u32::from(head), 1));
        self.mem.read_obj(GuestAddress(ack)).unwrap()
    }

    /// Send `frame` (with a virtio_net_hdr_v1 in front) from buffer `at`.
    fn send(&mut self, head: u16, at: u64, frame: &[u8]) {
        self.mem.write_slice(frame, GuestAddress(at)).unwrap();
        self.desc(1, head, at, frame.len() as u32, 0, 0);
        self.offer(1, head);
    }

    /// Send an ARP request for 10.98.0.1 (the TAP's address) from buffer `at`.
    fn send_arp(&mut self, head: u16, at: u64) {
        let mut f = vec![0u8; 12]; // virtio_net_hdr_v1
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&[0x52, 0x54, 0, 0, 0, 2, 0x08, 0x06]);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 0x52, 0x54, 0, 0, 0, 2]);
        f.extend_from_slice(&[10, 98, 0, 2, 0, 0, 0, 0, 0, 0, 10, 98, 0, 1]);
        self.mem.write_slice(&f, GuestAddress(at)).unwrap();
        self.desc(1, head, at, f.len() as u32, 0, 0);
        self.offer(1, head);
    }
}

#[test]
fn hostile_net_chains_drop_frames_and_a_runaway_ring_marks_the_device_broken() {
    let Some(ns) = Netns::new("vnet-hostile") else {
        return;
    };
    let name = ns.name.clone();
    ns.run(move || {
        let mut d = NetDriver::new("khostile0");
        let ip = |args: &[&str]| ip_in(&name, args);
        ip(&["addr", "add", "10.98.0.1/24", "dev", "khostile0"]);
        ip(&["link", "set", "khostile0", "up"]);

        // tx: a device-writable buffer, one outside guest memory, a frame
        // shorter than its header, and a descriptor loop are all returned
        // (frames dropped), and the device keeps serving.
        d.desc(1, 0, BUFS, 64, WRITE, 0);
        d.offer(1, 0);
        d.desc(1, 1, MEM - 8, 64, 0, 0);
        d.offer(1, 1);
        d.desc(1, 2, BUFS, 6, 0, 0);
        d.offer(1, 2);
        d.desc(1, 3, BUFS, 20, NEXT, 4);
        d.desc(1, 4, BUFS, 20, NEXT, 3);
        d.offer(1, 3);
        d.wait_used(1, 4);
        for (i, head) in [0u32, 1, 2, 3].iter().enumerate() {
            assert_eq!(d.used_entry(1, i as u16), (*head, 0));
        }

        // rx: a good 2 KiB buffer first, then a device-readable one (wrong
        // direction). A real ARP request out through the TAP makes the host
        // answer; the answer lands in the good buffer.
        d.desc(0, 0, BUFS + 0x1000, 2048, WRITE, 0);
        d.offer(0, 0);
        d.desc(0, 1, BUFS + 0x2000, 2048, 0, 0);
        d.offer(0, 1);
        d.send_arp(5, BUFS + 0x3000);
        d.wait_used(1, 5);
        d.wait_used(0, 1);
        let (head, len) = d.used_entry(0, 0);
        assert_eq!(head, 0);
        assert!(len >= 12 + 42, "rx length {len}");
        let mut frame = vec![0u8; len as usize];
        d.mem
            .read_slice(&mut frame, GuestAddress(BUFS + 0x1000))
            .unwrap();
        assert_eq!(&frame[12..18], &[0x52, 0x54, 0, 0, 0, 2], "to our MAC");
        assert_eq!(&frame[24..26], &[8, 6], "an ARP frame");
        assert_eq!(&frame[32..34], &[0, 2], "an ARP reply");
        assert_eq!(&frame[40..44], &[10, 98, 0, 1]);
        // The next frame meets the wrong-direction buffer: dropped, returned
        // with length 0.
        // (A UDP datagram from the host to the guest's address, which the
        // host learned from the ARP request; this thread is in the namespace.)
        let s = UdpSocket::bind("10.98.0.1:0").unwrap();
        s.send_to(b"to the guest", "10.98.0.2:9").unwrap();
        d.wait_used(0, 2);
        assert_eq!(d.used_entry(0, 1), (1, 0));
        assert!(!d.broken());

        // An avail index a whole ring ahead of the device: broken driver.
        d.mem
            .write_obj(
                d.avail[1].wrapping_add(QSIZE + 5),
                GuestAddress(RING[1].1 + 2),
            )
            .unwrap();
        d.t.notifiers()[1].write(1).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !d.broken() {
            assert!(std::time::Instant::now() < deadline, "never marked broken");
            std::thread::sleep(Duration::from_millis(1));
        }
        // A reset stops the worker (returns) and the device serves again.
        d.setup();
        d.send_arp(0, BUFS + 0x3000);
        d.wait_used(1, 1);
    });
}

/// virtio_net_hdr_v1 + Ethernet + IPv4 + UDP from 10.98.0.2:7 to
/// 10.98.0.1:`port`. The UDP checksum field holds `csum`; with
/// `needs_csum` the header asks the host to compute it (VIRTIO_NET_HDR_F_NEEDS_CSUM,
/// csum_start at the UDP header, csum_offset 6).
fn udp_frame(port: u16, payload: &[u8], csum: u16, needs_csum: bool) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    if needs_csum {
        f[0] = 1;
        f[6..8].copy_from_slice(&34u16.to_le_bytes());
        f[8..10].copy_from_slice(&6u16.to_le_bytes());
    }
    f.extend_from_slice(&TAP_MAC);
    f.extend_from_slice(&[0x52, 0x54, 0, 0, 0, 2, 0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 98, 0, 2, 10, 98, 0, 1,
    ];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let mut sum = 0u32;
    for w in ip.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&7u16.to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The TAP's MAC in the offload tests.
const TAP_MAC: [u8; 6] = [0x02, 0x6b, 0, 0, 0, 1];

/// A namespace with TAP `tap` (created by the device of a driver acking
/// `features`) at 10.98.0.1/24 with `TAP_MAC`; runs `f` inside it.
fn in_tap_namespace(
    tag: &str,
    tap: &'static str,
    features: u64,
    f: impl FnOnce(NetDriver) + Send + 'static,
) {
    in_tap_namespace_with(tag, tap, move || NetDriver::with_features(tap, features), f);
}

/// `in_tap_namespace` with the driver `make` builds.
fn in_tap_namespace_with(
    tag: &str,
    tap: &'static str,
    make: impl FnOnce() -> NetDriver + Send + 'static,
    f: impl FnOnce(NetDriver) + Send + 'static,
) {
    let Some(ns) = Netns::new(tag) else {
        return;
    };
    let name = ns.name.clone();
    ns.run(move || {
        let d = make();
        // No IPv6 chatter (DAD, router solicitations) in the guest's buffers.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{tap}/disable_ipv6"), "1");
        for args in [
            &["addr", "add", "10.98.0.1/24", "dev", tap][..],
            &["link", "set", tap, "address", "02:6b:00:00:00:01"],
            &["link", "set", tap, "up"],
        ] {
            ip_in(&name, args);
        }
        f(d)
    });
}

/// Read the frame that starts at used entry `used` of the rx queue (whose
/// buffers are `size` bytes, buffer i at BUFS + i * size): its header's
/// num_buffers tells how many entries it spans. (frame, entries).
fn read_merged(d: &NetDriver, used: u16, size: u64) -> (Vec<u8>, u16) {
    d.wait_used_at_least(0, used.wrapping_add(1));
    let (head, _) = d.used_entry(0, used);
    let n: u16 = d
        .mem
        .read_obj(GuestAddress(BUFS + u64::from(head) * size + 10))
        .unwrap();
    assert!(n >= 1, "num_buffers 0");
    d.wait_used_at_least(0, used.wrapping_add(n));
    let mut frame = Vec::new();
    for k in 0..n {
        let (h, l) = d.used_entry(0, used.wrapping_add(k));
        assert!(u64::from(l) <= size);
        let mut b = vec![0u8; l as usize];
        d.mem
            .read_slice(&mut b, GuestAddress(BUFS + u64::from(h) * size))
            .unwrap();
        frame.extend_from_slice(&b);
    }
    (frame, n)
}

#[test]
fn mergeable_rx_spans_buffers_and_checksum_offloads_pass_through() {
    use kiln_vmm::devices::virtio::net::{F_CSUM, F_GUEST_CSUM, F_MRG_RXBUF};
    const SIZE: u64 = 512;
    in_tap_namespace(
        "vnet-mrg",
        "kmrg0",
        F_MRG_RXBUF | F_CSUM | F_GUEST_CSUM,
        |mut d| {
            // A group must hold a whole 1500-MTU frame (1530 bytes with the
            // headers): two 512-byte buffers are not enough, the ARP reply waits.
            d.post_rx(0, 2, BUFS, SIZE as u32);
            d.send_arp(0, BUFS + 0x40000);
            d.wait_used(1, 1);
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(d.used_idx(0), 0, "a frame was read into too few buffers");
            d.post_rx(2, 14, BUFS + 2 * SIZE, SIZE as u32);
            let (arp, n) = read_merged(&d, 0, SIZE);
            assert_eq!(
                (n, &arp[24..26], &arp[32..34]),
                (1, &[8u8, 6][..], &[0u8, 2][..])
            );

            // A small datagram from the host: the guest took GUEST_CSUM, so the
            // TAP (told by TUNSETOFFLOAD) leaves its checksum to the guest.
            let s = UdpSocket::bind("10.98.0.1:0").unwrap();
            s.send_to(b"small", "10.98.0.2:9").unwrap();
            let (small, n) = read_merged(&d, 1, SIZE);
            assert_eq!(n, 1);
            assert_eq!(small[0] & 1, 1, "VIRTIO_NET_HDR_F_NEEDS_CSUM expected");
            assert_eq!(&small[12 + 14 + 28..], b"small");

            // 2,900 bytes: two IP fragments of up to 1514 bytes, each spread
            // over three 512-byte buffers, in order.
            let payload: Vec<u8> = (0..2900u32).map(|i| (i % 251) as u8).collect();
            s.send_to(&payload, "10.98.0.2:9").unwrap();
            let mut got = Vec::new();
            let mut used = 2u16;
            let mut spans = Vec::new();
            while got.len() < payload.len() + 8 {
                let (frame, n) = read_merged(&d, used, SIZE);
                used += n;
                spans.push(n);
                got.extend_from_slice(&frame[12 + 14 + 20..]);
            }
            assert_eq!(
                &got[8..],
                &payload[..],
                "the datagram came through whole and in order"
            );
            assert_eq!(spans, [3, 3]);

            // tx: a UDP datagram with a wrong checksum is dropped by the host;
            // the same asking for checksum offload (NEEDS_CSUM) arrives.
            let r = UdpSocket::bind("10.98.0.1:4000").unwrap();
            r.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            d.send(
                1,
                BUFS + 0x40000,
                &udp_frame(4000, b"bad checksum", 0x1234, false),
            );
            d.wait_used(1, 2);
            let mut buf = [0u8; 64];
            assert!(
                r.recv_from(&mut buf).is_err(),
                "a bad checksum was accepted"
            );
            d.send(
                2,
                BUFS + 0x40000,
                &udp_frame(4000, b"offloaded", 0x1234, true),
            );
            d.wait_used(1, 3);
            r.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let (n, _) = r.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"offloaded");
        },
    );
}

#[test]
fn with_tso_a_mergeable_group_holds_a_64k_segment() {
    use kiln_vmm::devices::virtio::net::{F_CSUM, F_GUEST_CSUM, F_GUEST_TSO4, F_MRG_RXBUF};
    const SIZE: u64 = 4352;
    let features = F_MRG_RXBUF | F_CSUM | F_GUEST_CSUM | F_GUEST_TSO4;
    in_tap_namespace("vnet-tso", "ktso0", features, |mut d| {
        // 15 × 4352 bytes < 64 KiB + headers: the ARP reply waits for a 16th.
        for h in 0..16u16 {
            if h == 15 {
                std::thread::sleep(Duration::from_millis(200));
                assert_eq!(d.used_idx(0), 0, "a frame was read into too few buffers");
            }
            d.desc(0, h, BUFS + u64::from(h) * SIZE, SIZE as u32, WRITE, 0);
            d.offer(0, h);
            if h == 0 {
                d.send_arp(0, BUFS + 0x40000);
                d.wait_used(1, 1);
            }
        }
        let (arp, n) = read_merged(&d, 0, SIZE);
        assert_eq!((n, &arp[24..26]), (1, &[8u8, 6][..]));
    });
}

/// UDP from the namespace to the guest (10.98.0.2, a permanent neighbour)
/// from `flows` fresh sockets, so the TAP spreads them over its queues by
/// flow hash.
fn send_flows(tap: &str, flows: usize) {
    let _ = Command::new("ip")
        .args([
            "neigh",
            "replace",
            "10.98.0.2",
            "lladdr",
            "52:54:00:00:00:02",
        ])
        .args(["dev", tap, "nud", "permanent"])
        .status();
    for _ in 0..flows {
        let s = UdpSocket::bind("10.98.0.1:0").unwrap();
        s.send_to(b"flow", "10.98.0.2:9").unwrap();
    }
}

/// Count the frames arriving on rx0 and rx1 (queues 0 and 2) until
/// `total` came (or 5 s went by), giving each used buffer straight back.
fn rx_split(d: &mut NetDriver, total: u16) -> (u16, u16) {
    let mut got = [0u16; 2];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while got[0] + got[1] < total && std::time::Instant::now() < deadline {
        for (k, q) in [0usize, 2].into_iter().enumerate() {
            while d.seen[q] != d.used_idx(q) {
                let (head, _) = d.used_entry(q, d.seen[q]);
                d.seen[q] = d.seen[q].wrapping_add(1);
                got[k] += 1;
                d.offer(q, head as u16);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(!d.broken());
    (got[0], got[1])
}

#[test]
fn multi_queue_pairs_switch_through_the_control_queue() {
    use kiln_vmm::devices::virtio::net::{F_CTRL_VQ, F_MQ};
    const SIZE: u32 = 2048;
    let make = || NetDriver::with_pairs("kmq0", F_MQ | F_CTRL_VQ, 2, 5);
    in_tap_namespace_with("vnet-mq", "kmq0", make, |mut d| {
        let mut pairs = [0u8; 2];
        d.t.read(REG_CONFIG + 8, &mut pairs);
        assert_eq!(u16::from_le_bytes(pairs), 2, "max_virtqueue_pairs");
        d.post_rx_on(0, 0, QSIZE, BUFS, SIZE);
        d.post_rx_on(2, 0, QSIZE, BUFS + 0x40000, SIZE);
        // One pair until the driver asks for more: every flow comes on rx0.
        send_flows("kmq0", 16);
        assert_eq!(rx_split(&mut d, 16), (16, 0));

        assert_eq!(
            d.ctrl(0, BUFS + 0x80000, &[4, 0, 2, 0]),
            0,
            "VQ_PAIRS_SET 2"
        );
        send_flows("kmq0", 32);
        let (a, b) = rx_split(&mut d, 32);
        assert_eq!(a + b, 32, "frames lost: {a} + {b}");
        assert!(
            a > 0 && b > 0,
            "flows not spread over both pairs: {a} / {b}"
        );

        // tx on pair 1 reaches the host.
        let r = UdpSocket::bind("10.98.0.1:4001").unwrap();
        r.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let frame = udp_frame(4001, b"pair one", 0, false);
        d.mem
            .write_slice(&frame, GuestAddress(BUFS + 0xa0000))
            .unwrap();
        d.desc(3, 0, BUFS + 0xa0000, frame.len() as u32, 0, 0);
        d.offer(3, 0);
        let mut buf = [0u8; 64];
        let (n, _) = r.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"pair one");

        // Out of range, unknown or short commands fail and change nothing.
        assert_eq!(d.ctrl(0, BUFS + 0x80000, &[4, 0, 3, 0]), 1, "3 of 2 pairs");
        assert_eq!(d.ctrl(0, BUFS + 0x80000, &[4, 0, 0, 0]), 1, "0 pairs");
        assert_eq!(d.ctrl(0, BUFS + 0x80000, &[0, 0, 1, 0]), 1, "RX class");
        assert_eq!(d.ctrl(0, BUFS + 0x80000, &[4, 0, 2]), 1, "short");
        // Hostile chains: no ack byte (returned with length 0), a command
        // outside guest memory (fails); the queue goes on.
        d.desc(4, 0, BUFS + 0x80000, 4, 0, 0);
        let n = d.used_idx(4).wrapping_add(1);
        d.offer(4, 0);
        d.wait_used(4, n);
        assert_eq!(d.used_entry(4, n - 1), (0, 0));
        d.desc(4, 0, MEM - 2, 4, NEXT, 1);
        d.desc(4, 1, BUFS + 0x80100, 1, WRITE, 0);
        d.offer(4, 0);
        d.wait_used(4, n + 1);
        let ack: u8 = d.mem.read_obj(GuestAddress(BUFS + 0x80100)).unwrap();
        assert_eq!(ack, 1);

        // Back to one pair: rx1 gets nothing more.
        assert_eq!(
            d.ctrl(0, BUFS + 0x80000, &[4, 0, 1, 0]),
            0,
            "VQ_PAIRS_SET 1"
        );
        send_flows("kmq0", 16);
        assert_eq!(rx_split(&mut d, 16), (16, 0));
    });
}

#[test]
fn a_driver_without_mq_gets_every_frame_on_pair_zero() {
    const SIZE: u32 = 2048;
    let make = || NetDriver::with_pairs("kmq1", 0, 4, 2);
    in_tap_namespace_with("vnet-nomq", "kmq1", make, |mut d| {
        assert!(!d.broken(), "two ready queues of nine are enough");
        d.post_rx(0, QSIZE, BUFS, SIZE);
        // The other TAP queues are detached: no flow is steered to them.
        send_flows("kmq1", 48);
        assert_eq!(rx_split(&mut d, 48), (48, 0));
    });
}

/// A random descriptor for the net proptest: (addr, len, flags, next).
fn any_net_desc() -> impl proptest::strategy::Strategy<Value = (u64, u32, u16, u16)> {
    use proptest::prelude::*;
    (
        prop_oneof![BUFS..MEM, Just(MEM - 1), Just(MEM), any::<u64>()],
        prop_oneof![
            Just(0u32),
            Just(1),
            Just(12),
            Just(60),
            Just(2048),
            0..70_000u32,
            any::<u32>()
        ],
        0u16..8, // NEXT, WRITE, INDIRECT in any mix
        0u16..20,
    )
}

/// Random chains on both queues, any feature mix, frames arriving from the
/// host meanwhile: the worker never panics or hangs (a reset joins it), and
/// after a reset the device moves a frame each way again.
#[test]
fn random_net_chains_never_break_the_device() {
    use kiln_vmm::devices::virtio::net::{F_CSUM, F_GUEST_CSUM, F_GUEST_TSO4, F_MRG_RXBUF};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let Some(ns) = Netns::new("vnet-fuzz") else {
        return;
    };
    let name = ns.name.clone();
    ns.run(move || {
        let cell = std::cell::RefCell::new(NetDriver::new("kfuzz0"));
        for args in [
            &["addr", "add", "10.98.0.1/24", "dev", "kfuzz0"][..],
            &["link", "set", "kfuzz0", "up"],
            &[
                "neigh",
                "replace",
                "10.98.0.2",
                "lladdr",
                "52:54:00:00:00:02",
                "dev",
                "kfuzz0",
            ],
        ] {
            ip_in(&name, args);
        }
        let host = UdpSocket::bind("10.98.0.1:0").unwrap();
        let strategy = (
            prop_oneof![
                Just(0u64),
                Just(F_MRG_RXBUF),
                Just(F_MRG_RXBUF | F_CSUM | F_GUEST_CSUM),
                Just(F_MRG_RXBUF | F_CSUM | F_GUEST_CSUM | F_GUEST_TSO4),
            ],
            prop::collection::vec(any_net_desc(), 2 * QSIZE as usize),
            prop::collection::vec((0usize..2, 0u16..20), 0..24),
            prop_oneof![Just(0u16), any::<u16>()],
            0usize..4,
        );
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&strategy, |(features, descs, offers, runaway, frames)| {
                let mut d = cell.borrow_mut();
                d.features = features;
                d.setup();
                for (i, (addr, len, flags, next)) in descs.iter().enumerate() {
                    let (q, idx) = (i / QSIZE as usize, (i % QSIZE as usize) as u16);
                    d.desc(q, idx, *addr, *len, *flags, *next);
                }
                for (q, head) in &offers {
                    d.offer(*q, *head);
                }
                if runaway > 0 {
                    // An avail index far ahead of what was offered.
                    let idx = d.avail[1].wrapping_add(runaway);
                    d.mem.write_obj(idx, GuestAddress(RING[1].1 + 2)).unwrap();
                    d.t.notifiers()[1].write(1).unwrap();
                }
                for i in 0..frames {
                    let _ = host.send_to(&vec![i as u8; 40 + 600 * i], "10.98.0.2:9");
                }
                std::thread::sleep(Duration::from_millis(2));

                // A reset joins the worker (it must not hang), then a frame
                // goes out and one comes in.
                d.features = 0;
                d.setup();
                d.desc(0, 0, BUFS, 0x11000, WRITE, 0);
                d.offer(0, 0);
                d.send_arp(0, BUFS + 0x20000);
                d.wait_used(1, 1);
                d.wait_used(0, 1);
                let (head, len) = d.used_entry(0, 0);
                prop_assert_eq!(head, 0);
                prop_assert!(len >= 12 + 42, "rx length {}", len);
                Ok(())
            })
            .unwrap();
    });
}
