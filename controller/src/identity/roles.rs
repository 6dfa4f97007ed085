//! Roles, and the implications between the default roles (admin ⇒ member ⇒ reader).

use serde::Deserialize;

use super::model::{Role, RoleRef};
use super::password::new_id;
use super::tables::{rename_indexed, scoped_name, ASSIGNMENTS, ROLES, ROLE_NAMES};
use super::{directory, IdResult, Identity, IdentityError, WriteCtx};
use crate::store::ReadTxn;

pub const ADMIN: &str = "admin";
pub const MEMBER: &str = "member";
pub const READER: &str = "reader";

#[derive(Debug, Clone, Deserialize)]
pub struct NewRole {
    pub name: String,
    #[serde(default)]
    pub domain_id: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RolePatch {
    pub name: Option<String>,
    pub description: Option<String>,
}

pub fn get_role(r: &dyn ReadTxn, id: &str) -> IdResult<Role> {
    ROLES
        .get(r, id)?
        .ok_or_else(|| IdentityError::not_found("role", id))
}

/// A global role by name.
pub fn global_role(r: &dyn ReadTxn, name: &str) -> IdResult<Option<Role>> {
    match ROLE_NAMES.get(r, &scoped_name("", name))? {
        Some(id) => Ok(ROLES.get(r, &id)?),
        None => Ok(None),
    }
}

/// The roles a set of directly held roles implies, as Keystone's bootstrap sets up:
/// admin implies member, member implies reader. The result holds each role once.
pub fn with_implied(r: &dyn ReadTxn, held: Vec<Role>) -> IdResult<Vec<RoleRef>> {
    let mut out: Vec<RoleRef> = Vec::new();
    let mut push = |role: &Role| {
        if !out.iter().any(|x| x.id == role.id) {
            out.push(RoleRef {
                id: role.id.clone(),
                name: role.name.clone(),
            });
        }
    };
    let mut implied_names = Vec::new();
    for role in &held {
        push(role);
        if role.domain_id.is_none() {
            match role.name.as_str() {
                ADMIN => implied_names.extend([MEMBER, READER]),
                MEMBER => implied_names.push(READER),
                _ => {}
            }
        }
    }
    for name in implied_names {
        if let Some(role) = global_role(r, name)? {
            push(&role);
        }
    }
    Ok(out)
}

/// Removes a role, every assignment of it, and revokes tokens carrying it.
pub fn remove_role(w: &mut WriteCtx<'_>, role: &Role) -> IdResult<()> {
    let rid = role.id.clone();
    w.revoke(&|t| t.roles.iter().any(|x| x.id == rid))?;
    for (key, a) in ASSIGNMENTS.scan(w.read(), "")? {
        if a.role_id == role.id {
            ASSIGNMENTS.delete(w.tx, &key)?;
        }
    }
    ROLES.delete(w.tx, &role.id)?;
    ROLE_NAMES.delete(
        w.tx,
        &scoped_name(role.domain_id.as_deref().unwrap_or(""), &role.name),
    )?;
    Ok(())
}

impl Identity {
    pub fn create_role(&self, new: NewRole) -> IdResult<Role> {
        directory::check_name("role", &new.name)?;
        self.write(|w| {
            if let Some(d) = &new.domain_id {
                directory::get_domain(w.read(), d)?;
            }
            let key = scoped_name(new.domain_id.as_deref().unwrap_or(""), &new.name);
            if ROLE_NAMES.contains(w.read(), &key)? {
                return Err(IdentityError::duplicate("role", &new.name));
            }
            let role = Role {
                id: new_id(),
                name: new.name.clone(),
                domain_id: new.domain_id.clone(),
                description: new.description.clone().unwrap_or_default(),
            };
            ROLES.put(w.tx, &role.id, &role)?;
            ROLE_NAMES.put(w.tx, &key, &role.id)?;
            Ok(role)
        })
    }

    pub fn get_role(&self, id: &str) -> IdResult<Role> {
        self.read(|r| get_role(r, id))
    }

    pub fn list_roles(&self, f: &directory::ListFilter) -> IdResult<Vec<Role>> {
        self.read(|r| {
            Ok(ROLES
                .values(r)?
                .into_iter()
                .filter(|x| f.name.as_ref().is_none_or(|n| *n == x.name))
                .filter(|x| x.domain_id == f.domain_id)
                .collect())
        })
    }

    pub fn update_role(&self, id: &str, patch: RolePatch) -> IdResult<Role> {
        self.write(|w| {
            let mut role = get_role(w.read(), id)?;
            let domain = role.domain_id.clone().unwrap_or_default();
            if let Some(name) = &patch.name {
                directory::check_name("role", name)?;
                rename_indexed(
                    w,
                    ROLE_NAMES,
                    "role",
                    name,
                    &scoped_name(&domain, &role.name),
                    &scoped_name(&domain, name),
                    &role.id,
                )?;
                role.name = name.clone();
            }
            if let Some(d) = patch.description {
                role.description = d;
            }
            ROLES.put(w.tx, &role.id, &role)?;
            Ok(role)
        })
    }

    pub fn delete_role(&self, id: &str) -> IdResult<()> {
        self.write(|w| {
            let role = get_role(w.read(), id)?;
            remove_role(w, &role)
        })
    }
}
