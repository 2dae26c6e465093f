//! Docker's json-file log line:
//! `{"log":"hello\n","stream":"stdout","time":"2024-01-15T10:20:30.123456789Z"}`.
//!
//! The common shape is read by a hand-written scanner that unescapes the `log`
//! string straight into the output buffer in one pass (memchr over the plain
//! runs between escapes). Anything unusual — escaped keys, nested values,
//! duplicate keys — falls back to `serde_json`, so correctness never rests on
//! the fast path. Docker splits messages longer than 16 KiB into several lines;
//! every piece but the last lacks the trailing `\n`, which is how `partial` is
//! known.
//!
//! Hand-written on purpose, for speed on the hottest path. It must not accept
//! a line the JSON fallback would reject in a way that changes the result, nor
//! allocate more than the line's size.

use std::borrow::Cow;

use memchr::memchr2;
use serde_json::Value;

use crate::ParseError;
use crate::container::{ContainerLine, Stream};
use crate::time::parse_rfc3339;
use crate::util::preview;

const FORMAT: &str = "docker";

/// Parses one docker json-file line (without its trailing newline). Fields may
/// come in any order; unknown fields are ignored; `log` and `time` are required.
///
/// ```
/// use mecha_parsers::container::parse_docker;
///
/// let line = parse_docker(br#"{"log":"hi \u0026 bye\n","stream":"stdout","time":"2024-01-15T10:20:30Z"}"#)?;
/// assert_eq!(&*line.message, b"hi & bye");
/// assert!(!line.partial);
/// # Ok::<(), mecha_parsers::ParseError>(())
/// ```
pub fn parse_docker(line: &[u8]) -> Result<ContainerLine<'static>, ParseError> {
    match fast(line) {
        Some(Ok(parsed)) => Ok(parsed),
        Some(Err(e)) => Err(e),
        None => slow(line),
    }
}

/// The three fields of interest, as raw pieces of the line.
#[derive(Default)]
struct Fields<'a> {
    log: Option<Vec<u8>>,
    stream: Option<&'a [u8]>,
    time: Option<&'a [u8]>,
}

fn finish(
    log: Option<Vec<u8>>,
    stream: Option<&[u8]>,
    time: Option<&[u8]>,
) -> Result<ContainerLine<'static>, ParseError> {
    let mut log = log.ok_or_else(|| {
        ParseError::malformed(FORMAT, "expected a `log` string field, found none")
    })?;
    let time = time.ok_or_else(|| {
        ParseError::malformed(FORMAT, "expected a `time` string field, found none")
    })?;
    let timestamp_ns = parse_rfc3339(time, false).ok_or_else(|| {
        ParseError::malformed(
            FORMAT,
            format!("expected an RFC 3339 `time`, found {}", preview(time)),
        )
    })?;
    let partial = !log.ends_with(b"\n");
    if !partial {
        log.pop();
        if log.ends_with(b"\r") {
            log.pop();
        }
    }
    Ok(ContainerLine {
        timestamp_ns,
        stream: stream.map_or(Stream::Unknown, Stream::from_bytes),
        partial,
        message: Cow::Owned(log),
    })
}

