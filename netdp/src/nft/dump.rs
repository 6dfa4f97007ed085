//! Reading nf_tables state back from the kernel: tables, chains, sets and set
//! elements of one table (what reconciliation compares with the desired state).

use super::attr::{Attr, AttrBuf, AttrIter};
use super::batch::Elem;
use super::expr::{Data, Verdict};
use super::socket::{NftError, Socket};
use super::sys::*;

/// A table as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub name: String,
    pub userdata: Option<Vec<u8>>,
}

/// A chain as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    pub name: String,
    pub base: bool,
    pub userdata: Option<Vec<u8>>,
}

/// A set as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetInfo {
    pub name: String,
    pub flags: u32,
    pub key_len: u32,
}

fn data_value(a: Attr<'_>) -> Option<Vec<u8>> {
    a.nested().get(NFTA_DATA_VALUE).map(|v| v.payload.to_vec())
}

fn data(a: Attr<'_>) -> Option<Data> {
    for d in a.nested() {
        match d.kind {
            NFTA_DATA_VALUE => return Some(Data::Value(d.payload.to_vec())),
            NFTA_DATA_VERDICT => {
                let code = d.nested().get(NFTA_VERDICT_CODE)?.be32()? as i32;
                let chain = d.nested().get(NFTA_VERDICT_CHAIN).and_then(|c| c.str());
                return Verdict::from_code(code, chain).map(Data::Verdict);
            }
            _ => {}
        }
    }
    None
}

/// Decode one element of an `NFTA_SET_ELEM_LIST_ELEMENTS` list.
pub fn decode_elem(a: Attr<'_>) -> Option<Elem> {
    let mut e = Elem::key(Vec::new());
    let mut has_key = false;
    for f in a.nested() {
        match f.kind {
            NFTA_SET_ELEM_KEY => {
                e.key = data_value(f)?;
                has_key = true;
            }
            NFTA_SET_ELEM_KEY_END => e.key_end = Some(data_value(f)?),
            NFTA_SET_ELEM_FLAGS => e.flags = f.be32()?,
            NFTA_SET_ELEM_DATA => e.data = Some(data(f)?),
            NFTA_SET_ELEM_USERDATA => e.userdata = Some(f.payload.to_vec()),
            _ => {}
        }
    }
    // The kernel reports a catch-all element without a key; kiln never makes one.
    has_key.then_some(e)
}

impl Socket {
    /// Tables of a family.
    pub fn list_tables(&mut self, family: u8) -> Result<Vec<TableInfo>, NftError> {
        let msgs = self.dump(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETTABLE, family, &[])?;
        Ok(msgs
            .iter()
            .filter(|m| m.family == family)
            .filter_map(|m| {
                let attrs = AttrIter::new(&m.attrs);
                Some(TableInfo {
                    name: attrs.clone().get(NFTA_TABLE_NAME)?.str()?.to_string(),
                    userdata: attrs.get(NFTA_TABLE_USERDATA).map(|u| u.payload.to_vec()),
                })
            })
            .collect())
    }

    /// Chains of one table.
    pub fn list_chains(&mut self, family: u8, table: &str) -> Result<Vec<ChainInfo>, NftError> {
        let mut req = AttrBuf::new();
        req.str(NFTA_CHAIN_TABLE, table);
        let msgs = self.dump(
            NFNL_SUBSYS_NFTABLES,
            NFT_MSG_GETCHAIN,
            family,
            req.as_bytes(),
        )?;
        Ok(msgs
            .iter()
            .filter(|m| m.family == family)
            .filter_map(|m| {
                let attrs = AttrIter::new(&m.attrs);
                if attrs.clone().get(NFTA_CHAIN_TABLE)?.str()? != table {
                    return None;
                }
                Some(ChainInfo {
                    name: attrs.clone().get(NFTA_CHAIN_NAME)?.str()?.to_string(),
                    base: attrs.clone().get(NFTA_CHAIN_HOOK).is_some(),
                    userdata: attrs.get(NFTA_CHAIN_USERDATA).map(|u| u.payload.to_vec()),
                })
            })
            .collect())
    }

    /// Sets and maps of one table.
    pub fn list_sets(&mut self, family: u8, table: &str) -> Result<Vec<SetInfo>, NftError> {
        let mut req = AttrBuf::new();
        req.str(NFTA_SET_TABLE, table);
        let msgs = self.dump(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETSET, family, req.as_bytes())?;
        Ok(msgs
            .iter()
            .filter(|m| m.family == family)
            .filter_map(|m| {
                let attrs = AttrIter::new(&m.attrs);
                if attrs.clone().get(NFTA_SET_TABLE)?.str()? != table {
                    return None;
                }
                Some(SetInfo {
                    name: attrs.clone().get(NFTA_SET_NAME)?.str()?.to_string(),
                    flags: attrs
                        .clone()
                        .get(NFTA_SET_FLAGS)
                        .and_then(|a| a.be32())
                        .unwrap_or(0),
                    key_len: attrs
                        .get(NFTA_SET_KEY_LEN)
                        .and_then(|a| a.be32())
                        .unwrap_or(0),
                })
            })
            .collect())
    }

    /// Elements of one set or map.
    pub fn list_elems(
        &mut self,
        family: u8,
        table: &str,
        set: &str,
    ) -> Result<Vec<Elem>, NftError> {
        let mut req = AttrBuf::new();
        req.str(NFTA_SET_ELEM_LIST_TABLE, table)
            .str(NFTA_SET_ELEM_LIST_SET, set);
        let msgs = self.dump(
            NFNL_SUBSYS_NFTABLES,
            NFT_MSG_GETSETELEM,
            family,
            req.as_bytes(),
        )?;
        let mut out = Vec::new();
        for m in &msgs {
            if let Some(list) = AttrIter::new(&m.attrs).get(NFTA_SET_ELEM_LIST_ELEMENTS) {
                out.extend(list.nested().filter_map(decode_elem));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_with_verdict_and_userdata_decodes() {
        let mut e = Elem::key(vec![0, 0, 0, 7]);
        e.data = Some(Data::Verdict(Verdict::Jump("i-x".into())));
        e.userdata = Some(vec![1, 2, 3]);
        let mut b = AttrBuf::new();
        let mut batch = super::super::batch::Batch::new();
        batch.add_elems(NFPROTO_INET, "t", "m", std::slice::from_ref(&e));
        // Re-encode the element alone the way the batch does and decode it.
        b.nested(NFTA_LIST_ELEM, |l| {
            l.nested(NFTA_SET_ELEM_KEY, |k| {
                k.bytes(NFTA_DATA_VALUE, &e.key);
            });
            l.nested(NFTA_SET_ELEM_DATA, |d| {
                if let Some(x) = &e.data {
                    x.encode(d)
                }
            });
            l.bytes(NFTA_SET_ELEM_USERDATA, &[1, 2, 3]);
        });
        let got = AttrIter::new(b.as_bytes()).next().and_then(decode_elem);
        assert_eq!(got, Some(e));
    }
}
