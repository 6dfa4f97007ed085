//! The redb engine behind [`Store`]: one file, every table `&str → &[u8]`.

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};

use super::{ReadTxn, Store, StoreResult, WriteTxn};

fn def(name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

/// The end of the key range that starts with `prefix` (exclusive), if any.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(last as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn collect<T: ReadableTable<&'static str, &'static [u8]>>(
    table: &T,
    prefix: &str,
) -> StoreResult<Vec<(String, Vec<u8>)>> {
    let end = prefix_end(prefix);
    let iter = match &end {
        Some(end) => table.range::<&str>(prefix..end.as_str())?,
        None => table.range::<&str>(prefix..)?,
    };
    let mut out = Vec::new();
    for entry in iter {
        let (k, v) = entry?;
        out.push((k.value().to_string(), v.value().to_vec()));
    }
    Ok(out)
}

/// A redb database file. Commits are durable (fsync) when they return.
pub struct RedbStore {
    db: redb::Database,
}

impl RedbStore {
    /// Opens (or creates) the database file.
    pub fn open(path: &Path) -> StoreResult<Self> {
        Ok(RedbStore {
            db: redb::Database::create(path)?,
        })
    }
}

struct RedbRead(redb::ReadTransaction);

impl ReadTxn for RedbRead {
    fn get_raw(&self, table: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let t = match self.0.open_table(def(table)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let value = t.get(key)?.map(|v| v.value().to_vec());
        Ok(value)
    }

    fn scan_raw(&self, table: &str, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        match self.0.open_table(def(table)) {
            Ok(t) => collect(&t, prefix),
            Err(TableError::TableDoesNotExist(_)) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }
}

struct RedbWrite(redb::WriteTransaction);

impl ReadTxn for RedbWrite {
    fn get_raw(&self, table: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let t = self.0.open_table(def(table))?;
        let value = t.get(key)?.map(|v| v.value().to_vec());
        Ok(value)
    }

    fn scan_raw(&self, table: &str, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let t = self.0.open_table(def(table))?;
        collect(&t, prefix)
    }
}

impl WriteTxn for RedbWrite {
    fn put_raw(&mut self, table: &str, key: &str, value: &[u8]) -> StoreResult<()> {
        let mut t = self.0.open_table(def(table))?;
        t.insert(key, value)?;
        Ok(())
    }

    fn delete_raw(&mut self, table: &str, key: &str) -> StoreResult<bool> {
        let mut t = self.0.open_table(def(table))?;
        let existed = t.remove(key)?.is_some();
        Ok(existed)
    }

    fn commit(self: Box<Self>) -> StoreResult<()> {
        self.0.commit()?;
        Ok(())
    }

    fn as_read(&self) -> &dyn ReadTxn {
        self
    }
}

impl Store for RedbStore {
    fn read(&self) -> StoreResult<Box<dyn ReadTxn + '_>> {
        Ok(Box::new(RedbRead(self.db.begin_read()?)))
    }

    fn write(&self) -> StoreResult<Box<dyn WriteTxn + '_>> {
        Ok(Box::new(RedbWrite(self.db.begin_write()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Table;

    const NUMBERS: Table<u32> = Table::new("test.numbers");
    const WORDS: Table<String> = Table::new("test.words");

    fn open() -> (tempfile::TempDir, RedbStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
        (dir, store)
    }

    #[test]
    fn missing_table_reads_as_empty() {
        let (_d, store) = open();
        let r = store.read().unwrap();
        assert_eq!(NUMBERS.get(&*r, "a").unwrap(), None);
        assert!(NUMBERS.values(&*r).unwrap().is_empty());
    }

    #[test]
    fn a_transaction_commits_all_or_nothing() {
        let (_d, store) = open();
        let mut w = store.write().unwrap();
        NUMBERS.put(&mut *w, "a", &1).unwrap();
        WORDS.put(&mut *w, "a", &"one".to_string()).unwrap();
        w.commit().unwrap();

        // Dropped without commit: neither record changes.
        let mut w = store.write().unwrap();
        NUMBERS.put(&mut *w, "a", &2).unwrap();
        WORDS.delete(&mut *w, "a").unwrap();
        assert_eq!(NUMBERS.get(w.as_read(), "a").unwrap(), Some(2));
        drop(w);

        let r = store.read().unwrap();
        assert_eq!(NUMBERS.get(&*r, "a").unwrap(), Some(1));
        assert_eq!(WORDS.get(&*r, "a").unwrap().as_deref(), Some("one"));
    }

    #[test]
    fn scan_by_prefix_and_delete_prefix() {
        let (_d, store) = open();
        let mut w = store.write().unwrap();
        for (k, v) in [("g1|u1", 1), ("g1|u2", 2), ("g2|u1", 3), ("g1", 4)] {
            NUMBERS.put(&mut *w, k, &v).unwrap();
        }
        w.commit().unwrap();
        let r = store.read().unwrap();
        let keys: Vec<String> = NUMBERS
            .scan(&*r, "g1|")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec!["g1|u1", "g1|u2"]);
        drop(r);
        let mut w = store.write().unwrap();
        assert_eq!(NUMBERS.delete_prefix(&mut *w, "g1|").unwrap(), 2);
        w.commit().unwrap();
        let r = store.read().unwrap();
        assert_eq!(NUMBERS.values(&*r).unwrap(), vec![4, 3]);
    }

    #[test]
    fn state_survives_reopen_and_bad_records_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            let mut w = store.write().unwrap();
            WORDS.put(&mut *w, "k", &"v".to_string()).unwrap();
            w.put_raw("test.numbers", "bad", b"not json").unwrap();
            w.commit().unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        let r = store.read().unwrap();
        assert_eq!(WORDS.get(&*r, "k").unwrap().as_deref(), Some("v"));
        assert!(matches!(
            NUMBERS.get(&*r, "bad"),
            Err(crate::store::StoreError::Decode { .. })
        ));
    }

    #[test]
    fn prefix_end_is_the_next_string() {
        assert_eq!(prefix_end("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_end(""), None);
    }
}