/// The fast path. `None` means "not the simple shape, ask serde_json".
fn fast(line: &[u8]) -> Option<Result<ContainerLine<'static>, ParseError>> {
    let mut s = Scan { b: line, i: 0 };
    s.ws();
    s.eat(b'{')?;
    let mut f = Fields::default();
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            s.ws();
            let key = s.plain_string()?;
            s.ws();
            s.eat(b':')?;
            s.ws();
            match key {
                b"log" => {
                    if f.log.is_some() {
                        return None; // duplicate key: let serde_json decide
                    }
                    f.log = Some(s.unescaped_string()?);
                }
                b"stream" => f.stream = Some(s.dup_checked(f.stream)?),
                b"time" => f.time = Some(s.dup_checked(f.time)?),
                _ => s.skip_scalar()?,
            }
            s.ws();
            match s.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.ws();
    if s.i != line.len() {
        return None;
    }
    Some(finish(f.log, f.stream, f.time))
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    /// A string without escapes, borrowed. `None` if it has escapes.
    fn plain_string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let rest = self.b.get(self.i..)?;
        let end = memchr2(b'"', b'\\', rest)?;
        if rest.get(end) != Some(&b'"') {
            return None;
        }
        self.i += end + 1;
        rest.get(..end)
    }

    fn dup_checked(&mut self, seen: Option<&[u8]>) -> Option<&'a [u8]> {
        if seen.is_some() {
            return None;
        }
        self.plain_string()
    }

    /// A string, unescaped into a new buffer of at most its raw size.
    fn unescaped_string(&mut self) -> Option<Vec<u8>> {
        self.eat(b'"')?;
        let rest = self.b.get(self.i..)?;
        let mut out = Vec::with_capacity(rest.len().min(16 * 1024));
        let mut j = 0;
        loop {
            let run = rest.get(j..)?;
            let k = memchr2(b'"', b'\\', run)?;
            out.extend_from_slice(run.get(..k)?);
            j += k;
            if rest.get(j) == Some(&b'"') {
                self.i += j + 1;
                return Some(out);
            }
            // A backslash escape.
            let esc = *rest.get(j + 1)?;
            j += 2;
            match esc {
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'r' => out.push(b'\r'),
                b'"' => out.push(b'"'),
                b'\\' => out.push(b'\\'),
                b'/' => out.push(b'/'),
                b'b' => out.push(0x08),
                b'f' => out.push(0x0c),
                b'u' => {
                    let hi = hex4(rest.get(j..j + 4)?)?;
                    j += 4;
                    let c = if (0xD800..0xDC00).contains(&hi) {
                        // A surrogate pair, or a lone high surrogate (Go's encoder
                        // never writes one; serde_json would reject it).
                        let lo = match rest.get(j..j + 6) {
                            Some([b'\\', b'u', h @ ..]) => {
                                hex4(h).filter(|lo| (0xDC00..0xE000).contains(lo))
                            }
                            _ => None,
                        };
                        match lo {
                            Some(lo) => {
                                j += 6;
                                char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                            }
                            None => None,
                        }
                    } else {
                        char::from_u32(hi)
                    };
                    let c = c.unwrap_or(char::REPLACEMENT_CHARACTER);
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                _ => return None,
            }
        }
    }

    /// Skips a string, number, `true`, `false` or `null`. Objects and arrays
    /// give `None` (rare in docker lines: the slow path handles them).
    fn skip_scalar(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.i += 1;
                loop {
                    let rest = self.b.get(self.i..)?;
                    let k = memchr2(b'"', b'\\', rest)?;
                    self.i += k + 1;
                    if rest.get(k) == Some(&b'"') {
                        return Some(());
                    }
                    self.i += 1; // the escaped byte
                }
            }
            c if c == b'-' || c.is_ascii_digit() || matches!(c, b't' | b'f' | b'n') => {
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.'))
                {
                    self.i += 1;
                }
                let token = self.b.get(start..self.i)?;
                let literal = matches!(token, b"true" | b"false" | b"null");
                (literal || !c.is_ascii_alphabetic()).then_some(())
            }
            _ => None,
        }
    }
}

fn hex4(b: &[u8]) -> Option<u32> {
    if b.len() != 4 {
        return None;
    }
    let mut v = 0u32;
    for &c in b {
        v = v * 16 + char::from(c).to_digit(16)?;
    }
    Some(v)
}

