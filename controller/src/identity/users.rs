//! Users and their passwords: create, read, list, update, delete, self-service
//! password change, with the compliance rules and revocations each implies.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::compliance::PasswordRuleError;
use super::model::{PasswordState, User};
use super::password::{new_id, verify};
use super::serde_util::null_default;
use super::tables::{
    rename_indexed, scoped_name, APP_CREDS, ASSIGNMENTS, GROUP_USERS, PROJECTS, USERS, USER_GROUPS,
    USER_NAMES,
};
use super::{directory, IdResult, Identity, IdentityError, WriteCtx};
use crate::clock::now_micros;
use crate::store::ReadTxn;

/// The user options Keystone knows; anything else is refused.
pub const USER_OPTIONS: &[&str] = &[
    "ignore_change_password_upon_first_use",
    "ignore_password_expiry",
    "ignore_lockout_failure_attempts",
    "lock_password",
    "multi_factor_auth_enabled",
    "multi_factor_auth_rules",
];

#[derive(Debug, Clone, Deserialize)]
pub struct NewUser {
    pub name: String,
    #[serde(default)]
    pub domain_id: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub default_project_id: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub options: Map<String, Value>,
    /// `email`, `description` and any other attribute, kept as given.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserPatch {
    pub name: Option<String>,
    pub password: Option<String>,
    pub enabled: Option<bool>,
    /// `Some(None)` clears it.
    #[serde(default, deserialize_with = "nullable")]
    pub default_project_id: Option<Option<String>>,
    pub options: Option<Map<String, Value>>,
    pub domain_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn check_options(options: &Map<String, Value>) -> IdResult<()> {
    for k in options.keys() {
        if !USER_OPTIONS.contains(&k.as_str()) {
            return Err(IdentityError::BadRequest(format!(
                "Invalid input for field 'options': unknown option {k:?}."
            )));
        }
    }
    Ok(())
}

pub fn get_user(r: &dyn ReadTxn, id: &str) -> IdResult<User> {
    USERS
        .get(r, id)?
        .ok_or_else(|| IdentityError::not_found("user", id))
}

pub fn user_by_name(r: &dyn ReadTxn, domain_id: &str, name: &str) -> IdResult<Option<User>> {
    match USER_NAMES.get(r, &scoped_name(domain_id, name))? {
        Some(id) => Ok(USERS.get(r, &id)?),
        None => Ok(None),
    }
}

/// When the user's password expires, as the API shows it (`None` = never).
pub fn password_expires_at(u: &User) -> Option<i64> {
    if u.option("ignore_password_expiry") {
        return None;
    }
    u.password.as_ref().and_then(|p| p.expires_at)
}

/// Removes a user and everything that hangs off it; revokes its tokens.
pub fn remove_user(w: &mut WriteCtx<'_>, u: &User) -> IdResult<()> {
    let uid = u.id.clone();
    w.revoke(&|t| t.user_id == uid)?;
    for (key, _) in USER_GROUPS.scan(w.read(), &format!("{}|", u.id))? {
        if let Some((_, gid)) = key.split_once('|') {
            GROUP_USERS.delete(w.tx, &format!("{gid}|{}", u.id))?;
        }
        USER_GROUPS.delete(w.tx, &key)?;
    }
    ASSIGNMENTS.delete_prefix(w.tx, &format!("u:{}|", u.id))?;
    for ac in APP_CREDS.values(w.read())? {
        if ac.user_id == u.id {
            APP_CREDS.delete(w.tx, &ac.id)?;
        }
    }
    USERS.delete(w.tx, &u.id)?;
    USER_NAMES.delete(w.tx, &scoped_name(&u.domain_id, &u.name))?;
    Ok(())
}

impl Identity {
    /// The new password state for `user` after the complexity and history rules.
    /// `by_admin`: an admin set it (create or reset), so "change upon first use" applies.
    fn new_password_state(
        &self,
        user: Option<&User>,
        password: &str,
        by_admin: bool,
        now: i64,
    ) -> IdResult<PasswordState> {
        let sc = self.compliance();
        sc.check_password(password)?;
        let keep = sc.history_len();
        let old = user.and_then(|u| u.password.as_ref());
        if keep > 0 {
            if let Some(old) = old {
                let recent = std::iter::once(&old.hash)
                    .chain(old.history.iter())
                    .take(keep);
                for h in recent {
                    if verify(h, password) {
                        return Err(
                            PasswordRuleError::InHistory(sc.unique_last_password_count).into()
                        );
                    }
                }
            }
        }
        let mut history = Vec::new();
        if let Some(old) = old {
            history.push(old.hash.clone());
            history.extend(old.history.iter().cloned());
        }
        history.truncate(keep);
        let first_use =
            by_admin && !user.is_some_and(|u| u.option("ignore_change_password_upon_first_use"));
        Ok(PasswordState {
            hash: self.hash_password(password)?,
            set_at: now,
            expires_at: sc.password_expiry(now, first_use),
            history,
        })
    }

