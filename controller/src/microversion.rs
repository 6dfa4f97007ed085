//! Compute microversions in ONE place: the supported range, parsing both request
//! headers, `latest`, the 400/406 answers, the response headers (both spellings
//! and `Vary`), and the [`Microversion`] extractor handlers take.
//!
//! Raising [`MAX`] commits every compute view to the exact shape of each version
//! up to it: add the new boundary to the views first, then raise it here.

use std::cmp::Ordering;
use std::fmt;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A compute API version `2.N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Microversion {
    pub major: u32,
    pub minor: u32,
}

impl Microversion {
    pub const fn new(major: u32, minor: u32) -> Self {
        Microversion { major, minor }
    }

    /// Whether this request's version is at least `2.minor`.
    pub fn at_least(&self, minor: u32) -> bool {
        *self >= Microversion::new(2, minor)
    }
}

impl PartialOrd for Microversion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Microversion {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor).cmp(&(other.major, other.minor))
    }
}

impl fmt::Display for Microversion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The oldest version served (also what a request without a header gets).
pub const MIN: Microversion = Microversion::new(2, 1);
/// The newest version whose shapes kiln serves exactly (servers: the table in
/// `api/compute/servers/views.rs` and `rules.rs`).
pub const MAX: Microversion = Microversion::new(2, 96);

/// The newest version whose shapes are exact for every resource other than
/// servers (flavors, keypairs, limits, quota sets, availability zones,
/// services, hypervisors, server groups, usage); servers are exact up to it
/// too now, so it is [`MAX`]. Kept for the tests that name it.
pub const EXACT_MAX_WITHOUT_SERVERS: Microversion = MAX;

/// The minor version explicit requests may name; [`MAX`] unless a test binary
/// called [`accept_through`]. `latest` always means [`MAX`].
static ACCEPTED_MINOR: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(MAX.minor);

/// Lets explicit requests name versions up to `mv` without advertising them —
/// for tests of shapes that are exact before [`MAX`] is raised (the schema
/// tests check every resource at [`EXACT_MAX_WITHOUT_SERVERS`]).
pub fn accept_through(mv: Microversion) {
    ACCEPTED_MINOR.fetch_max(mv.minor, std::sync::atomic::Ordering::Relaxed);
}

fn accepted_max() -> Microversion {
    Microversion::new(2, ACCEPTED_MINOR.load(std::sync::atomic::Ordering::Relaxed))
}

pub const HEADER: &str = "openstack-api-version";
pub const LEGACY_HEADER: &str = "x-openstack-nova-api-version";

/// Why a requested version was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// 400: not `X.Y` nor `latest`.
    #[error("API Version String {0} is of invalid format. Must be of format MajorNum.MinorNum.")]
    Malformed(String),
    /// 406: well-formed, outside [MIN, MAX].
    #[error("Version {0} is not supported by the API. Minimum is {MIN} and maximum is {MAX}.")]
    Unsupported(Microversion),
}

impl VersionError {
    pub fn status(&self) -> StatusCode {
        match self {
            VersionError::Malformed(_) => StatusCode::BAD_REQUEST,
            VersionError::Unsupported(_) => StatusCode::NOT_ACCEPTABLE,
        }
    }
}

fn parse_value(v: &str) -> Result<Microversion, VersionError> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("latest") {
        return Ok(MAX);
    }
    let malformed = || VersionError::Malformed(v.to_string());
    let (a, b) = v.split_once('.').ok_or_else(malformed)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(a) || !digits(b) {
        return Err(malformed());
    }
    let mv = Microversion::new(
        a.parse().map_err(|_| malformed())?,
        b.parse().map_err(|_| malformed())?,
    );
    if mv < MIN || mv > accepted_max() {
        return Err(VersionError::Unsupported(mv));
    }
    Ok(mv)
}

/// The version a request asks for: `OpenStack-API-Version: compute X.Y` first (a
/// list may name other services), else `X-OpenStack-Nova-API-Version: X.Y`, else
/// [`MIN`].
pub fn negotiate(headers: &HeaderMap) -> Result<Microversion, VersionError> {
    for value in headers.get_all(HEADER) {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let mut parts = item.split_whitespace();
            if parts
                .next()
                .is_some_and(|s| s.eq_ignore_ascii_case("compute"))
            {
                let rest: Vec<&str> = parts.collect();
                return parse_value(&rest.join(" "));
            }
        }
    }
    if let Some(v) = headers.get(LEGACY_HEADER).and_then(|v| v.to_str().ok()) {
        return parse_value(v);
    }
    Ok(MIN)
}

/// Adds both version headers and `Vary` to a compute response.
pub fn stamp(headers: &mut HeaderMap, mv: Microversion) {
    if let Ok(v) = HeaderValue::from_str(&format!("compute {mv}")) {
        headers.insert(HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&mv.to_string()) {
        headers.insert(LEGACY_HEADER, v);
    }
    headers.insert(
        axum::http::header::VARY,
        HeaderValue::from_static("OpenStack-API-Version, X-OpenStack-Nova-API-Version"),
    );
}

/// Middleware for the versioned compute routes: negotiates, stores the version for
/// the extractor, stamps the response (refusals too).
pub async fn layer(mut req: Request, next: Next) -> Response {
    match negotiate(req.headers()) {
        Ok(mv) => {
            req.extensions_mut().insert(mv);
            let mut resp = next.run(req).await;
            stamp(resp.headers_mut(), mv);
            resp
        }
        Err(e) => {
            let status = e.status();
            let body = json!({"error": {"code": status.as_u16(), "title": status.canonical_reason().unwrap_or("Error"), "message": e.to_string()}});
            let mut resp = (status, axum::Json(body)).into_response();
            stamp(resp.headers_mut(), MIN);
            resp
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Microversion {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Microversion>()
            .copied()
            .unwrap_or(MIN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(&h(&[])), Ok(MIN));
        assert_eq!(negotiate(&h(&[(HEADER, "compute 2.1")])), Ok(MIN));
        assert_eq!(
            negotiate(&h(&[(HEADER, "volume 3.5, compute latest")])),
            Ok(MAX)
        );
        assert_eq!(negotiate(&h(&[(LEGACY_HEADER, "latest")])), Ok(MAX));
        assert_eq!(
            negotiate(&h(&[(HEADER, "compute 2.1000")])),
            Err(VersionError::Unsupported(Microversion::new(2, 1000)))
        );
        assert_eq!(
            negotiate(&h(&[(LEGACY_HEADER, "1.9")])),
            Err(VersionError::Unsupported(Microversion::new(1, 9)))
        );
        assert!(matches!(
            negotiate(&h(&[(HEADER, "compute two")])),
            Err(VersionError::Malformed(_))
        ));
        assert!(matches!(
            negotiate(&h(&[(LEGACY_HEADER, "2.")])),
            Err(VersionError::Malformed(_))
        ));
        // The new header wins over the legacy one.
        assert_eq!(
            negotiate(&h(&[(HEADER, "compute 2.1"), (LEGACY_HEADER, "9.9")])),
            Ok(MIN)
        );
        // A header naming only other services leaves the default.
        assert_eq!(negotiate(&h(&[(HEADER, "volume 3.5")])), Ok(MIN));
    }

    #[test]
    fn ordering_and_boundaries() {
        assert!(Microversion::new(2, 10) > Microversion::new(2, 9));
        assert!(MIN.at_least(1));
        assert!(!MIN.at_least(2));
        let mut m = HeaderMap::new();
        stamp(&mut m, MIN);
        assert_eq!(m[HEADER], "compute 2.1");
        assert_eq!(m[LEGACY_HEADER], "2.1");
        assert!(m["vary"]
            .to_str()
            .unwrap()
            .contains("OpenStack-API-Version"));
    }
}
