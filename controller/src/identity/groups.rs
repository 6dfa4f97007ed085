//! Groups and group membership.

use serde::Deserialize;

use super::model::{Group, User};
use super::password::new_id;
use super::tables::{
    rename_indexed, scoped_name, ASSIGNMENTS, GROUPS, GROUP_NAMES, GROUP_USERS, USERS, USER_GROUPS,
};
use super::users::get_user;
use super::{directory, IdResult, Identity, IdentityError, WriteCtx};
use crate::store::ReadTxn;

#[derive(Debug, Clone, Deserialize)]
pub struct NewGroup {
    pub name: String,
    #[serde(default)]
    pub domain_id: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct GroupPatch {
    pub name: Option<String>,
    pub description: Option<String>,
}

pub fn get_group(r: &dyn ReadTxn, id: &str) -> IdResult<Group> {
    GROUPS
        .get(r, id)?
        .ok_or_else(|| IdentityError::not_found("group", id))
}

/// Ids of the groups a user is in.
pub fn group_ids_of_user(r: &dyn ReadTxn, user_id: &str) -> IdResult<Vec<String>> {
    Ok(USER_GROUPS
        .scan(r, &format!("{user_id}|"))?
        .into_iter()
        .filter_map(|(k, _)| k.split_once('|').map(|(_, g)| g.to_string()))
        .collect())
}

/// Ids of a group's members.
pub fn user_ids_of_group(r: &dyn ReadTxn, group_id: &str) -> IdResult<Vec<String>> {
    Ok(GROUP_USERS
        .scan(r, &format!("{group_id}|"))?
        .into_iter()
        .filter_map(|(k, _)| k.split_once('|').map(|(_, u)| u.to_string()))
        .collect())
}

/// Removes a group, its memberships and assignments; revokes its members' tokens.
pub fn remove_group(w: &mut WriteCtx<'_>, g: &Group) -> IdResult<()> {
    let members = user_ids_of_group(w.read(), &g.id)?;
    w.revoke(&|t| members.contains(&t.user_id))?;
    for uid in &members {
        USER_GROUPS.delete(w.tx, &format!("{uid}|{}", g.id))?;
    }
    GROUP_USERS.delete_prefix(w.tx, &format!("{}|", g.id))?;
    ASSIGNMENTS.delete_prefix(w.tx, &format!("g:{}|", g.id))?;
    GROUPS.delete(w.tx, &g.id)?;
    GROUP_NAMES.delete(w.tx, &scoped_name(&g.domain_id, &g.name))?;
    Ok(())
}

impl Identity {
    pub fn create_group(&self, new: NewGroup) -> IdResult<Group> {
        directory::check_name("group", &new.name)?;
        self.write(|w| {
            let domain_id = new.domain_id.clone().unwrap_or_else(|| "default".into());
            directory::get_domain(w.read(), &domain_id)?;
            let key = scoped_name(&domain_id, &new.name);
            if GROUP_NAMES.contains(w.read(), &key)? {
                return Err(IdentityError::duplicate("group", &new.name));
            }
            let g = Group {
                id: new_id(),
                name: new.name.clone(),
                domain_id,
                description: new.description.clone().unwrap_or_default(),
            };
            GROUPS.put(w.tx, &g.id, &g)?;
            GROUP_NAMES.put(w.tx, &key, &g.id)?;
            Ok(g)
        })
    }

    pub fn get_group(&self, id: &str) -> IdResult<Group> {
        self.read(|r| get_group(r, id))
    }

    pub fn list_groups(&self, f: &directory::ListFilter) -> IdResult<Vec<Group>> {
        self.read(|r| {
            Ok(GROUPS
                .values(r)?
                .into_iter()
                .filter(|g| f.name.as_ref().is_none_or(|n| *n == g.name))
                .filter(|g| f.domain_id.as_ref().is_none_or(|d| *d == g.domain_id))
                .collect())
        })
    }

    pub fn update_group(&self, id: &str, patch: GroupPatch) -> IdResult<Group> {
        self.write(|w| {
            let mut g = get_group(w.read(), id)?;
            if let Some(name) = &patch.name {
                directory::check_name("group", name)?;
                rename_indexed(
                    w,
                    GROUP_NAMES,
                    "group",
                    name,
                    &scoped_name(&g.domain_id, &g.name),
                    &scoped_name(&g.domain_id, name),
                    &g.id,
                )?;
                g.name = name.clone();
            }
            if let Some(d) = patch.description {
                g.description = d;
            }
            GROUPS.put(w.tx, &g.id, &g)?;
            Ok(g)
        })
    }

    pub fn delete_group(&self, id: &str) -> IdResult<()> {
        self.write(|w| {
            let g = get_group(w.read(), id)?;
            remove_group(w, &g)
        })
    }

    pub fn add_group_member(&self, group_id: &str, user_id: &str) -> IdResult<()> {
        self.write(|w| {
            get_group(w.read(), group_id)?;
            get_user(w.read(), user_id)?;
            USER_GROUPS.put(w.tx, &format!("{user_id}|{group_id}"), &())?;
            GROUP_USERS.put(w.tx, &format!("{group_id}|{user_id}"), &())?;
            Ok(())
        })
    }

    /// Ok if the user is a member; NotFound otherwise.
    pub fn check_group_member(&self, group_id: &str, user_id: &str) -> IdResult<()> {
        self.read(|r| {
            get_group(r, group_id)?;
            get_user(r, user_id)?;
            if USER_GROUPS.contains(r, &format!("{user_id}|{group_id}"))? {
                Ok(())
            } else {
                Err(IdentityError::NotFound {
                    kind: "membership",
                    id: format!("user {user_id} in group {group_id}"),
                })
            }
        })
    }

    /// Removes a member and revokes its tokens (the group's roles are gone for it).
    pub fn remove_group_member(&self, group_id: &str, user_id: &str) -> IdResult<()> {
        self.write(|w| {
            get_group(w.read(), group_id)?;
            get_user(w.read(), user_id)?;
            if !USER_GROUPS.delete(w.tx, &format!("{user_id}|{group_id}"))? {
                return Err(IdentityError::NotFound {
                    kind: "membership",
                    id: format!("user {user_id} in group {group_id}"),
                });
            }
            GROUP_USERS.delete(w.tx, &format!("{group_id}|{user_id}"))?;
            let uid = user_id.to_string();
            w.revoke(&|t| t.user_id == uid)?;
            Ok(())
        })
    }

    pub fn group_members(&self, group_id: &str) -> IdResult<Vec<User>> {
        self.read(|r| {
            get_group(r, group_id)?;
            let mut out = Vec::new();
            for uid in user_ids_of_group(r, group_id)? {
                if let Some(u) = USERS.get(r, &uid)? {
                    out.push(u);
                }
            }
            Ok(out)
        })
    }

    pub fn user_groups(&self, user_id: &str) -> IdResult<Vec<Group>> {
        self.read(|r| {
            get_user(r, user_id)?;
            let mut out = Vec::new();
            for gid in group_ids_of_user(r, user_id)? {
                if let Some(g) = GROUPS.get(r, &gid)? {
                    out.push(g);
                }
            }
            Ok(out)
        })
    }
}
