//! Rule engine tests: real tantivy and issue stores, paused tokio time (the
//! engine's wall clock follows it) and a sink that records every put.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use mecha_config::RuleConfig;
use mecha_parsers::Severity;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::*;
use crate::alert::AlertSink;
use crate::issues::route::EventRouter;
use crate::store::writer::Writer;
use crate::test_support::*;

/// Remembers every put.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<Vec<Alert>>>);

impl AlertSink for Recorder {
    fn put(&self, alerts: Vec<Alert>) {
        self.0.lock().unwrap().push(alerts);
    }
}

impl Recorder {
    /// The puts since the last call.
    fn take(&self) -> Vec<Vec<Alert>> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct Setup {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    issues: Arc<IssueStore>,
    writer: Writer,
    hooks: broadcast::Sender<IssueEvent>,
    sink: Arc<Recorder>,
    clock: Clock,
}

fn setup() -> Setup {
    let dir = tempdir();
    let (store, writer) = open_store(&dir.path().join("logs"));
    let issues = Arc::new(IssueStore::open(&dir.path().join("issues"), 100).unwrap());
    let metrics = Arc::new(Metrics::new().unwrap());
    let (hooks, _) = broadcast::channel(64);
    let router = EventRouter::new(Arc::clone(&issues), metrics, hooks.clone());
    Setup {
        dir,
        store,
        issues,
        writer: writer.with_events(router),
        hooks,
        sink: Arc::new(Recorder::default()),
        clock: tokio_clock(),
    }
}

impl Setup {
    fn now(&self) -> i64 {
        (self.clock)()
    }

    async fn engine(&self, rules: &[RuleConfig]) -> RuleEngineHandle {
        let inputs = EngineInputs {
            store: Arc::clone(&self.store),
            issues: Arc::clone(&self.issues),
            sink: Arc::clone(&self.sink) as Arc<dyn AlertSink>,
            metrics: Arc::new(Metrics::new().unwrap()),
            state_dir: state_dir(self.dir.path()),
            external_url: "https://mecha.example.com".into(),
            evaluation_interval: Duration::from_secs(30),
            clock: Arc::clone(&self.clock),
        };
        let engine = spawn(
            rules.to_vec(),
            inputs,
            Some(self.hooks.subscribe()),
            RuleBoard::default(),
        )
        .await
        .unwrap();
        engine.settle().await.unwrap();
        engine
    }

    fn errors(&mut self, namespace: &str, n: usize) {
        let now = self.now();
        let records = (0..n)
            .map(|i| {
                record(
                    now - 1_000 - i as i64,
                    Severity::Error,
                    namespace,
                    "payment failed",
                )
            })
            .collect();
        self.writer.write_batches(vec![records]).unwrap();
    }

