//! The endpoint's routes end to end within the agent: a request in, the
//! answer and counts out, and the chunks that reached the pipeline.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use mecha_config::SentryConfig;
use mecha_parsers::LogRecord;
use mecha_parsers::otlp::decode_logs_request;
use serde_json::Value;
use tower::ServiceExt;

use super::listener::Peer;
use super::*;
use crate::pipeline;

const KEY: &str = "k";
const ID: &str = "0123456789abcdef0123456789abcdef";
const KEPT: Option<pipeline::Settled> = Some(pipeline::Settled::Kept);

/// The endpoint's router over a pipeline whose chunks are settled as
/// `settle` says when they arrive (or held, when `None`) and kept for the
/// test.
struct Rig {
    app: axum::Router,
    metrics: Arc<AgentMetrics>,
    received: Arc<Mutex<Vec<LogRecord>>>,
}

fn rig_with(config: SentryConfig, settle: Option<pipeline::Settled>, peer: &str) -> Rig {
    let metrics = Arc::new(AgentMetrics::new());
    let (output, mut input) = pipeline::channel(4, metrics.clone(), pipeline::ChunkCodec::Raw);
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(c) = input.recv().await {
            if let Ok(records) = decode_logs_request(&c.request) {
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(records);
            }
            match settle {
                Some(pipeline::Settled::Kept) => c.ack(),
                Some(pipeline::Settled::Dropped) => c.discard(),
                None => held.push(c),
            }
        }
    });
    let ingest =
        Arc::new(ingest_context(&config, Some("node-1")).unwrap_or_else(|e| panic!("{e}")));
    let (shared, _task) = shared(&config, ingest, None, output, metrics.clone());
    let peer: SocketAddr = peer.parse().unwrap_or_else(|e| panic!("{e}"));
    let app = server::router(shared).layer(MockConnectInfo(Peer {
        tcp: peer,
        proxied: None,
    }));
    Rig {
        app,
        metrics,
        received,
    }
}

fn rig() -> Rig {
    rig_with(SentryConfig::default(), KEPT, "127.0.0.1:5555")
}

fn with_project() -> SentryConfig {
    let mut c = SentryConfig::default();
    c.projects.push(mecha_config::SentryProject {
        id: 42,
        keys: vec![KEY.into()],
        rate_limit: None,
        scrub: None,
        filters: None,
    });
    c.projects.push(mecha_config::SentryProject {
        id: 7,
        keys: vec!["other".into()],
        rate_limit: None,
        scrub: None,
        filters: None,
    });
    c
}

fn post(path: &str) -> axum::http::request::Builder {
    Request::builder().method("POST").uri(path)
}

fn auth(b: axum::http::request::Builder) -> axum::http::request::Builder {
    b.header(
        "x-sentry-auth",
        format!("Sentry sentry_key={KEY}, sentry_version=7"),
    )
}

fn envelope(message: &str) -> String {
    format!(
        "{{\"event_id\":\"{ID}\"}}\n{{\"type\":\"event\"}}\n{{\"message\":\"{message}\",\"level\":\"error\"}}\n"
    )
}

async fn send(rig: &Rig, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let resp = rig
        .app
        .clone()
        .oneshot(req)
        .await
        .unwrap_or_else(|e| match e {});
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn metric(rig: &Rig, line: &str) -> u64 {
    metric_in(&rig.metrics.render(), line)
}

fn discarded(rig: &Rig, reason: &str) -> u64 {
    metric(
        rig,
        &format!(
            "mecha_component_discarded_events_total{{component=\"sentry\",reason=\"{reason}\"}}"
        ),
    )
}

fn events(rig: &Rig) -> Vec<Value> {
    rig.received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|r| {
            serde_json::from_str(
                r.attributes
                    .get("sentry.event")
                    .and_then(Value::as_str)
                    .unwrap_or("null"),
            )
            .unwrap_or(Value::Null)
        })
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

#[tokio::test]
async fn an_envelope_is_answered_with_its_id_once_safe_and_forwarded_as_one_record() {
    let r = rig();
    let (status, _, body) = send(
        &r,
        auth(post("/api/42/envelope/"))
            .body(Body::from(envelope("boom")))
            .unwrap_or_default(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, serde_json::json!({ "id": ID }));
    let got = r.received.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].attributes.get("sentry.project_id"),
        Some(&Value::from("42"))
    );
    assert_eq!(
        got[0].attributes.get("sentry.event_id"),
        Some(&Value::from(ID))
    );
    assert_eq!(got[0].resource.get("k8s.node.name"), Some("node-1"));
    assert_eq!(events(&r)[0]["logentry"]["formatted"], "boom");
    assert_eq!(metric(&r, "mecha_sentry_events_accepted_total"), 1);
    assert_eq!(
        metric(
            &r,
            "mecha_sentry_requests_total{route=\"envelope\",status=\"200\"}"
        ),
        1
    );
    assert_eq!(metric(&r, "mecha_sentry_items_total{type=\"event\"}"), 1);
}

