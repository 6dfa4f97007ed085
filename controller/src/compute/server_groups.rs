//! Server groups (os-server-groups): create, list, show, delete, the
//! `server_groups` / `server_group_members` quotas, and membership. The
//! group-aware claim itself happens in the servers' create transaction
//! (`servers::create`), so concurrent boots into an anti-affinity group never
//! share a host.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::tables::SERVER_GROUPS;
use super::{Compute, Who};
use crate::clock::now_micros;
use crate::error::{ApiError, ApiResult};
use crate::scheduler::affinity::Policy;
use crate::store::ReadTxn;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerGroup {
    pub id: String,
    pub name: String,
    pub project_id: String,
    pub user_id: String,
    /// `affinity`, `anti-affinity`, `soft-affinity` or `soft-anti-affinity`.
    pub policy: String,
    /// The 2.64 rule (anti-affinity only).
    pub max_server_per_host: Option<u64>,
    /// server id → node id, in the order members joined.
    pub members: Vec<(String, String)>,
    pub created_at: i64,
}

impl ServerGroup {
    pub fn policy(&self) -> Option<Policy> {
        Policy::parse(&self.policy, self.max_server_per_host)
    }
}

/// What create takes (already validated for the request's microversion).
#[derive(Debug, Clone, PartialEq)]
pub struct NewGroup {
    pub name: String,
    pub policy: String,
    pub max_server_per_host: Option<u64>,
}

pub fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("Instance group {id} could not be found."))
}

fn visible(who: &Who, g: &ServerGroup) -> bool {
    who.admin || who.project.as_deref() == Some(g.project_id.as_str())
}

/// The `server_group_members` quota of `project` (-1: unlimited).
pub fn member_limit(r: &dyn ReadTxn, project: &str) -> ApiResult<i64> {
    let over = super::tables::QUOTAS
        .get(r, project)?
        .and_then(|o| o.get("server_group_members").copied());
    Ok(over.unwrap_or_else(|| {
        super::quotas::defaults()
            .get("server_group_members")
            .copied()
            .unwrap_or(-1)
    }))
}

impl Compute {
    pub fn create_server_group(&self, who: &Who, new: NewGroup) -> ApiResult<ServerGroup> {
        let project = who
            .project
            .clone()
            .ok_or_else(|| ApiError::Forbidden("A project-scoped token is required.".into()))?;
        if Policy::parse(&new.policy, new.max_server_per_host).is_none() {
            return Err(ApiError::BadRequest(format!(
                "Invalid input for field/attribute policy. Value: {}. '{}' is not one of ['anti-affinity', 'affinity', 'soft-anti-affinity', 'soft-affinity']",
                new.policy, new.policy
            )));
        }
        let limit = self.quota_limit(Some(&project), "server_groups")?;
        let mut w = self.store.write()?;
        let count = SERVER_GROUPS
            .values(w.as_read())?
            .iter()
            .filter(|g| g.project_id == project)
            .count() as i64;
        if limit >= 0 && count >= limit {
            return Err(ApiError::Forbidden(
                "Quota exceeded, too many server groups.".into(),
            ));
        }
        let g = ServerGroup {
            id: uuid::Uuid::new_v4().to_string(),
            name: new.name,
            project_id: project,
            user_id: who.user_id.clone(),
            policy: new.policy,
            max_server_per_host: new.max_server_per_host,
            members: Vec::new(),
            created_at: now_micros(),
        };
        SERVER_GROUPS.put(&mut *w, &g.id, &g)?;
        w.commit()?;
        Ok(g)
    }

