//! Typed tables: a table name bound to a serde value type, JSON-encoded on disk.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ReadTxn, StoreError, StoreResult, WriteTxn};

/// A table of `V` values keyed by strings. Declare as a `const` in the owning module.
pub struct Table<V> {
    name: &'static str,
    _value: PhantomData<fn() -> V>,
}

impl<V> Clone for Table<V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<V> Copy for Table<V> {}

impl<V: Serialize + DeserializeOwned> Table<V> {
    pub const fn new(name: &'static str) -> Self {
        Table {
            name,
            _value: PhantomData,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    fn decode(&self, key: &str, bytes: &[u8]) -> StoreResult<V> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
            table: self.name.to_string(),
            key: key.to_string(),
            source,
        })
    }

    pub fn get(&self, tx: &dyn ReadTxn, key: &str) -> StoreResult<Option<V>> {
        match tx.get_raw(self.name, key)? {
            Some(bytes) => Ok(Some(self.decode(key, &bytes)?)),
            None => Ok(None),
        }
    }

    pub fn contains(&self, tx: &dyn ReadTxn, key: &str) -> StoreResult<bool> {
        Ok(tx.get_raw(self.name, key)?.is_some())
    }

    /// Every (key, value) whose key starts with `prefix` ("" for all), in key order.
    pub fn scan(&self, tx: &dyn ReadTxn, prefix: &str) -> StoreResult<Vec<(String, V)>> {
        tx.scan_raw(self.name, prefix)?
            .into_iter()
            .map(|(k, bytes)| {
                let v = self.decode(&k, &bytes)?;
                Ok((k, v))
            })
            .collect()
    }

    /// Every value, in key order.
    pub fn values(&self, tx: &dyn ReadTxn) -> StoreResult<Vec<V>> {
        Ok(self.scan(tx, "")?.into_iter().map(|(_, v)| v).collect())
    }

    /// The values whose key starts with `prefix`, in key order.
    pub fn values_prefix(&self, tx: &dyn ReadTxn, prefix: &str) -> StoreResult<Vec<V>> {
        Ok(self.scan(tx, prefix)?.into_iter().map(|(_, v)| v).collect())
    }

    pub fn put(&self, tx: &mut dyn WriteTxn, key: &str, value: &V) -> StoreResult<()> {
        let bytes = serde_json::to_vec(value).map_err(StoreError::Encode)?;
        tx.put_raw(self.name, key, &bytes)
    }

    pub fn delete(&self, tx: &mut dyn WriteTxn, key: &str) -> StoreResult<bool> {
        tx.delete_raw(self.name, key)
    }

    /// Deletes every record whose key starts with `prefix`; returns how many.
    pub fn delete_prefix(&self, tx: &mut dyn WriteTxn, prefix: &str) -> StoreResult<usize> {
        let keys: Vec<String> = tx
            .scan_raw(self.name, prefix)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for k in &keys {
            tx.delete_raw(self.name, k)?;
        }
        Ok(keys.len())
    }
}
