//! Domains and projects: create, read, list with filters, update, delete, with the
//! revocations each change implies.

use serde::Deserialize;

use super::model::{Domain, Project, Scope, Target};
use super::password::new_id;
use super::serde_util::{null_default, null_true};
use super::tables::{
    rename_indexed, scoped_name, APP_CREDS, DOMAINS, DOMAIN_NAMES, GROUPS, PROJECTS, PROJECT_NAMES,
    ROLES,
};
use super::{IdResult, Identity, IdentityError, WriteCtx};
use crate::store::ReadTxn;

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
pub struct NewDomain {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "default_true", deserialize_with = "null_true")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub tags: Vec<String>,
    /// Keystone allows an explicit id at creation.
    #[serde(default)]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DomainPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NewProject {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub domain_id: Option<String>,
    #[serde(default)]
    pub parent_id: Option<String>,
    #[serde(default = "default_true", deserialize_with = "null_true")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub is_domain: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProjectPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub tags: Option<Vec<String>>,
}

/// The filters the list calls accept (each `None` means "any").
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub name: Option<String>,
    pub domain_id: Option<String>,
    pub enabled: Option<bool>,
    pub parent_id: Option<String>,
    pub tags: Option<Vec<String>>,
}

pub fn check_name(kind: &str, name: &str) -> IdResult<()> {
    if name.trim().is_empty() || name.len() > 255 {
        return Err(IdentityError::BadRequest(format!(
            "Invalid input for field 'name': a {kind} name must be 1 to 255 characters."
        )));
    }
    Ok(())
}

pub fn get_domain(r: &dyn ReadTxn, id: &str) -> IdResult<Domain> {
    DOMAINS
        .get(r, id)?
        .ok_or_else(|| IdentityError::not_found("domain", id))
}

pub fn get_project(r: &dyn ReadTxn, id: &str) -> IdResult<Project> {
    PROJECTS
        .get(r, id)?
        .ok_or_else(|| IdentityError::not_found("project", id))
}

/// A domain by name, for auth and scope lookups.
pub fn domain_by_name(r: &dyn ReadTxn, name: &str) -> IdResult<Option<Domain>> {
    match DOMAIN_NAMES.get(r, name)? {
        Some(id) => Ok(DOMAINS.get(r, &id)?),
        None => Ok(None),
    }
}

pub fn project_by_name(r: &dyn ReadTxn, domain_id: &str, name: &str) -> IdResult<Option<Project>> {
    match PROJECT_NAMES.get(r, &scoped_name(domain_id, name))? {
        Some(id) => Ok(PROJECTS.get(r, &id)?),
        None => Ok(None),
    }
}

fn tags_match(have: &[String], want: &Option<Vec<String>>) -> bool {
    want.as_ref()
        .is_none_or(|want| want.iter().all(|t| have.contains(t)))
}

impl Identity {
    pub fn create_domain(&self, new: NewDomain) -> IdResult<Domain> {
        check_name("domain", &new.name)?;
        self.write(|w| {
            if DOMAIN_NAMES.contains(w.read(), &new.name)? {
                return Err(IdentityError::duplicate("domain", &new.name));
            }
            let id = new.id.clone().unwrap_or_else(new_id);
            if DOMAINS.contains(w.read(), &id)? {
                return Err(IdentityError::Conflict(format!(
                    "Conflict occurred attempting to store domain - Duplicate ID, {id}."
                )));
            }
            let d = Domain {
                id,
                name: new.name.clone(),
                description: new.description.clone().unwrap_or_default(),
                enabled: new.enabled,
                tags: new.tags.clone(),
            };
            DOMAINS.put(w.tx, &d.id, &d)?;
            DOMAIN_NAMES.put(w.tx, &d.name, &d.id)?;
            Ok(d)
        })
    }

    pub fn get_domain(&self, id: &str) -> IdResult<Domain> {
        self.read(|r| get_domain(r, id))
    }

