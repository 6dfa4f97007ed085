//! Role assignments: grants to users and groups on projects, domains and the system,
//! and the effective roles a user holds on a target.

use std::collections::BTreeSet;

use super::groups::{get_group, group_ids_of_user, user_ids_of_group};
use super::model::{Actor, Assignment, Role, RoleRef, Target};
use super::roles::{get_role, with_implied};
use super::tables::{ASSIGNMENTS, PROJECTS, ROLES};
use super::users::get_user;
use super::{directory, IdResult, Identity, IdentityError, WriteCtx};
use crate::store::ReadTxn;

/// `GET /v3/role_assignments` filters.
#[derive(Debug, Clone, Default)]
pub struct AssignmentFilter {
    pub user_id: Option<String>,
    pub group_id: Option<String>,
    pub role_id: Option<String>,
    pub project_id: Option<String>,
    pub domain_id: Option<String>,
    pub system: bool,
    /// Expand group grants into one entry per member.
    pub effective: bool,
}

/// One listed assignment; `via_group` is set for an effective entry that comes from a
/// group grant.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub assignment: Assignment,
    pub via_group: Option<String>,
}

/// Every assignment on `target` is removed (the target is going away).
pub fn remove_target(w: &mut WriteCtx<'_>, target: &Target) -> IdResult<()> {
    for (key, a) in ASSIGNMENTS.scan(w.read(), "")? {
        if a.target == *target {
            ASSIGNMENTS.delete(w.tx, &key)?;
        }
    }
    Ok(())
}

/// The assignments of one actor (a key prefix scan).
fn of_actor(r: &dyn ReadTxn, actor: &Actor) -> IdResult<Vec<Assignment>> {
    Ok(ASSIGNMENTS.values_prefix(r, &format!("{}|", actor.key()))?)
}

/// Roles a user holds on `target`, directly or through its groups, plus implied ones.
pub fn effective_roles(r: &dyn ReadTxn, user_id: &str, target: &Target) -> IdResult<Vec<RoleRef>> {
    let mut actors = vec![Actor::User(user_id.to_string())];
    actors.extend(group_ids_of_user(r, user_id)?.into_iter().map(Actor::Group));
    let mut role_ids = BTreeSet::new();
    for actor in &actors {
        let prefix = format!("{}|{}|", actor.key(), target.key());
        for a in ASSIGNMENTS.values_prefix(r, &prefix)? {
            role_ids.insert(a.role_id);
        }
    }
    let mut held: Vec<Role> = Vec::new();
    for id in role_ids {
        if let Some(role) = ROLES.get(r, &id)? {
            held.push(role);
        }
    }
    with_implied(r, held)
}

/// Every target a user holds some role on (directly or through groups).
fn targets_of_user(r: &dyn ReadTxn, user_id: &str) -> IdResult<BTreeSet<Target>> {
    let mut out = BTreeSet::new();
    let mut actors = vec![Actor::User(user_id.to_string())];
    actors.extend(group_ids_of_user(r, user_id)?.into_iter().map(Actor::Group));
    for actor in &actors {
        for a in of_actor(r, actor)? {
            out.insert(a.target);
        }
    }
    Ok(out)
}

pub fn project_ids_of_user(r: &dyn ReadTxn, user_id: &str) -> IdResult<Vec<String>> {
    Ok(targets_of_user(r, user_id)?
        .into_iter()
        .filter_map(|t| match t {
            Target::Project(id) => Some(id),
            _ => None,
        })
        .collect())
}

pub fn domain_ids_of_user(r: &dyn ReadTxn, user_id: &str) -> IdResult<Vec<String>> {
    Ok(targets_of_user(r, user_id)?
        .into_iter()
        .filter_map(|t| match t {
            Target::Domain(id) => Some(id),
            _ => None,
        })
        .collect())
}

pub fn has_system_roles(r: &dyn ReadTxn, user_id: &str) -> IdResult<bool> {
    Ok(targets_of_user(r, user_id)?.contains(&Target::System))
}

fn check_parts(r: &dyn ReadTxn, a: &Assignment) -> IdResult<()> {
    get_role(r, &a.role_id)?;
    match &a.actor {
        Actor::User(id) => {
            get_user(r, id)?;
        }
        Actor::Group(id) => {
            get_group(r, id)?;
        }
    }
    match &a.target {
        Target::Project(id) => {
            directory::get_project(r, id)?;
        }
        Target::Domain(id) => {
            directory::get_domain(r, id)?;
        }
        Target::System => {}
    }
    Ok(())
}

fn revoke_actor(w: &mut WriteCtx<'_>, actor: &Actor) -> IdResult<()> {
    let users = match actor {
        Actor::User(id) => vec![id.clone()],
        Actor::Group(id) => user_ids_of_group(w.read(), id)?,
    };
    w.revoke(&|t| users.contains(&t.user_id))
}

