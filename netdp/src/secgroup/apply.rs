//! Writing the compiled state to the kernel: whole-state apply and
//! reconciliation against what the kernel holds, and per-port updates, each as
//! one atomic nf_tables batch, followed by conntrack cleanup for what was taken away.

use std::collections::{BTreeMap, BTreeSet};

use super::addr::Range;
use super::compile::{
    all_groups, chain_hash_elem, compile, compile_port, dispatch_chain, group_chains, group_sets,
    referenced_groups, zone_map, CompileError, PortRules,
};
use super::conntrack::{self, CtFilter};
use super::layout::*;
use super::state::{diff_table, elem_key, skeleton_of, Chain, ElemKey, Removed, Set, Table};
use crate::model::{Direction, Model};
use crate::nft::sys::*;
use crate::nft::{Batch, ChainDef, Data, NftError, Socket};

/// Errors applying security groups.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Kernel(#[from] NftError),
    #[error("no free packet mark for port {0}")]
    MarksExhausted(String),
}

/// What one apply did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// nf_tables messages sent in the batch (0: nothing to change, nothing sent).
    pub messages: usize,
    /// Conntrack entries deleted afterwards.
    pub conntrack_deleted: usize,
}

/// A change whose rules are in force, with the conntrack cleanup still to do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pending {
    /// nf_tables messages sent in the batch.
    pub messages: usize,
    /// Tracked connections the change disallowed (for [`SecurityGroups::flush_conntrack`]).
    pub conntrack: Vec<CtFilter>,
}

/// The largest port mark (bit 31 marks traffic *from* a port).
const MAX_MARK: u32 = FROM_PORT_BIT - 1;

/// Security groups and anti-spoofing of one network namespace (the host's, or
/// a test's), kept equal to a [`Model`].
///
/// Call [`SecurityGroups::reconcile`] first (it reads the kernel); then
/// [`SecurityGroups::apply_port`] for each port change, or
/// [`SecurityGroups::apply`] for a wholesale change.
#[derive(Debug)]
pub struct SecurityGroups {
    sock: Socket,
    bridge: Table,
    inet: Table,
    ports: BTreeMap<String, PortRules>,
    marks: BTreeMap<String, u32>,
    used: BTreeSet<u32>,
}

impl SecurityGroups {
    /// Work on the namespace `sock` was opened in. Nothing is assumed about
    /// the kernel until [`SecurityGroups::reconcile`] runs.
    pub fn new(sock: Socket) -> SecurityGroups {
        SecurityGroups {
            sock,
            bridge: Table::absent(NFPROTO_BRIDGE, TABLE),
            inet: Table::absent(NFPROTO_INET, TABLE),
            ports: BTreeMap::new(),
            marks: BTreeMap::new(),
            used: BTreeSet::new(),
        }
    }

    /// Open a socket in the calling thread's namespace.
    pub fn open() -> Result<SecurityGroups, ApplyError> {
        Ok(SecurityGroups::new(Socket::open()?))
    }

    /// The packet mark of a port with port security (for diagnostics and tests).
    pub fn mark_of(&self, port_id: &str) -> Option<u32> {
        self.marks.get(port_id).copied()
    }

    /// The socket, e.g. to send other batches in the same namespace.
    pub fn socket(&mut self) -> &mut Socket {
        &mut self.sock
    }

    fn ensure_mark(&mut self, model: &Model, port_id: &str) -> Result<Option<u32>, ApplyError> {
        let wanted = model
            .ports
            .get(port_id)
            .is_some_and(|p| p.port_security_enabled);
        if !wanted {
            if let Some(m) = self.marks.remove(port_id) {
                self.used.remove(&m);
            }
            return Ok(None);
        }
        if let Some(m) = self.marks.get(port_id) {
            return Ok(Some(*m));
        }
        let mut m = 1;
        for u in &self.used {
            if *u != m {
                break;
            }
            m += 1;
        }
        if m > MAX_MARK {
            return Err(ApplyError::MarksExhausted(port_id.to_string()));
        }
        self.used.insert(m);
        self.marks.insert(port_id.to_string(), m);
        Ok(Some(m))
    }