    pub fn create_user(&self, new: NewUser) -> IdResult<User> {
        directory::check_name("user", &new.name)?;
        check_options(&new.options)?;
        let now = now_micros();
        let mut user = User {
            id: new_id(),
            name: new.name.clone(),
            domain_id: new.domain_id.clone().unwrap_or_else(|| "default".into()),
            enabled: new.enabled.unwrap_or(true),
            default_project_id: new.default_project_id.clone(),
            options: new.options.clone(),
            extra: new.extra.clone(),
            password: None,
            failed_auth_count: 0,
            failed_auth_at: None,
            created_at: now,
        };
        if let Some(pw) = &new.password {
            let first_use = !user.option("ignore_change_password_upon_first_use");
            let mut state = self.new_password_state(None, pw, first_use, now)?;
            if !first_use {
                state.expires_at = self.compliance().password_expiry(now, false);
            }
            user.password = Some(state);
        }
        self.write(|w| {
            directory::get_domain(w.read(), &user.domain_id)?;
            if let Some(p) = &user.default_project_id {
                directory::get_project(w.read(), p)?;
            }
            let key = scoped_name(&user.domain_id, &user.name);
            if USER_NAMES.contains(w.read(), &key)? {
                return Err(IdentityError::duplicate("user", &user.name));
            }
            USERS.put(w.tx, &user.id, &user)?;
            USER_NAMES.put(w.tx, &key, &user.id)?;
            Ok(user)
        })
    }

    pub fn get_user(&self, id: &str) -> IdResult<User> {
        self.read(|r| get_user(r, id))
    }

    pub fn list_users(&self, f: &directory::ListFilter) -> IdResult<Vec<User>> {
        self.read(|r| {
            Ok(USERS
                .values(r)?
                .into_iter()
                .filter(|u| f.name.as_ref().is_none_or(|n| *n == u.name))
                .filter(|u| f.domain_id.as_ref().is_none_or(|d| *d == u.domain_id))
                .filter(|u| f.enabled.is_none_or(|e| e == u.enabled))
                .collect())
        })
    }

    /// An update by an administrator (a password here is a reset: no minimum age).
    pub fn update_user(&self, id: &str, patch: UserPatch) -> IdResult<User> {
        if let Some(opts) = &patch.options {
            check_options(opts)?;
        }
        let now = now_micros();
        let current = self.get_user(id)?;
        if patch
            .domain_id
            .as_ref()
            .is_some_and(|d| *d != current.domain_id)
        {
            return Err(IdentityError::BadRequest(
                "Update of `domain_id` is not allowed.".into(),
            ));
        }
        let new_password = match &patch.password {
            Some(pw) => Some(self.new_password_state(Some(&current), pw, true, now)?),
            None => None,
        };
        self.write(|w| {
            let mut u = get_user(w.read(), id)?;
            let mut revoke = false;
            if let Some(name) = &patch.name {
                directory::check_name("user", name)?;
                rename_indexed(
                    w,
                    USER_NAMES,
                    "user",
                    name,
                    &scoped_name(&u.domain_id, &u.name),
                    &scoped_name(&u.domain_id, name),
                    &u.id,
                )?;
                u.name = name.clone();
            }
            if let Some(enabled) = patch.enabled {
                if u.enabled && !enabled {
                    revoke = true;
                }
                if enabled {
                    u.failed_auth_count = 0;
                    u.failed_auth_at = None;
                }
                u.enabled = enabled;
            }
            if let Some(dp) = &patch.default_project_id {
                if let Some(p) = dp {
                    directory::get_project(w.read(), p)?;
                }
                u.default_project_id = dp.clone();
            }
            if let Some(opts) = &patch.options {
                for (k, v) in opts {
                    if v.is_null() {
                        u.options.remove(k);
                    } else {
                        u.options.insert(k.clone(), v.clone());
                    }
                }
            }
            for (k, v) in &patch.extra {
                u.extra.insert(k.clone(), v.clone());
            }
            if let Some(state) = new_password {
                u.password = Some(state);
                u.failed_auth_count = 0;
                u.failed_auth_at = None;
                revoke = true;
            }
            if revoke {
                let uid = u.id.clone();
                w.revoke(&|t| t.user_id == uid)?;
            }
            USERS.put(w.tx, &u.id, &u)?;
            Ok(u)
        })
    }

    pub fn delete_user(&self, id: &str) -> IdResult<()> {
        self.write(|w| {
            let u = get_user(w.read(), id)?;
            remove_user(w, &u)
        })
    }

