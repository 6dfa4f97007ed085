//! Netlink attribute (TLV) writing and parsing: 4-byte aligned, nested, big-endian integers.

use super::sys::NLA_F_NESTED;

/// Round `n` up to the netlink alignment (4 bytes).
pub const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A growable buffer that netlink attributes are appended to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AttrBuf {
    buf: Vec<u8>,
}

impl AttrBuf {
    pub fn new() -> Self {
        AttrBuf { buf: Vec::new() }
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Append one attribute with a raw payload (padded to 4 bytes).
    pub fn bytes(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = 4 + payload.len();
        // Attribute lengths are u16; nf_tables payloads here are far smaller.
        let len16 = u16::try_from(len).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// A NUL-terminated string.
    pub fn str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.bytes(kind, &v)
    }

    /// A big-endian u32 (nf_tables' convention for integers).
    pub fn be32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.bytes(kind, &v.to_be_bytes())
    }

    /// A big-endian u16.
    pub fn be16(&mut self, kind: u16, v: u16) -> &mut Self {
        self.bytes(kind, &v.to_be_bytes())
    }

    /// A big-endian u64.
    pub fn be64(&mut self, kind: u16, v: u64) -> &mut Self {
        self.bytes(kind, &v.to_be_bytes())
    }

    /// A nested attribute whose contents `f` writes.
    pub fn nested(&mut self, kind: u16, f: impl FnOnce(&mut AttrBuf)) -> &mut Self {
        let mut inner = AttrBuf::new();
        f(&mut inner);
        self.bytes(kind | NLA_F_NESTED, &inner.buf)
    }
}

/// One parsed attribute: its type (without the nested/byteorder flags) and payload.
#[derive(Debug, Clone, Copy)]
pub struct Attr<'a> {
    pub kind: u16,
    pub payload: &'a [u8],
}

impl<'a> Attr<'a> {
    /// Nested attributes inside this one.
    pub fn nested(&self) -> AttrIter<'a> {
        AttrIter::new(self.payload)
    }

    pub fn be32(&self) -> Option<u32> {
        Some(u32::from_be_bytes(self.payload.get(..4)?.try_into().ok()?))
    }

    pub fn be16(&self) -> Option<u16> {
        Some(u16::from_be_bytes(self.payload.get(..2)?.try_into().ok()?))
    }

    /// A NUL-terminated (or unterminated) string; invalid UTF-8 gives `None`.
    pub fn str(&self) -> Option<&'a str> {
        let end = self
            .payload
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.payload.len());
        std::str::from_utf8(&self.payload[..end]).ok()
    }
}

/// Iterator over the attributes in a byte slice; stops at the first malformed one.
#[derive(Debug, Clone)]
pub struct AttrIter<'a> {
    rest: &'a [u8],
}

impl<'a> AttrIter<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        AttrIter { rest: bytes }
    }

    /// The first attribute of the given type.
    pub fn get(self, kind: u16) -> Option<Attr<'a>> {
        self.into_iter().find(|a| a.kind == kind)
    }
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = Attr<'a>;

    fn next(&mut self) -> Option<Attr<'a>> {
        if self.rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([self.rest[0], self.rest[1]]) as usize;
        let kind = u16::from_ne_bytes([self.rest[2], self.rest[3]]) & 0x3fff;
        if len < 4 || len > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let payload = &self.rest[4..len];
        self.rest = self.rest.get(align4(len)..).unwrap_or(&[]);
        Some(Attr { kind, payload })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_attribute_is_nul_terminated_and_padded() {
        let mut b = AttrBuf::new();
        b.str(1, "kiln");
        // len 4+5=9, type 1, "kiln\0", 3 bytes of padding.
        assert_eq!(
            b.as_bytes(),
            &[9, 0, 1, 0, b'k', b'i', b'l', b'n', 0, 0, 0, 0]
        );
    }

    #[test]
    fn nested_attribute_sets_the_nested_flag() {
        let mut b = AttrBuf::new();
        b.nested(4, |n| {
            n.be32(1, 2);
        });
        assert_eq!(b.as_bytes(), &[12, 0, 4, 0x80, 8, 0, 1, 0, 0, 0, 0, 2]);
    }

    #[test]
    fn parse_round_trips_and_stops_at_garbage() {
        let mut b = AttrBuf::new();
        b.str(3, "chain").be32(5, 7).nested(4, |n| {
            n.be16(2, 9);
        });
        let attrs: Vec<_> = AttrIter::new(b.as_bytes()).collect();
        assert_eq!(attrs.len(), 3);
        assert_eq!(attrs[0].str(), Some("chain"));
        assert_eq!(attrs[1].be32(), Some(7));
        assert_eq!(attrs[2].kind, 4);
        assert_eq!(attrs[2].nested().get(2).and_then(|a| a.be16()), Some(9));
        // A length larger than the buffer ends iteration instead of panicking.
        assert_eq!(AttrIter::new(&[200, 0, 1, 0, 0]).count(), 0);
    }
}
