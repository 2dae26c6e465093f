//! Syslog bodies: RFC 3164 (BSD, `<PRI>Mmm dd hh:mm:ss host tag[pid]: msg`)
//! and RFC 5424 (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG`), as written
//! by rsyslog, syslog-ng, network gear and apps logging to `/dev/log`.
//!
//! Fields: `facility` (its name), `hostname`, `appname`, `procid`, `msgid`, and
//! for 5424 the structured data as a nested object `sd.{id}.{param}`. The
//! severity comes from the PRI. RFC 3164 timestamps carry neither year nor
//! zone: they are read as UTC in the current year, or the previous year when
//! that would put them more than a day in the future (a December line read in
//! January). The PRI is required: a line without it is not syslog.
//!
//! Hand-written on purpose, from the RFCs and what real senders write. It must
//! not do network framing (octet counting, transport): it reads one message.

use chrono::Datelike;
use serde_json::{Map, Value};

use crate::ParseError;
use crate::body::{ParsedBody, syslog_severity};
use crate::time::{self, Civil, month_from_abbrev, parse_clock_exact, parse_rfc3339};
use crate::util::preview_str;

const FORMAT: &str = "syslog";
const FORMAT_3164: &str = "syslog_rfc3164";
const FORMAT_5424: &str = "syslog_rfc5424";

const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

/// Parses a syslog line, telling RFC 5424 (a version number after the PRI)
/// from RFC 3164.
pub fn parse_syslog(text: &str) -> Result<ParsedBody, ParseError> {
    let (_, rest) = parse_pri(text, FORMAT)?;
    if version_prefix(rest).is_some() {
        parse_syslog_5424(text)
    } else {
        parse_syslog_3164(text)
    }
}

/// `Some(rest)` when `text` starts with a 5424 version (`1 `).
fn version_prefix(text: &str) -> Option<&str> {
    let (v, rest) = text.split_once(' ')?;
    let ok =
        (1..=2).contains(&v.len()) && v.bytes().all(|c| c.is_ascii_digit()) && !v.starts_with('0');
    ok.then_some(rest)
}

/// Reads `<PRI>`: the value (0–191) and the text after it.
fn parse_pri<'a>(text: &'a str, format: &'static str) -> Result<(u8, &'a str), ParseError> {
    let bad = || {
        ParseError::malformed(
            format,
            format!(
                "expected `<PRI>` with PRI 0-191, found {}",
                preview_str(text)
            ),
        )
    };
    let inner = text.strip_prefix('<').ok_or_else(bad)?;
    let (digits, rest) = inner.split_once('>').ok_or_else(bad)?;
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let pri: u8 = digits.parse().map_err(|_| bad())?;
    if pri > 191 {
        return Err(bad());
    }
    Ok((pri, rest))
}

fn base_fields(pri: u8) -> Map<String, Value> {
    let mut fields = Map::new();
    let facility = FACILITIES
        .get(usize::from(pri / 8))
        .copied()
        .unwrap_or("unknown");
    fields.insert("facility".into(), Value::String(facility.into()));
    fields
}

fn put(fields: &mut Map<String, Value>, key: &str, value: &str) {
    if value != "-" && !value.is_empty() {
        fields.insert(key.into(), Value::String(value.into()));
    }
}

/// Parses an RFC 3164 line; the PRI is required.
pub fn parse_syslog_3164(text: &str) -> Result<ParsedBody, ParseError> {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    parse_3164_at(text, now)
}

