//! `kiln.mode=serve [ip=A/N] [tcp=P,…]`: what a cloud server runs. With a
//! NIC: take an address by DHCP (or `ip=`), print
//! `kiln-firmware: dhcp <ip>/<prefix> router <gw>` (or `dhcp failed` after
//! ~10 s and carry on without one), then answer ARP, ICMP echo, UDP echo and
//! TCP SYNs as net-echo does (ports `tcp=`, default 22 and 80), renewing
//! the lease at half its time. Meanwhile watch every virtio-blk slot: a
//! capacity going from 0 to N (a hot attach) prints
//! `kiln-firmware: disk <slot> attached <bytes>` and runs blk-check on the
//! disk's LAST MiB (so data at its start is never touched; read-only disks
//! are only read); going to 0 prints `disk <slot> detached`. `<slot>` is
//! the disk's index among the virtio-blk slots (kiln-vmm's `disks` order);
//! at start each slot is listed as `disk <slot> present <bytes>` or
//! `disk <slot> empty`.
//! Asleep in `hlt` between polls (see `irq`); Ctrl-Alt-Del powers off.

use kiln_firmware::cmdline;
use kiln_firmware::dhcp;
use kiln_firmware::line::Line;
use kiln_firmware::net_echo::{self, Me};
use kiln_firmware::virtio_blk::{Blk, MAX_UNITS};
use kiln_firmware::virtio_net::Net;

use super::{
    check_read, check_readable, check_write, ctrl_alt_del, flush_console, irq, open_net, rdtsc,
    say, tsc_hz, write_com1, Waker,
};

/// Bytes blk-check covers at the end of a hot-attached disk.
const CHECK_TAIL: u64 = 1 << 20;
/// TCP ports answered with SYN-ACK when `tcp=` is not given.
const DEFAULT_TCP: [u16; 2] = [22, 80];
/// TSC rate assumed when the PIT cannot calibrate it (timeouts stretch or
/// shrink with the guess; nothing else depends on it).
const GUESS_HZ: u64 = 2_000_000_000;

/// One watched virtio-blk slot.
struct Disk {
    blk: Blk,
    slot: u64,
    generation: u32,
    bytes: u64,
}

/// The lease in use and when to renew it.
struct Lease {
    server: [u8; 4],
    renew_at: u64,
}

pub fn serve(cmdline: &[u8]) {
    irq::init(cmdline);
    let hz = tsc_hz().unwrap_or(GUESS_HZ);
    let mut disks = open_disks(cmdline);
    let mut waker = Waker::new();
    let mut net = None;
    if let Some(n) = open_net(cmdline) {
        net = start_net(cmdline, n, hz, &mut waker);
    }
    loop {
        let mut busy = false;
        if let Some((net, me, lease)) = net.as_mut() {
            busy = serve_frames(net, me, lease, hz);
        }
        if waker.keyboard_due() {
            if ctrl_alt_del(&mut waker.seen_del) {
                write_com1(b"kiln-firmware: ctrl-alt-del, powering off\n");
                return;
            }
            for d in disks.iter_mut() {
                watch(d);
            }
        }
        if !busy {
            waker.sleep();
        }
    }
}

/// Set up every virtio-blk slot (empty ones too: they are where disks get
/// attached) and say what each holds: `disk <slot> present <bytes>` or
/// `disk <slot> empty`.
fn open_disks(cmdline: &[u8]) -> heapless_disks::Disks<Disk> {
    let mut disks = heapless_disks::Disks::new();
    for dev in cmdline::virtio_mmio_devices(cmdline) {
        let unit = disks.len();
        if unit >= MAX_UNITS {
            break;
        }
        // SAFETY: the slot is an MMIO window in the identity map, and each
        // unit's static memory serves one device only.
        let Ok(mut blk) = (unsafe { Blk::init_unit(dev.addr as usize, unit) }) else {
            continue;
        };
        let generation = blk.read_config();
        let bytes = blk.sectors * 512;
        let mut l = Line::new();
        l.bytes(b"kiln-firmware: disk ").dec(unit as u64);
        if bytes > 0 {
            l.bytes(b" present ").dec(bytes).bytes(b"\n");
        } else {
            l.bytes(b" empty\n");
        }
        write_com1(l.as_bytes());
        disks.push(Disk {
            blk,
            slot: unit as u64,
            generation,
            bytes,
        });
    }
    disks
}

