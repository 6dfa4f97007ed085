//! IP address management as pure functions: CIDR parsing, default gateways and
//! allocation pools, and picking the first free address. The caller holds the
//! write transaction that records what it picks, so no address goes out twice.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::error::{NetError, NetResult};
use super::model::Pool;

/// A parsed CIDR: the network address as a number, the prefix length, the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub base: u128,
    pub prefix: u8,
    pub version: u8,
}

fn bits(version: u8) -> u8 {
    if version == 4 {
        32
    } else {
        128
    }
}

pub fn to_num(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn from_num(n: u128, version: u8) -> IpAddr {
    if version == 4 {
        IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX)))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

pub fn version_of(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        4
    } else {
        6
    }
}

/// Parses an address; a 400 naming the field otherwise.
pub fn parse_ip(s: &str, field: &str) -> NetResult<IpAddr> {
    s.parse()
        .map_err(|_| NetError::invalid(format!("'{s}' is not a valid IP address for {field}")))
}

impl Cidr {
    /// Parses `a.b.c.d/n` or `x::/n`. Host bits must be zero when `strict`.
    pub fn parse(s: &str, strict: bool) -> NetResult<Cidr> {
        let bad = || NetError::invalid(format!("'{s}' is not a valid IP subnet"));
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let ip: IpAddr = addr.parse().map_err(|_| bad())?;
        let version = version_of(&ip);
        let prefix: u8 = len.parse().map_err(|_| bad())?;
        if prefix > bits(version) {
            return Err(bad());
        }
        let n = to_num(ip);
        let c = Cidr {
            base: n & Self::mask_of(prefix, version),
            prefix,
            version,
        };
        if strict && c.base != n {
            return Err(bad());
        }
        Ok(c)
    }

    fn mask_of(prefix: u8, version: u8) -> u128 {
        let width = bits(version);
        let host = width - prefix;
        let all: u128 = if width == 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        };
        if host >= 128 {
            0
        } else {
            all & !((1u128 << host) - 1)
        }
    }

    /// The last address of the range.
    pub fn last(&self) -> u128 {
        let host_bits = bits(self.version) - self.prefix;
        if host_bits >= 128 {
            u128::MAX
        } else {
            self.base | ((1u128 << host_bits) - 1)
        }
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        version_of(ip) == self.version && {
            let n = to_num(*ip);
            n >= self.base && n <= self.last()
        }
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.version == other.version && self.base <= other.last() && other.base <= self.last()
    }

    /// The canonical text form.
    pub fn text(&self) -> String {
        format!("{}/{}", from_num(self.base, self.version), self.prefix)
    }

    /// Neutron's default gateway: the first host address.
    pub fn default_gateway(&self) -> Option<u128> {
        let first = self.base + 1;
        (first <= self.usable_last()).then_some(first)
    }

    /// The last address hosts may use (IPv4 keeps the broadcast address out).
    fn usable_last(&self) -> u128 {
        if self.version == 4 && self.prefix < 31 {
            self.last() - 1
        } else {
            self.last()
        }
    }

    /// Neutron's default pools: every usable host address except the gateway
    /// (IPv4 skips the network and broadcast addresses; IPv6 the subnet-router
    /// anycast address).
    pub fn default_pools(&self, gateway: Option<u128>) -> Vec<(u128, u128)> {
        let first = if self.version == 4 && self.prefix >= 31 {
            self.base
        } else {
            self.base + 1
        };
        let last = self.usable_last();
        if first > last {
            return Vec::new();
        }
        match gateway {
            Some(g) if g >= first && g <= last => {
                let mut v = Vec::new();
                if g > first {
                    v.push((first, g - 1));
                }
                if g < last {
                    v.push((g + 1, last));
                }
                v
            }
            _ => vec![(first, last)],
        }
    }
}

/// Validates pools a client gave: inside the CIDR, start ≤ end, not overlapping
/// each other, not holding the gateway.
pub fn parse_pools(
    cidr: &Cidr,
    pools: &[Pool],
    gateway: Option<u128>,
) -> NetResult<Vec<(u128, u128)>> {
    let mut out: Vec<(u128, u128)> = Vec::new();
    for p in pools {
        let s = parse_ip(&p.start, "allocation_pools")?;
        let e = parse_ip(&p.end, "allocation_pools")?;
        if !cidr.contains(&s) || !cidr.contains(&e) {
            return Err(NetError::BadRequest(format!(
                "The allocation pool {}-{} spans beyond the subnet cidr {}.",
                p.start,
                p.end,
                cidr.text()
            )));
        }
        let (s, e) = (to_num(s), to_num(e));
        if s > e {
            return Err(NetError::BadRequest(format!(
                "The allocation pool {}-{} is not valid.",
                p.start, p.end
            )));
        }
        if out.iter().any(|(a, b)| s <= *b && *a <= e) {
            return Err(NetError::BadRequest(format!(
                "Found overlapping allocation pools: {}-{} and another pool of the subnet.",
                p.start, p.end
            )));
        }
        if let Some(g) = gateway {
            if g >= s && g <= e {
                return Err(NetError::conflict(
                    "GatewayConflictWithAllocationPools",
                    format!(
                        "Gateway ip {} conflicts with allocation pool {}-{}.",
                        from_num(g, cidr.version),
                        p.start,
                        p.end
                    ),
                ));
            }
        }
        out.push((s, e));
    }
    Ok(out)
}