fn parse_3164_at(text: &str, now_ns: i64) -> Result<ParsedBody, ParseError> {
    let (pri, rest) = parse_pri(text, FORMAT_3164)?;
    let (timestamp_ns, rest) = read_3164_timestamp(rest, now_ns).ok_or_else(|| {
        ParseError::malformed(
            FORMAT_3164,
            format!(
                "expected a timestamp `Mmm dd hh:mm:ss` after the PRI, found {}",
                preview_str(rest)
            ),
        )
    })?;
    let mut fields = base_fields(pri);
    let (host, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    if host.is_empty() {
        return Err(ParseError::malformed(
            FORMAT_3164,
            format!(
                "expected a hostname after the timestamp, found {}",
                preview_str(rest)
            ),
        ));
    }
    put(&mut fields, "hostname", host);
    let (word, after) = rest.split_once(' ').unwrap_or((rest, ""));
    let message = match word.strip_suffix(':') {
        Some(tag) if !tag.is_empty() => {
            match tag.strip_suffix(']').and_then(|t| t.split_once('[')) {
                Some((app, pid)) => {
                    put(&mut fields, "appname", app);
                    put(&mut fields, "procid", pid);
                }
                None => put(&mut fields, "appname", tag),
            }
            after
        }
        // No tag (`<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!`): all of it is the message.
        _ => rest,
    };
    Ok(ParsedBody {
        message: message.to_string(),
        fields,
        severity: Some(syslog_severity(pri)),
        timestamp_ns: Some(timestamp_ns),
    })
}

/// Reads `Mmm dd hh:mm:ss ` (day space- or zero-padded) or an RFC 3339 token.
fn read_3164_timestamp(text: &str, now_ns: i64) -> Option<(i64, &str)> {
    let b = text.as_bytes();
    if let Some(month) = b.get(..3).and_then(month_from_abbrev) {
        let rest = text.get(3..)?.strip_prefix(' ')?;
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        let (day, rest) = rest.split_once(' ')?;
        if day.is_empty() || day.len() > 2 {
            return None;
        }
        let day: u32 = day.parse().ok()?;
        let (clock, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let (hour, minute, second, nanos) = parse_clock_exact(clock.as_bytes())?;
        let now_year = chrono::DateTime::from_timestamp_nanos(now_ns).year();
        let at = |year: i32| {
            Civil {
                year: i64::from(year),
                month,
                day,
                hour,
                minute,
                second,
                nanos,
                offset_secs: 0,
            }
            .to_unix_nanos()
        };
        let tomorrow = now_ns.saturating_add(86_400 * time::NANOS);
        let ts = at(now_year)
            .filter(|ts| *ts <= tomorrow)
            .or_else(|| at(now_year - 1))?;
        return Some((ts, rest));
    }
    // rsyslog's RFC3339 template in front of a 3164 header.
    let (token, rest) = text.split_once(' ')?;
    Some((parse_rfc3339(token.as_bytes(), false)?, rest))
}

/// Parses an RFC 5424 line.
pub fn parse_syslog_5424(text: &str) -> Result<ParsedBody, ParseError> {
    let err = |what: &str, found: &str| {
        ParseError::malformed(
            FORMAT_5424,
            format!("expected {what}, found {}", preview_str(found)),
        )
    };
    let (pri, rest) = parse_pri(text, FORMAT_5424)?;
    let rest = version_prefix(rest).ok_or_else(|| err("version 1 after the PRI", rest))?;
    let mut header = [""; 5];
    let mut rest = rest;
    for (slot, what) in header.iter_mut().zip([
        "a timestamp",
        "a hostname",
        "an app-name",
        "a procid",
        "a msgid",
    ]) {
        let (token, after) = rest.split_once(' ').ok_or_else(|| err(what, rest))?;
        if token.is_empty() {
            return Err(err(what, rest));
        }
        *slot = token;
        rest = after;
    }
    let [ts, host, app, procid, msgid] = header;
    let timestamp_ns = match ts {
        "-" => None,
        _ => Some(
            parse_rfc3339(ts.as_bytes(), false)
                .ok_or_else(|| err("an RFC 3339 timestamp or `-`", ts))?,
        ),
    };
    let mut fields = base_fields(pri);
    put(&mut fields, "hostname", host);
    put(&mut fields, "appname", app);
    put(&mut fields, "procid", procid);
    put(&mut fields, "msgid", msgid);
    let rest = if let Some(after) = rest.strip_prefix('-') {
        after
    } else if rest.starts_with('[') {
        let mut sd = Map::new();
        let after = parse_structured_data(rest, &mut sd)?;
        fields.insert("sd".into(), Value::Object(sd));
        after
    } else {
        return Err(err("structured data `[...]` or `-`", rest));
    };
    let message = match rest.strip_prefix(' ') {
        Some(msg) => msg.strip_prefix('\u{feff}').unwrap_or(msg),
        None if rest.is_empty() => "",
        None => return Err(err("a space before the message", rest)),
    };
    Ok(ParsedBody {
        message: message.to_string(),
        fields,
        severity: Some(syslog_severity(pri)),
        timestamp_ns,
    })
}

/// Reads one or more `[id param="value" ...]` elements into `out` (id → params)
/// and returns the text after them.
fn parse_structured_data<'a>(
    mut text: &'a str,
    out: &mut Map<String, Value>,
) -> Result<&'a str, ParseError> {
    let err = |what: &str, found: &str| {
        ParseError::malformed(
            FORMAT_5424,
            format!(
                "expected {what} in structured data, found {}",
                preview_str(found)
            ),
        )
    };
    let is_name_char =
        |c: char| !c.is_whitespace() && !c.is_control() && !matches!(c, '=' | ']' | '"');
    while let Some(inner) = text.strip_prefix('[') {
        let id_end = inner.find(|c| !is_name_char(c)).unwrap_or(inner.len());
        let (id, mut rest) = inner.split_at(id_end);
        if id.is_empty() {
            return Err(err("an SD-ID", inner));
        }
        let mut params = match out.remove(id) {
            Some(Value::Object(existing)) => existing,
            _ => Map::new(),
        };
        loop {
            if let Some(after) = rest.strip_prefix(']') {
                rest = after;
                break;
            }
            let Some(param) = rest.strip_prefix(' ') else {
                return Err(err("` name=\"value\"` or `]`", rest));
            };
            let name_end = param.find(|c| !is_name_char(c)).unwrap_or(param.len());
            let (name, after) = param.split_at(name_end);
            let Some(quoted) = after.strip_prefix("=\"").filter(|_| !name.is_empty()) else {
                return Err(err("`name=\"value\"`", param));
            };
            let (value, after) = sd_value(quoted).ok_or_else(|| err("a closing quote", quoted))?;
            params.insert(name.to_string(), Value::String(value));
            rest = after;
        }
        out.insert(id.to_string(), Value::Object(params));
        text = rest;
    }
    Ok(text)
}

