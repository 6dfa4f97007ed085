//! The services the catalog lists before their issues land: one catch-all per path
//! prefix answering 501 in the OpenStack error shape.

use axum::extract::OriginalUri;
use axum::routing::any;
use axum::Router;

use crate::app::AppState;
use crate::error::ApiError;

/// (path prefix, service name) for every catalog entry not served yet.
const PENDING: &[(&str, &str)] = &[("/placement", "placement")];

pub fn router() -> Router<AppState> {
    let mut r = Router::new();
    for (prefix, name) in PENDING {
        let handler = move |OriginalUri(uri): OriginalUri| async move {
            ApiError::NotImplemented(format!(
                "The {name} service is not implemented yet in kiln (requested {}).",
                uri.path()
            ))
        };
        r = r
            .route(prefix, any(handler))
            .route(&format!("{prefix}/"), any(handler))
            .route(&format!("{prefix}/{{*rest}}"), any(handler));
    }
    r
}
