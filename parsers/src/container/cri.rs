//! The CRI log line: `<RFC 3339 nano timestamp> <stdout|stderr> <tags> <message>`,
//! as written by containerd and CRI-O (kubelet `pkg/kubelet/kuberuntime/logs`).
//!
//! `tags` is a `:`-separated list whose first entry is `P` (partial: the
//! runtime split a long line) or `F` (full/final). The message is everything
//! after the single space following the tags, and may be empty.
//!
//! Hand-written on purpose: a few `memchr` splits and a fixed-layout timestamp
//! reader, borrowing the message from the input. It must not copy the message,
//! interpret it, or accept a stream other than stdout/stderr.

use std::borrow::Cow;

use crate::ParseError;
use crate::container::{ContainerLine, Stream};
use crate::time::parse_rfc3339;
use crate::util::{preview, split_space};

const FORMAT: &str = "cri";

/// Parses one CRI line given without its trailing newline. The message borrows
/// from `line`.
///
/// ```
/// use mecha_parsers::container::{parse_cri, Stream};
///
/// let line = parse_cri(b"2024-01-15T10:20:30.123456789Z stderr F boom")?;
/// assert_eq!(line.stream, Stream::Stderr);
/// assert!(!line.partial);
/// assert_eq!(&*line.message, b"boom");
/// # Ok::<(), mecha_parsers::ParseError>(())
/// ```
pub fn parse_cri(line: &[u8]) -> Result<ContainerLine<'_>, ParseError> {
    let (ts, rest) = split_space(line).ok_or_else(|| {
        ParseError::malformed(
            FORMAT,
            format!(
                "expected `<timestamp> <stream> <tag> <message>`, found {}",
                preview(line)
            ),
        )
    })?;
    let timestamp_ns = parse_rfc3339(ts, false).ok_or_else(|| {
        ParseError::malformed(
            FORMAT,
            format!("expected an RFC 3339 timestamp, found {}", preview(ts)),
        )
    })?;
    let (stream, rest) = split_space(rest).ok_or_else(|| {
        ParseError::malformed(
            FORMAT,
            format!(
                "expected a stream and a tag after the timestamp, found {}",
                preview(rest)
            ),
        )
    })?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        other => {
            return Err(ParseError::malformed(
                FORMAT,
                format!("expected stream stdout or stderr, found {}", preview(other)),
            ));
        }
    };
    // `... F` (no space, empty message) is what some runtimes write for an empty line.
    let (tags, message) = split_space(rest).unwrap_or((rest, &[]));
    let first_tag = tags.split(|&b| b == b':').next().unwrap_or(tags);
    let partial = match first_tag {
        b"P" => true,
        b"F" => false,
        other => {
            return Err(ParseError::malformed(
                FORMAT,
                format!("expected tag P or F, found {}", preview(other)),
            ));
        }
    };
    Ok(ContainerLine {
        timestamp_ns,
        stream,
        partial,
        message: Cow::Borrowed(message),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn containerd_full_line() {
        let l =
            parse_cri(b"2024-01-15T10:20:30.123456789Z stdout F GET /healthz 200 1.2ms").unwrap();
        assert_eq!(l.timestamp_ns, 1_705_314_030_123_456_789);
        assert_eq!(l.stream, Stream::Stdout);
        assert!(!l.partial);
        assert_eq!(&*l.message, b"GET /healthz 200 1.2ms");
    }

    #[test]
    fn crio_line_with_offset_and_partial_tag() {
        // CRI-O writes local time with an offset.
        let l = parse_cri(b"2016-10-06T00:17:09.669794202-07:00 stderr P part one ").unwrap();
        assert_eq!(l.timestamp_ns, 1_475_738_229_669_794_202);
        assert_eq!(l.stream, Stream::Stderr);
        assert!(l.partial);
        assert_eq!(&*l.message, b"part one ");
    }

    #[test]
    fn extra_tags_after_the_first_are_ignored() {
        let l = parse_cri(b"2024-01-15T10:20:30Z stdout F:x:y msg").unwrap();
        assert!(!l.partial);
        assert_eq!(&*l.message, b"msg");
    }

    #[test]
    fn empty_message_with_and_without_trailing_space() {
        for line in [
            &b"2024-01-15T10:20:30Z stdout F "[..],
            b"2024-01-15T10:20:30Z stdout F",
        ] {
            let l = parse_cri(line).unwrap();
            assert_eq!(&*l.message, b"");
        }
    }

    #[test]
    fn message_keeps_spaces_nul_and_invalid_utf8() {
        let l = parse_cri(b"2024-01-15T10:20:30Z stdout F  two\x00 \xff\xfe  ").unwrap();
        assert_eq!(&*l.message, b" two\x00 \xff\xfe  ");
    }

    #[test]
    fn malformed_lines_are_rejected_with_a_reason() {
        let cases: [(&[u8], &str); 8] = [
            (b"", "expected `<timestamp> <stream> <tag> <message>`"),
            (b"     ", "expected an RFC 3339 timestamp"),
            (b"hello world", "expected an RFC 3339 timestamp"),
            (b"2024-01-15T10:20:30Z", "expected `<timestamp>"),
            (
                b"2024-01-15T10:20:30Z stdout",
                "expected a stream and a tag",
            ),
            (
                b"2024-01-15T10:20:30Z stdin F x",
                "expected stream stdout or stderr, found \"stdin\"",
            ),
            (
                b"2024-01-15T10:20:30Z stdout X x",
                "expected tag P or F, found \"X\"",
            ),
            (
                b"2024-02-30T10:20:30Z stdout F x",
                "expected an RFC 3339 timestamp",
            ),
        ];
        for (line, want) in cases {
            let err = parse_cri(line).unwrap_err().to_string();
            assert!(err.starts_with("cri: "), "{err}");
            assert!(err.contains(want), "{err} does not contain {want}");
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(line in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_cri(&line);
        }

        #[test]
        fn format_then_parse_round_trips(
            ns in 0i64..4_102_444_800_000_000_000,
            stderr in any::<bool>(),
            partial in any::<bool>(),
            message in proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..300),
        ) {
            let ts = chrono::DateTime::from_timestamp_nanos(ns)
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            let stream = if stderr { Stream::Stderr } else { Stream::Stdout };
            let mut line = format!("{ts} {} {} ", stream.as_str(), if partial { "P" } else { "F" }).into_bytes();
            line.extend_from_slice(&message);
            let parsed = parse_cri(&line).unwrap();
            prop_assert_eq!(parsed.timestamp_ns, ns);
            prop_assert_eq!(parsed.stream, stream);
            prop_assert_eq!(parsed.partial, partial);
            prop_assert_eq!(&*parsed.message, &message[..]);
        }
    }
}
