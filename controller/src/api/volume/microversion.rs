//! Volume microversions: `OpenStack-API-Version: volume 3.x` (no header → 3.0,
//! `latest` → the maximum, out of range or malformed → 406/400). Replies carry
//! the version served and `Vary`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};

use super::CinderError;
use crate::volume::VolError;

/// A `3.x` version, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u16, pub u16);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

pub const MIN: Version = Version(3, 0);
/// The newest version whose response shapes kiln serves exactly.
pub const MAX: Version = Version(3, 71);

/// Named boundaries the views test.
pub const SHARED_TARGETS: Version = Version(3, 48);
pub const VOLUME_TYPE_ID: Version = Version(3, 63);
pub const ENCRYPTION_KEY_ID: Version = Version(3, 64);
pub const CONSUMES_QUOTA: Version = Version(3, 65);
pub const SNAPSHOT_USER_ID: Version = Version(3, 41);
pub const GROUP_ID: Version = Version(3, 13);

/// Parses the header value for the `volume` service.
pub fn negotiate(header: Option<&str>) -> Result<Version, VolError> {
    let Some(h) = header else { return Ok(MIN) };
    let mut found = None;
    for part in h.split(',') {
        let mut it = part.split_whitespace();
        if let (Some(service), Some(v)) = (it.next(), it.next()) {
            if service.eq_ignore_ascii_case("volume") {
                found = Some(v.to_string());
            }
        }
    }
    let Some(v) = found else { return Ok(MIN) };
    if v.eq_ignore_ascii_case("latest") {
        return Ok(MAX);
    }
    let parsed = v
        .split_once('.')
        .and_then(|(a, b)| Some(Version(a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| {
            VolError::BadRequest(format!(
                "API Version String {v} is of invalid format. Must be of format MajorNum.MinorNum."
            ))
        })?;
    if parsed < MIN || parsed > MAX {
        return Err(VolError::NotAcceptable(format!(
            "Version {v} is not supported by the API. Minimum is {MIN} and maximum is {MAX}."
        )));
    }
    Ok(parsed)
}

/// The negotiated version of a request.
#[derive(Debug, Clone, Copy)]
pub struct Microversion(pub Version);

impl<S: Send + Sync> FromRequestParts<S> for Microversion {
    type Rejection = CinderError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let h = parts
            .headers
            .get("openstack-api-version")
            .and_then(|v| v.to_str().ok());
        Ok(Microversion(negotiate(h)?))
    }
}

/// The response headers for version `v`.
pub fn headers(v: Version) -> [(HeaderName, HeaderValue); 2] {
    [
        (
            HeaderName::from_static("openstack-api-version"),
            HeaderValue::from_str(&format!("volume {v}"))
                .unwrap_or(HeaderValue::from_static("volume 3.0")),
        ),
        (
            HeaderName::from_static("vary"),
            HeaderValue::from_static("OpenStack-API-Version"),
        ),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn negotiates_like_cinder() {
        assert_eq!(negotiate(None).unwrap(), MIN);
        assert_eq!(negotiate(Some("volume 3.5")).unwrap(), Version(3, 5));
        assert_eq!(negotiate(Some("compute 2.1, volume latest")).unwrap(), MAX);
        assert_eq!(negotiate(Some("compute 2.90")).unwrap(), MIN);
        assert!(matches!(
            negotiate(Some("volume 3.999")),
            Err(VolError::NotAcceptable(_))
        ));
        assert!(matches!(
            negotiate(Some("volume 2.0")),
            Err(VolError::NotAcceptable(_))
        ));
        assert!(matches!(
            negotiate(Some("volume x")),
            Err(VolError::BadRequest(_))
        ));
        assert!(Version(3, 10) > Version(3, 9));
    }
}
