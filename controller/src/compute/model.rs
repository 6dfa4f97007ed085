//! Nova's records as stored: flavors (with extra specs), keypairs and per-project
//! quota overrides.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flavor {
    pub id: String,
    pub name: String,
    /// MiB.
    pub ram: u64,
    pub vcpus: u64,
    /// GiB.
    pub disk: u64,
    /// GiB.
    pub ephemeral: u64,
    /// MiB; 0 means none (shown as `""`, as Nova does).
    pub swap: u64,
    pub rxtx_factor: f64,
    pub is_public: bool,
    pub disabled: bool,
    pub description: Option<String>,
    pub extra_specs: BTreeMap<String, String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Keypair {
    /// A small integer id, as Nova shows it.
    pub id: u64,
    pub name: String,
    pub user_id: String,
    /// `ssh` (or `x509`, accepted but not generated).
    pub key_type: String,
    pub public_key: String,
    pub fingerprint: String,
    pub created_at: i64,
}

impl Keypair {
    pub fn key(user_id: &str, name: &str) -> String {
        format!("{user_id}|{name}")
    }
}

/// The quota names Nova 2.1 shows, with the defaults of a fresh Nova.
pub const QUOTA_DEFAULTS: &[(&str, i64)] = &[
    ("cores", 20),
    ("fixed_ips", -1),
    ("floating_ips", -1),
    ("injected_file_content_bytes", 10240),
    ("injected_file_path_bytes", 255),
    ("injected_files", 5),
    ("instances", 10),
    ("key_pairs", 100),
    ("metadata_items", 128),
    ("ram", 51200),
    ("security_group_rules", -1),
    ("security_groups", -1),
    ("server_group_members", 10),
    ("server_groups", 10),
];

/// A project's overrides (absent names use the defaults).
pub type QuotaOverrides = BTreeMap<String, i64>;

/// The default flavors a new cloud starts with (id, name, ram MiB, vcpus, disk GiB).
pub const DEFAULT_FLAVORS: &[(&str, &str, u64, u64, u64)] = &[
    ("1", "m1.tiny", 512, 1, 1),
    ("2", "m1.small", 2048, 1, 20),
    ("3", "m1.medium", 4096, 2, 40),
    ("4", "m1.large", 8192, 4, 80),
    ("5", "m1.xlarge", 16384, 8, 160),
];
