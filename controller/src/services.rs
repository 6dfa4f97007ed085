//! The services beside identity (image, compute), opened together over the same
//! store and data dir, and the helper that runs their store work off the executor.

use std::path::Path;
use std::sync::Arc;

use crate::compute::servers::directory::Directory;
use crate::compute::Compute;
use crate::error::{ApiError, ApiResult};
use crate::image::Images;
use crate::store::Store;

/// Where image data lives inside the data dir.
pub const IMAGES_DIR: &str = "images";

pub struct Services {
    pub images: Arc<Images>,
    pub compute: Arc<Compute>,
}

impl Services {
    /// Opens the services (a new cloud gets its default flavors here).
    pub fn open(store: Arc<dyn Store>, data_dir: &Path) -> ApiResult<Services> {
        let compute = Arc::new(Compute::open(store.clone())?);
        // os-hypervisors and os-simple-tenant-usage read the servers through this.
        compute.set_server_directory(Arc::new(Directory::new(store.clone())));
        Ok(Services {
            images: Arc::new(Images::new(store, data_dir.join(IMAGES_DIR))),
            compute,
        })
    }
}

/// Runs store work (write transactions fsync) on the blocking pool.
pub async fn blocking<R, F>(f: F) -> ApiResult<R>
where
    R: Send + 'static,
    F: FnOnce() -> ApiResult<R> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("blocking task failed: {e}")))?
}