impl Identity {
    pub fn grant(&self, a: &Assignment) -> IdResult<()> {
        self.write(|w| {
            check_parts(w.read(), a)?;
            ASSIGNMENTS.put(w.tx, &a.key(), a)?;
            Ok(())
        })
    }

    /// Ok if the grant exists; NotFound otherwise.
    pub fn check_grant(&self, a: &Assignment) -> IdResult<()> {
        self.read(|r| {
            check_parts(r, a)?;
            if ASSIGNMENTS.contains(r, &a.key())? {
                Ok(())
            } else {
                Err(grant_not_found(a))
            }
        })
    }

    /// Removes a grant and revokes the affected users' tokens.
    pub fn revoke_grant(&self, a: &Assignment) -> IdResult<()> {
        self.write(|w| {
            check_parts(w.read(), a)?;
            if !ASSIGNMENTS.delete(w.tx, &a.key())? {
                return Err(grant_not_found(a));
            }
            revoke_actor(w, &a.actor)
        })
    }

    /// The roles granted directly to `actor` on `target`.
    pub fn granted_roles(&self, actor: &Actor, target: &Target) -> IdResult<Vec<Role>> {
        self.read(|r| {
            match actor {
                Actor::User(id) => {
                    get_user(r, id)?;
                }
                Actor::Group(id) => {
                    get_group(r, id)?;
                }
            }
            match target {
                Target::Project(id) => {
                    directory::get_project(r, id)?;
                }
                Target::Domain(id) => {
                    directory::get_domain(r, id)?;
                }
                Target::System => {}
            }
            let prefix = format!("{}|{}|", actor.key(), target.key());
            let mut out = Vec::new();
            for a in ASSIGNMENTS.values_prefix(r, &prefix)? {
                if let Some(role) = ROLES.get(r, &a.role_id)? {
                    out.push(role);
                }
            }
            Ok(out)
        })
    }

    pub fn list_assignments(&self, f: &AssignmentFilter) -> IdResult<Vec<Listed>> {
        self.read(|r| {
            let all = ASSIGNMENTS.values(r)?;
            let target_ok = |t: &Target| {
                if let Some(p) = &f.project_id {
                    return *t == Target::Project(p.clone());
                }
                if let Some(d) = &f.domain_id {
                    return *t == Target::Domain(d.clone());
                }
                if f.system {
                    return *t == Target::System;
                }
                true
            };
            let role_ok = |a: &Assignment| f.role_id.as_ref().is_none_or(|id| *id == a.role_id);
            let mut out = Vec::new();
            for a in all {
                if !target_ok(&a.target) || !role_ok(&a) {
                    continue;
                }
                match (&a.actor, f.effective) {
                    (Actor::Group(gid), true) => {
                        if f.group_id.is_some() {
                            continue;
                        }
                        for uid in user_ids_of_group(r, gid)? {
                            if f.user_id.as_ref().is_some_and(|want| *want != uid) {
                                continue;
                            }
                            out.push(Listed {
                                assignment: Assignment {
                                    actor: Actor::User(uid),
                                    target: a.target.clone(),
                                    role_id: a.role_id.clone(),
                                },
                                via_group: Some(gid.clone()),
                            });
                        }
                    }
                    (Actor::User(uid), _) => {
                        if f.group_id.is_some() || f.user_id.as_ref().is_some_and(|w| w != uid) {
                            continue;
                        }
                        out.push(Listed {
                            assignment: a,
                            via_group: None,
                        });
                    }
                    (Actor::Group(gid), false) => {
                        if f.user_id.is_some() || f.group_id.as_ref().is_some_and(|w| w != gid) {
                            continue;
                        }
                        out.push(Listed {
                            assignment: a,
                            via_group: None,
                        });
                    }
                }
            }
            Ok(out)
        })
    }

    /// Effective roles of a user on a target (for tokens and checks).
    pub fn effective_roles(&self, user_id: &str, target: &Target) -> IdResult<Vec<RoleRef>> {
        self.read(|r| effective_roles(r, user_id, target))
    }

    /// Projects (enabled or not) the user has any role on.
    pub fn projects_with_roles(&self, user_id: &str) -> IdResult<Vec<super::model::Project>> {
        self.read(|r| {
            let mut out = Vec::new();
            for id in project_ids_of_user(r, user_id)? {
                if let Some(p) = PROJECTS.get(r, &id)? {
                    out.push(p);
                }
            }
            Ok(out)
        })
    }
}

fn grant_not_found(a: &Assignment) -> IdentityError {
    IdentityError::NotFound {
        kind: "role assignment",
        id: format!(
            "role {} for {} on {}",
            a.role_id,
            a.actor.key(),
            a.target.key()
        ),
    }
}