    fn assign_marks(&mut self, model: &Model) -> Result<(), ApplyError> {
        let stale: Vec<String> = self
            .marks
            .keys()
            .filter(|p| !model.ports.get(*p).is_some_and(|p| p.port_security_enabled))
            .cloned()
            .collect();
        for p in stale {
            if let Some(m) = self.marks.remove(&p) {
                self.used.remove(&m);
            }
        }
        for id in model.ports.keys() {
            self.ensure_mark(model, id)?;
        }
        Ok(())
    }

    /// Converge the whole state against the in-memory view of the kernel.
    pub fn apply(&mut self, model: &Model) -> Result<Applied, ApplyError> {
        self.assign_marks(model)?;
        let marks = self.marks.clone();
        let (bridge, inet, ports) = compile(model, &|p| marks.get(p).copied())?;
        let (cur_b, cur_i) = (self.bridge.clone(), self.inet.clone());
        self.commit_full(cur_b, cur_i, bridge, inet, ports)
    }

    fn commit_full(
        &mut self,
        cur_b: Table,
        cur_i: Table,
        bridge: Table,
        inet: Table,
        ports: BTreeMap<String, PortRules>,
    ) -> Result<Applied, ApplyError> {
        let mut batch = Batch::new();
        diff_table(&cur_b, &bridge, &mut batch);
        let removed = diff_table(&cur_i, &inet, &mut batch);
        let messages = batch.len();
        self.sock.send_batch(&batch)?;
        let filters = ct_filters(&removed, &self.ports, &ports, &cur_i, &inet);
        self.bridge = bridge;
        self.inet = inet;
        self.ports = ports;
        let conntrack_deleted = conntrack::flush(&mut self.sock, &filters)?;
        Ok(Applied {
            messages,
            conntrack_deleted,
        })
    }

    /// Remove kiln's tables altogether (nothing left to enforce in this
    /// namespace), in one batch; the next [`SecurityGroups::reconcile`]
    /// builds them again.
    pub fn remove(&mut self) -> Result<Applied, ApplyError> {
        let mut batch = Batch::new();
        for family in [NFPROTO_BRIDGE, NFPROTO_INET] {
            if self
                .sock
                .list_tables(family)?
                .iter()
                .any(|t| t.name == TABLE)
            {
                batch.del_table(family, TABLE);
            }
        }
        let messages = batch.len();
        if messages > 0 {
            self.sock.send_batch(&batch)?;
        }
        self.bridge = Table::absent(NFPROTO_BRIDGE, TABLE);
        self.inet = Table::absent(NFPROTO_INET, TABLE);
        self.ports.clear();
        self.marks.clear();
        self.used.clear();
        Ok(Applied {
            messages,
            conntrack_deleted: 0,
        })
    }

    /// Read kiln's tables from the kernel and converge them to `model`:
    /// missing parts are added, leftovers of deleted ports and networks removed.
    /// Port marks already in the kernel are kept. A second run sends nothing.
    pub fn reconcile(&mut self, model: &Model) -> Result<Applied, ApplyError> {
        let cur_b = self.read_table(NFPROTO_BRIDGE, &bridge_skeleton())?;
        let cur_i = self.read_table(NFPROTO_INET, &inet_skeleton())?;
        // Keep the marks the kernel already uses for ports still wanted.
        self.marks.clear();
        self.used.clear();
        if let Some(pm) = cur_b.sets.get(PORT_MARK) {
            let by_ifname: BTreeMap<[u8; 16], &str> = model
                .ports
                .values()
                .filter(|p| p.port_security_enabled)
                .map(|p| (super::exprs::ifname_key(&p.ifname), p.id.as_str()))
                .collect();
            for e in pm.elems.values() {
                let (Ok(k), Some(Data::Value(v))) =
                    (<[u8; 16]>::try_from(e.key.as_slice()), &e.data)
                else {
                    continue;
                };
                let Ok(v) = <[u8; 4]>::try_from(v.as_slice()) else {
                    continue;
                };
                let m = u32::from_ne_bytes(v);
                if let Some(id) = by_ifname.get(&k) {
                    if (1..=MAX_MARK).contains(&m) && self.used.insert(m) {
                        self.marks.insert(id.to_string(), m);
                    }
                }
            }
        }
        self.assign_marks(model)?;
        let marks = self.marks.clone();
        let (bridge, inet, ports) = compile(model, &|p| marks.get(p).copied())?;
        self.ports.clear();
        self.commit_full(cur_b, cur_i, bridge, inet, ports)
    }

