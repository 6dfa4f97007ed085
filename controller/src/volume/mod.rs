//! Block storage (Cinder v3): volumes, volume types, snapshots, quotas, and the
//! attach/detach functions the compute service calls.
//!
//! Records live in the shared store; every change is one write transaction.
//! Bytes live behind [`backend::VolumeBackend`] (today sparse files under the
//! data dir; a node-side backend later).

pub mod backend;
pub mod model;
pub mod ops;

pub use backend::{FileBackend, VolumeBackend};
pub use model::{Attachment, Snapshot, Volume, VolumeType};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum VolError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("volume backend: {0}")]
    Backend(#[from] std::io::Error),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Quota exceeded (Cinder answers 413).
    #[error("{0}")]
    OverLimit(String),
    #[error("{0}")]
    NotImplemented(String),
    /// An unsupported microversion (406).
    #[error("{0}")]
    NotAcceptable(String),
}

pub type VolResult<T> = Result<T, VolError>;

/// Cinder's timestamp format, as gophercloud parses it: no zone suffix.
pub fn now() -> String {
    let s = crate::clock::rfc3339_micros(crate::clock::now_micros());
    s.trim_end_matches('Z').to_string()
}
