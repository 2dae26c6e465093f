//! Log bodies: what is inside a message once the container envelope is off —
//! JSON, logfmt, syslog (RFC 3164 and 5424), nginx/apache access logs and the
//! apache error log — turned into a message, fields, a severity and a time.
//!
//! Hand-written on purpose (only JSON uses `serde_json`): these parsers run on
//! every line, must never panic on hostile input and must say precisely why a
//! line is not in the configured format. Strict formats return an error for
//! input in another shape (the caller keeps the raw line and sets a
//! `parse_error` attribute); [`BodyFormat::Auto`] never fails. This module must
//! not know about containers, files or enrichment.

mod json;
mod logfmt;
mod plain;
mod stream;
mod syslog;
mod web;

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::{ParseError, Severity};

pub use json::parse_json;
pub use logfmt::parse_logfmt;
pub use stream::{FieldSink, Lifted, Scalar, StreamScratch, Streamed, feed, parse_body_streaming};
pub use syslog::{parse_syslog, parse_syslog_3164, parse_syslog_5424};
pub use web::{parse_access_log, parse_apache_error};

/// How the body of a log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyFormat {
    /// Sniff the format of each line; never fails (falls back to raw).
    Auto,
    /// No structure: the message is the text.
    Raw,
    /// One JSON object per line.
    Json,
    /// `key=value key2="quoted value"` pairs.
    Logfmt,
    /// The nginx/apache combined or common access log.
    Nginx,
    /// The apache error log (`[date] [module:level] [pid N] message`).
    ApacheError,
    /// Syslog, RFC 3164 or RFC 5424, sniffed per line.
    Syslog,
    /// Syslog RFC 3164 (BSD): `<PRI>Mmm dd hh:mm:ss host tag[pid]: msg`.
    Syslog3164,
    /// Syslog RFC 5424: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG`.
    Syslog5424,
}

impl BodyFormat {
    /// Every format, in documentation order.
    pub const ALL: &'static [BodyFormat] = &[
        BodyFormat::Auto,
        BodyFormat::Raw,
        BodyFormat::Json,
        BodyFormat::Logfmt,
        BodyFormat::Nginx,
        BodyFormat::ApacheError,
        BodyFormat::Syslog,
        BodyFormat::Syslog3164,
        BodyFormat::Syslog5424,
    ];

    /// The configuration name (`auto`, `raw`, `json`, `logfmt`, `nginx`,
    /// `apache_error`, `syslog`, `syslog_rfc3164`, `syslog_rfc5424`).
    pub fn as_str(self) -> &'static str {
        match self {
            BodyFormat::Auto => "auto",
            BodyFormat::Raw => "raw",
            BodyFormat::Json => "json",
            BodyFormat::Logfmt => "logfmt",
            BodyFormat::Nginx => "nginx",
            BodyFormat::ApacheError => "apache_error",
            BodyFormat::Syslog => "syslog",
            BodyFormat::Syslog3164 => "syslog_rfc3164",
            BodyFormat::Syslog5424 => "syslog_rfc5424",
        }
    }
}

impl fmt::Display for BodyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BodyFormat {
    type Err = ParseError;

    /// Reads a configuration name; `none` is an alias of `raw`, `apache` and
    /// `combined` of `nginx`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => return Ok(BodyFormat::Raw),
            "apache" | "combined" => return Ok(BodyFormat::Nginx),
            _ => {}
        }
        BodyFormat::ALL
            .iter()
            .copied()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = BodyFormat::ALL.iter().map(|f| f.as_str()).collect();
                ParseError::malformed(
                    "body_format",
                    format!(
                        "expected one of {}, found {}",
                        names.join(", "),
                        crate::util::preview_str(s)
                    ),
                )
            })
    }
}

/// A parsed log body.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedBody {
    /// The human message: `msg`/`message`/`log`/`MESSAGE` of JSON and logfmt
    /// (removed from `fields`), the MSG part of syslog, the whole line for
    /// access logs, the text for raw lines.
    pub message: String,
    /// Structured fields; nested JSON stays nested.
    pub fields: Map<String, Value>,
    /// Severity from a level field, the syslog PRI, the HTTP status (5xx error,
    /// 4xx warn) or the apache error level.
    pub severity: Option<Severity>,
    /// Event time from a time field or the format's timestamp, in nanoseconds
    /// since the Unix epoch.
    pub timestamp_ns: Option<i64>,
}

