//! The schema: every key a user can write, with its default and meaning.
//!
//! ```yaml
//! data_dir: ./mecha-data
//! node_name: ${NODE_NAME:-}
//! agent:
//!   admin: { listen: "0.0.0.0:9600" }
//!   sources:
//!     containers:
//!       type: tail
//!       include: ["/var/log/containers/*.log"]
//!       format: auto
//!       multiline: { rule: builtin }
//!   forward:
//!     endpoint: http://mecha-aggregator:4317
//! aggregator:
//!   grpc: { listen: "0.0.0.0:4317" }
//!   http: { listen: "0.0.0.0:8080" }
//!   retention_days: 7
//! ```

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::PathBuf;
use std::str::FromStr;

use mecha_parsers::body::BodyFormat;
use mecha_parsers::container::ContainerFormat;
use mecha_parsers::multiline::MultilineRule;
use serde::{Deserialize, Deserializer, de};

use crate::error::ConfigError;
use crate::sentry::SentryConfig;
use crate::values::{ByteSize, Duration, GlobPattern, Listen, RegexPattern};

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where checkpoints, buffers and indexes live. Default `./mecha-data` in
    /// standalone mode, `/var/lib/mecha` for the agent and aggregator roles.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Name of this node, added to every record as `k8s.node.name`. Usually
    /// `${NODE_NAME}` from the downward API. Default: none.
    #[serde(default)]
    pub node_name: Option<String>,
    /// The node runtime.
    #[serde(default)]
    pub agent: AgentConfig,
    /// The central service.
    #[serde(default)]
    pub aggregator: AggregatorConfig,
}

/// The agent role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The admin listener: `/metrics`, `/health`, `/ready`.
    #[serde(default = "default_admin")]
    pub admin: ListenerConfig,
    /// Sources by name. When the key is absent, one tail source named
    /// `containers` with the default globs is used.
    #[serde(default = "default_sources")]
    pub sources: BTreeMap<String, SourceConfig>,
    /// Where records go.
    #[serde(default)]
    pub forward: ForwardConfig,
    /// Chunks that may wait in memory between the sources and the forwarder
    /// (each at most a source's chunk size, 1 MiB). Default 3.
    #[serde(default = "default_queue_chunks")]
    pub queue_chunks: usize,
    /// Where chunks wait for the forwarder.
    #[serde(default)]
    pub buffer: BufferConfig,
    /// The Sentry ingestion endpoint (`:9000`).
    #[serde(default)]
    pub sentry: SentryConfig,
    /// Pod metadata enrichment (`agent.kubernetes`).
    #[serde(default)]
    pub kubernetes: crate::KubernetesConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            admin: default_admin(),
            sources: default_sources(),
            forward: ForwardConfig::default(),
            queue_chunks: default_queue_chunks(),
            buffer: BufferConfig::default(),
            sentry: SentryConfig::default(),
            kubernetes: crate::KubernetesConfig::default(),
        }
    }
}

/// The agent's buffer between sources and the forwarder.
///
/// ```yaml
/// buffer: { type: disk, max_size: 1GiB, fsync_interval: 500ms, when_full: block }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// `disk`: append-only segments under `<data_dir>/buffer`; a file
    /// checkpoint advances once its lines are fsynced there, and the agent keeps
    /// collecting while the aggregator is away. `memory`: chunks wait in memory
    /// only, and checkpoints advance when the aggregator acknowledges. Default:
    /// `disk` for `mecha agent`, `memory` for `mecha standalone` (where the
    /// store is in the same process).
    #[serde(default, rename = "type")]
    pub kind: Option<BufferKind>,
    /// Largest size on disk of what is not yet delivered. Default 1GiB.
    #[serde(default = "default_buffer_max")]
    pub max_size: ByteSize,
    /// Size at which a new segment file is started. Default 64MiB (at most an
    /// eighth of `max_size`).
    #[serde(default = "default_segment_size")]
    pub segment_size: ByteSize,
    /// Writes are fsynced at most this often (and on shutdown); `0s` fsyncs
    /// every chunk. Default 500ms.
    #[serde(default = "default_fsync_interval")]
    pub fsync_interval: Duration,
    /// When `max_size` is reached: `block` (default; sources wait, files are
    /// the buffer) or `drop_newest` (new chunks are dropped and counted).
    #[serde(default)]
    pub when_full: WhenFull,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            kind: None,
            max_size: default_buffer_max(),
            segment_size: default_segment_size(),
            fsync_interval: default_fsync_interval(),
            when_full: WhenFull::default(),
        }
    }
}

