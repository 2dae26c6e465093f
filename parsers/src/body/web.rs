//! Web server logs: the nginx/apache access log (combined and common formats)
//! and the apache error log.
//!
//! Access log: `$remote_addr - $remote_user [$time_local] "$request" $status
//! $body_bytes_sent "$http_referer" "$http_user_agent"`; the common format stops
//! after the size and anything after the user agent (request time, upstream
//! fields) is tolerated. Fields: `client_ip`, `user`, `method`, `path`,
//! `protocol`, `status`, `bytes`, `referer`, `user_agent`; the severity comes
//! from the status (5xx error, 4xx warn, else info).
//!
//! Error log (apache 2.4, and 2.2 without module and pid):
//! `[Wed Oct 11 14:32:52.123456 2000] [core:error] [pid 1234:tid 5678]
//! [client 1.2.3.4:5678] AH00124: message`. Fields: `module`, `pid`, `tid`,
//! `client`, `code`. Apache writes local time without zone: read as UTC.
//!
//! Hand-written on purpose, for the default formats only: custom `log_format`
//! / `LogFormat` definitions are not interpreted, and this module must not
//! guess at them.

use serde_json::{Map, Number, Value};

use crate::ParseError;
use crate::Severity;
use crate::body::ParsedBody;
use crate::time::{Civil, month_from_abbrev, parse_clock_exact};
use crate::util::preview_str;

const FORMAT_ACCESS: &str = "nginx";
const FORMAT_ERROR: &str = "apache_error";

fn access_err(what: &str, found: &str) -> ParseError {
    ParseError::malformed(
        FORMAT_ACCESS,
        format!("expected {what}, found {}", preview_str(found)),
    )
}

