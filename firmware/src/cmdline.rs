//! The firmware's command line: `kiln.mode=<job>` and the
//! `virtio_mmio.device=<size>@<addr>:<irq>` slots the VMM announces.

/// Split a command line into its whitespace-separated words.
pub fn words(cmdline: &[u8]) -> impl Iterator<Item = &[u8]> {
    cmdline
        .split(|b| b.is_ascii_whitespace() || *b == 0)
        .filter(|w| !w.is_empty())
}

/// The value of the last `key=value` word, if any.
pub fn value<'a>(cmdline: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    words(cmdline)
        .filter_map(|w| {
            let rest = w.strip_prefix(key)?;
            rest.strip_prefix(b"=")
        })
        .last()
}

/// The job named by `kiln.mode=` (the probe job when absent).
pub fn mode(cmdline: &[u8]) -> &[u8] {
    value(cmdline, b"kiln.mode").unwrap_or(b"probe")
}

/// One virtio-mmio slot announced on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmio {
    /// Size of the register window in bytes.
    pub size: u64,
    /// Guest-physical base address.
    pub addr: u64,
    /// Interrupt line (GSI).
    pub irq: u32,
}

/// Every well-formed `virtio_mmio.device=` entry, in order; malformed ones are skipped.
pub fn virtio_mmio_devices(cmdline: &[u8]) -> impl Iterator<Item = VirtioMmio> + '_ {
    words(cmdline)
        .filter_map(|w| w.strip_prefix(b"virtio_mmio.device="))
        .filter_map(parse_virtio_mmio)
}

/// Parse `<size>@<addr>:<irq>[:<id>]` (Linux's `virtio_mmio.device=` syntax).
pub fn parse_virtio_mmio(spec: &[u8]) -> Option<VirtioMmio> {
    let at = spec.iter().position(|b| *b == b'@')?;
    let (size, rest) = (&spec[..at], &spec[at + 1..]);
    let colon = rest.iter().position(|b| *b == b':')?;
    let (addr, rest) = (&rest[..colon], &rest[colon + 1..]);
    let irq = match rest.iter().position(|b| *b == b':') {
        Some(i) => &rest[..i],
        None => rest,
    };
    let irq = u32::try_from(parse_mem(irq)?).ok()?;
    Some(VirtioMmio {
        size: parse_mem(size)?,
        addr: parse_mem(addr)?,
        irq,
    })
}

/// Parse a number as Linux's `memparse` does: decimal or `0x` hex, with an
/// optional K/M/G suffix.
pub fn parse_mem(s: &[u8]) -> Option<u64> {
    let (digits, shift) = match s.last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 10),
        b'm' | b'M' => (&s[..s.len() - 1], 20),
        b'g' | b'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n = parse_u64(digits)?;
    n.checked_mul(1u64 << shift)
}

/// Parse a decimal or `0x`-prefixed hexadecimal number.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    let (digits, radix) = match s.strip_prefix(b"0x").or_else(|| s.strip_prefix(b"0X")) {
        Some(hex) => (hex, 16),
        None => (s, 10),
    };
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, b| {
        let d = (*b as char).to_digit(radix)?;
        acc.checked_mul(u64::from(radix))?.checked_add(u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_defaults_to_probe_and_last_one_wins() {
        assert_eq!(mode(b"console=ttyS0"), b"probe");
        assert_eq!(mode(b"kiln.mode=idle"), b"idle");
        assert_eq!(mode(b"kiln.mode=a  kiln.mode=blk\0garbage"), b"blk");
        assert_eq!(mode(b"kiln.modex=a"), b"probe");
    }

    #[test]
    fn virtio_mmio_entries_parse() {
        let c = b"kiln.mode=probe virtio_mmio.device=4K@0xd0001000:5 \
                  virtio_mmio.device=0x200@3489665024:6:2 virtio_mmio.device=bad";
        let v: Vec<_> = virtio_mmio_devices(c).collect();
        assert_eq!(
            v,
            vec![
                VirtioMmio {
                    size: 4096,
                    addr: 0xd000_1000,
                    irq: 5
                },
                VirtioMmio {
                    size: 0x200,
                    addr: 0xd000_1000,
                    irq: 6
                },
            ]
        );
    }

    #[test]
    fn bad_numbers_are_rejected() {
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"0x"), None);
        assert_eq!(parse_u64(b"12a"), None);
        assert_eq!(parse_u64(b"99999999999999999999999"), None);
        assert_eq!(parse_mem(b"17179869184G"), None);
        assert_eq!(parse_mem(b"2M"), Some(2 << 20));
        assert_eq!(parse_virtio_mmio(b"4K@0x1000"), None);
        assert_eq!(parse_virtio_mmio(b"4K@0x1000:99999999999"), None);
    }
}
