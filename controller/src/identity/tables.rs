//! The identity service's tables and name indexes in the store.

use crate::store::Table;

use super::{IdResult, IdentityError, WriteCtx};

use super::model::{AppCredential, Assignment, Domain, Group, Project, Role, TokenRecord, User};

pub const DOMAINS: Table<Domain> = Table::new("identity.domains");
/// name → domain id.
pub const DOMAIN_NAMES: Table<String> = Table::new("identity.domain_names");
pub const PROJECTS: Table<Project> = Table::new("identity.projects");
/// `domain_id/name` → project id.
pub const PROJECT_NAMES: Table<String> = Table::new("identity.project_names");
pub const USERS: Table<User> = Table::new("identity.users");
/// `domain_id/name` → user id.
pub const USER_NAMES: Table<String> = Table::new("identity.user_names");
pub const GROUPS: Table<Group> = Table::new("identity.groups");
/// `domain_id/name` → group id.
pub const GROUP_NAMES: Table<String> = Table::new("identity.group_names");
pub const ROLES: Table<Role> = Table::new("identity.roles");
/// `domain_id/name` (empty domain for global roles) → role id.
pub const ROLE_NAMES: Table<String> = Table::new("identity.role_names");
/// [`Assignment::key`] → assignment.
pub const ASSIGNMENTS: Table<Assignment> = Table::new("identity.assignments");
/// `user_id|group_id` → ().
pub const USER_GROUPS: Table<()> = Table::new("identity.user_groups");
/// `group_id|user_id` → ().
pub const GROUP_USERS: Table<()> = Table::new("identity.group_users");
pub const APP_CREDS: Table<AppCredential> = Table::new("identity.application_credentials");
/// SHA-256 (hex) of the token → record.
pub const TOKENS: Table<TokenRecord> = Table::new("identity.tokens");
/// Service facts, e.g. `bootstrapped`.
pub const META: Table<String> = Table::new("identity.meta");

/// The key of a name index entry scoped to a domain.
pub fn scoped_name(domain_id: &str, name: &str) -> String {
    format!("{domain_id}/{name}")
}

/// Moves a record's name index entry from `old_key` to `new_key`; 409 if the new
/// name is taken. Nothing happens when the key does not change.
pub fn rename_indexed(
    w: &mut WriteCtx<'_>,
    index: Table<String>,
    kind: &str,
    name: &str,
    old_key: &str,
    new_key: &str,
    id: &str,
) -> IdResult<()> {
    if old_key == new_key {
        return Ok(());
    }
    if index.contains(w.read(), new_key)? {
        return Err(IdentityError::duplicate(kind, name));
    }
    index.delete(w.tx, old_key)?;
    index.put(w.tx, new_key, &id.to_string())?;
    Ok(())
}
