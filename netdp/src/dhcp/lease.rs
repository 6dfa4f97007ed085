//! Static leases and network options, and the pure decision of what to answer to a client message (Neutron semantics: known MACs only).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::packet::{code, Message, MessageType, FLAG_BROADCAST, OP_REPLY, OP_REQUEST};

/// A guest port's fixed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The port's MAC address.
    pub mac: [u8; 6],
    /// The port's fixed IPv4 address.
    pub ip: Ipv4Addr,
    /// Host name handed out (option 12).
    pub hostname: Option<String>,
}

/// A classless static route (option 121).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticRoute {
    /// Destination network.
    pub dest: Ipv4Addr,
    /// Destination prefix length (0..=32).
    pub prefix: u8,
    /// Next hop.
    pub gateway: Ipv4Addr,
}

/// Options of one network's subnet, the same for every lease on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkOptions {
    /// Subnet prefix length (option 1 as a mask).
    pub prefix: u8,
    /// Default gateway (option 3; also the default route in option 121).
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6).
    pub dns: Vec<Ipv4Addr>,
    /// Domain name (option 15).
    pub domain: Option<String>,
    /// Interface MTU (option 26).
    pub mtu: Option<u16>,
    /// Host routes (option 121).
    pub routes: Vec<StaticRoute>,
    /// Lease time in seconds (option 51); T1 is half, T2 seven eighths.
    pub lease_secs: u32,
}

/// Where a reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:68 on the network's bridge (client has no address yet).
    Broadcast,
    /// The client's current address, port 68.
    Unicast(Ipv4Addr),
}

/// A reply to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The message.
    pub message: Message,
    /// Where to send it.
    pub to: Destination,
}

/// The leases of one network, by MAC.
pub type LeaseTable = HashMap<[u8; 6], Lease>;

fn mask(prefix: u8) -> Ipv4Addr {
    let p = u32::from(prefix.min(32));
    Ipv4Addr::from(u32::MAX.checked_shl(32 - p).unwrap_or(0))
}

/// Option 121's value: for each route, the prefix length, the significant
/// octets of the destination, then the gateway (RFC 3442).
pub fn encode_routes(routes: &[StaticRoute]) -> Vec<u8> {
    let mut v = Vec::new();
    for r in routes {
        let prefix = r.prefix.min(32);
        v.push(prefix);
        let significant = usize::from(prefix).div_ceil(8);
        let dest = u32::from(r.dest) & u32::from(mask(prefix));
        v.extend_from_slice(&dest.to_be_bytes()[..significant]);
        v.extend_from_slice(&r.gateway.octets());
    }
    v
}

fn ips(list: &[Ipv4Addr]) -> Vec<u8> {
    list.iter().flat_map(|a| a.octets()).collect()
}

fn reply_to(req: &Message, kind: MessageType, server_id: Ipv4Addr) -> Message {
    Message {
        op: OP_REPLY,
        htype: req.htype,
        hlen: req.hlen,
        hops: 0,
        xid: req.xid,
        secs: 0,
        flags: req.flags,
        ciaddr: req.ciaddr,
        yiaddr: Ipv4Addr::UNSPECIFIED,
        siaddr: Ipv4Addr::UNSPECIFIED,
        giaddr: req.giaddr,
        chaddr: req.chaddr,
        options: vec![
            (code::MESSAGE_TYPE, vec![kind.to_u8()]),
            (code::SERVER_ID, server_id.octets().to_vec()),
        ],
    }
}

