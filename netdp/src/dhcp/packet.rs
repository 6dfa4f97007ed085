//! The DHCPv4/BOOTP wire format: a pure parser that never panics and an encoder (RFC 2131, RFC 2132, RFC 3396 long options).

use std::net::Ipv4Addr;

/// Fixed BOOTP header length (before the magic cookie).
pub const HEADER_LEN: usize = 236;
/// The magic cookie that starts the options field.
pub const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Shortest packet with a cookie.
pub const MIN_LEN: usize = HEADER_LEN + 4;
/// BOOTP's minimum message size; replies are padded to it.
pub const BOOTP_MIN_LEN: usize = 300;

/// BOOTREQUEST (client to server).
pub const OP_REQUEST: u8 = 1;
/// BOOTREPLY (server to client).
pub const OP_REPLY: u8 = 2;
/// Ethernet hardware type.
pub const HTYPE_ETHERNET: u8 = 1;
/// The broadcast bit of the flags field.
pub const FLAG_BROADCAST: u16 = 0x8000;

/// Why a packet was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than the fixed header plus cookie.
    #[error("packet of {0} bytes is shorter than a DHCP header")]
    Truncated(usize),
    /// The magic cookie is wrong (a plain BOOTP or garbage packet).
    #[error("missing DHCP magic cookie")]
    NoMagic,
}

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// Client looks for servers.
    Discover,
    /// Server offers an address.
    Offer,
    /// Client asks for (or renews) an address.
    Request,
    /// Client says the address is in use.
    Decline,
    /// Server confirms.
    Ack,
    /// Server refuses.
    Nak,
    /// Client gives the address back.
    Release,
    /// Client has an address and asks only for options.
    Inform,
}

impl MessageType {
    /// Decode option 53's value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            _ => return None,
        })
    }

    /// Option 53's value.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Discover => 1,
            Self::Offer => 2,
            Self::Request => 3,
            Self::Decline => 4,
            Self::Ack => 5,
            Self::Nak => 6,
            Self::Release => 7,
            Self::Inform => 8,
        }
    }
}

/// Option codes kiln reads or writes.
pub mod code {
    /// Padding.
    pub const PAD: u8 = 0;
    /// Subnet mask.
    pub const SUBNET_MASK: u8 = 1;
    /// Routers.
    pub const ROUTER: u8 = 3;
    /// DNS servers.
    pub const DNS: u8 = 6;
    /// Host name.
    pub const HOST_NAME: u8 = 12;
    /// Domain name.
    pub const DOMAIN_NAME: u8 = 15;
    /// Interface MTU.
    pub const MTU: u8 = 26;
    /// Broadcast address.
    pub const BROADCAST: u8 = 28;
    /// Requested IP address.
    pub const REQUESTED_IP: u8 = 50;
    /// Lease time.
    pub const LEASE_TIME: u8 = 51;
    /// Option overload.
    pub const OVERLOAD: u8 = 52;
    /// Message type.
    pub const MESSAGE_TYPE: u8 = 53;
    /// Server identifier.
    pub const SERVER_ID: u8 = 54;
    /// Parameter request list.
    pub const PARAMETER_LIST: u8 = 55;
    /// Message (error text).
    pub const MESSAGE: u8 = 56;
    /// Renewal (T1) time.
    pub const RENEWAL_TIME: u8 = 58;
    /// Rebinding (T2) time.
    pub const REBINDING_TIME: u8 = 59;
    /// Client identifier.
    pub const CLIENT_ID: u8 = 61;
    /// Classless static routes.
    pub const CLASSLESS_ROUTES: u8 = 121;
    /// End of options.
    pub const END: u8 = 255;
}

