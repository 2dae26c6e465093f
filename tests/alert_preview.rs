//! `mecha alert preview`: prints what each receiver integration would send
//! for an Alertmanager payload, with secrets masked, sending nothing.

use std::process::Command;

const PAYLOAD: &str = r#"{"receiver":"oncall","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"磁盘使用率过高","severity":"critical","node":"node-1"},"annotations":{"summary":"节点 node-1 磁盘使用率过高","value":"97%"},"startsAt":"2026-12-01T08:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus.example/graph","fingerprint":"0123456789abcdef"}],"groupLabels":{"alertname":"磁盘使用率过高"},"commonLabels":{"alertname":"磁盘使用率过高","severity":"critical"},"commonAnnotations":{},"externalURL":"http://am.example","version":"4","groupKey":"{}:{alertname=\"磁盘使用率过高\"}","truncatedAlerts":0}"#;

#[test]
fn preview_prints_every_request_with_secrets_masked() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let payload = tmp.path().join("payload.json");
    std::fs::write(&payload, PAYLOAD).unwrap_or_else(|e| panic!("{e}"));
    let config = tmp.path().join("mecha.yaml");
    std::fs::write(
        &config,
        "aggregator:\n  alerting:\n    receivers:\n      - name: oncall\n        wecom_configs:\n          - key: TOPSECRETKEY\n        dingtalk_configs:\n          - key: DINGTOKEN\n            secret: SECDINGSECRET\n        feishu_configs:\n          - key: FEISHUHOOK\n            secret: FEISHUSECRET\n      - name: other\n        slack_configs:\n          - url: https://hooks.slack.com/services/T/B/SLACKSECRET\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_mecha"))
        .args(["alert", "preview", "--payload"])
        .arg(&payload)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The payload names `oncall`: only it is shown.
    assert!(stdout.starts_with("# receiver oncall\n"), "{stdout}");
    assert!(!stdout.contains("other"), "{stdout}");
    for line in [
        "wecom[0] POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=****",
        "dingtalk[0] POST https://oapi.dingtalk.com/robot/send?access_token=****&timestamp=",
        "feishu[0] POST https://open.feishu.cn/open-apis/bot/v2/hook/****",
        "[FIRING:1] 磁盘使用率过高 (critical)",
    ] {
        assert!(stdout.contains(line), "{line} missing from\n{stdout}");
    }
    for secret in [
        "TOPSECRETKEY",
        "DINGTOKEN",
        "SECDINGSECRET",
        "FEISHUHOOK",
        "FEISHUSECRET",
    ] {
        assert!(!stdout.contains(secret), "{secret} shown in\n{stdout}");
    }
    // Each body is the JSON sent.
    let bodies: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(bodies.len(), 3);
    assert_eq!(bodies[0]["msgtype"], "markdown");
    assert_eq!(bodies[2]["sign"], "****");

    let out = Command::new(env!("CARGO_BIN_EXE_mecha"))
        .args(["alert", "preview", "--receiver", "nobody", "--payload"])
        .arg(&payload)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
}

const RULE_CONFIG: &str = r#"aggregator:
  alerting:
    external_url: https://mecha.example.com
    receivers:
      - name: shop-oncall
        wecom_configs:
          - key: TOPSECRETKEY
            mentions: { users: [zhangsan] }
      - name: everyone
        webhook_configs:
          - url: http://hooks.internal/alerts?token=HOOKTOKEN
    route:
      receiver: everyone
      group_by: [alertname, namespace]
      routes:
        - matchers: ['severity="critical"']
          receiver: shop-oncall
    rules:
      - name: PaymentErrors
        type: log
        query: 'level:error AND namespace:shop'
        window: 5m
        above: 10
        group_by: [namespace]
        labels: { severity: critical }
        annotations:
          summary: '{{ $value }} errors in {{ $labels.namespace }}'
      - name: SlowCheckout
        type: log
        query: 'message:"checkout took"'
        window: 10m
        above: 100
"#;

fn preview_rule(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mecha"))
        .args(["alert", "preview"])
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The output with the moment of the preview (the sample alert starts
/// now) replaced by `<now>`.
fn without_now(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("Started: ") {
        let (head, tail) = rest.split_at(at + "Started: ".len());
        out.push_str(head);
        match tail.find(" UTC") {
            Some(end) => {
                out.push_str("<now>");
                rest = &tail[end..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn preview_of_a_rule_routes_its_sample_alert_and_prints_the_wecom_markdown() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = tmp.path().join("mecha.yaml");
    std::fs::write(&config, RULE_CONFIG).unwrap_or_else(|e| panic!("{e}"));
    let out = preview_rule(&config, &["--rule", "PaymentErrors", "--value", "42"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("TOPSECRETKEY"), "{stdout}");
    // The critical alert takes the child route only (no `continue`).
    assert!(!stdout.contains("everyone"), "{stdout}");
    let body: serde_json::Value = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    let content = body["markdown"]["content"].as_str().unwrap_or_default();
    assert!(content.contains("> 42 errors in <namespace>"), "{content}");
    assert!(content.contains("<@zhangsan>"), "{content}");
    insta::assert_snapshot!(without_now(&stdout));

    // Without a severity label the alert takes the root route: the webhook
    // gets Alertmanager's payload, its token masked.
    let out = preview_rule(&config, &["--rule", "SlowCheckout"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("-> receiver everyone (group {}:{alertname=\"SlowCheckout\"})"),
        "{stdout}"
    );
    assert!(
        stdout.contains("webhook[0] POST http://hooks.internal/****"),
        "{stdout}"
    );
    assert!(!stdout.contains("HOOKTOKEN"), "{stdout}");
    assert!(stdout.contains("\"version\":\"4\""), "{stdout}");
}

#[test]
fn preview_of_an_unknown_rule_lists_the_known_ones_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = tmp.path().join("mecha.yaml");
    std::fs::write(&config, RULE_CONFIG).unwrap_or_else(|e| panic!("{e}"));
    let out = preview_rule(&config, &["--rule", "NoSuchRule"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no rule \"NoSuchRule\"") && stderr.contains("PaymentErrors, SlowCheckout"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn validate_names_the_tls_ca_file_that_is_not_pem() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ca = tmp.path().join("internal-ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap_or_else(|e| panic!("{e}"));
    let config = tmp.path().join("mecha.yaml");
    std::fs::write(
        &config,
        format!(
            "aggregator:\n  alerting:\n    receivers:\n      - name: internal\n        wecom_configs:\n          - url: https://robots.internal/cgi-bin/webhook/send\n            key: k\n            tls:\n              ca_file: {}\n",
            ca.display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_mecha"))
        .arg("validate")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(":9: aggregator.alerting.receivers[0].wecom_configs[0].tls.ca_file"),
        "{stderr}"
    );
    assert!(stderr.contains("expected PEM certificates"), "{stderr}");
}
