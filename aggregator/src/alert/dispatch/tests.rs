//! Table tests of the dispatcher under paused tokio time, modelled on
//! Alertmanager's documented behaviour: group_wait batching, group_interval,
//! repeat_interval, deduplication, send_resolved, continue, inheritance,
//! `...`, matchers, inhibition, silences, retries and restarts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::*;
use crate::alert::model::Notification;
use crate::alert::notify::{NotifyError, Preview};

/// A receiver that records what it is asked to send, and fails as told.
struct Recorder {
    name: String,
    send_resolved: bool,
    t0: Instant,
    sent: Mutex<Vec<(u64, Notification)>>,
    failures: Mutex<VecDeque<NotifyError>>,
}

impl Notifier for Recorder {
    fn name(&self) -> &str {
        &self.name
    }
    fn send_resolved(&self) -> bool {
        self.send_resolved
    }
    fn notify<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let failure = self
                .failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            if let Some(e) = failure {
                return Err(e);
            }
            let at = self.t0.elapsed().as_secs();
            self.sent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((at, n.clone()));
            Ok(())
        })
    }
    fn preview(&self, _: &Notification, _: DateTime<Utc>) -> Vec<Preview> {
        Vec::new()
    }
}

fn t_wall() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + chrono::TimeDelta::days(20_000)
}

struct Harness {
    d: Dispatcher,
    receivers: HashMap<String, Arc<Recorder>>,
    metrics: Arc<Metrics>,
    t0: Instant,
    dir: PathBuf,
}

/// Starts a dispatcher with `route` and `inhibit` (JSON as in YAML) and
/// recording receivers `(name, send_resolved)`, its state in `dir`.
async fn start_in(
    dir: &std::path::Path,
    wall: DateTime<Utc>,
    route: Value,
    inhibit: Value,
    receivers: &[(&str, bool)],
) -> Harness {
    let t0 = Instant::now();
    let mut recs = HashMap::new();
    let mut notifiers: HashMap<String, Arc<dyn Notifier>> = HashMap::new();
    for (name, send_resolved) in receivers {
        let r = Arc::new(Recorder {
            name: name.to_string(),
            send_resolved: *send_resolved,
            t0,
            sent: Mutex::new(Vec::new()),
            failures: Mutex::new(VecDeque::new()),
        });
        notifiers.insert(name.to_string(), Arc::clone(&r) as Arc<dyn Notifier>);
        recs.insert(name.to_string(), r);
    }
    let metrics = Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}")));
    let route: Option<RouteConfig> = if route.is_null() {
        None
    } else {
        Some(serde_json::from_value(route).unwrap_or_else(|e| panic!("route: {e}")))
    };
    let inhibit_rules: Vec<InhibitRuleConfig> =
        serde_json::from_value(inhibit).unwrap_or_else(|e| panic!("inhibit: {e}"));
    let d = Dispatcher::start(
        DispatcherOptions {
            route,
            inhibit_rules,
            notifiers,
            dir: dir.to_path_buf(),
            external_url: "http://mecha.test".into(),
            clock: Clock::starting_at(wall),
        },
        Arc::clone(&metrics),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    Harness {
        d,
        receivers: recs,
        metrics,
        t0,
        dir: dir.to_path_buf(),
    }
}

impl Harness {
    fn alert(&self, labels: &[(&str, &str)]) -> Alert {
        Alert {
            status: AlertStatus::Firing,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: [("summary".to_string(), "it broke".to_string())].into(),
            starts_at: self.d.now(),
            ends_at: DateTime::<Utc>::UNIX_EPOCH,
            generator_url: String::new(),
            fingerprint: String::new(),
            value: None,
        }
    }

    fn fire(&self, names: &[&str]) {
        let alerts = names
            .iter()
            .map(|n| self.alert(&[("alertname", n)]))
            .collect();
        self.d.put(alerts);
    }

    fn resolve(&self, names: &[&str]) {
        let alerts = names
            .iter()
            .map(|n| {
                let mut a = self.alert(&[("alertname", n)]);
                a.status = AlertStatus::Resolved;
                a.ends_at = self.d.now();
                a
            })
            .collect();
        self.d.put(alerts);
    }