#[tokio::test]
async fn every_auth_form_is_accepted_and_missing_or_double_auth_is_401() {
    let r = rig_with(with_project(), KEPT, "127.0.0.1:1");
    let body = || Body::from(envelope("x"));
    let forms = [
        post("/api/42/envelope/").header("x-sentry-auth", "Sentry sentry_key=k, sentry_version=7"),
        post("/api/42/envelope/").header("authorization", "Sentry sentry_key=k"),
        post("/api/42/envelope/?sentry_key=k&sentry_version=7"),
    ];
    for f in forms {
        let (status, _, b) = send(&r, f.body(body()).unwrap_or_default()).await;
        assert_eq!(status, StatusCode::OK, "{b}");
    }
    let dsn = "{\"dsn\":\"http://k@node:9000/42\"}\n{\"type\":\"event\"}\n{}\n";
    let (status, _, _) = send(
        &r,
        post("/api/42/envelope/")
            .body(Body::from(dsn))
            .unwrap_or_default(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, h, b) = send(
        &r,
        post("/api/42/store/")
            .body(Body::from("{}"))
            .unwrap_or_default(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(b["detail"], "missing authorization information");
    assert_eq!(
        h.get("x-sentry-error").and_then(|v| v.to_str().ok()),
        Some("missing authorization information")
    );
    let double =
        post("/api/42/envelope/?sentry_key=k").header("x-sentry-auth", "Sentry sentry_key=k");
    let (status, _, b) = send(&r, double.body(body()).unwrap_or_default()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{b}");
    assert!(
        b["detail"]
            .as_str()
            .is_some_and(|d| d.contains("multiple authorization payloads"))
    );
    assert_eq!(discarded(&r, "auth"), 2);
}

#[tokio::test]
async fn unknown_keys_and_keys_of_other_projects_are_403() {
    let r = rig_with(with_project(), KEPT, "127.0.0.1:1");
    for (path, key) in [
        ("/api/42/envelope/", "nope"),
        ("/api/42/envelope/", "other"),
        ("/api/7/envelope/", KEY),
    ] {
        let req = post(path).header("x-sentry-auth", format!("Sentry sentry_key={key}"));
        let (status, _, b) =
            send(&r, req.body(Body::from(envelope("x"))).unwrap_or_default()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path} {key}: {b}");
    }
    let v8 =
        post("/api/42/envelope/").header("x-sentry-auth", "Sentry sentry_key=k, sentry_version=8");
    let (status, _, _) = send(&r, v8.body(Body::from(envelope("x"))).unwrap_or_default()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        r.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    );
}

#[tokio::test]
async fn bad_paths_and_project_ids_are_named() {
    let r = rig();
    let (status, _, b) = send(
        &r,
        auth(post("/api/abc/envelope/"))
            .body(Body::empty())
            .unwrap_or_default(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        b["detail"]
            .as_str()
            .is_some_and(|d| d.contains("numeric project id"))
    );
    let (status, _, b) = send(
        &r,
        auth(post("/api/42/minidump/"))
            .body(Body::empty())
            .unwrap_or_default(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(b["detail"], "no such endpoint: /api/42/minidump/");
    let get = Request::builder()
        .uri("/api/42/store/")
        .body(Body::empty())
        .unwrap_or_default();
    let (status, _, _) = send(&r, get).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    // Without the trailing slash too.
    let (status, _, _) = send(
        &r,
        auth(post("/api/42/store"))
            .body(Body::from("{}"))
            .unwrap_or_default(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn compressed_bodies_are_read_and_bombs_stopped_with_413() {
    let mut config = SentryConfig::default();
    config.limits.max_envelope_bytes = mecha_config::ByteSize(1 << 20);
    config.limits.max_event_bytes = mecha_config::ByteSize(64 << 10);
    let r = rig_with(config, KEPT, "127.0.0.1:1");
    let req = auth(post("/api/42/envelope/"))
        .header("content-encoding", "gzip")
        .body(Body::from(gzip(envelope("zipped").as_bytes())))
        .unwrap_or_default();
    let (status, _, b) = send(&r, req).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    // 64 MiB of zeros: far past the 1 MiB envelope limit.
    let bomb = gzip(&vec![0u8; 64 << 20]);
    let req = auth(post("/api/42/envelope/"))
        .header("content-encoding", "gzip")
        .body(Body::from(bomb))
        .unwrap_or_default();
    let (status, _, b) = send(&r, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert_eq!(discarded(&r, "bomb"), 1);
    let req = auth(post("/api/42/envelope/"))
        .header("content-encoding", "gzip")
        .body(Body::from("not gzip"))
        .unwrap_or_default();
    let (status, _, _) = send(&r, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        metric(
            &r,
            "mecha_sentry_decompression_errors_total{encoding=\"gzip\"}"
        ),
        1
    );
    let req = auth(post("/api/42/envelope/"))
        .header("content-encoding", "lzma")
        .body(Body::from("x"))
        .unwrap_or_default();
    let (status, _, _) = send(&r, req).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // An oversized event alone.
    let big = envelope(&"x".repeat(70 << 10));
    let (status, _, _) = send(
        &r,
        auth(post("/api/42/envelope/"))
            .body(Body::from(big))
            .unwrap_or_default(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(discarded(&r, "too_large"), 1);
    assert_eq!(events(&r).len(), 1);
}

#[tokio::test]
async fn a_request_over_the_size_limit_is_413_before_it_is_read() {
    let mut config = SentryConfig::default();
    config.limits.max_request_bytes = mecha_config::ByteSize(1024);
    let r = rig_with(config, KEPT, "127.0.0.1:1");
    let (status, _, b) = send(
        &r,
        auth(post("/api/42/store/"))
            .body(Body::from(vec![b' '; 2048]))
            .unwrap_or_default(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
}

#[tokio::test]
async fn cors_preflight_and_answers_carry_the_browser_headers() {
    let r = rig();
    let pre = Request::builder()
        .method("OPTIONS")
        .uri("/api/42/envelope/")
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .body(Body::empty())
        .unwrap_or_default();
    let (status, h, _) = send(&r, pre).await;
    assert_eq!(status, StatusCode::OK);
    let get = |h: &axum::http::HeaderMap, k: &str| {
        h.get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(get(&h, "access-control-allow-origin"), "*");
    assert!(get(&h, "access-control-allow-methods").contains("POST"));
    for needed in ["x-sentry-auth", "content-type", "sentry-trace", "baggage"] {
        assert!(
            get(&h, "access-control-allow-headers").contains(needed),
            "{needed}"
        );
    }
    // The browser SDK posts text/plain with query-string auth and no preflight.
    let req = post("/api/42/envelope/?sentry_key=k&sentry_version=7")
        .header("origin", "https://shop.example")
        .header("content-type", "text/plain;charset=UTF-8")
        .body(Body::from(envelope("from the browser")))
        .unwrap_or_default();
    let (status, h, _) = send(&r, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(get(&h, "access-control-allow-origin"), "*");
    assert_eq!(
        get(&h, "access-control-expose-headers"),
        "x-sentry-error, x-sentry-rate-limits, retry-after"
    );
}

#[tokio::test]
async fn cors_echoes_only_listed_origins() {
    let config = SentryConfig {
        cors_origins: vec!["https://shop.example".into()],
        ..SentryConfig::default()
    };
    let r = rig_with(config, KEPT, "127.0.0.1:1");
    let req = |origin: &str| {
        auth(post("/api/42/envelope/"))
            .header("origin", origin)
            .body(Body::from(envelope("x")))
            .unwrap_or_default()
    };
    let (_, h, _) = send(&r, req("https://shop.example")).await;
    assert_eq!(
        h.get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://shop.example")
    );
    let (_, h, _) = send(&r, req("https://evil.example")).await;
    assert!(h.get("access-control-allow-origin").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_project_over_its_rate_limit_gets_429_with_sentrys_headers() {
    let mut config = with_project();
    config.projects[0].rate_limit = Some(mecha_config::RateLimitConfig {
        events_per_second: 1.0,
        burst: Some(2),
    });
    let r = rig_with(config, KEPT, "127.0.0.1:1");
    let req = || {
        auth(post("/api/42/envelope/"))
            .body(Body::from(envelope("x")))
            .unwrap_or_default()
    };
    for _ in 0..2 {
        assert_eq!(send(&r, req()).await.0, StatusCode::OK);
    }
    let (status, h, _) = send(&r, req()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        h.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(
        h.get("x-sentry-rate-limits").and_then(|v| v.to_str().ok()),
        Some("1:error;default;security:project:rate_limited")
    );
    assert_eq!(discarded(&r, "rate_limited"), 1);
    tokio::time::advance(std::time::Duration::from_secs(1)).await;
    assert_eq!(send(&r, req()).await.0, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn events_not_kept_are_refused_with_retry_after() {
    // Held past the ack timeout: 503. Settled as dropped by the buffer (a
    // disk buffer under `when_full: drop_newest`): 429, the SDK must hear
    // that nothing was kept. Neither counts a discard of the endpoint's
    // own: a held event may yet be stored, and a dropped one is counted by
    // the buffer that dropped it (`spool::tests::drop_newest_*`), once.
    for (settle, expected, rate_limits) in [
        (None, StatusCode::SERVICE_UNAVAILABLE, false),
        (
            Some(pipeline::Settled::Dropped),
            StatusCode::TOO_MANY_REQUESTS,
            true,
        ),
    ] {
        let r = rig_with(SentryConfig::default(), settle, "127.0.0.1:1");
        let (status, h, b) = send(
            &r,
            auth(post("/api/42/envelope/"))
                .body(Body::from(envelope("x")))
                .unwrap_or_default(),
        )
        .await;
        assert_eq!(status, expected, "{settle:?}: {b}");
        assert!(h.get("retry-after").is_some());
        assert_eq!(h.get("x-sentry-rate-limits").is_some(), rate_limits);
        assert_eq!(discarded(&r, "buffer_full"), 0);
        assert_eq!(metric(&r, "mecha_sentry_events_accepted_total"), 0);
    }
}

#[tokio::test]
async fn a_full_queue_gets_429_buffer_full() {
    let config = SentryConfig {
        queue_events: 1,
        ..SentryConfig::default()
    };
    // Chunks are never acknowledged: the one queued event holds the queue.
    let r = rig_with(config, None, "127.0.0.1:1");
    let app = r.app.clone();
    let first = tokio::spawn(async move {
        let req = auth(post("/api/42/envelope/"))
            .body(Body::from(envelope("a")))
            .unwrap_or_default();
        app.oneshot(req).await
    });
    // Wait until the first request holds the queue.
    while r
        .received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_empty()
    {
        tokio::task::yield_now().await;
    }
    let (status, h, _) = send(
        &r,
        auth(post("/api/42/envelope/"))
            .body(Body::from(envelope("b")))
            .unwrap_or_default(),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        h.get("x-sentry-rate-limits")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.ends_with(":buffer_full"))
    );
    assert_eq!(discarded(&r, "buffer_full"), 1);
    first.abort();
}

#[tokio::test]
async fn store_security_and_mixed_envelopes_are_counted_by_item() {
    let r = rig();
    let (status, _, b) = send(
        &r,
        auth(post("/api/42/store/"))
            .body(Body::from("{\"message\":\"legacy\"}"))
            .unwrap_or_default(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(b["id"].as_str().is_some_and(|id| id.len() == 32));
    let csp = r#"{"csp-report":{"document-uri":"https://a/","effective-directive":"img-src","blocked-uri":"https://b/"}}"#;
    let req = post("/api/42/security/?sentry_key=k")
        .header("content-type", "application/csp-report")
        .body(Body::from(csp))
        .unwrap_or_default();
    assert_eq!(send(&r, req).await.0, StatusCode::OK);
    let mixed = "{}\n{\"type\":\"session\"}\n{\"sid\":\"x\"}\n{\"type\":\"transaction\"}\n{\"type\":\"transaction\"}\n{\"type\":\"client_report\"}\nbad\n";
    let (status, _, b) = send(
        &r,
        auth(post("/api/42/envelope/"))
            .body(Body::from(mixed))
            .unwrap_or_default(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(b, serde_json::json!({}));
    assert_eq!(metric(&r, "mecha_sentry_items_total{type=\"session\"}"), 1);
    assert_eq!(metric(&r, "mecha_sentry_items_total{type=\"security\"}"), 1);
    assert_eq!(discarded(&r, "transaction_unsupported"), 1);
    assert_eq!(discarded(&r, "invalid_item"), 1);
    assert_eq!(events(&r).len(), 2);
}

#[tokio::test]
async fn framing_errors_are_400_and_the_next_good_envelope_still_goes() {
    let r = rig();
    for (bad, why) in [
        (
            "{}\n{\"type\":\"event\",\"length\":500}\n{}\n",
            "bad_envelope",
        ),
        (
            "{}\n{\"type\":\"event\",\"length\":1}\n{}\n",
            "bad_envelope",
        ),
        ("{\"event_id\":", "bad_envelope"),
        ("{}\n{\"type\":\"event\"}\n{\"message\":\n", "invalid_json"),
    ] {
        let (status, _, b) = send(
            &r,
            auth(post("/api/42/envelope/"))
                .body(Body::from(bad))
                .unwrap_or_default(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(b["detail"].as_str().is_some_and(|d| !d.is_empty()));
        let (status, _, _) = send(
            &r,
            auth(post("/api/42/envelope/"))
                .body(Body::from(envelope("after")))
                .unwrap_or_default(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "after {why}");
    }
    assert_eq!(discarded(&r, "bad_envelope"), 3);
    assert_eq!(discarded(&r, "invalid_json"), 1);
    assert_eq!(events(&r).len(), 4);
}

/// Sends raw bytes to `addr` and reads until the server closes.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn http_envelope(extra_headers: &str) -> Vec<u8> {
    let body = envelope("over proxy");
    format!(
        "POST /api/42/envelope/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Sentry-Auth: Sentry sentry_key={KEY}\r\n{extra_headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The endpoint on a free port of loopback, over a pipeline that
/// acknowledges every chunk.
async fn endpoint(config: &SentryConfig) -> (SentryHandle, Arc<AgentMetrics>, crate::Shutdown) {
    let metrics = Arc::new(AgentMetrics::new());
    let (output, mut input) = pipeline::channel(4, metrics.clone(), pipeline::ChunkCodec::Raw);
    tokio::spawn(async move {
        while let Some(c) = input.recv().await {
            c.ack();
        }
    });
    let shutdown = crate::Shutdown::new();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
    let handle = start(
        config,
        any,
        None,
        None,
        output,
        metrics.clone(),
        shutdown.clone(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    (handle, metrics, shutdown)
}

/// Waits (up to a minute) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_listener_takes_the_proxy_header_and_closes_connections_without_one() {
    let config = SentryConfig {
        proxy_protocol: true,
        proxy_protocol_timeout: mecha_config::Duration(std::time::Duration::from_millis(300)),
        ..SentryConfig::default()
    };
    let (handle, metrics, shutdown) = endpoint(&config).await;
    let addr = handle.addr();
    let mut with_v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 9000\r\n".to_vec();
    with_v1.extend(http_envelope(""));
    let answer = raw_exchange(addr, &with_v1).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let src: SocketAddr = "198.51.100.9:4000"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut with_v2 = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (src, addr),
    )
    .build()
    .unwrap_or_default();
    with_v2.extend(http_envelope(""));
    let answer = raw_exchange(addr, &with_v2).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Plain HTTP where a PROXY header must come: closed unanswered.
    assert_eq!(raw_exchange(addr, &http_envelope("")).await, "");
    // Silent past the deadline: closed unanswered.
    assert_eq!(raw_exchange(addr, b"").await, "");
    let text = metrics.render();
    assert!(
        text.contains(
            "mecha_component_errors_total{component=\"sentry\",kind=\"proxy_protocol\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "mecha_component_errors_total{component=\"sentry\",kind=\"proxy_protocol_timeout\"} 1"
        ),
        "{text}"
    );
    assert_eq!(metric_in(&text, "mecha_sentry_events_accepted_total"), 2);
    shutdown.cancel();
    handle.join().await;
}

fn metric_in(text: &str, series: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn connections_past_the_limit_wait_until_one_closes() {
    let mut config = SentryConfig::default();
    config.limits.max_connections = 2;
    let (handle, metrics, shutdown) = endpoint(&config).await;
    let addr = handle.addr();
    let open = || metric_in(&metrics.render(), "mecha_sentry_connections");
    let waited = || {
        metric_in(
            &metrics.render(),
            "mecha_component_errors_total{component=\"sentry\",kind=\"connection_limit\"}",
        )
    };
    // Two idle keep-alive connections hold both slots.
    let first = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _second = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    until("two connections open", || open() == 2).await;
    // A third is queued, not served, ...
    let request = http_envelope("");
    let third = tokio::spawn(async move { raw_exchange(addr, &request).await });
    until("the third connection to wait", || waited() == 1).await;
    assert!(!third.is_finished());
    assert_eq!(open(), 2);
    // ... until one of the others closes.
    drop(first);
    let answer = tokio::time::timeout(std::time::Duration::from_secs(60), third)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The third closed after its answer (`Connection: close`).
    until("one connection open", || open() == 1).await;
    assert_eq!(waited(), 1);
    shutdown.cancel();
    handle.join().await;
}
