//! A Sentry event as an OTLP log record, the form in which it travels from
//! the agent to the aggregator (see [`super::attr`]).
//!
//! One event is one record: the whole normalised, scrubbed event rides as
//! compact JSON text in [`super::attr::EVENT`], next to its id and project;
//! the body is a human line for the log search; severity and time come from
//! normalisation. No source position: the aggregator deduplicates events by
//! their id.

use serde_json::{Map, Value};

use super::attr;
use super::normalize::Normalized;
use crate::model::{LogRecord, Resource, keys};

/// Longest body line, in bytes; the full text stays in the event.
const MAX_BODY_BYTES: usize = 1024;

/// The record that carries `event` (already normalised and scrubbed) of
/// `project_id`. `resource` is the agent's (node name); the event's
/// `server_name` becomes `host.name` and the name part of its `release`
/// (`shop@1.2.3` → `shop`) `service.name`.
pub fn event_record(
    event: &Map<String, Value>,
    normalized: &Normalized,
    project_id: u64,
    observed_ns: i64,
    resource: &Resource,
) -> LogRecord {
    let mut attributes = Map::new();
    attributes.insert(
        attr::EVENT_ID.into(),
        Value::from(normalized.event_id.clone()),
    );
    attributes.insert(attr::PROJECT_ID.into(), Value::from(project_id.to_string()));
    attributes.insert(attr::EVENT.into(), Value::from(compact_json(event)));
    let mut resource = resource.clone();
    if let Some(host) = event
        .get("server_name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        resource.set(keys::HOST, host);
    }
    if let Some(service) = event
        .get("release")
        .and_then(Value::as_str)
        .and_then(|r| r.split_once('@'))
        .map(|(name, _)| name)
        .filter(|s| !s.is_empty())
    {
        resource.set(keys::SERVICE, service);
    }
    LogRecord {
        timestamp_ns: normalized.timestamp_ns,
        observed_ns,
        severity: normalized.level,
        body: body_line(event),
        attributes,
        resource,
        position: None,
    }
}

fn compact_json(event: &Map<String, Value>) -> String {
    // Serialising a map of JSON values cannot fail.
    serde_json::to_string(event).unwrap_or_else(|_| "{}".to_string())
}

/// The line an event shows in the log search: `Type: value` of its last
/// exception (the one raised, in Sentry's order), else its formatted
/// message, else its `message`, else `<unlabeled event>`, cut to 1 KiB.
pub fn body_line(event: &Map<String, Value>) -> String {
    let mut line = exception_line(event)
        .or_else(|| message_line(event))
        .unwrap_or_else(|| "<unlabeled event>".to_string());
    crate::util::truncate_str(&mut line, MAX_BODY_BYTES);
    line
}

fn exception_line(event: &Map<String, Value>) -> Option<String> {
    // `exception` is `{"values": [...]}` or, in old SDKs, the list itself.
    let list = match event.get("exception")? {
        Value::Object(o) => o.get("values")?.as_array()?,
        Value::Array(a) => a,
        _ => return None,
    };
    let last = list.iter().rev().find_map(Value::as_object)?;
    let ty = last
        .get("type")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let value = last
        .get("value")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    match (ty, value) {
        (Some(t), Some(v)) => Some(format!("{t}: {v}")),
        (Some(t), None) => Some(t.to_string()),
        (None, Some(v)) => Some(v.to_string()),
        (None, None) => None,
    }
}

fn message_line(event: &Map<String, Value>) -> Option<String> {
    let from_entry = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o
                .get("formatted")
                .or_else(|| o.get("message"))
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        }
    };
    event
        .get("logentry")
        .and_then(from_entry)
        .or_else(|| event.get("message").and_then(from_entry))
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Severity;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// What the aggregator receives for a typical Python exception: read
    /// the snapshot to review the contract.
    #[test]
    fn a_python_exception_record_snapshot() {
        let e = obj(serde_json::json!({
            "event_id": "9ec79c33ec9942ab8353589fcb2e04dc",
            "level": "error",
            "platform": "python",
            "server_name": "web-7d9f8b-x2x9z",
            "release": "shop@1.4.2",
            "exception": {"values": [{
                "type": "ValueError",
                "value": "order 17 not found",
                "stacktrace": {"frames": [{"filename": "shop/orders.py", "function": "load", "lineno": 42, "in_app": true}]}
            }]}
        }));
        let n = Normalized {
            event_id: "9ec79c33ec9942ab8353589fcb2e04dc".into(),
            timestamp_ns: 1_763_892_000_000_000_000,
            level: Severity::Error,
            platform: "python".into(),
            user_key: None,
            release: Some("shop@1.4.2".into()),
            environment: None,
        };
        let mut res = Resource::default();
        res.set(keys::NODE, "node-a");
        insta::assert_json_snapshot!(event_record(&e, &n, 42, 1_763_892_000_500_000_000, &res));
    }

    #[test]
    fn the_body_is_the_last_exception_then_the_message() {
        let e = obj(serde_json::json!({
            "exception": {"values": [
                {"type": "KeyError", "value": "'id'"},
                {"type": "ValueError", "value": "bad input"}
            ]},
            "message": "ignored"
        }));
        assert_eq!(body_line(&e), "ValueError: bad input");
        let e = obj(serde_json::json!({"exception": [{"type": "Panic"}]}));
        assert_eq!(body_line(&e), "Panic");
        let e = obj(serde_json::json!({"logentry": {"message": "x %s", "formatted": "x 1"}}));
        assert_eq!(body_line(&e), "x 1");
        let e = obj(serde_json::json!({"message": {"message": "raw"}}));
        assert_eq!(body_line(&e), "raw");
        let e = obj(serde_json::json!({"message": "plain"}));
        assert_eq!(body_line(&e), "plain");
        assert_eq!(body_line(&Map::new()), "<unlabeled event>");
        let e = obj(serde_json::json!({"message": "é".repeat(1000)}));
        assert!(body_line(&e).len() <= MAX_BODY_BYTES);
    }

    #[test]
    fn the_record_carries_the_event_and_its_facts() {
        let e = obj(serde_json::json!({
            "event_id": "0123456789abcdef0123456789abcdef",
            "message": "boom",
            "server_name": "web-1",
            "release": "shop@1.2.3"
        }));
        let n = Normalized {
            event_id: "0123456789abcdef0123456789abcdef".into(),
            timestamp_ns: 5,
            level: Severity::Warn,
            platform: "other".into(),
            user_key: None,
            release: Some("shop@1.2.3".into()),
            environment: None,
        };
        let mut res = Resource::default();
        res.set(keys::NODE, "node-a");
        let r = event_record(&e, &n, 42, 9, &res);
        assert_eq!(
            r.attributes.get(attr::EVENT_ID),
            Some(&Value::from("0123456789abcdef0123456789abcdef"))
        );
        assert_eq!(r.attributes.get(attr::PROJECT_ID), Some(&Value::from("42")));
        let back: Value = serde_json::from_str(
            r.attributes
                .get(attr::EVENT)
                .and_then(Value::as_str)
                .unwrap_or(""),
        )
        .unwrap_or_default();
        assert_eq!(back, Value::Object(e));
        assert_eq!(
            (r.timestamp_ns, r.observed_ns, r.severity),
            (5, 9, Severity::Warn)
        );
        assert_eq!(r.body, "boom");
        assert_eq!(r.resource.get(keys::NODE), Some("node-a"));
        assert_eq!(r.resource.get(keys::HOST), Some("web-1"));
        assert_eq!(r.resource.get(keys::SERVICE), Some("shop"));
        assert_eq!(r.position, None);
    }
}