/// Add the network's and the lease's options; lease times unless `inform`.
fn add_options(m: &mut Message, net: &NetworkOptions, lease: &Lease, inform: bool) {
    if !inform {
        let t = net.lease_secs;
        m.push_option(code::LEASE_TIME, t.to_be_bytes().to_vec());
        m.push_option(code::RENEWAL_TIME, (t / 2).to_be_bytes().to_vec());
        let t2 = (u64::from(t) * 7 / 8) as u32; // never above t
        m.push_option(code::REBINDING_TIME, t2.to_be_bytes().to_vec());
    }
    m.push_option(code::SUBNET_MASK, mask(net.prefix).octets().to_vec());
    if let Some(r) = net.router {
        m.push_option(code::ROUTER, r.octets().to_vec());
    }
    if !net.dns.is_empty() {
        m.push_option(code::DNS, ips(&net.dns));
    }
    if let Some(d) = &net.domain {
        m.push_option(code::DOMAIN_NAME, d.as_bytes().to_vec());
    }
    if let Some(h) = &lease.hostname {
        m.push_option(code::HOST_NAME, h.as_bytes().to_vec());
    }
    if let Some(mtu) = net.mtu {
        m.push_option(code::MTU, mtu.to_be_bytes().to_vec());
    }
    if !net.routes.is_empty() {
        // A client that takes option 121 ignores option 3 (RFC 3442), so the
        // default route goes in too.
        let mut routes = net.routes.clone();
        if let Some(r) = net.router {
            routes.push(StaticRoute {
                dest: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                gateway: r,
            });
        }
        m.push_option(code::CLASSLESS_ROUTES, encode_routes(&routes));
    }
}

