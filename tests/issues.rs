//! Sentry events into issues through the real binary: `mecha aggregator`
//! receives event records over OTLP/gRPC exactly as the agent forwards them
//! (one record per event with `sentry.event_id`, `sentry.project_id` and
//! `sentry.event`), groups them into issues that survive a restart and a
//! `kill -9`, never counts a replayed event twice, makes the events
//! searchable by tag and text, and `mecha issues` lists and changes them.

mod common;

use std::process::{Command, Output};

use common::{Mecha, search, total};
use mecha_parsers::sentry::attr;
use mecha_parsers::{LogRecord, Severity};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use serde_json::{Value, json};
use tonic::codec::CompressionEncoding;

/// A `KeyError` of `lookup` as `sentry-sdk` reports it, for one user.
fn key_error(key: &str, user: &str) -> Value {
    json!({
        "level": "error",
        "platform": "python",
        "release": "shop@1.4.2",
        "environment": "production",
        "server_name": "web-1",
        "user": {"id": user},
        "tags": [["tenant", "acme"]],
        "extra": {"cart_items": 3},
        "breadcrumbs": {"values": [{"category": "http", "message": "GET /cart"}]},
        "exception": {"values": [{
            "type": "KeyError",
            "value": format!("'{key}'"),
            "mechanism": {"type": "generic", "handled": true},
            "stacktrace": {"frames": [
                {"module": "__main__", "filename": "app.py", "function": "main",
                 "context_line": "    lookup({}, key)", "lineno": 44, "in_app": true},
                {"module": "__main__", "filename": "app.py", "function": "lookup",
                 "context_line": "    return table[key]", "lineno": 16, "in_app": true}
            ]}
        }]}
    })
}

/// `capture_message` with a number and a UUID in it.
fn charge_failed(n: u32, order: &str) -> Value {
    json!({
        "level": "warning",
        "platform": "python",
        "release": "shop@1.4.3",
        "environment": "staging",
        "message": format!("charge {n} failed for order {order}")
    })
}

/// The record the agent forwards for one event.
fn record(event_id: u32, project: u32, event: &Value, ago_s: i64) -> LogRecord {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let ts = now - ago_s * 1_000_000_000;
    let mut r = LogRecord::new(body(event), now);
    r.timestamp_ns = ts;
    // The agent maps the event level onto the record's severity.
    r.severity = event["level"]
        .as_str()
        .and_then(Severity::parse)
        .unwrap_or(Severity::Error);
    let id = format!("{event_id:032x}");
    let mut event = event.clone();
    event["event_id"] = json!(id);
    for (k, v) in [
        (attr::EVENT_ID, id),
        (attr::PROJECT_ID, project.to_string()),
        (attr::EVENT, event.to_string()),
    ] {
        r.attributes.insert(k.to_string(), Value::from(v));
    }
    r
}

/// The human line the agent puts in the body.
fn body(event: &Value) -> String {
    match event["exception"]["values"][0].as_object() {
        Some(e) => format!(
            "{}: {}",
            e["type"].as_str().unwrap_or_default(),
            e["value"].as_str().unwrap_or_default()
        ),
        None => event["message"].as_str().unwrap_or_default().to_string(),
    }
}

/// Sends records as one zstd-compressed OTLP export, as the agent does.
fn export(rt: &tokio::runtime::Runtime, grpc: &str, records: &[LogRecord]) {
    let req = mecha_parsers::otlp::encode_logs(records);
    rt.block_on(async {
        let mut client = LogsServiceClient::connect(format!("http://{grpc}"))
            .await
            .unwrap_or_else(|e| panic!("connect {grpc}: {e}"))
            .send_compressed(CompressionEncoding::Zstd);
        client
            .export(req)
            .await
            .unwrap_or_else(|e| panic!("export: {e}"));
    });
}

fn get(http: &str, path: &str) -> Value {
    let resp = reqwest::blocking::get(format!("http://{http}{path}"))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
    resp.json()
        .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
}

/// The issues of `project` (all statuses) by title.
fn issues(http: &str, project: u32) -> Vec<Value> {
    let v = get(
        http,
        &format!("/api/v1/issues?project={project}&status=all"),
    );
    v["issues"].as_array().cloned().unwrap_or_default()
}

fn by_title<'a>(list: &'a [Value], prefix: &str) -> &'a Value {
    list.iter()
        .find(|i| i["title"].as_str().is_some_and(|t| t.starts_with(prefix)))
        .unwrap_or_else(|| panic!("no issue titled {prefix:?} in {list:?}"))
}

fn mecha(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mecha"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run mecha: {e}"))
}

const ORDER_A: &str = "2c7d3e60-3a4b-4c8e-9f6a-0b1c2d3e4f50";
const ORDER_B: &str = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";