    fn sentry_event(&mut self, project: &str, event: Value) {
        let id = format!(
            "{:032x}",
            xxhash_rust::xxh3::xxh3_128(event.to_string().as_bytes())
        );
        let r = event_record(self.now() - 1_000, project, &id, &event);
        self.writer.write_batches(vec![vec![r]]).unwrap();
    }
}

/// A rule from its YAML, read and checked as the config file is.
fn rule(yaml: &str) -> RuleConfig {
    let mut text = String::from("aggregator:\n  alerting:\n    rules:\n");
    for (i, line) in yaml.lines().enumerate() {
        text.push_str(if i == 0 { "      - " } else { "        " });
        text.push_str(line);
        text.push('\n');
    }
    let mut config = mecha_config::parse("test.yaml", &text, &|_| None)
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    config.aggregator.alerting.rules.remove(0)
}

async fn step(engine: &RuleEngineHandle, by: Duration) {
    tokio::time::advance(by).await;
    engine.settle().await.unwrap();
}

/// (status, namespace label, value annotation) of each alert of each put.
fn summary(puts: &[Vec<Alert>]) -> Vec<Vec<(AlertStatus, String, String)>> {
    puts.iter()
        .map(|p| {
            let mut v: Vec<_> = p
                .iter()
                .map(|a| {
                    (
                        a.status,
                        a.labels.get("namespace").cloned().unwrap_or_default(),
                        a.annotations.get("summary").cloned().unwrap_or_default(),
                    )
                })
                .collect();
            v.sort_by(|a, b| a.1.cmp(&b.1));
            v
        })
        .collect()
}

const SECS: Duration = Duration::from_secs(1);

fn payment_rule() -> RuleConfig {
    rule(
        "name: PaymentErrors
type: log
query: 'level:error AND payment'
window: 5m
at_least: 2
group_by: [namespace]
for: 1m
labels: { severity: critical }
annotations: { summary: '{{ $value }} errors in {{ $labels.namespace }}' }",
    )
}

#[tokio::test(start_paused = true)]
async fn log_rule_fires_after_for_with_one_alert_per_group_then_resolves() {
    let mut s = setup();
    s.errors("shop", 3);
    s.errors("bank", 1);
    s.errors("hr", 2);
    let t0 = s.now();
    let engine = s.engine(&[payment_rule()]).await;
    // Pending for `for`: nothing is sent yet.
    assert!(s.sink.take().is_empty());
    let board = engine.board().snapshot();
    assert_eq!(board[0].alerts.len(), 2, "{board:?}");
    assert!(board[0].alerts.iter().all(|a| a.state == "pending"));
    step(&engine, 30 * SECS).await;
    assert!(s.sink.take().is_empty());
    step(&engine, 30 * SECS).await;
    let puts = s.sink.take();
    use AlertStatus::*;
    assert_eq!(
        summary(&puts),
        [vec![
            (Firing, "hr".into(), "2 errors in hr".into()),
            (Firing, "shop".into(), "3 errors in shop".into()),
        ]]
    );
    let shop = puts[0]
        .iter()
        .find(|a| a.labels["namespace"] == "shop")
        .unwrap();
    let fired_at = time(t0 + 60_000_000_000);
    assert_eq!(shop.starts_at, fired_at);
    assert_eq!(shop.ends_at, time(t0 + 60_000_000_000 + 120_000_000_000));
    assert_eq!(
        shop.labels,
        Labels::from([
            ("alertname".into(), "PaymentErrors".into()),
            ("namespace".into(), "shop".into()),
            ("severity".into(), "critical".into()),
        ])
    );
    assert_eq!(shop.fingerprint, fingerprint(&shop.labels));
    assert_eq!(
        shop.generator_url,
        "https://mecha.example.com/api/v1/logs/search?q=%28level%3Aerror%20AND%20payment%29%20AND%20namespace%3A%22shop%22&from=now-300s"
    );
    // Re-sent every evaluation with the same start.
    step(&engine, 30 * SECS).await;
    let puts = s.sink.take();
    assert_eq!(puts.len(), 1);
    assert!(
        puts[0]
            .iter()
            .all(|a| a.status == Firing && a.starts_at == fired_at)
    );
    // The records leave the window 5m after they were written.
    step(&engine, 210 * SECS).await;
    let puts = s.sink.take();
    let resolve_at = time(t0 + 300_000_000_000);
    // Annotations and value are those at resolve time: nothing counted.
    assert_eq!(
        summary(&puts),
        [vec![
            (Resolved, "hr".into(), "0 errors in hr".into()),
            (Resolved, "shop".into(), "0 errors in shop".into()),
        ]]
    );
    assert!(puts[0].iter().all(|a| a.value == Some(0.0)), "{puts:#?}");
    assert!(
        puts[0]
            .iter()
            .all(|a| a.ends_at == resolve_at && a.starts_at == fired_at)
    );
    // Resolved is sent once.
    step(&engine, 30 * SECS).await;
    assert!(s.sink.take().is_empty());
    assert!(engine.board().snapshot()[0].alerts.is_empty());
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn alerts_carry_their_value_and_resolve_with_the_value_at_resolve_time() {
    let mut s = setup();
    s.errors("shop", 3);
    let r = rule(
        "name: Burst
type: log
query: 'level:error AND payment'
window: 1m
at_least: 2
group_by: [namespace]
annotations: { summary: '{{ $value }} errors' }",
    );
    let engine = s.engine(&[r]).await;
    let puts = s.sink.take();
    let values = |puts: &[Vec<Alert>]| -> Vec<(AlertStatus, Option<f64>, String)> {
        puts.iter()
            .flatten()
            .map(|a| (a.status, a.value, a.annotations["summary"].clone()))
            .collect()
    };
    use AlertStatus::*;
    assert_eq!(values(&puts), [(Firing, Some(3.0), "3 errors".into())]);
    // One more error; the three leave the 1m window before the next but
    // one evaluation, which counts 1: below the threshold, resolved.
    step(&engine, 30 * SECS).await;
    assert_eq!(
        values(&s.sink.take()),
        [(Firing, Some(3.0), "3 errors".into())]
    );
    s.errors("shop", 1);
    step(&engine, 30 * SECS).await;
    assert_eq!(
        values(&s.sink.take()),
        [(Resolved, Some(1.0), "1 errors".into())]
    );
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn error_rules_filter_by_environment() {
    let mut s = setup();
    let rules = [
        rule("name: NewInProd\ntype: error\non: new_issue\nenvironment: production\n"),
        rule(
            "name: RateInProd\ntype: error\non: event_rate\nwindow: 5m\nat_least: 2\nper: project\nenvironment: production\n",
        ),
    ];
    let engine = s.engine(&rules).await;
    for i in 0..3 {
        s.sentry_event(
            "42",
            json!({"message": "staging only", "environment": "staging", "extra": i}),
        );
    }
    engine.settle().await.unwrap();
    step(&engine, 30 * SECS).await;
    assert_eq!(s.sink.take(), Vec::<Vec<Alert>>::new());
    for i in 0..2 {
        s.sentry_event(
            "42",
            json!({"message": "in production", "environment": "production", "extra": i}),
        );
    }
    engine.settle().await.unwrap();
    step(&engine, 30 * SECS).await;
    // The last put of each rule: both count the production events only.
    let fired: BTreeMap<String, (String, Option<f64>)> = s
        .sink
        .take()
        .into_iter()
        .flatten()
        .map(|a| {
            let title = a.annotations.get("title").cloned().unwrap_or_default();
            (a.labels["alertname"].clone(), (title, a.value))
        })
        .collect();
    assert_eq!(
        fired,
        BTreeMap::from([
            (
                "NewInProd".to_string(),
                ("in production".to_string(), Some(2.0))
            ),
            ("RateInProd".to_string(), (String::new(), Some(2.0))),
        ])
    );
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn keep_firing_for_holds_an_alert_after_its_condition_stops() {
    let mut s = setup();
    s.errors("shop", 1);
    let r = rule(
        "name: AnyError
type: log
query: 'level:error'
window: 1m
keep_firing_for: 2m",
    );
    let engine = s.engine(&[r]).await;
    let t0 = s.now();
    let first = s.sink.take();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0][0].status, AlertStatus::Firing);
    let started = first[0][0].starts_at;
    assert_eq!(started, time(t0));
    // Out of the window from 60s; kept firing until 60s + 2m.
    let mut statuses = Vec::new();
    for _ in 0..7 {
        step(&engine, 30 * SECS).await;
        let puts = s.sink.take();
        statuses.push(puts.iter().flatten().map(|a| a.status).collect::<Vec<_>>());
        assert!(puts.iter().flatten().all(|a| a.starts_at == started));
    }
    use AlertStatus::*;
    assert_eq!(
        statuses,
        [
            vec![Firing],   // 30s: 1 in window
            vec![Firing],   // 60s: lost, kept
            vec![Firing],   // 90s
            vec![Firing],   // 120s
            vec![Firing],   // 150s
            vec![Resolved], // 180s: 2m after it was lost
            vec![],
        ]
    );
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn keep_firing_for_does_not_resolve_a_flapping_count() {
    let mut s = setup();
    s.errors("shop", 1);
    let r = rule(
        "name: AnyError
type: log
query: 'level:error'
window: 40s
keep_firing_for: 2m",
    );
    let engine = s.engine(&[r]).await;
    let started = s.sink.take()[0][0].starts_at;
    step(&engine, 60 * SECS).await; // lost
    s.errors("shop", 1); // back before keep_firing_for ran out
    step(&engine, 30 * SECS).await;
    step(&engine, 150 * SECS).await; // lost again at 120s + 40s, kept until 280s
    let all: Vec<Alert> = s.sink.take().into_iter().flatten().collect();
    assert!(
        all.iter()
            .all(|a| a.status == AlertStatus::Firing && a.starts_at == started)
    );
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_new_issue_fires_once_and_a_regression_fires_its_rule() {
    let mut s = setup();
    let rules = [
        rule(
            "name: NewIssue
type: error
on: new_issue
project: 42
level: [error, fatal]
annotations: { summary: 'new issue {{ $labels.issue_id }}: see {{ $externalURL }}' }",
        ),
        rule("name: Regressed\ntype: error\non: regression\n"),
        rule("name: OtherProject\ntype: error\non: new_issue\nproject: 7\n"),
        rule("name: Tenant\ntype: error\non: new_issue\ntags: { tenant: globex }\n"),
    ];
    let engine = s.engine(&rules).await;
    let boom = json!({"level": "error", "exception": {"values": [{"type": "KeyError", "value": "'k'"}]}, "tags": {"tenant": "acme"}});
    s.sentry_event("42", boom.clone());
    engine.settle().await.unwrap();
    let puts = s.sink.take();
    assert_eq!(puts.len(), 1, "{puts:#?}");
    let a = &puts[0][0];
    assert_eq!(a.status, AlertStatus::Firing);
    assert_eq!(
        a.labels,
        Labels::from([
            ("alertname".into(), "NewIssue".into()),
            ("issue_id".into(), "1".into()),
            ("level".into(), "error".into()),
            ("project".into(), "42".into()),
        ])
    );
    assert_eq!(a.annotations["title"], "KeyError: 'k'");
    assert_eq!(
        a.annotations["summary"],
        "new issue 1: see https://mecha.example.com"
    );
    assert_eq!(a.generator_url, "https://mecha.example.com/api/v1/issues/1");
    let fingerprint = a.fingerprint.clone();
    let started = a.starts_at;
    // More events of the same issue: the same alert, re-sent, not a new one.
    let mut again = boom.clone();
    again["extra"] = json!(1);
    s.sentry_event("42", again);
    step(&engine, 30 * SECS).await;
    let puts = s.sink.take();
    assert!(!puts.is_empty());
    for a in puts.iter().flatten() {
        assert_eq!(
            (a.fingerprint.as_str(), a.starts_at),
            (fingerprint.as_str(), started)
        );
    }
    // Resolving the issue resolves the alert; a newer event reopens it as a
    // regression, which fires the regression rule.
    s.issues
        .set_status(1, crate::issues::Status::Resolved, s.now())
        .unwrap();
    step(&engine, 30 * SECS).await;
    let puts = s.sink.take();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0][0].status, AlertStatus::Resolved);
    tokio::time::advance(5 * SECS).await;
    let mut later = boom;
    later["extra"] = json!(2);
    s.sentry_event("42", later);
    engine.settle().await.unwrap();
    let puts = s.sink.take();
    let fired: Vec<(&str, AlertStatus)> = puts
        .iter()
        .flatten()
        .map(|a| (a.labels["alertname"].as_str(), a.status))
        .collect();
    assert_eq!(fired, [("Regressed", AlertStatus::Firing)]);
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn issues_missed_by_a_lagging_subscriber_are_read_from_the_issue_store() {
    let mut s = setup();
    let r = rule("name: NewIssue\ntype: error\non: new_issue\n");
    let engine = s.engine(&[r]).await;
    // More announcements than the channel holds (64), before the engine runs.
    for i in 0..40u8 {
        // Letters past `f`: grouping keeps them (digits and hex are normalised).
        let name: String = [b'g' + i / 20, b'g' + i % 20]
            .iter()
            .map(|&b| b as char)
            .collect();
        s.sentry_event("1", json!({"message": format!("failure in module {name}")}));
    }
    engine.settle().await.unwrap();
    step(&engine, 30 * SECS).await;
    let firing: std::collections::BTreeSet<String> = s
        .sink
        .take()
        .into_iter()
        .flatten()
        .map(|a| a.labels["issue_id"].clone())
        .collect();
    assert_eq!(firing.len(), 40, "{firing:?}");
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn event_rate_counts_one_issue_over_its_window() {
    let mut s = setup();
    let r = rule(
        "name: HotIssue
type: error
on: event_rate
window: 5m
at_least: 3
annotations: { summary: '{{ $value }} events of {{ $labels.issue_id }}' }",
    );
    for i in 0..3 {
        s.sentry_event("42", json!({"message": "hot", "extra": i}));
    }
    s.sentry_event("42", json!({"message": "cold"}));
    let engine = s.engine(&[r]).await;
    let puts = s.sink.take();
    assert_eq!(puts.len(), 1);
    let a = &puts[0][0];
    assert_eq!(a.labels["issue_id"], "1");
    assert_eq!(a.labels["project"], "42");
    assert_eq!(a.labels["level"], "error");
    assert_eq!(a.annotations["summary"], "3 events of 1");
    assert_eq!(a.annotations["title"], "hot");
    assert_eq!(a.value, Some(3.0));
    // A project total counts both issues.
    let total = rule(
        "name: Project\ntype: error\non: event_rate\nwindow: 5m\nabove: 3\nper: project\nproject: 42\n",
    );
    engine.reload(vec![total]).await.unwrap();
    let puts = s.sink.take();
    let all: Vec<&Alert> = puts.iter().flatten().collect();
    // The reload resolves the replaced rule's alert and fires the new one.
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(
        (all[0].status, all[0].labels["alertname"].as_str()),
        (AlertStatus::Resolved, "HotIssue")
    );
    assert_eq!(all[1].labels["project"], "42");
    assert_eq!(
        all[1].generator_url,
        "https://mecha.example.com/api/v1/issues?project=42"
    );
    assert_eq!(all[1].value, Some(4.0));
    // Out of the window: resolved, with no event left in it.
    step(&engine, 300 * SECS).await;
    let puts = s.sink.take();
    assert_eq!(puts.len(), 1);
    assert_eq!(
        (puts[0][0].status, puts[0][0].value),
        (AlertStatus::Resolved, Some(0.0))
    );
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_keeps_pending_progress_and_firing_alerts() {
    let mut s = setup();
    s.errors("shop", 3);
    let mut slow = payment_rule();
    slow.name = "Slow".into();
    slow.for_ = Some(mecha_config::Duration(Duration::from_secs(120)));
    let fast = payment_rule();
    let t0 = s.now();
    let engine = s.engine(&[slow.clone(), fast.clone()]).await;
    step(&engine, 60 * SECS).await;
    let puts = s.sink.take();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0][0].labels["alertname"], "PaymentErrors");
    let fast_start = puts[0][0].starts_at;
    engine.shutdown().await;
    // Down for 30s; the new engine evaluates at once.
    tokio::time::advance(30 * SECS).await;
    let engine = s.engine(&[slow, fast]).await;
    let board = engine.board().snapshot();
    let slow_alert = &board[0].alerts[0];
    assert_eq!(
        (slow_alert.state, slow_alert.active_since),
        ("pending", time(t0))
    );
    let puts = s.sink.take();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].len(), 1, "only the firing alert is sent: {puts:#?}");
    assert_eq!(puts[0][0].starts_at, fast_start);
    // 120s after t0 (not after the restart) the slow rule fires.
    step(&engine, 30 * SECS).await;
    let puts = s.sink.take();
    let slow_fired: Vec<&Alert> = puts
        .iter()
        .flatten()
        .filter(|a| a.labels["alertname"] == "Slow")
        .collect();
    assert_eq!(slow_fired.len(), 1);
    assert_eq!(slow_fired[0].starts_at, time(t0 + 120_000_000_000));
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_the_state_of_unchanged_rules_only() {
    let mut s = setup();
    s.errors("shop", 3);
    let mut same = payment_rule();
    same.name = "Same".into();
    let mut changed = payment_rule();
    changed.name = "Changed".into();
    let mut removed = payment_rule();
    removed.name = "Removed".into();
    removed.for_ = None;
    let t0 = s.now();
    let engine = s.engine(&[same.clone(), changed.clone(), removed]).await;
    assert_eq!(s.sink.take().len(), 1); // `Removed` fires at once
    step(&engine, 30 * SECS).await;
    s.sink.take();
    changed.window = Some(mecha_config::Duration(Duration::from_secs(600)));
    engine.reload(vec![same, changed]).await.unwrap();
    let puts = s.sink.take();
    let resolved: Vec<(&str, AlertStatus)> = puts
        .iter()
        .flatten()
        .map(|a| (a.labels["alertname"].as_str(), a.status))
        .collect();
    assert_eq!(resolved, [("Removed", AlertStatus::Resolved)]);
    let board = engine.board().snapshot();
    let since: Vec<(&str, DateTime<Utc>)> = board
        .iter()
        .map(|r| (r.name.as_str(), r.alerts[0].active_since))
        .collect();
    assert_eq!(
        since,
        [("Same", time(t0)), ("Changed", time(t0 + 30_000_000_000))]
    );
    // An invalid reload changes nothing.
    let bad = rule("name: Bad\ntype: log\nquery: 'level:(error'\nwindow: 1m\n");
    let err = engine.reload(vec![bad]).await.unwrap_err().to_string();
    assert!(
        err.contains("alert rule \"Bad\": query: invalid query"),
        "{err}"
    );
    assert_eq!(engine.board().snapshot().len(), 2);
    engine.shutdown().await;
}

#[test]
fn rule_checks_name_file_line_and_key() {
    let text = "aggregator:
  alerting:
    rules:
      - name: A
        type: log
        query: 'level:error'
        window: 5m
      - name: B
        type: log
        query: 'level:(error'
        window: 5m
      - name: C
        type: log
        query: '*'
        window: 5m
        annotations:
          summary: '{{ $value }} in {{ $labels.namespace'
";
    let config = mecha_config::parse("mecha.yaml", text, &|_| None).unwrap();
    let err = check(&config.aggregator.alerting, "mecha.yaml", text)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("mecha.yaml:10: aggregator.alerting.rules[1].query: invalid query"),
        "{err}"
    );
    let mut alerting = config.aggregator.alerting.clone();
    alerting.rules.remove(1);
    let text_without_b = text.replace(
        "      - name: B\n        type: log\n        query: 'level:(error'\n        window: 5m\n",
        "",
    );
    let err = check(&alerting, "mecha.yaml", &text_without_b)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "mecha.yaml:13: aggregator.alerting.rules[1].annotations.summary: unclosed `{{` at byte 16: expected `}}`"
    );
}

