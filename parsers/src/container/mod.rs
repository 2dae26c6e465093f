//! Container log envelopes: the line formats that container runtimes write
//! under `/var/log/pods` — CRI (containerd, CRI-O) and docker's json-file — and
//! the merging of the partial lines both use to split long messages.
//!
//! Hand-written on purpose: this is the hottest path of the agent (every byte
//! every container writes passes through it), so the parsers work on bytes,
//! borrow where they can and never panic. This module knows nothing of files,
//! offsets or the body inside a message: the tail source reads lines, the
//! `body` module parses messages.

mod cri;
mod docker;
mod merge;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::ParseError;

pub use cri::parse_cri;
pub use docker::parse_docker;
pub use merge::{Merged, PartialMerger};

/// Which output stream of the container a line was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// Not known (plain files, docker lines without a `stream`).
    Unknown,
}

impl Stream {
    /// `stdout`, `stderr` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Unknown => "unknown",
        }
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Stream {
        match b {
            b"stdout" => Stream::Stdout,
            b"stderr" => Stream::Stderr,
            _ => Stream::Unknown,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The envelope format of a container log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerFormat {
    /// `<timestamp> <stream> <P|F> <message>` (containerd, CRI-O).
    Cri,
    /// Docker's json-file driver: one JSON object per line.
    Docker,
    /// No envelope: the line is the message.
    Plain,
}

impl ContainerFormat {
    /// Every format, in the order [`detect`] tries them.
    pub const ALL: &'static [ContainerFormat] = &[
        ContainerFormat::Cri,
        ContainerFormat::Docker,
        ContainerFormat::Plain,
    ];

    /// The configuration name: `cri`, `docker` or `plain`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerFormat::Cri => "cri",
            ContainerFormat::Docker => "docker",
            ContainerFormat::Plain => "plain",
        }
    }
}

impl fmt::Display for ContainerFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ContainerFormat {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ContainerFormat::ALL
            .iter()
            .copied()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                ParseError::malformed(
                    "container_format",
                    format!(
                        "expected one of cri, docker, plain, found {}",
                        crate::util::preview_str(s)
                    ),
                )
            })
    }
}

/// One line of a container log, envelope removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLine<'a> {
    /// When the runtime received the line, in nanoseconds since the Unix epoch;
    /// 0 when the format has none (plain).
    pub timestamp_ns: i64,
    /// The output stream.
    pub stream: Stream,
    /// `true` when this is not the last piece of a message (CRI tag `P`; docker
    /// `log` value without a trailing newline).
    pub partial: bool,
    /// The message bytes, without the line terminator. May be invalid UTF-8.
    pub message: Cow<'a, [u8]>,
}

impl ContainerLine<'_> {
    /// Copies the message so the line no longer borrows its input.
    pub fn into_owned(self) -> ContainerLine<'static> {
        ContainerLine {
            timestamp_ns: self.timestamp_ns,
            stream: self.stream,
            partial: self.partial,
            message: Cow::Owned(self.message.into_owned()),
        }
    }
}

/// Sniffs the format of a file from ONE line (its first): CRI if the line
/// parses as CRI, docker if it parses as a docker json-file line, else plain.
/// A trailing `\n` (or `\r\n`) is ignored.
pub fn detect(line: &[u8]) -> ContainerFormat {
    let line = trim_newline(line);
    if line.first() == Some(&b'{') {
        if parse_docker(line).is_ok() {
            return ContainerFormat::Docker;
        }
    } else if parse_cri(line).is_ok() {
        return ContainerFormat::Cri;
    }
    ContainerFormat::Plain
}

/// Parses one line (without its trailing newline) in the given format. Plain
/// lines are final, of unknown stream, without timestamp.
pub fn parse_line(format: ContainerFormat, line: &[u8]) -> Result<ContainerLine<'_>, ParseError> {
    match format {
        ContainerFormat::Cri => parse_cri(line),
        ContainerFormat::Docker => parse_docker(line),
        ContainerFormat::Plain => Ok(ContainerLine {
            timestamp_ns: 0,
            stream: Stream::Unknown,
            partial: false,
            message: Cow::Borrowed(line),
        }),
    }
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn detect_recognises_each_format_from_a_first_line() {
        assert_eq!(
            detect(b"2024-01-15T10:20:30.123456789Z stdout F hello\n"),
            ContainerFormat::Cri
        );
        assert_eq!(
            detect(
                br#"{"log":"hello\n","stream":"stdout","time":"2024-01-15T10:20:30.123456789Z"}"#
            ),
            ContainerFormat::Docker
        );
        assert_eq!(
            detect(br#"{"level":"info","msg":"hello"}"#),
            ContainerFormat::Plain
        );
        assert_eq!(detect(b"hello world"), ContainerFormat::Plain);
        assert_eq!(detect(b""), ContainerFormat::Plain);
        assert_eq!(detect(b"\xff\xfe\x00"), ContainerFormat::Plain);
    }

    #[test]
    fn plain_lines_are_final_and_borrowed() {
        let line = parse_line(ContainerFormat::Plain, b"just text").unwrap();
        assert_eq!(line.timestamp_ns, 0);
        assert_eq!(line.stream, Stream::Unknown);
        assert!(!line.partial);
        assert!(matches!(line.message, Cow::Borrowed(b"just text")));
    }

    #[test]
    fn format_names_round_trip() {
        for f in ContainerFormat::ALL {
            assert_eq!(f.as_str().parse::<ContainerFormat>(), Ok(*f));
        }
        let err = "json"
            .parse::<ContainerFormat>()
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("container_format: expected one of cri, docker, plain, found \"json\"")
        );
    }

    #[test]
    fn stream_names() {
        assert_eq!(Stream::Stdout.as_str(), "stdout");
        assert_eq!(Stream::Stderr.to_string(), "stderr");
        assert_eq!(Stream::Unknown.as_str(), "unknown");
    }
}
