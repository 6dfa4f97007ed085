//! The network part of the node protocol (`/compute/kiln/v1/nodes/{node}/...`),
//! node-secret auth: the node's desired network state, its port status reports
//! and its DHCP ports. The logic is in [`crate::network::node_view`].

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use axum::Router;
use serde::Deserialize;
use serde_json::Value;

use super::nodes::authenticate;
use crate::api::extract::{Json, Path};
use crate::app::AppState;
use crate::compute::tables::NODES;
use crate::error::{ApiError, ApiResult};
use crate::network::error::NetError;
use crate::network::node_view::{self, NODE_TUNNELS};
use crate::protocol::CONTROLLER_PREFIX;
use crate::services::blocking;
use crate::store::Store;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            &format!("{CONTROLLER_PREFIX}/{{node}}/network"),
            get(network),
        )
        .route(
            &format!("{CONTROLLER_PREFIX}/{{node}}/ports/{{id}}/status"),
            put(port_status),
        )
        .route(
            &format!("{CONTROLLER_PREFIX}/{{node}}/networks/{{net}}/dhcp-port"),
            put(dhcp_port).delete(release_dhcp_port),
        )
}

fn api_error(e: NetError) -> ApiError {
    match e.status() {
        400 => ApiError::BadRequest(e.to_string()),
        403 => ApiError::Forbidden(e.to_string()),
        404 => ApiError::NotFound(e.to_string()),
        409 => ApiError::Conflict(e.to_string()),
        501 => ApiError::NotImplemented(e.to_string()),
        _ => ApiError::Internal(e.to_string()),
    }
}

/// The store and the registered host of `node` (404 for an unknown node).
fn host_of(state: &AppState, node: &str) -> ApiResult<(std::sync::Arc<dyn Store>, String)> {
    let store = crate::api::network::store(state);
    let r = store
        .read()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let n = NODES
        .get(&*r, node)
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(format!("Compute host {node} could not be found.")))?;
    drop(r);
    Ok((store, n.host))
}

async fn network(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(node): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    authenticate(&state, &headers)?;
    let (store, host) = host_of(&state, &node)?;
    let v = blocking(move || {
        let r = store
            .read()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut tunnels = BTreeMap::new();
        for (id, ip) in NODE_TUNNELS
            .scan(&*r, "")
            .map_err(|e| ApiError::Internal(e.to_string()))?
        {
            if let Some(n) = NODES
                .get(&*r, &id)
                .map_err(|e| ApiError::Internal(e.to_string()))?
            {
                tunnels.insert(n.host, ip);
            }
        }
        drop(r);
        let mut v = node_view::node_desired(&*store, &host, &tunnels).map_err(api_error)?;
        let r = store
            .read()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        crate::compute::multiqueue::annotate_desired(&*r, &mut v)?;
        Ok(v)
    })
    .await?;
    Ok(axum::Json(v))
}

#[derive(Deserialize)]
struct StatusBody {
    status: String,
}

async fn port_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((node, id)): Path<(String, String)>,
    Json(b): Json<StatusBody>,
) -> ApiResult<StatusCode> {
    authenticate(&state, &headers)?;
    let (store, host) = host_of(&state, &node)?;
    blocking(move || {
        node_view::node_port_status(&*store, &host, &id, &b.status).map_err(api_error)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn dhcp_port(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((node, net)): Path<(String, String)>,
) -> ApiResult<axum::Json<Value>> {
    authenticate(&state, &headers)?;
    let (store, host) = host_of(&state, &node)?;
    let p = blocking(move || node_view::ensure_dhcp_port(&*store, &host, &net).map_err(api_error))
        .await?;
    let v = serde_json::to_value(&p).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(axum::Json(serde_json::json!({ "port": v })))
}

async fn release_dhcp_port(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((node, net)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    authenticate(&state, &headers)?;
    let (store, host) = host_of(&state, &node)?;
    blocking(move || node_view::release_dhcp_port(&*store, &host, &net).map_err(api_error)).await?;
    Ok(StatusCode::NO_CONTENT)
}
