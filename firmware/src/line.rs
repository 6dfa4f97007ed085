//! A fixed-size line buffer with the few formatters the firmware prints with
//! (no `core::fmt`, which would triple the ELF's size).

/// Longest line the firmware prints; longer content is truncated.
pub const LINE_MAX: usize = 160;

/// One output line being assembled.
pub struct Line {
    buf: [u8; LINE_MAX],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl Line {
    pub const fn new() -> Self {
        Line {
            buf: [0; LINE_MAX],
            len: 0,
        }
    }

    /// Append bytes (truncating at `LINE_MAX`).
    pub fn bytes(&mut self, s: &[u8]) -> &mut Self {
        for b in s {
            if self.len == LINE_MAX {
                break;
            }
            self.buf[self.len] = *b;
            self.len += 1;
        }
        self
    }

    /// Append `0x`-prefixed lowercase hexadecimal.
    pub fn hex(&mut self, mut n: u64) -> &mut Self {
        let mut digits = [0u8; 16];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[(n & 0xf) as usize];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        self.bytes(b"0x").bytes(&digits[i..])
    }

    /// Append decimal.
    pub fn dec(&mut self, mut n: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.bytes(&digits[i..])
    }

    /// The line so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        let mut l = Line::new();
        l.bytes(b"a ")
            .hex(0xd000_1000)
            .bytes(b" ")
            .dec(0)
            .bytes(b" ")
            .dec(u64::MAX);
        assert_eq!(l.as_bytes(), b"a 0xd0001000 0 18446744073709551615");
        let mut l = Line::new();
        l.hex(0);
        assert_eq!(l.as_bytes(), b"0x0");
    }

    #[test]
    fn truncates_long_lines() {
        let mut l = Line::new();
        for _ in 0..100 {
            l.bytes(b"abc");
        }
        assert_eq!(l.as_bytes().len(), LINE_MAX);
    }
}