    /// The caller's project's groups; an admin with `all_projects` sees all.
    pub fn server_groups(&self, who: &Who, all_projects: bool) -> ApiResult<Vec<ServerGroup>> {
        let r = self.store.read()?;
        let mut out: Vec<ServerGroup> = SERVER_GROUPS
            .values(&*r)?
            .into_iter()
            .filter(|g| {
                (all_projects && who.admin) || who.project.as_deref() == Some(g.project_id.as_str())
            })
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    pub fn server_group(&self, who: &Who, id: &str) -> ApiResult<ServerGroup> {
        let r = self.store.read()?;
        SERVER_GROUPS
            .get(&*r, id)?
            .filter(|g| visible(who, g))
            .ok_or_else(|| not_found(id))
    }

    pub fn delete_server_group(&self, who: &Who, id: &str) -> ApiResult<()> {
        let mut w = self.store.write()?;
        let g = SERVER_GROUPS
            .get(w.as_read(), id)?
            .filter(|g| visible(who, g))
            .ok_or_else(|| not_found(id))?;
        SERVER_GROUPS.delete(&mut *w, &g.id)?;
        w.commit()?;
        Ok(())
    }

    /// Forgets a deleted server in every group it belonged to.
    pub fn remove_group_member(&self, server_id: &str) -> ApiResult<()> {
        let mut w = self.store.write()?;
        for mut g in SERVER_GROUPS.values(w.as_read())? {
            let before = g.members.len();
            g.members.retain(|(s, _)| s != server_id);
            if g.members.len() != before {
                SERVER_GROUPS.put(&mut *w, &g.id, &g)?;
            }
        }
        w.commit()?;
        Ok(())
    }

    /// Groups per project (for usage in limits): project id → count.
    pub fn server_group_counts(&self) -> ApiResult<BTreeMap<String, i64>> {
        let r = self.store.read()?;
        let mut m = BTreeMap::new();
        for g in SERVER_GROUPS.values(&*r)? {
            *m.entry(g.project_id).or_insert(0) += 1;
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::compute::nodes::Registration;
    use crate::store::RedbStore;

    fn who(project: &str, admin: bool) -> Who {
        Who {
            user_id: "u".into(),
            project: Some(project.into()),
            admin,
        }
    }

    #[test]
    fn groups_are_per_project_members_leave_and_quota_applies() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
        let c = Arc::new(Compute::open(Arc::new(store)).unwrap());
        for id in ["n1", "n2"] {
            c.register_node(Registration {
                id: id.into(),
                host: id.into(),
                az: "nova".into(),
                vcpus: 64,
                ram_mb: 1 << 20,
                disk_gb: 1 << 20,
            })
            .unwrap();
        }
        let p = who("p", false);
        let g = c
            .create_server_group(
                &p,
                NewGroup {
                    name: "g".into(),
                    policy: "anti-affinity".into(),
                    max_server_per_host: None,
                },
            )
            .unwrap();
        // Members as the servers' create records them (server id, node id).
        {
            let mut w = c.store.write().unwrap();
            let mut rec = SERVER_GROUPS.get(w.as_read(), &g.id).unwrap().unwrap();
            rec.members = vec![("s0".into(), "n1".into()), ("s1".into(), "n2".into())];
            SERVER_GROUPS.put(&mut *w, &g.id, &rec).unwrap();
            w.commit().unwrap();
        }
        let shown = c.server_group(&p, &g.id).unwrap();
        assert_eq!(shown.members.len(), 2);
        // Another project cannot see it; an admin can, with all_projects.
        assert!(c.server_group(&who("q", false), &g.id).is_err());
        assert!(c.server_groups(&who("q", false), true).unwrap().is_empty());
        assert_eq!(c.server_groups(&who("q", true), true).unwrap().len(), 1);
        c.remove_group_member(&shown.members[0].0).unwrap();
        assert_eq!(c.server_group(&p, &g.id).unwrap().members.len(), 1);
        // Bad policy → 400; the server_groups quota → 403.
        let bad = NewGroup {
            name: "x".into(),
            policy: "nope".into(),
            max_server_per_host: None,
        };
        assert!(matches!(
            c.create_server_group(&p, bad),
            Err(ApiError::BadRequest(_))
        ));
        let admin = who("p", true);
        let mut set = serde_json::Map::new();
        set.insert("server_groups".into(), serde_json::json!(1));
        c.update_quotas(&admin, "p", &set).unwrap();
        let again = NewGroup {
            name: "h".into(),
            policy: "affinity".into(),
            max_server_per_host: None,
        };
        assert!(matches!(
            c.create_server_group(&p, again),
            Err(ApiError::Forbidden(_))
        ));
        c.delete_server_group(&p, &g.id).unwrap();
        assert!(c.server_group(&p, &g.id).is_err());
    }
}
