//! The answers of `kiln.mode=net-echo`, as pure functions over Ethernet
//! frames (unit-tested on the host): ARP requests for our address, ICMP
//! echo requests, UDP datagrams (echoed to the sender), and TCP SYNs
//! (SYN-ACK on a listed port, RST otherwise). Everything else is ignored.
//! Also the frames `kiln.mode=net-bench` builds and recognises (ARP
//! request and reply, a UDP datagram).

/// Ports `tcp=` may list.
pub const MAX_TCP_PORTS: usize = 8;
/// Our initial TCP sequence number.
pub const TCP_ISN: u32 = 0x6b69_6c6e;

const ETH: usize = 14;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV4: u16 = 0x0800;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Who we are.
#[derive(Debug, Clone, Copy)]
pub struct Me {
    pub mac: [u8; 6],
    pub ip: [u8; 4],
    pub tcp_ports: [u16; MAX_TCP_PORTS],
    pub n_tcp_ports: usize,
}

impl Me {
    fn listens(&self, port: u16) -> bool {
        self.tcp_ports[..self.n_tcp_ports.min(MAX_TCP_PORTS)].contains(&port)
    }
}

/// Parse `a.b.c.d[/n]` into the address and prefix length (32 without one).
pub fn parse_ipv4(s: &[u8]) -> Option<([u8; 4], u8)> {
    let (addr, prefix) = match s.iter().position(|b| *b == b'/') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut ip = [0u8; 4];
    let mut parts = addr.split(|b| *b == b'.');
    for o in ip.iter_mut() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 {
            return None;
        }
        *o = u8::try_from(crate::cmdline::parse_u64(p)?).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    let prefix = match prefix {
        Some(p) => u8::try_from(crate::cmdline::parse_u64(p)?)
            .ok()
            .filter(|n| *n <= 32)?,
        None => 32,
    };
    Some((ip, prefix))
}

