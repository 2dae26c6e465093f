//! Alert receivers against servers that answer like the WeCom, DingTalk,
//! Feishu and Slack APIs or a generic webhook receiver
//! (`tests/common/robots.rs`): rate limits, byte limits, signatures,
//! credentials and the platforms' error codes, through the real config
//! loader and `mecha_aggregator::alert::notify::build_with_metrics`.

#[path = "common/robots.rs"]
mod robots;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use mecha_aggregator::alert::model::{Alert, AlertStatus, Notification};
use mecha_aggregator::alert::notify::{Notifier, NotifyError, build_with_metrics};
use mecha_aggregator::metrics::Metrics;
use robots::{Platform, Robot};

fn receivers(yaml: &str) -> (HashMap<String, Arc<dyn Notifier>>, Arc<Metrics>) {
    let text = format!("aggregator:\n  alerting:\n    receivers:\n{yaml}");
    let config =
        mecha_config::parse("test.yaml", &text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let metrics = Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}")));
    let r = build_with_metrics(&config.aggregator.alerting.receivers, &metrics)
        .unwrap_or_else(|e| panic!("{e}"));
    (r, metrics)
}

fn map(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// A firing alert on node `node-{i:03}`, with a Chinese summary and a
/// description of `description_repeats` sentences.
fn alert(i: usize, description_repeats: usize) -> Alert {
    Alert {
        status: AlertStatus::Firing,
        labels: map(&[
            ("alertname", "接口错误率过高".to_string()),
            ("severity", "critical".to_string()),
            ("node", format!("node-{i:03}")),
        ]),
        annotations: map(&[
            ("summary", "订单服务接口 5xx 错误率超过 5%".to_string()),
            (
                "description",
                "数据库连接池耗尽，请检查慢查询并扩容。".repeat(description_repeats),
            ),
            ("value", "7.5%".to_string()),
        ]),
        starts_at: Utc::now() - chrono::Duration::minutes(3),
        ends_at: Utc
            .with_ymd_and_hms(1, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default(),
        generator_url: String::new(),
        fingerprint: format!("{i:016x}"),
        value: None,
    }
}

fn notification(alerts: Vec<Alert>) -> Notification {
    Notification {
        version: "4".into(),
        group_key: "{}:{alertname=\"接口错误率过高\"}".into(),
        truncated_alerts: 0,
        status: AlertStatus::Firing,
        receiver: "oncall".into(),
        group_labels: map(&[("alertname", "接口错误率过高".to_string())]),
        common_labels: map(&[
            ("alertname", "接口错误率过高".to_string()),
            ("severity", "critical".to_string()),
        ]),
        common_annotations: BTreeMap::new(),
        external_url: "http://mecha.example".into(),
        alerts,
    }
}

/// The nodes named in messages, and the sum of their "+N more" counts.
fn represented(texts: &[String]) -> (BTreeSet<String>, usize) {
    let mut nodes = BTreeSet::new();
    let mut more = 0;
    for t in texts {
        for (at, _) in t.match_indices("node=node-") {
            nodes.insert(t[at + 5..at + 13].to_string());
        }
        for line in t.lines() {
            let line = line.trim_matches('*');
            if let Some(n) = line.strip_prefix('+').and_then(|l| l.strip_suffix(" more")) {
                more += n.parse::<usize>().unwrap_or(0);
            }
        }
    }
    (nodes, more)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_100_alerts_in_one_period_sends_at_most_20_messages_and_loses_none() {
    // The platform's "20 a minute" over a 2 s period, so the test does not
    // wait a minute; the robot enforces the same window.
    let period = Duration::from_secs(2);
    let robot = Robot::start(Platform::Wecom, "k1", None, 20, period).await;
    let (r, _) = receivers(&format!(
        "      - name: oncall\n        wecom_configs:\n          - url: {}\n            key: k1\n            test_rate_limit_period: 2s\n",
        robot.url()
    ));
    storm(&robot, &[Arc::clone(&r["oncall"])], period).await;
    assert!(robot.accepted().len() < 100, "nothing was merged");
}

/// Sends 100 alerts, each in a notification of its own, spread over one
/// `period` and taking turns among `receivers`, then checks that `robot`
/// refused none, got at most 20 messages in any period, and that every
/// alert is shown.
async fn storm(robot: &Robot, receivers: &[Arc<dyn Notifier>], period: Duration) {
    let mut tasks = Vec::new();
    for i in 0..100 {
        let receiver = Arc::clone(&receivers[i % receivers.len()]);
        tasks.push(tokio::spawn(async move {
            // Spread over one period, as a storm of separate groups.
            tokio::time::sleep(period * i as u32 / 100).await;
            receiver.notify(&notification(vec![alert(i, 1)])).await
        }));
    }
    for t in tasks {
        let result = t.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(result.is_ok(), "{result:?}");
    }
    assert_eq!(robot.refused(), Vec::<(i64, String)>::new());
    let accepted = robot.accepted();
    for (i, m) in accepted.iter().enumerate() {
        let within = accepted[i..]
            .iter()
            .filter(|n| n.at.duration_since(m.at) < period)
            .count();
        assert!(within <= 20, "{within} messages within one period");
    }
    let texts: Vec<String> = accepted.iter().map(|m| m.text()).collect();
    let (nodes, more) = represented(&texts);
    assert_eq!((nodes.len(), more), (100, 0), "alerts lost: {nodes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_receivers_on_one_robot_share_its_rate_limit_and_lose_no_alert() {
    // WeCom counts 20 messages a minute per robot (here per 2 s), whoever
    // sends them: two receivers posting to one robot get 20 between them.
    let period = Duration::from_secs(2);
    let robot = Robot::start(Platform::Wecom, "k4", None, 20, period).await;
    let entry = format!(
        "        wecom_configs:\n          - url: {}\n            key: k4\n            test_rate_limit_period: 2s\n",
        robot.url()
    );
    let (r, _) = receivers(&format!(
        "      - name: shop\n{entry}      - name: bank\n{entry}"
    ));
    storm(
        &robot,
        &[Arc::clone(&r["shop"]), Arc::clone(&r["bank"])],
        period,
    )
    .await;
}

/// The lines of `metrics` counting attempts of `receiver`'s `integration`.
fn attempts(metrics: &Metrics, receiver: &str, integration: &str) -> Vec<String> {
    let want = format!("integration=\"{integration}\",");
    let of = format!("receiver=\"{receiver}\"}}");
    let mut lines: Vec<String> = metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("mecha_alert_notifications_total{"))
        .filter(|l| l.contains(&want) && l.contains(&of))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn a_webhook_gets_alertmanagers_payload_with_its_credentials_and_failures_are_counted() {
    let bearer = Robot::start(
        Platform::Webhook,
        "Bearer s3cret",
        None,
        100,
        Duration::from_secs(60),
    )
    .await;
    // `ops:pa55` in base64, as RFC 7617 encodes it.
    let basic = Robot::start(
        Platform::Webhook,
        "Basic b3BzOnBhNTU=",
        None,
        100,
        Duration::from_secs(60),
    )
    .await;
    let (r, metrics) = receivers(&format!(
        "      - name: oncall\n        webhook_configs:\n          - url: {}\n            bearer_token: s3cret\n      - name: ops\n        webhook_configs:\n          - url: {}\n            basic_auth: {{ username: ops, password: pa55 }}\n",
        bearer.url(),
        basic.url()
    ));
    let mut n = notification(vec![alert(1, 1), alert(2, 1)]);
    let result = r["oncall"].notify(&n).await;
    assert!(result.is_ok(), "{result:?}");
    n.receiver = "ops".into();
    let result = r["ops"].notify(&n).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(bearer.refused(), Vec::<(i64, String)>::new());
    assert_eq!(basic.refused(), Vec::<(i64, String)>::new());
    assert_eq!(
        basic.accepted()[0].authorization.as_deref(),
        Some("Basic b3BzOnBhNTU=")
    );
    let got = bearer.accepted();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].authorization.as_deref(), Some("Bearer s3cret"));
    let body = &got[0].body;
    assert_eq!(body["version"], "4");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["receiver"], "oncall");
    assert_eq!(body["groupKey"], "{}:{alertname=\"接口错误率过高\"}");
    assert_eq!(body["groupLabels"]["alertname"], "接口错误率过高");
    assert_eq!(body["commonLabels"]["severity"], "critical");
    assert_eq!(body["externalURL"], "http://mecha.example");
    assert_eq!(body["truncatedAlerts"], 0);
    let alerts = body["alerts"].as_array().cloned().unwrap_or_default();
    assert_eq!(alerts.len(), 2);
    let a = &alerts[0];
    assert_eq!(a["status"], "firing");
    assert_eq!(a["labels"]["node"], "node-001");
    assert_eq!(a["labels"]["alertname"], "接口错误率过高");
    assert_eq!(
        a["annotations"]["summary"],
        "订单服务接口 5xx 错误率超过 5%"
    );
    let starts = a["startsAt"].as_str().unwrap_or_default();
    assert!(
        chrono::DateTime::parse_from_rfc3339(starts).is_ok(),
        "{starts}"
    );
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(a["fingerprint"], format!("{:016x}", 1));
    // Exactly Alertmanager's fields, nothing of mecha's own.
    let keys: BTreeSet<&str> = a
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        BTreeSet::from([
            "annotations",
            "endsAt",
            "fingerprint",
            "generatorURL",
            "labels",
            "startsAt",
            "status"
        ])
    );

    // 5xx is retried, 4xx is not; each attempt is counted by outcome.
    bearer.answer_status(503);
    let result = r["oncall"].notify(&n).await;
    assert!(
        matches!(result, Err(NotifyError::Retryable { .. })),
        "{result:?}"
    );
    bearer.answer_status(400);
    let result = r["oncall"].notify(&n).await;
    assert!(
        matches!(result, Err(NotifyError::Permanent { .. })),
        "{result:?}"
    );
    assert_eq!(
        attempts(&metrics, "oncall", "webhook[0]"),
        [
            "mecha_alert_notifications_total{integration=\"webhook[0]\",outcome=\"permanent_error\",receiver=\"oncall\"} 1",
            "mecha_alert_notifications_total{integration=\"webhook[0]\",outcome=\"retryable_error\",receiver=\"oncall\"} 1",
            "mecha_alert_notifications_total{integration=\"webhook[0]\",outcome=\"success\",receiver=\"oncall\"} 1",
        ]
    );
}

