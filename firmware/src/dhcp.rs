//! The DHCP client of `kiln.mode=serve`, as pure functions (unit-tested on
//! the host): DISCOVER and REQUEST frames (broadcast from 0.0.0.0:68, as a
//! client without an address sends them) and the parsing of OFFER, ACK and
//! NAK replies with the options the firmware honours: subnet mask (1),
//! router (3), classless static routes (121, whose default route wins over
//! option 3 as RFC 3442 says), interface MTU (26), lease time (51) and the
//! server identifier (54). The retry schedule lives here too.

use crate::net_echo::{udp_headers, udp_payload_to_port, Me, UDP_PAYLOAD};

pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;

const OP_REQUEST: u8 = 1;
const OP_REPLY: u8 = 2;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Fixed part of a DHCP message, up to and including the magic cookie.
const FIXED: usize = 240;
/// Broadcast flag: the server answers to the broadcast address (we cannot
/// take unicast IP before we have an address).
const FLAG_BROADCAST: u16 = 0x8000;

const OPT_PAD: u8 = 0;
const OPT_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_MTU: u8 = 26;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_LEASE_TIME: u8 = 51;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMS: u8 = 55;
const OPT_CLASSLESS_ROUTES: u8 = 121;
const OPT_END: u8 = 255;

/// Message types (option 53).
pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;

/// Options asked for in the parameter request list.
const WANTED: [u8; 6] = [
    OPT_MASK,
    OPT_ROUTER,
    OPT_CLASSLESS_ROUTES,
    OPT_MTU,
    OPT_LEASE_TIME,
    OPT_SERVER_ID,
];

/// What a server's reply said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// OFFER, ACK or NAK.
    pub kind: u8,
    /// The address offered or acknowledged.
    pub ip: [u8; 4],
    /// Prefix length from option 1 (None without it).
    pub prefix: Option<u8>,
    /// The default gateway: option 121's 0.0.0.0/0 route, else option 3.
    pub router: Option<[u8; 4]>,
    pub mtu: Option<u16>,
    pub lease_secs: Option<u32>,
    pub server_id: Option<[u8; 4]>,
}

/// A DISCOVER (`server` None) or a REQUEST for `ip` from `server`, as a
/// broadcast frame from `mac`; its length.
pub fn request_frame(
    mac: [u8; 6],
    xid: u32,
    request: Option<([u8; 4], [u8; 4])>,
    out: &mut [u8],
) -> Option<usize> {
    let me = Me {
        mac,
        ip: [0; 4],
        tcp_ports: [0; crate::net_echo::MAX_TCP_PORTS],
        n_tcp_ports: 0,
    };
    let msg = out.get_mut(UDP_PAYLOAD..)?;
    let len = message(mac, xid, request, msg)?;
    udp_headers(
        &me,
        [0xff; 6],
        [255; 4],
        (CLIENT_PORT, SERVER_PORT),
        len,
        out,
    )
}

