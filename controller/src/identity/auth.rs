//! Authentication: the `POST /v3/auth/tokens` request, the three methods (password,
//! token, application credential), scoping, and token issue/revocation.

use std::sync::Arc;

use serde::Deserialize;

use super::app_creds;
use super::assignments::effective_roles;
use super::directory::{domain_by_name, get_domain, get_project, project_by_name};
use super::model::{AppCredRef, Domain, RoleRef, Scope, Target, TokenRecord, User};
use super::password::{random_token, verify};
use super::tables::{TOKENS, USERS};
use super::tokens::{token_key, LiveToken};
use super::users::{get_user, password_expires_at, user_by_name};
use super::{IdResult, Identity, IdentityError};
use crate::clock::{now_micros, MICROS_PER_SEC};
use crate::store::ReadTxn;

#[derive(Debug, Clone, Deserialize)]
pub struct AuthBody {
    pub auth: AuthRequest,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthRequest {
    pub identity: IdentityPart,
    #[serde(default)]
    pub scope: Option<ScopeRequest>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IdentityPart {
    pub methods: Vec<String>,
    #[serde(default)]
    pub password: Option<PasswordMethod>,
    #[serde(default)]
    pub token: Option<TokenMethod>,
    #[serde(default)]
    pub application_credential: Option<AppCredMethod>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct NameOrId {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UserRef {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub domain: Option<NameOrId>,
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PasswordMethod {
    pub user: UserRef,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TokenMethod {
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AppCredMethod {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    pub secret: String,
    #[serde(default)]
    pub user: Option<UserRef>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProjectRef {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub domain: Option<NameOrId>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SystemRef {
    #[serde(default, deserialize_with = "super::serde_util::null_default")]
    pub all: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ScopeObject {
    #[serde(default)]
    pub project: Option<ProjectRef>,
    #[serde(default)]
    pub domain: Option<NameOrId>,
    #[serde(default)]
    pub system: Option<SystemRef>,
}

/// `"scope": "unscoped"` or a scope object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ScopeRequest {
    Named(String),
    Object(ScopeObject),
}

fn bad(msg: &str) -> IdentityError {
    IdentityError::BadRequest(msg.to_string())
}

fn find_domain(r: &dyn ReadTxn, d: &NameOrId) -> IdResult<Option<Domain>> {
    match (&d.id, &d.name) {
        (Some(id), _) => Ok(super::tables::DOMAINS.get(r, id)?),
        (None, Some(name)) => domain_by_name(r, name),
        (None, None) => Err(bad("Expecting to find id or name in domain.")),
    }
}

/// The user a `UserRef` names (id, or name within a domain given by id or name).
fn find_user(r: &dyn ReadTxn, u: &UserRef) -> IdResult<Option<User>> {
    if let Some(id) = &u.id {
        return Ok(USERS.get(r, id)?);
    }
    let Some(name) = &u.name else {
        return Err(bad("Expecting to find id or name in user."));
    };
    let Some(dref) = &u.domain else {
        return Err(bad("Expecting to find domain in user."));
    };
    match find_domain(r, dref)? {
        Some(d) => user_by_name(r, &d.id, name),
        None => Ok(None),
    }
}

/// Who authenticated, and what the method fixes about the new token.
struct Authenticated {
    user: User,
    methods: Vec<String>,
    /// A token method keeps its original expiry.
    expires_at: Option<i64>,
    app_cred: Option<app_creds_ctx::Bound>,
    /// A token method without a scope request keeps the original scope.
    inherited_scope: Option<Scope>,
}

mod app_creds_ctx {
    use super::super::model::{AppCredRef, RoleRef};
    pub struct Bound {
        pub reference: AppCredRef,
        pub project_id: String,
        pub roles: Vec<RoleRef>,
        pub expires_at: Option<i64>,
    }
}

impl Identity {
    /// Checks the credentials in `req` and issues a token. Returns the token and its
    /// record. Slow (argon2) for password and application credentials: run off the
    /// async executor.
    pub fn authenticate(&self, req: &AuthRequest) -> IdResult<(String, Arc<LiveToken>)> {
        let method =
            req.identity.methods.first().ok_or_else(|| {
                bad("Invalid input for field 'identity/methods': must not be empty.")
            })?;
        let who = match method.as_str() {
            "password" => {
                let p = req
                    .identity
                    .password
                    .as_ref()
                    .ok_or_else(|| bad("Expecting to find password in identity."))?;
                self.auth_password(&p.user)?
            }
            "token" => {
                let t = req
                    .identity
                    .token
                    .as_ref()
                    .ok_or_else(|| bad("Expecting to find token in identity."))?;
                self.auth_token(&t.id)?
            }
            "application_credential" => {
                let a = req
                    .identity
                    .application_credential
                    .as_ref()
                    .ok_or_else(|| bad("Expecting to find application_credential in identity."))?;
                self.auth_app_cred(a)?
            }
            other => {
                return Err(IdentityError::Unauthorized(format!(
                    "Attempted to authenticate with an unsupported method: {other}."
                )))
            }
        };
        self.issue(who, req.scope.as_ref())
    }

    fn auth_password(&self, uref: &UserRef) -> IdResult<Authenticated> {
        let password = uref
            .password
            .as_deref()
            .ok_or_else(|| bad("Expecting to find password in user."))?;
        let now = now_micros();
        let user = self
            .read(|r| find_user(r, uref))?
            .ok_or_else(IdentityError::unauthorized)?;
        let sc = self.compliance();
        let ignore_lockout = user.option("ignore_lockout_failure_attempts");
        if !ignore_lockout
            && sc.is_locked(current_failures(sc, &user, now), user.failed_auth_at, now)
        {
            return Err(IdentityError::Unauthorized(format!(
                "The account is locked for user: {}.",
                user.id
            )));
        }
        let ok = user
            .password
            .as_ref()
            .is_some_and(|p| verify(&p.hash, password));
        if !ok {
            if sc.lockout_failure_attempts > 0 && !ignore_lockout {
                self.write(|w| {
                    // Counted from the record inside the transaction, so concurrent
                    // failures all count.
                    if let Some(mut u) = USERS.get(w.read(), &user.id)? {
                        u.failed_auth_count = current_failures(sc, &u, now).saturating_add(1);
                        u.failed_auth_at = Some(now);
                        USERS.put(w.tx, &u.id, &u)?;
                    }
                    Ok(())
                })?;
            }
            return Err(IdentityError::unauthorized());
        }
        if user.failed_auth_count > 0 {
            self.write(|w| {
                if let Some(mut u) = USERS.get(w.read(), &user.id)? {
                    u.failed_auth_count = 0;
                    u.failed_auth_at = None;
                    USERS.put(w.tx, &u.id, &u)?;
                }
                Ok(())
            })?;
        }
        self.check_user_usable(&user, now)?;
        if password_expires_at(&user).is_some_and(|t| t <= now) {
            return Err(IdentityError::Unauthorized(format!(
                "The password is expired and needs to be changed for user: {}.",
                user.id
            )));
        }
        Ok(Authenticated {
            user,
            methods: vec!["password".into()],
            expires_at: None,
            app_cred: None,
            inherited_scope: None,
        })
    }

    /// The user and its domain must be enabled.
    fn check_user_usable(&self, user: &User, _now: i64) -> IdResult<()> {
        if !user.enabled {
            return Err(IdentityError::Unauthorized(format!(
                "The account is disabled for user: {}.",
                user.id
            )));
        }
        let domain = self.read(|r| get_domain(r, &user.domain_id))?;
        if !domain.enabled {
            return Err(IdentityError::unauthorized());
        }
        Ok(())
    }

    fn auth_token(&self, token: &str) -> IdResult<Authenticated> {
        let rec = self
            .validate_token(token)
            .ok_or_else(IdentityError::unauthorized)?;
        let user = self
            .read(|r| Ok(USERS.get(r, &rec.user_id)?))?
            .ok_or_else(IdentityError::unauthorized)?;
        self.check_user_usable(&user, now_micros())?;
        let app_cred = rec.app_cred.as_ref().map(|a| app_creds_ctx::Bound {
            reference: a.clone(),
            project_id: rec.scope.project_id().unwrap_or_default().to_string(),
            roles: rec.roles.clone(),
            expires_at: None,
        });
        let mut methods = vec!["token".to_string()];
        for m in &rec.methods {
            if !methods.contains(m) {
                methods.push(m.clone());
            }
        }
        Ok(Authenticated {
            user,
            methods,
            expires_at: Some(rec.expires_at),
            app_cred,
            inherited_scope: Some(rec.scope.clone()),
        })
    }

    fn auth_app_cred(&self, m: &AppCredMethod) -> IdResult<Authenticated> {
        let now = now_micros();
        let ac = self.read(|r| match (&m.id, &m.name, &m.user) {
            (Some(id), _, _) => Ok(super::tables::APP_CREDS.get(r, id)?),
            (None, Some(name), Some(uref)) => {
                let Some(user) = find_user(r, uref)? else {
                    return Ok(None);
                };
                Ok(super::tables::APP_CREDS
                    .values(r)?
                    .into_iter()
                    .find(|a| a.user_id == user.id && a.name == *name))
            }
            _ => Err(bad(
                "Expecting to find id, or name and user, in application_credential.",
            )),
        })?;
        let ac = ac.ok_or_else(IdentityError::unauthorized)?;
        if !verify(&ac.secret_hash, &m.secret) {
            return Err(IdentityError::unauthorized());
        }
        if ac.expires_at.is_some_and(|t| t <= now) {
            return Err(IdentityError::unauthorized());
        }
        let user = self.read(|r| {
            app_creds::get_app_cred(r, &ac.user_id, &ac.id).and_then(|_| get_user(r, &ac.user_id))
        })?;
        self.check_user_usable(&user, now)?;
        Ok(Authenticated {
            user,
            methods: vec!["application_credential".into()],
            expires_at: None,
            app_cred: Some(app_creds_ctx::Bound {
                reference: AppCredRef {
                    id: ac.id.clone(),
                    name: ac.name.clone(),
                    restricted: !ac.unrestricted,
                },
                project_id: ac.project_id.clone(),
                roles: ac.roles.clone(),
                expires_at: ac.expires_at,
            }),
            inherited_scope: None,
        })
    }

    /// Resolves the scope, computes the roles, stores and caches the token.
    fn issue(
        &self,
        who: Authenticated,
        scope_req: Option<&ScopeRequest>,
    ) -> IdResult<(String, Arc<LiveToken>)> {
        let now = now_micros();
        let user = &who.user;
        let (scope, roles) = self.read(|r| {
            let no_access = || {
                IdentityError::Unauthorized(format!(
                    "User {} has no access to the requested scope.",
                    user.id
                ))
            };
            if let Some(bound) = &who.app_cred {
                // Application credentials are bound to their project; the roles are
                // those delegated that the user still holds.
                if let Some(ScopeRequest::Object(o)) = scope_req {
                    let asks_other = o.domain.is_some()
                        || o.system.is_some()
                        || o.project
                            .as_ref()
                            .and_then(|p| p.id.as_ref())
                            .is_some_and(|id| *id != bound.project_id);
                    if asks_other {
                        return Err(IdentityError::Unauthorized(
                            "Application credentials cannot request a different scope.".into(),
                        ));
                    }
                }
                let p = get_project(r, &bound.project_id).map_err(|_| no_access())?;
                let d = get_domain(r, &p.domain_id)?;
                if !p.enabled || !d.enabled {
                    return Err(no_access());
                }
                let held = effective_roles(r, &user.id, &Target::Project(p.id.clone()))?;
                let roles: Vec<RoleRef> = bound
                    .roles
                    .iter()
                    .filter(|x| held.iter().any(|h| h.id == x.id))
                    .cloned()
                    .collect();
                if roles.is_empty() {
                    return Err(no_access());
                }
                let scope = Scope::Project {
                    id: p.id,
                    name: p.name,
                    domain_id: d.id,
                    domain_name: d.name,
                };
                return Ok((scope, roles));
            }
            let target = match scope_req {
                Some(ScopeRequest::Named(s)) if s == "unscoped" => None,
                Some(ScopeRequest::Named(s)) => {
                    return Err(bad(&format!("Invalid scope {s:?}.")));
                }
                Some(ScopeRequest::Object(o)) => Some(resolve_scope(r, o)?),
                None => match &who.inherited_scope {
                    Some(Scope::Project { id, .. }) => Some(Target::Project(id.clone())),
                    Some(Scope::Domain { id, .. }) => Some(Target::Domain(id.clone())),
                    Some(Scope::System) => Some(Target::System),
                    Some(Scope::Unscoped) => None,
                    None => match &user.default_project_id {
                        Some(p) if super::tables::PROJECTS.contains(r, p)? => {
                            let t = Target::Project(p.clone());
                            if effective_roles(r, &user.id, &t)?.is_empty() {
                                None
                            } else {
                                Some(t)
                            }
                        }
                        _ => None,
                    },
                },
            };
            let Some(target) = target else {
                return Ok((Scope::Unscoped, Vec::new()));
            };
            let roles = effective_roles(r, &user.id, &target)?;
            if roles.is_empty() {
                return Err(no_access());
            }
            let scope = match &target {
                Target::Project(id) => {
                    let p = get_project(r, id).map_err(|_| no_access())?;
                    let d = get_domain(r, &p.domain_id)?;
                    if !p.enabled || !d.enabled {
                        return Err(no_access());
                    }
                    Scope::Project {
                        id: p.id,
                        name: p.name,
                        domain_id: d.id,
                        domain_name: d.name,
                    }
                }
                Target::Domain(id) => {
                    let d = get_domain(r, id).map_err(|_| no_access())?;
                    if !d.enabled {
                        return Err(no_access());
                    }
                    Scope::Domain {
                        id: d.id,
                        name: d.name,
                    }
                }
                Target::System => Scope::System,
            };
            Ok((scope, roles))
        })?;
        let ttl = i64::try_from(self.settings.token_ttl_secs)
            .unwrap_or(i64::MAX / MICROS_PER_SEC)
            .saturating_mul(MICROS_PER_SEC);
        let mut expires_at = now.saturating_add(ttl);
        if let Some(t) = who.expires_at {
            expires_at = expires_at.min(t);
        }
        if let Some(t) = who.app_cred.as_ref().and_then(|a| a.expires_at) {
            expires_at = expires_at.min(t);
        }
        let user_domain = self.read(|r| get_domain(r, &user.domain_id))?;
        let record = TokenRecord {
            user_id: user.id.clone(),
            user_name: user.name.clone(),
            user_domain_id: user_domain.id,
            user_domain_name: user_domain.name,
            password_expires_at: password_expires_at(user),
            methods: who.methods,
            scope,
            roles,
            issued_at: now,
            expires_at,
            audit_ids: vec![random_token(16)],
            app_cred: who.app_cred.map(|a| a.reference),
        };
        let token = random_token(32);
        let key = token_key(&token);
        self.write(|w| {
            TOKENS.put(w.tx, &key, &record)?;
            Ok(())
        })?;
        let live = Arc::new(LiveToken::new(record));
        self.tokens.insert(key, live.clone());
        if self.purge_due(now) {
            self.purge_expired(now)?;
        }
        Ok((token, live))
    }

    /// Revokes one token (`DELETE /v3/auth/tokens`).
    pub fn revoke_token(&self, token: &str) -> IdResult<()> {
        let key = token_key(token);
        self.write(|w| {
            TOKENS.delete(w.tx, &key)?;
            let k = key.clone();
            // Registers the key for removal from memory after commit.
            w.revoke_key(k);
            Ok(())
        })
    }
}

/// Consecutive failures that still count: a lock that has run out starts over.
fn current_failures(sc: &super::compliance::SecurityCompliance, user: &User, now: i64) -> u32 {
    let lock_ran_out = sc.lockout_failure_attempts > 0
        && user.failed_auth_count >= sc.lockout_failure_attempts
        && !sc.is_locked(user.failed_auth_count, user.failed_auth_at, now);
    if lock_ran_out {
        0
    } else {
        user.failed_auth_count
    }
}

/// The target a scope object names.
fn resolve_scope(r: &dyn ReadTxn, o: &ScopeObject) -> IdResult<Target> {
    let unauthorized = || IdentityError::unauthorized();
    if let Some(p) = &o.project {
        if let Some(id) = &p.id {
            return Ok(Target::Project(id.clone()));
        }
        let name = p
            .name
            .as_ref()
            .ok_or_else(|| bad("Expecting to find id or name in project."))?;
        let dref = p
            .domain
            .as_ref()
            .ok_or_else(|| bad("Expecting to find domain in project."))?;
        let d = find_domain(r, dref)?.ok_or_else(unauthorized)?;
        let proj = project_by_name(r, &d.id, name)?.ok_or_else(unauthorized)?;
        return Ok(Target::Project(proj.id));
    }
    if let Some(dref) = &o.domain {
        let d = find_domain(r, dref)?.ok_or_else(unauthorized)?;
        return Ok(Target::Domain(d.id));
    }
    if let Some(s) = &o.system {
        if s.all {
            return Ok(Target::System);
        }
        return Err(bad("Only the system scope {\"all\": true} exists."));
    }
    Err(bad(
        "The scope must name a project, a domain or the system.",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::bootstrap::TEST_ADMIN_PASSWORD;
    use crate::identity::compliance::Preset;
    use crate::identity::testing;

    fn admin_login() -> AuthRequest {
        serde_json::from_value(serde_json::json!({"identity": {"methods": ["password"],
            "password": {"user": {"name": "admin", "domain": {"id": "default"},
            "password": TEST_ADMIN_PASSWORD}}}, "scope": {"system": {"all": true}}}))
        .unwrap()
    }

    #[test]
    fn expired_tokens_are_purged_from_memory_and_store() {
        let (_d, id) = testing::open(Preset::Default.settings());
        id.bootstrap_for_tests();
        let (token, rec) = id.authenticate(&admin_login()).unwrap();
        assert!(id.validate_token(&token).is_some());
        assert_eq!(id.purge_expired(rec.expires_at - 1).unwrap(), 0);
        assert_eq!(id.purge_expired(rec.expires_at).unwrap(), 1);
        assert!(id.validate_token(&token).is_none());
        assert_eq!(id.live_tokens(), 0);
        let stored = id.read(|r| Ok(TOKENS.values(r)?.len())).unwrap();
        assert_eq!(stored, 0);
    }

    #[test]
    fn token_expiry_follows_the_ttl() {
        let (_d, id) = testing::open(Preset::Default.settings());
        id.bootstrap_for_tests();
        let (_, rec) = id.authenticate(&admin_login()).unwrap();
        assert_eq!(rec.expires_at - rec.issued_at, 3600 * MICROS_PER_SEC);
    }

    #[test]
    fn revoked_token_is_gone_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let store = crate::store::RedbStore::open(&dir.path().join("s.redb")).unwrap();
            Identity::open(
                Arc::new(store),
                testing::settings(Preset::Default.settings()),
            )
            .unwrap()
        };
        let (kept, revoked) = {
            let id = open();
            id.bootstrap_for_tests();
            let (a, _) = id.authenticate(&admin_login()).unwrap();
            let (b, _) = id.authenticate(&admin_login()).unwrap();
            id.revoke_token(&b).unwrap();
            (a, b)
        };
        let id = open();
        assert!(id.validate_token(&kept).is_some());
        assert!(id.validate_token(&revoked).is_none());
    }
}