impl ParsedBody {
    /// A body with no structure.
    pub fn raw(text: &str) -> Self {
        ParsedBody {
            message: text.to_string(),
            ..ParsedBody::default()
        }
    }
}

/// Parses `text` (one message, without line terminator) in `format`.
///
/// Strict formats return an error for input that is not in that format;
/// [`BodyFormat::Auto`] and [`BodyFormat::Raw`] never fail.
///
/// ```
/// use mecha_parsers::Severity;
/// use mecha_parsers::body::{parse_body, BodyFormat};
///
/// let body = parse_body(BodyFormat::Auto, r#"level=error msg="db down" retry=3"#)?;
/// assert_eq!(body.message, "db down");
/// assert_eq!(body.severity, Some(Severity::Error));
/// assert_eq!(body.fields["retry"], "3");
/// # Ok::<(), mecha_parsers::ParseError>(())
/// ```
pub fn parse_body(format: BodyFormat, text: &str) -> Result<ParsedBody, ParseError> {
    match format {
        BodyFormat::Auto => Ok(parse_auto(text)),
        BodyFormat::Raw => Ok(ParsedBody::raw(text)),
        BodyFormat::Json => parse_json(text),
        BodyFormat::Logfmt => parse_logfmt(text),
        BodyFormat::Nginx => parse_access_log(text),
        BodyFormat::ApacheError => parse_apache_error(text),
        BodyFormat::Syslog => parse_syslog(text),
        BodyFormat::Syslog3164 => parse_syslog_3164(text),
        BodyFormat::Syslog5424 => parse_syslog_5424(text),
    }
}

/// Sniffs the shape of one line; falls back to raw on anything doubtful.
fn parse_auto(text: &str) -> ParsedBody {
    let trimmed = text.trim_start();
    let bytes = trimmed.as_bytes();
    let attempt = match bytes.first() {
        Some(b'{') => parse_json(text).ok(),
        Some(b'<') if bytes.get(1).is_some_and(u8::is_ascii_digit) => parse_syslog(text).ok(),
        Some(b'[') => parse_apache_error(text).ok(),
        Some(c) if c.is_ascii_alphanumeric() || *c == b':' => {
            // An access log starts with an address followed by ` - `.
            let access = if text.contains(" [") && text.contains("] \"") {
                parse_access_log(text).ok()
            } else {
                None
            };
            access.or_else(|| logfmt::parse_logfmt_sniffed(text))
        }
        _ => None,
    };
    attempt.unwrap_or_else(|| {
        // No structure: still read the leading time and level most frameworks print.
        let (timestamp_ns, severity) = plain::sniff(text);
        ParsedBody {
            timestamp_ns,
            severity,
            ..ParsedBody::raw(text)
        }
    })
}

/// Field names read as the message, in order of preference.
const MESSAGE_KEYS: [&str; 4] = ["msg", "message", "log", "MESSAGE"];
/// Field names read as the level.
const LEVEL_KEYS: [&str; 6] = [
    "level",
    "severity",
    "lvl",
    "loglevel",
    "log.level",
    "levelname",
];
/// Field names read as the event time.
const TIME_KEYS: [&str; 4] = ["time", "timestamp", "ts", "@timestamp"];

/// Builds a body from structured fields (JSON, logfmt): lifts out the message
/// and reads severity and time, by the rules of [`stream::Lifter`].
fn from_fields(mut fields: Map<String, Value>, text: &str) -> ParsedBody {
    let mut lift = stream::Lifter::default();
    let mut message: Option<(usize, &String)> = None;
    for (k, v) in &fields {
        match Scalar::of(v) {
            Some(s) => {
                lift.observe(k, &s);
                if let (Some(rank), Scalar::Str(_)) = (stream::message_rank(k), s)
                    && message.is_none_or(|(r, _)| rank < r)
                {
                    message = Some((rank, k));
                }
            }
            None => {
                if let (true, Value::Object(inner)) = (k == "log", v)
                    && let Some(level) = inner.get("level").and_then(Scalar::of)
                {
                    lift.observe_nested_log_level(&level);
                }
            }
        }
    }
    let key = message.map(|(_, k)| k.clone());
    let message = match key.and_then(|k| fields.remove(&k)) {
        Some(Value::String(s)) => s,
        _ => text.to_string(),
    };
    ParsedBody {
        message,
        fields,
        severity: lift.severity(),
        timestamp_ns: lift.timestamp(),
    }
}

