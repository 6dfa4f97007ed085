//! Role assignments: `PUT/HEAD/GET/DELETE /v3/{projects|domains}/{t}/{users|groups}/{a}/roles/{r}`,
//! the system form `/v3/system/{users|groups}/{a}/roles/{r}`, their role lists, and
//! `GET /v3/role_assignments` with its filters.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde_json::Value;

use super::{require, views};
use crate::api::extract::{BaseUrl, Caller, Path, QueryParams};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::identity::assignments::AssignmentFilter;
use crate::identity::model::{Actor, Assignment, Target, TokenRecord};
use crate::identity::policy::{allowed, Action, Resource};
use crate::identity::tables;
use crate::store::ReadTxn;

pub fn router() -> Router<AppState> {
    let mut r = Router::new().route("/v3/role_assignments", get(list_assignments));
    // Literal resource names (not path parameters) so these never shadow the
    // resources' own routes.
    for tk in ["projects", "domains"] {
        for ak in ["users", "groups"] {
            r = r
                .route(
                    &format!("/v3/{tk}/{{id}}/{ak}/{{actor_id}}/roles"),
                    get(
                        move |s: State<AppState>,
                              b: BaseUrl,
                              c: Caller,
                              Path((tid, aid)): Path<(String, String)>| {
                            list_scoped(s, b, c, (tk, tid, ak, aid))
                        },
                    ),
                )
                .route(
                    &format!("/v3/{tk}/{{id}}/{ak}/{{actor_id}}/roles/{{role_id}}"),
                    get(
                        move |s: State<AppState>, c: Caller, p: Path<(String, String, String)>| {
                            scoped_op(s, c, p, tk, ak, Op::Check)
                        },
                    )
                    .head(
                        move |s: State<AppState>, c: Caller, p: Path<(String, String, String)>| {
                            scoped_op(s, c, p, tk, ak, Op::Check)
                        },
                    )
                    .put(
                        move |s: State<AppState>, c: Caller, p: Path<(String, String, String)>| {
                            scoped_op(s, c, p, tk, ak, Op::Grant)
                        },
                    )
                    .delete(
                        move |s: State<AppState>, c: Caller, p: Path<(String, String, String)>| {
                            scoped_op(s, c, p, tk, ak, Op::Revoke)
                        },
                    ),
                );
        }
    }
    for ak in ["users", "groups"] {
        r = r
            .route(
                &format!("/v3/system/{ak}/{{actor_id}}/roles"),
                get(
                    move |s: State<AppState>, b: BaseUrl, c: Caller, Path(aid): Path<String>| {
                        list_system(s, b, c, ak, aid)
                    },
                ),
            )
            .route(
                &format!("/v3/system/{ak}/{{actor_id}}/roles/{{role_id}}"),
                get(
                    move |s: State<AppState>, c: Caller, p: Path<(String, String)>| {
                        system_op(s, c, p, ak, Op::Check)
                    },
                )
                .head(
                    move |s: State<AppState>, c: Caller, p: Path<(String, String)>| {
                        system_op(s, c, p, ak, Op::Check)
                    },
                )
                .put(
                    move |s: State<AppState>, c: Caller, p: Path<(String, String)>| {
                        system_op(s, c, p, ak, Op::Grant)
                    },
                )
                .delete(
                    move |s: State<AppState>, c: Caller, p: Path<(String, String)>| {
                        system_op(s, c, p, ak, Op::Revoke)
                    },
                ),
            );
    }
    r
}

fn actor(kind: &str, id: String) -> ApiResult<Actor> {
    match kind {
        "users" => Ok(Actor::User(id)),
        "groups" => Ok(Actor::Group(id)),
        _ => Err(ApiError::NotFound(format!(
            "The resource could not be found: {kind}"
        ))),
    }
}

fn target(kind: &str, id: String) -> ApiResult<Target> {
    match kind {
        "projects" => Ok(Target::Project(id)),
        "domains" => Ok(Target::Domain(id)),
        _ => Err(ApiError::NotFound(format!(
            "The resource could not be found: {kind}"
        ))),
    }
}

/// Reads of a project's grants are open to that project's readers; everything else
/// is for admins (and system readers for reads).
fn authorize(caller: &TokenRecord, action: Action, t: &Target, rule: &str) -> ApiResult<()> {
    if let (Action::Read, Target::Project(p)) = (action, t) {
        if allowed(caller, action, Resource::Project(p)) {
            return Ok(());
        }
    }
    require(caller, action, Resource::Cloud, rule)
}

async fn role_list(
    state: &AppState,
    base: &str,
    path: &str,
    actor: Actor,
    target: Target,
) -> ApiResult<axum::Json<Value>> {
    let roles = state.read(|id| id.granted_roles(&actor, &target))?;
    let items = roles.iter().map(|r| views::role(base, r)).collect();
    Ok(axum::Json(views::collection(base, path, "roles", items)))
}

