//! nf_tables expressions (meta, payload, cmp, bitwise, ct, lookup, immediate,
//! counter, nat) and their netlink encoding.

use super::attr::AttrBuf;
use super::sys::*;

/// The verdict register.
pub const REG_VERDICT: u32 = NFT_REG_VERDICT;

/// The `n`th 32-bit data register (`NFT_REG32_00 + n`). Register 0 is where
/// concatenated lookup keys start; a 16-byte interface name fills 0..=3.
pub const fn reg32(n: u32) -> u32 {
    NFT_REG32_00 + n
}

/// What a rule or verdict map decides.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    pub fn code(&self) -> i32 {
        match self {
            Verdict::Accept => NF_ACCEPT,
            Verdict::Drop => NF_DROP,
            Verdict::Continue => NFT_CONTINUE,
            Verdict::Return => NFT_RETURN,
            Verdict::Jump(_) => NFT_JUMP,
            Verdict::Goto(_) => NFT_GOTO,
        }
    }

    /// Rebuild from a kernel code and optional chain name.
    pub fn from_code(code: i32, chain: Option<&str>) -> Option<Verdict> {
        Some(match (code, chain) {
            (NF_ACCEPT, _) => Verdict::Accept,
            (NF_DROP, _) => Verdict::Drop,
            (NFT_CONTINUE, _) => Verdict::Continue,
            (NFT_RETURN, _) => Verdict::Return,
            (NFT_JUMP, Some(c)) => Verdict::Jump(c.to_string()),
            (NFT_GOTO, Some(c)) => Verdict::Goto(c.to_string()),
            _ => return None,
        })
    }

    fn chain(&self) -> Option<&str> {
        match self {
            Verdict::Jump(c) | Verdict::Goto(c) => Some(c),
            _ => None,
        }
    }
}

/// Data carried by an immediate expression or a map element.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Data {
    Value(Vec<u8>),
    Verdict(Verdict),
}

impl Data {
    /// Encode as the body of an `nft_data` attribute.
    pub fn encode(&self, b: &mut AttrBuf) {
        match self {
            Data::Value(v) => {
                b.bytes(NFTA_DATA_VALUE, v);
            }
            Data::Verdict(v) => {
                b.nested(NFTA_DATA_VERDICT, |n| {
                    n.be32(NFTA_VERDICT_CODE, v.code() as u32);
                    if let Some(c) = v.chain() {
                        n.str(NFTA_VERDICT_CHAIN, c);
                    }
                });
            }
        }
    }
}

/// Comparison operators of the `cmp` expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl CmpOp {
    fn code(self) -> u32 {
        match self {
            CmpOp::Eq => NFT_CMP_EQ,
            CmpOp::Neq => NFT_CMP_NEQ,
            CmpOp::Lt => NFT_CMP_LT,
            CmpOp::Lte => NFT_CMP_LTE,
            CmpOp::Gt => NFT_CMP_GT,
            CmpOp::Gte => NFT_CMP_GTE,
        }
    }
}

/// Where a payload expression reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadBase {
    Link,
    Network,
    Transport,
}

impl PayloadBase {
    fn code(self) -> u32 {
        match self {
            PayloadBase::Link => NFT_PAYLOAD_LL_HEADER,
            PayloadBase::Network => NFT_PAYLOAD_NETWORK_HEADER,
            PayloadBase::Transport => NFT_PAYLOAD_TRANSPORT_HEADER,
        }
    }
}

/// Source or destination NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatKind {
    Snat,
    Dnat,
}

