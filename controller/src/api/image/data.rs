//! `/v2/images/{id}/file`: upload streamed to disk (hashed on the way) and
//! download streamed back, with `Range` support.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::Router;
use tokio_util::io::ReaderStream;

use super::status_error;
use crate::api::extract::{Caller, Path};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::image::files::{parse_range, FileError};
use crate::image::model::status;
use crate::image::{Who, IMAGE_SIZE_CAP};
use crate::services::blocking;

pub fn router() -> Router<AppState> {
    Router::new().route("/image/v2/images/{id}/file", put(upload).get(download))
}

async fn upload(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let who = Who::of(&caller);
    let images = state.services.images.clone();
    let id2 = id.clone();
    blocking(move || images.begin_upload(&who, &id2).map(|_| ())).await?;
    let images = state.services.images.clone();
    let written = images
        .files
        .write(&id, body.into_data_stream(), IMAGE_SIZE_CAP)
        .await;
    match written {
        Ok(w) => {
            let id2 = id.clone();
            blocking(move || images.finish_upload(&id2, &w).map(|_| ())).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err(e) => {
            let id2 = id.clone();
            blocking(move || images.abort_upload(&id2)).await?;
            Ok(match e {
                FileError::TooLarge(limit) => status_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("Image exceeds the storage quota: the limit is {limit} bytes."),
                ),
                FileError::Stream(m) => {
                    ApiError::BadRequest(format!("The upload was interrupted: {m}")).into_response()
                }
                FileError::Io(io) => ApiError::Internal(io.to_string()).into_response(),
            })
        }
    }
}

async fn download(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let who = Who::of(&caller);
    let image = state.services.images.get(&who, &id)?;
    if image.status == status::DEACTIVATED && !who.admin {
        return Err(ApiError::Forbidden(
            "The requested image has been deactivated. Image data download is forbidden.".into(),
        ));
    }
    let (Some(size), true) = (
        image.size,
        image.status == status::ACTIVE || image.status == status::DEACTIVATED,
    ) else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match parse_range(range, size) {
        Ok(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e),
        Ok(None) => (StatusCode::OK, 0, size.saturating_sub(1)),
        Err(_) => {
            let mut resp = status_error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                &format!("Requested range not satisfiable for an image of {size} bytes."),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
    };
    let len = if size == 0 { 0 } else { end - start + 1 };
    let reader = state
        .services
        .images
        .files
        .open_range(&id, start, len)
        .await
        .map_err(|e| ApiError::Internal(format!("image {id} data: {e}")))?;
    let mut resp = Response::new(Body::from_stream(ReaderStream::new(reader)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Some(md5) = image
        .checksum
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        h.insert("content-md5", md5);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}
