//! Address helpers for the compiler: MAC and CIDR parsing, address ranges and
//! their merging (nf_tables interval sets refuse overlapping elements), EUI-64.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An inclusive range of addresses of one family (IPv4 held in the low 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Range {
    pub v6: bool,
    pub start: u128,
    pub end: u128,
}

impl Range {
    /// A single address.
    pub fn host(ip: IpAddr) -> Range {
        match ip {
            IpAddr::V4(a) => Range {
                v6: false,
                start: u128::from(u32::from(a)),
                end: u128::from(u32::from(a)),
            },
            IpAddr::V6(a) => Range {
                v6: true,
                start: u128::from(a),
                end: u128::from(a),
            },
        }
    }

    /// Width in bytes of one address of this family.
    pub fn width(&self) -> usize {
        if self.v6 {
            16
        } else {
            4
        }
    }

    /// Big-endian bytes of an address of this family.
    pub fn bytes(&self, v: u128) -> Vec<u8> {
        if self.v6 {
            v.to_be_bytes().to_vec()
        } else {
            (v as u32).to_be_bytes().to_vec()
        }
    }

    /// The family's largest address.
    pub fn max_addr(&self) -> u128 {
        if self.v6 {
            u128::MAX
        } else {
            u128::from(u32::MAX)
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let r = Range::host(ip);
        r.v6 == self.v6 && self.start <= r.start && r.start <= self.end
    }
}

/// A parsed prefix: network address and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    /// The range of addresses it covers.
    pub fn range(&self) -> Range {
        let host = Range::host(self.addr);
        let bits: u32 = if host.v6 { 128 } else { 32 };
        let free = bits - u32::from(self.len);
        let span: u128 = if free >= 128 {
            u128::MAX
        } else {
            (1u128 << free) - 1
        };
        let start = host.start & !span;
        Range {
            v6: host.v6,
            start,
            end: (start | span) & host.max_addr(),
        }
    }

    /// The netmask bytes (big-endian, address width).
    pub fn mask(&self) -> Vec<u8> {
        let r = Range::host(self.addr);
        let bits = r.width() * 8;
        let ones = usize::from(self.len);
        let m: u128 = if ones == 0 {
            0
        } else {
            (u128::MAX << (128 - ones)) >> (128 - bits)
        };
        r.bytes(m)
    }
}

/// Why an address string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("invalid MAC address {0:?}")]
    Mac(String),
    #[error("invalid IP address or prefix {0:?}")]
    Prefix(String),
}

/// Parse `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Result<[u8; 6], AddrError> {
    let mut out = [0u8; 6];
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(AddrError::Mac(s.to_string()));
    }
    for (o, p) in out.iter_mut().zip(parts) {
        if p.len() != 2 {
            return Err(AddrError::Mac(s.to_string()));
        }
        *o = u8::from_str_radix(p, 16).map_err(|_| AddrError::Mac(s.to_string()))?;
    }
    Ok(out)
}

/// Parse an address (`10.0.0.1`, a host prefix) or a prefix (`10.0.0.0/8`).
pub fn parse_prefix(s: &str) -> Result<Prefix, AddrError> {
    let bad = || AddrError::Prefix(s.to_string());
    let (a, l) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = a.trim().parse().map_err(|_| bad())?;
    let max = if addr.is_ipv6() { 128 } else { 32 };
    let len = match l {
        Some(l) => l.trim().parse::<u8>().map_err(|_| bad())?,
        None => max,
    };
    if len > max {
        return Err(bad());
    }
    Ok(Prefix { addr, len })
}

/// Merge ranges of one family into sorted, disjoint, non-adjacent ranges.
pub fn merge(mut ranges: Vec<Range>) -> Vec<Range> {
    ranges.sort();
    let mut out: Vec<Range> = Vec::with_capacity(ranges.len());
    for r in ranges {
        if let Some(last) = out.last_mut() {
            if last.v6 == r.v6 && r.start <= last.end.saturating_add(1) {
                last.end = last.end.max(r.end);
                continue;
            }
        }
        out.push(r);
    }
    out
}

/// The IPv6 link-local address a MAC gives by modified EUI-64 (`fe80::/64`).
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    let mut b = [0u8; 16];
    b[0] = 0xfe;
    b[1] = 0x80;
    b[8] = mac[0] ^ 0x02;
    b[9] = mac[1];
    b[10] = mac[2];
    b[11] = 0xff;
    b[12] = 0xfe;
    b[13] = mac[3];
    b[14] = mac[4];
    b[15] = mac[5];
    Ipv6Addr::from(b)
}

/// Turn an IPv4 range's bound back into an address (for messages and tests).
pub fn v4(v: u128) -> Ipv4Addr {
    Ipv4Addr::from(v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_bad_ones_fail() {
        assert_eq!(
            parse_mac("fa:16:3e:00:00:01"),
            Ok([0xfa, 0x16, 0x3e, 0, 0, 1])
        );
        assert!(parse_mac("fa:16:3e:00:00").is_err());
        assert!(parse_mac("fa:16:3e:00:00:zz").is_err());
        assert!(parse_mac("fa:16:3e:00:00:001").is_err());
    }

    #[test]
    fn prefixes_give_ranges_and_masks() {
        let p = parse_prefix("10.1.2.3/24").unwrap();
        let r = p.range();
        assert_eq!(
            (v4(r.start), v4(r.end)),
            ("10.1.2.0".parse().unwrap(), "10.1.2.255".parse().unwrap())
        );
        assert_eq!(p.mask(), vec![255, 255, 255, 0]);
        let all = parse_prefix("0.0.0.0/0").unwrap();
        assert_eq!(all.range().end, u128::from(u32::MAX));
        assert_eq!(all.mask(), vec![0, 0, 0, 0]);
        let h6 = parse_prefix("2001:db8::1").unwrap();
        assert_eq!(h6.len, 128);
        assert_eq!(
            parse_prefix("2001:db8::/32").unwrap().mask()[..5],
            [255, 255, 255, 255, 0]
        );
        assert!(parse_prefix("10.0.0.0/33").is_err());
        assert!(parse_prefix("nonsense").is_err());
    }

    #[test]
    fn merging_joins_overlaps_and_neighbours() {
        let r = |s: &str| parse_prefix(s).unwrap().range();
        let m = merge(vec![
            r("10.0.0.5"),
            r("10.0.0.0/24"),
            r("10.0.1.0/24"),
            r("10.0.3.1"),
        ]);
        assert_eq!(m.len(), 2);
        assert_eq!(v4(m[0].start).to_string(), "10.0.0.0");
        assert_eq!(v4(m[0].end).to_string(), "10.0.1.255");
        assert_eq!(v4(m[1].start).to_string(), "10.0.3.1");
    }

    #[test]
    fn eui64_link_local() {
        let ll = link_local([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(ll.to_string(), "fe80::5054:ff:fe12:3456");
    }
}
