//! The controller side of the node protocol (`/compute/kiln/v1/nodes/...`):
//! registration, heartbeats, state reports and resync, authenticated with the
//! shared node secret (401 without it). See [`crate::protocol`].

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

use crate::api::extract::{Json, Path};
use crate::app::AppState;
use crate::compute::servers::link::deliver_later;
use crate::error::{ApiError, ApiResult};
use crate::protocol::{
    bearer_matches, Heartbeat, Register, Registered, Resync, ResyncReply, StateReport,
    CONTROLLER_PREFIX, VERSION,
};
use crate::services::blocking;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(CONTROLLER_PREFIX, post(register))
        .route(
            &format!("{CONTROLLER_PREFIX}/{{node}}/heartbeat"),
            post(heartbeat),
        )
        .route(
            &format!("{CONTROLLER_PREFIX}/{{node}}/servers/{{id}}/state"),
            post(report),
        )
        .route(
            &format!("{CONTROLLER_PREFIX}/{{node}}/resync"),
            post(resync),
        )
        .merge(super::node_images::router())
}

pub(crate) fn authenticate(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    if bearer_matches(headers, state.nodes.secret()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(
            "The node secret is missing or wrong.".into(),
        ))
    }
}

fn registered(state: &AppState) -> axum::Json<Registered> {
    axum::Json(Registered {
        controller_boot: state.nodes.boot.clone(),
        heartbeat_secs: state.nodes.heartbeat_secs,
    })
}

async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(reg): Json<Register>,
) -> ApiResult<axum::Json<Registered>> {
    authenticate(&state, &headers)?;
    if reg.protocol != VERSION {
        return Err(ApiError::BadRequest(format!(
            "Node protocol {} is not supported; this controller speaks {VERSION}.",
            reg.protocol
        )));
    }
    let compute = state.services.compute.clone();
    blocking(move || compute.register(&reg)).await?;
    Ok(registered(&state))
}

async fn heartbeat(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(node): Path<String>,
    Json(_hb): Json<Heartbeat>,
) -> ApiResult<axum::Json<Registered>> {
    authenticate(&state, &headers)?;
    let compute = state.services.compute.clone();
    blocking(move || compute.heartbeat(&node)).await?;
    Ok(registered(&state))
}

async fn report(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((node, id)): Path<(String, String)>,
    Json(r): Json<StateReport>,
) -> ApiResult<StatusCode> {
    authenticate(&state, &headers)?;
    if r.server_id != id {
        return Err(ApiError::BadRequest(
            "server_id does not match the path".into(),
        ));
    }
    let compute = state.services.compute.clone();
    let calls = blocking(move || compute.apply_report(&node, &r)).await?;
    deliver_later(state.services.compute.clone(), state.nodes.clone(), calls);
    Ok(StatusCode::NO_CONTENT)
}

async fn resync(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(node): Path<String>,
    Json(r): Json<Resync>,
) -> ApiResult<axum::Json<ResyncReply>> {
    authenticate(&state, &headers)?;
    let compute = state.services.compute.clone();
    let reply = blocking(move || compute.resync(&node, &r)).await?;
    Ok(axum::Json(reply))
}
