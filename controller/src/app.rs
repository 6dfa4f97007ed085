//! The whole HTTP surface: `app(state) -> Router`, so tests drive it with
//! `tower::ServiceExt::oneshot` and servers bind it to a socket.

use std::sync::Arc;

use axum::Router;

use crate::error::{ApiError, ApiResult};
use crate::identity::catalog::Catalog;
use crate::identity::{IdResult, Identity};
use crate::services::Services;

/// The one cloneable state every handler sees.
#[derive(Clone)]
pub struct AppState {
    pub identity: Arc<Identity>,
    pub catalog: Catalog,
    /// Image and compute, over the identity's store.
    pub services: Arc<Services>,
    /// Where volume bytes live (sparse files under the data dir).
    pub volumes: Arc<dyn crate::volume::VolumeBackend>,
    /// The controller's client for node agents (and the node secret).
    pub nodes: Arc<crate::compute::servers::link::NodeLink>,
}

impl AppState {
    /// The state over an opened identity service; the other services share its
    /// store and keep their files under `data_dir`.
    pub fn new(
        identity: Arc<Identity>,
        catalog: Catalog,
        data_dir: &std::path::Path,
    ) -> ApiResult<Self> {
        let services = Arc::new(Services::open(identity.store().clone(), data_dir)?);
        let volumes = Arc::new(crate::volume::FileBackend::new(data_dir.join("volumes")));
        services.compute.set_volume_backend(volumes.clone());
        let secret = crate::protocol::load_or_create_secret(data_dir)
            .map_err(|e| ApiError::Internal(format!("cannot keep the node secret: {e}")))?;
        let nodes = Arc::new(crate::compute::servers::link::NodeLink::new(
            secret,
            crate::scheduler::heartbeat_secs(crate::compute::servers::link::HEARTBEAT_SECS),
        ));
        Ok(AppState {
            identity,
            catalog,
            services,
            volumes,
            nodes,
        })
    }

    /// Runs a read-only identity operation in place: redb reads are short and never
    /// wait for a writer, so they need no thread hop.
    pub fn read<R>(&self, f: impl FnOnce(&Identity) -> IdResult<R>) -> ApiResult<R> {
        f(&self.identity).map_err(ApiError::from)
    }

    /// Runs an identity operation on the blocking pool (store transactions and
    /// argon2 hashing must not stall the async executor).
    pub async fn blocking<R, F>(&self, f: F) -> ApiResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Identity) -> IdResult<R> + Send + 'static,
    {
        let identity = self.identity.clone();
        tokio::task::spawn_blocking(move || f(&identity))
            .await
            .map_err(|e| ApiError::Internal(format!("blocking task failed: {e}")))?
            .map_err(ApiError::from)
    }
}

/// Identity at the root and `/v3`; the other services' prefixes answer 501 until
/// they exist; anything else is a JSON 404, a wrong method a JSON 405.
pub fn app(state: AppState) -> Router {
    crate::api::router().with_state(state)
}
