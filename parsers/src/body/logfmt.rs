//! logfmt bodies: `level=info msg="listening on :8080" port=8080 tls`, as
//! written by go-kit/log, logrus' text formatter, Heroku and Grafana's stack.
//!
//! Values are kept as strings (logfmt has no types); a bare key is `true`.
//! Quoted values understand the escapes Go's `strconv.Quote` writes. Duplicate
//! keys: the last wins.
//!
//! Hand-written on purpose (there is no standard; the variants differ in
//! quoting). It must not convert values to numbers or guess at garbage: the
//! strict parser errs, the sniffing one says no.

use serde_json::{Map, Value};

use crate::ParseError;
use crate::body::{ParsedBody, from_fields};
use crate::util::preview_str;

const FORMAT: &str = "logfmt";

/// What the scanner counted, before it is judged.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counts {
    /// Pairs written as `key=value`.
    pub pairs: usize,
    /// Bare keys (words without `=`).
    pub bare: usize,
    /// A well-known key (level, msg, time, ...) appeared.
    pub known: bool,
}

impl Counts {
    /// Whether `auto` takes the line for logfmt: at least two `key=value`
    /// pairs, at most one bare word for every two pairs, and either a
    /// well-known key or at least three pairs.
    pub(crate) fn sniffed_as_logfmt(&self) -> bool {
        self.pairs >= 2 && self.bare * 2 <= self.pairs && (self.pairs >= 3 || self.known)
    }
}

/// Keys whose presence makes two pairs enough for `auto`.
const KNOWN: [&str; 8] = [
    "level", "lvl", "msg", "message", "time", "ts", "severity", "err",
];

/// Collects the pairs into a map; duplicate keys: the last wins.
fn collect(text: &str) -> Result<(Map<String, Value>, Counts), ParseError> {
    let mut fields = Map::new();
    let mut value = String::new();
    let counts = scan(text, &mut value, &mut |k, v| {
        let v = v.map_or(Value::Bool(true), |s| Value::String(s.to_owned()));
        fields.insert(k.to_owned(), v);
    })?;
    Ok((fields, counts))
}

/// Parses a logfmt body. Errors on unterminated quotes, empty keys and quotes
/// where a key is expected.
pub fn parse_logfmt(text: &str) -> Result<ParsedBody, ParseError> {
    let (fields, counts) = collect(text)?;
    if counts.pairs == 0 {
        return Err(ParseError::malformed(
            FORMAT,
            format!(
                "expected at least one key=value pair, found {}",
                preview_str(text)
            ),
        ));
    }
    Ok(from_fields(fields, text))
}

/// Parses `text` as logfmt only when it clearly is (see
/// [`Counts::sniffed_as_logfmt`]).
pub(crate) fn parse_logfmt_sniffed(text: &str) -> Option<ParsedBody> {
    // Two pairs need two `=`: most unstructured lines have none, and counting
    // them costs far less than scanning.
    memchr::memchr_iter(b'=', text.as_bytes()).nth(1)?;
    let (fields, counts) = collect(text).ok()?;
    counts
        .sniffed_as_logfmt()
        .then(|| from_fields(fields, text))
}

fn is_key_char(c: char) -> bool {
    !c.is_whitespace() && !c.is_control() && c != '=' && c != '"'
}

/// Scans `text`, handing each pair to `on_pair` in order (`None` for a bare
/// key, which means `true`). `value` is scratch for unescaped quoted values.
pub(crate) fn scan(
    text: &str,
    value: &mut String,
    on_pair: &mut dyn FnMut(&str, Option<&str>),
) -> Result<Counts, ParseError> {
    let mut out = Counts::default();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        let Some(first) = rest.chars().next() else {
            return Ok(out);
        };
        if !is_key_char(first) {
            return Err(ParseError::malformed(
                FORMAT,
                format!("expected a key, found {}", preview_str(rest)),
            ));
        }
        let key_end = rest.find(|c| !is_key_char(c)).unwrap_or(rest.len());
        let (key, after) = rest.split_at(key_end);
        out.known |= KNOWN.contains(&key);
        match after.strip_prefix('=') {
            None => {
                if after.starts_with('"') {
                    return Err(ParseError::malformed(
                        FORMAT,
                        format!(
                            "expected `=` or a space after key {}, found a quote",
                            preview_str(key)
                        ),
                    ));
                }
                out.bare += 1;
                on_pair(key, None);
                rest = after;
            }
            Some(value_text) => {
                let (v, after) = if let Some(quoted) = value_text.strip_prefix('"') {
                    let after = unquote(quoted, value).ok_or_else(|| {
                        ParseError::malformed(
                            FORMAT,
                            format!(
                                "expected a closing quote for key {}, found end of line",
                                preview_str(key)
                            ),
                        )
                    })?;
                    (value.as_str(), after)
                } else {
                    let end = value_text
                        .find(char::is_whitespace)
                        .unwrap_or(value_text.len());
                    let (v, a) = value_text.split_at(end);
                    if v.contains('"') {
                        return Err(ParseError::malformed(
                            FORMAT,
                            format!(
                                "expected an unquoted value or a quoted one for key {}, found {}",
                                preview_str(key),
                                preview_str(v)
                            ),
                        ));
                    }
                    (v, a)
                };
                if !after.is_empty() && !after.starts_with(char::is_whitespace) {
                    return Err(ParseError::malformed(
                        FORMAT,
                        format!(
                            "expected a space after the value of key {}, found {}",
                            preview_str(key),
                            preview_str(after)
                        ),
                    ));
                }
                out.pairs += 1;
                on_pair(key, Some(v));
                rest = after;
            }
        }
    }
}