#[test]
fn events_become_issues_that_survive_restarts_and_replays() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = tmp.path().join("agg");
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let args = ["--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"];
    let agg = Mecha::start("aggregator", &data, &args);
    let (grpc, http) = (agg.addr("grpc"), agg.addr("http"));

    let first = vec![
        record(1, 1, &key_error("apple", "u1"), 300),
        record(2, 1, &key_error("pear", "u2"), 200),
        record(3, 1, &charge_failed(3, ORDER_A), 150),
        // An ordinary log line in the same export goes on as before.
        LogRecord {
            timestamp_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
            position: Some(mecha_parsers::SourcePosition {
                stream: "app-log".into(),
                offset: 120,
            }),
            ..LogRecord::new("plain log line about checkout", 1)
        },
    ];
    let second = vec![
        record(4, 1, &key_error("plum", "u1"), 100),
        record(5, 1, &charge_failed(240, ORDER_B), 50),
        record(6, 2, &key_error("apple", "u9"), 40),
    ];
    export(&rt, &grpc, &first);
    export(&rt, &grpc, &second);
    // An SDK retry or an agent replay of the first export: nothing changes.
    export(&rt, &grpc, &first);

    let check = |http: &str, key_errors: u64, users: u64| {
        let list = issues(http, 1);
        assert_eq!(list.len(), 2, "{list:?}");
        let ke = by_title(&list, "KeyError");
        assert_eq!(ke["count"], key_errors, "{ke}");
        assert_eq!(ke["users"], users, "{ke}");
        assert_eq!(ke["level"], "error");
        assert_eq!(ke["releases"], json!(["shop@1.4.2"]));
        assert!(ke["id"].is_u64());
        let charge = by_title(&list, "charge");
        assert_eq!(charge["count"], 2, "{charge}");
        assert_eq!(charge["level"], "warning");
        assert_eq!(charge["releases"], json!(["shop@1.4.3"]));
        (
            ke["id"].as_u64().unwrap_or(0),
            charge["id"].as_u64().unwrap_or(0),
        )
    };
    let (ke_id, charge_id) = check(&http, 3, 2);
    assert_ne!(ke_id, charge_id);
    // Project 2 has its own issue for the same error.
    let other = issues(&http, 2);
    assert_eq!(other.len(), 1);
    assert_ne!(other[0]["id"].as_u64(), Some(ke_id));

    let detail = get(&http, &format!("/api/v1/issues/{ke_id}"));
    assert_eq!(detail["latest_event"]["extra"]["cart_items"], 3);
    assert_eq!(detail["latest_event"]["event_id"], format!("{:032x}", 4));
    assert_eq!(
        detail["latest_event"]["exception"]["values"][0]["stacktrace"]["frames"][1]["function"],
        "lookup"
    );
    let events = get(&http, &format!("/api/v1/issues/{ke_id}/events"));
    let ids: Vec<&str> = events["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(ids, [4, 2, 1].map(|n| format!("{n:032x}")), "newest first");

    // Searchable in the log search, by tag, text and issue: every export
    // above was answered only after both commits, so there is nothing to wait for.
    assert_eq!(total(&search(&http, "environment:production", 1)), 4);
    assert_eq!(
        total(&search(&http, "tenant:acme AND sentry.project_id:1", 1)),
        3
    );
    assert_eq!(
        total(&search(&http, &format!("sentry.issue_id:{charge_id}"), 1)),
        2
    );
    assert_eq!(total(&search(&http, "charge AND failed", 1)), 2);
    assert_eq!(total(&search(&http, "KeyError AND level:error", 1)), 4);
    let found = search(&http, "checkout", 5);
    assert_eq!(total(&found), 1, "{found}");

    // The CLI lists and changes issues.
    let server = format!("http://{http}");
    let out = mecha(&["issues", "--project", "1", "--server", &server]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("KeyError: 'plum'"), "{table}");
    assert!(table.contains("charge 240 failed"), "{table}");
    assert!(table.contains("2 issue(s)"), "{table}");
    let out = mecha(&["issues", "resolve", &ke_id.to_string(), "--server", &server]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("is resolved"));
    let out = mecha(&[
        "issues", "--status", "resolved", "--json", "--server", &server,
    ]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed["issues"][0]["id"], ke_id);
    let out = mecha(&["issues", "ignore", "999999", "--server", &server]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    let out = mecha(&["issues", "--sort", "loudest", "--server", &server]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("parameter sort"));

    // Killed without warning, then restarted on the same data.
    agg.kill();
    let agg = Mecha::start("aggregator", &data, &args);
    let (grpc, http) = (agg.addr("grpc"), agg.addr("http"));
    export(&rt, &grpc, &first);
    export(&rt, &grpc, &second);
    assert_eq!(
        check(&http, 3, 2),
        (ke_id, charge_id),
        "ids stable, nothing counted twice"
    );
    assert_eq!(total(&search(&http, "environment:production", 1)), 4);
    assert_eq!(total(&search(&http, "checkout", 1)), 1);
    let resolved = get(&http, &format!("/api/v1/issues/{ke_id}"));
    assert_eq!(resolved["status"], "resolved");

    // A new event of the resolved issue reopens it, across a clean restart.
    agg.stop();
    let agg = Mecha::start("aggregator", &data, &args);
    let (grpc, http) = (agg.addr("grpc"), agg.addr("http"));
    export(&rt, &grpc, &[record(7, 1, &key_error("fig", "u3"), 0)]);
    let reopened = get(&http, &format!("/api/v1/issues/{ke_id}"));
    assert_eq!(
        (
            &reopened["status"],
            &reopened["regressed"],
            &reopened["users"]
        ),
        (&json!("unresolved"), &json!(true), &json!(3))
    );
    assert_eq!(check(&http, 4, 3).0, ke_id);
    let metrics = reqwest::blocking::get(format!("http://{http}/metrics"))
        .and_then(|r| r.text())
        .unwrap_or_default();
    assert!(
        metrics.contains("mecha_aggregator_issues_regressed_total 1"),
        "{metrics}"
    );
    agg.stop();
}
