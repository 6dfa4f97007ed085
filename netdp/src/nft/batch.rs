//! Building nf_tables messages (tables, chains, rules, sets, elements) into one
//! atomic `NFNL_MSG_BATCH_BEGIN .. END` transaction.

use super::attr::AttrBuf;
use super::expr::{Data, Expr, Verdict};
use super::sys::*;

/// A base chain's hook: where it attaches, at which priority, and its policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hook {
    /// `NF_HOOK_*` (the inet and bridge numbers coincide).
    pub hooknum: u32,
    pub priority: i32,
    /// "filter", "nat" or "route".
    pub chain_type: &'static str,
    /// Accept or drop; `None` leaves the kernel default (accept).
    pub policy: Option<Verdict>,
}

/// What a chain looks like when it is created.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChainDef {
    pub name: String,
    pub hook: Option<Hook>,
    pub userdata: Option<Vec<u8>>,
}

/// What a set or map looks like when it is created.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetDef {
    pub name: String,
    /// `NFT_SET_*` flags (interval, map, concat, constant).
    pub flags: u32,
    /// nft's datatype id for the key (meta information the kernel keeps for `nft list`).
    pub key_type: u32,
    pub key_len: u32,
    /// For maps: the data type (`NFT_DATA_VERDICT` for verdict maps) and length.
    pub data: Option<(u32, u32)>,
    /// Field lengths of a concatenated key (`NFTA_SET_DESC_CONCAT`); empty otherwise.
    pub concat: Vec<u32>,
}

/// One set or map element.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Elem {
    pub key: Vec<u8>,
    /// The closing key of a range in a concatenated interval set.
    pub key_end: Option<Vec<u8>>,
    /// `NFT_SET_ELEM_INTERVAL_END` for the end marker of a plain interval set.
    pub flags: u32,
    pub data: Option<Data>,
    pub userdata: Option<Vec<u8>>,
}

impl Elem {
    pub fn key(key: Vec<u8>) -> Elem {
        Elem {
            key,
            key_end: None,
            flags: 0,
            data: None,
            userdata: None,
        }
    }

    fn encode(&self, b: &mut AttrBuf, with_data: bool) {
        b.nested(NFTA_LIST_ELEM, |e| {
            e.nested(NFTA_SET_ELEM_KEY, |k| {
                k.bytes(NFTA_DATA_VALUE, &self.key);
            });
            if let Some(end) = &self.key_end {
                e.nested(NFTA_SET_ELEM_KEY_END, |k| {
                    k.bytes(NFTA_DATA_VALUE, end);
                });
            }
            if self.flags != 0 {
                e.be32(NFTA_SET_ELEM_FLAGS, self.flags);
            }
            if with_data {
                if let Some(d) = &self.data {
                    e.nested(NFTA_SET_ELEM_DATA, |n| d.encode(n));
                }
                if let Some(u) = &self.userdata {
                    e.bytes(NFTA_SET_ELEM_USERDATA, u);
                }
            }
        });
    }
}

/// One message of a batch, with a description used in error reports.
#[derive(Debug, Clone)]
struct Msg {
    kind: u16,
    family: u8,
    flags: u16,
    attrs: AttrBuf,
    what: String,
}

/// The largest attribute payload a message carries before elements are split
/// over several messages (attribute lengths are 16-bit).
const MAX_ELEMS_BYTES: usize = 48 * 1024;

/// An ordered list of nf_tables changes applied as one kernel transaction.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    msgs: Vec<Msg>,
}

/// Encoded batch plus, per acknowledged sequence number, what the message did.
#[derive(Debug)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub acks: Vec<(u32, String)>,
}

impl Batch {
    pub fn new() -> Self {
        Batch::default()
    }

    /// Number of nf_tables messages (without the begin/end markers).
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    fn push(&mut self, kind: u16, family: u8, flags: u16, attrs: AttrBuf, what: String) {
        self.msgs.push(Msg {
            kind,
            family,
            flags,
            attrs,
            what,
        });
    }

