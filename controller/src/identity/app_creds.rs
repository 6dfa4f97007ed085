//! Application credentials: a user's delegation of (a subset of) its roles on one
//! project, with a secret shown once and stored hashed.

use serde::Deserialize;

use super::model::{AppCredential, RoleRef, TokenRecord};
use super::password::{new_id, random_token};
use super::serde_util::null_default;
use super::tables::APP_CREDS;
use super::{IdResult, Identity, IdentityError};
use crate::clock::{now_micros, parse_rfc3339};
use crate::store::ReadTxn;

#[derive(Debug, Clone, Deserialize)]
pub struct RoleSelector {
    pub id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NewAppCred {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub roles: Option<Vec<RoleSelector>>,
    #[serde(default, deserialize_with = "null_default")]
    pub unrestricted: bool,
}

pub fn get_app_cred(r: &dyn ReadTxn, user_id: &str, id: &str) -> IdResult<AppCredential> {
    match APP_CREDS.get(r, id)? {
        Some(ac) if ac.user_id == user_id => Ok(ac),
        _ => Err(IdentityError::not_found("application credential", id)),
    }
}

impl Identity {
    /// Creates a credential for `user_id` on the project `token` is scoped to.
    /// Returns the record and the clear-text secret (never stored).
    pub fn create_app_cred(
        &self,
        user_id: &str,
        token: &TokenRecord,
        new: NewAppCred,
    ) -> IdResult<(AppCredential, String)> {
        super::directory::check_name("application credential", &new.name)?;
        let Some(project_id) = token.scope.project_id() else {
            return Err(IdentityError::BadRequest(
                "Application credentials must be created with a project-scoped token.".into(),
            ));
        };
        if token.app_cred.as_ref().is_some_and(|a| a.restricted) {
            return Err(IdentityError::Forbidden(
                "A restricted application credential cannot create another one.".into(),
            ));
        }
        let roles: Vec<RoleRef> = match &new.roles {
            None => token.roles.clone(),
            Some(sel) if sel.is_empty() => token.roles.clone(),
            Some(sel) => {
                let mut out: Vec<RoleRef> = Vec::new();
                for s in sel {
                    let found = token.roles.iter().find(|r| {
                        s.id.as_ref().is_some_and(|id| *id == r.id)
                            || s.name.as_ref().is_some_and(|n| *n == r.name)
                    });
                    match found {
                        Some(r) if !out.contains(r) => out.push(r.clone()),
                        Some(_) => {}
                        None => {
                            return Err(IdentityError::Forbidden(format!(
                            "Cannot delegate role {} that the user does not hold on the project.",
                            s.id.as_deref().or(s.name.as_deref()).unwrap_or("?")
                        )))
                        }
                    }
                }
                out
            }
        };
        let expires_at = match &new.expires_at {
            None => None,
            Some(s) => {
                let t = parse_rfc3339(s).ok_or_else(|| {
                    IdentityError::BadRequest(format!(
                        "Invalid input for field 'expires_at': {s:?} is not a date-time."
                    ))
                })?;
                if t <= now_micros() {
                    return Err(IdentityError::BadRequest(
                        "The expiration date of an application credential must be in the future."
                            .into(),
                    ));
                }
                Some(t)
            }
        };
        let secret = new.secret.clone().unwrap_or_else(|| random_token(64));
        if secret.is_empty() {
            return Err(IdentityError::BadRequest(
                "Invalid input for field 'secret': must not be empty.".into(),
            ));
        }
        let secret_hash = self.hash_password(&secret)?;
        let ac = AppCredential {
            id: new_id(),
            name: new.name.clone(),
            description: new.description.clone().unwrap_or_default(),
            user_id: user_id.to_string(),
            project_id: project_id.to_string(),
            secret_hash,
            expires_at,
            unrestricted: new.unrestricted,
            roles,
        };
        self.write(|w| {
            super::users::get_user(w.read(), user_id)?;
            let taken = APP_CREDS
                .values(w.read())?
                .iter()
                .any(|x| x.user_id == user_id && x.name == ac.name);
            if taken {
                return Err(IdentityError::duplicate("application credential", &ac.name));
            }
            APP_CREDS.put(w.tx, &ac.id, &ac)?;
            Ok(())
        })?;
        Ok((ac, secret))
    }

    pub fn get_app_cred(&self, user_id: &str, id: &str) -> IdResult<AppCredential> {
        self.read(|r| get_app_cred(r, user_id, id))
    }

    pub fn list_app_creds(
        &self,
        user_id: &str,
        name: Option<&str>,
    ) -> IdResult<Vec<AppCredential>> {
        self.read(|r| {
            super::users::get_user(r, user_id)?;
            Ok(APP_CREDS
                .values(r)?
                .into_iter()
                .filter(|a| a.user_id == user_id)
                .filter(|a| name.is_none_or(|n| n == a.name))
                .collect())
        })
    }

    /// Deletes the credential and revokes the tokens issued through it.
    pub fn delete_app_cred(&self, user_id: &str, id: &str) -> IdResult<()> {
        self.write(|w| {
            get_app_cred(w.read(), user_id, id)?;
            APP_CREDS.delete(w.tx, id)?;
            let acid = id.to_string();
            w.revoke(&|t| t.app_cred.as_ref().is_some_and(|a| a.id == acid))
        })
    }
}