    /// The kernel's view of one kiln table, in the shape the diff compares.
    fn read_table(&mut self, family: u8, skeleton: &Table) -> Result<Table, ApplyError> {
        let mut t = Table::absent(family, TABLE);
        let Some(info) = self
            .sock
            .list_tables(family)?
            .into_iter()
            .find(|t| t.name == TABLE)
        else {
            return Ok(t);
        };
        t.present = true;
        t.skeleton = skeleton_of(info.userdata.as_deref());
        for s in self.sock.list_sets(family, TABLE)? {
            let def = match skeleton.sets.get(&s.name) {
                Some(sk) => sk.def.clone(),
                None if s.name.starts_with("rg4-") || s.name.starts_with("rg6-") => {
                    let (v6, gid) = (s.name.starts_with("rg6-"), &s.name[4..]);
                    group_set_def(gid, v6).def
                }
                None if s.name.starts_with("pg-") => group_ports_def(&s.name[3..]).def,
                None => crate::nft::SetDef {
                    name: s.name.clone(),
                    flags: s.flags,
                    key_type: 0,
                    key_len: s.key_len,
                    data: None,
                    concat: vec![],
                },
            };
            let shape = NFT_SET_INTERVAL | NFT_SET_MAP | NFT_SET_CONCAT;
            if def.key_len != s.key_len || def.flags & shape != s.flags & shape {
                t.skeleton = 0; // a set of the wrong shape: rebuild the table
            }
            let mut set = Set::new(def);
            for e in self.sock.list_elems(family, TABLE, &s.name)? {
                set.insert(e);
            }
            t.sets.insert(s.name, set);
        }
        // Chains' fingerprints live in the chain_hash map; the bridge table's
        // fixed chains are covered by its skeleton fingerprint.
        let mut hashes = BTreeMap::new();
        if let Some(h) = t.sets.get(CHAIN_HASH) {
            for e in h.elems.values() {
                let name_end = e.key.iter().position(|&b| b == 0).unwrap_or(e.key.len());
                let name = String::from_utf8_lossy(&e.key[..name_end]).into_owned();
                if let Some(Data::Value(v)) = &e.data {
                    if let Ok(b) = <[u8; 8]>::try_from(v.as_slice()) {
                        hashes.insert(name, u64::from_be_bytes(b));
                    }
                }
            }
        }
        for c in self.sock.list_chains(family, TABLE)? {
            let hook = if c.base {
                skeleton
                    .chains
                    .get(&c.name)
                    .and_then(|s| s.def.hook.clone())
            } else {
                None
            };
            if c.base && hook.is_none() {
                t.skeleton = 0; // an unknown base chain: rebuild the table
            }
            let chain = Chain {
                def: ChainDef {
                    name: c.name.clone(),
                    hook,
                    userdata: None,
                },
                rules: Vec::new(),
                hash: hashes
                    .get(&c.name)
                    .copied()
                    .or_else(|| {
                        let fixed = c.base && t.skeleton == skeleton.skeleton;
                        fixed.then(|| skeleton.chains.get(&c.name).map(|s| s.hash))?
                    })
                    .unwrap_or(0),
            };
            t.chains.insert(c.name, chain);
        }
        Ok(t)
    }

    /// Bring one port (added, changed or removed from `model`) and the
    /// remote-group sets it is in up to date, in one atomic batch.
    pub fn apply_port(&mut self, model: &Model, port_id: &str) -> Result<Applied, ApplyError> {
        self.apply_ports(model, &[port_id])
    }