/// The DHCP message itself (see `request_frame`); its length.
fn message(
    mac: [u8; 6],
    xid: u32,
    request: Option<([u8; 4], [u8; 4])>,
    out: &mut [u8],
) -> Option<usize> {
    // Fixed part, then at most: type (3), requested ip (6), server id (6),
    // parameter list (2 + 6), end (1); padded to the BOOTP minimum of 300.
    let m = out.get_mut(..300)?;
    m.fill(0);
    m[0] = OP_REQUEST;
    m[1] = 1; // Ethernet
    m[2] = 6;
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    m[10..12].copy_from_slice(&FLAG_BROADCAST.to_be_bytes());
    m[28..34].copy_from_slice(&mac);
    m[236..240].copy_from_slice(&MAGIC);
    let mut at = FIXED;
    let mut put = |bytes: &[u8]| {
        m[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    match request {
        None => put(&[OPT_MESSAGE_TYPE, 1, DISCOVER]),
        Some((ip, server)) => {
            put(&[OPT_MESSAGE_TYPE, 1, REQUEST]);
            put(&[OPT_REQUESTED_IP, 4]);
            put(&ip);
            put(&[OPT_SERVER_ID, 4]);
            put(&server);
        }
    }
    put(&[OPT_PARAMS, WANTED.len() as u8]);
    put(&WANTED);
    put(&[OPT_END]);
    Some(300)
}

/// The reply in frame `f` when it is one for us (`mac`, transaction `xid`).
pub fn parse_reply(f: &[u8], mac: [u8; 6], xid: u32) -> Option<Reply> {
    let m = udp_payload_to_port(f, CLIENT_PORT)?;
    if m.len() < FIXED
        || m[0] != OP_REPLY
        || m[4..8] != xid.to_be_bytes()
        || m[28..34] != mac
        || m[236..240] != MAGIC
    {
        return None;
    }
    let mut r = Reply {
        kind: 0,
        ip: [m[16], m[17], m[18], m[19]],
        prefix: None,
        router: None,
        mtu: None,
        lease_secs: None,
        server_id: None,
    };
    let mut classless_default = None;
    let mut opts = &m[FIXED..];
    while let Some((&code, rest)) = opts.split_first() {
        if code == OPT_END {
            break;
        }
        if code == OPT_PAD {
            opts = rest;
            continue;
        }
        let (&len, rest) = rest.split_first()?;
        let value = rest.get(..usize::from(len))?;
        opts = &rest[usize::from(len)..];
        match (code, value) {
            (OPT_MESSAGE_TYPE, [t]) => r.kind = *t,
            (OPT_MASK, [a, b, c, d]) => {
                r.prefix = mask_prefix(u32::from_be_bytes([*a, *b, *c, *d]))
            }
            (OPT_ROUTER, [a, b, c, d, ..]) => r.router = Some([*a, *b, *c, *d]),
            (OPT_MTU, [a, b]) => r.mtu = Some(u16::from_be_bytes([*a, *b])),
            (OPT_LEASE_TIME, [a, b, c, d]) => {
                r.lease_secs = Some(u32::from_be_bytes([*a, *b, *c, *d]))
            }
            (OPT_SERVER_ID, [a, b, c, d]) => r.server_id = Some([*a, *b, *c, *d]),
            (OPT_CLASSLESS_ROUTES, v) => classless_default = default_route(v),
            _ => {}
        }
    }
    if classless_default.is_some() {
        r.router = classless_default;
    }
    matches!(r.kind, OFFER | ACK | NAK).then_some(r)
}

/// The prefix length of a contiguous netmask.
fn mask_prefix(mask: u32) -> Option<u8> {
    let n = mask.leading_ones();
    (mask.checked_shl(n).unwrap_or(0) == 0).then_some(n as u8)
}

/// The gateway of option 121's default route (prefix 0), if it has one.
fn default_route(mut v: &[u8]) -> Option<[u8; 4]> {
    while let Some((&prefix, rest)) = v.split_first() {
        if prefix > 32 {
            return None;
        }
        let dest = usize::from(prefix).div_ceil(8);
        let gw = rest.get(dest..dest + 4)?;
        if prefix == 0 {
            return Some([gw[0], gw[1], gw[2], gw[3]]);
        }
        v = &rest[dest + 4..];
    }
    None
}

/// Milliseconds to wait for an answer to the `attempt`th message (0-based):
/// 500 ms doubling to at most 4 s, as RFC 2131's backoff does at a faster
/// pace (the firmware gives up after `GIVE_UP_MS`).
pub fn backoff_ms(attempt: u32) -> u64 {
    (500u64 << attempt.min(3)).min(4000)
}

/// How long the client tries before it prints `dhcp failed`.
pub const GIVE_UP_MS: u64 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 1, 2, 3];

    /// A server's reply frame with the given options.
    fn reply(kind: u8, xid: u32, opts: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; FIXED];
        m[0] = OP_REPLY;
        m[1] = 1;
        m[2] = 6;
        m[4..8].copy_from_slice(&xid.to_be_bytes());
        m[16..20].copy_from_slice(&[10, 0, 0, 7]);
        m[28..34].copy_from_slice(&MAC);
        m[236..240].copy_from_slice(&MAGIC);
        m.extend_from_slice(&[OPT_MESSAGE_TYPE, 1, kind]);
        m.extend_from_slice(opts);
        m.push(OPT_END);
        let me = Me {
            mac: [2, 0, 0, 0, 0, 1],
            ip: [10, 0, 0, 1],
            tcp_ports: [0; 8],
            n_tcp_ports: 0,
        };
        let mut f = vec![0u8; UDP_PAYLOAD + m.len()];
        udp_headers(
            &me,
            MAC,
            [255; 4],
            (SERVER_PORT, CLIENT_PORT),
            m.len(),
            &mut f,
        )
        .unwrap();
        f[UDP_PAYLOAD..].copy_from_slice(&m);
        f
    }

    #[test]
    fn discover_and_request_are_broadcast_bootp_requests() {
        let mut f = [0u8; 1514];
        let n = request_frame(MAC, 0x1234_5678, None, &mut f).unwrap();
        assert_eq!(n, UDP_PAYLOAD + 300);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[14 + 16..14 + 20], &[255; 4]);
        let m = &f[UDP_PAYLOAD..n];
        assert_eq!(
            (m[0], &m[4..8], &m[28..34]),
            (1, &[0x12, 0x34, 0x56, 0x78][..], &MAC[..])
        );
        assert_eq!(&m[240..243], &[53, 1, DISCOVER]);
        let n = request_frame(MAC, 9, Some(([10, 0, 0, 7], [10, 0, 0, 1])), &mut f).unwrap();
        let m = &f[UDP_PAYLOAD..n];
        assert_eq!(
            &m[240..255],
            &[53, 1, REQUEST, 50, 4, 10, 0, 0, 7, 54, 4, 10, 0, 0, 1]
        );
    }

    #[test]
    fn reply_options_are_honoured_and_classless_default_wins() {
        let f = reply(
            ACK,
            7,
            &[
                1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 0, 1, 26, 2, 5, 220, 51, 4, 0, 0, 0x0e, 0x10,
                54, 4, 10, 0, 0,
                2, // classless: 169.254.169.254/32 via 10.0.0.3, 0/0 via 10.0.0.9
                121, 14, 32, 169, 254, 169, 254, 10, 0, 0, 3, 0, 10, 0, 0, 9,
            ],
        );
        let r = parse_reply(&f, MAC, 7).unwrap();
        assert_eq!(r.kind, ACK);
        assert_eq!(r.ip, [10, 0, 0, 7]);
        assert_eq!(r.prefix, Some(24));
        assert_eq!(r.router, Some([10, 0, 0, 9]));
        assert_eq!(r.mtu, Some(1500));
        assert_eq!(r.lease_secs, Some(3600));
        assert_eq!(r.server_id, Some([10, 0, 0, 2]));
    }

    #[test]
    fn foreign_or_broken_replies_are_ignored() {
        let f = reply(OFFER, 7, &[1, 4, 255, 255, 0, 0]);
        assert_eq!(parse_reply(&f, MAC, 7).map(|r| r.prefix), Some(Some(16)));
        assert!(parse_reply(&f, MAC, 8).is_none());
        assert!(parse_reply(&f, [0; 6], 7).is_none());
        // An option running past the end of the message.
        let bad = reply(OFFER, 7, &[3, 40, 1]);
        assert!(parse_reply(&bad[..bad.len() - 1], MAC, 7).is_none());
        // A non-contiguous mask gives no prefix; a route with prefix > 32 no router.
        let odd = reply(OFFER, 7, &[1, 4, 255, 0, 255, 0, 121, 5, 33, 1, 2, 3, 4]);
        let r = parse_reply(&odd, MAC, 7).unwrap();
        assert_eq!((r.prefix, r.router), (None, None));
        for cut in 0..f.len() {
            let _ = parse_reply(&f[..cut], MAC, 7);
        }
    }

    #[test]
    fn backoff_doubles_to_four_seconds() {
        let v: Vec<u64> = (0..6).map(backoff_ms).collect();
        assert_eq!(v, [500, 1000, 2000, 4000, 4000, 4000]);
    }
}