#[test]
fn sample_alerts_show_what_each_kind_of_rule_sends() {
    let rules = [
        payment_rule(),
        rule(
            "name: NewIssue\ntype: error\non: new_issue\nproject: 42\nlabels: { team: payments }\nannotations: { summary: 'new: {{ $labels.issue_id }}' }\n",
        ),
        rule("name: Project\ntype: error\non: event_rate\nwindow: 5m\nabove: 100\nper: project\n"),
    ];
    let mut out = Vec::new();
    for r in &rules {
        for mut a in sample_alerts(
            r,
            "https://mecha.example.com/",
            None,
            crate::store::days::now_ns(),
        )
        .unwrap()
        {
            // Times are "now": fixed for the snapshot.
            a.starts_at = time(0);
            a.ends_at = time(0);
            out.push(a);
        }
    }
    insta::assert_json_snapshot!(out);
}

#[test]
fn fingerprints_are_alertmanagers() {
    // FNV-1a's offset basis for no labels, as Prometheus' `emptyLabelSignature`.
    assert_eq!(fingerprint(&Labels::new()), "cbf29ce484222325");
    // What Alertmanager 0.25.0 (Debian's prometheus-alertmanager) answered
    // in `GET /api/v2/alerts` for these alerts posted to it.
    let l = |pairs: &[(&str, &str)]| -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let measured = [
        (
            l(&[
                ("alertname", "PaymentErrors"),
                ("namespace", "shop"),
                ("severity", "critical"),
            ]),
            "0513904078de6d3c",
        ),
        (
            l(&[
                ("alertname", "NewIssue"),
                ("issue_id", "1"),
                ("level", "error"),
                ("project", "42"),
            ]),
            "84b60584d03f3f34",
        ),
        (l(&[("alertname", "中文"), ("k", "値")]), "9e2e66b421e14026"),
    ];
    for (labels, expected) in measured {
        assert_eq!(fingerprint(&labels), expected, "{labels:?}");
    }
    let a = Labels::from([("alertname".into(), "A".into()), ("x".into(), "1".into())]);
    let b = Labels::from([("alertname".into(), "A".into()), ("x".into(), "2".into())]);
    assert_ne!(fingerprint(&a), fingerprint(&b));
    assert_eq!(fingerprint(&a).len(), 16);
    // Separators keep `a=bc` and `ab=c` apart.
    let c = Labels::from([("a".into(), "bc".into())]);
    let d = Labels::from([("ab".into(), "c".into())]);
    assert_ne!(fingerprint(&c), fingerprint(&d));
}

