//! The way of a Sentry event through the aggregator's writer: recognised by
//! its `sentry.event` attribute, read and grouped ([`EventRouter::take_events`]),
//! recorded in the [`IssueStore`], then indexed in the log search as a slim
//! record (tags as attributes, the issue id added, the event JSON left out),
//! and announced to [`IssueEvent`] subscribers once both commits are done.
//!
//! Records without `sentry.event` pass through untouched. This module must
//! not commit the log index (the writer does) nor answer HTTP.

use std::sync::Arc;
use std::time::Instant;

use mecha_parsers::sentry::attr;
use mecha_parsers::{LogRecord, Severity};
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use super::grouping::{self, group};
use super::store::{IssueStore, NewEvent, Recorded};
use super::{IssueEvent, Status};
use crate::Error;
use crate::metrics::{DiscardReason, EventOutcome, Metrics};

/// Attribute added to an event's log record: the issue it was grouped into.
pub const ISSUE_ID_ATTR: &str = "sentry.issue_id";
/// Attribute added to an event's log record: the issue title.
pub const TITLE_ATTR: &str = "sentry.title";
/// Attribute added to an event's log record: the culprit.
pub const CULPRIT_ATTR: &str = "sentry.culprit";

/// Event fields copied to the log record as searchable attributes
/// (`environment:production`), besides the event's own tags.
const SEARCHABLE_FIELDS: [&str; 6] = [
    "environment",
    "release",
    "transaction",
    "platform",
    "server_name",
    "logger",
];

/// An event read from its record, waiting for the issue store.
#[derive(Debug)]
pub struct PendingEvent {
    /// Which batch of the group commit it came in.
    pub batch: usize,
    /// What the issue store records.
    pub event: NewEvent,
    /// What the log search indexes (without the event JSON).
    pub record: LogRecord,
}

/// Reads, groups, records and announces Sentry events.
#[derive(Debug, Clone)]
pub struct EventRouter {
    store: Arc<IssueStore>,
    metrics: Arc<Metrics>,
    hooks: broadcast::Sender<IssueEvent>,
}

impl EventRouter {
    /// A router into `store`, announcing on `hooks`.
    pub fn new(
        store: Arc<IssueStore>,
        metrics: Arc<Metrics>,
        hooks: broadcast::Sender<IssueEvent>,
    ) -> EventRouter {
        EventRouter {
            store,
            metrics,
            hooks,
        }
    }

    /// The store events go to.
    pub fn store(&self) -> &Arc<IssueStore> {
        &self.store
    }

    /// Moves the Sentry events of `records` (batch number `batch`) to
    /// `pending` and returns the rest. An unreadable event stays a log
    /// record, with a `parse_error` saying why.
    pub fn take_events(
        &self,
        batch: usize,
        records: Vec<LogRecord>,
        pending: &mut Vec<PendingEvent>,
    ) -> Vec<LogRecord> {
        // The common case, a batch of log lines, costs one lookup per record.
        if !records.iter().any(is_event) {
            return records;
        }
        let mut logs = Vec::with_capacity(records.len());
        for record in records {
            if !is_event(&record) {
                logs.push(record);
                continue;
            }
            self.metrics.issue_events(EventOutcome::Received, 1);
            match read_event(record) {
                Ok((event, record)) => {
                    self.metrics.grouping_duration.observe(event.1);
                    pending.push(PendingEvent {
                        batch,
                        event: event.0,
                        record,
                    });
                }
                Err(invalid) => {
                    let (mut record, reason) = *invalid;
                    self.metrics.issue_events(EventOutcome::Invalid, 1);
                    tracing::debug!(%reason, "unreadable sentry event kept as a log line");
                    record.attributes.insert(
                        mecha_parsers::model::keys::PARSE_ERROR.to_string(),
                        Value::from(format!("sentry event: {reason}")),
                    );
                    logs.push(record);
                }
            }
        }
        logs
    }

    /// Records events in the issue store (one durable commit).
    pub fn record(&self, events: Vec<NewEvent>) -> Result<Vec<Recorded>, Error> {
        self.store.record(events).inspect_err(|_| {
            self.metrics.issue_store_error("record");
        })
    }

    /// Notes events as indexed; a failure is logged and counted, not fatal
    /// (the events are indexed again, idempotently, on a replay).
    pub fn mark_indexed(&self, events: &[(u64, String)]) {
        if let Err(e) = self.store.mark_indexed(events) {
            self.metrics.issue_store_error("mark_indexed");
            tracing::warn!(error = %e, "cannot note events as indexed; a replay will index them again");
        }
    }

