//! Property tests of the DHCP parser and reply decision against malformed, truncated, oversized and random packets: never a panic, valid packets round-trip.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use kiln_netdp::dhcp::packet::{code, MIN_LEN};
use kiln_netdp::dhcp::{
    parse, respond, Lease, LeaseTable, Message, NetworkOptions, PacketError, StaticRoute,
};
use proptest::prelude::*;

fn net() -> NetworkOptions {
    NetworkOptions {
        prefix: 24,
        router: Some(Ipv4Addr::new(10, 0, 0, 1)),
        dns: vec![Ipv4Addr::new(10, 0, 0, 53)],
        domain: Some("kiln.test".into()),
        mtu: Some(1450),
        routes: vec![StaticRoute {
            dest: Ipv4Addr::new(192, 168, 0, 0),
            prefix: 16,
            gateway: Ipv4Addr::new(10, 0, 0, 2),
        }],
        lease_secs: 3600,
    }
}

fn leases(mac: [u8; 6]) -> LeaseTable {
    let l = Lease {
        mac,
        ip: Ipv4Addr::new(10, 0, 0, 9),
        hostname: None,
    };
    [(mac, l)].into_iter().collect()
}

/// Parse, then answer with a lease table that knows the packet's own MAC,
/// so the decision code is exercised too.
fn parse_and_answer(bytes: &[u8]) -> Result<Message, PacketError> {
    let m = parse(bytes)?;
    let mut chaddr6 = [0u8; 6];
    chaddr6.copy_from_slice(&m.chaddr[..6]);
    if let Some(r) = respond(&m, Ipv4Addr::new(10, 0, 0, 1), &net(), &leases(chaddr6)) {
        // Every reply we would send parses back.
        assert_eq!(parse(&r.message.encode()).unwrap().xid, m.xid);
    }
    Ok(m)
}

fn message() -> impl Strategy<Value = Message> {
    (
        any::<[u8; 4]>(),
        any::<u32>(),
        any::<u16>(),
        any::<u16>(),
        any::<[u32; 4]>(),
        any::<[u8; 16]>(),
        // Unique codes (a map), excluding PAD and END; values up to 600 bytes
        // so long options are split and joined.
        prop::collection::btree_map(1u8..=254, prop::collection::vec(any::<u8>(), 0..600), 0..12),
        prop::option::of(1u8..=8),
    )
        .prop_map(|(h, xid, secs, flags, addrs, chaddr, opts, kind)| {
            let mut options: BTreeMap<u8, Vec<u8>> = opts;
            if let Some(k) = kind {
                options.insert(code::MESSAGE_TYPE, vec![k]);
            }
            Message {
                op: h[0],
                htype: h[1],
                hlen: h[2],
                hops: h[3],
                xid,
                secs,
                flags,
                ciaddr: Ipv4Addr::from(addrs[0]),
                yiaddr: Ipv4Addr::from(addrs[1]),
                siaddr: Ipv4Addr::from(addrs[2]),
                giaddr: Ipv4Addr::from(addrs[3]),
                chaddr,
                options: options.into_iter().collect(),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let _ = parse_and_answer(&bytes);
    }

    #[test]
    fn random_options_after_a_valid_header_never_panic(
        msg in message(),
        tail in prop::collection::vec(any::<u8>(), 0..1200),
    ) {
        let mut wire = msg.encode();
        wire.truncate(MIN_LEN);
        wire.extend_from_slice(&tail);
        prop_assert!(parse_and_answer(&wire).is_ok());
    }

    #[test]
    fn valid_messages_round_trip(msg in message()) {
        let back = parse_and_answer(&msg.encode()).unwrap();
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn truncated_messages_never_panic(msg in message(), cut in 0usize..2000) {
        let wire = msg.encode();
        let cut = cut.min(wire.len());
        let r = parse_and_answer(&wire[..cut]);
        if cut < MIN_LEN {
            prop_assert_eq!(r, Err(PacketError::Truncated(cut)));
        } else {
            prop_assert!(r.is_ok());
        }
    }

    #[test]
    fn corrupted_messages_never_panic(
        msg in message(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
    ) {
        let mut wire = msg.encode();
        for (i, b) in flips {
            let at = i.index(wire.len());
            wire[at] = b;
        }
        let _ = parse_and_answer(&wire);
    }

    #[test]
    fn oversized_packets_are_parsed_up_to_end(
        msg in message(),
        junk in prop::collection::vec(any::<u8>(), 0..65536),
    ) {
        let mut wire = msg.encode();
        wire.extend_from_slice(&junk);
        // Everything after END is ignored.
        prop_assert_eq!(parse_and_answer(&wire).unwrap(), msg);
    }
}
