//! Small builders for the matches the security-group layout is made of
//! (`meta l4proto tcp`, `ether type arp`, `ct state established,related`, ...).

use crate::nft::sys::*;
use crate::nft::{reg32, CmpOp, Expr, PayloadBase, Verdict};

/// Register holding lookup keys (concatenations start here).
pub const R0: u32 = reg32(0);
/// Register after a 16-byte interface name.
pub const R4: u32 = reg32(4);
/// Register after an interface name and a (padded) MAC.
pub const R6: u32 = reg32(6);

pub fn load_meta(key: u32, dreg: u32) -> Expr {
    Expr::Meta { key, dreg }
}

pub fn load(base: PayloadBase, offset: u32, len: u32, dreg: u32) -> Expr {
    Expr::Payload {
        base,
        offset,
        len,
        dreg,
    }
}

pub fn cmp(op: CmpOp, data: &[u8]) -> Expr {
    Expr::Cmp {
        sreg: R0,
        op,
        data: data.to_vec(),
    }
}

/// `meta KEY == data`.
pub fn meta_eq(key: u32, data: &[u8]) -> Vec<Expr> {
    vec![load_meta(key, R0), cmp(CmpOp::Eq, data)]
}

/// `meta nfproto ipv4|ipv6`.
pub fn nfproto(v6: bool) -> Vec<Expr> {
    meta_eq(
        NFT_META_NFPROTO,
        &[if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 }],
    )
}

/// `meta l4proto N`.
pub fn l4proto(n: u8) -> Vec<Expr> {
    meta_eq(NFT_META_L4PROTO, &[n])
}

/// `payload[base, offset, len] == data`.
pub fn payload_eq(base: PayloadBase, offset: u32, data: &[u8]) -> Vec<Expr> {
    vec![
        load(base, offset, data.len() as u32, R0),
        cmp(CmpOp::Eq, data),
    ]
}

/// `ether type T` (bridge family).
pub fn ether_type(t: u16) -> Vec<Expr> {
    payload_eq(PayloadBase::Link, 12, &t.to_be_bytes())
}

/// `ct state` has any of `bits`.
pub fn ct_state_any(bits: u32) -> Vec<Expr> {
    vec![
        Expr::Ct {
            key: NFT_CT_STATE,
            dreg: R0,
        },
        Expr::Bitwise {
            sreg: R0,
            dreg: R0,
            mask: bits.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        cmp(CmpOp::Neq, &[0; 4]),
    ]
}

/// Look `sreg` up in a named set.
pub fn lookup(set: &str, sreg: u32, invert: bool) -> Expr {
    Expr::Lookup {
        set: set.to_string(),
        sreg,
        dreg: None,
        invert,
    }
}

/// Look `sreg` up in a map, writing the value to `dreg`.
pub fn map(set: &str, sreg: u32, dreg: u32) -> Expr {
    Expr::Lookup {
        set: set.to_string(),
        sreg,
        dreg: Some(dreg),
        invert: false,
    }
}

pub fn accept() -> Expr {
    Expr::verdict(Verdict::Accept)
}

pub fn drop() -> Expr {
    Expr::verdict(Verdict::Drop)
}

/// An interface name as the 16 zero-padded bytes `meta iifname` loads.
pub fn ifname_key(name: &str) -> [u8; 16] {
    let mut k = [0u8; 16];
    let n = name.len().min(15);
    k[..n].copy_from_slice(&name.as_bytes()[..n]);
    k
}

/// Concatenate rule fragments.
pub fn rule(parts: impl IntoIterator<Item = Vec<Expr>>) -> Vec<Expr> {
    parts.into_iter().flatten().collect()
}