/// Parses an nginx/apache access log line (combined or common format).
pub fn parse_access_log(text: &str) -> Result<ParsedBody, ParseError> {
    let mut fields = Map::new();
    let (client, rest) = text
        .split_once(' ')
        .ok_or_else(|| access_err("`<client> <ident> <user> [<time>]`", text))?;
    if client.is_empty() || client.contains(['"', '[', ']']) {
        return Err(access_err("a client address", client));
    }
    let (_ident, rest) = rest
        .split_once(' ')
        .ok_or_else(|| access_err("`<ident> <user> [<time>]`", rest))?;
    let (user, rest) = rest
        .split_once(' ')
        .ok_or_else(|| access_err("`<user> [<time>]`", rest))?;
    let rest = rest
        .strip_prefix('[')
        .ok_or_else(|| access_err("`[` before the time", rest))?;
    let (time, rest) = rest
        .split_once(']')
        .ok_or_else(|| access_err("`]` after the time", rest))?;
    let timestamp_ns = access_time(time)
        .ok_or_else(|| access_err("a time like `15/Jan/2024:10:20:30 +0000`", time))?;
    let rest = rest
        .strip_prefix(" \"")
        .ok_or_else(|| access_err("` \"<request>\"`", rest))?;
    let (request, rest) =
        quoted(rest).ok_or_else(|| access_err("a closing quote after the request", rest))?;
    let rest = rest
        .strip_prefix(' ')
        .ok_or_else(|| access_err("a space before the status", rest))?;
    let (status, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let status_n: u16 = status
        .parse()
        .ok()
        .filter(|s| (100..=599).contains(s) && status.len() == 3)
        .ok_or_else(|| access_err("an HTTP status", status))?;
    let (bytes, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let bytes_n: Option<u64> = match bytes {
        "-" => None,
        b => Some(
            b.parse()
                .map_err(|_| access_err("a byte count or `-`", b))?,
        ),
    };

    fields.insert("client_ip".into(), Value::String(client.into()));
    if user != "-" && !user.is_empty() {
        fields.insert("user".into(), Value::String(user.into()));
    }
    let parts: Vec<&str> = request.split(' ').collect();
    match parts.as_slice() {
        [method, path, protocol]
            if !method.is_empty() && method.bytes().all(|c| c.is_ascii_uppercase()) =>
        {
            fields.insert("method".into(), Value::String((*method).into()));
            fields.insert("path".into(), Value::String((*path).into()));
            fields.insert("protocol".into(), Value::String((*protocol).into()));
        }
        // `"-"`, TLS handshakes sent to a plain port (`"\x16\x03\x01..."`), HTTP/0.9.
        _ => {
            fields.insert("request".into(), Value::String(request.clone()));
        }
    }
    fields.insert("status".into(), Value::Number(Number::from(status_n)));
    if let Some(b) = bytes_n {
        fields.insert("bytes".into(), Value::Number(Number::from(b)));
    }
    // Combined format: referer and user agent; anything after them is tolerated.
    if let Some(rest) = rest.strip_prefix('"') {
        let (referer, rest) =
            quoted(rest).ok_or_else(|| access_err("a closing quote after the referer", rest))?;
        if referer != "-" {
            fields.insert("referer".into(), Value::String(referer));
        }
        if let Some(rest) = rest.strip_prefix(" \"") {
            let (agent, _) = quoted(rest)
                .ok_or_else(|| access_err("a closing quote after the user agent", rest))?;
            if agent != "-" {
                fields.insert("user_agent".into(), Value::String(agent));
            }
        }
    }
    let severity = match status_n {
        500.. => Severity::Error,
        400..=499 => Severity::Warn,
        _ => Severity::Info,
    };
    Ok(ParsedBody {
        message: text.to_string(),
        fields,
        severity: Some(severity),
        timestamp_ns: Some(timestamp_ns),
    })
}

/// Reads a quoted field after its opening quote. Apache escapes `"` as `\"`
/// and nginx as `\x22`; `\"` and `\\` are unescaped, other escapes kept.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, text.get(i + 1..)?)),
            '\\' => match chars.peek() {
                Some(&(_, e @ ('"' | '\\'))) => {
                    out.push(e);
                    chars.next();
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    None
}

/// `15/Jan/2024:10:20:30 +0000`.
fn access_time(text: &str) -> Option<i64> {
    let (date, zone) = text.split_once(' ')?;
    let mut it = date.splitn(3, '/');
    let day: u32 = it.next().filter(|d| d.len() <= 2)?.parse().ok()?;
    let month = month_from_abbrev(it.next()?.as_bytes())?;
    let (year, clock) = it.next()?.split_once(':')?;
    if year.len() != 4 {
        return None;
    }
    let year: i64 = year.parse().ok()?;
    let (hour, minute, second, nanos) = parse_clock_exact(clock.as_bytes())?;
    let offset_secs = zone_offset(zone)?;
    Civil {
        year,
        month,
        day,
        hour,
        minute,
        second,
        nanos,
        offset_secs,
    }
    .to_unix_nanos()
}

/// `+0800` or `-0330`: seconds east of UTC.
fn zone_offset(zone: &str) -> Option<i64> {
    let b = zone.as_bytes();
    let (sign, digits) = match b {
        [b'+', d @ ..] => (1, d),
        [b'-', d @ ..] => (-1, d),
        _ => return None,
    };
    if digits.len() != 4 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let h = i64::from(digits.first()? - b'0') * 10 + i64::from(digits.get(1)? - b'0');
    let m = i64::from(digits.get(2)? - b'0') * 10 + i64::from(digits.get(3)? - b'0');
    (m < 60).then_some(sign * (h * 3600 + m * 60))
}

fn error_err(what: &str, found: &str) -> ParseError {
    ParseError::malformed(
        FORMAT_ERROR,
        format!("expected {what}, found {}", preview_str(found)),
    )
}

/// Parses an apache error log line.
pub fn parse_apache_error(text: &str) -> Result<ParsedBody, ParseError> {
    let rest = text
        .strip_prefix('[')
        .ok_or_else(|| error_err("`[<date>]` at the start", text))?;
    let (date, rest) = rest
        .split_once(']')
        .ok_or_else(|| error_err("`]` after the date", rest))?;
    let timestamp_ns =
        ctime(date).ok_or_else(|| error_err("a date like `Wed Oct 11 14:32:52 2000`", date))?;
    let rest = rest
        .strip_prefix(" [")
        .ok_or_else(|| error_err("` [<level>]` after the date", rest))?;
    let (level, mut rest) = rest
        .split_once(']')
        .ok_or_else(|| error_err("`]` after the level", rest))?;
    let (module, level) = match level.split_once(':') {
        Some((m, l)) => (Some(m), l),
        None => (None, level),
    };
    let severity = apache_level(level).ok_or_else(|| error_err("an apache log level", level))?;
    let mut fields = Map::new();
    if let Some(m) = module.filter(|m| !m.is_empty()) {
        fields.insert("module".into(), Value::String(m.into()));
    }
    // Optional `[pid N:tid M]` and `[client addr]` groups, in that order.
    while let Some(group) = rest.strip_prefix(" [") {
        let Some((inner, after)) = group.split_once(']') else {
            break;
        };
        if let Some(ids) = inner.strip_prefix("pid ") {
            let (pid, tid) = match ids.split_once(":tid ") {
                Some((p, t)) => (p, Some(t)),
                None => (ids, None),
            };
            fields.insert("pid".into(), Value::String(pid.into()));
            if let Some(t) = tid {
                fields.insert("tid".into(), Value::String(t.into()));
            }
        } else if let Some(client) = inner.strip_prefix("client ") {
            fields.insert("client".into(), Value::String(client.into()));
        } else {
            break;
        }
        rest = after;
    }
    let message = rest.trim_start();
    if let Some((code, _)) = message.split_once(": ")
        && code.len() == 7
        && code.starts_with("AH")
        && code.bytes().skip(2).all(|c| c.is_ascii_digit())
    {
        fields.insert("code".into(), Value::String(code.into()));
    }
    Ok(ParsedBody {
        message: message.to_string(),
        fields,
        severity: Some(severity),
        timestamp_ns: Some(timestamp_ns),
    })
}

fn apache_level(level: &str) -> Option<Severity> {
    if let Some(n) = level.strip_prefix("trace") {
        return (n.len() == 1 && n.bytes().all(|c| (b'1'..=b'8').contains(&c)))
            .then_some(Severity::Trace);
    }
    match level {
        "emerg" | "alert" | "crit" | "error" | "warn" | "notice" | "info" | "debug" => {
            Severity::parse(level)
        }
        _ => None,
    }
}

/// `Wed Oct 11 14:32:52.123456 2000` (weekday ignored, day maybe space-padded).
fn ctime(text: &str) -> Option<i64> {
    let mut it = text.split(' ').filter(|s| !s.is_empty());
    let _weekday = it.next().filter(|w| w.len() == 3)?;
    let month = month_from_abbrev(it.next()?.as_bytes())?;
    let day: u32 = it.next().filter(|d| d.len() <= 2)?.parse().ok()?;
    let (hour, minute, second, nanos) = parse_clock_exact(it.next()?.as_bytes())?;
    let year = it.next().filter(|y| y.len() == 4)?;
    if it.next().is_some() {
        return None;
    }
    let year: i64 = year.parse().ok()?;
    Civil {
        year,
        month,
        day,
        hour,
        minute,
        second,
        nanos,
        offset_secs: 0,
    }
    .to_unix_nanos()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn nginx_combined_line() {
        let line = r#"203.0.113.7 - alice [15/Jan/2024:10:20:30 +0800] "POST /api/v1/orders?id=42 HTTP/1.1" 201 512 "https://shop.example.com/cart" "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36" 0.023"#;
        let b = parse_access_log(line).unwrap();
        assert_eq!(b.message, line);
        assert_eq!(b.severity, Some(Severity::Info));
        assert_eq!(b.timestamp_ns, Some(1_705_285_230_000_000_000));
        assert_eq!(
            serde_json::Value::Object(b.fields),
            json!({
                "client_ip": "203.0.113.7", "user": "alice", "method": "POST",
                "path": "/api/v1/orders?id=42", "protocol": "HTTP/1.1", "status": 201, "bytes": 512,
                "referer": "https://shop.example.com/cart",
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
            })
        );
    }

    #[test]
    fn common_format_and_status_severity() {
        let b = parse_access_log(
            r#"127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 404 -"#,
        )
        .unwrap();
        assert_eq!(b.severity, Some(Severity::Warn));
        assert_eq!(b.fields.get("status"), Some(&json!(404)));
        assert!(!b.fields.contains_key("bytes"));
        assert!(!b.fields.contains_key("user"));
        assert_eq!(b.timestamp_ns, Some(971_211_336_000_000_000));
    }

    #[test]
    fn odd_requests_and_escaped_quotes() {
        let b = parse_access_log(r#"10.0.0.1 - - [15/Jan/2024:10:20:30 +0000] "\x16\x03\x01\x02\x00\x01" 400 157 "-" "-""#).unwrap();
        assert_eq!(
            b.fields.get("request"),
            Some(&json!(r"\x16\x03\x01\x02\x00\x01"))
        );
        assert!(!b.fields.contains_key("referer"));
        let b = parse_access_log(
            r#"::1 - - [15/Jan/2024:10:20:30 +0000] "GET / HTTP/1.1" 502 0 "-" "say \"hi\"""#,
        )
        .unwrap();
        assert_eq!(b.fields.get("user_agent"), Some(&json!("say \"hi\"")));
        assert_eq!(b.severity, Some(Severity::Error));
    }

    #[test]
    fn malformed_access_lines() {
        let cases = [
            ("", "expected `<client>"),
            ("hello world", "expected `<ident>"),
            ("1.2.3.4 - - 15/Jan", "expected `[` before the time"),
            (
                "1.2.3.4 - - [15/Jan/2024:10:20:30] \"GET / HTTP/1.1\" 200 1",
                "expected a time like",
            ),
            (
                "1.2.3.4 - - [15/Foo/2024:10:20:30 +0000] \"GET / HTTP/1.1\" 200 1",
                "expected a time like",
            ),
            (
                "1.2.3.4 - - [15/Jan/2024:10:20:30 +0000] \"GET / HTTP/1.1",
                "expected a closing quote after the request",
            ),
            (
                "1.2.3.4 - - [15/Jan/2024:10:20:30 +0000] \"GET / HTTP/1.1\" 99999 1",
                "expected an HTTP status",
            ),
            (
                "1.2.3.4 - - [15/Jan/2024:10:20:30 +0000] \"GET / HTTP/1.1\" 200 lots",
                "expected a byte count",
            ),
            (
                "1.2.3.4 - - [15/Jan/2024:10:20:30 +0000] \"GET / HTTP/1.1\" 200 99999999999999999999999",
                "expected a byte count",
            ),
        ];
        for (text, want) in cases {
            let err = parse_access_log(text).unwrap_err().to_string();
            assert!(err.starts_with("nginx: "), "{err}");
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn apache_24_error_line() {
        let b = parse_apache_error("[Wed Oct 11 14:32:52.123456 2000] [core:error] [pid 1234:tid 5678] [client 1.2.3.4:5678] AH00124: Request exceeded the limit of 10 internal redirects").unwrap();
        assert_eq!(
            b.message,
            "AH00124: Request exceeded the limit of 10 internal redirects"
        );
        assert_eq!(b.severity, Some(Severity::Error));
        assert_eq!(b.timestamp_ns, Some(971_274_772_123_456_000));
        assert_eq!(
            serde_json::Value::Object(b.fields),
            json!({"module": "core", "pid": "1234", "tid": "5678", "client": "1.2.3.4:5678", "code": "AH00124"})
        );
    }

    #[test]
    fn apache_22_error_line_and_trace_levels() {
        let b = parse_apache_error("[Wed Oct 11 14:32:52 2000] [error] [client 127.0.0.1] client denied by server configuration: /export/home/live/ap/htdocs/test").unwrap();
        assert_eq!(
            b.message,
            "client denied by server configuration: /export/home/live/ap/htdocs/test"
        );
        assert_eq!(b.fields.get("client"), Some(&json!("127.0.0.1")));
        let b = parse_apache_error("[Mon Jan  1 00:00:00 2024] [ssl:trace3] [pid 7] handshake")
            .unwrap();
        assert_eq!(b.severity, Some(Severity::Trace));
        assert_eq!(b.message, "handshake");
    }

    #[test]
    fn malformed_apache_error_lines() {
        for (text, want) in [
            ("", "expected `[<date>]`"),
            ("[Wed Oct 11 14:32:52 2000]", "expected ` [<level>]`"),
            ("[yesterday] [error] x", "expected a date like"),
            (
                "[Wed Oct 11 14:32:52 2000] [core:loud] x",
                "expected an apache log level, found \"loud\"",
            ),
            (
                "[Wed Oct 11 14:32:52 2000] [trace9] x",
                "expected an apache log level",
            ),
        ] {
            let err = parse_apache_error(text).unwrap_err().to_string();
            assert!(err.starts_with("apache_error: "), "{err}");
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,160}|[0-9a-zA-Z/:\\[\\]\" +\\\\-]{0,120}") {
            let _ = parse_access_log(&text);
            let _ = parse_apache_error(&text);
        }
    }
}
