//! Builders shared by the unit tests of this crate.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use mecha_parsers::model::keys;
use mecha_parsers::{LogRecord, Severity, SourcePosition};
use serde_json::Value;

use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::days::{DAY_NS, day_of, now_ns};
use crate::store::writer::Writer;

/// Nanoseconds in an hour.
pub const HOUR_NS: i64 = 3_600 * 1_000_000_000;

/// Midnight (UTC) starting today, in nanoseconds.
pub fn today_start_ns() -> i64 {
    let now = now_ns();
    now - now.rem_euclid(DAY_NS)
}

/// A record at `ts` with a severity, a namespace and attributes.
pub fn record(ts: i64, severity: Severity, namespace: &str, body: &str) -> LogRecord {
    let mut r = LogRecord::new(body, ts);
    r.timestamp_ns = ts;
    r.severity = severity;
    r.resource.set(keys::NAMESPACE, namespace);
    r.resource.set(keys::POD, format!("{namespace}-pod"));
    r
}

/// Adds an attribute.
pub fn with_attr(mut r: LogRecord, key: &str, value: impl Into<Value>) -> LogRecord {
    r.attributes.insert(key.to_string(), value.into());
    r
}

/// Adds a source position.
pub fn at(mut r: LogRecord, stream: &str, offset: u64) -> LogRecord {
    r.position = Some(SourcePosition {
        stream: stream.into(),
        offset,
    });
    r
}

/// Opens a store and its writer in `dir`, unwrapping errors as test failures.
pub fn open_store(dir: &std::path::Path) -> (Arc<Store>, Writer) {
    let (store, hwms) = Store::open(dir).unwrap_or_else(|e| panic!("open store: {e}"));
    let store = Arc::new(store);
    let metrics = Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}")));
    let writer = Writer::new(Arc::clone(&store), hwms, metrics, 7);
    (store, writer)
}

/// Opens a store, an issue store and a writer that routes Sentry events
/// into it, in `dir`.
pub fn open_store_with_issues(
    dir: &std::path::Path,
) -> (Arc<Store>, Writer, Arc<crate::issues::IssueStore>) {
    let (store, writer) = open_store(&dir.join("logs"));
    let issues = Arc::new(
        crate::issues::IssueStore::open(&dir.join("issues"), 100)
            .unwrap_or_else(|e| panic!("open issue store: {e}")),
    );
    let metrics = Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}")));
    let (hooks, _) = tokio::sync::broadcast::channel(16);
    let router = crate::issues::route::EventRouter::new(Arc::clone(&issues), metrics, hooks);
    (store, writer.with_events(router), issues)
}

/// A record carrying a Sentry event, as the agent forwards it.
pub fn event_record(ts: i64, project: &str, event_id: &str, event: &Value) -> LogRecord {
    let mut r = LogRecord::new("", ts);
    r.timestamp_ns = ts;
    r.severity = Severity::Error;
    r.resource.set(keys::NAMESPACE, "shop");
    for (k, v) in [
        (mecha_parsers::sentry::attr::PROJECT_ID, project.to_string()),
        (mecha_parsers::sentry::attr::EVENT_ID, event_id.to_string()),
        (mecha_parsers::sentry::attr::EVENT, event.to_string()),
    ] {
        r.attributes.insert(k.to_string(), Value::from(v));
    }
    r
}

/// The UTC day of today, for assertions.
pub fn today() -> chrono::NaiveDate {
    day_of(now_ns())
}

/// A temporary directory, unwrapping errors as test failures.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

/// Options for a test aggregator in `dir` with both listeners on free ports.
pub fn options(dir: &std::path::Path) -> crate::AggregatorOptions {
    crate::AggregatorOptions {
        data_dir: dir.to_path_buf(),
        grpc_listen: Some(([127, 0, 0, 1], 0).into()),
        http_listen: Some(([127, 0, 0, 1], 0).into()),
        commit_interval: std::time::Duration::from_millis(50),
        ..crate::AggregatorOptions::default()
    }
}

/// Percent-encodes a query-string value.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET http://addr/api/v1/logs/search?...` with the given parameters; returns
/// the status and the JSON body.
pub async fn search(addr: std::net::SocketAddr, params: &[(&str, &str)]) -> (u16, Value) {
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let url = format!("http://{addr}/api/v1/logs/search?{}", query.join("&"));
    let resp = reqwest::get(&url).await.unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    (status, body)
}
