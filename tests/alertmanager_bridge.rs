//! The real Alertmanager (Debian's `prometheus-alertmanager`) notifies
//! mecha's bridge (`/api/v1/alertmanager/{receiver}`), and mecha delivers to
//! servers that answer like the WeCom, DingTalk and Feishu robot APIs and
//! check their signatures: firing, then resolved. Also the bridge's answers
//! to bad requests.

mod common;
#[path = "common/robots.rs"]
mod robots;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Mecha, wait_for};
use robots::{Platform, Robot};
use serde_json::{Value, json};

/// A running Alertmanager, killed on drop.
struct Alertmanager {
    child: Child,
    url: String,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

fn start_alertmanager(dir: &Path, webhook: &str) -> Alertmanager {
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: mecha\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: mecha\n    webhook_configs:\n      - url: {webhook}\n        send_resolved: true\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let storage = dir.join("am-data");
    let port = free_port();
    let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", storage.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start prometheus-alertmanager (run scripts/install-test-deps): {e}")
        });
    let am = Alertmanager {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::blocking::Client::new();
    wait_for("alertmanager ready", Duration::from_secs(30), || {
        client
            .get(format!("{}/-/ready", am.url))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    });
    am
}

fn post_alert(am: &Alertmanager, ends_at: Option<String>, value: &str) {
    let now = chrono::Utc::now();
    let mut alert = json!({
        "labels": {"alertname": "磁盘使用率过高", "severity": "critical", "node": "node-1"},
        "annotations": {"summary": "节点 node-1 的磁盘 /data 使用率过高", "value": value},
        "startsAt": (now - chrono::Duration::minutes(5)).to_rfc3339(),
        "generatorURL": "http://prometheus.example/graph?g0.expr=disk",
    });
    if let Some(end) = ends_at {
        alert["endsAt"] = json!(end);
    }
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/api/v2/alerts", am.url))
        .json(&json!([alert]))
        .send()
        .unwrap_or_else(|e| panic!("post to alertmanager: {e}"));
    assert!(
        resp.status().is_success(),
        "alertmanager said {}",
        resp.status()
    );
}

