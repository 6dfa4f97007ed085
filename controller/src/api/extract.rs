//! Request extractors that answer in OpenStack's error shape: a JSON body wrapper
//! (malformed JSON, wrong types, missing fields → 400), query parameters, the
//! caller's token, and the request's base URL.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::error::ApiError;
use crate::identity::tokens::LiveToken;

/// A JSON body. Any content type is accepted (clients are not all careful); the
/// body must parse into `T`, else 400 with serde's reason.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("Cannot read the request body: {e}")))?;
        if bytes.is_empty() {
            return Err(ApiError::BadRequest(
                "The request body is empty; a JSON object is expected.".into(),
            ));
        }
        serde_json::from_slice(&bytes)
            .map(Json)
            .map_err(|e| ApiError::BadRequest(format!("Invalid request body: {e}")))
    }
}

/// Path parameters; a rejection (e.g. bad percent-encoding) is a 400 in our shape.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// Query parameters as a map (repeated keys: the last wins). Never rejects a request
/// for a malformed query string: undecodable pairs are dropped.
pub struct QueryParams(pub HashMap<String, String>);

impl QueryParams {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A boolean filter in Keystone's spelling (`true`/`false`/`1`/`0`, case-insensitive);
    /// a key present without a value counts as true.
    pub fn flag(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.0.get(key).map(|v| v.to_ascii_lowercase()) {
            None => Ok(None),
            Some(v) if v.is_empty() || v == "true" || v == "1" || v == "yes" => Ok(Some(true)),
            Some(v) if v == "false" || v == "0" || v == "no" => Ok(Some(false)),
            Some(v) => Err(ApiError::BadRequest(format!(
                "Invalid value {v:?} for query parameter {key:?}: expected true or false."
            ))),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let map = match parts.uri.query() {
            None => HashMap::new(),
            Some(q) => axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
                .map(|axum::extract::Query(v)| v.into_iter().collect())
                .unwrap_or_else(|_| {
                    // Fall back to splitting by hand; keys without '=' have empty values.
                    q.split('&')
                        .filter(|s| !s.is_empty())
                        .map(|kv| match kv.split_once('=') {
                            Some((k, v)) => (k.to_string(), v.to_string()),
                            None => (kv.to_string(), String::new()),
                        })
                        .collect()
                }),
        };
        Ok(QueryParams(map))
    }
}

/// The authenticated caller: the record of the token in `X-Auth-Token`.
/// Missing, unknown, expired or revoked tokens → 401. An in-memory lookup.
pub struct Caller(pub Arc<LiveToken>);

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let token = parts
            .headers
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ApiError::auth_required)?;
        state
            .identity
            .validate_token(token)
            .map(Caller)
            .ok_or_else(ApiError::auth_required)
    }
}

/// `scheme://host[:port]` as the client reached us: the `Host` header (and
/// `X-Forwarded-Proto`), else the configured public URL.
pub struct BaseUrl(pub String);

pub fn base_url_from(headers: &HeaderMap, fallback: &str) -> String {
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(axum::http::header::HOST))
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()));
    match host {
        Some(host) => {
            let proto = headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .filter(|p| *p == "http" || *p == "https")
                .unwrap_or("http");
            format!("{proto}://{host}")
        }
        None => fallback.to_string(),
    }
}

impl<S> FromRequestParts<S> for BaseUrl
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        Ok(BaseUrl(base_url_from(
            &parts.headers,
            state.catalog.base_url(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn base_url_prefers_host_and_forwarded_proto() {
        let mut h = HeaderMap::new();
        assert_eq!(base_url_from(&h, "http://fallback"), "http://fallback");
        h.insert("host", HeaderValue::from_static("example:5000"));
        assert_eq!(base_url_from(&h, "http://fallback"), "http://example:5000");
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(base_url_from(&h, "http://fallback"), "https://example:5000");
        h.insert("x-forwarded-proto", HeaderValue::from_static("gopher"));
        assert_eq!(base_url_from(&h, "http://fallback"), "http://example:5000");
    }

    #[test]
    fn flags_parse_like_keystone() {
        let q = QueryParams(
            [("a", "True"), ("b", "0"), ("c", ""), ("d", "maybe")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        assert_eq!(q.flag("a").unwrap(), Some(true));
        assert_eq!(q.flag("b").unwrap(), Some(false));
        assert_eq!(q.flag("c").unwrap(), Some(true));
        assert_eq!(q.flag("zz").unwrap(), None);
        assert!(q.flag("d").is_err());
    }
}
