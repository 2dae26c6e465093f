//! The event model shared by every room: what a log record is once it has been
//! read, before it is enriched, buffered, forwarded and indexed.
//!
//! The model follows the OpenTelemetry log data model (timestamp, severity,
//! body, attributes, resource) so that it maps onto OTLP without loss, plus the
//! source position that end-to-end acknowledgement and exactly-once indexing
//! need.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Well-known resource attribute names (OpenTelemetry semantic conventions).
pub mod keys {
    /// Kubernetes namespace.
    pub const NAMESPACE: &str = "k8s.namespace.name";
    /// Kubernetes pod name.
    pub const POD: &str = "k8s.pod.name";
    /// Kubernetes pod uid.
    pub const POD_UID: &str = "k8s.pod.uid";
    /// Container name inside the pod.
    pub const CONTAINER: &str = "k8s.container.name";
    /// Container id (runtime-specific, without the `containerd://` prefix).
    pub const CONTAINER_ID: &str = "container.id";
    /// Restart count of the container (the `N` of `/var/log/pods/.../N.log`).
    pub const CONTAINER_RESTART: &str = "k8s.container.restart_count";
    /// Node the record was collected on.
    pub const NODE: &str = "k8s.node.name";
    /// Host name of the collecting machine.
    pub const HOST: &str = "host.name";
    /// Service name.
    pub const SERVICE: &str = "service.name";
    /// Path of the file a record was read from (a log record attribute).
    pub const FILE_PATH: &str = "log.file.path";
    /// `stdout` or `stderr` (a log record attribute).
    pub const IOSTREAM: &str = "log.iostream";
    /// Set to `true` when a line was cut at `max_line_bytes`.
    pub const TRUNCATED: &str = "log.truncated";
    /// Set to `true` when invalid UTF-8 was replaced.
    pub const INVALID_UTF8: &str = "log.invalid_utf8";
    /// Why the body parser failed; the raw line is kept as the body.
    pub const PARSE_ERROR: &str = "parse_error";
}

/// Severity of a log record, on the OpenTelemetry scale.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// No severity known.
    #[default]
    Unspecified,
    /// Trace.
    Trace,
    /// Debug.
    Debug,
    /// Info (also notice).
    Info,
    /// Warning.
    Warn,
    /// Error.
    Error,
    /// Fatal (also critical, alert, emergency, panic).
    Fatal,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 7] = [
        Severity::Unspecified,
        Severity::Trace,
        Severity::Debug,
        Severity::Info,
        Severity::Warn,
        Severity::Error,
        Severity::Fatal,
    ];

    /// Reads the usual spellings of a level (`E`, `err`, `ERROR`, `warning`, `crit`,
    /// syslog names, numeric OTLP numbers as text). Unknown text gives `None`.
    pub fn parse(text: &str) -> Option<Severity> {
        let t = text.trim();
        if t.is_empty() || t.len() > 16 {
            return None;
        }
        let lower = t.to_ascii_lowercase();
        Some(match lower.as_str() {
            "trace" | "t" | "trc" | "finest" | "finer" => Severity::Trace,
            "debug" | "d" | "dbg" | "fine" | "config" | "verbose" | "v" => Severity::Debug,
            "info" | "i" | "inf" | "information" | "informational" | "notice" | "n" => {
                Severity::Info
            }
            "warn" | "w" | "wrn" | "warning" => Severity::Warn,
            "error" | "e" | "err" | "eror" | "severe" => Severity::Error,
            "fatal" | "f" | "crit" | "critical" | "alert" | "emerg" | "emergency" | "panic"
            | "dpanic" => Severity::Fatal,
            _ => return None,
        })
    }

    /// The lowercase name used in the index and in queries (`level:error`).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unspecified => "unspecified",
            Severity::Trace => "trace",
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Error => "error",
            Severity::Fatal => "fatal",
        }
    }

    /// The OTLP `SeverityNumber` of the first value of the range.
    pub fn otlp_number(self) -> i32 {
        match self {
            Severity::Unspecified => 0,
            Severity::Trace => 1,
            Severity::Debug => 5,
            Severity::Info => 9,
            Severity::Warn => 13,
            Severity::Error => 17,
            Severity::Fatal => 21,
        }
    }

    /// The severity of an OTLP `SeverityNumber` (1–24).
    pub fn from_otlp_number(n: i32) -> Severity {
        match n {
            1..=4 => Severity::Trace,
            5..=8 => Severity::Debug,
            9..=12 => Severity::Info,
            13..=16 => Severity::Warn,
            17..=20 => Severity::Error,
            21..=24 => Severity::Fatal,
            _ => Severity::Unspecified,
        }
    }
}