fn config(dir: &Path, wecom: &Robot, ding: &Robot, fei: &Robot) -> std::path::PathBuf {
    let path = dir.join("mecha.yaml");
    std::fs::write(
        &path,
        format!(
            "aggregator:\n  alerting:\n    receivers:\n      - name: oncall\n        wecom_configs:\n          - url: {}\n            key: wkey\n        dingtalk_configs:\n          - url: {}\n            key: dtoken\n            secret: SECdingtalk\n        feishu_configs:\n          - url: {}\n            key: fhook\n            secret: fsecret\n",
            wecom.url(),
            ding.url(),
            fei.url()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    path
}

fn wait_for_text(robots: &[(&str, &Robot)], needles: &[&str]) {
    for (name, robot) in robots {
        wait_for(
            &format!("{name} to receive {needles:?}"),
            Duration::from_secs(60),
            || {
                robot
                    .accepted()
                    .iter()
                    .any(|m| needles.iter().all(|n| m.text().contains(n)))
                    .then_some(())
            },
        );
        assert_eq!(
            robot.refused(),
            Vec::<(i64, String)>::new(),
            "{name} refused"
        );
    }
}

#[test]
fn alertmanager_notifications_reach_wecom_dingtalk_and_feishu_through_the_bridge() {
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let minute = Duration::from_secs(60);
    let (wecom, ding, fei) = rt.block_on(async {
        (
            Robot::start(Platform::Wecom, "wkey", None, 20, minute).await,
            Robot::start(
                Platform::Dingtalk,
                "dtoken",
                Some("SECdingtalk"),
                20,
                minute,
            )
            .await,
            Robot::start(Platform::Feishu, "fhook", Some("fsecret"), 100, minute).await,
        )
    });
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = config(tmp.path(), &wecom, &ding, &fei);
    let cfg = cfg.to_string_lossy().to_string();
    let mecha = Mecha::start(
        "aggregator",
        &tmp.path().join("data"),
        &[
            "--config",
            &cfg,
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ],
    );
    let http = mecha.addr("http");
    let am = start_alertmanager(
        tmp.path(),
        &format!("http://{http}/api/v1/alertmanager/oncall"),
    );
    let robots = [("wecom", &wecom), ("dingtalk", &ding), ("feishu", &fei)];

    post_alert(&am, None, "97%");
    wait_for_text(&robots, &["[FIRING:1] 磁盘使用率过高 (critical)", "97%"]);

    post_alert(&am, Some(chrono::Utc::now().to_rfc3339()), "82%");
    wait_for_text(
        &robots,
        &["[RESOLVED:1] 磁盘使用率过高", "Value at resolve: 82%"],
    );

    let metrics = reqwest::blocking::get(format!("http://{http}/metrics"))
        .and_then(|r| r.text())
        .unwrap_or_else(|e| panic!("{e}"));
    for integration in ["wecom[0]", "dingtalk[0]", "feishu[0]"] {
        let line = format!(
            "mecha_alert_notifications_total{{integration=\"{integration}\",outcome=\"success\",receiver=\"oncall\"}}"
        );
        assert!(metrics.contains(&line), "{line} missing from\n{metrics}");
    }
    assert!(
        metrics.contains("mecha_alert_bridge_requests_total{outcome=\"delivered\"}"),
        "{metrics}"
    );
    drop(am);
    mecha.stop();
}

#[test]
fn the_bridge_refuses_bad_payloads_with_reasons() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = tmp.path().join("mecha.yaml");
    std::fs::write(
        &cfg,
        "aggregator:\n  alerting:\n    receivers:\n      - name: hooks\n        webhook_configs:\n          - url: http://127.0.0.1:9/unused\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let cfg = cfg.to_string_lossy().to_string();
    let mecha = Mecha::start(
        "aggregator",
        &tmp.path().join("data"),
        &[
            "--config",
            &cfg,
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ],
    );
    let http = mecha.addr("http");
    let client = reqwest::blocking::Client::new();
    let post = |receiver: &str, body: Vec<u8>| {
        let resp = client
            .post(format!("http://{http}/api/v1/alertmanager/{receiver}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap_or_else(|e| panic!("{e}"));
        let status = resp.status().as_u16();
        let v: Value = resp.json().unwrap_or(Value::Null);
        (status, v)
    };
    let v3 = br#"{"version":"3","status":"firing","alerts":[]}"#.to_vec();
    let (status, v) = post("hooks", v3);
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("version \"4\""),
        "{v}"
    );
    let (status, v) = post("hooks", b"{oops".to_vec());
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().is_some(), "{v}");
    let (status, v) = post("nobody", b"{}".to_vec());
    assert_eq!(status, 404, "{v}");
    let (status, _) = post("hooks", vec![b' '; 1024 * 1024 + 1]);
    assert_eq!(status, 413);
    // A webhook nobody listens on: retryable, so Alertmanager would retry.
    let payload = json!({
        "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing",
        "receiver": "hooks", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://am", "alerts": [{
            "status": "firing", "labels": {"alertname": "A"}, "annotations": {},
            "startsAt": "2026-12-01T08:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "", "fingerprint": "0000000000000001"
        }]
    });
    let (status, v) = post("hooks", payload.to_string().into_bytes());
    assert_eq!(status, 503, "{v}");
    let metrics = reqwest::blocking::get(format!("http://{http}/metrics"))
        .and_then(|r| r.text())
        .unwrap_or_else(|e| panic!("{e}"));
    for line in [
        "mecha_alert_bridge_requests_total{outcome=\"bad_request\"} 2",
        "mecha_alert_bridge_requests_total{outcome=\"unknown_receiver\"} 1",
        "mecha_alert_bridge_requests_total{outcome=\"too_large\"} 1",
        "mecha_alert_bridge_requests_total{outcome=\"retryable_error\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    mecha.stop();
}
