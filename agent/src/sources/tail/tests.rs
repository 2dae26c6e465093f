//! End-to-end tests of the tail source: real files in temp dirs, paused tokio
//! time, the real pipeline channel as the consumer.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mecha_parsers::container::ContainerFormat;
use mecha_parsers::model::keys;
use mecha_parsers::multiline::MultilineRule;
use mecha_parsers::{LogRecord, Severity};
use serde_json::Value;

use super::*;
use crate::metrics::reason;
use crate::pipeline::{self, Input};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A virtual-time limit for anything a test waits for.
const WAIT: Duration = Duration::from_secs(60);
/// The step in which `take` waits up to [`WAIT`].
const STEP: Duration = Duration::from_millis(10);

struct Running {
    handle: TailHandle,
    input: Input,
    metrics: Arc<AgentMetrics>,
    shutdown: Shutdown,
}

fn options(dir: &Path) -> TailOptions {
    TailOptions {
        include: vec![format!("{}/logs/*.log", dir.display())],
        exclude: vec!["*.gz".to_owned()],
        checkpoint_path: dir.join("data/checkpoints.json"),
        chunk_max_delay: Duration::from_millis(20),
        ..TailOptions::default()
    }
}

fn logs(dir: &Path) -> std::io::Result<PathBuf> {
    let logs = dir.join("logs");
    fs::create_dir_all(&logs)?;
    Ok(logs)
}

fn append(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(data)
}

async fn start(opts: TailOptions, capacity: usize) -> Result<Running, TailError> {
    let metrics = Arc::new(AgentMetrics::new());
    let (out, input) = pipeline::channel(capacity, metrics.clone(), pipeline::ChunkCodec::Raw);
    let shutdown = Shutdown::new();
    let handle = TailSource::start(opts, out, metrics.clone(), shutdown.clone()).await?;
    Ok(Running {
        handle,
        input,
        metrics,
        shutdown,
    })
}

impl Running {
    /// Receives records until `n` have arrived, acknowledging every chunk.
    async fn take(&mut self, n: usize) -> Result<Vec<LogRecord>, String> {
        self.take_with(n, true).await
    }

    async fn take_with(&mut self, n: usize, ack: bool) -> Result<Vec<LogRecord>, String> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while got.len() < n {
            // Short steps rather than one timer at the deadline: paused time
            // can auto-advance to the next timer in the instant between a
            // blocking read round finishing and the tail being woken, and with
            // a single timer that jump was the whole wait (1 run in 100).
            match tokio::time::timeout(STEP, self.input.recv()).await {
                Ok(Some(chunk)) => {
                    got.extend(decoded(&chunk));
                    if ack {
                        chunk.ack();
                    }
                }
                Ok(None) => return Err(format!("pipeline closed after {} records", got.len())),
                Err(_) if tokio::time::Instant::now() < deadline => {}
                Err(_) => {
                    let bodies: Vec<&str> = got.iter().map(|r| r.body.as_str()).collect();
                    return Err(format!(
                        "expected {n} records, found {}: {bodies:?}",
                        got.len()
                    ));
                }
            }
        }
        Ok(got)
    }

    /// Asserts that nothing more arrives within a few seconds of virtual time.
    async fn expect_quiet(&mut self) -> Result<(), String> {
        match tokio::time::timeout(Duration::from_secs(3), self.input.recv()).await {
            Err(_) => Ok(()),
            Ok(None) => Ok(()),
            Ok(Some(chunk)) => {
                let bodies: Vec<String> = decoded(&chunk).into_iter().map(|r| r.body).collect();
                Err(format!("expected no more records, found {bodies:?}"))
            }
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.handle.join().await;
    }
}

/// The records of a chunk, as the aggregator will see them.
fn decoded(chunk: &Chunk) -> Vec<LogRecord> {
    match mecha_parsers::otlp::decode_logs_request(&chunk.request) {
        Ok(records) => records,
        Err(e) => panic!("a chunk that does not decode: {e}"),
    }
}