    /// Self-service change: the original password must match (401 otherwise), and
    /// the minimum age, complexity and history rules apply (400).
    pub fn change_password(&self, id: &str, original: &str, new: &str) -> IdResult<()> {
        let now = now_micros();
        let u = self.get_user(id)?;
        let ok = u
            .password
            .as_ref()
            .is_some_and(|p| verify(&p.hash, original));
        if !ok || !u.enabled {
            return Err(IdentityError::unauthorized());
        }
        if u.option("lock_password") {
            return Err(IdentityError::Forbidden(format!(
                "You are not allowed to change the password of user {id}: the password is locked."
            )));
        }
        if let Some(p) = &u.password {
            self.compliance().check_minimum_age(p.set_at, now)?;
        }
        let state = self.new_password_state(Some(&u), new, false, now)?;
        self.write(|w| {
            let mut u = get_user(w.read(), id)?;
            u.password = Some(state);
            u.failed_auth_count = 0;
            u.failed_auth_at = None;
            let uid = u.id.clone();
            w.revoke(&|t| t.user_id == uid)?;
            USERS.put(w.tx, &u.id, &u)?;
            Ok(())
        })
    }

    /// The enabled projects the user holds any role on (directly or through a group).
    pub fn user_projects(&self, user_id: &str) -> IdResult<Vec<super::model::Project>> {
        self.read(|r| {
            get_user(r, user_id)?;
            let ids = super::assignments::project_ids_of_user(r, user_id)?;
            let mut out = Vec::new();
            for id in ids {
                if let Some(p) = PROJECTS.get(r, &id)? {
                    out.push(p);
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::compliance::Preset;
    use crate::identity::testing;

    fn new_user(name: &str, pw: Option<&str>) -> NewUser {
        serde_json::from_value(serde_json::json!({"name": name, "password": pw, "email": "x@y"}))
            .unwrap()
    }

    #[test]
    fn create_rejects_duplicates_and_keeps_extras() {
        let (_d, id) = testing::open(Preset::Default.settings());
        id.bootstrap_for_tests();
        let u = id.create_user(new_user("alice", Some("pw"))).unwrap();
        assert_eq!(u.extra.get("email"), Some(&Value::from("x@y")));
        assert!(matches!(
            id.create_user(new_user("alice", None)),
            Err(IdentityError::Conflict(_))
        ));
    }

    #[test]
    fn strict_rules_on_create_and_change() {
        let (_d, id) = testing::open(Preset::Strict.settings());
        id.bootstrap_for_tests();
        let e = id.create_user(new_user("bob", Some("short"))).unwrap_err();
        assert!(matches!(e, IdentityError::BadRequest(ref m) if m.contains("requirements")));
        let u = id
            .create_user(new_user("bob", Some("Abcdefghijklmnopqrs1")))
            .unwrap();
        // Minimum age: a fresh password cannot be changed by its owner...
        let e = id
            .change_password(&u.id, "Abcdefghijklmnopqrs1", "Abcdefghijklmnopqrs2")
            .unwrap_err();
        assert!(
            matches!(e, IdentityError::BadRequest(ref m) if m.contains("minimum password age"))
        );
        // ...wrong original is 401...
        let e = id
            .change_password(&u.id, "nope", "Abcdefghijklmnopqrs2")
            .unwrap_err();
        assert!(matches!(e, IdentityError::Unauthorized(_)));
        // ...but an admin reset is allowed, and history applies to it.
        let e = id
            .update_user(
                &u.id,
                UserPatch {
                    password: Some("Abcdefghijklmnopqrs1".into()),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(matches!(e, IdentityError::BadRequest(ref m) if m.contains("previous password")));
        id.update_user(
            &u.id,
            UserPatch {
                password: Some("Abcdefghijklmnopqrs2".into()),
                ..Default::default()
            },
        )
        .unwrap();
    }

    #[test]
    fn history_keeps_the_last_n() {
        let mut sc = Preset::Default.settings();
        sc.unique_last_password_count = 2;
        let (_d, id) = testing::open(sc);
        id.bootstrap_for_tests();
        let u = id.create_user(new_user("c", Some("p1"))).unwrap();
        let set = |pw: &str| {
            id.update_user(
                &u.id,
                UserPatch {
                    password: Some(pw.into()),
                    ..Default::default()
                },
            )
        };
        assert!(set("p1").is_err());
        set("p2").unwrap();
        assert!(set("p1").is_err(), "p1 is still one of the last 2");
        set("p3").unwrap();
        set("p1").unwrap();
    }

    #[test]
    fn delete_removes_name_index() {
        let (_d, id) = testing::open(Preset::Default.settings());
        id.bootstrap_for_tests();
        let u = id.create_user(new_user("d", None)).unwrap();
        id.delete_user(&u.id).unwrap();
        assert!(matches!(
            id.get_user(&u.id),
            Err(IdentityError::NotFound { .. })
        ));
        id.create_user(new_user("d", None)).unwrap();
    }

    #[test]
    fn unknown_options_are_refused() {
        let (_d, id) = testing::open(Preset::Default.settings());
        id.bootstrap_for_tests();
        let mut n = new_user("e", None);
        n.options.insert("bogus".into(), Value::Bool(true));
        assert!(matches!(
            id.create_user(n),
            Err(IdentityError::BadRequest(_))
        ));
    }
}