/// Reads a PARAM-VALUE after its opening quote. Only `\"`, `\\` and `\]` are
/// escapes; any other backslash is kept (RFC 5424 section 6.3.3).
fn sd_value(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, text.get(i + 1..)?)),
            '\\' => match chars.peek() {
                Some(&(_, e @ ('"' | '\\' | ']'))) => {
                    value.push(e);
                    chars.next();
                }
                _ => value.push('\\'),
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Severity;
    use proptest::prelude::*;
    use serde_json::json;

    /// 2024-06-01T00:00:00Z.
    const NOW: i64 = 1_717_200_000 * time::NANOS;

    #[test]
    fn rfc3164_example_with_tag() {
        // RFC 3164 section 5.4, example 1.
        let b = parse_3164_at(
            "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
            NOW,
        )
        .unwrap();
        assert_eq!(b.message, "'su root' failed for lonvick on /dev/pts/8");
        assert_eq!(b.severity, Some(Severity::Fatal)); // 34 = auth.crit
        assert_eq!(b.fields.get("facility"), Some(&json!("auth")));
        assert_eq!(b.fields.get("hostname"), Some(&json!("mymachine")));
        assert_eq!(b.fields.get("appname"), Some(&json!("su")));
        // October is after June: the previous year.
        assert_eq!(
            b.timestamp_ns,
            time::parse_rfc3339(b"2023-10-11T22:14:15Z", false)
        );
    }

    #[test]
    fn rfc3164_padded_day_pid_and_no_tag() {
        let b = parse_3164_at(
            "<86>Jan  5 08:01:02 web-1 sshd[4242]: Accepted publickey for deploy",
            NOW,
        )
        .unwrap();
        assert_eq!(b.fields.get("appname"), Some(&json!("sshd")));
        assert_eq!(b.fields.get("procid"), Some(&json!("4242")));
        assert_eq!(b.severity, Some(Severity::Info));
        assert_eq!(
            b.timestamp_ns,
            time::parse_rfc3339(b"2024-01-05T08:01:02Z", false)
        );
        // RFC 3164 section 5.4, example 3 (no tag).
        let b = parse_3164_at("<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!", NOW).unwrap();
        assert_eq!(b.message, "Use the BFG!");
        assert!(!b.fields.contains_key("appname"));
    }

    #[test]
    fn rfc3164_with_rfc3339_timestamp() {
        let b = parse_syslog("<30>2024-01-15T10:20:30.5+00:00 node-3 kubelet[812]: pod started")
            .unwrap();
        assert_eq!(b.message, "pod started");
        assert_eq!(b.timestamp_ns, Some(1_705_314_030_500_000_000));
    }

    #[test]
    fn rfc5424_examples() {
        // RFC 5424 section 6.5, example 1 (BOM before the message).
        let b = parse_syslog("<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \u{feff}'su root' failed for lonvick on /dev/pts/8").unwrap();
        assert_eq!(b.message, "'su root' failed for lonvick on /dev/pts/8");
        assert_eq!(b.fields.get("msgid"), Some(&json!("ID47")));
        assert!(!b.fields.contains_key("procid"));
        assert_eq!(b.timestamp_ns, Some(1_065_910_455_003_000_000));
        // Example 2.
        let b = parse_syslog("<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.").unwrap();
        assert_eq!(b.message, "%% It's time to make the do-nuts.");
        assert_eq!(b.fields.get("facility"), Some(&json!("local4")));
        assert_eq!(b.severity, Some(Severity::Info));
        assert_eq!(b.timestamp_ns, Some(1_061_727_255_000_003_000));
        // Example 4: two SD elements and no message.
        let b = parse_syslog_5424(r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"]"#).unwrap();
        assert_eq!(b.message, "");
        assert_eq!(
            b.fields.get("sd"),
            Some(&json!({
                "exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"},
                "examplePriority@32473": {"class": "high"}
            }))
        );
    }

    #[test]
    fn rfc5424_sd_escapes_and_nil_timestamp() {
        let b = parse_syslog_5424(r#"<14>1 - host app 1 - [x@1 a="q\"b\]c\\d\e"] msg"#).unwrap();
        assert_eq!(
            serde_json::Value::Object(b.fields.clone())
                .pointer("/sd/x@1/a")
                .cloned()
                .as_ref(),
            Some(&json!(r#"q"b]c\d\e"#))
        );
        assert_eq!(b.timestamp_ns, None);
        assert_eq!(b.message, "msg");
    }

    #[test]
    fn malformed_lines_say_what_was_expected() {
        let cases = [
            ("", "syslog_rfc5424: expected `<PRI>`"),
            ("<192>1 - - - - - -", "expected `<PRI>` with PRI 0-191"),
            (
                "<99999999999999999999999>1 - - - - - -",
                "expected `<PRI>` with PRI 0-191",
            ),
            ("<>1 - - - - - -", "expected `<PRI>` with PRI 0-191"),
            (
                "<34>1 9999-99-99T99:99:99Z h a p m -",
                "expected an RFC 3339 timestamp or `-`",
            ),
            ("<34>2 ", "expected a timestamp"),
            (
                "<34>1 2003-10-11 h a p m -",
                "expected an RFC 3339 timestamp or `-`",
            ),
            (
                "<34>1 - h a p m x",
                "expected structured data `[...]` or `-`",
            ),
            (
                "<34>1 - h a p m [id a=b]",
                "expected `name=\"value\"` in structured data",
            ),
            ("<34>1 - h a p m [id a=\"b]", "expected a closing quote"),
            ("<34>1 - h a p m [ a=\"b\"]", "expected an SD-ID"),
            ("<34>1 - h a p m -x", "expected a space before the message"),
            ("<34>1 - h a", "expected an app-name"),
        ];
        for (text, want) in cases {
            let err = parse_syslog_5424(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        for text in [
            "no pri",
            "<34>",
            "<34>Foo 11 22:14:15 host x",
            "<34>Oct 99 22:14:15 host x",
            "<34>Oct 11 25:14:15 host x",
            "<3x>Oct 11 22:14:15 h",
        ] {
            let err = parse_syslog_3164(text).unwrap_err().to_string();
            assert!(
                err.starts_with("syslog_rfc3164: expected"),
                "{text:?}: {err}"
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics(text in "<[0-9]{1,3}>\\PC{0,100}|\\PC{0,100}|<1>1 [- a-z\\[\\]=\"\\\\]{0,60}") {
            let _ = parse_syslog(&text);
            let _ = parse_syslog_3164(&text);
            let _ = parse_syslog_5424(&text);
        }
    }
}
