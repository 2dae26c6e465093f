//! The Sentry endpoint through the real binary: `mecha agent` with a
//! configured project forwards to a small OTLP/gRPC sink in this test, and
//! `mecha standalone` indexes what it receives. Good envelopes and store
//! requests arrive as one record each with the event's JSON; every kind of
//! bad input gets its documented status and discard reason, and a good event
//! sent right after each bad one still arrives.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Mecha, search, total, wait_for};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use serde_json::Value;
use tonic::codec::CompressionEncoding;

const KEY: &str = "e2ekey";
const PROJECT: u64 = 42;

/// One record the sink received: its string attributes and body.
#[derive(Debug, Clone)]
struct Received {
    attributes: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn event(&self) -> Value {
        serde_json::from_str(self.attr("sentry.event").unwrap_or("null")).unwrap_or(Value::Null)
    }
}

/// An OTLP/gRPC logs receiver that keeps every record.
struct Sink(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl LogsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let text = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match v
            .as_ref()
            .and_then(|v| v.value.as_ref())
        {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            _ => String::new(),
        };
        let mut got = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for rl in &request.get_ref().resource_logs {
            for sl in &rl.scope_logs {
                for r in &sl.log_records {
                    got.push(Received {
                        attributes: r
                            .attributes
                            .iter()
                            .map(|kv| (kv.key.clone(), text(&kv.value)))
                            .collect(),
                        body: text(&r.body),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// Starts the sink on a free port, on its own runtime thread.
fn start_sink() -> (
    SocketAddr,
    Arc<Mutex<Vec<Received>>>,
    tokio::runtime::Runtime,
) {
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let got = Arc::new(Mutex::new(Vec::new()));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let svc = LogsServiceServer::new(Sink(got.clone()))
        .accept_compressed(CompressionEncoding::Zstd)
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(64 << 20);
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, got, rt)
}

fn write_config(dir: &std::path::Path) -> String {
    let cfg = dir.join("mecha.yaml");
    std::fs::write(
        &cfg,
        format!(
            "agent:\n  sources: {{}}\n  buffer: {{ fsync_interval: 50ms }}\n  forward: {{ batch_timeout: 100ms }}\n  sentry:\n    projects:\n      - id: {PROJECT}\n        keys: [{KEY}]\n      - id: 7\n        keys: [otherkey]\naggregator:\n  commit_interval: 100ms\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    cfg.display().to_string()
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// An envelope with one event carrying `message`, with `length` or without.
fn envelope(id: &str, message: &str, with_length: bool) -> Vec<u8> {
    let event = format!(
        "{{\"event_id\":\"{id}\",\"level\":\"error\",\"platform\":\"python\",\"exception\":{{\"values\":[{{\"type\":\"ValueError\",\"value\":\"{message}\"}}]}}}}"
    );
    let item = if with_length {
        format!("{{\"type\":\"event\",\"length\":{}}}", event.len())
    } else {
        "{\"type\":\"event\"}".to_string()
    };
    format!("{{\"event_id\":\"{id}\",\"sent_at\":\"2026-11-23T10:00:00Z\"}}\n{item}\n{event}\n")
        .into_bytes()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap_or_else(|e| panic!("{e}"));
    e.finish().unwrap_or_else(|e| panic!("{e}"))
}

struct Answer {
    status: u16,
    body: Value,
    error_header: Option<String>,
}

fn post(
    sentry: &str,
    path: &str,
    auth: Option<&str>,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> Answer {
    let mut req = client()
        .post(format!("http://{sentry}{path}"))
        .header("content-type", "application/x-sentry-envelope");
    if let Some(key) = auth {
        req = req.header(
            "x-sentry-auth",
            format!("Sentry sentry_key={key}, sentry_version=7, sentry_client=e2e/1.0"),
        );
    }
    if let Some(enc) = encoding {
        req = req.header("content-encoding", enc);
    }
    let resp = req
        .body(body)
        .send()
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = resp.status().as_u16();
    let error_header = resp
        .headers()
        .get("x-sentry-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.json().unwrap_or(Value::Null);
    Answer {
        status,
        body,
        error_header,
    }
}

fn metrics(admin: &str) -> String {
    reqwest::blocking::get(format!("http://{admin}/metrics"))
        .and_then(|r| r.text())
        .unwrap_or_default()
}

fn counter(text: &str, series: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn discarded(admin: &str, reason: &str) -> u64 {
    counter(
        &metrics(admin),
        &format!(
            "mecha_component_discarded_events_total{{component=\"sentry\",reason=\"{reason}\"}}"
        ),
    )
}

/// `mecha agent` with the test config, forwarding to a fresh sink.
fn start_agent(
    dir: &std::path::Path,
    extra: &[&str],
) -> (Mecha, Arc<Mutex<Vec<Received>>>, tokio::runtime::Runtime) {
    let (sink, got, rt) = start_sink();
    let cfg = write_config(dir);
    let forward = format!("http://{sink}");
    let mut args = vec![
        "--config",
        &cfg,
        "--forward",
        &forward,
        "--admin",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    (Mecha::start("agent", &dir.join("agent"), &args), got, rt)
}

/// A bad request and what it must get: what it is, key, encoding, body,
/// status and discard reason.
type BadCase = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Vec<u8>,
    u16,
    &'static str,
);

fn id(n: u32) -> String {
    format!("{n:032x}")
}

#[test]
fn the_agent_forwards_good_events_and_refuses_bad_input_without_losing_the_next() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (agent, got, _rt) = start_agent(tmp.path(), &["--sentry", "127.0.0.1:0"]);
    let sentry = agent.addr("sentry");
    let admin = agent.addr("admin");
    let path = format!("/api/{PROJECT}/envelope/");
    let mut next_id = 1;
    let mut good = |label: &str| {
        let i = id(next_id);
        next_id += 1;
        let a = post(
            &sentry,
            &path,
            Some(KEY),
            None,
            envelope(&i, label, next_id % 2 == 0),
        );
        assert_eq!(a.status, 200, "good envelope after {label}: {}", a.body);
        assert_eq!(a.body, serde_json::json!({ "id": i }));
        i
    };

    let first = good("first");
    // Compressed the way SDKs send it.
    let gz = post(
        &sentry,
        &path,
        Some(KEY),
        Some("gzip"),
        gzip(&envelope(&id(100), "gzipped", true)),
    );
    assert_eq!(gz.status, 200, "{}", gz.body);
    let zs = post(
        &sentry,
        &path,
        Some(KEY),
        Some("zstd"),
        zstd::stream::encode_all(&envelope(&id(101), "zstd", false)[..], 3).unwrap_or_default(),
    );
    assert_eq!(zs.status, 200, "{}", zs.body);
    // The legacy store endpoint, plain and as old SDKs encode it.
    let store = post(
        &sentry,
        &format!("/api/{PROJECT}/store/"),
        Some(KEY),
        None,
        br#"{"message":"stored","level":"warning"}"#.to_vec(),
    );
    assert_eq!(store.status, 200, "{}", store.body);

    let truncated = {
        let mut e = envelope(&id(200), "cut", true);
        e.truncate(e.len() - 20);
        e
    };
    let short_length = b"{}\n{\"type\":\"event\",\"length\":5}\n{\"message\":\"x\"}\n".to_vec();
    let invalid_json = b"{}\n{\"type\":\"event\"}\n{\"message\": oops}\n".to_vec();
    let bomb = gzip(&vec![0u8; 200 << 20]);
    let oversized = envelope(&id(201), &"x".repeat(1100 << 10), true);
    let cases: Vec<BadCase> = vec![
        (
            "truncated envelope",
            Some(KEY),
            None,
            truncated,
            400,
            "bad_envelope",
        ),
        (
            "wrong length",
            Some(KEY),
            None,
            short_length,
            400,
            "bad_envelope",
        ),
        (
            "invalid JSON",
            Some(KEY),
            None,
            invalid_json,
            400,
            "invalid_json",
        ),
        (
            "unknown key",
            Some("nokey"),
            None,
            envelope(&id(202), "k", true),
            403,
            "auth",
        ),
        (
            "key of another project",
            Some("otherkey"),
            None,
            envelope(&id(203), "k", true),
            403,
            "auth",
        ),
        ("missing auth", None, None, b"{}\n".to_vec(), 401, "auth"),
        ("gzip bomb", Some(KEY), Some("gzip"), bomb, 413, "bomb"),
        (
            "oversized event",
            Some(KEY),
            None,
            oversized,
            413,
            "too_large",
        ),
        (
            "unknown encoding",
            Some(KEY),
            Some("lzma"),
            b"x".to_vec(),
            415,
            "decompression",
        ),
    ];
    let mut good_after = Vec::new();
    for (what, key, enc, body, status, reason) in cases {
        let before = discarded(&admin, reason);
        let a = post(&sentry, &path, key, enc, body);
        assert_eq!(a.status, status, "{what}: {}", a.body);
        let detail = a.body.get("detail").and_then(Value::as_str).unwrap_or("");
        assert!(!detail.is_empty(), "{what}: no detail in {}", a.body);
        assert_eq!(a.error_header.as_deref(), Some(detail), "{what}");
        assert_eq!(
            discarded(&admin, reason),
            before + 1,
            "{what}: {reason} not counted"
        );
        good_after.push(good(what));
    }

    // Everything answered 200 reached the sink, once, as its event.
    let expected = 4 + good_after.len();
    let received = wait_for(
        "the sink to receive every good event",
        Duration::from_secs(30),
        || {
            let g = got.lock().unwrap_or_else(|e| e.into_inner()).clone();
            (g.len() >= expected).then_some(g)
        },
    );
    assert_eq!(received.len(), expected, "nothing bad got through");
    let first_rec = received
        .iter()
        .find(|r| r.attr("sentry.event_id") == Some(first.as_str()))
        .unwrap_or_else(|| panic!("first event missing"));
    assert_eq!(first_rec.attr("sentry.project_id"), Some("42"));
    assert_eq!(first_rec.body, "ValueError: first");
    let ev = first_rec.event();
    assert_eq!(ev["exception"]["values"][0]["value"], "first");
    assert_eq!(ev["platform"], "python");
    for i in &good_after {
        assert!(
            received
                .iter()
                .any(|r| r.attr("sentry.event_id") == Some(i.as_str())),
            "{i} missing"
        );
    }
    assert!(
        received
            .iter()
            .any(|r| r.event()["logentry"]["formatted"] == "stored")
    );
    let m = metrics(&admin);
    assert_eq!(
        counter(&m, "mecha_sentry_events_accepted_total"),
        expected as u64
    );
    assert_eq!(
        counter(
            &m,
            "mecha_sentry_requests_total{route=\"envelope\",status=\"413\"}"
        ),
        2
    );
    // Items are counted once their envelope is read; refused ones are
    // counted under their discard reason instead.
    assert_eq!(
        counter(&m, "mecha_sentry_items_total{type=\"event\"}") as usize,
        expected
    );
    agent.stop();
}

/// A body read from a channel of chunks (no length known in advance).
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.buf.is_empty() {
            match self.rx.recv() {
                Ok(b) => self.buf = b,
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf.drain(..n);
        Ok(n)
    }
}

#[test]
fn a_request_over_20_mib_is_refused_and_the_endpoint_still_serves() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // The port the end-to-end helper picks when none is asked for.
    let (agent, got, _rt) = start_agent(tmp.path(), &[]);
    let sentry = agent.addr("sentry");
    let path = format!("/api/{PROJECT}/envelope/");
    // Declared too large: refused before the body is sent, so a raw
    // connection that sends only the headers reads the answer.
    let mut conn = std::net::TcpStream::connect(&sentry).unwrap_or_else(|e| panic!("{e}"));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {sentry}\r\nX-Sentry-Auth: Sentry sentry_key={KEY}\r\nContent-Length: {}\r\n\r\n",
        21 << 20
    );
    conn.write_all(head.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut answer = [0u8; 512];
    let n = std::io::Read::read(&mut conn, &mut answer).unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("exceeds the limit of 20971520 bytes"),
        "{answer}"
    );
    drop(conn);
    // Sent without a length (chunked): refused once 20 MiB have arrived.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let sender = std::thread::spawn(move || {
        for _ in 0..21 {
            if tx.send(vec![b' '; 1 << 20]).is_err() {
                break;
            }
        }
    });
    let streamed = client()
        .post(format!("http://{sentry}{path}"))
        .header("x-sentry-auth", format!("Sentry sentry_key={KEY}"))
        .body(reqwest::blocking::Body::new(ChunkReader {
            rx,
            buf: Vec::new(),
        }))
        .send();
    // The endpoint may close before the client has written everything: a
    // 413 or a reset connection, never a 200.
    if let Ok(r) = streamed {
        assert_eq!(r.status().as_u16(), 413);
    }
    let _ = sender.join();
    let a = post(
        &sentry,
        &path,
        Some(KEY),
        None,
        envelope(&id(9), "after the big one", false),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    wait_for("the event", Duration::from_secs(30), || {
        (!got.lock().unwrap_or_else(|e| e.into_inner()).is_empty()).then_some(())
    });
    agent.stop();
}

#[test]
fn standalone_with_a_config_and_sentry_flag_indexes_events_and_names_the_listener() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = write_config(tmp.path());
    let data = tmp.path().join("data");
    let mecha = Mecha::start(
        "standalone",
        &data,
        &[
            "--config",
            &cfg,
            "--sentry",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "off",
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let listeners: Value =
        serde_json::from_slice(&std::fs::read(data.join("listeners.json")).unwrap_or_default())
            .unwrap_or(Value::Null);
    assert!(
        listeners["sentry"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{listeners}"
    );
    let sentry = mecha.addr("sentry");
    let http = mecha.addr("http");
    // Query-string auth, text/plain, as the browser SDK sends it.
    let resp = client()
        .post(format!(
            "http://{sentry}/api/{PROJECT}/envelope/?sentry_key={KEY}&sentry_version=7"
        ))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("origin", "http://localhost:3000")
        .body(envelope(&id(77), "standalonevisible", false))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("*")
    );
    wait_for(
        "the event in the log search",
        Duration::from_secs(30),
        || (total(&search(&http, "standalonevisible", 10)) == 1).then_some(()),
    );
    mecha.stop();
}
