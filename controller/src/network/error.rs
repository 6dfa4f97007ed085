//! The network service's errors: Neutron's exception types, messages and codes.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Validation failures (`HTTPBadRequest` / `InvalidInput`).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    /// A named Neutron 404 (`NetworkNotFound`, ...).
    #[error("{message}")]
    NotFound { kind: &'static str, message: String },
    /// A named Neutron 409 (`NetworkInUse`, `IpAddressAlreadyAllocated`, ...).
    #[error("{message}")]
    Conflict { kind: &'static str, message: String },
    /// Cross-project isolation refused the change.
    #[error("{0}")]
    CrossProject(String),
    #[error("{0}")]
    NotImplemented(String),
}

impl NetError {
    /// Neutron's exception class name, the `type` of `NeutronError`.
    pub fn kind(&self) -> &'static str {
        match self {
            NetError::Store(_) => "HTTPInternalServerError",
            NetError::BadRequest(_) => "HTTPBadRequest",
            NetError::Forbidden(_) => "PolicyNotAuthorized",
            NetError::NotFound { kind, .. } | NetError::Conflict { kind, .. } => kind,
            NetError::CrossProject(_) => "CrossProjectNetworkAccess",
            NetError::NotImplemented(_) => "HTTPNotImplemented",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            NetError::Store(_) => 500,
            NetError::BadRequest(_) => 400,
            NetError::Forbidden(_) | NetError::CrossProject(_) => 403,
            NetError::NotFound { .. } => 404,
            NetError::Conflict { .. } => 409,
            NetError::NotImplemented(_) => 501,
        }
    }

    pub fn invalid(msg: impl std::fmt::Display) -> Self {
        NetError::BadRequest(format!("Invalid input for operation: {msg}."))
    }

    pub fn network_not_found(id: &str) -> Self {
        NetError::NotFound {
            kind: "NetworkNotFound",
            message: format!("Network {id} could not be found."),
        }
    }
    pub fn subnet_not_found(id: &str) -> Self {
        NetError::NotFound {
            kind: "SubnetNotFound",
            message: format!("Subnet {id} could not be found."),
        }
    }
    pub fn port_not_found(id: &str) -> Self {
        NetError::NotFound {
            kind: "PortNotFound",
            message: format!("Port {id} could not be found."),
        }
    }
    pub fn sg_not_found(id: &str) -> Self {
        NetError::NotFound {
            kind: "SecurityGroupNotFound",
            message: format!("Security group {id} does not exist"),
        }
    }
    pub fn rule_not_found(id: &str) -> Self {
        NetError::NotFound {
            kind: "SecurityGroupRuleNotFound",
            message: format!("Security group rule {id} does not exist"),
        }
    }
    pub fn router_not_found(id: &str) -> Self {
        NetError::NotFound {
            kind: "RouterNotFound",
            message: format!("Router {id} could not be found"),
        }
    }
    pub fn fip_not_found(id: &str) -> Self {
        NetError::NotFound {
            kind: "FloatingIPNotFound",
            message: format!("Floating IP {id} could not be found"),
        }
    }
    pub fn conflict(kind: &'static str, message: impl Into<String>) -> Self {
        NetError::Conflict {
            kind,
            message: message.into(),
        }
    }
}

pub type NetResult<T> = Result<T, NetError>;