    /// Create a table (no error if it exists).
    pub fn add_table(&mut self, family: u8, name: &str, userdata: Option<&[u8]>) {
        let mut a = AttrBuf::new();
        a.str(NFTA_TABLE_NAME, name).be32(NFTA_TABLE_FLAGS, 0);
        if let Some(u) = userdata {
            a.bytes(NFTA_TABLE_USERDATA, u);
        }
        self.push(
            NFT_MSG_NEWTABLE,
            family,
            NLM_F_CREATE,
            a,
            format!("add table {name}"),
        );
    }

    /// Delete a table with everything in it.
    pub fn del_table(&mut self, family: u8, name: &str) {
        let mut a = AttrBuf::new();
        a.str(NFTA_TABLE_NAME, name);
        self.push(
            NFT_MSG_DELTABLE,
            family,
            0,
            a,
            format!("delete table {name}"),
        );
    }

    /// Create a chain (base chain when it has a hook).
    pub fn add_chain(&mut self, family: u8, table: &str, c: &ChainDef) {
        let mut a = AttrBuf::new();
        a.str(NFTA_CHAIN_TABLE, table).str(NFTA_CHAIN_NAME, &c.name);
        if let Some(h) = &c.hook {
            a.nested(NFTA_CHAIN_HOOK, |n| {
                n.be32(NFTA_HOOK_HOOKNUM, h.hooknum)
                    .be32(NFTA_HOOK_PRIORITY, h.priority as u32);
            });
            if let Some(p) = &h.policy {
                a.be32(NFTA_CHAIN_POLICY, p.code() as u32);
            }
            a.str(NFTA_CHAIN_TYPE, h.chain_type);
        }
        if let Some(u) = &c.userdata {
            a.bytes(NFTA_CHAIN_USERDATA, u);
        }
        self.push(
            NFT_MSG_NEWCHAIN,
            family,
            NLM_F_CREATE,
            a,
            format!("add chain {table} {}", c.name),
        );
    }

    /// Delete a chain and its rules.
    pub fn del_chain(&mut self, family: u8, table: &str, chain: &str) {
        let mut a = AttrBuf::new();
        a.str(NFTA_CHAIN_TABLE, table).str(NFTA_CHAIN_NAME, chain);
        self.push(
            NFT_MSG_DELCHAIN,
            family,
            0,
            a,
            format!("delete chain {table} {chain}"),
        );
    }

    /// Remove every rule of a chain.
    pub fn flush_chain(&mut self, family: u8, table: &str, chain: &str) {
        let mut a = AttrBuf::new();
        a.str(NFTA_RULE_TABLE, table).str(NFTA_RULE_CHAIN, chain);
        self.push(
            NFT_MSG_DELRULE,
            family,
            0,
            a,
            format!("flush chain {table} {chain}"),
        );
    }

    /// Append a rule to a chain.
    pub fn add_rule(
        &mut self,
        family: u8,
        table: &str,
        chain: &str,
        exprs: &[Expr],
        userdata: Option<&[u8]>,
    ) {
        let mut a = AttrBuf::new();
        a.str(NFTA_RULE_TABLE, table).str(NFTA_RULE_CHAIN, chain);
        a.nested(NFTA_RULE_EXPRESSIONS, |l| {
            for e in exprs {
                e.encode(l);
            }
        });
        if let Some(u) = userdata {
            a.bytes(NFTA_RULE_USERDATA, u);
        }
        let n = self.msgs.len();
        self.push(
            NFT_MSG_NEWRULE,
            family,
            NLM_F_CREATE | 0x800, // NLM_F_APPEND
            a,
            format!("add rule {table} {chain} (#{n})"),
        );
    }

