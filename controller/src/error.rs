//! The one API error type: OpenStack's JSON error shape and the status codes, in one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Every failure an API handler can answer with.
///
/// Rendered as `{"error": {"code": N, "title": "...", "message": "..."}}`, the shape
/// Keystone uses (and the clients parse for all services).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotImplemented(String),
    /// Something broke on our side; the detail goes to the log, never to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "Bad Request",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotFound(_) => "Not Found",
            ApiError::MethodNotAllowed(_) => "Method Not Allowed",
            ApiError::Conflict(_) => "Conflict",
            ApiError::NotImplemented(_) => "Not Implemented",
            ApiError::Internal(_) => "Internal Server Error",
        }
    }

    /// The generic 401 Keystone answers for any bad credential (it never says which part).
    pub fn auth_required() -> Self {
        ApiError::Unauthorized("The request you have made requires authentication.".into())
    }

    /// The generic 403 for a policy refusal.
    pub fn forbidden(action: &str) -> Self {
        ApiError::Forbidden(format!(
            "You are not authorized to perform the requested action: {action}."
        ))
    }

    pub fn not_found(kind: &str, id: &str) -> Self {
        ApiError::NotFound(format!("Could not find {kind}: {id}."))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "An unexpected error prevented the server from fulfilling your request.".to_string()
            }
            other => other.to_string(),
        };
        let body =
            json!({"error": {"code": status.as_u16(), "title": self.title(), "message": message}});
        (status, axum::Json(body)).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<crate::identity::IdentityError> for ApiError {
    fn from(e: crate::identity::IdentityError) -> Self {
        use crate::identity::IdentityError as E;
        match e {
            E::Store(s) => ApiError::Internal(s.to_string()),
            E::Hashing(h) => ApiError::Internal(h),
            E::BadRequest(m) => ApiError::BadRequest(m),
            E::Unauthorized(m) => ApiError::Unauthorized(m),
            E::Forbidden(m) => ApiError::Forbidden(m),
            E::NotFound { kind, id } => ApiError::not_found(kind, &id),
            E::Conflict(m) => ApiError::Conflict(m),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