/// A DHCP message: the fixed header and its options in order of first
/// appearance (repeated codes concatenated, as RFC 3396 says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// BOOTREQUEST or BOOTREPLY.
    pub op: u8,
    /// Hardware type.
    pub htype: u8,
    /// Hardware address length.
    pub hlen: u8,
    /// Relay hops.
    pub hops: u8,
    /// Transaction id.
    pub xid: u32,
    /// Seconds since the client started.
    pub secs: u16,
    /// Flags (broadcast bit).
    pub flags: u16,
    /// Client's current address.
    pub ciaddr: Ipv4Addr,
    /// "Your" (the client's new) address.
    pub yiaddr: Ipv4Addr,
    /// Next server address.
    pub siaddr: Ipv4Addr,
    /// Relay agent address.
    pub giaddr: Ipv4Addr,
    /// Client hardware address (first `hlen` bytes meaningful).
    pub chaddr: [u8; 16],
    /// Options as (code, value).
    pub options: Vec<(u8, Vec<u8>)>,
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    let mut o = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        o.copy_from_slice(s);
    }
    Ipv4Addr::from(o)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map_or(0, |s| u16::from_be_bytes([s[0], s[1]]))
}

/// Parse one packet. Never panics: short packets and a missing cookie are
/// errors; truncated, oversized or malformed options are dropped, everything
/// parsed before them is kept.
pub fn parse(b: &[u8]) -> Result<Message, PacketError> {
    if b.len() < MIN_LEN {
        return Err(PacketError::Truncated(b.len()));
    }
    if b[HEADER_LEN..MIN_LEN] != MAGIC {
        return Err(PacketError::NoMagic);
    }
    let mut chaddr = [0u8; 16];
    chaddr.copy_from_slice(&b[28..44]);
    let mut m = Message {
        op: b[0],
        htype: b[1],
        hlen: b[2],
        hops: b[3],
        xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        secs: u16_at(b, 8),
        flags: u16_at(b, 10),
        ciaddr: ip_at(b, 12),
        yiaddr: ip_at(b, 16),
        siaddr: ip_at(b, 20),
        giaddr: ip_at(b, 24),
        chaddr,
        options: Vec::new(),
    };
    let opts = &b[MIN_LEN..];
    let mut i = 0;
    while i < opts.len() {
        let c = opts[i];
        if c == code::PAD {
            i += 1;
            continue;
        }
        if c == code::END {
            break;
        }
        let Some(&len) = opts.get(i + 1) else { break };
        let start = i + 2;
        let Some(value) = opts.get(start..start + usize::from(len)) else {
            break;
        };
        match m.options.iter_mut().find(|(k, _)| *k == c) {
            Some((_, v)) => v.extend_from_slice(value),
            None => m.options.push((c, value.to_vec())),
        }
        i = start + usize::from(len);
    }
    Ok(m)
}

