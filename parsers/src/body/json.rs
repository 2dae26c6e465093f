//! JSON log bodies: one object per line, as written by zap, logrus, pino,
//! bunyan, structlog, logback's JSON encoders and ECS loggers.
//!
//! Parsing is `serde_json`'s (nested objects stay nested; duplicate keys: the
//! last wins). Nesting depth is bounded before parsing so hostile input gives
//! an error, not a deep recursion. Only a top-level object is a JSON body.
//!
//! The only body parser that is not hand-written: JSON has a fast, fuzzed,
//! standard parser and we use it. This module must not guess at broken JSON;
//! `auto` falls back to raw instead.

use serde_json::{Map, Value};

use crate::ParseError;
use crate::body::{ParsedBody, from_fields};
use crate::util::preview_str;

const FORMAT: &str = "json";

/// Deepest nesting of objects and arrays accepted.
pub const MAX_DEPTH: usize = 64;

/// Parses a JSON object body.
pub fn parse_json(text: &str) -> Result<ParsedBody, ParseError> {
    let trimmed = text.trim();
    if !trimmed.starts_with('{') {
        return Err(ParseError::malformed(
            FORMAT,
            format!("expected a JSON object, found {}", preview_str(trimmed)),
        ));
    }
    check_depth(trimmed)?;
    let fields: Map<String, Value> = serde_json::from_str(trimmed).map_err(|e| {
        ParseError::malformed(
            FORMAT,
            format!(
                "expected a JSON object, found {} ({e})",
                preview_str(trimmed)
            ),
        )
    })?;
    Ok(from_fields(fields, text))
}

/// Rejects input nested deeper than [`MAX_DEPTH`], counting brackets outside
/// strings. One pass over the bytes; cheaper than a failed parse.
fn check_depth(text: &str) -> Result<(), ParseError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &c in text.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(ParseError::malformed(
                        FORMAT,
                        format!("expected at most {MAX_DEPTH} levels of nesting, found more"),
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Severity;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn zap_production_line() {
        let b = parse_json(
            r#"{"level":"error","ts":1705314030.1234,"caller":"server/handler.go:88","msg":"request failed","method":"GET","status":502,"error":"upstream timeout"}"#,
        )
        .unwrap();
        assert_eq!(b.message, "request failed");
        assert_eq!(b.severity, Some(Severity::Error));
        let ts = b.timestamp_ns.unwrap();
        assert!((ts - 1_705_314_030_123_400_000).abs() < 1_000, "{ts}");
        assert_eq!(b.fields.get("status"), Some(&json!(502)));
        assert!(!b.fields.contains_key("msg"));
        assert!(b.fields.contains_key("level"));
    }

    #[test]
    fn logstash_style_line_with_nested_object_and_iso_time() {
        let b = parse_json(
            r#"{"@timestamp":"2024-01-15T10:20:30.123+00:00","message":"user logged in","severity":"INFO","user":{"id":42,"roles":["admin"]}}"#,
        )
        .unwrap();
        assert_eq!(b.message, "user logged in");
        assert_eq!(b.severity, Some(Severity::Info));
        assert_eq!(b.timestamp_ns, Some(1_705_314_030_123_000_000));
        assert_eq!(
            b.fields.get("user"),
            Some(&json!({"id":42,"roles":["admin"]}))
        );
    }

    #[test]
    fn without_message_key_the_whole_text_is_the_message() {
        let text = r#"{"event":"cache_miss","key":"user:42"}"#;
        let b = parse_json(text).unwrap();
        assert_eq!(b.message, text);
        assert_eq!(b.fields.len(), 2);
    }

    #[test]
    fn non_string_message_is_left_in_fields() {
        let b = parse_json(r#"{"message":{"a":1},"log":"real"}"#).unwrap();
        assert_eq!(b.message, "real");
        assert!(b.fields.contains_key("message"));
    }

    #[test]
    fn duplicate_keys_last_wins() {
        let b = parse_json(r#"{"msg":"a","msg":"b"}"#).unwrap();
        assert_eq!(b.message, "b");
    }

    #[test]
    fn non_objects_are_errors() {
        for text in [
            "",
            "   ",
            "[1,2]",
            "\"str\"",
            "42",
            "null",
            "{",
            "{\"a\":}",
            "{\"a\":1} trailing",
            "{\"a\":\"\u{0}\"}",
        ] {
            let err = parse_json(text).unwrap_err().to_string();
            assert!(
                err.starts_with("json: expected a JSON object, found"),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(1_000_000),
            "]".repeat(1_000_000)
        );
        let err = parse_json(&deep).unwrap_err().to_string();
        assert_eq!(
            err,
            "json: expected at most 64 levels of nesting, found more"
        );
        // Brackets inside strings do not count.
        let ok = format!("{{\"a\":\"{}\"}}", "[".repeat(1000));
        assert!(parse_json(&ok).is_ok());
    }

    #[test]
    fn huge_numbers_and_bad_times_do_not_fail_the_line() {
        let b = parse_json(r#"{"ts":1e400,"n":123456789012345678901234567890,"msg":"x"}"#);
        // serde_json rejects 1e400 as out of range: that is a parse error, not a panic.
        assert!(b.is_err());
        let b = parse_json(
            r#"{"time":"not a time","ts":-5,"timestamp":99999999999999999999.0,"msg":"x"}"#,
        )
        .unwrap();
        assert_eq!(b.timestamp_ns, None);
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = parse_json(&text);
        }

        #[test]
        fn any_flat_object_parses(map in proptest::collection::btree_map("[a-z]{1,8}", "\\PC{0,20}", 0..8)) {
            let text = serde_json::to_string(&map).unwrap();
            let b = parse_json(&text).unwrap();
            prop_assert!(b.fields.len() <= map.len());
        }
    }
}
