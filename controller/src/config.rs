//! Controller configuration: plain serde structs with named defaults, a TOML loader,
//! and validation as a separate step with its own error type.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::identity::compliance::{Preset, SecurityCompliance};
use crate::identity::password::HashCost;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/kiln";
/// Keystone's default token lifetime: one hour.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Everything `kiln-controller serve` (and `kiln-node up`) needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    pub listen: String,
    /// Where state (`state.redb`) and the client files live.
    pub data_dir: PathBuf,
    /// Base URL the catalog advertises; default `http://<bound listen address>`.
    pub public_url: Option<String>,
    /// Token lifetime in seconds.
    pub token_ttl: u64,
    /// The admin password used when the state is first bootstrapped. When absent, one
    /// is generated (and kept in `data_dir/admin-password`).
    pub bootstrap_admin_password: Option<String>,
    pub security_compliance: SecurityComplianceConfig,
    pub password_hashing: HashCost,
    /// Nova's `reclaim_instance_interval` (seconds): 0 (the default) deletes
    /// servers at once; more makes `DELETE` a soft delete, reclaimed after it.
    pub reclaim_instance_interval: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.to_string(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            public_url: None,
            token_ttl: DEFAULT_TOKEN_TTL_SECS,
            bootstrap_admin_password: None,
            security_compliance: SecurityComplianceConfig::default(),
            password_hashing: HashCost::default(),
            reclaim_instance_interval: 0,
        }
    }
}

/// Keystone's `[security_compliance]`: a preset plus individual overrides.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityComplianceConfig {
    pub preset: Preset,
    pub lockout_failure_attempts: Option<u32>,
    /// Seconds.
    pub lockout_duration: Option<u64>,
    pub unique_last_password_count: Option<u32>,
    /// Days.
    pub minimum_password_age: Option<u32>,
    pub password_regex: Option<String>,
    pub password_regex_description: Option<String>,
    pub password_expires_days: Option<u32>,
    pub change_password_upon_first_use: Option<bool>,
}

impl SecurityComplianceConfig {
    /// The preset with the overrides applied, regex compiled.
    pub fn resolve(&self) -> Result<SecurityCompliance, ConfigError> {
        let mut sc = self.preset.settings();
        if let Some(v) = self.lockout_failure_attempts {
            sc.lockout_failure_attempts = v;
        }
        if let Some(v) = self.lockout_duration {
            sc.lockout_duration_secs = v;
        }
        if let Some(v) = self.unique_last_password_count {
            sc.unique_last_password_count = v;
        }
        if let Some(v) = self.minimum_password_age {
            sc.minimum_password_age_days = v;
        }
        if let Some(v) = self.password_expires_days {
            sc.password_expires_days = v;
        }
        if let Some(v) = self.change_password_upon_first_use {
            sc.change_password_upon_first_use = v;
        }
        if let Some(re) = &self.password_regex {
            let description = self
                .password_regex_description
                .clone()
                .unwrap_or_else(|| format!("Passwords must match the regular expression {re}"));
            sc = sc
                .with_regex(Some(re), &description)
                .map_err(|e| ConfigError::Invalid(format!("password_regex: {e}")))?;
        } else if let Some(d) = &self.password_regex_description {
            sc.password_regex_description = d.clone();
        }
        Ok(sc)
    }
}

impl Config {
    /// Reads a TOML file. Call [`Config::validate`] afterwards.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks every value; the returned facts are what the server runs with.
    pub fn validate(&self) -> Result<ValidConfig, ConfigError> {
        let listen: SocketAddr = self
            .listen
            .parse()
            .map_err(|e| ConfigError::Invalid(format!("listen {:?}: {e}", self.listen)))?;
        if self.token_ttl == 0 {
            return Err(ConfigError::Invalid(
                "token_ttl must be at least 1 second".into(),
            ));
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "public_url {url:?} must start with http:// or https://"
                )));
            }
        }
        self.password_hashing
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("password_hashing: {e}")))?;
        let compliance = self.security_compliance.resolve()?;
        if let Some(pw) = &self.bootstrap_admin_password {
            compliance.check_password(pw).map_err(|e| {
                ConfigError::Invalid(format!("the bootstrap admin password is refused: {e}"))
            })?;
        }
        Ok(ValidConfig {
            listen,
            compliance,
            config: self.clone(),
        })
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    pub listen: SocketAddr,
    pub compliance: SecurityCompliance,
    pub config: Config,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let v = Config::default().validate().unwrap();
        assert_eq!(v.listen.port(), 5000);
        assert_eq!(v.compliance.lockout_failure_attempts, 0);
    }

    #[test]
    fn toml_with_preset_and_override() {
        let c = Config::from_toml(
            r#"
listen = "127.0.0.1:0"
data_dir = "/tmp/x"
token_ttl = 60
[security_compliance]
preset = "strict"
lockout_duration = 10
"#,
        )
        .unwrap();
        let v = c.validate().unwrap();
        assert_eq!(v.compliance.lockout_failure_attempts, 5);
        assert_eq!(v.compliance.lockout_duration_secs, 10);
        assert_eq!(v.compliance.unique_last_password_count, 13);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(Config::from_toml("lisen = \"x\"").is_err());
        let c = Config {
            listen: "nope".into(),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            token_ttl: 0,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.security_compliance.password_regex = Some("(".into());
        assert!(c.validate().is_err());
    }

    #[test]
    fn bootstrap_password_must_pass_the_policy() {
        let mut c = Config::default();
        c.security_compliance.preset = Preset::Strict;
        c.bootstrap_admin_password = Some("short".into());
        assert!(c.validate().is_err());
        c.bootstrap_admin_password = Some("Abcdefghijklmnopqrs1".into());
        assert!(c.validate().is_ok());
    }
}
