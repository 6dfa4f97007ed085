//! The whole HTTP surface: `app(state) -> Router`, so tests drive it with
//! `tower::ServiceExt::oneshot` and servers bind it to a socket.

use std::sync::Arc;

use axum::Router;

use crate::error::{ApiError, ApiResult};
use crate::identity::catalog::Catalog;
use crate::identity::{IdResult, Identity};

/// The one cloneable state every handler sees.
#[derive(Clone)]
pub struct AppState {
    pub identity: Arc<Identity>,
    pub catalog: Catalog,
    /// Where volume bytes live (sparse files under the data dir).
    pub volumes: Arc<dyn crate::volume::VolumeBackend>,
}

impl AppState {
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
