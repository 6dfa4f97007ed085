//! `kiln.mode=serve [ip=A/N] [tcp=P,…] [dhcp_secs=S] [kiln.ping=IP]`: what a cloud server
//! runs. With a NIC: take an address by DHCP (or `ip=`), print
//! `kiln-firmware: dhcp <ip>/<prefix> router <gw>` (or `dhcp failed` after
//! S seconds, default 10, then keep asking every 4 s while everything else goes on), and
//! answer ARP, ICMP echo, UDP echo and TCP SYNs as net-echo does (ports
//! `tcp=`, default 22 and 80), renewing the lease at half its time. The
//! DHCP client is a state machine polled by the one serve loop, so disks
//! and Ctrl-Alt-Del are looked after while it waits. Meanwhile watch every virtio-blk slot: a
//! capacity going from 0 to N (a hot attach) prints
//! `kiln-firmware: disk <slot> attached <bytes>` and runs blk-check on the
//! disk's LAST MiB (so data at its start is never touched; read-only disks
//! are only read); going to 0 prints `disk <slot> detached`. `<slot>` is
//! the disk's index among the virtio-blk slots (kiln-vmm's `disks` order);
//! at start each slot is listed as `disk <slot> present <bytes>` or
//! `disk <slot> empty`. With `kiln.ping=`, it also pings that address
//! once a second once it has its own (see `pinger`).
//! Asleep in `hlt` between polls (see `irq`); Ctrl-Alt-Del powers off.

use kiln_firmware::cmdline;
use kiln_firmware::dhcp;
use kiln_firmware::line::Line;
use kiln_firmware::net_echo::{self, Me};
use kiln_firmware::virtio_blk::{Blk, MAX_UNITS};
use kiln_firmware::virtio_net::Net;

use super::blk_jobs::{check_preserving, check_readable};
use super::pinger::Pinger;
use super::{ctrl_alt_del, flush_console, irq, open_net, rdtsc, say, tsc_hz, write_com1, Waker};

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

