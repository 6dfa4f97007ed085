//! Who may do what, as pure functions over the caller's token. One place for every
//! service: an admin (the admin role on any project, domain or the system) manages
//! everything; a member manages only its own project's resources; a reader only
//! reads; everyone manages itself (its user record read, its password, its
//! application credentials).

use super::model::{Scope, TokenRecord};
use super::roles::{ADMIN, MEMBER, READER};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Write,
}

/// What an action touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    /// Cloud-wide records: domains, roles, groups, other users, any project's
    /// definition. Admins write; system-scoped readers read.
    Cloud,
    /// A project and everything it owns.
    Project(&'a str),
    /// A user's own record, password and application credentials.
    User(&'a str),
}

pub fn is_admin(caller: &TokenRecord) -> bool {
    caller.has_role(ADMIN)
}

/// Whether `caller` may perform `action` on `resource`.
pub fn allowed(caller: &TokenRecord, action: Action, resource: Resource<'_>) -> bool {
    if is_admin(caller) {
        return true;
    }
    match resource {
        Resource::User(id) => caller.user_id == id,
        Resource::Project(id) => {
            if caller.scope.project_id() != Some(id) {
                return false;
            }
            match action {
                Action::Read => caller.has_role(READER) || caller.has_role(MEMBER),
                Action::Write => caller.has_role(MEMBER),
            }
        }
        Resource::Cloud => {
            action == Action::Read && caller.scope == Scope::System && caller.has_role(READER)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::model::RoleRef;

    fn token(user: &str, scope: Scope, roles: &[&str]) -> TokenRecord {
        TokenRecord {
            user_id: user.into(),
            user_name: user.into(),
            user_domain_id: "default".into(),
            user_domain_name: "Default".into(),
            password_expires_at: None,
            methods: vec!["password".into()],
            scope,
            roles: roles
                .iter()
                .map(|r| RoleRef {
                    id: format!("id-{r}"),
                    name: r.to_string(),
                })
                .collect(),
            issued_at: 0,
            expires_at: 1,
            audit_ids: vec![],
            app_cred: None,
        }
    }

    fn project(id: &str) -> Scope {
        Scope::Project {
            id: id.into(),
            name: id.into(),
            domain_id: "default".into(),
            domain_name: "Default".into(),
        }
    }

    #[test]
    fn admin_manages_everything() {
        let t = token("a", project("p1"), &["admin", "member", "reader"]);
        for res in [
            Resource::Cloud,
            Resource::Project("p2"),
            Resource::User("b"),
        ] {
            assert!(allowed(&t, Action::Write, res));
            assert!(allowed(&t, Action::Read, res));
        }
    }

    #[test]
    fn member_manages_only_its_project() {
        let t = token("m", project("p1"), &["member", "reader"]);
        assert!(allowed(&t, Action::Write, Resource::Project("p1")));
        assert!(allowed(&t, Action::Read, Resource::Project("p1")));
        assert!(!allowed(&t, Action::Read, Resource::Project("p2")));
        assert!(!allowed(&t, Action::Write, Resource::Project("p2")));
        assert!(!allowed(&t, Action::Write, Resource::Cloud));
        assert!(!allowed(&t, Action::Read, Resource::Cloud));
    }

    #[test]
    fn reader_only_reads() {
        let t = token("r", project("p1"), &["reader"]);
        assert!(allowed(&t, Action::Read, Resource::Project("p1")));
        assert!(!allowed(&t, Action::Write, Resource::Project("p1")));
        let sys = token("r", Scope::System, &["reader"]);
        assert!(allowed(&sys, Action::Read, Resource::Cloud));
        assert!(!allowed(&sys, Action::Write, Resource::Cloud));
    }

    #[test]
    fn everyone_manages_itself_only() {
        let t = token("u", Scope::Unscoped, &[]);
        assert!(allowed(&t, Action::Read, Resource::User("u")));
        assert!(allowed(&t, Action::Write, Resource::User("u")));
        assert!(!allowed(&t, Action::Read, Resource::User("v")));
        assert!(!allowed(&t, Action::Read, Resource::Project("p1")));
    }

    #[test]
    fn a_role_named_like_admin_in_another_scope_still_counts_only_by_name() {
        // Roles are carried in the token for its scope only; a member token of p1
        // gives nothing on p2 even for the same user.
        let t = token("m", project("p2"), &["member"]);
        assert!(!allowed(&t, Action::Read, Resource::Project("p1")));
    }
}