/// Parse `tcp=22,80,…` into `me`'s port list (extra ports are ignored).
pub fn parse_ports(s: &[u8], me: &mut Me) -> bool {
    me.n_tcp_ports = 0;
    for p in s.split(|b| *b == b',') {
        let Some(port) = crate::cmdline::parse_u64(p).and_then(|n| u16::try_from(n).ok()) else {
            return false;
        };
        if me.n_tcp_ports < MAX_TCP_PORTS {
            me.tcp_ports[me.n_tcp_ports] = port;
            me.n_tcp_ports += 1;
        }
    }
    true
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// The Internet checksum of `data` starting from the partial sum `sum`.
pub fn checksum(data: &[u8], mut sum: u32) -> u16 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The partial sum of the TCP/UDP pseudo-header.
fn pseudo_sum(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u32 {
    let mut s = 0u32;
    for a in [src, dst] {
        s += u32::from(be16(a, 0)) + u32::from(be16(a, 2));
    }
    s + u32::from(proto) + len as u32
}

/// The frame answering `f`, written to `out`; its length, or None when `f`
/// needs no answer (or `out` is too small).
pub fn answer(me: &Me, f: &[u8], out: &mut [u8]) -> Option<usize> {
    if f.len() < ETH {
        return None;
    }
    let dst = &f[..6];
    if dst != me.mac && dst != [0xff; 6] {
        return None;
    }
    let n = match be16(f, 12) {
        ETHERTYPE_ARP => arp(me, f, out)?,
        ETHERTYPE_IPV4 => ipv4(me, f, out)?,
        _ => return None,
    };
    out[..6].copy_from_slice(&f[6..12]);
    out[6..12].copy_from_slice(&me.mac);
    Some(n)
}

fn arp(me: &Me, f: &[u8], out: &mut [u8]) -> Option<usize> {
    let a = f.get(ETH..ETH + 28)?;
    // Ethernet/IPv4 request for our address.
    if be16(a, 0) != 1 || be16(a, 2) != ETHERTYPE_IPV4 || a[4] != 6 || a[5] != 4 {
        return None;
    }
    if be16(a, 6) != 1 || a[24..28] != me.ip {
        return None;
    }
    let o = out.get_mut(..ETH + 28)?;
    put16(o, 12, ETHERTYPE_ARP);
    let r = &mut o[ETH..];
    r[..6].copy_from_slice(&a[..6]);
    put16(r, 6, 2);
    r[8..14].copy_from_slice(&me.mac);
    r[14..18].copy_from_slice(&me.ip);
    r[18..28].copy_from_slice(&a[8..18]);
    Some(ETH + 28)
}

fn ipv4(me: &Me, f: &[u8], out: &mut [u8]) -> Option<usize> {
    let ip = &f[ETH..];
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0xf) * 4;
    let total = usize::from(be16(ip, 2));
    if ihl < 20 || total < ihl || total > ip.len() || ip[16..20] != me.ip {
        return None;
    }
    // Fragments are not reassembled.
    if be16(ip, 6) & 0x3fff != 0 {
        return None;
    }
    let ip = &ip[..total];
    let payload = &ip[ihl..];
    let n = match ip[9] {
        PROTO_ICMP => {
            // Echo request (type 8, code 0) → echo reply with the same body.
            if payload.len() < 8 || payload[0] != 8 || payload[1] != 0 {
                return None;
            }
            let o = out.get_mut(ETH..ETH + total)?;
            o.copy_from_slice(ip);
            let icmp = &mut o[ihl..];
            icmp[0] = 0;
            put16(icmp, 2, 0);
            let c = checksum(icmp, 0);
            put16(icmp, 2, c);
            total
        }
        PROTO_UDP => {
            if payload.len() < 8 || usize::from(be16(payload, 4)) > payload.len() {
                return None;
            }
            // Addresses and ports swap: the checksum stays valid as it is.
            let o = out.get_mut(ETH..ETH + total)?;
            o.copy_from_slice(ip);
            let u = &mut o[ihl..];
            let (sp, dp) = (be16(payload, 0), be16(payload, 2));
            put16(u, 0, dp);
            put16(u, 2, sp);
            total
        }
        PROTO_TCP => return tcp(me, ip, ihl, out),
        _ => return None,
    };
    finish_ip(&mut out[ETH..ETH + n], ip);
    put16(out, 12, ETHERTYPE_IPV4);
    Some(ETH + n)
}

/// Swap the addresses of the IP header copied to `o`, reset its TTL and
/// fix its checksum.
fn finish_ip(o: &mut [u8], ip: &[u8]) {
    let ihl = usize::from(o[0] & 0xf) * 4;
    o[12..16].copy_from_slice(&ip[16..20]);
    o[16..20].copy_from_slice(&ip[12..16]);
    o[8] = 64;
    put16(o, 10, 0);
    let c = checksum(&o[..ihl], 0);
    put16(o, 10, c);
}

fn tcp(me: &Me, ip: &[u8], ihl: usize, out: &mut [u8]) -> Option<usize> {
    let t = &ip[ihl..];
    if t.len() < 20 {
        return None;
    }
    let flags = t[13];
    // Only a bare SYN gets an answer (a RST is never answered).
    if flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) != TCP_SYN {
        return None;
    }
    let (sp, dp) = (be16(t, 0), be16(t, 2));
    let their_seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
    let o = out.get_mut(ETH..ETH + 40)?;
    o.fill(0);
    o[0] = 0x45;
    put16(o, 2, 40);
    o[9] = PROTO_TCP;
    let r = &mut o[20..];
    put16(r, 0, dp);
    put16(r, 2, sp);
    let (seq, reply) = if me.listens(dp) {
        (TCP_ISN, TCP_SYN | TCP_ACK)
    } else {
        (0, TCP_RST | TCP_ACK)
    };
    r[4..8].copy_from_slice(&seq.to_be_bytes());
    r[8..12].copy_from_slice(&their_seq.wrapping_add(1).to_be_bytes());
    r[12] = 5 << 4;
    r[13] = reply;
    put16(r, 14, if reply & TCP_RST != 0 { 0 } else { 0xffff });
    let sum = pseudo_sum(&ip[16..20], &ip[12..16], PROTO_TCP, 20);
    let c = checksum(r, sum);
    put16(r, 16, c);
    finish_ip(o, ip);
    put16(out, 12, ETHERTYPE_IPV4);
    Some(ETH + 40)
}

