//! Throughput of the log codecs on the agent's hot path: the CRI and docker
//! container envelopes and the JSON and logfmt body parsers, over ~10k
//! realistic generated lines each, reported in bytes per second.
//!
//! Run with `cargo bench --bench parsers` (add `-- --quick` for a short run).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mecha_parsers::body::{BodyFormat, parse_body};
use mecha_parsers::container::{parse_cri, parse_docker};

const LINES: usize = 10_000;

/// A small deterministic generator, so every run measures the same input.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        let n = u64::try_from(items.len()).unwrap_or(1).max(1);
        let i = usize::try_from(self.next() % n).unwrap_or(0);
        items.get(i).copied().unwrap_or_default()
    }
}

const LEVELS: &[&str] = &["debug", "info", "info", "info", "warn", "error"];
const PATHS: &[&str] = &[
    "/api/v1/orders",
    "/api/v1/users/42",
    "/healthz",
    "/metrics",
    "/api/v1/cart?item=9&qty=2",
];
const MESSAGES: &[&str] = &[
    "request completed",
    "cache miss for key user:42:profile",
    "upstream responded slowly, retrying with backoff",
    "connection reset by peer while reading response headers from upstream",
    "payment authorised for order 8812 (card ending 4242)",
];

/// A JSON application log line like zap or logrus write.
fn json_body(rng: &mut Lcg, i: usize) -> String {
    format!(
        r#"{{"level":"{}","ts":"2024-01-15T10:{:02}:{:02}.{:06}Z","caller":"server/handler.go:{}","msg":"{}","method":"GET","path":"{}","status":{},"duration_ms":{}.{},"trace_id":"{:016x}{:016x}"}}"#,
        rng.pick(LEVELS),
        i % 60,
        (i / 60) % 60,
        rng.next() % 1_000_000,
        rng.next() % 400,
        rng.pick(MESSAGES),
        rng.pick(PATHS),
        [200, 200, 201, 404, 500][i % 5],
        rng.next() % 900,
        rng.next() % 1000,
        rng.next(),
        rng.next(),
    )
}

/// A logfmt line like go-kit writes.
fn logfmt_body(rng: &mut Lcg, i: usize) -> String {
    format!(
        r#"ts=2024-01-15T10:{:02}:{:02}.{:03}Z level={} caller=main.go:{} msg="{}" path={} status={} took={}ms user_id={}"#,
        i % 60,
        (i / 60) % 60,
        rng.next() % 1000,
        rng.pick(LEVELS),
        rng.next() % 300,
        rng.pick(MESSAGES),
        rng.pick(PATHS),
        [200, 200, 304, 404, 503][i % 5],
        rng.next() % 2000,
        rng.next() % 100_000,
    )
}

fn cri_lines(rng: &mut Lcg) -> Vec<Vec<u8>> {
    (0..LINES)
        .map(|i| {
            let stream = if i % 7 == 0 { "stderr" } else { "stdout" };
            let tag = if i % 50 == 0 { "P" } else { "F" };
            format!(
                "2024-01-15T10:20:{:02}.{:09}Z {stream} {tag} {}",
                i % 60,
                rng.next() % 1_000_000_000,
                json_body(rng, i)
            )
            .into_bytes()
        })
        .collect()
}

fn docker_lines(rng: &mut Lcg) -> Vec<Vec<u8>> {
    (0..LINES)
        .map(|i| {
            let stream = if i % 7 == 0 { "stderr" } else { "stdout" };
            // Docker stores the application's line as an escaped JSON string.
            let log =
                serde_json::to_string(&format!("{}\n", json_body(rng, i))).unwrap_or_default();
            format!(
                r#"{{"log":{log},"stream":"{stream}","time":"2024-01-15T10:20:{:02}.{:09}Z"}}"#,
                i % 60,
                rng.next() % 1_000_000_000
            )
            .into_bytes()
        })
        .collect()
}

fn total_bytes<T: AsRef<[u8]>>(lines: &[T]) -> u64 {
    lines
        .iter()
        .map(|l| u64::try_from(l.as_ref().len()).unwrap_or(0))
        .sum()
}

fn container(c: &mut Criterion) {
    let mut rng = Lcg(7);
    let cri = cri_lines(&mut rng);
    let docker = docker_lines(&mut rng);
    let mut group = c.benchmark_group("container");
    group.throughput(Throughput::Bytes(total_bytes(&cri)));
    group.bench_function("parse_cri", |b| {
        b.iter(|| {
            for line in &cri {
                let _ = black_box(parse_cri(black_box(line)));
            }
        })
    });
    group.throughput(Throughput::Bytes(total_bytes(&docker)));
    group.bench_function("parse_docker", |b| {
        b.iter(|| {
            for line in &docker {
                let _ = black_box(parse_docker(black_box(line)));
            }
        })
    });
    group.finish();
}

fn body(c: &mut Criterion) {
    let mut rng = Lcg(11);
    let json: Vec<String> = (0..LINES).map(|i| json_body(&mut rng, i)).collect();
    let logfmt: Vec<String> = (0..LINES).map(|i| logfmt_body(&mut rng, i)).collect();
    let mut group = c.benchmark_group("body");
    group.throughput(Throughput::Bytes(total_bytes(&json)));
    group.bench_function("parse_body_json", |b| {
        b.iter(|| {
            for line in &json {
                let _ = black_box(parse_body(BodyFormat::Json, black_box(line)));
            }
        })
    });
    group.throughput(Throughput::Bytes(total_bytes(&logfmt)));
    group.bench_function("parse_body_logfmt", |b| {
        b.iter(|| {
            for line in &logfmt {
                let _ = black_box(parse_body(BodyFormat::Logfmt, black_box(line)));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, container, body);
criterion_main!(benches);
