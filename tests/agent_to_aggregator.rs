//! The two roles as separate processes: `mecha agent` tails files and forwards
//! over OTLP/gRPC to `mecha aggregator`, which indexes them. Also: the agent keeps
//! its place while the aggregator is down and delivers once it is back.

mod common;

use std::time::Duration;

use common::{Mecha, append, cri_ts, search, total, wait_for};

#[test]
fn agent_forwards_to_a_separate_aggregator_and_survives_its_absence() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("{e}"));
    let file = logs.join("app.log");
    for i in 0..200 {
        append(
            &file,
            &format!(
                "{} stdout F line {i} of the first batch\n",
                cri_ts(Duration::from_secs(60))
            ),
        );
    }

    let agg_data = tmp.path().join("agg");
    let aggregator = Mecha::start(
        "aggregator",
        &agg_data,
        &["--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"],
    );
    let grpc = aggregator.addr("grpc");
    let http = aggregator.addr("http");

    let agent_data = tmp.path().join("agent");
    let include = format!("{}/*.log", logs.display());
    let forward = format!("http://{grpc}");
    let agent_args = [
        "--include",
        include.as_str(),
        "--forward",
        forward.as_str(),
        "--admin",
        "127.0.0.1:0",
    ];
    let agent = Mecha::start("agent", &agent_data, &agent_args);

    wait_for("200 records indexed", Duration::from_secs(60), || {
        (total(&search(&http, "first", 1)) == 200).then_some(())
    });

    // The aggregator goes away; the agent keeps reading and retrying.
    aggregator.stop();
    for i in 0..100 {
        append(
            &file,
            &format!(
                "{} stdout F line {i} of the second batch\n",
                cri_ts(Duration::from_secs(30))
            ),
        );
    }
    let admin = agent.addr("admin");
    wait_for("the agent to retry", Duration::from_secs(30), || {
        let m = reqwest::blocking::get(format!("http://{admin}/metrics"))
            .and_then(|r| r.text())
            .ok()?;
        m.contains("mecha_forward_batches_total{outcome=\"retry\"}")
            .then_some(())
    });

    // Back on the same address and data: the agent delivers what it held.
    let port = grpc.rsplit(':').next().unwrap_or_default();
    let aggregator = Mecha::start(
        "aggregator",
        &agg_data,
        &[
            "--grpc",
            &format!("127.0.0.1:{port}"),
            "--http",
            "127.0.0.1:0",
        ],
    );
    let http = aggregator.addr("http");
    wait_for("the second batch", Duration::from_secs(90), || {
        (total(&search(&http, "second", 1)) == 100).then_some(())
    });
    assert_eq!(total(&search(&http, "first", 1)), 200, "nothing duplicated");
    assert_eq!(total(&search(&http, "*", 1)), 300);

    // The agent's admin listener answers.
    let ready = reqwest::blocking::get(format!("http://{admin}/ready"))
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(ready, 200);
    agent.stop();
    aggregator.stop();
}
