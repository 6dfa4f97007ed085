//! The node protocol's image data (bearer node secret):
//! `GET /compute/kiln/v1/nodes/{node}/images/{id}/file` streams an active
//! image's bytes to a node's image cache, with the record's disk format and
//! hashes in `x-kiln-*` headers so the node can verify what it received;
//! `PUT` on the same path takes a server snapshot's bytes from the node that
//! hosts the server, streamed through Glance's upload path (saving → active,
//! size, md5 checksum, sha512 `os_hash_value`).

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::io::ReaderStream;

use super::nodes::authenticate;
use crate::api::extract::Path;
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::image::model::status;
use crate::image::{Who, IMAGE_SIZE_CAP};
use crate::protocol::{
    CONTROLLER_PREFIX, IMAGE_HEADER_CHECKSUM, IMAGE_HEADER_DISK_FORMAT, IMAGE_HEADER_HASH_ALGO,
    IMAGE_HEADER_HASH_VALUE,
};
use crate::services::blocking;

pub fn router() -> Router<AppState> {
    Router::new().route(
        &format!("{CONTROLLER_PREFIX}/{{node}}/images/{{id}}/file"),
        get(download).put(upload),
    )
}

/// The node's own authority over image records (admin, not a writer).
fn node_who() -> Who {
    Who {
        project: None,
        admin: true,
        writer: false,
    }
}

async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((node, id)): Path<(String, String)>,
    body: Body,
) -> ApiResult<Response> {
    authenticate(&state, &headers)?;
    let compute = state.services.compute.clone();
    let images = state.services.images.clone();
    let id2 = id.clone();
    blocking(move || {
        compute.snapshot_upload_begins(&node, &id2)?;
        images.begin_upload(&node_who(), &id2).map(drop)
    })
    .await?;
    let images = state.services.images.clone();
    let written = images
        .files
        .write(&id, body.into_data_stream(), IMAGE_SIZE_CAP)
        .await;
    let id2 = id.clone();
    match written {
        Ok(w) => {
            blocking(move || images.finish_upload(&id2, &w).map(drop)).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err(e) => {
            blocking(move || images.abort_upload(&id2)).await?;
            Err(ApiError::BadRequest(format!(
                "The snapshot upload of image {id} failed: {e}"
            )))
        }
    }
}

async fn download(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((_node, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    authenticate(&state, &headers)?;
    let image = state.services.images.get(&node_who(), &id)?;
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
