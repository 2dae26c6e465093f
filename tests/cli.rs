//! The offline subcommands through the real binary: `mecha parse` prints one
//! JSON event per record and names the line a strict format rejects;
//! `mecha validate` names file, line and key of a mistake.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn mecha(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mecha"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start mecha: {e}"));
    // Written from a thread: the child's output may fill its pipe before it
    // has read all of its input.
    let writer = child.stdin.take().map(|mut i| {
        let input = stdin.to_string();
        std::thread::spawn(move || {
            let _ = i.write_all(input.as_bytes());
        })
    });
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    if let Some(w) = writer {
        let _ = w.join();
    }
    out
}

fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[test]
fn parse_merges_cri_partials_and_parses_json_bodies() {
    let input = "2026-11-23T10:00:00.000000001Z stdout P {\"level\":\"error\",\n\
                 2026-11-23T10:00:00.000000002Z stdout F \"msg\":\"boom\",\"user\":\"ann\"}\n\
                 2026-11-23T10:00:01Z stderr F plain text\n";
    let out = mecha(&["parse", "--format", "cri"], input);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(&out);
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0]["body"], "boom");
    assert_eq!(ev[0]["severity"], "error");
    assert_eq!(ev[0]["attributes"]["user"], "ann");
    assert_eq!(ev[0]["timestamp"], "2026-11-23T10:00:00.000000001Z");
    assert_eq!(ev[1]["body"], "plain text");
    assert_eq!(ev[1]["attributes"]["log.iostream"], "stderr");
}

#[test]
fn parse_names_the_line_a_strict_format_rejects_and_keeps_the_rest() {
    let input = "{\"msg\":\"one\"}\nnot json at all\n{\"msg\":\"three\"}\n";
    let out = mecha(&["parse", "--format", "json"], input);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2:"), "{err}");
    let bodies: Vec<Value> = events(&out)
        .into_iter()
        .map(|e| e["body"].clone())
        .collect();
    assert_eq!(bodies, ["one", "three"]);
}

#[test]
fn parse_joins_a_java_stack_trace() {
    let input = "2026-11-23 10:00:00 ERROR failed\n\
                 java.lang.IllegalStateException: boom\n\
                 \tat com.shop.A.b(A.java:1)\n\
                 2026-11-23 10:00:01 INFO next\n";
    let out = mecha(&["parse", "--format", "raw", "--multiline", "java"], input);
    assert!(out.status.success());
    let ev = events(&out);
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0]["body"].as_str().map(|b| b.lines().count()), Some(3));
}

#[test]
fn parse_cuts_an_endless_line_and_goes_on() {
    let mut input = "x".repeat(3 << 20);
    input.push_str("\nafter\n");
    let out = mecha(&["parse", "--format", "raw"], &input);
    assert!(out.status.success());
    let ev = events(&out);
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0]["body"].as_str().map(str::len), Some(1 << 20));
    assert_eq!(ev[1]["body"], "after");
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1: longer than"));
}

#[test]
fn parse_rejects_an_unknown_format() {
    let out = mecha(&["parse", "--format", "yaml"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format"));
}

#[test]
fn validate_names_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "agent:\n  sources:\n    app:\n      type: tail\n      read_from: middle\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = mecha(
        &["validate", "--config", bad.to_str().unwrap_or_default()],
        "",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:5: agent.sources.app.read_from:",
            bad.display()
        )),
        "{err}"
    );

    let good = tmp.path().join("good.yaml");
    std::fs::write(&good, "aggregator:\n  retention_days: 3\n").unwrap_or_else(|e| panic!("{e}"));
    let out = mecha(
        &["validate", "--config", good.to_str().unwrap_or_default()],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
