//! Identity (Keystone v3): the records, their rules and every operation on them.
//!
//! [`Identity`] owns the store handle, the in-memory token map and the security
//! compliance rules. Operations are synchronous (store transactions, argon2
//! hashing); API handlers run them on the blocking pool. Each operation that
//! changes several records does it in one write transaction, and the tokens it
//! revokes leave memory only after that transaction commits.

pub mod app_creds;
pub mod assignments;
pub mod auth;
pub mod bootstrap;
pub mod catalog;
pub mod compliance;
pub mod directory;
pub mod groups;
pub mod model;
pub mod password;
pub mod policy;
pub mod roles;
pub mod serde_util;
pub mod tables;
pub mod tokens;
pub mod users;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::clock::{self, now_micros};
use crate::store::{ReadTxn, Store, StoreError, WriteTxn};
use compliance::{PasswordRuleError, SecurityCompliance};
use model::TokenRecord;
use password::HashCost;
use tokens::TokenCache;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("Could not find {kind}: {id}.")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
}

impl From<PasswordRuleError> for IdentityError {
    fn from(e: PasswordRuleError) -> Self {
        IdentityError::BadRequest(e.to_string())
    }
}

impl IdentityError {
    pub fn not_found(kind: &'static str, id: &str) -> Self {
        IdentityError::NotFound {
            kind,
            id: id.to_string(),
        }
    }
    pub fn duplicate(kind: &str, name: &str) -> Self {
        IdentityError::Conflict(format!(
            "Conflict occurred attempting to store {kind} - Duplicate entry found with name {name}."
        ))
    }
    pub fn unauthorized() -> Self {
        IdentityError::Unauthorized("The request you have made requires authentication.".into())
    }
}

pub type IdResult<T> = Result<T, IdentityError>;

/// The identity service's settings.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    pub compliance: SecurityCompliance,
    pub hash_cost: HashCost,
    pub token_ttl_secs: u64,
}

/// The identity service over a store.
pub struct Identity {
    store: Arc<dyn Store>,
    tokens: TokenCache,
    settings: IdentitySettings,
    /// When expired tokens were last dropped (microseconds).
    last_purge: AtomicI64,
}

/// How often token issue also drops expired tokens.
const PURGE_INTERVAL_MICROS: i64 = 60 * clock::MICROS_PER_SEC;

/// A write transaction plus the tokens it revokes.
pub struct WriteCtx<'a> {
    pub tx: &'a mut dyn WriteTxn,
    tokens: &'a TokenCache,
    revoked: Vec<String>,
}

impl WriteCtx<'_> {
    pub fn read(&self) -> &dyn ReadTxn {
        self.tx.as_read()
    }

    /// Revokes every live token `pred` selects (deleted in this transaction; gone
    /// from memory once it commits).
    pub fn revoke(&mut self, pred: &dyn Fn(&TokenRecord) -> bool) -> IdResult<()> {
        for key in self.tokens.matching(pred) {
            tables::TOKENS.delete(self.tx, &key)?;
            self.revoked.push(key);
        }
        Ok(())
    }
}

impl WriteCtx<'_> {
    /// Marks one token key for removal from memory after commit (the caller deletes
    /// it from the store).
    pub fn revoke_key(&mut self, key: String) {
        self.revoked.push(key);
    }
}

impl Identity {
    /// Opens the service over `store`, loading the live tokens into memory and
    /// dropping expired ones from the store.
    pub fn open(store: Arc<dyn Store>, settings: IdentitySettings) -> IdResult<Self> {
        let tokens = TokenCache::default();
        let now = now_micros();
        let mut expired = Vec::new();
        {
            let r = store.read()?;
            for (key, record) in tables::TOKENS.scan(&*r, "")? {
                if record.expires_at > now {
                    tokens.insert(key, Arc::new(tokens::LiveToken::new(record)));
                } else {
                    expired.push(key);
                }
            }
        }
        if !expired.is_empty() {
            let mut w = store.write()?;
            for key in &expired {
                tables::TOKENS.delete(&mut *w, key)?;
            }
            w.commit()?;
        }
        Ok(Identity {
            store,
            tokens,
            settings,
            last_purge: AtomicI64::new(now),
        })
    }

    pub fn settings(&self) -> &IdentitySettings {
        &self.settings
    }

    pub fn compliance(&self) -> &SecurityCompliance {
        &self.settings.compliance
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Runs `f` in one write transaction; commits if it succeeds, then forgets the
    /// tokens it revoked.
    pub fn write<R>(&self, f: impl FnOnce(&mut WriteCtx<'_>) -> IdResult<R>) -> IdResult<R> {
        let mut tx = self.store.write()?;
        let (result, revoked) = {
            let mut ctx = WriteCtx {
                tx: &mut *tx,
                tokens: &self.tokens,
                revoked: Vec::new(),
            };
            let result = f(&mut ctx)?;
            (result, ctx.revoked)
        };
        tx.commit()?;
        self.tokens.forget(&revoked);
        Ok(result)
    }

    /// Runs `f` over a consistent read view.
    pub fn read<R>(&self, f: impl FnOnce(&dyn ReadTxn) -> IdResult<R>) -> IdResult<R> {
        let r = self.store.read()?;
        f(&*r)
    }

    /// The live token's record: an in-memory lookup.
    pub fn validate_token(&self, token: &str) -> Option<Arc<tokens::LiveToken>> {
        self.tokens.lookup(token, now_micros())
    }

    /// Drops tokens expired at `now` from memory and the store; returns how many.
    pub fn purge_expired(&self, now: i64) -> IdResult<usize> {
        self.last_purge.store(now, Ordering::Relaxed);
        self.write(|w| {
            let expired = self.tokens.matching(&|r| r.expires_at <= now);
            for key in &expired {
                tables::TOKENS.delete(w.tx, key)?;
                w.revoke_key(key.clone());
            }
            Ok(expired.len())
        })
    }

    /// Whether a purge is due (called on token issue, so memory stays bounded by
    /// the tokens issued within one lifetime).
    fn purge_due(&self, now: i64) -> bool {
        now - self.last_purge.load(Ordering::Relaxed) > PURGE_INTERVAL_MICROS
    }

    pub fn live_tokens(&self) -> usize {
        self.tokens.len()
    }

    fn hash_password(&self, password: &str) -> IdResult<String> {
        password::hash(&self.settings.hash_cost, password).map_err(IdentityError::Hashing)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A real identity service over a redb file in a temp dir, cheap hashing.
    use super::*;
    use crate::store::RedbStore;

    pub fn settings(compliance: SecurityCompliance) -> IdentitySettings {
        IdentitySettings {
            compliance,
            hash_cost: HashCost::minimal(),
            token_ttl_secs: 3600,
        }
    }

    pub fn open(compliance: SecurityCompliance) -> (tempfile::TempDir, Identity) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
        let id = Identity::open(Arc::new(store), settings(compliance)).unwrap();
        (dir, id)
    }
}