    /// Counts what the store did and tells subscribers, once both commits
    /// are durable.
    pub fn announce(&self, recorded: &[(String, Recorded)]) {
        let mut grouped = 0;
        let mut duplicates = 0;
        for (_, r) in recorded {
            if r.duplicate {
                duplicates += 1;
                continue;
            }
            grouped += 1;
            if r.created {
                self.metrics.issues_created.inc();
            }
            if r.regressed {
                self.metrics.issues_regressed.inc();
            }
        }
        self.metrics.issue_events(EventOutcome::Grouped, grouped);
        self.metrics
            .issue_events(EventOutcome::Duplicate, duplicates);
        self.metrics.discarded(DiscardReason::Duplicate, duplicates);
        if self.hooks.receiver_count() == 0 {
            return;
        }
        for (event_id, r) in recorded.iter().filter(|(_, r)| !r.duplicate) {
            let event_id = event_id.clone();
            let issue = r.issue.clone();
            if r.created {
                let _ = self.hooks.send(IssueEvent::Created {
                    issue: issue.clone(),
                    event_id: event_id.clone(),
                });
            }
            if r.regressed && issue.status == Status::Unresolved {
                let _ = self.hooks.send(IssueEvent::Regressed {
                    issue: issue.clone(),
                    event_id: event_id.clone(),
                });
            }
            let _ = self.hooks.send(IssueEvent::Event { issue, event_id });
        }
    }
}

/// Whether a record carries a Sentry event.
pub fn is_event(record: &LogRecord) -> bool {
    record.attributes.contains_key(attr::EVENT)
}

/// An event, its grouping time in seconds, and its slim log record.
type ReadEvent = ((NewEvent, f64), LogRecord);

/// Reads the event of `record` and groups it; on failure gives the record
/// back with the reason.
fn read_event(mut record: LogRecord) -> Result<ReadEvent, Box<(LogRecord, String)>> {
    match parse_event(&mut record) {
        Ok(event) => Ok((event, record)),
        Err(reason) => Err(Box::new((record, reason))),
    }
}

/// Reads and groups the event of `record`, slimming the record for the log
/// index; on failure leaves the event text in place and says why.
fn parse_event(record: &mut LogRecord) -> Result<(NewEvent, f64), String> {
    let started = Instant::now();
    let project = match record.attributes.get(attr::PROJECT_ID) {
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    };
    let Some(project) = project else {
        let found = record.attributes.get(attr::PROJECT_ID).cloned();
        return Err(format!(
            "{}: expected a decimal project id, found {}",
            attr::PROJECT_ID,
            found.map_or_else(|| "nothing".to_string(), |v| v.to_string())
        ));
    };
    let text = match record.attributes.remove(attr::EVENT) {
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let event = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => map,
        Ok(other) => {
            let reason = format!("expected a JSON object, found {}", kind(&other));
            record
                .attributes
                .insert(attr::EVENT.to_string(), Value::String(text));
            return Err(reason);
        }
        Err(e) => {
            let reason = format!("invalid JSON: {e}");
            record
                .attributes
                .insert(attr::EVENT.to_string(), Value::String(text));
            return Err(reason);
        }
    };
    let id_attr = record
        .attributes
        .get(attr::EVENT_ID)
        .and_then(Value::as_str);
    let Some(event_id) = id_attr
        .or_else(|| event.get("event_id").and_then(Value::as_str))
        .and_then(normalize_event_id)
    else {
        let found = id_attr
            .unwrap_or("nothing")
            .chars()
            .take(64)
            .collect::<String>();
        record
            .attributes
            .insert(attr::EVENT.to_string(), Value::String(text));
        return Err(format!(
            "{}: expected 32 hex digits, found {found:?}",
            attr::EVENT_ID
        ));
    };
    let grouping = group(&event);
    let level = event_level(&event);
    if record.severity == Severity::Unspecified {
        record.severity = Severity::parse(&level).unwrap_or(Severity::Error);
    }
    if record.body.is_empty() {
        record.body = grouping.title.clone();
    }
    let attrs = &mut record.attributes;
    attrs.insert(attr::EVENT_ID.to_string(), Value::from(event_id.as_str()));
    attrs.insert(TITLE_ATTR.to_string(), Value::from(grouping.title.as_str()));
    if !grouping.culprit.is_empty() {
        attrs.insert(
            CULPRIT_ATTR.to_string(),
            Value::from(grouping.culprit.as_str()),
        );
    }
    for field in SEARCHABLE_FIELDS {
        if let Some(v) = event.get(field).and_then(scalar_text) {
            attrs.entry(field.to_string()).or_insert(Value::from(v));
        }
    }
    for (k, v) in tags(&event) {
        // Tags never replace the record's own attributes (`sentry.*` above).
        attrs.entry(k.to_string()).or_insert(Value::from(v));
    }
    let user = user_key(&event);
    if let Some(u) = &user {
        attrs
            .entry("user".to_string())
            .or_insert(Value::from(u.as_str()));
    }
    let str_of = |k: &str| event.get(k).and_then(scalar_text);
    let new = NewEvent {
        project,
        event_id,
        timestamp_ns: record.effective_timestamp_ns(),
        level,
        user,
        release: str_of("release"),
        environment: str_of("environment"),
        grouping,
        json: text,
    };
    Ok((new, started.elapsed().as_secs_f64()))
}

