//! Config reload through the real binary: `mecha aggregator` started with a
//! config file takes new alert rules on SIGHUP and on `POST /-/reload`,
//! keeps the running rules when the new file is broken (the reload answers
//! 400 with the file, line and key), names the changed sections that need a
//! restart, and counts every attempt in `/metrics`. Rules are read back
//! through `GET /api/v1/rules`, not the log.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Mecha, wait_for};
use serde_json::Value;

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A config with log rules named `rules` (none fires: nothing is logged)
/// and a route whose `group_wait` is `group_wait`.
fn write_config(path: &Path, rules: &[&str], group_wait: &str) {
    let mut text = format!(
        "aggregator:\n  alerting:\n    evaluation_interval: 1s\n    receivers:\n      - name: team\n        webhook_configs:\n          - url: http://127.0.0.1:9/hook\n    route:\n      receiver: team\n      group_wait: {group_wait}\n    rules:\n"
    );
    for name in rules {
        text.push_str(&format!(
            "      - name: {name}\n        type: log\n        query: 'level:error AND service:{name}'\n        window: 1m\n        above: 1000\n"
        ));
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
}

fn rule_names(http: &str) -> Vec<String> {
    let v: Value = client()
        .get(format!("http://{http}/api/v1/rules"))
        .send()
        .and_then(|r| r.json())
        .unwrap_or(Value::Null);
    let mut names: Vec<String> = v["rules"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn metrics(http: &str) -> String {
    client()
        .get(format!("http://{http}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default()
}

fn sighup(mecha: &Mecha) {
    let status = Command::new("kill")
        .args(["-HUP", &mecha.child.id().to_string()])
        .status()
        .unwrap_or_else(|e| panic!("kill -HUP: {e}"));
    assert!(status.success(), "kill -HUP: {status}");
}

fn post_reload(http: &str) -> (u16, Value) {
    let resp = client()
        .post(format!("http://{http}/-/reload"))
        .send()
        .unwrap_or_else(|e| panic!("POST /-/reload: {e}"));
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

#[test]
fn sighup_and_post_reload_apply_new_rules_and_a_broken_file_keeps_the_old_ones() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = tmp.path().join("mecha.yaml");
    write_config(&cfg, &["CheckoutErrors"], "30s");
    let cfg_arg = cfg.display().to_string();
    let mecha = Mecha::start(
        "aggregator",
        &tmp.path().join("data"),
        &[
            "--config",
            &cfg_arg,
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "off",
        ],
    );
    let http = mecha.addr("http");
    assert_eq!(rule_names(&http), vec!["CheckoutErrors"]);

    // SIGHUP with a rule added.
    write_config(&cfg, &["CheckoutErrors", "PaymentErrors"], "30s");
    sighup(&mecha);
    wait_for("the new rule after SIGHUP", Duration::from_secs(30), || {
        (rule_names(&http) == ["CheckoutErrors", "PaymentErrors"]).then_some(())
    });
    let m = metrics(&http);
    assert!(
        m.contains("mecha_config_reload_total{outcome=\"success\"} 1"),
        "{m}"
    );
    assert!(m.contains("mecha_config_last_reload_successful 1"), "{m}");

    // SIGHUP with a broken file: the old rules stay, the error is counted.
    std::fs::write(
        &cfg,
        "aggregator:\n  alerting:\n    rules:\n      - name: Broken\n        type: log\n        query: 'level:error'\n        window: 1m\n        abvoe: 3\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    sighup(&mecha);
    wait_for(
        "the failed reload in /metrics",
        Duration::from_secs(30),
        || {
            metrics(&http)
                .contains("mecha_config_reload_total{outcome=\"error\"} 1")
                .then_some(())
        },
    );
    assert_eq!(rule_names(&http), vec!["CheckoutErrors", "PaymentErrors"]);
    assert!(metrics(&http).contains("mecha_config_last_reload_successful 0"));

    // POST /-/reload with the same broken file: 400 naming file, line, key.
    let (status, body) = post_reload(&http);
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("mecha.yaml:8"), "{error}");
    assert!(error.contains("abvoe"), "{error}");
    assert_eq!(rule_names(&http), vec!["CheckoutErrors", "PaymentErrors"]);
    assert!(
        metrics(&http).contains("mecha_config_reload_total{outcome=\"error\"} 2"),
        "{}",
        metrics(&http)
    );

    // POST /-/reload with a rule removed and the route changed: the rules
    // apply now, the route after a restart, and the answer says so.
    write_config(&cfg, &["PaymentErrors"], "5s");
    let (status, body) = post_reload(&http);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rules"], 1, "{body}");
    assert_eq!(
        body["restart_required"],
        serde_json::json!(["aggregator.alerting.route"]),
        "{body}"
    );
    assert_eq!(rule_names(&http), vec!["PaymentErrors"]);
    let m = metrics(&http);
    assert!(
        m.contains("mecha_config_reload_total{outcome=\"success\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("mecha_config_last_reload_success_timestamp_seconds"),
        "{m}"
    );
    mecha.stop();
}
