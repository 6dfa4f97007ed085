//! First start: the `Default` domain, the `admin`/`member`/`reader` roles, the
//! `admin` project and user, all in one transaction.

use serde_json::Map;

use super::model::{Actor, Assignment, Domain, PasswordState, Project, Role, Target, User};
use super::password::{new_id, verify};
use super::roles::{ADMIN, MEMBER, READER};
use super::tables::{
    scoped_name, ASSIGNMENTS, DOMAINS, DOMAIN_NAMES, META, PROJECTS, PROJECT_NAMES, ROLES,
    ROLE_NAMES, USERS, USER_NAMES,
};
use super::{IdResult, Identity};
use crate::clock::now_micros;

pub const DEFAULT_DOMAIN_ID: &str = "default";
pub const DEFAULT_DOMAIN_NAME: &str = "Default";
pub const ADMIN_PROJECT: &str = "admin";
pub const ADMIN_USER: &str = "admin";
const BOOTSTRAPPED: &str = "bootstrapped";
/// META key holding the admin user's id.
const ADMIN_USER_ID: &str = "admin_user_id";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapOutcome {
    /// True if this call created the records (first start).
    pub created: bool,
    pub admin_user_id: String,
}

impl Identity {
    /// Creates the initial records unless they exist. `admin_password` is used only
    /// when creating; it must pass the complexity rule.
    pub fn bootstrap(&self, admin_password: &str) -> IdResult<BootstrapOutcome> {
        if let Some(id) = self.read(|r| {
            Ok(match META.get(r, BOOTSTRAPPED)? {
                Some(_) => META.get(r, ADMIN_USER_ID)?,
                None => None,
            })
        })? {
            return Ok(BootstrapOutcome {
                created: false,
                admin_user_id: id,
            });
        }
        self.compliance().check_password(admin_password)?;
        let now = now_micros();
        let hash = self.hash_password(admin_password)?;
        self.write(|w| {
            let domain = Domain {
                id: DEFAULT_DOMAIN_ID.into(),
                name: DEFAULT_DOMAIN_NAME.into(),
                description: "The default domain".into(),
                enabled: true,
                tags: vec![],
            };
            DOMAINS.put(w.tx, &domain.id, &domain)?;
            DOMAIN_NAMES.put(w.tx, &domain.name, &domain.id)?;
            let mut role_ids = Vec::new();
            for name in [ADMIN, MEMBER, READER] {
                let role = Role {
                    id: new_id(),
                    name: name.into(),
                    domain_id: None,
                    description: String::new(),
                };
                ROLES.put(w.tx, &role.id, &role)?;
                ROLE_NAMES.put(w.tx, &scoped_name("", name), &role.id)?;
                role_ids.push(role.id);
            }
            let project = Project {
                id: new_id(),
                name: ADMIN_PROJECT.into(),
                description: "Bootstrap project for initializing the cloud.".into(),
                domain_id: domain.id.clone(),
                parent_id: None,
                enabled: true,
                tags: vec![],
            };
            PROJECTS.put(w.tx, &project.id, &project)?;
            PROJECT_NAMES.put(w.tx, &scoped_name(&domain.id, &project.name), &project.id)?;
            let user = User {
                id: new_id(),
                name: ADMIN_USER.into(),
                domain_id: domain.id.clone(),
                enabled: true,
                default_project_id: Some(project.id.clone()),
                options: Map::new(),
                extra: Map::new(),
                password: Some(PasswordState {
                    hash: hash.clone(),
                    set_at: now,
                    expires_at: self.compliance().password_expiry(now, false),
                    history: vec![],
                }),
                failed_auth_count: 0,
                failed_auth_at: None,
                created_at: now,
            };
            USERS.put(w.tx, &user.id, &user)?;
            USER_NAMES.put(w.tx, &scoped_name(&domain.id, &user.name), &user.id)?;
            // admin implies member and reader; holding all three explicitly is what
            // `keystone-manage bootstrap` leaves behind too.
            for target in [Target::Project(project.id.clone()), Target::System] {
                for role_id in &role_ids {
                    let a = Assignment {
                        actor: Actor::User(user.id.clone()),
                        target: target.clone(),
                        role_id: role_id.clone(),
                    };
                    ASSIGNMENTS.put(w.tx, &a.key(), &a)?;
                }
            }
            META.put(w.tx, ADMIN_USER_ID, &user.id)?;
            META.put(w.tx, BOOTSTRAPPED, &"1".to_string())?;
            Ok(BootstrapOutcome {
                created: true,
                admin_user_id: user.id,
            })
        })
    }

    /// Whether the admin user's current password is still `password` (one argon2 hash).
    pub fn admin_password_is(&self, password: &str) -> IdResult<bool> {
        self.read(|r| {
            let Some(id) = META.get(r, ADMIN_USER_ID)? else {
                return Ok(false);
            };
            Ok(USERS
                .get(r, &id)?
                .and_then(|u| u.password)
                .is_some_and(|p| verify(&p.hash, password)))
        })
    }

    #[cfg(test)]
    pub(crate) fn bootstrap_for_tests(&self) -> BootstrapOutcome {
        self.bootstrap(TEST_ADMIN_PASSWORD).unwrap()
    }
}

#[cfg(test)]
pub(crate) const TEST_ADMIN_PASSWORD: &str = "AdminPasswordForTests1";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::compliance::Preset;
    use crate::identity::testing;

    #[test]
    fn bootstrap_once_then_reuse() {
        let (_d, id) = testing::open(Preset::Strict.settings());
        let first = id.bootstrap(TEST_ADMIN_PASSWORD).unwrap();
        assert!(first.created);
        let again = id.bootstrap("SomethingElseEntirely99").unwrap();
        assert!(!again.created);
        assert_eq!(again.admin_user_id, first.admin_user_id);
        assert!(id.admin_password_is(TEST_ADMIN_PASSWORD).unwrap());
        assert!(!id.admin_password_is("SomethingElseEntirely99").unwrap());
        let roles = id
            .effective_roles(&first.admin_user_id, &Target::System)
            .unwrap();
        let mut names: Vec<_> = roles.iter().map(|r| r.name.as_str()).collect();
        names.sort();
        assert_eq!(names, vec!["admin", "member", "reader"]);
    }

    #[test]
    fn strict_refuses_a_weak_bootstrap_password() {
        let (_d, id) = testing::open(Preset::Strict.settings());
        assert!(id.bootstrap("weak").is_err());
    }
}