/// 32 lowercase hex digits from an id with or without dashes, any case.
fn normalize_event_id(id: &str) -> Option<String> {
    let hex: String = id
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// The event's level as Sentry names it (`error` when missing).
fn event_level(event: &Map<String, Value>) -> String {
    match event.get("level").and_then(Value::as_str) {
        Some(l) if !l.trim().is_empty() => l.trim().to_ascii_lowercase(),
        _ => "error".to_string(),
    }
}

/// The event's tags as pairs, whether sent as `[[k, v], ...]` or an object.
fn tags(event: &Map<String, Value>) -> Vec<(&str, String)> {
    match event.get("tags") {
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), scalar_text(v)?)))
            .collect(),
        Some(Value::Array(pairs)) => pairs
            .iter()
            .filter_map(|p| match p.as_array()?.as_slice() {
                [k, v] => Some((k.as_str()?, scalar_text(v)?)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The key a user is counted by: id, else email, else username, else IP.
fn user_key(event: &Map<String, Value>) -> Option<String> {
    let user = event.get("user")?.as_object()?;
    ["id", "email", "username", "ip_address"]
        .iter()
        .find_map(|k| user.get(*k).and_then(scalar_text))
}

/// A string, number or boolean as text; `None` for anything else or empty.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads and groups an event record exactly as the writer does, for
/// benchmarks and fuzzing: `Some(grouping)` when the record is a readable
/// event.
pub fn group_record(record: LogRecord) -> Option<grouping::Grouping> {
    read_event(record).ok().map(|((e, _), _)| e.grouping)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event_record(project: &str, event_id: &str, event: &Value) -> LogRecord {
        let mut r = crate::test_support::event_record(1, project, event_id, event);
        r.severity = Severity::Unspecified;
        r
    }

    #[test]
    fn an_event_record_becomes_a_slim_searchable_record() {
        let event = json!({
            "level": "warning",
            "environment": "production",
            "release": "shop@1.4.2",
            "tags": [["tenant", "acme"], ["sentry.event_id", "spoof"]],
            "user": {"email": "ann@example.com"},
            "exception": {"values": [{"type": "KeyError", "value": "'k'"}]}
        });
        let id = "9F1C2A7E-3B8D-4C5F-A6E7-D8C9B0A1F2E3";
        let ((e, _), r) = read_event(event_record("42", id, &event)).unwrap();
        assert_eq!(e.project, 42);
        assert_eq!(e.event_id, "9f1c2a7e3b8d4c5fa6e7d8c9b0a1f2e3");
        assert_eq!(e.level, "warning");
        assert_eq!(e.user.as_deref(), Some("ann@example.com"));
        assert_eq!(e.release.as_deref(), Some("shop@1.4.2"));
        assert_eq!(r.severity, Severity::Warn);
        assert_eq!(r.body, "KeyError: 'k'");
        assert!(!r.attributes.contains_key(attr::EVENT));
        assert_eq!(r.attributes["environment"], "production");
        assert_eq!(r.attributes["tenant"], "acme");
        assert_eq!(r.attributes[attr::EVENT_ID], e.event_id.as_str());
        assert_eq!(r.attributes[TITLE_ATTR], "KeyError: 'k'");
    }

    #[test]
    fn unreadable_events_say_why_and_keep_their_text() {
        let ok = json!({"message": "m"});
        for (project, id, text, reason) in [
            (
                "x",
                "0".repeat(32),
                ok.to_string(),
                "expected a decimal project id",
            ),
            (
                "1",
                "nothex".into(),
                ok.to_string(),
                "expected 32 hex digits",
            ),
            ("1", "0".repeat(32), "{not json".into(), "invalid JSON"),
            (
                "1",
                "0".repeat(32),
                "[1]".into(),
                "expected a JSON object, found an array",
            ),
        ] {
            let mut r = event_record(project, &id, &ok);
            r.attributes
                .insert(attr::EVENT.into(), Value::from(text.as_str()));
            let (back, why) = *read_event(r).err().unwrap();
            assert!(why.contains(reason), "{why}");
            assert_eq!(back.attributes[attr::EVENT], text.as_str());
        }
    }

    #[test]
    fn users_count_by_id_then_email_then_username_then_ip() {
        for (user, key) in [
            (json!({"id": 7, "email": "a@b.c"}), Some("7")),
            (json!({"email": "a@b.c", "username": "ann"}), Some("a@b.c")),
            (
                json!({"username": "ann", "ip_address": "10.0.0.1"}),
                Some("ann"),
            ),
            (json!({"ip_address": "10.0.0.1"}), Some("10.0.0.1")),
            (json!({}), None),
        ] {
            let e = json!({ "user": user });
            assert_eq!(user_key(e.as_object().unwrap()).as_deref(), key, "{user}");
        }
    }
}