#[tokio::test]
async fn rules_api_lists_rules_with_state_and_alerts() {
    let dir = tempdir();
    let mut agg = crate::Aggregator::start(options(dir.path())).await.unwrap();
    let now = crate::store::days::now_ns();
    let records = vec![
        record(now - 1_000, Severity::Error, "shop", "payment failed"),
        record(now - 2_000, Severity::Error, "shop", "payment failed"),
    ];
    agg.ingest().push(records).await.unwrap();
    let sink = Arc::new(Recorder::default());
    agg.start_rules(
        vec![payment_rule()],
        Duration::from_secs(30),
        None,
        Some(sink.clone() as Arc<dyn AlertSink>),
    )
    .await
    .unwrap();
    agg.rule_engine().unwrap().settle().await.unwrap();
    let addr = agg.http_addr().unwrap();
    let v: Value = reqwest::get(format!("http://{addr}/api/v1/rules"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = &v["rules"][0];
    assert_eq!(r["name"], "PaymentErrors", "{v}");
    assert_eq!(r["type"], "log");
    assert_eq!(r["health"], "ok");
    assert_eq!(r["last_value"], 2.0);
    assert_eq!(r["interval_seconds"], 30.0);
    assert_eq!(r["alerts"][0]["state"], "pending");
    assert_eq!(r["alerts"][0]["labels"]["namespace"], "shop");
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("mecha_rule_evaluations_total{rule=\"PaymentErrors\"} 1"),
        "{metrics}"
    );
    agg.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_rule_changed_while_down_resolves_what_it_had_firing() {
    let mut s = setup();
    s.errors("shop", 3);
    let mut r = payment_rule();
    r.for_ = None;
    let engine = s.engine(std::slice::from_ref(&r)).await;
    assert_eq!(s.sink.take()[0][0].status, AlertStatus::Firing);
    engine.shutdown().await;
    tokio::time::advance(10 * SECS).await;
    r.at_least = Some(100);
    let engine = s.engine(&[r]).await;
    let puts = s.sink.take();
    let got: Vec<(AlertStatus, &str)> = puts
        .iter()
        .flatten()
        .map(|a| (a.status, a.labels["namespace"].as_str()))
        .collect();
    assert_eq!(got, [(AlertStatus::Resolved, "shop")]);
    assert!(engine.board().snapshot()[0].alerts.is_empty());
    engine.shutdown().await;
}

#[test]
#[ignore = "measurement, run by hand"]
fn measure_grouped_counts() {
    let dir = tempdir();
    let (store, mut writer) = open_store(dir.path());
    let now = crate::store::days::now_ns();
    for batch in 0..20 {
        let records = (0..10_000)
            .map(|i| {
                let n = batch * 10_000 + i;
                let sev = if n % 10 == 0 {
                    Severity::Error
                } else {
                    Severity::Info
                };
                record(
                    now - 1_000_000 - n,
                    sev,
                    &format!("ns{}", n % 20),
                    "payment failed",
                )
            })
            .collect();
        writer.write_batches(vec![records]).unwrap();
    }
    for (q, g) in [
        ("level:error", vec![]),
        ("level:error", vec!["namespace".to_string()]),
        ("*", vec!["namespace".to_string()]),
    ] {
        let started = std::time::Instant::now();
        let c = store.count_by(q, now - 3_600_000_000_000, now, &g).unwrap();
        println!(
            "{q} by {g:?}: total {} groups {} in {:?}",
            c.total,
            c.groups.len(),
            started.elapsed()
        );
    }
}