#[tokio::test]
async fn a_slack_webhook_gets_a_header_and_mrkdwn_sections_and_failures_are_counted() {
    let slack = Robot::start(
        Platform::Slack,
        "SLACKTOKEN",
        None,
        60,
        Duration::from_secs(60),
    )
    .await;
    let (r, metrics) = receivers(&format!(
        "      - name: oncall\n        slack_configs:\n          - url: {}SLACKTOKEN\n",
        slack.url()
    ));
    let n = notification(vec![alert(1, 1)]);
    let result = r["oncall"].notify(&n).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(slack.refused(), Vec::<(i64, String)>::new());
    let got = slack.accepted();
    assert_eq!(got.len(), 1);
    let body = &got[0].body;
    let title = body["text"].as_str().unwrap_or_default();
    assert!(title.starts_with("[FIRING:1] 接口错误率过高"), "{body}");
    assert_eq!(body["blocks"][0]["type"], "header");
    assert_eq!(body["blocks"][0]["text"]["type"], "plain_text");
    assert_eq!(body["blocks"][0]["text"]["text"], title);
    assert_eq!(body["blocks"][1]["type"], "section");
    assert_eq!(body["blocks"][1]["text"]["type"], "mrkdwn");
    let section = got[0].text();
    assert!(section.contains("*接口错误率过高* · critical"), "{section}");
    assert!(section.contains("node=node-001"), "{section}");
    assert!(section.contains("> Value: 7.5%"), "{section}");

    slack.answer_status(500);
    let result = r["oncall"].notify(&n).await;
    assert!(
        matches!(result, Err(NotifyError::Retryable { .. })),
        "{result:?}"
    );
    slack.answer_status(403);
    let result = r["oncall"].notify(&n).await;
    let Err(NotifyError::Permanent { reason, .. }) = result else {
        panic!("expected a permanent error, got {result:?}");
    };
    assert!(reason.contains("http 403: channel_is_archived"), "{reason}");
    assert!(!reason.contains("SLACKTOKEN"), "the token in {reason}");
    assert_eq!(
        attempts(&metrics, "oncall", "slack[0]"),
        [
            "mecha_alert_notifications_total{integration=\"slack[0]\",outcome=\"permanent_error\",receiver=\"oncall\"} 1",
            "mecha_alert_notifications_total{integration=\"slack[0]\",outcome=\"retryable_error\",receiver=\"oncall\"} 1",
            "mecha_alert_notifications_total{integration=\"slack[0]\",outcome=\"success\",receiver=\"oncall\"} 1",
        ]
    );
}

