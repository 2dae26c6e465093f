//! `mecha silence` and `mecha alerts` through the real binary against a
//! running aggregator: a silence added from the command line is listed,
//! survives a restart, and expires; mistakes are named.

mod common;

use std::process::{Command, Output};

use common::Mecha;
use serde_json::Value;

fn mecha(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mecha"))
        .args(args)
        .env_remove("MECHA_SERVER")
        .output()
        .unwrap_or_else(|e| panic!("cannot run mecha: {e}"))
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "mecha failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn listed(server: &str, all: bool) -> Vec<Value> {
    let mut args = vec!["silence", "list", "--json", "--server", server];
    if all {
        args.push("--all");
    }
    let text = stdout(&mecha(&args));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    v.as_array().cloned().unwrap_or_default()
}

#[test]
fn silences_are_added_listed_and_expired_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = tmp.path().join("agg");
    let args = ["--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"];
    let agg = Mecha::start("aggregator", &data, &args);
    let server = format!("http://{}", agg.addr("http"));

    let out = mecha(&[
        "silence",
        "add",
        "alertname=DiskFull",
        "namespace=~\"shop.*\"",
        "--duration",
        "2h",
        "--comment",
        "resizing volumes",
        "--author",
        "ann",
        "--server",
        &server,
    ]);
    let id = stdout(&out).trim().to_string();
    assert_eq!(id.len(), 36, "expected a UUID, got {id:?}");

    let table = stdout(&mecha(&["silence", "list", "--server", &server]));
    assert!(table.contains(&id), "{table}");
    assert!(
        table.contains("alertname=\"DiskFull\" namespace=~\"shop.*\""),
        "{table}"
    );
    assert!(table.contains("resizing volumes"), "{table}");
    let list = listed(&server, false);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["createdBy"], "ann");
    assert_eq!(list[0]["status"]["state"], "active");
    let starts = chrono::DateTime::parse_from_rfc3339(list[0]["startsAt"].as_str().unwrap_or(""));
    let ends = chrono::DateTime::parse_from_rfc3339(list[0]["endsAt"].as_str().unwrap_or(""));
    match (starts, ends) {
        // The server starts the window when it receives it.
        (Ok(s), Ok(e)) => assert!((7_190..=7_200).contains(&(e - s).num_seconds()), "{s} {e}"),
        other => panic!("bad times: {other:?}"),
    }

    let alerts = stdout(&mecha(&["alerts", "--server", &server]));
    assert!(alerts.contains("0 alert(s)"), "{alerts}");

    // The silence survives a restart.
    agg.stop();
    let agg = Mecha::start("aggregator", &data, &args);
    let server = format!("http://{}", agg.addr("http"));
    assert_eq!(listed(&server, false).len(), 1);

    let out = stdout(&mecha(&["silence", "expire", &id, "--server", &server]));
    assert!(out.contains(&format!("silence {id} expired")), "{out}");
    assert!(listed(&server, false).is_empty());
    let all = listed(&server, true);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["status"]["state"], "expired");

    // Mistakes are named: an unknown id, a bad matcher, a matcher-less silence.
    let out = mecha(&["silence", "expire", &id, "--server", &server]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already expired"));
    let out = mecha(&[
        "silence",
        "add",
        "severity=~\"(\"",
        "-c",
        "x",
        "--server",
        &server,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("matcher") && err.contains("invalid regex"),
        "{err}"
    );
    let out = mecha(&[
        "silence",
        "add",
        "team=~\".*\"",
        "-c",
        "x",
        "--server",
        &server,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty string"));
    agg.stop();
}
