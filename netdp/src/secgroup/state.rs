//! The compiled form of the security-group state (tables, chains with rules,
//! sets with elements) and the diff that turns one state into another as the
//! messages of a single nf_tables batch.

use std::collections::BTreeMap;

use crate::nft::attr::AttrBuf;
use crate::nft::{Batch, ChainDef, Elem, Expr, SetDef};

/// A chain with its rules; `hash` fingerprints the rules (0 = unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub def: ChainDef,
    pub rules: Vec<Vec<Expr>>,
    pub hash: u64,
}

impl Chain {
    /// A chain whose hash is computed from its rules.
    pub fn new(def: ChainDef, rules: Vec<Vec<Expr>>) -> Chain {
        let hash = rules_hash(&rules);
        Chain { def, rules, hash }
    }

    pub fn is_base(&self) -> bool {
        self.def.hook.is_some()
    }
}

/// The identity of a set element: key, closing key and interval flag.
pub type ElemKey = (Vec<u8>, Option<Vec<u8>>, u32);

/// Identity of an element.
pub fn elem_key(e: &Elem) -> ElemKey {
    (e.key.clone(), e.key_end.clone(), e.flags)
}

/// A set with its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub def: SetDef,
    pub elems: BTreeMap<ElemKey, Elem>,
}

impl Set {
    pub fn new(def: SetDef) -> Set {
        Set {
            def,
            elems: BTreeMap::new(),
        }
    }

    pub fn insert(&mut self, e: Elem) {
        self.elems.insert(elem_key(&e), e);
    }
}

/// One table: present or not, its skeleton fingerprint, sets and chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: u8,
    pub name: String,
    pub present: bool,
    /// Fingerprint of the fixed layout (base chains, fixed sets); a mismatch
    /// means the table is rebuilt as a whole (still in one batch).
    pub skeleton: u64,
    pub sets: BTreeMap<String, Set>,
    pub chains: BTreeMap<String, Chain>,
}

impl Table {
    pub fn absent(family: u8, name: &str) -> Table {
        Table {
            family,
            name: name.to_string(),
            present: false,
            skeleton: 0,
            sets: BTreeMap::new(),
            chains: BTreeMap::new(),
        }
    }
}