    /// Advances paused time to `secs` after the start.
    async fn at(&self, secs: u64) {
        let target = self.t0 + Duration::from_secs(secs);
        tokio::time::sleep_until(target).await;
        // Let group tasks woken at this instant run.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    /// What `receiver` got: `(seconds, "firing A,B resolved C")`.
    fn sent(&self, receiver: &str) -> Vec<(u64, String)> {
        let r = &self.receivers[receiver];
        r.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(at, n)| (*at, summary(n)))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    fn fail_next(&self, receiver: &str, errors: Vec<NotifyError>) {
        self.receivers[receiver]
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(errors);
    }
}

fn summary(n: &Notification) -> String {
    let names = |status: AlertStatus| {
        let v: Vec<String> = n
            .alerts
            .iter()
            .filter(|a| a.status == status)
            .map(|a| {
                a.labels
                    .iter()
                    .map(|(k, v)| {
                        if k == "alertname" {
                            v.clone()
                        } else {
                            format!("{k}={v}")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect();
        v.join(",")
    };
    let mut out = Vec::new();
    let firing = names(AlertStatus::Firing);
    if !firing.is_empty() {
        out.push(format!("firing {firing}"));
    }
    let resolved = names(AlertStatus::Resolved);
    if !resolved.is_empty() {
        out.push(format!("resolved {resolved}"));
    }
    out.join(" ")
}

fn s(v: &[(u64, &str)]) -> Vec<(u64, String)> {
    v.iter().map(|(t, x)| (*t, x.to_string())).collect()
}

async fn start(
    route: Value,
    inhibit: Value,
    receivers: &[(&str, bool)],
) -> (Harness, tempfile::TempDir) {
    let dir = crate::test_support::tempdir();
    let h = start_in(dir.path(), t_wall(), route, inhibit, receivers).await;
    (h, dir)
}

fn ops_route() -> Value {
    json!({"receiver": "ops", "group_by": ["team"]})
}

#[tokio::test(start_paused = true)]
async fn alerts_arriving_within_group_wait_are_sent_together() {
    let (h, _dir) = start(ops_route(), json!([]), &[("ops", true)]).await;
    h.fire(&["A"]);
    h.at(10).await;
    h.fire(&["B"]);
    h.at(29).await;
    assert!(h.sent("ops").is_empty(), "sent before group_wait");
    h.at(31).await;
    assert_eq!(h.sent("ops"), s(&[(30, "firing A,B")]));
    let n = h.receivers["ops"]
        .sent
        .lock()
        .unwrap_or_else(|p| p.into_inner())[0]
        .1
        .clone();
    assert_eq!(n.group_key, "{}:{}");
    assert_eq!(n.external_url, "http://mecha.test");
    assert_eq!(
        n.common_annotations.get("summary").map(String::as_str),
        Some("it broke")
    );
    assert!(!n.common_labels.contains_key("alertname"));
}

#[tokio::test(start_paused = true)]
async fn new_alerts_wait_for_the_next_group_interval_and_nothing_repeats_early() {
    let (h, _dir) = start(ops_route(), json!([]), &[("ops", true)]).await;
    h.fire(&["A"]);
    h.at(60).await;
    h.fire(&["B"]);
    h.at(329).await;
    assert_eq!(h.sent("ops"), s(&[(30, "firing A")]));
    h.at(331).await;
    h.at(3 * 3600).await;
    // Re-puts of unchanged alerts (as a rule does each evaluation) send
    // nothing new either.
    h.fire(&["A", "B"]);
    h.at(3 * 3600 + 600).await;
    assert_eq!(h.sent("ops"), s(&[(30, "firing A"), (330, "firing A,B")]));
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_group_is_sent_again_after_repeat_interval() {
    let route = json!({"receiver": "ops", "group_interval": "5m", "repeat_interval": "1h"});
    let (h, _dir) = start(route, json!([]), &[("ops", true)]).await;
    h.fire(&["A"]);
    h.at(3629).await;
    assert_eq!(h.sent("ops").len(), 1);
    h.at(3631).await;
    // 30 s + 12 group intervals = the first flush at least 1h after the last send.
    assert_eq!(h.sent("ops"), s(&[(30, "firing A"), (3630, "firing A")]));
    h.at(7231).await;
    assert_eq!(h.sent("ops").len(), 3);
}

#[tokio::test(start_paused = true)]
async fn resolved_alerts_are_sent_only_to_receivers_with_send_resolved() {
    let route = json!({"receiver": "loud", "routes": [
        {"matchers": ["alertname=~\".+\""], "receiver": "loud", "continue": true},
        {"matchers": ["alertname=~\".+\""], "receiver": "quiet"},
    ]});
    let (h, _dir) = start(route, json!([]), &[("loud", true), ("quiet", false)]).await;
    h.fire(&["A", "B"]);
    h.at(60).await;
    h.resolve(&["B"]);
    h.at(400).await;
    h.resolve(&["A"]);
    h.at(1000).await;
    assert_eq!(
        h.sent("loud"),
        s(&[
            (30, "firing A,B"),
            (330, "firing A resolved B"),
            (630, "resolved A")
        ])
    );
    assert_eq!(h.sent("quiet"), s(&[(30, "firing A,B")]));
    // Both groups are finished and forgotten.
    assert_eq!(h.d.nflog_len(), 0);
    assert!(h.d.alerts().is_empty());
    h.fire(&["A"]);
    h.at(1031).await;
    assert_eq!(
        h.sent("quiet"),
        s(&[(30, "firing A,B"), (1030, "firing A")])
    );
}

#[tokio::test(start_paused = true)]
async fn an_alert_whose_producer_stops_resolves_at_its_end() {
    let (h, _dir) = start(ops_route(), json!([]), &[("ops", true)]).await;
    let mut a = h.alert(&[("alertname", "A")]);
    a.ends_at = h.d.now() + chrono::TimeDelta::minutes(2);
    h.d.put(vec![a]);
    h.at(700).await;
    assert_eq!(h.sent("ops"), s(&[(30, "firing A"), (330, "resolved A")]));
}

#[tokio::test(start_paused = true)]
async fn a_firing_alert_is_notified_with_alertmanagers_zero_end_and_a_resolved_one_with_its_end() {
    let (h, _dir) = start(ops_route(), json!([]), &[("ops", true)]).await;
    // A rule re-sends its firing alerts with an end a few intervals ahead.
    let mut a = h.alert(&[("alertname", "A")]);
    a.ends_at = h.d.now() + chrono::TimeDelta::minutes(2);
    h.d.put(vec![a]);
    h.at(31).await;
    h.resolve(&["A"]);
    let resolved_at = h.d.now();
    h.at(331).await;
    let sent = h.receivers["ops"]
        .sent
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let ends: Vec<(AlertStatus, String)> = sent
        .iter()
        .flat_map(|(_, n)| &n.alerts)
        .map(|a| {
            (
                a.status,
                a.ends_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            )
        })
        .collect();
    assert_eq!(
        ends,
        [
            (AlertStatus::Firing, "0001-01-01T00:00:00Z".to_string()),
            (
                AlertStatus::Resolved,
                resolved_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ]
    );
    let payload = serde_json::to_value(&sent[0].1).unwrap_or_default();
    assert_eq!(payload["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
}

#[tokio::test(start_paused = true)]
async fn routes_pick_receivers_with_continue_matchers_and_inherited_settings() {
    let route = json!({
    "receiver": "default", "group_wait": "10s", "group_by": ["alertname"],
    "routes": [
        {"matchers": ["severity=\"page\""], "receiver": "pager", "continue": true},
        {"matchers": ["team!=\"\"", "team!~\"bank|ops\""], "receiver": "teams"},
        {"matchers": ["team=~\"bank|ops\""], "receiver": "money", "group_wait": "1m"},
    ]});
    let receivers = [
        ("default", true),
        ("pager", true),
        ("teams", true),
        ("money", true),
    ];
    let (h, _dir) = start(route, json!([]), &receivers).await;
    h.d.put(vec![
        h.alert(&[
            ("alertname", "Paged"),
            ("severity", "page"),
            ("team", "shop"),
        ]),
        h.alert(&[("alertname", "Shop"), ("team", "shop")]),
        h.alert(&[("alertname", "Bank"), ("team", "bank")]),
        h.alert(&[("alertname", "Nobody")]),
    ]);
    h.at(11).await;
    assert_eq!(
        h.sent("pager"),
        s(&[(10, "firing Paged/severity=page/team=shop")])
    );
    assert_eq!(
        h.sent("teams"),
        s(&[
            (10, "firing Paged/severity=page/team=shop"),
            (10, "firing Shop/team=shop")
        ])
    );
    assert_eq!(h.sent("default"), s(&[(10, "firing Nobody")]));
    // Its own group_wait, not the inherited one.
    assert!(h.sent("money").is_empty());
    h.at(61).await;
    assert_eq!(h.sent("money"), s(&[(60, "firing Bank/team=bank")]));
    let views = h.d.alerts();
    let paged = views
        .iter()
        .find(|v| v.alert.labels.get("alertname").map(String::as_str) == Some("Paged"));
    assert_eq!(
        paged.map(|v| v.receivers.clone()),
        Some(vec!["pager".into(), "teams".into()])
    );
}

#[tokio::test(start_paused = true)]
async fn group_by_all_labels_sends_each_label_set_apart() {
    let route = json!({"receiver": "ops", "group_by": ["..."]});
    let (h, _dir) = start(route, json!([]), &[("ops", true)]).await;
    h.d.put(vec![
        h.alert(&[("alertname", "A"), ("pod", "p1")]),
        h.alert(&[("alertname", "A"), ("pod", "p2")]),
    ]);
    h.at(31).await;
    let mut got = h.sent("ops");
    got.sort();
    assert_eq!(got, s(&[(30, "firing A/pod=p1"), (30, "firing A/pod=p2")]));
}

#[tokio::test(start_paused = true)]
async fn a_firing_source_inhibits_targets_with_equal_labels_until_it_resolves() {
    let route = json!({"receiver": "ops", "group_by": ["cluster"]});
    let inhibit = json!([{
        "source_matchers": ["severity=\"critical\""],
        "target_matchers": ["severity=\"warning\""],
        "equal": ["cluster"],
    }]);
    let (h, _dir) = start(route, inhibit, &[("ops", true)]).await;
    let crit = h.alert(&[
        ("alertname", "Down"),
        ("severity", "critical"),
        ("cluster", "a"),
    ]);
    h.d.put(vec![
        crit.clone(),
        h.alert(&[
            ("alertname", "Slow"),
            ("severity", "warning"),
            ("cluster", "a"),
        ]),
        h.alert(&[
            ("alertname", "Slow"),
            ("severity", "warning"),
            ("cluster", "b"),
        ]),
    ]);
    h.at(31).await;
    let mut got = h.sent("ops");
    got.sort();
    assert_eq!(
        got,
        s(&[
            (30, "firing Down/cluster=a/severity=critical"),
            (30, "firing Slow/cluster=b/severity=warning"),
        ])
    );
    let states: Vec<(String, &str, usize)> =
        h.d.alerts()
            .iter()
            .map(|v| {
                (
                    v.alert.labels["cluster"].clone(),
                    v.state(),
                    v.inhibited_by.len(),
                )
            })
            .collect();
    assert!(
        states.contains(&("a".into(), "suppressed", 1)),
        "{states:?}"
    );
    let mut resolved = crit;
    resolved.status = AlertStatus::Resolved;
    h.d.put(vec![resolved]);
    h.at(331).await;
    let later: Vec<(u64, String)> = h.sent("ops").into_iter().filter(|(t, _)| *t > 30).collect();
    assert_eq!(
        later,
        s(&[(
            330,
            "firing Slow/cluster=a/severity=warning resolved Down/cluster=a/severity=critical"
        )])
    );
}

#[tokio::test(start_paused = true)]
async fn a_silenced_alert_is_sent_at_the_next_flush_after_the_silence_expires() {
    let (h, _dir) = start(ops_route(), json!([]), &[("ops", true)]).await;
    let now = h.d.now();
    let id =
        h.d.upsert_silence(Silence {
            id: String::new(),
            matchers: vec![
                mecha_config::Matcher::parse("alertname=~\"A|C\"")
                    .unwrap_or_else(|e| panic!("{e}")),
            ],
            starts_at: now,
            ends_at: now + chrono::TimeDelta::hours(2),
            updated_at: now,
            created_by: "ann".into(),
            comment: "deploy".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    h.fire(&["A", "B"]);
    h.at(31).await;
    assert_eq!(h.sent("ops"), s(&[(30, "firing B")]));
    let a = h.d.alerts();
    assert_eq!(a[0].silenced_by, std::slice::from_ref(&id));
    assert_eq!(a[0].state(), "suppressed");
    assert!(
        h.metrics
            .render()
            .contains("mecha_alerts{state=\"suppressed\"} 1")
    );
    h.at(100).await;
    h.d.expire_silence(&id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    h.at(329).await;
    assert_eq!(h.sent("ops").len(), 1);
    h.at(331).await;
    assert_eq!(h.sent("ops"), s(&[(30, "firing B"), (330, "firing A,B")]));
    assert!(
        h.metrics
            .render()
            .contains("mecha_alert_silences{state=\"expired\"} 1")
    );
}

#[tokio::test(start_paused = true)]
async fn retryable_failures_are_retried_and_permanent_ones_wait_for_the_next_flush() {
    let (h, _dir) = start(ops_route(), json!([]), &[("ops", true)]).await;
    let retry = |r: &str| NotifyError::Retryable {
        receiver: "ops".into(),
        reason: r.into(),
    };
    h.fail_next("ops", vec![retry("503"), retry("timeout")]);
    h.fire(&["A"]);
    h.at(40).await;
    // 30 s, then backoffs of 1 s and 2 s.
    assert_eq!(h.sent("ops"), s(&[(33, "firing A")]));
    h.fail_next(
        "ops",
        vec![NotifyError::Permanent {
            receiver: "ops".into(),
            reason: "invalid key".into(),
        }],
    );
    h.fire(&["B"]);
    h.at(335).await;
    assert_eq!(
        h.sent("ops").len(),
        1,
        "a permanent error is not retried at once"
    );
    h.at(635).await;
    assert_eq!(h.sent("ops"), s(&[(33, "firing A"), (630, "firing A,B")]));
    let text = h.metrics.render();
    for line in [
        "mecha_alert_group_notifications_total{outcome=\"retryable_error\",receiver=\"ops\"} 2",
        "mecha_alert_group_notifications_total{outcome=\"permanent_error\",receiver=\"ops\"} 1",
        "mecha_alert_group_notifications_total{outcome=\"success\",receiver=\"ops\"} 2",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_restart_sends_no_duplicate_and_still_sends_the_resolve() {
    let dir = crate::test_support::tempdir();
    let h = start_in(
        dir.path(),
        t_wall(),
        ops_route(),
        json!([]),
        &[("ops", true)],
    )
    .await;
    h.fire(&["A"]);
    let first = h.alert(&[("alertname", "A")]);
    h.at(31).await;
    assert_eq!(h.sent("ops"), s(&[(30, "firing A")]));
    assert_eq!(h.d.nflog_len(), 1);
    let wall = h.d.now();
    h.d.shutdown().await;
    let state_dir = h.dir.clone();
    drop(h);

    // The producer re-puts its active alert after the restart.
    let h = start_in(&state_dir, wall, ops_route(), json!([]), &[("ops", true)]).await;
    assert_eq!(h.d.nflog_len(), 1);
    h.d.put(vec![first.clone()]);
    // It started long ago: the group flushes at once, and finds it sent.
    h.at(450).await;
    assert!(h.sent("ops").is_empty(), "{:?}", h.sent("ops"));
    let mut resolved = first;
    resolved.status = AlertStatus::Resolved;
    resolved.ends_at = h.d.now();
    h.d.put(vec![resolved]);
    h.at(700).await;
    assert_eq!(h.sent("ops"), s(&[(600, "resolved A")]));
}

#[tokio::test(start_paused = true)]
async fn without_a_route_alerts_are_listed_but_not_sent() {
    let (h, _dir) = start(Value::Null, json!([]), &[("ops", true)]).await;
    h.fire(&["A"]);
    h.d.put(vec![h.alert(&[])]);
    h.at(100).await;
    assert!(h.sent("ops").is_empty());
    let views = h.d.alerts();
    assert_eq!(views.len(), 1);
    assert_eq!(
        views[0].alert.fingerprint,
        fingerprint(&views[0].alert.labels)
    );
    assert!(views[0].receivers.is_empty());
    let text = h.metrics.render();
    assert!(
        text.contains("mecha_component_discarded_events_total{component=\"aggregator\",reason=\"invalid_alert\"} 1"),
        "{text}"
    );
}
