//! The frames of `kiln.ping=<ip>` in serve mode, as pure functions (unit-
//! tested on the host): which address to ARP for (the target on our
//! subnet, else the router), the ICMP echo request we send, and the seq of
//! an echo reply meant for us.

use crate::net_echo::{checksum, Me};

const ETH: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const PROTO_ICMP: u8 = 1;
/// Bytes of the request's body after the ICMP header ("kiln" and a pattern).
const BODY: usize = 24;

/// The address whose MAC frames to `target` go to: `target` itself when it
/// is on our subnet (`me`/`prefix`) or there is no router, else the router.
pub fn next_hop(me: [u8; 4], prefix: u8, router: Option<[u8; 4]>, target: [u8; 4]) -> [u8; 4] {
    let mask = match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    };
    let same = u32::from_be_bytes(me) & mask == u32::from_be_bytes(target) & mask;
    match router {
        Some(r) if !same => r,
        _ => target,
    }
}

/// An ICMP echo request from `me` to `dst` (through `dst_mac`) with
/// identifier `id` and sequence `seq`; its frame length.
pub fn echo_request(
    me: &Me,
    dst_mac: [u8; 6],
    dst: [u8; 4],
    id: u16,
    seq: u16,
    out: &mut [u8],
) -> Option<usize> {
    let total = 20 + 8 + BODY;
    let o = out.get_mut(..ETH + total)?;
    o[..6].copy_from_slice(&dst_mac);
    o[6..12].copy_from_slice(&me.mac);
    o[12..14].copy_from_slice(&ETHERTYPE_IPV4);
    let ip = &mut o[ETH..];
    ip[..20].fill(0);
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&seq.to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = PROTO_ICMP;
    ip[12..16].copy_from_slice(&me.ip);
    ip[16..20].copy_from_slice(&dst);
    let c = checksum(&ip[..20], 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let icmp = &mut ip[20..];
    icmp[..4].fill(0);
    icmp[0] = 8;
    icmp[4..6].copy_from_slice(&id.to_be_bytes());
    icmp[6..8].copy_from_slice(&seq.to_be_bytes());
    icmp[8..12].copy_from_slice(b"kiln");
    for (i, b) in icmp[12..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let c = checksum(icmp, 0);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Some(ETH + total)
}

/// The sequence number of `f` when it is an ICMP echo reply from `from` to
/// `me` carrying identifier `id` (and a valid ICMP checksum).
pub fn echo_reply_seq(me: &Me, f: &[u8], from: [u8; 4], id: u16) -> Option<u16> {
    if f.get(..6)? != me.mac || f.get(12..14)? != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = f.get(ETH..)?;
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != PROTO_ICMP {
        return None;
    }
    let ihl = usize::from(ip[0] & 0xf) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[12..16] != from || ip[16..20] != me.ip || ihl < 20 || total < ihl + 8 {
        return None;
    }
    let icmp = ip.get(ihl..total)?;
    if icmp[0] != 0 || icmp[1] != 0 || checksum(icmp, 0) != 0 {
        return None;
    }
    if u16::from_be_bytes([icmp[4], icmp[5]]) != id {
        return None;
    }
    Some(u16::from_be_bytes([icmp[6], icmp[7]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net_echo::{answer, MAX_TCP_PORTS};

    fn me(mac_last: u8, ip: [u8; 4]) -> Me {
        Me {
            mac: [0x52, 0x54, 0, 0, 0, mac_last],
            ip,
            tcp_ports: [0; MAX_TCP_PORTS],
            n_tcp_ports: 0,
        }
    }

    #[test]
    fn the_next_hop_is_the_target_on_link_and_the_router_off_it() {
        let r = Some([10, 77, 0, 1]);
        assert_eq!(
            next_hop([10, 77, 0, 5], 24, r, [10, 77, 0, 50]),
            [10, 77, 0, 50]
        );
        assert_eq!(
            next_hop([10, 77, 0, 5], 24, r, [10, 78, 0, 50]),
            [10, 77, 0, 1]
        );
        assert_eq!(
            next_hop([10, 77, 0, 5], 24, None, [10, 78, 0, 50]),
            [10, 78, 0, 50]
        );
        assert_eq!(
            next_hop([10, 77, 0, 5], 0, r, [192, 0, 2, 1]),
            [192, 0, 2, 1]
        );
        assert_eq!(
            next_hop([10, 77, 0, 5], 32, r, [10, 77, 0, 6]),
            [10, 77, 0, 1]
        );
    }

    #[test]
    fn a_request_is_answered_by_net_echo_and_the_reply_recognised() {
        let a = me(1, [10, 77, 0, 5]);
        let b = me(2, [10, 77, 0, 50]);
        let mut req = [0u8; 128];
        let n = echo_request(&a, b.mac, b.ip, 0x6b6c, 7, &mut req).unwrap();
        assert_eq!(n, 14 + 20 + 8 + BODY);
        // Valid IP and ICMP checksums.
        assert_eq!(checksum(&req[14..34], 0), 0);
        assert_eq!(checksum(&req[34..n], 0), 0);
        // The peer's net-echo answers it; we recognise the answer.
        let mut rep = [0u8; 128];
        let m = answer(&b, &req[..n], &mut rep).unwrap();
        assert_eq!(echo_reply_seq(&a, &rep[..m], b.ip, 0x6b6c), Some(7));
        // Not for another identifier, another sender, or our own request.
        assert_eq!(echo_reply_seq(&a, &rep[..m], b.ip, 1), None);
        assert_eq!(echo_reply_seq(&a, &rep[..m], [10, 77, 0, 51], 0x6b6c), None);
        assert_eq!(echo_reply_seq(&b, &req[..n], a.ip, 0x6b6c), None);
        // A corrupted reply is dropped; a truncated one too.
        rep[m - 1] ^= 0xff;
        assert_eq!(echo_reply_seq(&a, &rep[..m], b.ip, 0x6b6c), None);
        assert_eq!(echo_reply_seq(&a, &rep[..30], b.ip, 0x6b6c), None);
        // Too small a buffer builds nothing.
        assert_eq!(echo_request(&a, b.mac, b.ip, 1, 1, &mut [0u8; 40]), None);
    }
}
