//! `kiln.ping=<ipv4>` in serve mode: once the guest has an address, ARP for
//! the target (or the router when it is off our subnet) and send one ICMP
//! echo a second, printing `kiln-firmware: ping <ip> reply seq=<n>` for each
//! answer and `... timeout seq=<n>` for each echo unanswered after a second.
//! After three timeouts in a row the neighbour's MAC is asked for again.

use kiln_firmware::line::Line;
use kiln_firmware::net_echo::{self, Me};
use kiln_firmware::ping;
use kiln_firmware::virtio_net::Net;
use kiln_firmware::{cmdline, net_echo::parse_ipv4};

use super::serve::ipv4;
use super::{flush_console, say, write_com1};

/// Our ICMP identifier ("kl").
const ID: u16 = 0x6b6c;
/// Timeouts in a row after which the neighbour is asked for again.
const REARP_AFTER: u32 = 3;

pub struct Pinger {
    target: [u8; 4],
    /// The neighbour frames go to (known once we have an address).
    hop: Option<[u8; 4]>,
    hop_mac: Option<[u8; 6]>,
    seq: u16,
    /// The echo (or the ARP standing in for it) of this second, unanswered.
    waiting: Option<u16>,
    /// Whether the echo of `waiting` left (false: it waits for the ARP reply).
    sent: bool,
    misses: u32,
    next: u64,
    hz: u64,
}

impl Pinger {
    /// The pinger `kiln.ping=` asks for (a bad address is said and ignored).
    pub fn from_cmdline(cmdline: &[u8], hz: u64) -> Option<Pinger> {
        let v = cmdline::value(cmdline, b"kiln.ping")?;
        let Some((target, 32)) = parse_ipv4(v) else {
            say(&[b"kiln-firmware: bad kiln.ping= address, not pinging"]);
            return None;
        };
        Some(Pinger {
            target,
            hop: None,
            hop_mac: None,
            seq: 0,
            waiting: None,
            sent: false,
            misses: 0,
            next: 0,
            hz,
        })
    }

    /// We have (a new) address: find the neighbour again.
    pub fn on_address(&mut self, me: [u8; 4], prefix: u8, router: Option<[u8; 4]>) {
        self.hop = Some(ping::next_hop(me, prefix, router, self.target));
        self.hop_mac = None;
        self.waiting = None;
    }

    /// Take `frame` when it is the neighbour's ARP reply (then send the echo
    /// waiting for it) or an echo reply to us; true when taken.
    pub fn on_frame(&mut self, me: &Me, frame: &[u8], net: &mut Net) -> bool {
        let Some(hop) = self.hop else {
            return false;
        };
        if let Some(mac) = net_echo::arp_reply_from(frame, hop) {
            self.hop_mac = Some(mac);
            if let (Some(seq), false) = (self.waiting, self.sent) {
                self.send_echo(me, net, mac, seq);
            }
            return true;
        }
        let Some(seq) = ping::echo_reply_seq(me, frame, self.target, ID) else {
            return false;
        };
        if self.waiting == Some(seq) {
            self.waiting = None;
            self.misses = 0;
        }
        self.report(b" reply seq=", seq);
        true
    }

    /// Once a second: report the last echo if unanswered, send the next.
    pub fn tick(&mut self, me: &Me, net: &mut Net, now: u64) {
        if self.hop.is_none() || me.ip == [0; 4] || now < self.next {
            return;
        }
        self.next = now + self.hz;
        if let Some(seq) = self.waiting.take() {
            self.report(b" timeout seq=", seq);
            self.misses += 1;
            if self.misses >= REARP_AFTER {
                self.misses = 0;
                self.hop_mac = None;
            }
        }
        self.seq = self.seq.wrapping_add(1);
        self.waiting = Some(self.seq);
        match (self.hop_mac, self.hop) {
            (Some(mac), _) => self.send_echo(me, net, mac, self.seq),
            (None, Some(hop)) => {
                self.sent = false;
                net.send_with(|out| net_echo::arp_request(me, hop, out));
            }
            (None, None) => {}
        }
    }

    fn send_echo(&mut self, me: &Me, net: &mut Net, mac: [u8; 6], seq: u16) {
        self.sent = true;
        let target = self.target;
        net.send_with(|out| ping::echo_request(me, mac, target, ID, seq, out));
    }

    fn report(&self, what: &[u8], seq: u16) {
        let mut l = Line::new();
        l.bytes(b"kiln-firmware: ping ");
        ipv4(&mut l, self.target);
        l.bytes(what).dec(u64::from(seq)).bytes(b"\n");
        write_com1(l.as_bytes());
        flush_console();
    }
}