/// The severity of a syslog PRI value.
pub(crate) fn syslog_severity(pri: u8) -> Severity {
    match pri % 8 {
        0..=2 => Severity::Fatal,
        3 => Severity::Error,
        4 => Severity::Warn,
        5 | 6 => Severity::Info,
        _ => Severity::Debug,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn format_names_and_aliases() {
        for f in BodyFormat::ALL {
            assert_eq!(f.as_str().parse::<BodyFormat>(), Ok(*f));
            assert_eq!(f.to_string(), f.as_str());
        }
        assert_eq!("none".parse::<BodyFormat>(), Ok(BodyFormat::Raw));
        assert_eq!("apache".parse::<BodyFormat>(), Ok(BodyFormat::Nginx));
        assert_eq!("combined".parse::<BodyFormat>(), Ok(BodyFormat::Nginx));
        let err = "xml".parse::<BodyFormat>().unwrap_err().to_string();
        assert!(
            err.starts_with("body_format: expected one of auto, raw, json"),
            "{err}"
        );
        assert!(err.ends_with("found \"xml\""), "{err}");
    }

    #[test]
    fn raw_keeps_the_text_and_nothing_else() {
        let b = parse_body(BodyFormat::Raw, "level=error msg=x").unwrap();
        assert_eq!(b, ParsedBody::raw("level=error msg=x"));
    }

    #[test]
    fn auto_sniffs_each_shape() {
        let json = parse_body(
            BodyFormat::Auto,
            r#"  {"level":"warn","msg":"disk 91% full"}"#,
        )
        .unwrap();
        assert_eq!(
            (json.message.as_str(), json.severity),
            ("disk 91% full", Some(Severity::Warn))
        );

        let syslog = parse_body(
            BodyFormat::Auto,
            "<34>Oct 11 22:14:15 mymachine su: 'su root' failed",
        )
        .unwrap();
        assert_eq!(syslog.message, "'su root' failed");

        let access = parse_body(
            BodyFormat::Auto,
            r#"10.1.2.3 - - [15/Jan/2024:10:20:30 +0000] "GET / HTTP/1.1" 503 12 "-" "curl/8.5.0""#,
        )
        .unwrap();
        assert_eq!(access.severity, Some(Severity::Error));

        let apache = parse_body(
            BodyFormat::Auto,
            "[Wed Oct 11 14:32:52 2000] [error] [client 127.0.0.1] denied",
        )
        .unwrap();
        assert_eq!(apache.severity, Some(Severity::Error));

        let logfmt = parse_body(BodyFormat::Auto, r#"level=info msg="started" port=8080"#).unwrap();
        assert_eq!(
            (logfmt.message.as_str(), logfmt.fields.len()),
            ("started", 2)
        );
    }

    #[test]
    fn auto_falls_back_to_raw_for_prose_and_broken_shapes() {
        for text in [
            "",
            "   ",
            "Starting server on port=8080",
            "{\"broken json",
            "<13 not syslog",
            "[not apache] at all",
            "a=1 b=2 free text words here and here",
            "\u{0}\u{1}",
        ] {
            assert_eq!(
                parse_body(BodyFormat::Auto, text).unwrap(),
                ParsedBody::raw(text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn ecs_nested_level_and_pino_numeric_level() {
        let ecs = parse_body(
            BodyFormat::Json,
            r#"{"log":{"level":"error"},"message":"x"}"#,
        )
        .unwrap();
        assert_eq!(ecs.severity, Some(Severity::Error));
        let pino = parse_body(
            BodyFormat::Json,
            r#"{"level":50,"time":1705314030123,"msg":"x"}"#,
        )
        .unwrap();
        assert_eq!(pino.severity, Some(Severity::Error));
        assert_eq!(pino.timestamp_ns, Some(1_705_314_030_123_000_000));
    }

    proptest! {
        #[test]
        fn no_format_panics_on_arbitrary_bytes_made_text(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let text = String::from_utf8_lossy(&bytes);
            for f in BodyFormat::ALL {
                let _ = parse_body(*f, &text);
            }
            prop_assert!(parse_body(BodyFormat::Auto, &text).is_ok());
        }

        #[test]
        fn no_format_panics_on_arbitrary_text(text in "\\PC{0,120}|[\\[\\]<>{}\"=\\\\ a-z0-9:.-]{0,120}") {
            for f in BodyFormat::ALL {
                let _ = parse_body(*f, &text);
            }
            prop_assert!(parse_body(BodyFormat::Auto, &text).is_ok());
        }
    }
}