/// An ARP request from `me` for `target`, broadcast; its length.
pub fn arp_request(me: &Me, target: [u8; 4], out: &mut [u8]) -> Option<usize> {
    let o = out.get_mut(..ETH + 28)?;
    o[..6].fill(0xff);
    o[6..12].copy_from_slice(&me.mac);
    put16(o, 12, ETHERTYPE_ARP);
    let a = &mut o[ETH..];
    a[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    a[8..14].copy_from_slice(&me.mac);
    a[14..18].copy_from_slice(&me.ip);
    a[18..24].fill(0);
    a[24..28].copy_from_slice(&target);
    Some(ETH + 28)
}

/// The MAC of `ip` when `f` is an ARP reply from it.
pub fn arp_reply_from(f: &[u8], ip: [u8; 4]) -> Option<[u8; 6]> {
    let a = f.get(ETH..ETH + 28)?;
    if be16(f, 12) != ETHERTYPE_ARP || be16(a, 6) != 2 || a[14..18] != ip {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&a[8..14]);
    Some(mac)
}

/// A UDP datagram of `payload` bytes (a counting pattern) from `me`:`sport`
/// to `dst_mac`/`dst`:`dport`, without a UDP checksum; its frame length.
pub fn udp_frame(
    me: &Me,
    dst_mac: [u8; 6],
    dst: [u8; 4],
    ports: (u16, u16),
    payload: usize,
    out: &mut [u8],
) -> Option<usize> {
    let n = udp_headers(me, dst_mac, dst, ports, payload, out)?;
    for (i, b) in out[UDP_PAYLOAD..n].iter_mut().enumerate() {
        *b = i as u8;
    }
    Some(n)
}

/// Where a UDP payload starts in the frames `udp_headers` builds.
pub const UDP_PAYLOAD: usize = ETH + 28;

/// The Ethernet, IPv4 and UDP headers (no UDP checksum) of a datagram of
/// `payload` bytes from `me`:`sport` to `dst_mac`/`dst`:`dport`; the
/// payload itself (at `UDP_PAYLOAD`) is the caller's. Its frame length.
pub fn udp_headers(
    me: &Me,
    dst_mac: [u8; 6],
    dst: [u8; 4],
    ports: (u16, u16),
    payload: usize,
    out: &mut [u8],
) -> Option<usize> {
    let total = 20 + 8 + payload;
    let o = out.get_mut(..ETH + total)?;
    o[..6].copy_from_slice(&dst_mac);
    o[6..12].copy_from_slice(&me.mac);
    put16(o, 12, ETHERTYPE_IPV4);
    let ip = &mut o[ETH..];
    ip[..20].fill(0);
    ip[0] = 0x45;
    put16(ip, 2, total as u16);
    put16(ip, 6, 0x4000); // don't fragment
    ip[8] = 64;
    ip[9] = PROTO_UDP;
    ip[12..16].copy_from_slice(&me.ip);
    ip[16..20].copy_from_slice(&dst);
    let c = checksum(&ip[..20], 0);
    put16(ip, 10, c);
    let u = &mut ip[20..];
    put16(u, 0, ports.0);
    put16(u, 2, ports.1);
    put16(u, 4, (8 + payload) as u16);
    put16(u, 6, 0);
    Some(ETH + total)
}

/// The UDP payload of `f` when it is an IPv4 datagram to `port` (any
/// address: a DHCP client has none yet).
pub fn udp_payload_to_port(f: &[u8], port: u16) -> Option<&[u8]> {
    if f.len() < ETH + 28 || be16(f, 12) != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = &f[ETH..];
    let ihl = usize::from(ip[0] & 0xf) * 4;
    if ip[9] != PROTO_UDP || ihl < 20 || ip.len() < ihl + 8 || be16(ip, ihl + 2) != port {
        return None;
    }
    let len = usize::from(be16(ip, ihl + 4)).checked_sub(8)?;
    ip.get(ihl + 8..ihl + 8 + len)
}

/// The UDP payload length when `f` is a UDP datagram to `me`.
pub fn udp_to_me(me: &Me, f: &[u8]) -> Option<usize> {
    if f.len() < ETH + 28 || be16(f, 12) != ETHERTYPE_IPV4 || f[..6] != me.mac {
        return None;
    }
    let ip = &f[ETH..];
    let ihl = usize::from(ip[0] & 0xf) * 4;
    if ip[9] != PROTO_UDP || ip[16..20] != me.ip || ihl < 20 || ip.len() < ihl + 8 {
        return None;
    }
    usize::from(be16(ip, ihl + 4)).checked_sub(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 1, 2, 3];
    const PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 9];

    fn me() -> Me {
        let mut m = Me {
            mac: MAC,
            ip: [10, 99, 0, 2],
            tcp_ports: [0; MAX_TCP_PORTS],
            n_tcp_ports: 0,
        };
        assert!(parse_ports(b"22,8080", &mut m));
        m
    }

    fn eth(dst: [u8; 6], kind: u16, body: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&PEER);
        f.extend_from_slice(&kind.to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    fn ip_packet(proto: u8, dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0, 10, 99, 0, 1];
        p.extend_from_slice(&dst);
        let total = (20 + payload.len()) as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        let c = checksum(&p, 0);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(parse_ipv4(b"10.99.0.2/24"), Some(([10, 99, 0, 2], 24)));
        assert_eq!(parse_ipv4(b"10.99.0.2"), Some(([10, 99, 0, 2], 32)));
        for bad in [
            &b"10.99.0"[..],
            b"10.99.0.256",
            b"10.99.0.2/33",
            b"1.2.3.4.5",
            b"a.b.c.d",
        ] {
            assert_eq!(parse_ipv4(bad), None);
        }
        let mut m = me();
        assert!(!parse_ports(b"22,x", &mut m));
    }

    #[test]
    fn arp_requests_for_us_are_answered() {
        let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
        arp.extend_from_slice(&PEER);
        arp.extend_from_slice(&[10, 99, 0, 1]);
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&[10, 99, 0, 2]);
        let f = eth([0xff; 6], ETHERTYPE_ARP, &arp);
        let mut out = [0u8; 128];
        let n = answer(&me(), &f, &mut out).unwrap();
        assert_eq!(n, 42);
        assert_eq!(&out[..6], &PEER);
        assert_eq!(&out[6..12], &MAC);
        assert_eq!(be16(&out, 20), 2, "a reply");
        assert_eq!(&out[22..28], &MAC);
        assert_eq!(&out[28..32], &[10, 99, 0, 2]);
        assert_eq!(&out[38..42], &[10, 99, 0, 1]);
        // For someone else: silence.
        let mut other = arp.clone();
        other[24..28].copy_from_slice(&[10, 99, 0, 3]);
        assert!(answer(&me(), &eth([0xff; 6], ETHERTYPE_ARP, &other), &mut out).is_none());
    }

    #[test]
    fn pings_are_answered_with_valid_checksums() {
        let mut icmp = vec![8, 0, 0, 0, 0, 7, 0, 1, b'h', b'i', b'!'];
        let c = checksum(&icmp, 0);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let f = eth(
            MAC,
            ETHERTYPE_IPV4,
            &ip_packet(PROTO_ICMP, [10, 99, 0, 2], &icmp),
        );
        let mut out = [0u8; 256];
        let n = answer(&me(), &f, &mut out).unwrap();
        assert_eq!(n, f.len());
        let ip = &out[ETH..n];
        assert_eq!(checksum(&ip[..20], 0), 0);
        assert_eq!(&ip[12..16], &[10, 99, 0, 2]);
        assert_eq!(&ip[16..20], &[10, 99, 0, 1]);
        assert_eq!(ip[20], 0, "echo reply");
        assert_eq!(checksum(&ip[20..], 0), 0);
        assert_eq!(&ip[28..], b"hi!");
        // Not for us, or not a request: silence.
        let f = eth(
            MAC,
            ETHERTYPE_IPV4,
            &ip_packet(PROTO_ICMP, [10, 99, 0, 7], &icmp),
        );
        assert!(answer(&me(), &f, &mut out).is_none());
        let f = eth(
            [2, 0, 0, 0, 0, 1],
            ETHERTYPE_IPV4,
            &ip_packet(PROTO_ICMP, [10, 99, 0, 2], &icmp),
        );
        assert!(answer(&me(), &f, &mut out).is_none());
    }

    #[test]
    fn udp_is_echoed_to_the_sender() {
        let mut udp = vec![0x30, 0x39, 0x1e, 0x61, 0, 13, 0, 0];
        udp.extend_from_slice(b"hello");
        let sum = pseudo_sum(&[10, 99, 0, 1], &[10, 99, 0, 2], PROTO_UDP, udp.len());
        let c = checksum(&udp, sum);
        udp[6..8].copy_from_slice(&c.to_be_bytes());
        let f = eth(
            MAC,
            ETHERTYPE_IPV4,
            &ip_packet(PROTO_UDP, [10, 99, 0, 2], &udp),
        );
        let mut out = [0u8; 256];
        let n = answer(&me(), &f, &mut out).unwrap();
        let ip = &out[ETH..n];
        let u = &ip[20..];
        assert_eq!((be16(u, 0), be16(u, 2)), (0x1e61, 0x3039));
        assert_eq!(&u[8..], b"hello");
        let sum = pseudo_sum(&ip[12..16], &ip[16..20], PROTO_UDP, u.len());
        assert_eq!(checksum(u, sum), 0, "UDP checksum still valid");
        // Truncated packets are ignored, never read past.
        let short = &f[..f.len() - 3];
        assert!(answer(&me(), short, &mut out).is_none());
    }

    #[test]
    fn syns_get_syn_ack_on_listed_ports_and_rst_elsewhere() {
        let syn = |port: u16, flags: u8| {
            let mut t = vec![0u8; 20];
            t[0..2].copy_from_slice(&40000u16.to_be_bytes());
            t[2..4].copy_from_slice(&port.to_be_bytes());
            t[4..8].copy_from_slice(&1000u32.to_be_bytes());
            t[12] = 5 << 4;
            t[13] = flags;
            eth(
                MAC,
                ETHERTYPE_IPV4,
                &ip_packet(PROTO_TCP, [10, 99, 0, 2], &t),
            )
        };
        let mut out = [0u8; 256];
        for (port, want) in [
            (22u16, TCP_SYN | TCP_ACK),
            (8080, TCP_SYN | TCP_ACK),
            (23, TCP_RST | TCP_ACK),
        ] {
            let n = answer(&me(), &syn(port, TCP_SYN), &mut out).unwrap();
            let ip = &out[ETH..n];
            let t = &ip[20..];
            assert_eq!(t[13], want, "port {port}");
            assert_eq!(be16(t, 0), port);
            assert_eq!(u32::from_be_bytes([t[8], t[9], t[10], t[11]]), 1001);
            let sum = pseudo_sum(&ip[12..16], &ip[16..20], PROTO_TCP, 20);
            assert_eq!(checksum(t, sum), 0);
            assert_eq!(checksum(&ip[..20], 0), 0);
        }
        assert!(answer(&me(), &syn(22, TCP_ACK), &mut out).is_none());
        assert!(answer(&me(), &syn(22, TCP_RST), &mut out).is_none());
    }

    #[test]
    fn bench_frames_round_trip() {
        let m = me();
        let mut out = [0u8; 2048];
        let n = arp_request(&m, [10, 99, 0, 1], &mut out).unwrap();
        let mut host = m;
        host.ip = [10, 99, 0, 1];
        host.mac = PEER;
        // The host's answer to our request names its MAC.
        let mut reply = [0u8; 128];
        let r = answer(&host, &out[..n], &mut reply).unwrap();
        assert_eq!(arp_reply_from(&reply[..r], [10, 99, 0, 1]), Some(PEER));
        assert_eq!(arp_reply_from(&reply[..r], [10, 99, 0, 7]), None);
        let n = udp_frame(&m, PEER, [10, 99, 0, 1], (9, 7777), 1400, &mut out).unwrap();
        assert_eq!(n, 14 + 20 + 8 + 1400);
        assert_eq!(checksum(&out[14..34], 0), 0);
        assert_eq!(udp_to_me(&host, &out[..n]), Some(1400));
        assert_eq!(udp_to_me(&m, &out[..n]), None);
        assert!(udp_frame(&m, PEER, [10, 99, 0, 1], (9, 9), 4000, &mut out).is_none());
    }
}