/// Look at one slot's config generation (an exit to the VMM) and act on a change.
fn watch(d: &mut Disk) {
    if d.blk.config_generation() == d.generation {
        return;
    }
    d.generation = d.blk.read_config();
    let bytes = d.blk.sectors * 512;
    if bytes == d.bytes {
        return;
    }
    d.bytes = bytes;
    let mut l = Line::new();
    l.bytes(b"kiln-firmware: disk ").dec(d.slot);
    if bytes == 0 {
        l.bytes(b" detached\n");
        write_com1(l.as_bytes());
        flush_console();
        return;
    }
    l.bytes(b" attached ").dec(bytes).bytes(b"\n");
    write_com1(l.as_bytes());
    let len = bytes.min(CHECK_TAIL) & !511;
    let start = (bytes - len) & !511;
    if d.blk.read_only {
        say(&[b"kiln-firmware: disk is read-only: reading its last MiB only"]);
        check_readable(&mut d.blk, start, len);
    } else if check_write(&mut d.blk, start, len) {
        check_read(&mut d.blk, start, len);
    }
    flush_console();
}

/// Our address from `ip=` or DHCP, then ready to serve (None: no address).
fn start_net(
    cmdline: &[u8],
    mut net: Net,
    hz: u64,
    waker: &mut Waker,
) -> Option<(Net, Me, Option<Lease>)> {
    net.want_rx_interrupts();
    let mut me = Me {
        mac: net.mac,
        ip: [0; 4],
        tcp_ports: [0; net_echo::MAX_TCP_PORTS],
        n_tcp_ports: 0,
    };
    match cmdline::value(cmdline, b"tcp") {
        Some(ports) => {
            if !net_echo::parse_ports(ports, &mut me) {
                say(&[b"kiln-firmware: bad tcp= port list, answering none"]);
            }
        }
        None => {
            me.tcp_ports[..DEFAULT_TCP.len()].copy_from_slice(&DEFAULT_TCP);
            me.n_tcp_ports = DEFAULT_TCP.len();
        }
    }
    if let Some((ip, prefix)) = cmdline::value(cmdline, b"ip").and_then(net_echo::parse_ipv4) {
        me.ip = ip;
        let mut l = Line::new();
        l.bytes(b"kiln-firmware: static ");
        ipv4(&mut l, ip);
        l.bytes(b"/").dec(u64::from(prefix)).bytes(b"\n");
        write_com1(l.as_bytes());
        flush_console();
        return Some((net, me, None));
    }
    match dhcp_lease(&mut net, &me, hz, waker) {
        Some((ack, lease)) => {
            me.ip = ack.ip;
            let mut l = Line::new();
            l.bytes(b"kiln-firmware: dhcp ");
            ipv4(&mut l, ack.ip);
            l.bytes(b"/").dec(u64::from(ack.prefix.unwrap_or(24)));
            l.bytes(b" router ");
            match ack.router {
                Some(r) => ipv4(&mut l, r),
                None => {
                    l.bytes(b"none");
                }
            }
            l.bytes(b"\n");
            write_com1(l.as_bytes());
            let mut l = Line::new();
            l.bytes(b"kiln-firmware: dhcp mtu ")
                .dec(u64::from(ack.mtu.unwrap_or(1500)))
                .bytes(b" lease ")
                .dec(u64::from(ack.lease_secs.unwrap_or(0)))
                .bytes(b"s\n");
            write_com1(l.as_bytes());
            flush_console();
            Some((net, me, Some(lease)))
        }
        None => {
            write_com1(b"kiln-firmware: dhcp failed\n");
            flush_console();
            None
        }
    }
}

fn ipv4(l: &mut Line, ip: [u8; 4]) {
    for (i, o) in ip.iter().enumerate() {
        if i > 0 {
            l.bytes(b".");
        }
        l.dec(u64::from(*o));
    }
}

/// When to renew a lease of `secs` seconds (at half its time; 0 or none:
/// in an hour).
fn renew_at(now: u64, hz: u64, secs: Option<u32>) -> u64 {
    let half = match secs {
        Some(s) if s > 1 && s != u32::MAX => u64::from(s / 2),
        Some(u32::MAX) => u64::from(u32::MAX),
        _ => 3600,
    };
    now.saturating_add(half.saturating_mul(hz))
}

