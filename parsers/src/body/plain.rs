//! Plain application lines: the leading timestamp and level that most
//! frameworks print before the message (Spring Boot/logback, Python `logging`,
//! Go's `log`, Laravel/Monolog), read so that `level:error` and time ranges work
//! on lines nobody configured a parser for. The message is left whole.
//!
//! Hand-written on purpose: it runs on every unstructured line in `auto` mode,
//! so it looks at a few bytes and gives up early. It must stay conservative — a
//! word in prose is never taken for a level — and must not know about
//! containers or files.

use crate::Severity;
use crate::time;

/// Timestamp and severity at the start of a plain line, if any.
pub(crate) fn sniff(text: &str) -> (Option<i64>, Option<Severity>) {
    let mut tokens = text.split_ascii_whitespace();
    let Some(first) = tokens.next() else {
        return (None, None);
    };
    let ts = leading_timestamp(first, || tokens.next());
    let first_is_text = ts.is_none().then_some(first);
    let severity = first_is_text
        .into_iter()
        .chain(tokens)
        .take(3)
        .find_map(level_token);
    (ts, severity)
}

/// Reads `2024-01-15T10:20:30.123Z`, `2024-01-15 10:20:30,123` or
/// `2024/01/15 10:20:30`, optionally in `[...]`; `second` yields the clock when
/// a space separates it from the date. A time without offset is taken as UTC.
fn leading_timestamp<'a>(first: &'a str, second: impl FnOnce() -> Option<&'a str>) -> Option<i64> {
    let first = first.strip_prefix('[').unwrap_or(first);
    let b = first.as_bytes();
    // Quick reject: a date starts with four digits and a separator.
    if b.len() < 10
        || !b.iter().take(4).all(u8::is_ascii_digit)
        || !matches!(b.get(4), Some(b'-' | b'/'))
    {
        return None;
    }
    let clock = if b.len() == 10 { Some(second()?) } else { None };
    let mut buf = [0u8; 40];
    let len = normalise(
        &mut buf,
        first.trim_end_matches(']'),
        clock.map(|c| c.trim_end_matches(']')),
    )?;
    time::parse_rfc3339(buf.get(..len)?, true)
}

/// Copies date (and clock) into `buf` in RFC 3339 shape: `/` → `-` in the
/// date, `,` → `.` before the fraction (Python and log4j write a comma).
fn normalise(buf: &mut [u8; 40], date: &str, clock: Option<&str>) -> Option<usize> {
    let mut n = 0;
    let mut push = |c: u8, n: &mut usize| -> Option<()> {
        *buf.get_mut(*n)? = c;
        *n += 1;
        Some(())
    };
    for (i, &c) in date.as_bytes().iter().enumerate() {
        let c = match c {
            b'/' if i < 10 => b'-',
            b',' => b'.',
            c => c,
        };
        push(c, &mut n)?;
    }
    if let Some(clock) = clock {
        push(b' ', &mut n)?;
        for &c in clock.as_bytes() {
            push(if c == b',' { b'.' } else { c }, &mut n)?;
        }
    }
    Some(n)
}

/// A level word: `ERROR`, `[error]`, `WARN:`, `production.ERROR:` (Monolog),
/// `ERROR:root:msg` (Python's default format). Bare lowercase words are not
/// levels: in prose "error" is just a word.
fn level_token(token: &str) -> Option<Severity> {
    let bracketed = token.starts_with('[') && token.contains(']');
    let t = token.trim_start_matches('[');
    let t = t.split([']', ':']).next().unwrap_or(t);
    let t = t.rsplit('.').next().unwrap_or(t);
    if !(4..=8).contains(&t.len()) {
        return None;
    }
    let upper = t.bytes().all(|c| c.is_ascii_uppercase());
    if !(upper || bracketed && t.bytes().all(|c| c.is_ascii_alphabetic())) {
        return None;
    }
    Severity::parse(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Option<i64> {
        time::parse_rfc3339(s.as_bytes(), true)
    }

    #[test]
    fn framework_prefixes_give_time_and_level() {
        let cases = [
            (
                "2026-11-23 10:00:00.123 ERROR 1 --- [main] c.s.OrderService : order failed",
                "2026-11-23 10:00:00.123",
                Some(Severity::Error),
            ),
            (
                "2026-11-23 10:00:00,123 WARNING root: disk almost full",
                "2026-11-23 10:00:00.123",
                Some(Severity::Warn),
            ),
            (
                "2026/11/23 10:00:00 listening on :8080",
                "2026-11-23 10:00:00",
                None,
            ),
            (
                "[2026-11-23 10:00:00] production.ERROR: SQLSTATE[HY000] gone away",
                "2026-11-23 10:00:00",
                Some(Severity::Error),
            ),
            (
                "2026-11-23T10:00:00.5+08:00 [info] started",
                "2026-11-23T10:00:00.5+08:00",
                Some(Severity::Info),
            ),
            (
                "2026-09-22 04:51:30 install qemu-utils:amd64",
                "2026-09-22 04:51:30",
                None,
            ),
        ];
        for (line, want_ts, want_level) in cases {
            assert_eq!(sniff(line), (ts(want_ts), want_level), "{line}");
        }
    }

    #[test]
    fn levels_without_a_timestamp() {
        assert_eq!(sniff("ERROR:root:boom"), (None, Some(Severity::Error)));
        assert_eq!(sniff("INFO  server started"), (None, Some(Severity::Info)));
    }

    #[test]
    fn prose_is_not_a_level_or_a_time() {
        for line in [
            "an error occurred while reading",
            "Error handling is hard",
            "I am here",
            "2026 was a good year",
            "1234-56-78 99:99:99 not a date",
            "WARNINGS ARE FOR LATER",
            "",
            "[",
            "2026-11-23",
        ] {
            assert_eq!(sniff(line), (None, None), "{line}");
        }
    }
}