fn bodies(records: &[LogRecord]) -> Vec<&str> {
    records.iter().map(|r| r.body.as_str()).collect()
}

fn attr<'a>(r: &'a LogRecord, key: &str) -> Option<&'a Value> {
    r.attributes.get(key)
}

fn discarded(m: &AgentMetrics, reason: &str) -> u64 {
    m.discarded.with_label_values(&[COMPONENT, reason]).get()
}

#[tokio::test(start_paused = true)]
async fn plain_lines_become_records_with_path_and_position() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = logs(dir.path())?.join("app.log");
    fs::write(&file, b"first plain line\nsecond\n")?;
    let mut run = start(options(dir.path()), 8).await?;
    assert_eq!(run.handle.watched_files(), vec![file.clone()]);
    let got = run.take(2).await?;
    assert_eq!(bodies(&got), ["first plain line", "second"]);
    let path = file.to_string_lossy().into_owned();
    assert_eq!(attr(&got[0], keys::FILE_PATH), Some(&Value::String(path)));
    assert_eq!(
        attr(&got[0], keys::IOSTREAM),
        None,
        "plain files have no stream"
    );
    let offsets: Vec<u64> = got
        .iter()
        .filter_map(|r| r.position.as_ref())
        .map(|p| p.offset)
        .collect();
    assert_eq!(offsets, [17, 24]);
    assert_eq!(got[0].timestamp_ns, 0);
    assert!(got[0].observed_ns > 0);
    run.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn cri_partials_are_merged_into_one_record() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = logs(dir.path())?.join("cri.log");
    fs::write(
        &file,
        b"2024-01-15T10:20:30.000000001Z stdout P first half, \n\
          2024-01-15T10:20:30.000000002Z stderr F an error line\n\
          2024-01-15T10:20:30.000000003Z stdout F second half\n",
    )?;
    let mut run = start(options(dir.path()), 8).await?;
    let got = run.take(2).await?;
    assert_eq!(bodies(&got), ["an error line", "first half, second half"]);
    assert_eq!(got[1].timestamp_ns, 1_705_314_030_000_000_001);
    assert_eq!(
        attr(&got[1], keys::IOSTREAM),
        Some(&Value::String("stdout".into()))
    );
    assert_eq!(
        attr(&got[0], keys::IOSTREAM),
        Some(&Value::String("stderr".into()))
    );
    let offsets: Vec<u64> = got
        .iter()
        .filter_map(|r| r.position.as_ref())
        .map(|p| p.offset)
        .collect();
    assert!(
        offsets[0] < offsets[1],
        "positions are monotonic: {offsets:?}"
    );
    run.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn docker_split_lines_are_merged() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = logs(dir.path())?.join("docker.log");
    fs::write(
        &file,
        concat!(
            r#"{"log":"hello ","stream":"stdout","time":"2024-01-15T10:20:30.000000001Z"}"#,
            "\n",
            r#"{"log":"world\n","stream":"stdout","time":"2024-01-15T10:20:30.000000002Z"}"#,
            "\n",
            r#"{"log":"alone\n","stream":"stderr","time":"2024-01-15T10:20:31Z"}"#,
            "\n",
        ),
    )?;
    let mut run = start(options(dir.path()), 8).await?;
    let got = run.take(2).await?;
    assert_eq!(bodies(&got), ["hello world", "alone"]);
    assert_eq!(got[0].timestamp_ns, 1_705_314_030_000_000_001);
    run.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn json_body_fields_become_attributes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = logs(dir.path())?.join("json.log");
    fs::write(
        &file,
        b"2024-01-15T10:20:30.000000001Z stdout F {\"level\":\"error\",\"msg\":\"db down\",\"user\":\"ann\"}\n",
    )?;
    let mut opts = options(dir.path());
    opts.keep_original_body = true;
    let mut run = start(opts, 8).await?;
    let got = run.take(1).await?;
    let r = &got[0];
    assert_eq!(r.body, "db down");
    assert_eq!(r.severity, Severity::Error);
    assert_eq!(attr(r, "user"), Some(&Value::String("ann".into())));
    assert!(
        attr(r, decode::ORIGINAL_BODY)
            .is_some_and(|v| v.as_str().is_some_and(|s| s.contains("\"user\""))),
        "original text kept: {:?}",
        r.attributes
    );
    run.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn strict_body_format_keeps_raw_text_on_failure() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = logs(dir.path())?.join("strict.log");
    fs::write(&file, b"this is not json at all\n")?;
    let mut opts = options(dir.path());
    opts.body_format = mecha_parsers::body::BodyFormat::Json;
    let mut run = start(opts, 8).await?;
    let got = run.take(1).await?;
    assert_eq!(got[0].body, "this is not json at all");
    assert!(attr(&got[0], keys::PARSE_ERROR).is_some());
    assert_eq!(discarded(&run.metrics, reason::BODY_PARSE_ERROR), 1);
    run.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn broken_envelope_in_a_cri_file_is_kept_raw() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = logs(dir.path())?.join("cri.log");
    fs::write(
        &file,
        b"2024-01-15T10:20:30.000000001Z stdout F good line\ngarbage without envelope\n",
    )?;
    let mut run = start(options(dir.path()), 8).await?;
    let got = run.take(2).await?;
    assert_eq!(bodies(&got), ["good line", "garbage without envelope"]);
    assert!(attr(&got[1], keys::PARSE_ERROR).is_some());
    assert_eq!(discarded(&run.metrics, reason::ENVELOPE_ERROR), 1);
    run.stop().await;
    Ok(())
}

