//! Dropping conntrack entries that a removed rule or remote-group member had
//! allowed, through ctnetlink on the same NETLINK_NETFILTER socket.
//!
//! Chosen approach: dump the namespace's conntrack table (`IPCTNL_MSG_CT_GET`),
//! select entries by zone and by original-direction source or destination
//! address, and delete each by its exact original tuple and zone
//! (`IPCTNL_MSG_CT_DELETE`). This works on every kernel (no reliance on the
//! newer flush filters). A port whose rules narrowed loses the entries of its
//! addresses in its network's zone; a removed remote-group member loses the
//! entries of its addresses in every zone. A still-allowed connection whose
//! entry is dropped continues: its next packet is tracked anew and passes the
//! rules again (`nf_conntrack_tcp_loose`, the kernel default).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::addr::Range;
use crate::nft::attr::{AttrBuf, AttrIter};
use crate::nft::sys::*;
use crate::nft::{NftError, Socket};

/// Which entries to drop: those in `zone` (any zone when `None`) whose original
/// source or destination lies in one of `ranges`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtFilter {
    pub zone: Option<u16>,
    pub ranges: Vec<Range>,
}

/// One tracked connection as far as the filter needs it.
#[derive(Debug, Clone)]
struct Entry {
    family: u8,
    zone: u16,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    tuple: Vec<u8>,
}

fn ip_of(payload: &[u8]) -> Option<IpAddr> {
    match payload.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(payload).ok()?,
        ))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(payload).ok()?,
        ))),
        _ => None,
    }
}

fn parse(family: u8, attrs: &[u8]) -> Option<Entry> {
    let orig = AttrIter::new(attrs).get(CTA_TUPLE_ORIG)?;
    let ip = orig.nested().get(CTA_TUPLE_IP)?;
    let mut e = Entry {
        family,
        zone: AttrIter::new(attrs)
            .get(CTA_ZONE)
            .and_then(|z| z.be16())
            .unwrap_or(0),
        src: None,
        dst: None,
        tuple: orig.payload.to_vec(),
    };
    for a in ip.nested() {
        match a.kind {
            CTA_IP_V4_SRC | CTA_IP_V6_SRC => e.src = ip_of(a.payload),
            CTA_IP_V4_DST | CTA_IP_V6_DST => e.dst = ip_of(a.payload),
            _ => {}
        }
    }
    Some(e)
}

fn matches(f: &CtFilter, e: &Entry) -> bool {
    if f.zone.is_some_and(|z| z != e.zone) {
        return false;
    }
    f.ranges
        .iter()
        .any(|r| e.src.is_some_and(|a| r.contains(a)) || e.dst.is_some_and(|a| r.contains(a)))
}

/// Delete the entries any filter selects; returns how many were deleted.
pub fn flush(sock: &mut Socket, filters: &[CtFilter]) -> Result<usize, NftError> {
    if filters.iter().all(|f| f.ranges.is_empty()) {
        return Ok(0);
    }
    let msgs = sock.dump(
        NFNL_SUBSYS_CTNETLINK,
        IPCTNL_MSG_CT_GET,
        NFPROTO_UNSPEC,
        &[],
    )?;
    let mut n = 0;
    for m in msgs {
        let Some(e) = parse(m.family, &m.attrs) else {
            continue;
        };
        if !filters.iter().any(|f| matches(f, &e)) {
            continue;
        }
        let mut a = AttrBuf::new();
        a.bytes(CTA_TUPLE_ORIG | NLA_F_NESTED, &e.tuple);
        if e.zone != 0 {
            a.be16(CTA_ZONE, e.zone);
        }
        match sock.request(
            NFNL_SUBSYS_CTNETLINK,
            IPCTNL_MSG_CT_DELETE,
            e.family,
            a.as_bytes(),
            "delete conntrack entry",
        ) {
            Ok(()) => n += 1,
            // Gone meanwhile (expired or deleted by another filter): fine.
            Err(NftError::Rejected { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secgroup::addr::parse_prefix;

    fn entry(zone: u16, src: &str, dst: &str) -> Entry {
        Entry {
            family: NFPROTO_IPV4,
            zone,
            src: src.parse().ok(),
            dst: dst.parse().ok(),
            tuple: vec![],
        }
    }

    #[test]
    fn filter_matches_zone_and_either_address() {
        let f = CtFilter {
            zone: Some(3),
            ranges: vec![parse_prefix("10.0.0.2").unwrap().range()],
        };
        assert!(matches(&f, &entry(3, "10.0.0.1", "10.0.0.2")));
        assert!(matches(&f, &entry(3, "10.0.0.2", "10.0.0.9")));
        assert!(!matches(&f, &entry(4, "10.0.0.1", "10.0.0.2")));
        assert!(!matches(&f, &entry(3, "10.0.0.1", "10.0.0.3")));
        let any = CtFilter { zone: None, ..f };
        assert!(matches(&any, &entry(9, "10.0.0.2", "10.0.0.3")));
    }

    #[test]
    fn parses_a_dumped_entry() {
        let mut a = AttrBuf::new();
        a.nested(CTA_TUPLE_ORIG, |o| {
            o.nested(CTA_TUPLE_IP, |ip| {
                ip.bytes(CTA_IP_V4_SRC, &[10, 0, 0, 1])
                    .bytes(CTA_IP_V4_DST, &[10, 0, 0, 2]);
            });
        });
        a.be16(CTA_ZONE, 7);
        let e = parse(NFPROTO_IPV4, a.as_bytes()).unwrap();
        assert_eq!(e.zone, 7);
        assert_eq!(e.src, "10.0.0.1".parse().ok());
        assert_eq!(e.dst, "10.0.0.2".parse().ok());
    }
}