/// DISCOVER → OFFER → REQUEST → ACK, with retries (`dhcp::backoff_ms`)
/// until `dhcp::GIVE_UP_MS`; a NAK starts over. Sleeps between looks.
fn dhcp_lease(net: &mut Net, me: &Me, hz: u64, waker: &mut Waker) -> Option<(dhcp::Reply, Lease)> {
    let mac = me.mac;
    let start = rdtsc();
    let xid = (start as u32) ^ u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]);
    let give_up = start + dhcp::GIVE_UP_MS * hz / 1000;
    // None: discovering; Some((ip, server)): requesting.
    let mut requesting: Option<([u8; 4], [u8; 4])> = None;
    let mut attempt = 0u32;
    let mut next_send = start;
    loop {
        let now = rdtsc();
        if now >= give_up {
            return None;
        }
        if now >= next_send {
            net.send_with(|out| dhcp::request_frame(mac, xid, requesting, out));
            next_send = now + dhcp::backoff_ms(attempt) * hz / 1000;
            attempt += 1;
        }
        let mut reply = None;
        net.receive(|_, frame| {
            if let Some(r) = dhcp::parse_reply(frame, mac, xid) {
                reply = Some(r);
            }
        });
        match reply {
            Some(r) if r.kind == dhcp::OFFER && requesting.is_none() => {
                if let Some(server) = r.server_id {
                    requesting = Some((r.ip, server));
                    attempt = 0;
                    next_send = 0;
                }
            }
            Some(r) if r.kind == dhcp::ACK && requesting.is_some() => {
                let server = r.server_id.or(requesting.map(|q| q.1)).unwrap_or([0; 4]);
                let lease = Lease {
                    server,
                    renew_at: renew_at(rdtsc(), hz, r.lease_secs),
                };
                return Some((r, lease));
            }
            Some(r) if r.kind == dhcp::NAK => {
                requesting = None;
                attempt = 0;
                next_send = 0;
            }
            _ => waker.sleep(),
        }
    }
}

/// Answer every frame waiting (and renew the lease when due); true when
/// there were frames.
fn serve_frames(net: &mut Net, me: &mut Me, lease: &mut Option<Lease>, hz: u64) -> bool {
    let xid = u32::from_be_bytes(me.ip) ^ 0x6b69_6c6e;
    let mut renewed = None;
    let n = net.receive(|net, frame| {
        if lease.is_some() {
            if let Some(r) = dhcp::parse_reply(frame, me.mac, xid) {
                renewed = Some(r);
                return;
            }
        }
        net.send_with(|out| net_echo::answer(me, frame, out));
    });
    if let (Some(l), Some(r)) = (lease.as_mut(), renewed) {
        if r.kind == dhcp::ACK && r.ip == me.ip {
            l.renew_at = renew_at(rdtsc(), hz, r.lease_secs);
        }
    }
    if let Some(l) = lease.as_mut() {
        let now = rdtsc();
        if now >= l.renew_at {
            // Broadcast REQUEST for the address we hold; retried every 10 s
            // until an ACK moves renew_at on.
            let (mac, ip, server) = (me.mac, me.ip, l.server);
            net.send_with(|out| dhcp::request_frame(mac, xid, Some((ip, server)), out));
            l.renew_at = now + 10 * hz;
        }
    }
    n > 0
}

/// A fixed-capacity list (the firmware has no allocator).
mod heapless_disks {
    use kiln_firmware::virtio_blk::MAX_UNITS;

    pub struct Disks<T> {
        items: [Option<T>; MAX_UNITS],
        len: usize,
    }

    impl<T> Disks<T> {
        pub fn new() -> Self {
            Disks {
                items: [const { None }; MAX_UNITS],
                len: 0,
            }
        }

        pub fn len(&self) -> usize {
            self.len
        }

        pub fn push(&mut self, t: T) {
            if let Some(slot) = self.items.get_mut(self.len) {
                *slot = Some(t);
                self.len += 1;
            }
        }

        pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
            self.items.iter_mut().flatten()
        }
    }
}