/// What to answer to `req` (None: stay silent). Pure: no I/O, never panics.
///
/// - unknown MAC, non-Ethernet, replies and unknown types: silence;
/// - DISCOVER: OFFER of the lease's address;
/// - REQUEST: ACK if it asks for the lease's address, NAK otherwise; silence
///   if it names another server;
/// - INFORM: ACK with options only, to the client's address;
/// - RELEASE, DECLINE: silence (the lease is static; nothing to free).
pub fn respond(
    req: &Message,
    server_id: Ipv4Addr,
    net: &NetworkOptions,
    leases: &LeaseTable,
) -> Option<Reply> {
    if req.op != OP_REQUEST {
        return None;
    }
    let lease = leases.get(&req.mac()?)?;
    let to_client = |m: &Message| {
        if !m.ciaddr.is_unspecified() && m.flags & FLAG_BROADCAST == 0 {
            Destination::Unicast(m.ciaddr)
        } else {
            Destination::Broadcast
        }
    };
    match req.message_type()? {
        MessageType::Discover => {
            let mut m = reply_to(req, MessageType::Offer, server_id);
            m.ciaddr = Ipv4Addr::UNSPECIFIED;
            m.yiaddr = lease.ip;
            add_options(&mut m, net, lease, false);
            Some(Reply {
                message: m,
                to: Destination::Broadcast,
            })
        }
        MessageType::Request => {
            if req.server_id().is_some_and(|s| s != server_id) {
                return None;
            }
            let asked = req
                .requested_ip()
                .or((!req.ciaddr.is_unspecified()).then_some(req.ciaddr));
            if asked == Some(lease.ip) {
                let mut m = reply_to(req, MessageType::Ack, server_id);
                m.yiaddr = lease.ip;
                add_options(&mut m, net, lease, false);
                let to = to_client(req);
                Some(Reply { message: m, to })
            } else {
                let mut m = reply_to(req, MessageType::Nak, server_id);
                m.ciaddr = Ipv4Addr::UNSPECIFIED;
                m.push_option(
                    code::MESSAGE,
                    b"requested address is not this port's".to_vec(),
                );
                Some(Reply {
                    message: m,
                    to: Destination::Broadcast,
                })
            }
        }
        MessageType::Inform => {
            let mut m = reply_to(req, MessageType::Ack, server_id);
            add_options(&mut m, net, lease, true);
            let to = to_client(req);
            Some(Reply { message: m, to })
        }
        MessageType::Release | MessageType::Decline => {
            tracing::debug!(ip = %lease.ip, "DHCP release/decline of a static lease ignored");
            None
        }
        MessageType::Offer | MessageType::Ack | MessageType::Nak => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::packet::{parse, HTYPE_ETHERNET};
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 7];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn net() -> NetworkOptions {
        NetworkOptions {
            prefix: 24,
            router: Some(Ipv4Addr::new(10, 0, 0, 1)),
            dns: vec![Ipv4Addr::new(10, 0, 0, 53), Ipv4Addr::new(10, 0, 0, 54)],
            domain: Some("kiln.test".into()),
            mtu: Some(1450),
            routes: vec![StaticRoute {
                dest: Ipv4Addr::new(172, 16, 0, 0),
                prefix: 12,
                gateway: Ipv4Addr::new(10, 0, 0, 254),
            }],
            lease_secs: 86400,
        }
    }

    fn leases() -> LeaseTable {
        let l = Lease {
            mac: MAC,
            ip: Ipv4Addr::new(10, 0, 0, 5),
            hostname: Some("vm-5".into()),
        };
        [(MAC, l)].into_iter().collect()
    }

    fn request(kind: MessageType, mac: [u8; 6], opts: Vec<(u8, Vec<u8>)>) -> Message {
        let mut chaddr = [0u8; 16];
        chaddr[..6].copy_from_slice(&mac);
        let mut options = vec![(code::MESSAGE_TYPE, vec![kind.to_u8()])];
        options.extend(opts);
        Message {
            op: OP_REQUEST,
            htype: HTYPE_ETHERNET,
            hlen: 6,
            hops: 0,
            xid: 42,
            secs: 0,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            options,
        }
    }

    fn answer(req: &Message) -> Option<Reply> {
        // Through the wire format both ways, as the server does it.
        let req = parse(&req.encode()).unwrap();
        respond(&req, SERVER, &net(), &leases()).map(|r| Reply {
            message: parse(&r.message.encode()).unwrap(),
            ..r
        })
    }

    #[test]
    fn discover_gets_an_offer_with_every_option() {
        let r = answer(&request(MessageType::Discover, MAC, vec![])).unwrap();
        let m = &r.message;
        assert_eq!(r.to, Destination::Broadcast);
        assert_eq!(
            (m.op, m.xid, m.yiaddr),
            (OP_REPLY, 42, Ipv4Addr::new(10, 0, 0, 5))
        );
        assert_eq!(m.message_type(), Some(MessageType::Offer));
        assert_eq!(m.server_id(), Some(SERVER));
        assert_eq!(m.option(code::SUBNET_MASK), Some(&[255, 255, 255, 0][..]));
        assert_eq!(m.option(code::ROUTER), Some(&[10, 0, 0, 1][..]));
        assert_eq!(m.option(code::DNS), Some(&[10, 0, 0, 53, 10, 0, 0, 54][..]));
        assert_eq!(m.option(code::DOMAIN_NAME), Some(&b"kiln.test"[..]));
        assert_eq!(m.option(code::HOST_NAME), Some(&b"vm-5"[..]));
        assert_eq!(m.option(code::MTU), Some(&1450u16.to_be_bytes()[..]));
        assert_eq!(
            m.option(code::LEASE_TIME),
            Some(&86400u32.to_be_bytes()[..])
        );
        assert_eq!(
            m.option(code::RENEWAL_TIME),
            Some(&43200u32.to_be_bytes()[..])
        );
        assert_eq!(
            m.option(code::REBINDING_TIME),
            Some(&75600u32.to_be_bytes()[..])
        );
        assert_eq!(
            m.option(code::CLASSLESS_ROUTES),
            Some(&[12, 172, 16, 10, 0, 0, 254, 0, 10, 0, 0, 1][..])
        );
    }

    #[test]
    fn request_for_the_lease_is_acked_and_any_other_is_naked() {
        let ok = vec![(code::REQUESTED_IP, vec![10, 0, 0, 5])];
        let r = answer(&request(MessageType::Request, MAC, ok)).unwrap();
        assert_eq!(r.message.message_type(), Some(MessageType::Ack));
        assert_eq!(r.message.yiaddr, Ipv4Addr::new(10, 0, 0, 5));

        let wrong = vec![(code::REQUESTED_IP, vec![10, 0, 0, 6])];
        let r = answer(&request(MessageType::Request, MAC, wrong)).unwrap();
        assert_eq!(r.message.message_type(), Some(MessageType::Nak));
        assert_eq!(r.message.yiaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(r.to, Destination::Broadcast);
        assert_eq!(r.message.option(code::LEASE_TIME), None);

        // Nothing asked for at all: NAK.
        let r = answer(&request(MessageType::Request, MAC, vec![])).unwrap();
        assert_eq!(r.message.message_type(), Some(MessageType::Nak));
    }

    #[test]
    fn renewal_from_the_leased_address_is_unicast() {
        let mut req = request(MessageType::Request, MAC, vec![]);
        req.ciaddr = Ipv4Addr::new(10, 0, 0, 5);
        let r = answer(&req).unwrap();
        assert_eq!(r.message.message_type(), Some(MessageType::Ack));
        assert_eq!(r.to, Destination::Unicast(Ipv4Addr::new(10, 0, 0, 5)));
    }

    #[test]
    fn request_to_another_server_is_ignored() {
        let opts = vec![
            (code::REQUESTED_IP, vec![10, 0, 0, 5]),
            (code::SERVER_ID, vec![10, 0, 0, 2]),
        ];
        assert_eq!(answer(&request(MessageType::Request, MAC, opts)), None);
    }

    #[test]
    fn unknown_macs_get_nothing() {
        for t in [
            MessageType::Discover,
            MessageType::Request,
            MessageType::Inform,
        ] {
            assert_eq!(answer(&request(t, [2, 0, 0, 0, 0, 8], vec![])), None);
        }
    }

    #[test]
    fn inform_gets_options_without_a_lease_and_release_gets_silence() {
        let mut req = request(MessageType::Inform, MAC, vec![]);
        req.ciaddr = Ipv4Addr::new(10, 0, 0, 5);
        let r = answer(&req).unwrap();
        assert_eq!(r.message.message_type(), Some(MessageType::Ack));
        assert_eq!(r.message.yiaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(r.message.option(code::LEASE_TIME), None);
        assert_eq!(r.message.option(code::ROUTER), Some(&[10, 0, 0, 1][..]));
        assert_eq!(r.to, Destination::Unicast(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(answer(&request(MessageType::Release, MAC, vec![])), None);
        assert_eq!(answer(&request(MessageType::Decline, MAC, vec![])), None);
    }

    #[test]
    fn replies_and_typeless_packets_are_ignored() {
        let mut m = request(MessageType::Discover, MAC, vec![]);
        m.op = OP_REPLY;
        assert_eq!(answer(&m), None);
        let mut m = request(MessageType::Discover, MAC, vec![]);
        m.options.clear();
        assert_eq!(answer(&m), None);
    }

    #[test]
    fn route_encoding_uses_significant_octets() {
        let r = |a, b, c, d, p| StaticRoute {
            dest: Ipv4Addr::new(a, b, c, d),
            prefix: p,
            gateway: Ipv4Addr::new(1, 2, 3, 4),
        };
        assert_eq!(encode_routes(&[r(0, 0, 0, 0, 0)]), vec![0, 1, 2, 3, 4]);
        assert_eq!(
            encode_routes(&[r(10, 1, 2, 3, 32)]),
            vec![32, 10, 1, 2, 3, 1, 2, 3, 4]
        );
        assert_eq!(
            encode_routes(&[r(10, 1, 255, 3, 17)]),
            vec![17, 10, 1, 128, 1, 2, 3, 4]
        );
        assert_eq!(mask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(mask(32), Ipv4Addr::BROADCAST);
    }
}