const JAVA_TRACE: &str = "2024-01-15 10:20:30 ERROR request failed\n\
java.lang.IllegalStateException: boom\n\
\tat com.example.Foo.bar(Foo.java:10)\n\
\tat com.example.Main.main(Main.java:5)\n\
Caused by: java.io.IOException: disk gone\n\
\tat com.example.Disk.read(Disk.java:3)\n\
\t... 2 more\n\
2024-01-15 10:20:31 INFO next request\n";

#[tokio::test(start_paused = true)]
async fn java_stack_trace_is_joined_and_the_last_record_flushes_when_idle() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = logs(dir.path())?.join("java.log");
    fs::write(&file, JAVA_TRACE)?;
    let mut opts = options(dir.path());
    opts.multiline = Some(MultilineRule::Java);
    opts.container_format = Some(ContainerFormat::Plain);
    let mut run = start(opts, 8).await?;
    let got = run.take(2).await?;
    assert_eq!(got[0].body.lines().count(), 7, "{}", got[0].body);
    assert!(got[0].body.ends_with("... 2 more"));
    assert_eq!(got[1].body, "2024-01-15 10:20:31 INFO next request");
    let end = JAVA_TRACE.len() as u64;
    assert_eq!(got[1].position.as_ref().map(|p| p.offset), Some(end));
    run.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn long_line_is_truncated_and_flagged_with_the_rest_intact() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = logs(dir.path())?.join("long.log");
    let long = "y".repeat(5000);
    fs::write(&file, format!("before line\n{long}\nafter line\n"))?;
    let mut opts = options(dir.path());
    opts.max_line_bytes = 1000;
    let mut run = start(opts, 8).await?;
    let got = run.take(3).await?;
    assert_eq!(got[1].body.len(), 1000);
    assert_eq!(attr(&got[1], keys::TRUNCATED), Some(&Value::Bool(true)));
    assert_eq!(bodies(&got)[2], "after line");
    assert_eq!(attr(&got[2], keys::TRUNCATED), None);
    assert_eq!(discarded(&run.metrics, reason::LINE_TRUNCATED), 1);
    run.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn invalid_utf8_is_replaced_and_flagged() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = logs(dir.path())?.join("bin.log");
    fs::write(&file, b"valid first line here\nbad \xff\xfe bytes\n")?;
    let mut run = start(options(dir.path()), 8).await?;
    let got = run.take(2).await?;
    assert_eq!(got[1].body, "bad \u{fffd}\u{fffd} bytes");
    assert_eq!(attr(&got[1], keys::INVALID_UTF8), Some(&Value::Bool(true)));
    assert_eq!(attr(&got[0], keys::INVALID_UTF8), None);
    assert_eq!(discarded(&run.metrics, reason::INVALID_UTF8), 1);
    run.stop().await;
    Ok(())
}