    /// [`SecurityGroups::apply_port`] for several ports, still one batch (e.g.
    /// every port of a group whose rules changed).
    pub fn apply_ports(&mut self, model: &Model, port_ids: &[&str]) -> Result<Applied, ApplyError> {
        if !self.bridge.present || !self.inet.present {
            return self.apply(model);
        }
        let pending = self.apply_ports_deferred(model, port_ids)?;
        let conntrack_deleted = self.flush_conntrack(&pending.conntrack)?;
        Ok(Applied {
            messages: pending.messages,
            conntrack_deleted,
        })
    }

    /// Drop the conntrack entries selected by `filters` (see [`conntrack`]).
    /// Walking the kernel's conntrack table costs milliseconds whatever its
    /// size, so callers on a hot path may run it after answering.
    pub fn flush_conntrack(&mut self, filters: &[CtFilter]) -> Result<usize, ApplyError> {
        Ok(conntrack::flush(&mut self.sock, filters)?)
    }

    /// The batch of [`SecurityGroups::apply_ports`] alone: the rules are in
    /// force when this returns; the conntrack entries the change disallowed
    /// are returned for [`SecurityGroups::flush_conntrack`].
    pub fn apply_ports_deferred(
        &mut self,
        model: &Model,
        port_ids: &[&str],
    ) -> Result<Pending, ApplyError> {
        if !self.bridge.present || !self.inet.present {
            let applied = self.apply(model)?;
            return Ok(Pending {
                messages: applied.messages,
                conntrack: Vec::new(),
            });
        }
        let mut new_rules = BTreeMap::new();
        for id in port_ids {
            let mark = self.ensure_mark(model, id)?;
            let pr = match model.ports.get(*id) {
                Some(p) => compile_port(model, p, mark)?,
                None => PortRules::default(),
            };
            new_rules.insert(id.to_string(), pr);
        }
        let empty = PortRules::default();
        // The scope: these ports' elements, their groups' chains and sets, the
        // dispatch chains, zone_of. Unchanged parts produce no messages.
        let mut elems: BTreeMap<(u8, &'static str), BTreeSet<ElemKey>> = BTreeMap::new();
        let mut groups = BTreeSet::new();
        for (id, new) in &new_rules {
            let old = self.ports.get(id).unwrap_or(&empty);
            for pr in [old, new] {
                for (s, e) in &pr.bridge_elems {
                    elems
                        .entry((NFPROTO_BRIDGE, *s))
                        .or_default()
                        .insert(elem_key(e));
                }
                for (s, e) in &pr.inet_elems {
                    elems
                        .entry((NFPROTO_INET, *s))
                        .or_default()
                        .insert(elem_key(e));
                }
                groups.extend(pr.member_of.iter().cloned());
            }
        }
        let existing = all_groups(model);
        groups.retain(|g| existing.contains(g));

        let mut chains = vec![
            dispatch_chain(model, Direction::Egress),
            dispatch_chain(model, Direction::Ingress),
        ];
        let mut set_groups = groups.clone();
        for g in groups.iter().filter_map(|g| model.security_groups.get(g)) {
            chains.extend(group_chains(g)?);
            // Remote groups a chain refers to must exist before it does.
            for r in referenced_groups(g) {
                if !self.inet.sets.contains_key(&group_set(&r, false)) {
                    set_groups.insert(r);
                }
            }
        }
        for c in &chains {
            elems
                .entry((NFPROTO_INET, CHAIN_HASH))
                .or_default()
                .insert(elem_key(&chain_hash_elem(c)));
            if let Some(old) = self.inet.sets.get(CHAIN_HASH) {
                let key = super::compile::chain_key(&c.def.name);
                elems
                    .entry((NFPROTO_INET, CHAIN_HASH))
                    .or_default()
                    .extend(old.elems.keys().filter(|k| k.0 == key).cloned());
            }
        }

        let mut want_b = sub_table(&self.bridge);
        let mut want_i = sub_table(&self.inet);
        let mut cur_b = sub_table(&self.bridge);
        let mut cur_i = sub_table(&self.inet);
        for ((fam, set), keys) in &elems {
            let (cur, want, full) = if *fam == NFPROTO_BRIDGE {
                (&mut cur_b, &mut want_b, &self.bridge)
            } else {
                (&mut cur_i, &mut want_i, &self.inet)
            };
            if let Some(s) = full.sets.get(*set) {
                let mut c = Set::new(s.def.clone());
                for k in keys {
                    if let Some(e) = s.elems.get(k) {
                        c.insert(e.clone());
                    }
                }
                cur.sets.insert(set.to_string(), c);
                want.sets.insert(set.to_string(), Set::new(s.def.clone()));
            }
        }
        for new in new_rules.values() {
            for (s, e) in &new.bridge_elems {
                if let Some(set) = want_b.sets.get_mut(*s) {
                    set.insert(e.clone());
                }
            }
            for (s, e) in &new.inet_elems {
                if let Some(set) = want_i.sets.get_mut(*s) {
                    set.insert(e.clone());
                }
            }
        }
        for c in chains {
            if let Some(h) = want_i.sets.get_mut(CHAIN_HASH) {
                h.insert(chain_hash_elem(&c));
            }
            if let Some(old) = self.inet.chains.get(&c.def.name) {
                cur_i.chains.insert(c.def.name.clone(), old.clone());
            }
            want_i.chains.insert(c.def.name.clone(), c);
        }
        let mut whole: Vec<Set> = Vec::new();
        if let Some(z) = self.inet.sets.get(ZONE_OF) {
            let mut s = Set::new(z.def.clone());
            for e in zone_map(model) {
                s.insert(e);
            }
            whole.push(s);
        }
        let marks = &self.marks;
        for g in &set_groups {
            whole.extend(group_sets(model, g, &|p| marks.get(p).copied())?);
        }
        for s in whole {
            if let Some(c) = self.inet.sets.get(&s.def.name) {
                cur_i.sets.insert(s.def.name.clone(), c.clone());
            }
            want_i.sets.insert(s.def.name.clone(), s);
        }

        let mut batch = Batch::new();
        diff_table(&cur_b, &want_b, &mut batch);
        let removed = diff_table(&cur_i, &want_i, &mut batch);
        let messages = batch.len();
        self.sock.send_batch(&batch)?;

        let filters = ct_filters(&removed, &self.ports, &new_rules, &cur_i, &want_i);
        // Record the new state of the scope.
        for (cur, want, full) in [
            (&cur_b, &want_b, &mut self.bridge),
            (&cur_i, &want_i, &mut self.inet),
        ] {
            for name in cur.chains.keys() {
                full.chains.remove(name);
            }
            full.chains.extend(want.chains.clone());
            for (name, s) in &want.sets {
                let target = full
                    .sets
                    .entry(name.clone())
                    .or_insert_with(|| Set::new(s.def.clone()));
                if let Some(c) = cur.sets.get(name) {
                    for k in c.elems.keys() {
                        target.elems.remove(k);
                    }
                }
                target.elems.extend(s.elems.clone());
            }
        }
        for (id, pr) in new_rules {
            if model.ports.contains_key(&id) {
                self.ports.insert(id, pr);
            } else {
                self.ports.remove(&id);
            }
        }
        Ok(Pending {
            messages,
            conntrack: filters,
        })
    }
}

/// An empty table with the same identity and skeleton (a diff scope).
fn sub_table(t: &Table) -> Table {
    let mut s = Table::absent(t.family, &t.name);
    s.present = t.present;
    s.skeleton = t.skeleton;
    s
}

/// The address ranges an interval set covers (start elements open a range,
/// `INTERVAL_END` elements close it just before their key).
fn set_ranges(s: &Set, v6: bool) -> Vec<Range> {
    let width = if v6 { 16 } else { 4 };
    let val = |k: &[u8]| -> Option<u128> {
        if k.len() != width {
            return None;
        }
        let mut b = [0u8; 16];
        b[16 - width..].copy_from_slice(k);
        Some(u128::from_be_bytes(b))
    };
    let max = if v6 { u128::MAX } else { u128::from(u32::MAX) };
    let mut points: Vec<(u128, bool)> = s
        .elems
        .values()
        .filter_map(|e| Some((val(&e.key)?, e.flags & NFT_SET_ELEM_INTERVAL_END != 0)))
        .collect();
    points.sort();
    let mut out = Vec::new();
    let mut open: Option<u128> = None;
    for (v, is_end) in points {
        match (is_end, open) {
            (false, None) => open = Some(v),
            (true, Some(start)) if v > 0 => {
                out.push(Range {
                    v6,
                    start,
                    end: v - 1,
                });
                open = None;
            }
            _ => {}
        }
    }
    if let Some(start) = open {
        out.push(Range {
            v6,
            start,
            end: max,
        });
    }
    out
}

/// Conntrack entries to drop after a diff: narrowed ports' addresses in their
/// zone, and remote-group addresses no longer in their group, in every zone.
fn ct_filters(
    removed: &Removed,
    old_ports: &BTreeMap<String, PortRules>,
    new_ports: &BTreeMap<String, PortRules>,
    cur_inet: &Table,
    want_inet: &Table,
) -> Vec<CtFilter> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let all = || old_ports.iter().chain(new_ports.iter());
    let mut port_filter = |id: &str, pr: &PortRules, out: &mut Vec<CtFilter>| {
        if seen.insert(id.to_string()) && !pr.addrs.is_empty() {
            out.push(CtFilter {
                zone: pr.zone,
                ranges: pr.addrs.clone(),
            });
        }
    };
    // A group's rules narrowed: its members' connections.
    for chain in &removed.narrowed_chains {
        let Some(gid) = chain
            .strip_prefix("ge-")
            .or_else(|| chain.strip_prefix("gi-"))
        else {
            continue;
        };
        for (id, pr) in all() {
            if pr.member_of.iter().any(|g| g == gid) {
                port_filter(id, pr, &mut out);
            }
        }
    }
    // A port left a group: its connections.
    for (set, e) in &removed.elems {
        if !set.starts_with("pg-") {
            continue;
        }
        let Ok(k) = <[u8; 4]>::try_from(e.key.as_slice()) else {
            continue;
        };
        let mark = u32::from_ne_bytes(k);
        for (id, pr) in all() {
            if pr.mark == Some(mark) {
                port_filter(id, pr, &mut out);
            }
        }
    }
    let groups: BTreeSet<&str> = removed
        .elems
        .iter()
        .map(|(s, _)| s.as_str())
        .filter(|s| s.starts_with("rg4-") || s.starts_with("rg6-"))
        .collect();
    for g in groups {
        let v6 = g.starts_with("rg6-");
        let old = cur_inet
            .sets
            .get(g)
            .map(|s| set_ranges(s, v6))
            .unwrap_or_default();
        let new = want_inet
            .sets
            .get(g)
            .map(|s| set_ranges(s, v6))
            .unwrap_or_default();
        let gone: Vec<Range> = old.into_iter().filter(|r| !new.contains(r)).collect();
        if !gone.is_empty() {
            out.push(CtFilter {
                zone: None,
                ranges: gone,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::Elem;

    #[test]
    fn interval_set_elements_give_back_their_ranges() {
        let mut s = group_set_def("g", false);
        s.insert(Elem::key(vec![10, 0, 0, 1]));
        let mut end = Elem::key(vec![10, 0, 0, 3]);
        end.flags = NFT_SET_ELEM_INTERVAL_END;
        s.insert(end);
        s.insert(Elem::key(vec![10, 0, 0, 9]));
        let r = set_ranges(&s, false);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].start, r[0].end), (0x0a00_0001, 0x0a00_0002));
        assert_eq!((r[1].start, r[1].end), (0x0a00_0009, u128::from(u32::MAX)));
    }
}