/// The general path: any valid JSON object.
fn slow(line: &[u8]) -> Result<ContainerLine<'static>, ParseError> {
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        ParseError::malformed(
            FORMAT,
            format!("expected a JSON object, found {} ({e})", preview(line)),
        )
    })?;
    let Value::Object(map) = value else {
        return Err(ParseError::malformed(
            FORMAT,
            format!("expected a JSON object, found {}", preview(line)),
        ));
    };
    let string = |key: &str| -> Result<Option<&[u8]>, ParseError> {
        match map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_bytes())),
            Some(other) => Err(ParseError::malformed(
                FORMAT,
                format!(
                    "expected `{key}` to be a string, found {}",
                    preview(other.to_string().as_bytes())
                ),
            )),
        }
    };
    let log = string("log")?.map(<[u8]>::to_vec);
    finish(log, string("stream")?, string("time")?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(line: &[u8]) -> ContainerLine<'static> {
        match parse_docker(line) {
            Ok(l) => l,
            Err(e) => panic!("{e}: {}", String::from_utf8_lossy(line)),
        }
    }

    #[test]
    fn json_file_line_as_dockerd_writes_it() {
        // Go's encoder escapes <, > and & as \u003c, \u003e, \u0026.
        let l = ok(br#"{"log":"\u003chtml\u003e \u0026 \"quoted\"\ttab\n","stream":"stderr","time":"2024-01-15T10:20:30.123456789Z"}"#);
        assert_eq!(l.timestamp_ns, 1_705_314_030_123_456_789);
        assert_eq!(l.stream, Stream::Stderr);
        assert!(!l.partial);
        assert_eq!(&*l.message, b"<html> & \"quoted\"\ttab");
    }

    #[test]
    fn missing_trailing_newline_means_partial() {
        let l = ok(br#"{"log":"first 16k","stream":"stdout","time":"2024-01-15T10:20:30Z"}"#);
        assert!(l.partial);
        assert_eq!(&*l.message, b"first 16k");
    }

    #[test]
    fn only_one_trailing_newline_or_crlf_is_removed() {
        assert_eq!(
            &*ok(br#"{"log":"a\n\n","time":"2024-01-15T10:20:30Z"}"#).message,
            b"a\n"
        );
        assert_eq!(
            &*ok(br#"{"log":"a\r\n","time":"2024-01-15T10:20:30Z"}"#).message,
            b"a"
        );
        assert_eq!(
            &*ok(br#"{"log":"\n","time":"2024-01-15T10:20:30Z"}"#).message,
            b""
        );
    }

    #[test]
    fn fields_in_any_order_with_extras_and_whitespace() {
        let l = ok(br#" { "time" : "2024-01-15T10:20:30Z" , "attrs":{"tag":"x"}, "stream":"stdout", "log" : "hi\n" } "#);
        assert_eq!(l.stream, Stream::Stdout);
        assert_eq!(&*l.message, b"hi");
        let l = ok(br#"{"n":-1.5e3,"ok":true,"z":null,"s":"a\"b","log":"x\n","time":"2024-01-15T10:20:30Z"}"#);
        assert_eq!(&*l.message, b"x");
        // A bare word is not JSON: the slow path rejects the line.
        assert!(parse_docker(br#"{"a":nope,"log":"x\n","time":"2024-01-15T10:20:30Z"}"#).is_err());
    }

    #[test]
    fn surrogate_pairs_and_lone_surrogates() {
        assert_eq!(
            &*ok(br#"{"log":"\ud83d\ude00\n","time":"2024-01-15T10:20:30Z"}"#).message,
            "😀".as_bytes()
        );
        // A lone high surrogate becomes U+FFFD; the escape after it is still read.
        assert_eq!(
            &*ok(br#"{"log":"\ud83dx\n","time":"2024-01-15T10:20:30Z"}"#).message,
            "\u{FFFD}x".as_bytes()
        );
    }

    #[test]
    fn invalid_utf8_inside_log_is_kept_as_bytes() {
        let l = ok(b"{\"log\":\"a\xff\xfeb\\n\",\"time\":\"2024-01-15T10:20:30Z\"}");
        assert_eq!(&*l.message, b"a\xff\xfeb");
    }

    #[test]
    fn duplicate_log_key_last_wins() {
        let l = ok(br#"{"log":"one\n","log":"two\n","time":"2024-01-15T10:20:30Z"}"#);
        assert_eq!(&*l.message, b"two");
    }

    #[test]
    fn missing_stream_is_unknown() {
        assert_eq!(
            ok(br#"{"log":"x\n","time":"2024-01-15T10:20:30Z"}"#).stream,
            Stream::Unknown
        );
    }

    #[test]
    fn malformed_lines_are_rejected_with_a_reason() {
        let cases: [(&[u8], &str); 10] = [
            (b"", "expected a JSON object"),
            (b"   ", "expected a JSON object"),
            (b"[1,2]", "expected a JSON object"),
            (b"{}", "expected a `log` string field"),
            (br#"{"log":"x\n"}"#, "expected a `time` string field"),
            (
                br#"{"log":"x\n","time":"yesterday"}"#,
                "expected an RFC 3339 `time`, found \"yesterday\"",
            ),
            (
                br#"{"log":5,"time":"2024-01-15T10:20:30Z"}"#,
                "expected `log` to be a string, found \"5\"",
            ),
            (br#"{"log":"unterminated"#, "expected a JSON object"),
            (
                br#"{"log":"bad \q escape","time":"2024-01-15T10:20:30Z"}"#,
                "expected a JSON object",
            ),
            (
                b"{\"log\":\"x\x00\",\"time\":\"2024-01-15T10:20:30Z\"} trailing",
                "expected a JSON object",
            ),
        ];
        for (line, want) in cases {
            let err = parse_docker(line).unwrap_err().to_string();
            assert!(err.starts_with("docker: "), "{err}");
            assert!(err.contains(want), "{err} does not contain {want}");
        }
    }

    #[test]
    fn deeply_nested_extra_field_is_an_error_not_a_crash() {
        let mut line = br#"{"log":"x\n","time":"2024-01-15T10:20:30Z","x":"#.to_vec();
        line.extend(std::iter::repeat_n(b'[', 100_000));
        assert!(parse_docker(&line).is_err());
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(line in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_docker(&line);
        }

        #[test]
        fn never_panics_on_json_like_input(tail in "[\\\\\"{}:,a-z0-9 ]{0,80}") {
            let _ = parse_docker(format!(r#"{{"log":"{tail}"#).as_bytes());
        }

        #[test]
        fn format_then_parse_round_trips(
            ns in 0i64..4_102_444_800_000_000_000,
            stream in prop_oneof![Just(Stream::Stdout), Just(Stream::Stderr)],
            partial in any::<bool>(),
            message in "\\PC*|[\\u{0}-\\u{7f}]*",
        ) {
            prop_assume!(!message.ends_with('\n') && !message.ends_with('\r'));
            let ts = chrono::DateTime::from_timestamp_nanos(ns)
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            let log = if partial { message.clone() } else { format!("{message}\n") };
            let line = serde_json::json!({"log": log, "stream": stream.as_str(), "time": ts}).to_string();
            let parsed = parse_docker(line.as_bytes()).unwrap();
            prop_assert_eq!(parsed.timestamp_ns, ns);
            prop_assert_eq!(parsed.stream, stream);
            prop_assert_eq!(parsed.partial, partial);
            prop_assert_eq!(&*parsed.message, message.as_bytes());
        }
    }
}