    /// Create a set or map.
    pub fn add_set(&mut self, family: u8, table: &str, s: &SetDef) {
        let mut a = AttrBuf::new();
        a.str(NFTA_SET_TABLE, table)
            .str(NFTA_SET_NAME, &s.name)
            .be32(NFTA_SET_FLAGS, s.flags)
            .be32(NFTA_SET_KEY_TYPE, s.key_type)
            .be32(NFTA_SET_KEY_LEN, s.key_len)
            // The kernel requires a transaction-local id for every new set.
            .be32(NFTA_SET_ID, self.msgs.len() as u32 + 1);
        if let Some((ty, len)) = s.data {
            a.be32(NFTA_SET_DATA_TYPE, ty);
            if ty != NFT_DATA_VERDICT {
                a.be32(NFTA_SET_DATA_LEN, len);
            }
        }
        if !s.concat.is_empty() {
            a.nested(NFTA_SET_DESC, |d| {
                d.nested(NFTA_SET_DESC_CONCAT, |c| {
                    for len in &s.concat {
                        c.nested(NFTA_LIST_ELEM, |f| {
                            f.be32(NFTA_SET_FIELD_LEN, *len);
                        });
                    }
                });
            });
        }
        self.push(
            NFT_MSG_NEWSET,
            family,
            NLM_F_CREATE,
            a,
            format!("add set {table} {}", s.name),
        );
    }

    /// Delete a set or map.
    pub fn del_set(&mut self, family: u8, table: &str, set: &str) {
        let mut a = AttrBuf::new();
        a.str(NFTA_SET_TABLE, table).str(NFTA_SET_NAME, set);
        self.push(
            NFT_MSG_DELSET,
            family,
            0,
            a,
            format!("delete set {table} {set}"),
        );
    }

    /// Add elements to a named set (split over several messages when large).
    pub fn add_elems(&mut self, family: u8, table: &str, set: &str, elems: &[Elem]) {
        self.elems(NFT_MSG_NEWSETELEM, NLM_F_CREATE, family, table, set, elems);
    }

    /// Delete elements from a named set (keys only are sent).
    pub fn del_elems(&mut self, family: u8, table: &str, set: &str, elems: &[Elem]) {
        self.elems(NFT_MSG_DELSETELEM, 0, family, table, set, elems);
    }

    fn elems(&mut self, kind: u16, flags: u16, family: u8, table: &str, set: &str, elems: &[Elem]) {
        let verb = if kind == NFT_MSG_NEWSETELEM {
            "add"
        } else {
            "delete"
        };
        let mut chunk = AttrBuf::new();
        let mut count = 0usize;
        let with_data = kind == NFT_MSG_NEWSETELEM;
        let flush = |chunk: &mut AttrBuf, count: &mut usize, this: &mut Batch| {
            if *count == 0 {
                return;
            }
            let mut a = AttrBuf::new();
            a.str(NFTA_SET_ELEM_LIST_TABLE, table)
                .str(NFTA_SET_ELEM_LIST_SET, set)
                .bytes(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, chunk.as_bytes());
            this.push(
                kind,
                family,
                flags,
                a,
                format!("{verb} {count} element(s) of set {table} {set}"),
            );
            *chunk = AttrBuf::new();
            *count = 0;
        };
        for e in elems {
            e.encode(&mut chunk, with_data);
            count += 1;
            if chunk.as_bytes().len() > MAX_ELEMS_BYTES {
                flush(&mut chunk, &mut count, self);
            }
        }
        flush(&mut chunk, &mut count, self);
    }

    /// Encode as one transaction; sequence numbers start at `seq`.
    pub fn encode(&self, seq: u32) -> Encoded {
        let mut bytes = Vec::new();
        let mut acks = Vec::with_capacity(self.msgs.len());
        let subsys = NFNL_SUBSYS_NFTABLES;
        put_msg(
            &mut bytes,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            seq,
            NFPROTO_UNSPEC,
            subsys,
            &[],
        );
        let mut s = seq;
        for m in &self.msgs {
            s = s.wrapping_add(1);
            put_msg(
                &mut bytes,
                (subsys << 8) | m.kind,
                NLM_F_REQUEST | NLM_F_ACK | m.flags,
                s,
                m.family,
                0,
                m.attrs.as_bytes(),
            );
            acks.push((s, m.what.clone()));
        }
        s = s.wrapping_add(1);
        put_msg(
            &mut bytes,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            s,
            NFPROTO_UNSPEC,
            subsys,
            &[],
        );
        Encoded { bytes, acks }
    }
}