    pub fn list_domains(&self, f: &ListFilter) -> IdResult<Vec<Domain>> {
        self.read(|r| {
            Ok(DOMAINS
                .values(r)?
                .into_iter()
                .filter(|d| f.name.as_ref().is_none_or(|n| *n == d.name))
                .filter(|d| f.enabled.is_none_or(|e| e == d.enabled))
                .filter(|d| tags_match(&d.tags, &f.tags))
                .collect())
        })
    }

    pub fn update_domain(&self, id: &str, patch: DomainPatch) -> IdResult<Domain> {
        self.write(|w| {
            let mut d = get_domain(w.read(), id)?;
            if let Some(name) = &patch.name {
                check_name("domain", name)?;
                rename_indexed(w, DOMAIN_NAMES, "domain", name, &d.name, name, &d.id)?;
                d.name = name.clone();
            }
            if let Some(desc) = patch.description {
                d.description = desc;
            }
            if let Some(tags) = patch.tags {
                d.tags = tags;
            }
            if let Some(enabled) = patch.enabled {
                if d.enabled && !enabled {
                    revoke_domain_tokens(w, &d.id)?;
                }
                d.enabled = enabled;
            }
            DOMAINS.put(w.tx, &d.id, &d)?;
            Ok(d)
        })
    }

    /// Deletes a disabled domain and everything in it (Keystone refuses an enabled one).
    pub fn delete_domain(&self, id: &str) -> IdResult<()> {
        self.write(|w| {
            let d = get_domain(w.read(), id)?;
            if d.enabled {
                return Err(IdentityError::Forbidden(
                    "Cannot delete a domain that is enabled, please disable it first.".into(),
                ));
            }
            revoke_domain_tokens(w, id)?;
            for p in PROJECTS.values(w.read())? {
                if p.domain_id == id {
                    remove_project(w, &p)?;
                }
            }
            for u in super::tables::USERS.values(w.read())? {
                if u.domain_id == id {
                    super::users::remove_user(w, &u)?;
                }
            }
            for g in GROUPS.values(w.read())? {
                if g.domain_id == id {
                    super::groups::remove_group(w, &g)?;
                }
            }
            for role in ROLES.values(w.read())? {
                if role.domain_id.as_deref() == Some(id) {
                    super::roles::remove_role(w, &role)?;
                }
            }
            super::assignments::remove_target(w, &Target::Domain(id.to_string()))?;
            DOMAINS.delete(w.tx, id)?;
            DOMAIN_NAMES.delete(w.tx, &d.name)?;
            Ok(())
        })
    }

    pub fn create_project(&self, new: NewProject) -> IdResult<Project> {
        check_name("project", &new.name)?;
        if new.is_domain {
            return Err(IdentityError::BadRequest(
                "Projects acting as domains (is_domain=true) are not supported.".into(),
            ));
        }
        self.write(|w| {
            let r = w.read();
            // The domain: given, or the parent's, or the default domain.
            let parent = match &new.parent_id {
                Some(pid) => match PROJECTS.get(r, pid)? {
                    Some(p) => Some(p),
                    None if DOMAINS.contains(r, pid)? => None,
                    None => return Err(IdentityError::not_found("project", pid)),
                },
                None => None,
            };
            let domain_id = match (&new.domain_id, &parent, &new.parent_id) {
                (Some(d), _, _) => d.clone(),
                (None, Some(p), _) => p.domain_id.clone(),
                (None, None, Some(domain_as_parent)) => domain_as_parent.clone(),
                (None, None, None) => "default".to_string(),
            };
            let domain = get_domain(r, &domain_id)?;
            if let Some(p) = &parent {
                if p.domain_id != domain.id {
                    return Err(IdentityError::BadRequest(
                        "Cannot create a project in a different domain than its parent.".into(),
                    ));
                }
            }
            if PROJECT_NAMES.contains(r, &scoped_name(&domain.id, &new.name))? {
                return Err(IdentityError::duplicate("project", &new.name));
            }
            let p = Project {
                id: new_id(),
                name: new.name.clone(),
                description: new.description.clone().unwrap_or_default(),
                domain_id: domain.id.clone(),
                parent_id: parent.map(|p| p.id),
                enabled: new.enabled,
                tags: new.tags.clone(),
            };
            PROJECTS.put(w.tx, &p.id, &p)?;
            PROJECT_NAMES.put(w.tx, &scoped_name(&p.domain_id, &p.name), &p.id)?;
            Ok(p)
        })
    }

