//! The real Sentry SDKs against the real binary: Python `sentry-sdk` (brotli
//! and gzip transports), `@sentry/node` (query-string auth, an unhandled
//! rejection) and `@sentry/browser` in Debian's headless Chromium on another
//! origin (CORS). Each app prints the event ids it sent; the test checks that
//! every one arrived, and that mecha grouped them into the issues a Sentry
//! server would have made.
//!
//! The peers come from `scripts/install-test-deps` (run by `scripts/test-all`);
//! a missing peer fails the test with that hint rather than skipping it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Mecha, wait_for};
use serde_json::Value;

/// Projects and their public keys, one per app, so each app's issues are
/// checked apart.
const CONFIG: &str = "\
agent:
  sentry:
    projects:
      - { id: 1, keys: [pybr] }
      - { id: 2, keys: [pygz] }
      - { id: 3, keys: [nodekey] }
      - { id: 4, keys: [browserkey] }
";

fn sdks() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sentry_sdks")
}

/// Runs a peer app and returns what it printed on its last line, as JSON.
fn run_app(program: &Path, args: &[&str]) -> Value {
    // A bare name (`node`) is looked up on PATH by `Command`.
    assert!(
        program.components().count() == 1 || program.exists(),
        "{} is missing: run scripts/install-test-deps",
        program.display()
    );
    let out = Command::new(program)
        .args(args)
        .current_dir(sdks())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): run scripts/install-test-deps",
                program.display()
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}\n{stdout}\n{}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("app printed {last:?}: {e}"))
}

fn node(script: &str, dsn: &str) -> Value {
    assert!(
        sdks().join("node_modules").is_dir(),
        "npm packages are missing: run scripts/install-test-deps"
    );
    run_app(Path::new("node"), &[script, dsn])
}

/// The ids an app sent, by scenario.
fn sent(v: &Value) -> BTreeMap<String, Vec<String>> {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("ids in {v}: {e}"))
}

