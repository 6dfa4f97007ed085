//! Glance's records as stored: images (with their free-form extra properties) and
//! image members, plus the timestamp format Glance writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::macros::format_description;
use time::OffsetDateTime;

/// The image statuses kiln uses (Glance's set minus the import ones).
pub mod status {
    pub const QUEUED: &str = "queued";
    pub const SAVING: &str = "saving";
    pub const ACTIVE: &str = "active";
    pub const DEACTIVATED: &str = "deactivated";
}

/// The property that marks an image as kiln firmware (a freestanding ELF the VMM
/// boots directly, like the probe guest): `kiln_firmware=true`.
pub const FIRMWARE_PROPERTY: &str = "kiln_firmware";

pub const VISIBILITIES: &[&str] = &["public", "private", "shared", "community"];
pub const DISK_FORMATS: &[&str] = &[
    "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop",
];
pub const CONTAINER_FORMATS: &[&str] = &[
    "ami",
    "ari",
    "aki",
    "bare",
    "ovf",
    "ova",
    "docker",
    "compressed",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub id: String,
    pub name: Option<String>,
    pub status: String,
    pub visibility: String,
    pub protected: bool,
    pub os_hidden: bool,
    /// The owning project.
    pub owner: Option<String>,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub min_disk: u64,
    pub min_ram: u64,
    pub size: Option<u64>,
    pub virtual_size: Option<u64>,
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    pub tags: Vec<String>,
    /// Extra properties (`kernel_id`, `os_command_line`, `owner_specified.*`, ...).
    pub properties: BTreeMap<String, String>,
    /// Microseconds since the epoch.
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub image_id: String,
    pub member_id: String,
    /// pending, accepted or rejected.
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Member {
    pub fn key(image_id: &str, member_id: &str) -> String {
        format!("{image_id}|{member_id}")
    }
}

/// Glance's timestamps: RFC 3339, whole seconds, `Z`.
pub fn glance_time(micros: i64) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    OffsetDateTime::from_unix_timestamp(micros.div_euclid(1_000_000))
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glance_time_is_whole_seconds_with_z() {
        assert_eq!(glance_time(1_500_000_000_123_456), "2017-07-14T02:40:00Z");
        assert_eq!(glance_time(0), "1970-01-01T00:00:00Z");
    }
}