/// Kinds of buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferKind {
    /// Segments on disk.
    Disk,
    /// Memory only.
    Memory,
}

/// What a full buffer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Sources wait.
    #[default]
    Block,
    /// New chunks are dropped and counted.
    DropNewest,
}

/// One listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `host:port`, `:port`, or `off`.
    pub listen: Listen,
}

/// A source. Kinds are chosen by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The kind of source: `tail`.
    #[serde(rename = "type")]
    pub kind: SourceKind,
    /// Globs of files to read. Default `/var/log/containers/*.log` and `/var/log/*.log`.
    #[serde(default = "default_include")]
    pub include: Vec<GlobPattern>,
    /// Globs of files to skip, matched against the path and the file name.
    /// Default `*.gz`, `*.tmp`; the defaults always apply.
    #[serde(default)]
    pub exclude: Vec<GlobPattern>,
    /// Where to start in files that exist at the first start: `beginning` (default) or `end`.
    /// Files that appear later are always read from the beginning.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// The container envelope: `auto` (default, detected per file), `cri`, `docker` or `plain`.
    #[serde(default)]
    pub container_format: AutoOr<ContainerFormat>,
    /// How to parse the message inside the envelope: `auto` (default), `raw`,
    /// `json`, `logfmt`, `nginx`, `apache_error`, `syslog`, `syslog_rfc3164`, `syslog_rfc5424`.
    #[serde(default = "default_format")]
    pub format: Named<BodyFormat>,
    /// Keep the original text under `log.original` when a body is parsed into fields.
    #[serde(default)]
    pub keep_original_body: bool,
    /// Multiline joining (stack traces). Default off.
    #[serde(default)]
    pub multiline: Option<MultilineConfig>,
    /// Longer lines are cut and flagged `log.truncated`. Default 256KiB.
    #[serde(default = "default_max_line")]
    pub max_line_bytes: ByteSize,
    /// Partial lines (CRI `P`, docker without newline) are merged up to this. Default 1MiB.
    #[serde(default = "default_max_merged")]
    pub max_merged_line_bytes: ByteSize,
    /// How often the globs are re-evaluated (file events speed this up). Default 1s.
    #[serde(default = "default_rescan")]
    pub rescan_interval: Duration,
    /// Most files open at once. Default 1024.
    #[serde(default = "default_max_open_files")]
    pub max_open_files: usize,
}

/// Kinds of source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Files: container logs and plain log files.
    Tail,
}

/// Where to start reading files present at the first start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    /// From the first byte.
    #[default]
    Beginning,
    /// From the current end.
    End,
}

/// Multiline joining.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// A built-in rule: `builtin` (all below, default), `java`, `python`, `go`, `nodejs`.
    #[serde(default = "default_multiline_rule")]
    pub rule: Named<MultilineRule>,
    /// A regex matching the first line of a record; other lines continue it.
    /// Takes precedence over `rule`.
    #[serde(default)]
    pub start_pattern: Option<RegexPattern>,
    /// A pending record is sent after this much quiet. Default 1s.
    #[serde(default = "default_flush")]
    pub flush_timeout: Duration,
    /// Most lines in one record; the rest is dropped and counted. Default 500.
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
}

impl MultilineConfig {
    /// The rule to apply.
    pub fn effective_rule(&self) -> MultilineRule {
        match &self.start_pattern {
            Some(p) => MultilineRule::Custom(p.0.clone()),
            None => self.rule.0.clone(),
        }
    }
}

/// Where the agent sends records.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// OTLP/gRPC endpoint of the aggregator. Default `http://127.0.0.1:4317`.
    /// Ignored in standalone mode, where records go in-process.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// `zstd` (default: cheapest CPU per byte between mecha processes), `gzip`
    /// (for third-party OTLP receivers) or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// Largest batch, before compression. Default 1MiB: larger batches cost
    /// memory in the agent and add little throughput.
    #[serde(default = "default_batch_bytes")]
    pub batch_max_bytes: ByteSize,
    /// How long a partly filled batch waits for more chunks before it is
    /// sent. Default 100ms: sources already gather records into chunks (the
    /// tail for up to 200ms), so waiting longer here only adds latency.
    #[serde(default = "default_batch_timeout")]
    pub batch_timeout: Duration,
    /// Deadline of one export call. Default 30s.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Duration,
    /// Batches sent at once; they are still acknowledged in order. Default 2.
    #[serde(default = "default_in_flight")]
    pub in_flight: usize,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            endpoint: default_endpoint(),
            compression: Compression::default(),
            batch_max_bytes: default_batch_bytes(),
            batch_timeout: default_batch_timeout(),
            request_timeout: default_request_timeout(),
            in_flight: default_in_flight(),
        }
    }
}

