//! Issued tokens in memory: validation is a hash-map lookup, never an argon2 hash
//! and never a store access. The store keeps the same records so tokens survive a
//! restart; revocation deletes them from both.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;

use sha2::{Digest, Sha256};

use super::model::TokenRecord;

/// The store/memory key of a token: hex SHA-256, so a copy of the database holds no
/// usable token.
pub fn token_key(token: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// A live token: its record, and its rendered validation body once someone asked
/// (the record never changes, so neither does the body).
#[derive(Debug)]
pub struct LiveToken {
    record: TokenRecord,
    rendered: OnceLock<Bytes>,
}

impl LiveToken {
    pub fn new(record: TokenRecord) -> Self {
        LiveToken {
            record,
            rendered: OnceLock::new(),
        }
    }

    pub fn record(&self) -> &TokenRecord {
        &self.record
    }

    /// The body `render` produces, computed on first use and then shared.
    pub fn rendered(&self, render: impl FnOnce(&TokenRecord) -> Bytes) -> Bytes {
        self.rendered.get_or_init(|| render(&self.record)).clone()
    }
}

impl Deref for LiveToken {
    type Target = TokenRecord;
    fn deref(&self) -> &TokenRecord {
        &self.record
    }
}

/// Every live token, by [`token_key`].
#[derive(Default)]
pub struct TokenCache {
    map: RwLock<HashMap<String, Arc<LiveToken>>>,
}

impl TokenCache {
    /// The record of a live token, if it exists and has not expired at `now`.
    pub fn lookup(&self, token: &str, now: i64) -> Option<Arc<LiveToken>> {
        let key = token_key(token);
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(&key).filter(|r| r.expires_at > now).cloned()
    }

    pub fn insert(&self, key: String, record: Arc<LiveToken>) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, record);
    }

    /// Keys of the tokens `pred` selects.
    pub fn matching(&self, pred: &dyn Fn(&TokenRecord) -> bool) -> Vec<String> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter(|(_, r)| pred(r))
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn forget(&self, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            map.remove(k);
        }
    }

    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::model::Scope;

    fn record(user: &str, expires_at: i64) -> Arc<LiveToken> {
        Arc::new(LiveToken::new(TokenRecord {
            user_id: user.into(),
            user_name: user.into(),
            user_domain_id: "default".into(),
            user_domain_name: "Default".into(),
            password_expires_at: None,
            methods: vec!["password".into()],
            scope: Scope::Unscoped,
            roles: vec![],
            issued_at: 0,
            expires_at,
            audit_ids: vec!["a".into()],
            app_cred: None,
        }))
    }

    #[test]
    fn rendering_happens_once() {
        let t = record("u", 1);
        let a = t.rendered(|r| Bytes::from(r.user_id.clone()));
        let b = t.rendered(|_| Bytes::from_static(b"other"));
        assert_eq!(a, b);
        assert_eq!(&a[..], b"u");
    }

    #[test]
    fn lookup_honours_expiry() {
        let c = TokenCache::default();
        c.insert(token_key("t1"), record("u1", 100));
        assert!(c.lookup("t1", 99).is_some());
        assert!(c.lookup("t1", 100).is_none());
        assert!(c.lookup("t2", 0).is_none());
    }

    #[test]
    fn revocation_by_predicate() {
        let c = TokenCache::default();
        c.insert(token_key("a"), record("u1", 100));
        c.insert(token_key("b"), record("u1", 100));
        c.insert(token_key("c"), record("u2", 100));
        let keys = c.matching(&|r| r.user_id == "u1");
        assert_eq!(keys.len(), 2);
        c.forget(&keys);
        assert!(c.lookup("a", 0).is_none());
        assert!(c.lookup("c", 0).is_some());
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn key_is_hex_sha256() {
        assert_eq!(
            token_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
