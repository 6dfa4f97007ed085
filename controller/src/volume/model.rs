//! The block-storage records and tables.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::store::Table;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attachment {
    pub id: String,
    pub server_id: String,
    pub host_name: Option<String>,
    pub device: Option<String>,
    pub attached_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Volume {
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub project_id: String,
    pub user_id: String,
    pub status: String,
    pub size: u64,
    pub availability_zone: String,
    pub bootable: bool,
    pub volume_type_id: String,
    pub snapshot_id: Option<String>,
    pub source_volid: Option<String>,
    pub metadata: Map<String, Value>,
    pub attachments: Vec<Attachment>,
    pub multiattach: bool,
    pub created_at: String,
    pub updated_at: Option<String>,
    /// `volume_image_metadata` of a volume made from an image (or a copy of one).
    #[serde(default)]
    pub image_metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub project_id: String,
    pub user_id: String,
    pub volume_id: String,
    pub status: String,
    pub size: u64,
    pub metadata: Map<String, Value>,
    pub created_at: String,
    pub updated_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeType {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub is_public: bool,
    pub extra_specs: Map<String, Value>,
}

pub const VOLUMES: Table<Volume> = Table::new("volume.volumes");
pub const SNAPSHOTS: Table<Snapshot> = Table::new("volume.snapshots");
pub const TYPES: Table<VolumeType> = Table::new("volume.types");
/// project id → quota overrides.
pub const QUOTAS: Table<std::collections::BTreeMap<String, i64>> = Table::new("volume.quotas");

/// Cinder's default type (its name since Train).
pub const DEFAULT_TYPE_NAME: &str = "__DEFAULT__";
/// A fixed id, so every kiln cloud agrees on it.
pub const DEFAULT_TYPE_ID: &str = "5f2b0a4c-5b1e-4c0b-9c59-000000000001";
pub const AVAILABILITY_ZONE: &str = "nova";

pub fn default_type() -> VolumeType {
    VolumeType {
        id: DEFAULT_TYPE_ID.into(),
        name: DEFAULT_TYPE_NAME.into(),
        description: Some("Default Volume Type".into()),
        is_public: true,
        extra_specs: Map::new(),
    }
}