/// Append one netlink message: nlmsghdr, nfgenmsg, attributes.
pub fn put_msg(
    out: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[u8],
) {
    let len = (16 + 4 + attrs.len()) as u32;
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.push(family);
    out.push(0); // NFNETLINK_V0
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(attrs);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ne32(v: u32) -> [u8; 4] {
        v.to_ne_bytes()
    }

    #[test]
    fn one_table_batch_byte_for_byte() {
        let mut b = Batch::new();
        b.add_table(NFPROTO_INET, "k", None);
        let e = b.encode(100);
        let mut want = Vec::new();
        // BATCH_BEGIN: len 20, type 0x10, flags REQUEST, seq 100, res_id = htons(10)
        want.extend_from_slice(&ne32(20));
        want.extend_from_slice(&0x10u16.to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(&ne32(100));
        want.extend_from_slice(&ne32(0));
        want.extend_from_slice(&[0, 0, 0, 10]);
        // NEWTABLE: type (10<<8)|0, flags REQUEST|ACK|CREATE, seq 101, family inet
        want.extend_from_slice(&ne32(20 + 8 + 8));
        want.extend_from_slice(&0x0a00u16.to_ne_bytes());
        want.extend_from_slice(&0x405u16.to_ne_bytes());
        want.extend_from_slice(&ne32(101));
        want.extend_from_slice(&ne32(0));
        want.extend_from_slice(&[1, 0, 0, 0]);
        want.extend_from_slice(&[6, 0, 1, 0, b'k', 0, 0, 0]); // NFTA_TABLE_NAME "k"
        want.extend_from_slice(&[8, 0, 2, 0, 0, 0, 0, 0]); // NFTA_TABLE_FLAGS 0
                                                           // BATCH_END
        want.extend_from_slice(&ne32(20));
        want.extend_from_slice(&0x11u16.to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(&ne32(102));
        want.extend_from_slice(&ne32(0));
        want.extend_from_slice(&[0, 0, 0, 10]);
        assert_eq!(e.bytes, want);
        assert_eq!(e.acks, vec![(101, "add table k".to_string())]);
    }

    #[test]
    fn concat_set_carries_field_lengths() {
        let mut b = Batch::new();
        b.add_set(
            NFPROTO_BRIDGE,
            "t",
            &SetDef {
                name: "s".into(),
                flags: NFT_SET_INTERVAL | NFT_SET_CONCAT,
                key_type: 0,
                key_len: 20,
                data: None,
                concat: vec![16, 4],
            },
        );
        let e = b.encode(0);
        // NFTA_SET_DESC { CONCAT { elem { len 16 }, elem { len 4 } } }
        let desc: Vec<u8> = vec![
            32, 0, 9, 0x80, 28, 0, 2, 0x80, 12, 0, 1, 0x80, 8, 0, 1, 0, 0, 0, 0, 16, 12, 0, 1,
            0x80, 8, 0, 1, 0, 0, 0, 0, 4,
        ];
        assert!(e.bytes.windows(desc.len()).any(|w| w == desc));
    }

    #[test]
    fn large_element_lists_are_split() {
        let mut b = Batch::new();
        let elems: Vec<Elem> = (0..10_000u32)
            .map(|i| Elem::key(i.to_be_bytes().to_vec()))
            .collect();
        b.add_elems(NFPROTO_INET, "t", "s", &elems);
        assert!(b.len() > 1);
        let e = b.encode(0);
        assert_eq!(e.acks.len(), b.len());
        // Every message fits a 16-bit attribute length.
        assert!(b.msgs.iter().all(|m| m.attrs.as_bytes().len() < 65_000));
    }

    #[test]
    fn delete_elements_send_keys_only() {
        let mut b = Batch::new();
        let mut e = Elem::key(vec![1, 2, 3, 4]);
        e.data = Some(Data::Verdict(Verdict::Jump("c".into())));
        b.del_elems(NFPROTO_INET, "t", "m", std::slice::from_ref(&e));
        let enc = b.encode(0);
        assert!(!enc.bytes.windows(2).any(|w| w == [b'c', 0]));
    }
}