async fn a_big_group_fits(message_type: &str, limit: usize) {
    let robot = Robot::start(Platform::Wecom, "k2", None, 20, Duration::from_secs(60)).await;
    let (r, _) = receivers(&format!(
        "      - name: oncall\n        wecom_configs:\n          - url: {}\n            key: k2\n            message_type: {message_type}\n",
        robot.url()
    ));
    let alerts = (0..200).map(|i| alert(i, 12)).collect();
    let result = r["oncall"].notify(&notification(alerts)).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(robot.refused(), Vec::<(i64, String)>::new());
    let accepted = robot.accepted();
    assert!(
        (1..=3).contains(&accepted.len()),
        "{} messages",
        accepted.len()
    );
    let texts: Vec<String> = accepted.iter().map(|m| m.text()).collect();
    for t in &texts {
        assert!(t.len() <= limit, "{} bytes", t.len());
        assert!(std::str::from_utf8(t.as_bytes()).is_ok());
    }
    let (nodes, more) = represented(&texts);
    assert!(!nodes.is_empty());
    assert_eq!(nodes.len() + more, 200, "{nodes:?} + {more} more");
}

#[tokio::test]
async fn a_group_of_200_long_chinese_alerts_fits_wecom_markdown_messages() {
    a_big_group_fits("markdown", 4096).await;
}