pub fn serve(cmdline: &[u8]) {
    irq::init(cmdline);
    let hz = tsc_hz(cmdline).unwrap_or(GUESS_HZ);
    let mut disks = open_disks(cmdline);
    let mut waker = Waker::new();
    let mut nic = open_net(cmdline).map(|net| Nic::new(cmdline, net, hz));
    loop {
        let busy = nic.as_mut().is_some_and(Nic::poll);
        if waker.keyboard_due() {
            if ctrl_alt_del(&mut waker.seen_del) {
                write_com1(b"kiln-firmware: ctrl-alt-del, powering off\n");
                return;
            }
            for d in disks.iter_mut() {
                watch(d);
            }
        }
        let frames_waiting = nic
            .as_mut()
            .is_some_and(|n| !n.net.rx_interrupts_before_sleep());
        if busy || frames_waiting {
            waker.busy();
            continue;
        }
        waker.sleep();
        if let Some(n) = nic.as_mut() {
            n.net.rx_interrupts_off();
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
    } else {
        check_preserving(&mut d.blk, start, len);
    }
    flush_console();
}

/// Where our address comes from.
enum Addr {
    /// `ip=` on the command line.
    Static,
    /// DHCP: discovering (`requesting` None) or requesting an offer; after
    /// `give_up` it says `dhcp failed` once and keeps trying every 4 s.
    Seeking {
        requesting: Option<([u8; 4], [u8; 4])>,
        attempt: u32,
        next_send: u64,
        give_up: u64,
        failed_said: bool,
    },
    /// A lease from `server`, renewed (broadcast REQUEST) from `renew_at`.
    Bound { server: [u8; 4], renew_at: u64 },
}

/// The NIC of `serve`: its address (static or by DHCP) and the answers.
struct Nic {
    net: Net,
    me: Me,
    addr: Addr,
    xid: u32,
    hz: u64,
    /// When the DHCP client says `dhcp failed` (`dhcp_secs=`, default 10 s).
    give_up_ms: u64,
    /// `kiln.ping=`: the echoes this guest sends.
    ping: Option<Pinger>,
}

impl Nic {
    /// Our address from `ip=`, or the DHCP client started (no address yet).
    fn new(cmdline: &[u8], net: Net, hz: u64) -> Nic {
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
        let give_up_ms = cmdline::value(cmdline, b"dhcp_secs")
            .and_then(cmdline::parse_u64)
            .map_or(dhcp::GIVE_UP_MS, |s| s.saturating_mul(1000));
        let now = rdtsc();
        let mac = me.mac;
        let xid = (now as u32) ^ u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]);
        let mut ping = Pinger::from_cmdline(cmdline, hz);
        let addr = match cmdline::value(cmdline, b"ip").and_then(net_echo::parse_ipv4) {
            Some((ip, prefix)) => {
                me.ip = ip;
                let mut l = Line::new();
                l.bytes(b"kiln-firmware: static ");
                ipv4(&mut l, ip);
                l.bytes(b"/").dec(u64::from(prefix)).bytes(b"\n");
                write_com1(l.as_bytes());
                flush_console();
                if let Some(p) = ping.as_mut() {
                    p.on_address(ip, prefix, None);
                }
                Addr::Static
            }
            None => Addr::Seeking {
                requesting: None,
                attempt: 0,
                next_send: now,
                give_up: now + give_up_ms * hz / 1000,
                failed_said: false,
            },
        };
        Nic {
            net,
            me,
            addr,
            xid,
            hz,
            give_up_ms,
            ping,
        }
    }

    /// Answer every frame waiting (with an address), take DHCP replies, send
    /// what the DHCP client owes; true when frames came.
    fn poll(&mut self) -> bool {
        let me = self.me;
        let xid = match self.addr {
            Addr::Static => None,
            _ => Some(self.xid),
        };
        let mut reply = None;
        let ping = &mut self.ping;
        let n = self.net.receive(|net, frame| {
            if let Some(r) = xid.and_then(|x| dhcp::parse_reply(frame, me.mac, x)) {
                reply = Some(r);
            } else if me.ip != [0; 4] && !ping.as_mut().is_some_and(|p| p.on_frame(&me, frame, net))
            {
                net.send_with(|out| net_echo::answer(&me, frame, out));
            }
        });
        let now = rdtsc();
        if let Some(r) = reply {
            self.on_reply(r, now);
        }
        self.tick(now);
        if let Some(p) = self.ping.as_mut() {
            p.tick(&self.me, &mut self.net, now);
        }
        n > 0
    }

    fn on_reply(&mut self, r: dhcp::Reply, now: u64) {
        match &mut self.addr {
            Addr::Static => {}
            Addr::Seeking {
                requesting,
                attempt,
                next_send,
                ..
            } => match r.kind {
                dhcp::OFFER if requesting.is_none() => {
                    if let Some(server) = r.server_id {
                        *requesting = Some((r.ip, server));
                        *attempt = 0;
                        *next_send = now;
                    }
                }
                dhcp::ACK if requesting.is_some() => {
                    let server = r.server_id.or(requesting.map(|q| q.1)).unwrap_or([0; 4]);
                    self.me.ip = r.ip;
                    if let Some(p) = self.ping.as_mut() {
                        p.on_address(r.ip, r.prefix.unwrap_or(24), r.router);
                    }
                    self.addr = Addr::Bound {
                        server,
                        renew_at: renew_at(now, self.hz, r.lease_secs),
                    };
                    say_lease(&r);
                }
                dhcp::NAK => {
                    *requesting = None;
                    *attempt = 0;
                    *next_send = now;
                }
                _ => {}
            },
            Addr::Bound { renew_at: at, .. } => match r.kind {
                dhcp::ACK if r.ip == self.me.ip => *at = renew_at(now, self.hz, r.lease_secs),
                dhcp::NAK => {
                    write_com1(b"kiln-firmware: dhcp lease refused, asking again\n");
                    self.me.ip = [0; 4];
                    self.addr = Addr::Seeking {
                        requesting: None,
                        attempt: 0,
                        next_send: now,
                        give_up: now + self.give_up_ms * self.hz / 1000,
                        failed_said: false,
                    };
                }
                _ => {}
            },
        }
    }

    fn tick(&mut self, now: u64) {
        let (mac, xid, hz) = (self.me.mac, self.xid, self.hz);
        match &mut self.addr {
            Addr::Static => {}
            Addr::Seeking {
                requesting,
                attempt,
                next_send,
                give_up,
                failed_said,
            } => {
                if now >= *give_up && !*failed_said {
                    *failed_said = true;
                    write_com1(b"kiln-firmware: dhcp failed\n");
                    flush_console();
                }
                if now >= *next_send {
                    let req = *requesting;
                    self.net
                        .send_with(|out| dhcp::request_frame(mac, xid, req, out));
                    *next_send = now + dhcp::backoff_ms(*attempt) * hz / 1000;
                    *attempt = attempt.saturating_add(1);
                }
            }
            Addr::Bound { server, renew_at } => {
                if now >= *renew_at {
                    // Broadcast REQUEST for the address we hold; again every
                    // 10 s until an ACK moves renew_at on.
                    let req = Some((self.me.ip, *server));
                    self.net
                        .send_with(|out| dhcp::request_frame(mac, xid, req, out));
                    *renew_at = now + 10 * hz;
                }
            }
        }
    }
}

/// `kiln-firmware: dhcp <ip>/<prefix> router <gw>` and the MTU/lease line.
fn say_lease(ack: &dhcp::Reply) {
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
}

pub(super) fn ipv4(l: &mut Line, ip: [u8; 4]) {
    for (i, o) in ip.iter().enumerate() {
        if i > 0 {
            l.bytes(b".");
        }
        l.dec(u64::from(*o));
    }
}

/// When to renew a lease of `secs` seconds: at half its time (none or
/// 0: in an hour; infinite: never, in practice).
fn renew_at(now: u64, hz: u64, secs: Option<u32>) -> u64 {
    let half = match secs {
        Some(u32::MAX) => u64::from(u32::MAX),
        Some(s) if s > 1 => u64::from(s / 2),
        _ => 3600,
    };
    now.saturating_add(half.saturating_mul(hz))
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