fn get(url: &str) -> Value {
    let resp = reqwest::blocking::get(url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let body: Value = resp.json().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(status.is_success(), "GET {url}: {status} {body}");
    body
}

/// Every issue of a project, with the ids of its events: event id → issue.
fn issues_of(http: &str, project: u32) -> (BTreeMap<String, Value>, BTreeMap<u64, Value>) {
    let list = get(&format!(
        "http://{http}/api/v1/issues?project={project}&status=all&limit=100"
    ));
    let mut by_event = BTreeMap::new();
    let mut by_id = BTreeMap::new();
    for issue in list["issues"].as_array().cloned().unwrap_or_default() {
        let id = issue["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("id in {issue}"));
        let events = get(&format!(
            "http://{http}/api/v1/issues/{id}/events?limit=100"
        ));
        for e in events["events"].as_array().cloned().unwrap_or_default() {
            let eid = e["event_id"].as_str().unwrap_or_default().to_string();
            by_event.insert(eid, issue.clone());
        }
        by_id.insert(id, issue);
    }
    (by_event, by_id)
}

/// Waits until every id sent has an issue, and returns event id → issue.
fn wait_for_events(
    http: &str,
    project: u32,
    ids: &BTreeMap<String, Vec<String>>,
) -> BTreeMap<String, Value> {
    let want: BTreeSet<&String> = ids.values().flatten().collect();
    wait_for(
        &format!("the events of project {project} in issues"),
        // A deadline, not a measurement: a debug build beside other heavy
        // tests once took longer than 30 s to group a Python app's events.
        Duration::from_secs(90),
        || {
            let (by_event, _) = issues_of(http, project);
            want.iter()
                .all(|id| by_event.contains_key(*id))
                .then_some(by_event)
        },
    )
}

/// The issue id of each scenario, checking its events share one issue.
fn issue_per_scenario(
    ids: &BTreeMap<String, Vec<String>>,
    by_event: &BTreeMap<String, Value>,
) -> BTreeMap<String, Value> {
    ids.iter()
        .map(|(scenario, events)| {
            let issues: BTreeSet<u64> = events
                .iter()
                .map(|e| by_event[e]["id"].as_u64().unwrap_or_default())
                .collect();
            assert_eq!(
                issues.len(),
                1,
                "the events of {scenario} were split over issues {issues:?}"
            );
            (scenario.clone(), by_event[&events[0]].clone())
        })
        .collect()
}

fn assert_distinct(per: &BTreeMap<String, Value>) {
    let ids: BTreeSet<u64> = per
        .values()
        .map(|i| i["id"].as_u64().unwrap_or_default())
        .collect();
    assert_eq!(
        ids.len(),
        per.len(),
        "scenarios that Sentry keeps apart share an issue: {per:#?}"
    );
}

fn count(issue: &Value) -> u64 {
    issue["count"].as_u64().unwrap_or_default()
}

#[test]
fn python_node_and_browser_sdks_are_grouped_like_sentry() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let config = dir.path().join("mecha.yaml");
    std::fs::write(&config, CONFIG).unwrap_or_else(|e| panic!("{e}"));
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("{e}"));
    let include = format!("{}/*.log", logs.display());
    let config_arg = config.display().to_string();
    let mecha = Mecha::start(
        "standalone",
        &dir.path().join("data"),
        &[
            "--config",
            &config_arg,
            "--include",
            &include,
            "--http",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--grpc",
            "off",
            "--sentry",
            "127.0.0.1:0",
        ],
    );
    let http = mecha.addr("http");
    let sentry = mecha.addr("sentry");
    let python = sdks().join(".venv/bin/python");

    // Python, brotli and gzip: the same app, the same issues, apart by project.
    let mut python_issues = Vec::new();
    for (project, key, compression) in [(1, "pybr", "br"), (2, "pygz", "gzip")] {
        let dsn = format!("http://{key}@{sentry}/{project}");
        let ids = sent(&run_app(&python, &["python_app.py", &dsn, compression]));
        let by_event = wait_for_events(&http, project, &ids);
        let per = issue_per_scenario(&ids, &by_event);
        assert_distinct(&per);
        assert_eq!(count(&per["key_error"]), 3, "{:#}", per["key_error"]);
        assert_eq!(
            per["key_error"]["users"].as_u64(),
            Some(2),
            "{:#}",
            per["key_error"]
        );
        assert_eq!(count(&per["charge_failed"]), 3);
        assert_eq!(count(&per["json_error"]), 2);
        assert_eq!(count(&per["gateway"]), 2);
        assert_eq!(per["key_error"]["level"].as_str(), Some("error"));
        let releases = &per["key_error"]["releases"];
        assert_eq!(releases, &serde_json::json!(["shop@1.4.2"]), "{releases}");
        // The secret never left the node.
        let secret = &per["secret"];
        let detail = get(&format!(
            "http://{http}/api/v1/issues/{}",
            secret["id"].as_u64().unwrap_or_default()
        ));
        let extra = &detail["latest_event"]["extra"];
        assert_eq!(extra["db_password"].as_str(), Some("[Filtered]"), "{extra}");
        assert!(
            !detail.to_string().contains("4111 1111 1111 1111"),
            "a card number reached the issue: {detail}"
        );
        // What each scenario became: its count, users and level. (Titles
        // of message issues carry the latest event's own numbers.)
        let shape: BTreeMap<String, (u64, u64, String)> = per
            .iter()
            .map(|(s, i)| {
                let users = i["users"].as_u64().unwrap_or_default();
                let level = i["level"].as_str().unwrap_or_default().to_string();
                (s.clone(), (count(i), users, level))
            })
            .collect();
        python_issues.push(shape);
    }
    assert_eq!(
        python_issues[0], python_issues[1],
        "brotli and gzip transports grouped differently"
    );

    // Node: query-string auth, and an unhandled rejection.
    let dsn = format!("http://nodekey@{sentry}/3");
    let ids = sent(&node("node_app.mjs", &dsn));
    assert!(
        ids.contains_key("rejection"),
        "the SDK saw no rejection: {ids:?}"
    );
    let by_event = wait_for_events(&http, 3, &ids);
    let per = issue_per_scenario(&ids, &by_event);
    assert_distinct(&per);
    assert_eq!(count(&per["type_error"]), 2);

    // Browser: another origin, the SDK's text/plain requests and a preflighted one.
    let dsn = format!("http://browserkey@{sentry}/4");
    let out = node("browser_app.mjs", &dsn);
    assert_eq!(out["flushed"], Value::Bool(true), "{out}");
    let pre = &out["preflighted"];
    assert_eq!(
        pre["status"].as_u64(),
        Some(200),
        "preflighted request: {out}"
    );
    assert_eq!(pre["body"]["id"].as_str(), out["id"].as_str(), "{out}");
    let ids = sent(&out["sent"]);
    let by_event = wait_for_events(&http, 4, &ids);
    let per = issue_per_scenario(&ids, &by_event);
    assert_distinct(&per);
    assert!(
        per["uncaught"]["title"]
            .as_str()
            .is_some_and(|t| t.starts_with("TypeError")),
        "{:#}",
        per["uncaught"]
    );
    mecha.stop();
}
