//! Parameters of the search API: time bounds and limits as users write them.
//!
//! Pure functions of the text and "now"; must not search or do I/O.

use chrono::DateTime;

use crate::Error;

/// Hits returned when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit` honoured; larger values are lowered to it.
pub const MAX_LIMIT: usize = 10_000;
/// Default look-back when `from` is not given: 24 hours.
pub const DEFAULT_LOOKBACK_NS: i64 = 24 * 3_600 * 1_000_000_000;

const TIME_EXPECTED: &str =
    "an RFC 3339 time, `now`, `now-<n><s|m|h|d|w>`, `<n><s|m|h|d|w>` (ago) or epoch milliseconds";

/// Parses a time bound into nanoseconds since the Unix epoch.
///
/// Accepts RFC 3339 (`2026-11-23T10:00:00Z`), `now`, relative times (`now-1h`,
/// or just `1h` meaning one hour ago; units s, m, h, d, w) and epoch milliseconds.
pub fn parse_time(name: &'static str, text: &str, now_ns: i64) -> Result<i64, Error> {
    let bad = || Error::Param {
        name,
        expected: TIME_EXPECTED,
        found: text.to_string(),
    };
    let t = text.trim();
    if t == "now" {
        return Ok(now_ns);
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let millis: i64 = t.parse().map_err(|_| bad())?;
        return millis.checked_mul(1_000_000).ok_or_else(bad);
    }
    let relative = t.strip_prefix("now-").unwrap_or(t);
    if let Some(ago) = parse_duration_ns(relative) {
        return Ok(now_ns.saturating_sub(ago));
    }
    DateTime::parse_from_rfc3339(t)
        .ok()
        .and_then(|dt| dt.timestamp_nanos_opt())
        .ok_or_else(bad)
}

/// `15m`, `1h`, `7d` as nanoseconds.
fn parse_duration_ns(text: &str) -> Option<i64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let n: i64 = digits.parse().ok()?;
    let secs: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(secs)?.checked_mul(1_000_000_000)
}

/// Parses `limit`: a non-negative integer, lowered to [`MAX_LIMIT`].
pub fn parse_limit(text: Option<&str>) -> Result<usize, Error> {
    parse_limit_within(text, DEFAULT_LIMIT, MAX_LIMIT)
}

/// Parses `limit`: a non-negative integer (`default` when absent), lowered
/// to `max`.
pub fn parse_limit_within(text: Option<&str>, default: usize, max: usize) -> Result<usize, Error> {
    match text.map(str::trim) {
        None | Some("") => Ok(default),
        Some(t) => t
            .parse::<usize>()
            .map(|n| n.min(max))
            .map_err(|_| Error::Param {
                name: "limit",
                expected: "a non-negative integer",
                found: t.to_string(),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000_000_000;
    const HOUR: i64 = 3_600_000_000_000;

    fn time(text: &str) -> Result<i64, Error> {
        parse_time("from", text, NOW)
    }

    #[test]
    fn relative_times_count_back_from_now() {
        assert_eq!(time("now").ok(), Some(NOW));
        assert_eq!(time("now-1h").ok(), Some(NOW - HOUR));
        assert_eq!(time("1h").ok(), Some(NOW - HOUR));
        assert_eq!(time("2d").ok(), Some(NOW - 48 * HOUR));
        assert_eq!(time("now-30s").ok(), Some(NOW - 30_000_000_000));
    }

    #[test]
    fn absolute_times_accept_rfc3339_and_epoch_millis() {
        assert_eq!(time("2023-11-14T22:13:20Z").ok(), Some(NOW));
        assert_eq!(time("2023-11-15T00:13:20+02:00").ok(), Some(NOW));
        assert_eq!(time("1700000000000").ok(), Some(NOW));
    }

    #[test]
    fn nonsense_is_rejected_with_the_parameter_named() {
        for bad in [
            "yesterday",
            "now-1y",
            "",
            "1h30m",
            "-5",
            "99999999999999999999",
        ] {
            let err = time(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                err.starts_with("parameter from: expected"),
                "{bad:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn limit_defaults_and_is_capped() {
        assert_eq!(parse_limit(None).ok(), Some(DEFAULT_LIMIT));
        assert_eq!(parse_limit(Some("5")).ok(), Some(5));
        assert_eq!(parse_limit(Some("1000000")).ok(), Some(MAX_LIMIT));
        assert!(parse_limit(Some("ten")).is_err());
    }
}
