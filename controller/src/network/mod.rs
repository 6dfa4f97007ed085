//! Networking (Neutron v2.0): the records, IPAM, security groups, routers and
//! floating IPs, and the desired state nodes fetch to realise them.
//!
//! Every operation runs over the shared [`Store`]: reads in one read
//! transaction, changes in ONE write transaction (so an address, a MAC or a
//! default security group is never handed out twice, even under concurrent
//! requests — redb serialises writers). The API layer (`api::network`) only
//! parses, checks the caller and shapes JSON.
//!
//! Cross-project isolation is enforced here, not in the API layer: a port,
//! router interface or floating IP never joins a network of another project
//! unless that network is admin-`shared` (or, for gateways and floating IPs,
//! `router:external`).

pub mod desired;
pub mod error;
pub mod ipam;
pub mod model;
pub mod node_view;
pub mod ops;
pub mod ports;
pub mod quota;
pub mod routers;
pub mod secgroups;
pub mod subnets;
pub mod tables;

pub use error::{NetError, NetResult};

use crate::identity::model::TokenRecord;
use crate::identity::policy::{self, Action, Resource};

/// What a network operation needs to know about its caller.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The project the token is scoped to (empty for system/domain scope).
    pub project_id: String,
    pub admin: bool,
    /// May write in its own project (member) — admins may write anywhere.
    pub writer: bool,
}

impl Ctx {
    pub fn from_token(t: &TokenRecord) -> Ctx {
        let project_id = t.scope.project_id().unwrap_or_default().to_string();
        Ctx {
            admin: policy::is_admin(t),
            writer: policy::allowed(t, Action::Write, Resource::Project(&project_id)),
            project_id,
        }
    }

    /// An administrator context (tests, internal callers).
    pub fn admin(project_id: &str) -> Ctx {
        Ctx {
            project_id: project_id.to_string(),
            admin: true,
            writer: true,
        }
    }

    /// A member of `project_id`.
    pub fn member(project_id: &str) -> Ctx {
        Ctx {
            project_id: project_id.to_string(),
            admin: false,
            writer: true,
        }
    }

    /// Whether the caller owns (or administers) a record of `project`.
    pub fn owns(&self, project: &str) -> bool {
        self.admin || self.project_id == project
    }

    /// The project a new record belongs to: the one asked for (admins only may
    /// name another project), else the caller's.
    pub fn target_project(&self, asked: Option<&str>) -> NetResult<String> {
        match asked {
            Some(p) if p != self.project_id && !self.admin => Err(NetError::Forbidden(
                "Specifying 'project_id' or 'tenant_id' other than the authenticated project in request requires admin privileges".into(),
            )),
            Some(p) => Ok(p.to_string()),
            None if self.project_id.is_empty() => Err(NetError::BadRequest(
                "A project-scoped token (or an explicit project_id) is required.".into(),
            )),
            None => Ok(self.project_id.clone()),
        }
    }

    pub fn require_write(&self) -> NetResult<()> {
        if self.writer {
            Ok(())
        } else {
            Err(NetError::Forbidden(
                "The caller may only read in this project.".into(),
            ))
        }
    }
}

/// Now, as Neutron writes timestamps (`2016-03-08T20:19:41Z`).
pub fn now() -> String {
    let micros = crate::clock::now_micros();
    let s = crate::clock::rfc3339_micros(micros - micros.rem_euclid(1_000_000));
    // rfc3339_micros ends in ".000000Z"; Neutron has no fraction.
    match s.split_once('.') {
        Some((head, _)) => format!("{head}Z"),
        None => s,
    }
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
