//! Load harness of the Sentry endpoint: runs the real `mecha agent` (disk
//! buffer, forwarding over OTLP/gRPC to a sink that only counts records),
//! and sends it a typical exception event — about 4 KB of JSON with a stack
//! trace, gzip-compressed as SDKs send it — from several concurrent HTTP
//! clients over loopback, each waiting for its answer as an SDK does.
//! Reports events per second, the agent's CPU time (from `/proc`, like the
//! pipeline bench) and so events per second per core, answer latency, and
//! peak RSS.
//!
//! `cargo bench --bench sentry` (200,000 events from 64 clients by default;
//! set `MECHA_BENCH_EVENTS` and `MECHA_BENCH_CLIENTS` to change, and
//! `MECHA_BENCH_BUFFER=memory` to leave the disk buffer out).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod support;
use support::{CountingSink, env_u64, proc_usage};
use tonic::transport::server::TcpIncoming;

/// A Python-SDK-like exception event of about 4 KB, with id `n`.
fn event(n: u64) -> Vec<u8> {
    let frames: Vec<String> = (0..8)
        .map(|i| {
            format!(
                r#"{{"filename":"shop/orders/service_{i}.py","abs_path":"/app/shop/orders/service_{i}.py","function":"handle_step_{i}","module":"shop.orders.service_{i}","lineno":{},"pre_context":["    order = load(order_id)","    if not order:"],"context_line":"        raise ValueError(f'order {{order_id}} not found')","post_context":["    return order"],"in_app":true,"vars":{{"order_id":"'{n}'","attempt":"{i}"}}}}"#,
                40 + i
            )
        })
        .collect();
    let event = format!(
        r#"{{"event_id":"{n:032x}","timestamp":"2026-11-23T10:00:00.000000Z","platform":"python","level":"error","logger":"shop.orders","server_name":"web-7d9f8b-x2x9z","release":"shop@1.4.2","environment":"production","exception":{{"values":[{{"type":"ValueError","value":"order {n} not found","module":"builtins","mechanism":{{"type":"django","handled":false}},"stacktrace":{{"frames":[{}]}}}}]}},"tags":{{"region":"eu-1","customer_tier":"gold"}},"user":{{"id":"u-{n}","email":"user{n}@example.com"}},"request":{{"url":"https://shop.example/api/orders/{n}","method":"GET","headers":{{"User-Agent":"Mozilla/5.0","Accept":"application/json"}}}},"sdk":{{"name":"sentry.python.django","version":"2.19.0"}}}}"#,
        frames.join(",")
    );
    let envelope = format!(
        "{{\"event_id\":\"{n:032x}\",\"sent_at\":\"2026-11-23T10:00:00.100Z\",\"dsn\":\"http://benchkey@127.0.0.1/1\"}}\n{{\"type\":\"event\",\"length\":{}}}\n{event}\n",
        event.len()
    );
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = e.write_all(envelope.as_bytes());
    e.finish().unwrap_or_default()
}

fn write_config(dir: &Path, buffer: &str) -> std::io::Result<std::path::PathBuf> {
    let cfg = dir.join("mecha.yaml");
    // A disk buffer with its default fsync interval, as on a node: awaited
    // chunks are fsynced at once, the interval only paces file lines.
    std::fs::write(
        &cfg,
        format!(
            "agent:\n  sources: {{}}\n  buffer: {{ type: {buffer} }}\n  sentry:\n    queue_events: 65536\n    projects:\n      - id: 1\n        keys: [benchkey]\n"
        ),
    )?;
    Ok(cfg)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let total = env_u64("MECHA_BENCH_EVENTS", 200_000);
    let clients = env_u64("MECHA_BENCH_CLIENTS", 64).max(1);
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => return eprintln!("sentry bench: tempdir: {e}"),
    };
    // `memory` measures the endpoint without the disk buffer's writes.
    let buffer = std::env::var("MECHA_BENCH_BUFFER").unwrap_or_else(|_| "disk".into());
    let cfg = match write_config(tmp.path(), &buffer) {
        Ok(c) => c,
        Err(e) => return eprintln!("sentry bench: config: {e}"),
    };
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..1024).map(event).collect());
    let raw_len = {
        let mut d = flate2::read::GzDecoder::new(&bodies[0][..]);
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut d, &mut s);
        s.len()
    };
    println!(
        "sentry: {total} events from {clients} clients, {raw_len} bytes of envelope, {} gzipped",
        bodies[0].len()
    );

    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return eprintln!("sentry bench: runtime: {e}"),
    };
    let count = Arc::new(AtomicU64::new(0));
    let listener = match rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")) {
        Ok(l) => l,
        Err(e) => return eprintln!("sentry bench: bind: {e}"),
    };
    let sink: SocketAddr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => return eprintln!("sentry bench: {e}"),
    };
    let svc = CountingSink(count.clone());
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true))),
    );

    let data = tmp.path().join("data");
    let child = Command::new(env!("CARGO_BIN_EXE_mecha"))
        .arg("agent")
        .arg("--config")
        .arg(&cfg)
        .args([
            "--admin",
            "127.0.0.1:0",
            "--sentry",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .arg("--forward")
        .arg(format!("http://{sink}"))
        .env("MECHA_LOG", "warn")
        .stdout(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return eprintln!("sentry bench: starting mecha: {e}"),
    };
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    let sentry = loop {
        let found = std::fs::read(data.join("listeners.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("sentry")?.as_str().map(str::to_string));
        if let Some(a) = found {
            break a;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return eprintln!("sentry bench: the agent did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let url = format!("http://{sentry}/api/1/envelope/");

    let (cpu0, _) = proc_usage(pid);
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let latencies = rt.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(clients as usize)
            .build()
            .unwrap_or_default();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (client, url, bodies, next, failed) =
                (client.clone(), url.clone(), bodies.clone(), next.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break lat;
                    }
                    let body = bodies[(n % bodies.len() as u64) as usize].clone();
                    let t = Instant::now();
                    let ok = client
                        .post(&url)
                        .header("content-encoding", "gzip")
                        .header("content-type", "application/x-sentry-envelope")
                        .header("x-sentry-auth", "Sentry sentry_key=benchkey, sentry_version=7, sentry_client=sentry.python/2.19.0")
                        .body(body)
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false);
                    if ok {
                        lat.push(t.elapsed());
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            if let Ok(l) = t.await {
                all.extend(l);
            }
        }
        all
    });
    let secs = started.elapsed().as_secs_f64();
    let (cpu1, rss) = proc_usage(pid);
    let cpu = cpu1 - cpu0;
    // Everything answered 200 was fsynced; wait for the sink to have it all.
    let accepted = latencies.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count.load(Ordering::SeqCst) < accepted && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut lat = latencies;
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0)
    };
    println!(
        "agent: {:8.0} events/s wall  {:6.2} CPU-s  {:8.0} events/s per core  p50 {:.1} ms  p99 {:.1} ms  peak RSS {:.1} MiB",
        accepted as f64 / secs,
        cpu,
        accepted as f64 / cpu.max(1e-9),
        pct(0.5),
        pct(0.99),
        rss as f64 / 1024.0
    );
    println!(
        "       {accepted} answered 200, {} failed, {} records at the sink",
        failed.load(Ordering::Relaxed),
        count.load(Ordering::SeqCst)
    );
}