    pub fn get_project(&self, id: &str) -> IdResult<Project> {
        self.read(|r| get_project(r, id))
    }

    pub fn list_projects(&self, f: &ListFilter) -> IdResult<Vec<Project>> {
        self.read(|r| {
            Ok(PROJECTS
                .values(r)?
                .into_iter()
                .filter(|p| f.name.as_ref().is_none_or(|n| *n == p.name))
                .filter(|p| f.domain_id.as_ref().is_none_or(|d| *d == p.domain_id))
                .filter(|p| f.enabled.is_none_or(|e| e == p.enabled))
                .filter(|p| {
                    f.parent_id
                        .as_ref()
                        .is_none_or(|want| p.parent_id.as_deref().unwrap_or(&p.domain_id) == want)
                })
                .filter(|p| tags_match(&p.tags, &f.tags))
                .collect())
        })
    }

    pub fn update_project(&self, id: &str, patch: ProjectPatch) -> IdResult<Project> {
        self.write(|w| {
            let mut p = get_project(w.read(), id)?;
            if let Some(name) = &patch.name {
                check_name("project", name)?;
                rename_indexed(
                    w,
                    PROJECT_NAMES,
                    "project",
                    name,
                    &scoped_name(&p.domain_id, &p.name),
                    &scoped_name(&p.domain_id, name),
                    &p.id,
                )?;
                p.name = name.clone();
            }
            if let Some(desc) = patch.description {
                p.description = desc;
            }
            if let Some(tags) = patch.tags {
                p.tags = tags;
            }
            if let Some(enabled) = patch.enabled {
                if p.enabled && !enabled {
                    let pid = p.id.clone();
                    w.revoke(&|t| t.scope.project_id() == Some(pid.as_str()))?;
                }
                p.enabled = enabled;
            }
            PROJECTS.put(w.tx, &p.id, &p)?;
            Ok(p)
        })
    }

    pub fn delete_project(&self, id: &str) -> IdResult<()> {
        self.write(|w| {
            let p = get_project(w.read(), id)?;
            let has_children = PROJECTS
                .values(w.read())?
                .iter()
                .any(|c| c.parent_id.as_deref() == Some(id));
            if has_children {
                return Err(IdentityError::Forbidden(
                    "Cannot delete the project since it is not a leaf in the hierarchy.".into(),
                ));
            }
            remove_project(w, &p)
        })
    }
}

/// Removes a project, its assignments and application credentials; revokes its tokens.
fn remove_project(w: &mut WriteCtx<'_>, p: &Project) -> IdResult<()> {
    let pid = p.id.clone();
    w.revoke(&|t| t.scope.project_id() == Some(pid.as_str()))?;
    super::assignments::remove_target(w, &Target::Project(p.id.clone()))?;
    for ac in APP_CREDS.values(w.read())? {
        if ac.project_id == p.id {
            APP_CREDS.delete(w.tx, &ac.id)?;
        }
    }
    PROJECTS.delete(w.tx, &p.id)?;
    PROJECT_NAMES.delete(w.tx, &scoped_name(&p.domain_id, &p.name))?;
    Ok(())
}

/// Revokes tokens of the domain's users, scoped to it, or scoped to its projects.
fn revoke_domain_tokens(w: &mut WriteCtx<'_>, domain_id: &str) -> IdResult<()> {
    let d = domain_id.to_string();
    w.revoke(&|t| {
        t.user_domain_id == d
            || matches!(&t.scope, Scope::Domain { id, .. } if *id == d)
            || matches!(&t.scope, Scope::Project { domain_id, .. } if *domain_id == d)
    })?;
    Ok(())
}