/// Compression on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// zstd.
    #[default]
    Zstd,
    /// gzip.
    Gzip,
    /// None.
    None,
}

/// The aggregator role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    /// OTLP/gRPC receiver for agents and any OTLP sender. Default `0.0.0.0:4317`.
    #[serde(default = "default_grpc")]
    pub grpc: ListenerConfig,
    /// HTTP API, `/metrics`, `/health`. Default `127.0.0.1:8080`.
    #[serde(default = "default_http")]
    pub http: ListenerConfig,
    /// Whole UTC days of logs and Sentry events kept (issues whose newest
    /// event is older go too). Default 7.
    #[serde(default = "default_retention")]
    pub retention_days: u32,
    /// How often received records are committed to the index (and acknowledged). Default 500ms.
    #[serde(default = "default_commit_interval")]
    pub commit_interval: Duration,
    /// Sentry issues (`<data_dir>/issues/`).
    #[serde(default)]
    pub issues: IssuesConfig,
    /// Alert rules, routing and receivers (`<data_dir>/alerts/` holds their
    /// state).
    #[serde(default)]
    pub alerting: crate::AlertingConfig,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            grpc: default_grpc(),
            http: default_http(),
            retention_days: default_retention(),
            commit_interval: default_commit_interval(),
            issues: IssuesConfig::default(),
            alerting: crate::AlertingConfig::default(),
        }
    }
}

/// `aggregator.issues`: how much of each issue's history is kept. Events of
/// every issue also go when they are older than `retention_days`, and an
/// issue whose newest event is older goes with them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuesConfig {
    /// Events kept per issue for `GET /api/v1/issues/{id}/events`: the
    /// newest ones; counts, users and the latest event go on regardless.
    /// Each costs up to the event's size (1 MB at most) on disk. Default 100.
    #[serde(default = "default_max_events_per_issue")]
    pub max_events_per_issue: u32,
}

impl Default for IssuesConfig {
    fn default() -> Self {
        IssuesConfig {
            max_events_per_issue: default_max_events_per_issue(),
        }
    }
}

fn default_max_events_per_issue() -> u32 {
    100
}

/// A name read with the `FromStr` of a parsers type (`json`, `java`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Named<T>(pub T);

impl<'de, T> Deserialize<'de> for Named<T>
where
    T: FromStr,
    T::Err: Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        T::from_str(&s).map(Named).map_err(de::Error::custom)
    }
}

/// `auto`, or a fixed choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoOr<T> {
    /// Decide per input.
    #[default]
    Auto,
    /// Always this.
    Is(T),
}

impl<T: Copy> AutoOr<T> {
    /// `None` for auto.
    pub fn fixed(&self) -> Option<T> {
        match self {
            AutoOr::Auto => None,
            AutoOr::Is(t) => Some(*t),
        }
    }
}

impl<'de, T> Deserialize<'de> for AutoOr<T>
where
    T: FromStr,
    T::Err: Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "auto" {
            return Ok(AutoOr::Auto);
        }
        T::from_str(&s).map(AutoOr::Is).map_err(de::Error::custom)
    }
}

/// Default include globs of a tail source.
pub const DEFAULT_INCLUDE: &[&str] = &["/var/log/containers/*.log", "/var/log/*.log"];
/// Exclude globs that always apply.
pub const DEFAULT_EXCLUDE: &[&str] = &["*.gz", "*.tmp"];

