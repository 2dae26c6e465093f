//! Container logs end to end through the real binary: files in CRI and docker
//! json-file formats (partial lines, JSON bodies, a Java stack trace, a rotation)
//! are tailed, parsed, forwarded, indexed and found through the search API —
//! every line exactly once, with the right fields.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Mecha, append, cri_ts, hits, search, total, wait_for};
use serde_json::Value;

const CONTAINER_ID: &str = "8f3b2c1d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

fn write_config(dir: &std::path::Path, logs: &std::path::Path) -> std::path::PathBuf {
    let cfg = dir.join("mecha.yaml");
    std::fs::write(
        &cfg,
        format!(
            "agent:\n  sources:\n    containers:\n      type: tail\n      include: [\"{}/*.log\"]\n      multiline: {{ rule: builtin, flush_timeout: 500ms }}\n      rescan_interval: 200ms\naggregator:\n  commit_interval: 200ms\n",
            logs.display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    cfg
}

/// Starts `mecha standalone` on free ports, with gRPC off.
fn standalone(data: &std::path::Path, cfg: &std::path::Path, admin: &str) -> Mecha {
    let cfg = cfg.to_str().unwrap_or_default();
    let args = [
        "--config",
        cfg,
        "--http",
        "127.0.0.1:0",
        "--grpc",
        "off",
        "--admin",
        admin,
    ];
    Mecha::start("standalone", data, &args)
}

/// Hits for one namespace, as (body, hit) sorted by body.
fn by_body(http: &str, q: &str) -> BTreeMap<String, Value> {
    hits(&search(http, q, 10_000))
        .into_iter()
        .map(|h| {
            let b = h
                .get("body")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            (b, h)
        })
        .collect()
}

#[test]
fn container_logs_arrive_once_with_their_fields() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let logs = tmp.path().join("containers");
    std::fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("{e}"));
    let cfg = write_config(tmp.path(), &logs);
    let cri = logs.join(format!("shop-api-7d9f8b-x2x9z_shop_api-{CONTAINER_ID}.log"));
    let docker = logs.join(format!("auth-web-0_auth_web-{CONTAINER_ID}.log"));

    // Written before start: read from the beginning.
    let ts = cri_ts(Duration::from_secs(30));
    append(
        &cri,
        &format!(
            "{ts} stdout F {{\"level\":\"info\",\"msg\":\"order placed\",\"user\":\"ann\",\"order\":1}}\n\
             {ts} stdout P {{\"level\":\"error\",\"msg\":\"payment \n\
             {ts} stdout P declined\",\"user\":\"bob\",\n\
             {ts} stdout F \"order\":2}}\n\
             {ts} stderr F 2026-11-23 10:00:00.123 ERROR 1 --- [main] c.s.OrderService : order failed\n\
             {ts} stderr F java.lang.IllegalStateException: stock exhausted\n\
             {ts} stderr F \tat com.shop.OrderService.place(OrderService.java:42)\n\
             {ts} stderr F \tat com.shop.Api.handle(Api.java:17)\n\
             {ts} stderr F Caused by: java.sql.SQLException: timeout\n\
             {ts} stderr F \tat com.zaxxer.hikari.Pool.get(Pool.java:100)\n\
             {ts} stderr F \t... 12 more\n\
             {ts} stderr F 2026-11-23 10:00:01.000 INFO 1 --- [main] c.s.OrderService : recovered\n"
        ),
    );

    let data = tmp.path().join("data");
    let mecha = standalone(&data, &cfg, "127.0.0.1:0");
    let http = mecha.addr("http");

    // Written after start: docker json-file with a split line and plain text.
    let t = cri_ts(Duration::from_secs(20));
    append(
        &docker,
        &format!(
            "{{\"log\":\"level=warn msg=\\\"slow login\\\" user=carol took=1.5s\\n\",\"stream\":\"stdout\",\"time\":\"{t}\"}}\n\
             {{\"log\":\"first half of a long line \",\"stream\":\"stdout\",\"time\":\"{t}\"}}\n\
             {{\"log\":\"and its second half\\n\",\"stream\":\"stdout\",\"time\":\"{t}\"}}\n\
             {{\"log\":\"plain text from the auth service\\n\",\"stream\":\"stderr\",\"time\":\"{t}\"}}\n"
        ),
    );

    // Rotation: more lines in the old file, rename it away, create a new one.
    let t = cri_ts(Duration::from_secs(10));
    append(
        &cri,
        &format!("{t} stdout F {{\"level\":\"info\",\"msg\":\"before rotation\"}}\n"),
    );
    wait_for("the first shop records", Duration::from_secs(30), || {
        (total(&search(&http, "namespace:shop", 10)) >= 3).then_some(())
    });
    append(
        &cri,
        &format!("{t} stdout F {{\"level\":\"info\",\"msg\":\"last line of the old file\"}}\n"),
    );
    std::fs::rename(&cri, logs.join("rotated.log.1")).unwrap_or_else(|e| panic!("{e}"));
    let t = cri_ts(Duration::from_secs(5));
    append(
        &cri,
        &format!("{t} stdout F {{\"level\":\"warn\",\"msg\":\"first line of the new file\"}}\n"),
    );

    let shop_expected = [
        "order placed",
        "payment declined",
        "before rotation",
        "last line of the old file",
        "first line of the new file",
    ];
    let shop = wait_for("all shop records", Duration::from_secs(60), || {
        let got = by_body(&http, "namespace:shop");
        let plain = got.keys().filter(|b| !b.contains('\n')).count();
        (got.len() >= shop_expected.len() + 2 && plain >= shop_expected.len()).then_some(got)
    });
    let all = search(&http, "namespace:shop", 10_000);
    assert_eq!(
        total(&all),
        (shop_expected.len() + 2) as u64,
        "every shop line exactly once: {all:#}"
    );
    for body in shop_expected {
        assert!(
            shop.contains_key(body),
            "missing {body:?} in {:?}",
            shop.keys()
        );
    }

    // JSON body: fields merged into attributes, level from the body.
    let declined = &shop["payment declined"];
    assert_eq!(declined["severity"], "error");
    assert_eq!(declined["attributes"]["user"], "bob");
    assert_eq!(declined["attributes"]["order"], 2);
    assert_eq!(declined["attributes"]["log.iostream"], "stdout");
    assert_eq!(declined["resource"]["k8s.namespace.name"], "shop");
    assert_eq!(
        declined["resource"]["k8s.pod.name"],
        "shop-api-7d9f8b-x2x9z"
    );
    assert_eq!(declined["resource"]["k8s.container.name"], "api");
    assert_eq!(declined["resource"]["container.id"], CONTAINER_ID);

    // The Java stack trace is one record, with its cause chain.
    let trace = shop
        .keys()
        .find(|b| b.contains("IllegalStateException"))
        .unwrap_or_else(|| panic!("no stack trace record in {:?}", shop.keys()));
    assert_eq!(trace.lines().count(), 7, "{trace}");
    assert!(
        trace.starts_with("2026-11-23 10:00:00.123 ERROR"),
        "{trace}"
    );
    assert!(trace.ends_with("\t... 12 more"), "{trace}");
    assert_eq!(shop[trace.as_str()]["severity"], "error");
    assert!(shop.keys().any(|b| b.ends_with("recovered")));

    // Queries over fields and attributes: the JSON error, and the Spring Boot
    // line heading the stack trace (its level read from the plain text).
    assert_eq!(
        total(&search(&http, "level:error AND namespace:shop", 100)),
        2
    );
    assert_eq!(total(&search(&http, "user:ann", 100)), 1);
    assert_eq!(total(&search(&http, "attributes.user:bob", 100)), 1);

    // Docker json-file: partial lines merged, logfmt parsed, streams kept.
    let auth = wait_for("all auth records", Duration::from_secs(30), || {
        let got = by_body(&http, "namespace:auth");
        (got.len() >= 3).then_some(got)
    });
    assert_eq!(
        total(&search(&http, "namespace:auth", 100)),
        3,
        "{:?}",
        auth.keys()
    );
    assert!(
        auth.contains_key("first half of a long line and its second half"),
        "{:?}",
        auth.keys()
    );
    let slow = &auth["slow login"];
    assert_eq!(slow["severity"], "warn");
    assert_eq!(slow["attributes"]["user"], "carol");
    assert_eq!(
        auth["plain text from the auth service"]["attributes"]["log.iostream"],
        "stderr"
    );

    // Newest first.
    let newest = hits(&search(&http, "namespace:shop", 1));
    assert_eq!(newest[0]["body"], "first line of the new file");

    // The admin listener serves metrics of what happened.
    let metrics = reqwest::blocking::get(format!("http://{}/metrics", mecha.addr("admin")))
        .and_then(|r| r.text())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(metrics.contains("mecha_tail_rotations_total"), "{metrics}");

    mecha.stop();

    // A restart re-reads nothing that was acknowledged: the counts stay.
    let mecha = standalone(&data, &cfg, "off");
    let http = mecha.addr("http");
    let t = cri_ts(Duration::from_secs(1));
    append(
        &cri,
        &format!("{t} stdout F {{\"msg\":\"after restart\"}}\n"),
    );
    wait_for(
        "the record written after restart",
        Duration::from_secs(30),
        || (total(&search(&http, "\"after restart\"", 10)) == 1).then_some(()),
    );
    assert_eq!(
        total(&search(&http, "namespace:shop", 10_000)),
        (shop_expected.len() + 3) as u64
    );
    assert_eq!(total(&search(&http, "namespace:auth", 100)), 3);
    mecha.stop();
}
