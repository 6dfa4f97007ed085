//! The node protocol's image data: `GET /compute/kiln/v1/nodes/{node}/images/{id}/file`
//! (bearer node secret) streams an active image's bytes to a node's image
//! cache, with the record's disk format and hashes in `x-kiln-*` headers so
//! the node can verify what it received.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tokio_util::io::ReaderStream;

use super::nodes::authenticate;
use crate::api::extract::Path;
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::image::model::status;
use crate::image::Who;
use crate::protocol::{
    CONTROLLER_PREFIX, IMAGE_HEADER_CHECKSUM, IMAGE_HEADER_DISK_FORMAT, IMAGE_HEADER_HASH_ALGO,
    IMAGE_HEADER_HASH_VALUE,
};

pub fn router() -> Router<AppState> {
    Router::new().route(
        &format!("{CONTROLLER_PREFIX}/{{node}}/images/{{id}}/file"),
        get(download),
    )
}

async fn download(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((_node, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    authenticate(&state, &headers)?;
    let node = Who {
        project: None,
        admin: true,
        writer: false,
    };
    let image = state.services.images.get(&node, &id)?;
    let (Some(size), true) = (
        image.size,
        image.status == status::ACTIVE || image.status == status::DEACTIVATED,
    ) else {
        return Err(ApiError::Conflict(format!(
            "Image {id} has no data (status {}).",
            image.status
        )));
    };
    let reader = state
        .services
        .images
        .files
        .open_range(&id, 0, size)
        .await
        .map_err(|e| ApiError::Internal(format!("image {id} data: {e}")))?;
    let mut resp = Response::new(Body::from_stream(ReaderStream::new(reader)));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    for (name, value) in [
        (IMAGE_HEADER_DISK_FORMAT, image.disk_format.as_deref()),
        (IMAGE_HEADER_HASH_ALGO, image.os_hash_algo.as_deref()),
        (IMAGE_HEADER_HASH_VALUE, image.os_hash_value.as_deref()),
        (IMAGE_HEADER_CHECKSUM, image.checksum.as_deref()),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            h.insert(name, v);
        }
    }
    Ok(resp)
}