fn default_admin() -> ListenerConfig {
    ListenerConfig {
        listen: Listen(Some(([0, 0, 0, 0], 9600).into())),
    }
}
fn default_grpc() -> ListenerConfig {
    ListenerConfig {
        listen: Listen(Some(([0, 0, 0, 0], 4317).into())),
    }
}
fn default_http() -> ListenerConfig {
    ListenerConfig {
        listen: Listen(Some(([127, 0, 0, 1], 8080).into())),
    }
}
fn default_include() -> Vec<GlobPattern> {
    DEFAULT_INCLUDE
        .iter()
        .map(|s| GlobPattern((*s).to_string()))
        .collect()
}
fn default_sources() -> BTreeMap<String, SourceConfig> {
    BTreeMap::from([("containers".to_string(), SourceConfig::default_tail())])
}
fn default_format() -> Named<BodyFormat> {
    Named(BodyFormat::Auto)
}
fn default_multiline_rule() -> Named<MultilineRule> {
    Named(MultilineRule::Builtin)
}
fn default_queue_chunks() -> usize {
    3
}
fn default_max_line() -> ByteSize {
    ByteSize(256 * 1024)
}
fn default_max_merged() -> ByteSize {
    ByteSize(1024 * 1024)
}
fn default_rescan() -> Duration {
    Duration(std::time::Duration::from_secs(1))
}
fn default_max_open_files() -> usize {
    1024
}
fn default_flush() -> Duration {
    Duration(std::time::Duration::from_secs(1))
}
fn default_max_lines() -> usize {
    500
}
fn default_endpoint() -> String {
    "http://127.0.0.1:4317".to_string()
}
fn default_batch_bytes() -> ByteSize {
    ByteSize(1024 * 1024)
}
fn default_batch_timeout() -> Duration {
    Duration(std::time::Duration::from_millis(100))
}
fn default_request_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}
fn default_buffer_max() -> ByteSize {
    ByteSize(1 << 30)
}
fn default_segment_size() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_fsync_interval() -> Duration {
    Duration(std::time::Duration::from_millis(500))
}
fn default_in_flight() -> usize {
    2
}
fn default_retention() -> u32 {
    7
}
fn default_commit_interval() -> Duration {
    Duration(std::time::Duration::from_millis(500))
}

impl SourceConfig {
    /// A tail source with every default.
    pub fn default_tail() -> Self {
        SourceConfig {
            kind: SourceKind::Tail,
            include: default_include(),
            exclude: Vec::new(),
            read_from: ReadFrom::default(),
            container_format: AutoOr::Auto,
            format: default_format(),
            keep_original_body: false,
            multiline: None,
            max_line_bytes: default_max_line(),
            max_merged_line_bytes: default_max_merged(),
            rescan_interval: default_rescan(),
            max_open_files: default_max_open_files(),
        }
    }
}

impl Config {
    /// Checks what one key alone cannot: relations between keys.
    pub(crate) fn check(&self, file: &str, text: &str) -> Result<(), ConfigError> {
        let fail = |key: String, reason: String| ConfigError::Invalid {
            file: file.to_string(),
            line: crate::error::locate_or_parent(text, &key),
            key,
            reason,
        };
        for (name, src) in &self.agent.sources {
            if src.include.is_empty() {
                return Err(fail(
                    format!("agent.sources.{name}.include"),
                    "expected at least one glob, found none".into(),
                ));
            }
            if src.max_line_bytes.0 < 64 {
                return Err(fail(
                    format!("agent.sources.{name}.max_line_bytes"),
                    format!("expected at least 64 bytes, found {}", src.max_line_bytes.0),
                ));
            }
        }
        let endpoint = &self.agent.forward.endpoint;
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(fail(
                "agent.forward.endpoint".into(),
                format!("expected a URL such as http://aggregator:4317, found {endpoint:?}"),
            ));
        }
        // The aggregator tells a late batch from a replay for up to 16
        // batches of reordering (its `MAX_RUNS`).
        let in_flight = self.agent.forward.in_flight;
        if in_flight == 0 || in_flight > 16 {
            return Err(fail(
                "agent.forward.in_flight".into(),
                format!("expected 1 to 16, found {in_flight}"),
            ));
        }
        if self.agent.queue_chunks == 0 {
            return Err(fail(
                "agent.queue_chunks".into(),
                "expected at least 1, found 0".into(),
            ));
        }
        let buffer = &self.agent.buffer;
        // Several chunks (up to 1 MiB each) must fit, or every one is dropped.
        if buffer.max_size.0 < 8 << 20 {
            return Err(fail(
                "agent.buffer.max_size".into(),
                format!("expected at least 8MiB, found {} bytes", buffer.max_size.0),
            ));
        }
        if buffer.segment_size.0 < 64 << 10 || buffer.segment_size.0 > buffer.max_size.0 {
            return Err(fail(
                "agent.buffer.segment_size".into(),
                format!(
                    "expected between 64KiB and max_size ({} bytes), found {} bytes",
                    buffer.max_size.0, buffer.segment_size.0
                ),
            ));
        }
        self.agent.sentry.check(&fail)?;
        crate::route::check(&self.aggregator.alerting, &fail)?;
        self.agent.kubernetes.check(&fail)?;
        crate::receivers::check(&self.aggregator.alerting.receivers, &fail)?;
        if self.aggregator.retention_days == 0 {
            return Err(fail(
                "aggregator.retention_days".into(),
                "expected at least 1 day, found 0".into(),
            ));
        }
        let alerting = &self.aggregator.alerting;
        if alerting.evaluation_interval.0 < std::time::Duration::from_secs(1) {
            return Err(fail(
                "aggregator.alerting.evaluation_interval".into(),
                format!(
                    "expected at least 1s, found {}ms",
                    alerting.evaluation_interval.0.as_millis()
                ),
            ));
        }
        crate::rules::check_rules(&alerting.rules, "aggregator.alerting.rules", &fail)?;
        if self.aggregator.issues.max_events_per_issue == 0 {
            return Err(fail(
                "aggregator.issues.max_events_per_issue".into(),
                "expected at least 1, found 0".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        crate::parse("mecha.yaml", text, &no_env)
    }

    #[test]
    fn buffer_keys_are_read_and_checked() {
        let c = parse(
            "agent:\n  buffer:\n    type: disk\n    max_size: 2GiB\n    fsync_interval: 0s\n    when_full: drop_newest\n",
        );
        let Ok(c) = c else {
            panic!("valid buffer config rejected: {c:?}");
        };
        assert_eq!(c.agent.buffer.kind, Some(BufferKind::Disk));
        assert_eq!(c.agent.buffer.max_size, ByteSize(2 << 30));
        assert_eq!(c.agent.buffer.fsync_interval.0, std::time::Duration::ZERO);
        assert_eq!(c.agent.buffer.when_full, WhenFull::DropNewest);
        let e = parse("agent:\n  buffer:\n    max_size: 8MiB\n    segment_size: 16MiB\n");
        let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("mecha.yaml:4: agent.buffer.segment_size"),
            "{msg}"
        );
        let e = parse("agent:\n  buffer:\n    type: tape\n");
        let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("agent.buffer.type"), "{msg}");
    }

