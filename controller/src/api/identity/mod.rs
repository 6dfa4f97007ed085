//! Keystone v3 routes: one file per resource, each with its `router()`.

mod app_creds;
mod auth;
mod catalog;
mod domains;
mod grants;
mod groups;
mod not_implemented;
mod projects;
mod roles;
mod users;
pub mod views;

use axum::Router;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::identity::directory::ListFilter;
use crate::identity::model::TokenRecord;
use crate::identity::policy::{allowed, Action, Resource};

use super::extract::QueryParams;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(auth::router())
        .merge(catalog::router())
        .merge(not_implemented::router())
        .merge(domains::router())
        .merge(projects::router())
        .merge(users::router())
        .merge(groups::router())
        .merge(roles::router())
        .merge(grants::router())
        .merge(app_creds::router())
}

/// 403 unless the policy allows it; `rule` names the Keystone policy in the message.
pub(crate) fn require(
    caller: &TokenRecord,
    action: Action,
    resource: Resource<'_>,
    rule: &str,
) -> ApiResult<()> {
    if allowed(caller, action, resource) {
        Ok(())
    } else {
        Err(ApiError::forbidden(rule))
    }
}

/// The common list filters from the query string.
pub(crate) fn list_filter(q: &QueryParams) -> ApiResult<ListFilter> {
    Ok(ListFilter {
        name: q.get("name").map(str::to_string),
        domain_id: q.get("domain_id").map(str::to_string),
        enabled: q.flag("enabled")?,
        parent_id: q.get("parent_id").map(str::to_string),
        tags: q
            .get("tags")
            .map(|t| t.split(',').map(str::to_string).collect()),
    })
}