#[tokio::test]
async fn a_group_of_200_long_chinese_alerts_fits_wecom_text_messages() {
    a_big_group_fits("text", 2048).await;
}

/// The robot allows 1 message a second, the receiver believes 20: the
/// second message is refused with the platform's rate-limit `code` and sent
/// again after backing off.
async fn backed_off_and_retried(platform: Platform, configs: &str, code: i64, msg: &str) {
    let robot = Robot::start(platform, "k3", None, 1, Duration::from_secs(1)).await;
    let (r, metrics) = receivers(&format!(
        "      - name: oncall\n        {configs}:\n          - url: {}\n            key: k3\n            test_rate_limit_period: 1s\n",
        robot.url()
    ));
    for i in 0..2 {
        let result = r["oncall"].notify(&notification(vec![alert(i, 1)])).await;
        assert!(result.is_ok(), "{result:?}");
    }
    assert_eq!(robot.accepted().len(), 2);
    assert_eq!(robot.refused(), vec![(code, msg.to_string())]);
    let text = metrics.render();
    let integration = format!("{}[0]", configs.trim_end_matches("_configs"));
    for line in [
        format!(
            "mecha_alert_notifications_total{{integration=\"{integration}\",outcome=\"success\",receiver=\"oncall\"}} 2"
        ),
        format!(
            "mecha_alert_notifications_total{{integration=\"{integration}\",outcome=\"retryable_error\",receiver=\"oncall\"}} 1"
        ),
        format!(
            "mecha_alert_notification_duration_seconds_count{{integration=\"{integration}\",receiver=\"oncall\"}} 3"
        ),
    ] {
        assert!(text.contains(&line), "{line} missing from\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_robot_rate_limit_is_backed_off_and_retried() {
    backed_off_and_retried(
        Platform::Wecom,
        "wecom_configs",
        45009,
        "api freq out of limit",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dingtalk_rate_limit_130101_is_backed_off_and_retried() {
    backed_off_and_retried(
        Platform::Dingtalk,
        "dingtalk_configs",
        130101,
        "send too fast, exceed 20 times per minute",
    )
    .await;
}

#[tokio::test]
async fn signed_dingtalk_and_feishu_messages_are_accepted_with_mentions() {
    let ding = Robot::start(
        Platform::Dingtalk,
        "tok",
        Some("SECding"),
        20,
        Duration::from_secs(60),
    )
    .await;
    let fei = Robot::start(
        Platform::Feishu,
        "hook",
        Some("fsecret"),
        100,
        Duration::from_secs(60),
    )
    .await;
    let (r, _) = receivers(&format!(
        "      - name: oncall\n        dingtalk_configs:\n          - url: {}\n            key: tok\n            secret: SECding\n            mentions: {{ mobiles: ['13800001111'] }}\n        feishu_configs:\n          - url: {}\n            key: hook\n            secret: fsecret\n            mentions: {{ users: [ou_abc] }}\n",
        ding.url(),
        fei.url()
    ));
    let result = r["oncall"].notify(&notification(vec![alert(1, 1)])).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(ding.refused(), Vec::<(i64, String)>::new());
    assert_eq!(fei.refused(), Vec::<(i64, String)>::new());
    let d = &ding.accepted()[0];
    assert_eq!(d.body["at"]["atMobiles"][0], "13800001111");
    assert!(d.text().contains("@13800001111"), "{}", d.text());
    assert!(d.text().contains("接口错误率过高"));
    let f = &fei.accepted()[0];
    assert_eq!(f.body["msg_type"], "interactive");
    assert_eq!(f.body["card"]["header"]["template"], "red");
    assert!(f.text().contains("<at id=ou_abc></at>"), "{}", f.text());
}

#[tokio::test]
async fn bad_keys_and_signatures_fail_permanently_and_mark_the_receiver_failing() {
    let wecom = Robot::start(Platform::Wecom, "right", None, 20, Duration::from_secs(60)).await;
    let ding = Robot::start(
        Platform::Dingtalk,
        "tok",
        Some("SECright"),
        20,
        Duration::from_secs(60),
    )
    .await;
    let fei = Robot::start(
        Platform::Feishu,
        "hook",
        Some("right"),
        100,
        Duration::from_secs(60),
    )
    .await;
    let (r, metrics) = receivers(&format!(
        "      - name: bad\n        wecom_configs:\n          - url: {}\n            key: wrong\n        dingtalk_configs:\n          - url: {}\n            key: tok\n            secret: SECwrong\n        feishu_configs:\n          - url: {}\n            key: hook\n            secret: wrong\n",
        wecom.url(),
        ding.url(),
        fei.url()
    ));
    let result = r["bad"].notify(&notification(vec![alert(1, 1)])).await;
    let Err(NotifyError::Permanent { reason, .. }) = result else {
        panic!("expected a permanent error, got {result:?}");
    };
    for code in ["errcode 93000", "errcode 310000", "code 19021"] {
        assert!(reason.contains(code), "{code} missing from {reason}");
    }
    assert!(!reason.contains("wrong"), "a secret in {reason}");
    assert_eq!(wecom.refused()[0].0, 93000);
    assert_eq!(ding.refused()[0].0, 310000);
    assert_eq!(fei.refused()[0].0, 19021);
    let text = metrics.render();
    for integration in ["wecom[0]", "dingtalk[0]", "feishu[0]"] {
        let line = format!(
            "mecha_alert_receiver_failing{{integration=\"{integration}\",receiver=\"bad\"}} 1"
        );
        assert!(text.contains(&line), "{line} missing from\n{text}");
        let line = format!(
            "mecha_alert_notifications_total{{integration=\"{integration}\",outcome=\"permanent_error\",receiver=\"bad\"}} 1"
        );
        assert!(text.contains(&line), "{line} missing from\n{text}");
    }
}

#[tokio::test]
async fn https_robots_are_reached_with_their_ca_and_refused_certificates_are_counted() {
    let pki = robots::TestPki::new();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ca = dir.path().join("robot-ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap_or_else(|e| panic!("{e}"));
    let robot = Robot::start_tls(
        Platform::Wecom,
        "k",
        None,
        20,
        Duration::from_secs(60),
        &pki,
    )
    .await;
    assert!(robot.url().starts_with("https://"), "{}", robot.url());
    let (r, metrics) = receivers(&format!(
        "      - name: internal\n        wecom_configs:\n          - url: {url}\n            key: k\n            tls: {{ ca_file: {ca} }}\n      - name: untrusted\n        wecom_configs:\n          - url: {url}\n            key: k\n      - name: unchecked\n        wecom_configs:\n          - url: {url}\n            key: k\n            tls: {{ insecure_skip_verify: true }}\n",
        url = robot.url(),
        ca = ca.display(),
    ));

    let result = r["internal"].notify(&notification(vec![alert(1, 1)])).await;
    assert!(result.is_ok(), "{result:?}");
    let accepted = robot.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].body["msgtype"], "markdown");
    assert!(
        accepted[0].text().contains("接口错误率过高"),
        "{}",
        accepted[0].text()
    );
    assert!(
        accepted[0].text().contains("node=node-001"),
        "{}",
        accepted[0].text()
    );

    // The system's roots do not hold the test CA.
    let result = r["untrusted"]
        .notify(&notification(vec![alert(2, 1)]))
        .await;
    let Err(NotifyError::Permanent { reason, .. }) = result else {
        panic!("expected a permanent certificate error, got {result:?}");
    };
    assert!(reason.contains("invalid peer certificate"), "{reason}");
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    assert_eq!(robot.accepted().len(), 1);

    let result = r["unchecked"]
        .notify(&notification(vec![alert(3, 1)]))
        .await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(robot.accepted().len(), 2);

    let text = metrics.render();
    for line in [
        "mecha_alert_notifications_total{integration=\"wecom[0]\",outcome=\"success\",receiver=\"internal\"} 1",
        "mecha_alert_notifications_total{integration=\"wecom[0]\",outcome=\"tls_error\",receiver=\"untrusted\"} 1",
        "mecha_alert_receiver_failing{integration=\"wecom[0]\",receiver=\"untrusted\"} 1",
        "mecha_alert_receiver_failing{integration=\"wecom[0]\",receiver=\"internal\"} 0",
        "mecha_alert_notifications_total{integration=\"wecom[0]\",outcome=\"success\",receiver=\"unchecked\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[test]
fn an_unreadable_or_non_pem_ca_file_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let not_pem = dir.path().join("ca.der");
    std::fs::write(&not_pem, b"\x30\x82\x01\x0a not a pem file").unwrap_or_else(|e| panic!("{e}"));
    let missing = dir.path().join("missing.pem");
    for (path, want) in [
        (&not_pem, "expected PEM certificates"),
        (&missing, "cannot read"),
    ] {
        let text = format!(
            "aggregator:\n  alerting:\n    receivers:\n      - name: a\n        webhook_configs:\n          - url: https://hooks.internal/a\n            tls:\n              ca_file: {}\n",
            path.display()
        );
        let msg = mecha_config::parse("mecha.yaml", &text, &|_| None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.contains(
                "mecha.yaml:8: aggregator.alerting.receivers[0].webhook_configs[0].tls.ca_file"
            ),
            "{msg}"
        );
        assert!(msg.contains(want), "{want} missing from {msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
}