/// Where a record came from, precisely enough to recognise a replay.
///
/// For file lines `stream` is the file's identity (a fingerprint of its first
/// bytes) and `offset` the byte offset just past the record's last line; for push
/// sources it is the event id and `offset` 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourcePosition {
    /// Identity of the stream (file fingerprint, event id, ...); shared by
    /// every record of the stream.
    pub stream: Arc<str>,
    /// Byte offset just past the record in its stream.
    pub offset: u64,
}

/// The entity that produced a record: resource attributes as flat strings.
///
/// Shared: every record of one file (or one OTLP `ResourceLogs`) points to the
/// same attributes, so a record costs no resource allocation and the encoder
/// can group records by pointer. Mutation copies on write.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resource {
    /// Attributes such as `k8s.namespace.name`, keyed by their semantic name.
    pub attributes: Arc<BTreeMap<String, String>>,
}

impl Resource {
    /// The value of an attribute, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// Sets an attribute.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        Arc::make_mut(&mut self.attributes).insert(key.into(), value.into());
    }

    /// Whether two resources share their attributes (a cheap equality hint).
    pub fn same_as(&self, other: &Resource) -> bool {
        Arc::ptr_eq(&self.attributes, &other.attributes)
    }
}

/// One log record.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LogRecord {
    /// Event time in nanoseconds since the Unix epoch; 0 when unknown.
    pub timestamp_ns: i64,
    /// When the collector saw the record, in nanoseconds since the Unix epoch.
    pub observed_ns: i64,
    /// Severity, from the body or the stream (`stderr` alone does not make an error).
    pub severity: Severity,
    /// The message: the text of the line, or the `msg`/`message` of a parsed body.
    pub body: String,
    /// Structured fields parsed from the body and collector flags.
    pub attributes: Map<String, Value>,
    /// The producing entity.
    pub resource: Resource,
    /// Source position for acknowledgement and deduplication.
    pub position: Option<SourcePosition>,
}

impl LogRecord {
    /// A record with just a body and an observation time.
    pub fn new(body: impl Into<String>, observed_ns: i64) -> Self {
        LogRecord {
            body: body.into(),
            observed_ns,
            ..LogRecord::default()
        }
    }

    /// Event time if known, else observation time.
    pub fn effective_timestamp_ns(&self) -> i64 {
        if self.timestamp_ns > 0 {
            self.timestamp_ns
        } else {
            self.observed_ns
        }
    }

    /// Rough in-memory size, for byte-bounded queues and batches.
    pub fn approx_bytes(&self) -> usize {
        let attrs: usize = self
            .attributes
            .iter()
            .map(|(k, v)| k.len() + approx_value_bytes(v))
            .sum();
        let res: usize = self
            .resource
            .attributes
            .iter()
            .map(|(k, v)| k.len() + v.len() + 16)
            .sum();
        64 + self.body.len() + attrs + res
    }
}

fn approx_value_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len() + 8,
        Value::Array(a) => a.iter().map(approx_value_bytes).sum::<usize>() + 8,
        Value::Object(o) => {
            o.iter()
                .map(|(k, v)| k.len() + approx_value_bytes(v))
                .sum::<usize>()
                + 8
        }
        _ => 16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_reads_common_spellings() {
        assert_eq!(Severity::parse("ERROR"), Some(Severity::Error));
        assert_eq!(Severity::parse("warning"), Some(Severity::Warn));
        assert_eq!(Severity::parse("crit"), Some(Severity::Fatal));
        assert_eq!(Severity::parse("notice"), Some(Severity::Info));
        assert_eq!(Severity::parse("banana"), None);
        assert_eq!(Severity::parse(""), None);
    }

    #[test]
    fn severity_round_trips_through_otlp_numbers() {
        for s in Severity::ALL {
            assert_eq!(Severity::from_otlp_number(s.otlp_number()), s);
        }
        assert_eq!(Severity::from_otlp_number(99), Severity::Unspecified);
    }
}
