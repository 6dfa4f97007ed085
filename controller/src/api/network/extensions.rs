//! `GET /v2.0/extensions`: exactly the extensions kiln implements.

use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::{NResult, NetCaller};
use crate::api::extract::Path;
use crate::app::AppState;
use crate::network::NetError;

/// (alias, name, description, updated) of every implemented extension, as
/// neutron-lib defines them.
pub const EXTENSIONS: &[(&str, &str, &str, &str)] = &[
    ("allowed-address-pairs", "Allowed Address Pairs", "Provides allowed address pairs", "2013-07-23T10:00:00-00:00"),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application", "2014-02-03T10:00:00-00:00"),
    ("external-net", "Neutron external network", "Adds external network attribute to network resource.", "2013-01-14T10:00:00-00:00"),
    ("extraroute", "Neutron Extra Route", "Extra routes configuration for L3 router", "2013-02-01T10:00:00-00:00"),
    ("ext-gw-mode", "Neutron L3 Configurable external gateway mode", "Extension of the router abstraction for specifying whether SNAT should occur on the external gateway", "2013-03-28T10:00:00-00:00"),
    ("fields", "Fields", "Extension that indicates that the fields parameter is supported.", "2017-01-01T10:00:00-00:00"),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource.", "2015-03-25T10:00:00-00:00"),
    ("pagination", "Pagination support", "Extension that indicates that pagination is enabled.", "2016-06-12T00:00:00-00:00"),
    ("port-security", "Port Security", "Provides port security", "2012-07-23T10:00:00-00:00"),
    ("project-id", "project_id field enabled", "Extension that indicates that project_id field is enabled.", "2016-09-09T09:09:09-09:09"),
    ("quotas", "Quota management support", "Expose functions for quotas management per project", "2012-07-29T10:00:00-00:00"),
    ("quota_details", "Quota details management support", "Expose functions for quotas usage statistics per project", "2017-02-10T10:00:00-00:00"),
    ("router", "Neutron L3 Router", "Router abstraction for basic L3 forwarding between L2 Neutron networks and access to external networks via a NAT gateway.", "2012-07-20T10:00:00-00:00"),
    ("security-group", "security-group", "The security groups extension.", "2012-10-05T10:00:00-00:00"),
    ("sorting", "Sorting support", "Extension that indicates that sorting is enabled.", "2016-06-12T00:00:00-00:00"),
    ("standard-attr-description", "standard-attr-description", "Extension to add descriptions to standard attributes", "2016-02-10T10:00:00-00:00"),
    ("standard-attr-revisions", "Resource revision numbers", "This extension will display the revision number of neutron resources.", "2016-04-11T10:00:00-00:00"),
    ("standard-attr-tag", "Tag support for resources with standard attribute: subnet, trunk, network_segment_range, router, network, policy, subnetpool, port, security_group, floatingip", "Enables to set tag on resources with standard attribute.", "2017-01-01T00:00:00-00:00"),
    ("standard-attr-timestamp", "Resource timestamps", "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes.", "2016-09-12T10:00:00-00:00"),
    ("subnet-service-types", "Subnet service types", "Provides ability to set the subnet service_types field", "2016-03-15T18:00:00-00:00"),
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/network/v2.0/extensions", get(list))
        .route("/network/v2.0/extensions/{alias}", get(show))
}

type Extension = (&'static str, &'static str, &'static str, &'static str);

fn entry(&(alias, name, description, updated): &Extension) -> Value {
    json!({
        "alias": alias, "name": name, "description": description,
        "updated": updated, "links": []
    })
}

fn implemented() -> impl Iterator<Item = &'static Extension> {
    EXTENSIONS.iter()
}

async fn list(NetCaller(_): NetCaller) -> axum::Json<Value> {
    let items: Vec<Value> = implemented().map(entry).collect();
    axum::Json(json!({"extensions": items}))
}

async fn show(NetCaller(_): NetCaller, Path(alias): Path<String>) -> NResult<axum::Json<Value>> {
    let ext = implemented()
        .find(|e| e.0 == alias)
        .ok_or_else(|| NetError::NotFound {
            kind: "HTTPNotFound",
            message: format!("Extension with alias {alias} does not exist"),
        })?;
    Ok(axum::Json(json!({"extension": entry(ext)})))
}