/// Reads a quoted value (the opening quote already consumed) into `value`;
/// returns the text after the closing quote.
fn unquote<'t>(text: &'t str, value: &mut String) -> Option<&'t str> {
    value.clear();
    let mut rest = text;
    loop {
        // Copy the plain run up to the next quote or backslash in one go.
        let stop = rest.find(['"', '\\'])?;
        value.push_str(rest.get(..stop)?);
        let mut chars = rest.get(stop..)?.chars();
        if chars.next()? == '"' {
            return rest.get(stop + 1..);
        }
        let e = chars.next()?;
        match e {
            'n' => value.push('\n'),
            't' => value.push('\t'),
            'r' => value.push('\r'),
            '"' => value.push('"'),
            '\\' => value.push('\\'),
            '/' => value.push('/'),
            'a' => value.push('\u{7}'),
            'b' => value.push('\u{8}'),
            'f' => value.push('\u{c}'),
            'v' => value.push('\u{b}'),
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                let c = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                value.push(c.unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            // Unknown escapes are kept as written.
            other => {
                value.push('\\');
                value.push(other);
            }
        }
        rest = chars.as_str();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Severity;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn go_kit_line() {
        let b = parse_logfmt(
            r#"ts=2024-01-15T10:20:30.123Z caller=main.go:42 level=warn msg="slow query \"users\"" duration=1.52s cached"#,
        )
        .unwrap();
        assert_eq!(b.message, "slow query \"users\"");
        assert_eq!(b.severity, Some(Severity::Warn));
        assert_eq!(b.timestamp_ns, Some(1_705_314_030_123_000_000));
        assert_eq!(b.fields.get("duration"), Some(&json!("1.52s")));
        assert_eq!(b.fields.get("cached"), Some(&json!(true)));
        assert_eq!(b.fields.get("caller"), Some(&json!("main.go:42")));
    }

    #[test]
    fn logrus_text_formatter_line() {
        let b = parse_logfmt(r#"time="2024-01-15T10:20:30+08:00" level=error msg="db down" err="dial tcp 10.0.0.5:5432: connect: connection refused""#).unwrap();
        assert_eq!(b.severity, Some(Severity::Error));
        assert_eq!(b.timestamp_ns, Some(1_705_285_230_000_000_000));
        assert_eq!(
            b.fields.get("err"),
            Some(&json!(
                "dial tcp 10.0.0.5:5432: connect: connection refused"
            ))
        );
    }

    #[test]
    fn empty_values_escapes_and_duplicates() {
        let b = parse_logfmt("a= b=\"x\\ty\\u00e9\\q\" a=2 msg=hi").unwrap();
        assert_eq!(b.fields.get("a"), Some(&json!("2")));
        assert_eq!(b.fields.get("b"), Some(&json!("x\tyé\\q")));
        assert_eq!(b.message, "hi");
    }

    #[test]
    fn garbage_is_an_error_in_strict_mode() {
        let cases = [
            ("", "expected at least one key=value pair"),
            ("   ", "expected at least one key=value pair"),
            ("just words", "expected at least one key=value pair"),
            ("=value", "expected a key, found \"=value\""),
            ("a=\"unterminated", "expected a closing quote for key \"a\""),
            ("a=\"x\"y", "expected a space after the value of key \"a\""),
            ("a=b\"c", "expected an unquoted value or a quoted one"),
            ("key\"x\"=1", "expected `=` or a space after key \"key\""),
            ("a=1 \u{0}b=2", "expected a key"),
        ];
        for (text, want) in cases {
            let err = parse_logfmt(text).unwrap_err().to_string();
            assert!(err.starts_with("logfmt: "), "{err}");
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn sniffing_wants_clear_logfmt() {
        assert!(parse_logfmt_sniffed("level=info msg=ok").is_some());
        assert!(parse_logfmt_sniffed("a=1 b=2 c=3").is_some());
        assert!(parse_logfmt_sniffed("a=1 b=2").is_none());
        assert!(parse_logfmt_sniffed("level=info").is_none());
        assert!(parse_logfmt_sniffed("the result is x=1 y=2 z=3").is_none());
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,200}|[a-z=\" \\\\]{0,60}") {
            let _ = parse_logfmt(&text);
            let _ = parse_logfmt_sniffed(&text);
        }

        #[test]
        fn quoted_values_round_trip(key in "[a-z_]{1,10}", value in "\\PC{0,40}") {
            let line = format!("{key}={}", serde_json::to_string(&value).unwrap());
            let b = parse_logfmt(&line).unwrap();
            if ["msg", "message", "log"].contains(&key.as_str()) {
                prop_assert_eq!(b.message, value);
            } else {
                prop_assert_eq!(b.fields.get(&key), Some(&Value::String(value)));
            }
        }
    }
}
