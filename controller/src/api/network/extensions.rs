//! `GET /v2.0/extensions`: exactly the extensions kiln implements.

use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::{NResult, NetCaller};
use crate::api::extract::Path;
use crate::app::AppState;
use crate::network::NetError;

/// (alias, name, description) of every implemented extension.
pub const EXTENSIONS: &[(&str, &str, &str)] = &[
    ("allowed-address-pairs", "Allowed Address Pairs", "Provides allowed address pairs"),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application"),
    ("external-net", "Neutron external network", "Adds external network attribute to network resource."),
    ("ext-gw-mode", "Neutron L3 Configurable external gateway mode", "Extension of the router abstraction for specifying whether SNAT should occur on the external gateway"),
    ("fields", "Fields", "Extension that indicates that the fields parameter is supported."),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource."),
    ("pagination", "Pagination support", "Extension that indicates that pagination is enabled."),
    ("port-security", "Port Security", "Provides port security"),
    ("project-id", "project_id field enabled", "Extension that indicates that project_id field is enabled."),
    ("quotas", "Quota management support", "Expose functions for quotas management per project"),
    ("quota_details", "Quota details management support", "Expose functions for quotas usage statistics per project"),
    ("router", "Neutron L3 Router", "Router abstraction for basic L3 forwarding between L2 Neutron networks and access to external networks via a NAT gateway."),
    ("security-group", "security-group", "The security groups extension."),
    ("sorting", "Sorting support", "Extension that indicates that sorting is enabled."),
    ("standard-attr-description", "standard-attr-description", "Extension to add descriptions to standard attributes"),
    ("standard-attr-revisions", "Resource revision numbers", "This extension will display the revision number of neutron resources."),
    ("standard-attr-tag", "Tag support for resources with standard attribute: subnet, trunk, network_segment_range, router, network, policy, subnetpool, port, security_group, floatingip", "Enables to set tag on resources with standard attribute."),
    ("standard-attr-timestamp", "Resource timestamps", "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes."),
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/network/v2.0/extensions", get(list))
        .route("/network/v2.0/extensions/{alias}", get(show))
}

fn entry(alias: &str, name: &str, description: &str) -> Value {
    json!({
        "alias": alias, "name": name, "description": description,
        "updated": "2013-01-01T10:00:00-00:00", "links": []
    })
}

fn implemented() -> impl Iterator<Item = &'static (&'static str, &'static str, &'static str)> {
    EXTENSIONS.iter()
}

async fn list(NetCaller(_): NetCaller) -> axum::Json<Value> {
    let items: Vec<Value> = implemented().map(|(a, n, d)| entry(a, n, d)).collect();
    axum::Json(json!({"extensions": items}))
}

async fn show(NetCaller(_): NetCaller, Path(alias): Path<String>) -> NResult<axum::Json<Value>> {
    let (a, n, d) =
        implemented()
            .find(|(a, _, _)| *a == alias)
            .ok_or_else(|| NetError::NotFound {
                kind: "HTTPNotFound",
                message: format!("Extension with alias {alias} does not exist"),
            })?;
    Ok(axum::Json(json!({"extension": entry(a, n, d)})))
}