fn numbered(from: usize, to: usize) -> String {
    (from..to)
        .map(|i| format!("line number {i:05}\n"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn rename_and_create_rotation_reads_every_line_exactly_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = logs(dir.path())?;
    let file = logs.join("app.log");
    fs::write(&file, numbered(0, 100))?;
    let mut run = start(options(dir.path()), 8).await?;
    let mut got = run.take(100).await?;
    // Lines written to the old file after our last read, then rotation.
    append(&file, numbered(100, 150).as_bytes())?;
    fs::rename(&file, logs.join("app.log.1"))?;
    append(&file, numbered(150, 200).as_bytes())?;
    got.extend(run.take(100).await?);
    run.expect_quiet().await?;
    let expected: Vec<String> = (0..200).map(|i| format!("line number {i:05}")).collect();
    let mut seen: Vec<String> = got.iter().map(|r| r.body.clone()).collect();
    seen.sort();
    assert_eq!(seen, expected);
    assert!(run.metrics.rotations.get() >= 1);
    let streams: std::collections::BTreeSet<_> = got
        .iter()
        .filter_map(|r| r.position.as_ref())
        .map(|p| p.stream.clone())
        .collect();
    assert_eq!(streams.len(), 2, "old and new file are distinct streams");
    run.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn deleted_file_is_drained_then_closed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = logs(dir.path())?.join("gone.log");
    fs::write(&file, numbered(0, 10))?;
    let mut run = start(options(dir.path()), 8).await?;
    run.take(10).await?;
    // The writer adds an incomplete last line and the file is deleted: the
    // open handle still reads it, and the last line is emitted on close.
    append(&file, b"final words without newline")?;
    fs::remove_file(&file)?;
    let got = run.take(1).await?;
    assert_eq!(got[0].body, "final words without newline");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !run.handle.watched_files().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "file never closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn copytruncate_restarts_at_the_beginning() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = logs(dir.path())?.join("ct.log");
    fs::write(&file, numbered(0, 50))?;
    let mut run = start(options(dir.path()), 8).await?;
    run.take(50).await?;
    // copytruncate: the copy is outside the globs; the file is truncated in place.
    fs::copy(&file, dir.path().join("ct.log.1"))?;
    OpenOptions::new().write(true).open(&file)?.set_len(0)?;
    append(
        &file,
        b"after truncation, line one\nafter truncation, line two\n",
    )?;
    let got = run.take(2).await?;
    assert_eq!(
        bodies(&got),
        ["after truncation, line one", "after truncation, line two"]
    );
    assert_eq!(discarded(&run.metrics, reason::TRUNCATED_FILE), 1);
    run.expect_quiet().await?;
    run.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn restart_resumes_from_the_acknowledged_checkpoint() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = logs(dir.path())?.join("resume.log");
    fs::write(&file, numbered(0, 10))?;
    let mut opts = options(dir.path());
    // One record per chunk, so acknowledgement can stop at a record.
    opts.chunk_max_bytes = 1;
    let mut run = start(opts.clone(), 16).await?;
    let acked = run.take(4).await?;
    assert_eq!(acked.len(), 4);
    let unacked = run.take_with(6, false).await?;
    assert_eq!(unacked.len(), 6);
    run.stop().await;

    let mut run = start(opts, 16).await?;
    let got = run.take(6).await?;
    assert_eq!(
        bodies(&got),
        (4..10)
            .map(|i| format!("line number {i:05}"))
            .collect::<Vec<_>>()
    );
    run.expect_quiet().await?;
    run.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn read_from_end_skips_existing_content_but_not_new_files() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = logs(dir.path())?;
    fs::write(logs.join("old.log"), numbered(0, 20))?;
    let mut opts = options(dir.path());
    opts.read_from = ReadFrom::End;
    let mut run = start(opts, 8).await?;
    append(&logs.join("old.log"), b"appended after start\n")?;
    fs::write(logs.join("new.log"), b"a file created later, first line\n")?;
    let mut got = run.take(2).await?;
    got.sort_by(|a, b| a.body.cmp(&b.body));
    assert_eq!(
        bodies(&got),
        ["a file created later, first line", "appended after start"]
    );
    run.expect_quiet().await?;
    run.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn excluded_files_are_not_read() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = logs(dir.path())?;
    fs::write(logs.join("keep.log"), b"kept file, first line\n")?;
    fs::write(logs.join("skip-me.log"), b"excluded file, first line\n")?;
    let mut opts = options(dir.path());
    opts.exclude.push("skip-*".to_owned());
    let mut run = start(opts, 8).await?;
    assert_eq!(run.handle.watched_files(), vec![logs.join("keep.log")]);
    let got = run.take(1).await?;
    assert_eq!(got[0].body, "kept file, first line");
    run.expect_quiet().await?;
    run.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn full_pipeline_stops_reading_and_memory_stays_bounded() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = logs(dir.path())?.join("big.log");
    {
        let mut f = fs::File::create(&file)?;
        let line = format!("{}\n", "z".repeat(1023));
        let block = line.repeat(1024);
        for _ in 0..50 {
            f.write_all(block.as_bytes())?;
        }
    }
    let mut opts = options(dir.path());
    opts.chunk_max_bytes = 64 * 1024;
    let run = start(opts, 1).await?;
    // Give the source ample (virtual) time to read everything it could.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let read = run.metrics.bytes_in.with_label_values(&[COMPONENT]).get();
    assert!(read > 0, "the source read nothing");
    assert!(
        read < 4 * 1024 * 1024,
        "read {read} bytes of a 50 MiB file with no consumer"
    );
    assert!(run.metrics.queue_chunks.get() <= 1);
    assert!(run.metrics.checkpoint_lag_bytes.get() > 40 * 1024 * 1024);
    run.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn kubelet_path_gives_namespace_pod_and_container() -> TestResult {
    let dir = tempfile::tempdir()?;
    let id = "9f2c5d1e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e";
    let file = logs(dir.path())?.join(format!("web-7d4f_shop_nginx-{id}.log"));
    fs::write(
        &file,
        b"2024-01-15T10:20:30.000000001Z stdout F hello from nginx\n",
    )?;
    let mut opts = options(dir.path());
    opts.node_name = Some("node-1".into());
    let mut run = start(opts, 8).await?;
    let got = run.take(1).await?;
    let res = &got[0].resource;
    assert_eq!(res.get(keys::NAMESPACE), Some("shop"));
    assert_eq!(res.get(keys::POD), Some("web-7d4f"));
    assert_eq!(res.get(keys::CONTAINER), Some("nginx"));
    assert_eq!(res.get(keys::CONTAINER_ID), Some(id));
    assert_eq!(res.get(keys::NODE), Some("node-1"));
    run.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn file_too_short_to_identify_is_read_once_it_grows() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = logs(dir.path())?.join("tiny.log");
    fs::write(&file, b"hi\n")?;
    let mut run = start(options(dir.path()), 8).await?;
    run.expect_quiet().await?;
    append(
        &file,
        b"now the file is long enough to have a stable fingerprint, surely\n",
    )?;
    let got = run.take(2).await?;
    assert_eq!(got[0].body, "hi");
    run.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn bad_glob_is_a_start_error() {
    let dir = tempfile::tempdir().ok();
    let base = dir
        .as_ref()
        .map(|d| d.path().to_path_buf())
        .unwrap_or_default();
    let mut opts = options(&base);
    opts.include = vec!["/logs/[unclosed".to_owned()];
    let err = start(opts, 1)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("tail.include") && err.contains("[unclosed"),
        "{err}"
    );
}

#[test]
fn read_from_parses_its_two_values() {
    assert_eq!("end".parse::<ReadFrom>().ok(), Some(ReadFrom::End));
    assert_eq!(
        "beginning".parse::<ReadFrom>().ok(),
        Some(ReadFrom::Beginning)
    );
    let err = "start".parse::<ReadFrom>().err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("tail.read_from: expected \"beginning\" or \"end\", found \"start\"")
    );
}

#[tokio::test(start_paused = true)]
async fn file_renamed_within_the_globs_is_not_read_again() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = logs(dir.path())?;
    let file = logs.join("app.log");
    fs::write(&file, numbered(0, 20))?;
    let mut opts = options(dir.path());
    opts.include = vec![format!("{}/*.log*", logs.display())];
    let mut run = start(opts, 8).await?;
    run.take(20).await?;
    fs::rename(&file, logs.join("app.log.1"))?;
    append(&logs.join("app.log.1"), numbered(20, 25).as_bytes())?;
    fs::write(&file, numbered(100, 105))?;
    let mut got = run.take(10).await?;
    got.sort_by(|a, b| a.body.cmp(&b.body));
    let expected: Vec<String> = (20..25)
        .chain(100..105)
        .map(|i| format!("line number {i:05}"))
        .collect();
    assert_eq!(bodies(&got), expected);
    run.expect_quiet().await?;
    run.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn two_paths_to_one_file_are_read_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = logs(dir.path())?;
    fs::write(logs.join("a.log"), numbered(0, 10))?;
    fs::hard_link(logs.join("a.log"), logs.join("b.log"))?;
    let mut run = start(options(dir.path()), 8).await?;
    let got = run.take(10).await?;
    assert_eq!(bodies(&got).len(), 10);
    run.expect_quiet().await?;
    run.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn files_that_start_with_the_same_line_are_all_read() -> TestResult {
    // Two replicas of one app writing the same banner first: distinct files,
    // distinct streams (Vector's content-only fingerprint ignores the second).
    let dir = tempfile::tempdir()?;
    let logs = logs(dir.path())?;
    let banner = "=== starting order-service v1.2.3 ===\n";
    fs::write(logs.join("a.log"), format!("{banner}a one\na two\n"))?;
    fs::write(logs.join("b.log"), format!("{banner}b one\n"))?;
    let mut run = start(options(dir.path()), 8).await?;
    let got = run.take(5).await?;
    let mut seen = bodies(&got);
    seen.sort();
    assert_eq!(
        seen,
        [
            banner.trim_end(),
            banner.trim_end(),
            "a one",
            "a two",
            "b one"
        ]
    );
    let streams: std::collections::HashSet<_> = got
        .iter()
        .filter_map(|r| r.position.as_ref().map(|p| p.stream.clone()))
        .collect();
    assert_eq!(streams.len(), 2);
    run.expect_quiet().await?;
    run.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_the_pending_multiline_record_and_persists_its_ack() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = logs(dir.path())?.join("java.log");
    fs::write(&file, JAVA_TRACE)?;
    let mut opts = options(dir.path());
    opts.multiline = Some(MultilineRule::Java);
    opts.multiline_flush = Duration::from_secs(3600);
    let mut run = start(opts.clone(), 8).await?;
    run.take(1).await?;
    run.shutdown.cancel();
    // The last record is pending; shutdown emits it, and waits for its ack.
    let got = run.take(1).await?;
    assert_eq!(got[0].body, "2024-01-15 10:20:31 INFO next request");
    run.handle.join().await;

    let mut run = start(opts, 8).await?;
    run.expect_quiet().await?;
    run.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_in_real_time_on_a_multi_thread_runtime() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = logs(dir.path())?;
    let file = logs.join("rt.log");
    fs::write(&file, numbered(0, 1000))?;
    let mut run = start(options(dir.path()), 4).await?;
    let mut got = run.take(1000).await?;
    fs::rename(&file, logs.join("rt.log.1"))?;
    fs::write(&file, numbered(1000, 2000))?;
    got.extend(run.take(1000).await?);
    let mut seen: Vec<String> = got.iter().map(|r| r.body.clone()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 2000);
    run.stop().await;
    Ok(())
}