async fn list_scoped(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    (tk, tid, ak, aid): (&str, String, &str, String),
) -> ApiResult<axum::Json<Value>> {
    let path = format!("/v3/{tk}/{tid}/{ak}/{aid}/roles");
    let t = target(tk, tid)?;
    let a = actor(ak, aid)?;
    authorize(&caller, Action::Read, &t, "identity:list_grants")?;
    role_list(&state, &base, &path, a, t).await
}

async fn list_system(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    ak: &str,
    aid: String,
) -> ApiResult<axum::Json<Value>> {
    let path = format!("/v3/system/{ak}/{aid}/roles");
    let a = actor(ak, aid)?;
    authorize(
        &caller,
        Action::Read,
        &Target::System,
        "identity:list_system_grants",
    )?;
    role_list(&state, &base, &path, a, Target::System).await
}

#[derive(Clone, Copy)]
enum Op {
    Check,
    Grant,
    Revoke,
}

async fn apply(
    state: &AppState,
    caller: &TokenRecord,
    op: Op,
    a: Assignment,
) -> ApiResult<StatusCode> {
    let (action, rule) = match op {
        Op::Check => (Action::Read, "identity:check_grant"),
        Op::Grant => (Action::Write, "identity:create_grant"),
        Op::Revoke => (Action::Write, "identity:revoke_grant"),
    };
    authorize(caller, action, &a.target, rule)?;
    state
        .blocking(move |id| match op {
            Op::Check => id.check_grant(&a),
            Op::Grant => id.grant(&a),
            Op::Revoke => id.revoke_grant(&a),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn scoped_op(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((tid, aid, role_id)): Path<(String, String, String)>,
    tk: &str,
    ak: &str,
    op: Op,
) -> ApiResult<StatusCode> {
    let a = Assignment {
        actor: actor(ak, aid)?,
        target: target(tk, tid)?,
        role_id,
    };
    apply(&state, &caller, op, a).await
}

async fn system_op(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((aid, role_id)): Path<(String, String)>,
    ak: &str,
    op: Op,
) -> ApiResult<StatusCode> {
    let a = Assignment {
        actor: actor(ak, aid)?,
        target: Target::System,
        role_id,
    };
    apply(&state, &caller, op, a).await
}

/// Name lookups for `include_names`, within one read transaction.
struct TxNames<'a>(&'a dyn ReadTxn);

impl views::Names for TxNames<'_> {
    fn role(&self, id: &str) -> Option<String> {
        tables::ROLES.get(self.0, id).ok().flatten().map(|r| r.name)
    }
    fn user(&self, id: &str) -> Option<(String, String, String)> {
        let u = tables::USERS.get(self.0, id).ok().flatten()?;
        let d = self.domain(&u.domain_id).unwrap_or_default();
        Some((u.name, u.domain_id, d))
    }
    fn group(&self, id: &str) -> Option<(String, String, String)> {
        let g = tables::GROUPS.get(self.0, id).ok().flatten()?;
        let d = self.domain(&g.domain_id).unwrap_or_default();
        Some((g.name, g.domain_id, d))
    }
    fn project(&self, id: &str) -> Option<(String, String, String)> {
        let p = tables::PROJECTS.get(self.0, id).ok().flatten()?;
        let d = self.domain(&p.domain_id).unwrap_or_default();
        Some((p.name, p.domain_id, d))
    }
    fn domain(&self, id: &str) -> Option<String> {
        tables::DOMAINS
            .get(self.0, id)
            .ok()
            .flatten()
            .map(|d| d.name)
    }
}

async fn list_assignments(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Caller(caller): Caller,
    q: QueryParams,
) -> ApiResult<axum::Json<Value>> {
    let f = AssignmentFilter {
        user_id: q.get("user.id").map(str::to_string),
        group_id: q.get("group.id").map(str::to_string),
        role_id: q.get("role.id").map(str::to_string),
        project_id: q.get("scope.project.id").map(str::to_string),
        domain_id: q.get("scope.domain.id").map(str::to_string),
        system: q.get("scope.system").is_some(),
        effective: q.flag("effective")?.unwrap_or(false),
    };
    let include_names = q.flag("include_names")?.unwrap_or(false);
    // Non-admins may list their own project's assignments or their own.
    let own_project = f
        .project_id
        .as_deref()
        .is_some_and(|p| allowed(&caller, Action::Read, Resource::Project(p)));
    let own_user = f.user_id.as_deref() == Some(caller.user_id.as_str());
    if !own_project && !own_user {
        require(
            &caller,
            Action::Read,
            Resource::Cloud,
            "identity:list_role_assignments",
        )?;
    }
    let base2 = base.clone();
    let items = state.read(|id| {
        let listed = id.list_assignments(&f)?;
        id.read(|r| {
            let names = TxNames(r);
            Ok(listed
                .iter()
                .map(|l| {
                    views::assignment(
                        &base2,
                        l,
                        include_names.then_some(&names as &dyn views::Names),
                    )
                })
                .collect::<Vec<_>>())
        })
    })?;
    Ok(axum::Json(views::collection(
        &base,
        "/v3/role_assignments",
        "role_assignments",
        items,
    )))
}
