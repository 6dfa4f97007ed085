//! The state store: a small key-value trait with typed tables on top, and its redb engine.
//!
//! Services declare their own [`Table`]s (a name and a serde value type) in their own
//! modules, so a new service adds tables without touching anyone else's. Every change
//! that touches several records runs in ONE [`WriteTxn`], committed atomically.

mod redb_store;
mod table;

pub use redb_store::RedbStore;
pub use table::Table;

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Engine(#[from] redb::Error),
    #[error("record {table}/{key} does not decode: {source}")]
    Decode {
        table: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("record does not encode: {0}")]
    Encode(#[source] serde_json::Error),
}

macro_rules! engine_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Engine(e.into())
            }
        }
    )*};
}
engine_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type StoreResult<T> = Result<T, StoreError>;

/// A consistent read view over raw (table, key) → bytes records.
pub trait ReadTxn {
    fn get_raw(&self, table: &str, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// All records of a table whose key starts with `prefix`, in key order.
    fn scan_raw(&self, table: &str, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>>;
}

/// A write transaction: reads see its own writes; nothing is visible to others
/// until [`WriteTxn::commit`], which is durable when it returns.
pub trait WriteTxn: ReadTxn {
    fn put_raw(&mut self, table: &str, key: &str, value: &[u8]) -> StoreResult<()>;
    /// Removes a record; true if it existed.
    fn delete_raw(&mut self, table: &str, key: &str) -> StoreResult<bool>;
    fn commit(self: Box<Self>) -> StoreResult<()>;
    /// Upcast for the typed read helpers.
    fn as_read(&self) -> &dyn ReadTxn;
}

/// A transactional engine. redb today; a distributed engine could stand in later.
pub trait Store: Send + Sync + 'static {
    fn read(&self) -> StoreResult<Box<dyn ReadTxn + '_>>;
    fn write(&self) -> StoreResult<Box<dyn WriteTxn + '_>>;
}
