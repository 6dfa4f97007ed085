//! The node API (`/kiln-node/v1/{node}/...`): one listener serves every agent of
//! the process (the node id is in the path), behind the shared-secret bearer.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kiln_controller::protocol::{bearer_matches, Action, ConsoleOutput, Spawn, NODE_PREFIX};
use serde::Deserialize;
use serde_json::json;

use super::Agent;

#[derive(Clone)]
pub struct NodeApi {
    pub agents: Arc<HashMap<String, Arc<Agent>>>,
    pub secret: Arc<String>,
}

pub fn router(api: NodeApi) -> Router {
    Router::new()
        .route(&format!("{NODE_PREFIX}/{{node}}/servers"), post(spawn))
        .route(
            &format!("{NODE_PREFIX}/{{node}}/servers/{{id}}"),
            axum::routing::delete(delete),
        )
        .route(
            &format!("{NODE_PREFIX}/{{node}}/servers/{{id}}/action"),
            post(act),
        )
        .route(
            &format!("{NODE_PREFIX}/{{node}}/servers/{{id}}/console"),
            get(console),
        )
        .with_state(api)
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message}})),
    )
        .into_response()
}

/// Why a call was refused before reaching an agent.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, &self.1)
    }
}

fn agent(api: &NodeApi, headers: &HeaderMap, node: &str) -> Result<Arc<Agent>, Refusal> {
    if !bearer_matches(headers, &api.secret) {
        return Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "The node secret is missing or wrong.".into(),
        ));
    }
    api.agents
        .get(node)
        .cloned()
        .ok_or_else(|| Refusal(StatusCode::NOT_FOUND, format!("No node {node} here.")))
}

async fn spawn(
    State(api): State<NodeApi>,
    headers: HeaderMap,
    Path(node): Path<String>,
    Json(spec): Json<Spawn>,
) -> Response {
    match agent(&api, &headers, &node) {
        Ok(a) => {
            tokio::spawn(a.spawn(spec));
            StatusCode::ACCEPTED.into_response()
        }
        Err(r) => r.into_response(),
    }
}

async fn act(
    State(api): State<NodeApi>,
    headers: HeaderMap,
    Path((node, id)): Path<(String, String)>,
    Json(action): Json<Action>,
) -> Response {
    match agent(&api, &headers, &node) {
        Ok(a) if a.knows(&id) => {
            tokio::spawn(a.act(id, action));
            StatusCode::ACCEPTED.into_response()
        }
        Ok(_) => error(
            StatusCode::NOT_FOUND,
            &format!("Server {id} is not on this node."),
        ),
        Err(r) => r.into_response(),
    }
}

async fn delete(
    State(api): State<NodeApi>,
    headers: HeaderMap,
    Path((node, id)): Path<(String, String)>,
) -> Response {
    match agent(&api, &headers, &node) {
        Ok(a) => {
            tokio::spawn(a.delete(id));
            StatusCode::ACCEPTED.into_response()
        }
        Err(r) => r.into_response(),
    }
}

#[derive(Deserialize)]
struct Lines {
    lines: Option<u64>,
}

async fn console(
    State(api): State<NodeApi>,
    headers: HeaderMap,
    Path((node, id)): Path<(String, String)>,
    Query(q): Query<Lines>,
) -> Response {
    match agent(&api, &headers, &node) {
        Ok(a) => match a.driver.console(&id, q.lines) {
            Ok(output) => Json(ConsoleOutput { output }).into_response(),
            Err(e) => error(StatusCode::NOT_FOUND, &e.to_string()),
        },
        Err(r) => r.into_response(),
    }
}
