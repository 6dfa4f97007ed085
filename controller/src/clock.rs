//! Time as the APIs need it: microseconds since the epoch, and Keystone's timestamp format.

use time::macros::format_description;
use time::OffsetDateTime;

pub const MICROS_PER_SEC: i64 = 1_000_000;
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;

/// Now, in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1000).unwrap_or(i64::MAX)
}

/// RFC 3339 with microseconds and `Z`, as Keystone writes `expires_at`/`issued_at`.
pub fn rfc3339_micros(micros: i64) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| "9999-12-31T23:59:59.999999Z".to_string())
}

/// Parses an RFC 3339 timestamp (clients send `expires_at` for application
/// credentials with or without a zone; no zone means UTC).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    // A zone is `Z`, `+hh:mm` or `-hh:mm` after the date (whose own dashes come first).
    let has_zone =
        s.ends_with('Z') || s.contains('+') || s.get(10..).is_some_and(|time| time.contains('-'));
    let with_zone = if has_zone {
        s.to_string()
    } else {
        format!("{s}Z")
    };
    let t =
        OffsetDateTime::parse(&with_zone, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_keystone() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_micros(1_500_000_000_123_456),
            "2017-07-14T02:40:00.123456Z"
        );
    }

    #[test]
    fn parses_with_and_without_zone() {
        assert_eq!(
            parse_rfc3339("2017-07-14T02:40:00.123456Z"),
            Some(1_500_000_000_123_456)
        );
        assert_eq!(
            parse_rfc3339("2017-07-14T02:40:00"),
            Some(1_500_000_000_000_000)
        );
        assert_eq!(
            parse_rfc3339("2017-07-14T04:40:00+02:00"),
            Some(1_500_000_000_000_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        // Multi-byte input must not panic on a byte slice.
        assert_eq!(parse_rfc3339("ééééééééé-x"), None);
        assert_eq!(parse_rfc3339(""), None);
    }
}