/// The first address of `pools` for which `taken` is false, scanning at most
/// `budget` candidates (huge IPv6 pools are never walked in full).
pub fn first_free(
    pools: &[(u128, u128)],
    budget: usize,
    mut taken: impl FnMut(u128) -> NetResult<bool>,
) -> NetResult<Option<u128>> {
    let mut tried = 0usize;
    for (s, e) in pools {
        let mut n = *s;
        loop {
            if tried >= budget {
                return Ok(None);
            }
            tried += 1;
            if !taken(n)? {
                return Ok(Some(n));
            }
            if n == *e {
                break;
            }
            n += 1;
        }
    }
    Ok(None)
}

/// The SLAAC (EUI-64) address of `mac` in a /64.
pub fn eui64(cidr: &Cidr, mac: &str) -> Option<u128> {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    if bytes.len() != 6 || cidr.version != 6 || cidr.prefix > 64 {
        return None;
    }
    let iid = [
        bytes[0] ^ 0x02,
        bytes[1],
        bytes[2],
        0xff,
        0xfe,
        bytes[3],
        bytes[4],
        bytes[5],
    ];
    Some(cidr.base | u128::from(u64::from_be_bytes(iid)))
}

/// A MAC with OpenStack's `fa:16:3e` prefix and random low bytes.
pub fn random_mac() -> String {
    let b: [u8; 3] = rand::random();
    format!("fa:16:3e:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

/// Checks a MAC's syntax (six hex octets) and lowercases it.
pub fn normalize_mac(mac: &str) -> NetResult<String> {
    let parts: Vec<&str> = mac.split([':', '-']).collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(parts.join(":").to_ascii_lowercase())
    } else {
        Err(NetError::invalid(format!(
            "'{mac}' is not a valid MAC address"
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn v4_defaults_follow_neutron() {
        let c = Cidr::parse("10.0.0.0/24", true).unwrap();
        let gw = c.default_gateway().unwrap();
        assert_eq!(from_num(gw, 4).to_string(), "10.0.0.1");
        let pools = c.default_pools(Some(gw));
        assert_eq!(pools.len(), 1);
        assert_eq!(from_num(pools[0].0, 4).to_string(), "10.0.0.2");
        assert_eq!(from_num(pools[0].1, 4).to_string(), "10.0.0.254");
        // A gateway in the middle splits the pool.
        let mid = to_num("10.0.0.100".parse().unwrap());
        assert_eq!(c.default_pools(Some(mid)).len(), 2);
        assert!(Cidr::parse("10.0.0.1/24", true).is_err());
        assert!(Cidr::parse("10.0.0.0/33", false).is_err());
        assert!(Cidr::parse("banana", false).is_err());
    }

    #[test]
    fn v6_defaults_and_eui64() {
        let c = Cidr::parse("fd00:1::/64", true).unwrap();
        assert_eq!(
            from_num(c.default_gateway().unwrap(), 6).to_string(),
            "fd00:1::1"
        );
        let pools = c.default_pools(c.default_gateway());
        assert_eq!(from_num(pools[0].0, 6).to_string(), "fd00:1::2");
        assert_eq!(
            from_num(pools[0].1, 6).to_string(),
            "fd00:1::ffff:ffff:ffff:ffff"
        );
        let a = eui64(&c, "fa:16:3e:12:34:56").unwrap();
        assert_eq!(from_num(a, 6).to_string(), "fd00:1::f816:3eff:fe12:3456");
        let all = Cidr::parse("::/0", true).unwrap();
        assert_eq!(all.last(), u128::MAX);
    }

    #[test]
    fn pools_are_checked() {
        let c = Cidr::parse("192.168.1.0/24", true).unwrap();
        let gw = Some(to_num("192.168.1.1".parse().unwrap()));
        let pool = |s: &str, e: &str| Pool {
            start: s.into(),
            end: e.into(),
        };
        assert!(parse_pools(&c, &[pool("192.168.1.10", "192.168.1.20")], gw).is_ok());
        assert!(parse_pools(&c, &[pool("192.168.1.20", "192.168.1.10")], gw).is_err());
        assert!(parse_pools(&c, &[pool("192.168.2.1", "192.168.2.5")], gw).is_err());
        assert!(parse_pools(&c, &[pool("192.168.1.1", "192.168.1.5")], gw).is_err());
        let overlapping = [
            pool("192.168.1.10", "192.168.1.20"),
            pool("192.168.1.15", "192.168.1.30"),
        ];
        assert!(parse_pools(&c, &overlapping, gw).is_err());
    }

    #[test]
    fn first_free_skips_taken_and_respects_budget() {
        let taken = [2u128, 3];
        let got = first_free(&[(2, 10)], 100, |n| Ok(taken.contains(&n))).unwrap();
        assert_eq!(got, Some(4));
        assert_eq!(
            first_free(&[(2, 3)], 100, |n| Ok(taken.contains(&n))).unwrap(),
            None
        );
        assert_eq!(
            first_free(&[(2, 10)], 2, |n| Ok(taken.contains(&n))).unwrap(),
            None
        );
    }

    #[test]
    fn macs() {
        let m = random_mac();
        assert!(m.starts_with("fa:16:3e:"));
        assert_eq!(normalize_mac(&m).unwrap(), m);
        assert_eq!(
            normalize_mac("FA-16-3E-00-00-01").unwrap(),
            "fa:16:3e:00:00:01"
        );
        assert!(normalize_mac("fa:16:3e:00:00").is_err());
    }
}