/// One expression of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// Load a meta key (`NFT_META_*`) into `dreg`.
    Meta { key: u32, dreg: u32 },
    /// Set a meta key from `sreg`.
    MetaSet { key: u32, sreg: u32 },
    /// Load `len` bytes at `offset` of a header into `dreg`.
    Payload {
        base: PayloadBase,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    /// Compare `sreg` with `data`; the rule stops when false.
    Cmp { sreg: u32, op: CmpOp, data: Vec<u8> },
    /// `dreg = (sreg & mask) ^ xor` over `mask.len()` bytes.
    Bitwise {
        sreg: u32,
        dreg: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// Load a conntrack key (`NFT_CT_*`) into `dreg`.
    Ct { key: u32, dreg: u32 },
    /// Set a conntrack key (e.g. the zone) from `sreg`.
    CtSet { key: u32, sreg: u32 },
    /// Look `sreg` up in a named set; a map writes the value to `dreg`
    /// (the verdict register for verdict maps).
    Lookup {
        set: String,
        sreg: u32,
        dreg: Option<u32>,
        invert: bool,
    },
    /// Load constant data (or a verdict into the verdict register).
    Immediate { dreg: u32, data: Data },
    /// Count packets and bytes.
    Counter,
    /// Source/destination NAT from address/port registers.
    Nat {
        kind: NatKind,
        family: u8,
        addr_min: Option<u32>,
        addr_max: Option<u32>,
        proto_min: Option<u32>,
        proto_max: Option<u32>,
    },
}

impl Expr {
    /// `immediate` setting the verdict register.
    pub fn verdict(v: Verdict) -> Expr {
        Expr::Immediate {
            dreg: REG_VERDICT,
            data: Data::Verdict(v),
        }
    }

    /// The kernel's name for this expression type.
    pub fn name(&self) -> &'static str {
        match self {
            Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
            Expr::Payload { .. } => "payload",
            Expr::Cmp { .. } => "cmp",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Ct { .. } | Expr::CtSet { .. } => "ct",
            Expr::Lookup { .. } => "lookup",
            Expr::Immediate { .. } => "immediate",
            Expr::Counter => "counter",
            Expr::Nat { .. } => "nat",
        }
    }

    /// Append this expression as one `NFTA_LIST_ELEM` of a rule's expression list.
    pub fn encode(&self, list: &mut AttrBuf) {
        list.nested(NFTA_LIST_ELEM, |e| {
            e.str(NFTA_EXPR_NAME, self.name());
            e.nested(NFTA_EXPR_DATA, |d| self.encode_data(d));
        });
    }

    fn encode_data(&self, d: &mut AttrBuf) {
        match self {
            Expr::Meta { key, dreg } => {
                d.be32(NFTA_META_KEY, *key).be32(NFTA_META_DREG, *dreg);
            }
            Expr::MetaSet { key, sreg } => {
                d.be32(NFTA_META_KEY, *key).be32(NFTA_META_SREG, *sreg);
            }
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                d.be32(NFTA_PAYLOAD_DREG, *dreg)
                    .be32(NFTA_PAYLOAD_BASE, base.code())
                    .be32(NFTA_PAYLOAD_OFFSET, *offset)
                    .be32(NFTA_PAYLOAD_LEN, *len);
            }
            Expr::Cmp { sreg, op, data } => {
                d.be32(NFTA_CMP_SREG, *sreg).be32(NFTA_CMP_OP, op.code());
                d.nested(NFTA_CMP_DATA, |n| {
                    n.bytes(NFTA_DATA_VALUE, data);
                });
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                d.be32(NFTA_BITWISE_SREG, *sreg)
                    .be32(NFTA_BITWISE_DREG, *dreg)
                    .be32(NFTA_BITWISE_LEN, mask.len() as u32);
                d.nested(NFTA_BITWISE_MASK, |n| {
                    n.bytes(NFTA_DATA_VALUE, mask);
                });
                d.nested(NFTA_BITWISE_XOR, |n| {
                    n.bytes(NFTA_DATA_VALUE, xor);
                });
            }
            Expr::Ct { key, dreg } => {
                d.be32(NFTA_CT_KEY, *key).be32(NFTA_CT_DREG, *dreg);
            }
            Expr::CtSet { key, sreg } => {
                d.be32(NFTA_CT_KEY, *key).be32(NFTA_CT_SREG, *sreg);
            }
            Expr::Lookup {
                set,
                sreg,
                dreg,
                invert,
            } => {
                d.str(NFTA_LOOKUP_SET, set).be32(NFTA_LOOKUP_SREG, *sreg);
                if let Some(r) = dreg {
                    d.be32(NFTA_LOOKUP_DREG, *r);
                }
                if *invert {
                    d.be32(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
                }
            }
            Expr::Immediate { dreg, data } => {
                d.be32(NFTA_IMMEDIATE_DREG, *dreg);
                d.nested(NFTA_IMMEDIATE_DATA, |n| data.encode(n));
            }
            Expr::Counter => {
                d.be64(NFTA_COUNTER_BYTES, 0).be64(NFTA_COUNTER_PACKETS, 0);
            }
            Expr::Nat {
                kind,
                family,
                addr_min,
                addr_max,
                proto_min,
                proto_max,
            } => {
                let k = match kind {
                    NatKind::Snat => NFT_NAT_SNAT,
                    NatKind::Dnat => NFT_NAT_DNAT,
                };
                d.be32(NFTA_NAT_TYPE, k)
                    .be32(NFTA_NAT_FAMILY, u32::from(*family));
                for (attr, reg) in [
                    (NFTA_NAT_REG_ADDR_MIN, addr_min),
                    (NFTA_NAT_REG_ADDR_MAX, addr_max),
                    (NFTA_NAT_REG_PROTO_MIN, proto_min),
                    (NFTA_NAT_REG_PROTO_MAX, proto_max),
                ] {
                    if let Some(r) = reg {
                        d.be32(attr, *r);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(e: &Expr) -> Vec<u8> {
        let mut b = AttrBuf::new();
        e.encode(&mut b);
        b.into_bytes()
    }

    #[test]
    fn meta_iifname_encodes_like_libnftnl() {
        // list elem { name "meta", data { key=6, dreg=8 } }
        let got = enc(&Expr::Meta {
            key: NFT_META_IIFNAME,
            dreg: reg32(0),
        });
        let want: Vec<u8> = vec![
            36, 0, 1, 0x80, // NFTA_LIST_ELEM, nested, 36 bytes
            9, 0, 1, 0, b'm', b'e', b't', b'a', 0, 0, 0, 0, // NFTA_EXPR_NAME "meta"
            20, 0, 2, 0x80, // NFTA_EXPR_DATA, nested
            8, 0, 2, 0, 0, 0, 0, 6, // NFTA_META_KEY = 6 (iifname), big-endian
            8, 0, 1, 0, 0, 0, 0, 8, // NFTA_META_DREG = 8 (NFT_REG32_00)
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn accept_verdict_is_immediate_into_register_zero() {
        let got = enc(&Expr::verdict(Verdict::Accept));
        let want: Vec<u8> = vec![
            48, 0, 1, 0x80, // list elem
            14, 0, 1, 0, b'i', b'm', b'm', b'e', b'd', b'i', b'a', b't', b'e', 0, 0, 0, 28, 0, 2,
            0x80, // data
            8, 0, 1, 0, 0, 0, 0, 0, // NFTA_IMMEDIATE_DREG = 0 (verdict)
            16, 0, 2, 0x80, // NFTA_IMMEDIATE_DATA
            12, 0, 2, 0x80, // NFTA_DATA_VERDICT
            8, 0, 1, 0, 0, 0, 0, 1, // NFTA_VERDICT_CODE = NF_ACCEPT
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn jump_carries_chain_name_and_negative_code() {
        let got = enc(&Expr::verdict(Verdict::Jump("ab".into())));
        // code -3 as big-endian two's complement, then the chain name.
        let code = [8u8, 0, 1, 0, 0xff, 0xff, 0xff, 0xfd];
        assert!(got.windows(8).any(|w| w == code));
        assert!(got.windows(7).any(|w| w == [7, 0, 2, 0, b'a', b'b', 0]));
    }

    #[test]
    fn cmp_wraps_data_in_nft_data_value() {
        let got = enc(&Expr::Cmp {
            sreg: reg32(0),
            op: CmpOp::Eq,
            data: vec![6],
        });
        let tail: Vec<u8> = vec![
            8, 0, 1, 0, 0, 0, 0, 8, // sreg
            8, 0, 2, 0, 0, 0, 0, 0, // op eq
            12, 0, 3, 0x80, 5, 0, 1, 0, 6, 0, 0, 0, // data { value [6] }
        ];
        assert!(got.ends_with(&tail));
    }

    #[test]
    fn inverted_lookup_sets_the_flag() {
        let got = enc(&Expr::Lookup {
            set: "s".into(),
            sreg: reg32(0),
            dreg: None,
            invert: true,
        });
        assert!(got.ends_with(&[8, 0, 5, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn verdict_codes_round_trip() {
        for v in [
            Verdict::Accept,
            Verdict::Drop,
            Verdict::Return,
            Verdict::Jump("c".into()),
            Verdict::Goto("d".into()),
        ] {
            let chain = v.chain().map(str::to_string);
            assert_eq!(Verdict::from_code(v.code(), chain.as_deref()), Some(v));
        }
        assert_eq!(Verdict::from_code(NFT_JUMP, None), None);
    }
}
