//! The identity records as stored: domains, projects, users, groups, roles,
//! assignments, application credentials and tokens.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Domain {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub enabled: bool,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub domain_id: String,
    /// The parent project; `None` for a top-level project (whose API parent is the domain).
    pub parent_id: Option<String>,
    pub enabled: bool,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The password part of a user: current hash, when set, and past hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PasswordState {
    pub hash: String,
    /// Microseconds since the epoch.
    pub set_at: i64,
    pub expires_at: Option<i64>,
    /// Previous hashes, newest first (the current one is not in here).
    #[serde(default)]
    pub history: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub enabled: bool,
    pub default_project_id: Option<String>,
    /// Keystone user options (`ignore_lockout_failure_attempts`, ...).
    #[serde(default)]
    pub options: Map<String, Value>,
    /// Extra attributes clients set (`email`, `description`, ...), returned as given.
    #[serde(default)]
    pub extra: Map<String, Value>,
    pub password: Option<PasswordState>,
    #[serde(default)]
    pub failed_auth_count: u32,
    pub failed_auth_at: Option<i64>,
    pub created_at: i64,
}

impl User {
    pub fn option(&self, name: &str) -> bool {
        self.options
            .get(name)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    pub id: String,
    pub name: String,
    pub domain_id: Option<String>,
    #[serde(default)]
    pub description: String,
}

/// Who holds a role.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type", content = "id")]
pub enum Actor {
    User(String),
    Group(String),
}

/// Where a role is held.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type", content = "id")]
pub enum Target {
    Project(String),
    Domain(String),
    System,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Assignment {
    pub actor: Actor,
    pub target: Target,
    pub role_id: String,
}

impl Actor {
    pub fn key(&self) -> String {
        match self {
            Actor::User(id) => format!("u:{id}"),
            Actor::Group(id) => format!("g:{id}"),
        }
    }
}

impl Target {
    pub fn key(&self) -> String {
        match self {
            Target::Project(id) => format!("p:{id}"),
            Target::Domain(id) => format!("d:{id}"),
            Target::System => "s:all".to_string(),
        }
    }
}

impl Assignment {
    /// Key: actor, then target, then role, so one actor's grants are one prefix.
    pub fn key(&self) -> String {
        format!(
            "{}|{}|{}",
            self.actor.key(),
            self.target.key(),
            self.role_id
        )
    }
}

/// A role reference as tokens and application credentials carry it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RoleRef {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppCredential {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub user_id: String,
    pub project_id: String,
    pub secret_hash: String,
    pub expires_at: Option<i64>,
    pub unrestricted: bool,
    pub roles: Vec<RoleRef>,
}

/// What a token is scoped to, with the names the token body shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Scope {
    Unscoped,
    Project {
        id: String,
        name: String,
        domain_id: String,
        domain_name: String,
    },
    Domain {
        id: String,
        name: String,
    },
    System,
}

impl Scope {
    pub fn project_id(&self) -> Option<&str> {
        match self {
            Scope::Project { id, .. } => Some(id),
            _ => None,
        }
    }
    pub fn domain_id(&self) -> Option<&str> {
        match self {
            Scope::Domain { id, .. } => Some(id),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppCredRef {
    pub id: String,
    pub name: String,
    pub restricted: bool,
}

/// An issued token, everything needed to answer a validation without a lookup.
/// Stored under the SHA-256 of the token (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub user_id: String,
    pub user_name: String,
    pub user_domain_id: String,
    pub user_domain_name: String,
    pub password_expires_at: Option<i64>,
    pub methods: Vec<String>,
    pub scope: Scope,
    pub roles: Vec<RoleRef>,
    pub issued_at: i64,
    pub expires_at: i64,
    pub audit_ids: Vec<String>,
    pub app_cred: Option<AppCredRef>,
}

impl TokenRecord {
    pub fn has_role(&self, name: &str) -> bool {
        self.roles.iter().any(|r| r.name == name)
    }
}