/// FNV-1a over the netlink encoding of the rules: stable across runs and builds.
pub fn rules_hash(rules: &[Vec<Expr>]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for r in rules {
        let mut b = AttrBuf::new();
        for e in r {
            e.encode(&mut b);
        }
        for byte in b.as_bytes().iter().chain(&[0xff, 0xfe]) {
            h ^= u64::from(*byte);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h | 1
}

/// nftnl-style user data holding a comment (what `nft list` shows as `comment`).
pub fn comment(text: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(text.len() + 3);
    v.push(0); // NFTNL_UDATA_*_COMMENT
    v.push((text.len() + 1).min(255) as u8);
    v.extend_from_slice(&text.as_bytes()[..text.len().min(254)]);
    v.push(0);
    v
}

/// The text of a comment written by [`comment`].
pub fn comment_text(udata: &[u8]) -> Option<&str> {
    if udata.len() < 3 || udata[0] != 0 {
        return None;
    }
    let len = usize::from(udata[1]);
    let body = udata.get(2..2 + len)?;
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    std::str::from_utf8(&body[..end]).ok()
}

/// What a diff removed, so the caller can drop conntrack entries it allowed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Chains whose rules lost at least one rule (or whose old rules are unknown).
    pub narrowed_chains: Vec<String>,
    /// Per set: the elements deleted.
    pub elems: Vec<(String, Elem)>,
}

/// Append to `b` the messages turning `cur` into `want` (same family and name).
/// Returns what was taken away.
pub fn diff_table(cur: &Table, want: &Table, b: &mut Batch) -> Removed {
    let mut removed = Removed::default();
    let (fam, name) = (want.family, want.name.as_str());
    if !want.present {
        if cur.present {
            b.del_table(fam, name);
        }
        return removed;
    }
    if !cur.present || cur.skeleton != want.skeleton {
        if cur.present {
            b.del_table(fam, name);
            removed.narrowed_chains.extend(cur.chains.keys().cloned());
        }
        build_table(want, b);
        return removed;
    }
    // 1. new chains (empty), 2. new sets, so elements and rules can refer to them.
    for (n, c) in &want.chains {
        if !cur.chains.contains_key(n) {
            b.add_chain(fam, name, &c.def);
        }
    }
    for (n, s) in &want.sets {
        if !cur.sets.contains_key(n) {
            b.add_set(fam, name, &s.def);
        }
    }
    // 3. element deletions, then additions (a changed value is delete + add).
    let empty = BTreeMap::new();
    for (n, s) in &want.sets {
        let old = cur.sets.get(n).map(|s| &s.elems).unwrap_or(&empty);
        let gone: Vec<Elem> = old
            .iter()
            .filter(|(k, e)| s.elems.get(*k) != Some(*e))
            .map(|(_, e)| e.clone())
            .collect();
        if !gone.is_empty() {
            b.del_elems(fam, name, n, &gone);
            for e in &gone {
                if !s.elems.contains_key(&elem_key(e)) {
                    removed.elems.push((n.clone(), e.clone()));
                }
            }
        }
    }
    for (n, s) in &want.sets {
        let old = cur.sets.get(n).map(|s| &s.elems).unwrap_or(&empty);
        let new: Vec<Elem> = s
            .elems
            .iter()
            .filter(|(k, e)| old.get(*k) != Some(*e))
            .map(|(_, e)| e.clone())
            .collect();
        if !new.is_empty() {
            b.add_elems(fam, name, n, &new);
        }
    }
    // 4. chain contents: fill new chains, flush and refill changed ones.
    for (n, c) in &want.chains {
        match cur.chains.get(n) {
            None => fill(b, fam, name, c),
            Some(old) if old.hash != c.hash => {
                b.flush_chain(fam, name, n);
                fill(b, fam, name, c);
                if old.hash == 0 || old.rules.iter().any(|r| !c.rules.contains(r)) {
                    removed.narrowed_chains.push(n.clone());
                }
            }
            Some(_) => {}
        }
    }
    // 5. chains and sets no longer wanted (their references are gone by now).
    for (n, c) in &cur.chains {
        if !want.chains.contains_key(n) && !c.is_base() {
            b.del_chain(fam, name, n);
            removed.narrowed_chains.push(n.clone());
        }
    }
    for (n, s) in &cur.sets {
        if !want.sets.contains_key(n) {
            b.del_set(fam, name, n);
            for e in s.elems.values() {
                removed.elems.push((n.clone(), e.clone()));
            }
        }
    }
    removed
}

fn fill(b: &mut Batch, fam: u8, table: &str, c: &Chain) {
    for r in &c.rules {
        b.add_rule(fam, table, &c.def.name, r, None);
    }
}

/// Messages creating a whole table from nothing.
pub fn build_table(t: &Table, b: &mut Batch) {
    let ud = comment(&format!("kiln skeleton {:016x}", t.skeleton));
    b.add_table(t.family, &t.name, Some(&ud));
    for c in t.chains.values() {
        b.add_chain(t.family, &t.name, &c.def);
    }
    for s in t.sets.values() {
        b.add_set(t.family, &t.name, &s.def);
        let elems: Vec<Elem> = s.elems.values().cloned().collect();
        if !elems.is_empty() {
            b.add_elems(t.family, &t.name, &s.def.name, &elems);
        }
    }
    for c in t.chains.values() {
        fill(b, t.family, &t.name, c);
    }
}

/// Parse the skeleton fingerprint out of a table's user data.
pub fn skeleton_of(udata: Option<&[u8]>) -> u64 {
    udata
        .and_then(comment_text)
        .and_then(|t| t.strip_prefix("kiln skeleton "))
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::sys::NFPROTO_INET;
    use crate::nft::Verdict;

    fn table(chains: &[(&str, Vec<Vec<Expr>>)], elems: &[u8]) -> Table {
        let mut t = Table::absent(NFPROTO_INET, "t");
        t.present = true;
        t.skeleton = 7;
        for (n, r) in chains {
            let def = ChainDef {
                name: n.to_string(),
                hook: None,
                userdata: None,
            };
            t.chains.insert(n.to_string(), Chain::new(def, r.clone()));
        }
        let mut s = Set::new(SetDef {
            name: "s".into(),
            flags: 0,
            key_type: 0,
            key_len: 1,
            data: None,
            concat: vec![],
        });
        for e in elems {
            s.insert(Elem::key(vec![*e]));
        }
        t.sets.insert("s".into(), s);
        t
    }

    fn accept() -> Vec<Expr> {
        vec![Expr::verdict(Verdict::Accept)]
    }

    #[test]
    fn equal_tables_give_an_empty_batch() {
        let a = table(&[("c", vec![accept()])], &[1, 2]);
        let mut b = Batch::new();
        let r = diff_table(&a, &a.clone(), &mut b);
        assert!(b.is_empty());
        assert_eq!(r, Removed::default());
    }

    #[test]
    fn changed_chain_is_flushed_and_refilled_and_reported_narrowed() {
        let a = table(&[("c", vec![accept(), vec![Expr::Counter]])], &[1]);
        let w = table(&[("c", vec![accept()])], &[1]);
        let mut b = Batch::new();
        let r = diff_table(&a, &w, &mut b);
        assert_eq!(b.len(), 2); // flush + one rule
        assert_eq!(r.narrowed_chains, vec!["c".to_string()]);
    }

    #[test]
    fn element_changes_are_deletes_then_adds() {
        let a = table(&[], &[1, 2]);
        let w = table(&[], &[2, 3]);
        let mut b = Batch::new();
        let r = diff_table(&a, &w, &mut b);
        assert_eq!(b.len(), 2);
        assert_eq!(r.elems, vec![("s".to_string(), Elem::key(vec![1]))]);
    }

    #[test]
    fn skeleton_mismatch_rebuilds_the_table() {
        let a = table(&[("c", vec![accept()])], &[1]);
        let mut w = a.clone();
        w.skeleton = 8;
        let mut b = Batch::new();
        diff_table(&a, &w, &mut b);
        // delete table, add table, add chain, add set, add elems, add rule
        assert_eq!(b.len(), 6);
    }

    #[test]
    fn comments_round_trip() {
        let c = comment("kiln skeleton 00000000000000ff");
        assert_eq!(skeleton_of(Some(&c)), 255);
        assert_eq!(comment_text(&[1, 2, 3]), None);
    }
}