    #[test]
    fn an_empty_file_gives_every_default() {
        let c = parse("").unwrap_or_default();
        assert_eq!(c.agent.sources.len(), 1);
        assert_eq!(c.aggregator.retention_days, 7);
        assert_eq!(c.agent.forward.compression, Compression::Zstd);
    }

    #[test]
    fn a_full_config_is_read() {
        let c = parse(
            "data_dir: /tmp/x\nagent:\n  admin: {listen: off}\n  sources:\n    app:\n      type: tail\n      include: [\"/logs/*.log\"]\n      read_from: end\n      container_format: cri\n      format: json\n      multiline:\n        start_pattern: '^\\d{4}-'\n        flush_timeout: 2s\n  forward:\n    endpoint: http://agg:4317\n    compression: gzip\naggregator:\n  http: {listen: ':0'}\n  retention_days: 3\n",
        );
        let c = match c {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.agent.admin.listen, Listen(None));
        let app = &c.agent.sources["app"];
        assert_eq!(app.read_from, ReadFrom::End);
        assert_eq!(app.container_format, AutoOr::Is(ContainerFormat::Cri));
        assert_eq!(app.format.0, BodyFormat::Json);
        let ml = app.multiline.as_ref().map(|m| m.flush_timeout.0.as_secs());
        assert_eq!(ml, Some(2));
        assert_eq!(c.aggregator.retention_days, 3);
        assert_eq!(c.aggregator.issues.max_events_per_issue, 100);
    }

    #[test]
    fn mistakes_name_line_and_key() {
        let cases = [
            (
                "agent:\n  sources:\n    app:\n      type: tail\n      include: ['[']\n",
                5,
                "agent.sources.app.include[0]",
            ),
            (
                "agent:\n  forward:\n    batch_timeout: 10\n",
                3,
                "agent.forward.batch_timeout",
            ),
            (
                "aggregator:\n  http:\n    listen: elastic:9200\n",
                3,
                "aggregator.http.listen",
            ),
            (
                "agent:\n  sources:\n    app:\n      type: tail\n      format: yaml\n",
                5,
                "agent.sources.app.format",
            ),
            ("agent:\n  surces: {}\n", 2, "agent.surces"),
            (
                "agent:\n  forward:\n    endpoint: agg:4317\n",
                3,
                "agent.forward.endpoint",
            ),
            (
                "aggregator:\n  retention_days: 0\n",
                2,
                "aggregator.retention_days",
            ),
            (
                "aggregator:\n  issues:\n    max_events_per_issue: 0\n",
                3,
                "aggregator.issues.max_events_per_issue",
            ),
        ];
        for (text, line, key) in cases {
            match parse(text) {
                Err(ConfigError::Invalid {
                    line: l,
                    key: k,
                    file,
                    ..
                }) => {
                    assert_eq!(
                        (l, k.as_str(), file.as_str()),
                        (line, key, "mecha.yaml"),
                        "{text}"
                    );
                }
                other => panic!("expected an error for {text:?}, got {other:?}"),
            }
        }
    }
}