impl Message {
    /// The value of option `c`, if present.
    pub fn option(&self, c: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(k, _)| *k == c)
            .map(|(_, v)| v.as_slice())
    }

    /// Option 53, if present and known.
    pub fn message_type(&self) -> Option<MessageType> {
        match self.option(code::MESSAGE_TYPE) {
            Some([t]) => MessageType::from_u8(*t),
            _ => None,
        }
    }

    fn ip_option(&self, c: u8) -> Option<Ipv4Addr> {
        let v: [u8; 4] = self.option(c)?.try_into().ok()?;
        Some(Ipv4Addr::from(v))
    }

    /// Option 50 (requested IP).
    pub fn requested_ip(&self) -> Option<Ipv4Addr> {
        self.ip_option(code::REQUESTED_IP)
    }

    /// Option 54 (server identifier).
    pub fn server_id(&self) -> Option<Ipv4Addr> {
        self.ip_option(code::SERVER_ID)
    }

    /// The client's Ethernet MAC, if the hardware type is Ethernet.
    pub fn mac(&self) -> Option<[u8; 6]> {
        if self.htype != HTYPE_ETHERNET || self.hlen != 6 {
            return None;
        }
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.chaddr[..6]);
        Some(m)
    }

    /// Append option `c`; [`Message::encode`] splits values longer than 255
    /// bytes into several pieces (RFC 3396).
    pub fn push_option(&mut self, c: u8, value: Vec<u8>) {
        self.options.push((c, value));
    }

    /// The wire form: header, cookie, options, END, padded to 300 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(576);
        b.extend_from_slice(&[self.op, self.htype, self.hlen, self.hops]);
        b.extend_from_slice(&self.xid.to_be_bytes());
        b.extend_from_slice(&self.secs.to_be_bytes());
        b.extend_from_slice(&self.flags.to_be_bytes());
        for a in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            b.extend_from_slice(&a.octets());
        }
        b.extend_from_slice(&self.chaddr);
        b.resize(HEADER_LEN, 0); // sname and file stay empty
        b.extend_from_slice(&MAGIC);
        for (c, v) in &self.options {
            if v.is_empty() {
                b.extend_from_slice(&[*c, 0]);
            }
            for chunk in v.chunks(255) {
                b.push(*c);
                // A chunk is at most 255 bytes long.
                b.push(chunk.len() as u8);
                b.extend_from_slice(chunk);
            }
        }
        b.push(code::END);
        if b.len() < BOOTP_MIN_LEN {
            b.resize(BOOTP_MIN_LEN, 0);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discover() -> Message {
        let mut chaddr = [0u8; 16];
        chaddr[..6].copy_from_slice(&[2, 0, 0, 0, 0, 7]);
        Message {
            op: OP_REQUEST,
            htype: HTYPE_ETHERNET,
            hlen: 6,
            hops: 0,
            xid: 0xdead_beef,
            secs: 3,
            flags: FLAG_BROADCAST,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            options: vec![
                (code::MESSAGE_TYPE, vec![1]),
                (code::REQUESTED_IP, vec![10, 0, 0, 5]),
            ],
        }
    }

    #[test]
    fn roundtrip() {
        let m = discover();
        let wire = m.encode();
        assert_eq!(wire.len(), BOOTP_MIN_LEN);
        let back = parse(&wire).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.message_type(), Some(MessageType::Discover));
        assert_eq!(back.requested_ip(), Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(back.mac(), Some([2, 0, 0, 0, 0, 7]));
        assert_eq!(back.server_id(), None);
    }

    #[test]
    fn long_options_are_split_and_joined() {
        let mut m = discover();
        let long: Vec<u8> = (0..600u32).map(|i| (i % 251) as u8).collect();
        m.push_option(code::DNS, long.clone());
        let wire = m.encode();
        assert_eq!(
            parse(&wire).unwrap().option(code::DNS),
            Some(long.as_slice())
        );
    }

    #[test]
    fn short_packets_and_bad_cookies_are_refused() {
        assert_eq!(parse(&[0; 10]), Err(PacketError::Truncated(10)));
        let mut wire = discover().encode();
        wire[HEADER_LEN] = 0;
        assert_eq!(parse(&wire), Err(PacketError::NoMagic));
    }

    #[test]
    fn a_truncated_option_ends_parsing_but_keeps_earlier_ones() {
        let mut wire = discover().encode();
        wire.truncate(MIN_LEN + 3); // type option, then half of the next header
        wire.push(code::REQUESTED_IP);
        wire.push(4);
        wire.push(10); // only one of four value bytes
        let m = parse(&wire).unwrap();
        assert_eq!(m.message_type(), Some(MessageType::Discover));
        assert_eq!(m.requested_ip(), None);
    }

    #[test]
    fn wrong_length_typed_options_read_as_absent() {
        let mut m = discover();
        m.options = vec![
            (code::MESSAGE_TYPE, vec![1, 2]),
            (code::SERVER_ID, vec![1, 2, 3]),
        ];
        let m = parse(&m.encode()).unwrap();
        assert_eq!(m.message_type(), None);
        assert_eq!(m.server_id(), None);
        let mut n = discover();
        n.hlen = 16;
        assert_eq!(n.mac(), None);
    }
}
