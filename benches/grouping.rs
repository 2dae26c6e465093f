//! Throughput of Sentry events through the aggregator's issue path:
//!
//! - `grouping/group`: grouping alone of realistic Python, Node, browser and
//!   message events (already parsed), in events per second;
//! - `grouping/read_and_group`: the same from the forwarded record (event JSON
//!   parsed, grouped, record slimmed for the log index), as the writer does;
//! - `ingest/issue_store`: grouped events recorded in the issue store, 500 per
//!   commit (one fsync each), new event ids every time;
//! - `ingest/writer`: the whole writer path (read, group, issue store commit,
//!   log index add and commit) for batches of 500 event records.
//!
//! Run with `cargo bench --bench grouping` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mecha_aggregator::issues::grouping::group;
use mecha_aggregator::issues::route::{EventRouter, group_record};
use mecha_aggregator::issues::store::NewEvent;
use mecha_aggregator::issues::{HOOK_CAPACITY, IssueStore};
use mecha_aggregator::metrics::Metrics;
use mecha_aggregator::store::Store;
use mecha_aggregator::store::writer::Writer;
use mecha_parsers::sentry::attr;
use mecha_parsers::{LogRecord, Severity};
use serde_json::{Map, Value, json};

/// Events per commit in the ingestion benches.
const BATCH: usize = 500;

fn python(i: usize) -> Value {
    json!({
        "level": "error", "platform": "python", "release": "shop@1.4.2",
        "environment": "production", "user": {"id": format!("u{}", i % 50)},
        "tags": [["tenant", "acme"], ["region", "eu-west-1"]],
        "exception": {"values": [{
            "type": "KeyError", "value": format!("'sku-{i}'"),
            "mechanism": {"type": "generic", "handled": true},
            "stacktrace": {"frames": [
                {"module": "django.core.handlers.base", "filename": "django/core/handlers/base.py",
                 "function": "_get_response", "lineno": 197, "in_app": false,
                 "context_line": "                response = wrapped_callback(request, *callback_args, **callback_kwargs)"},
                {"module": "shop.views", "filename": "shop/views.py", "function": "checkout",
                 "lineno": 88, "in_app": true, "context_line": "    total = cart_total(cart)",
                 "vars": {"cart": "<Cart 12>", "request": "<WSGIRequest: POST '/checkout'>"}},
                {"module": "shop.cart", "filename": "shop/cart.py", "function": "cart_total",
                 "lineno": 41, "in_app": true, "context_line": "    return sum(prices[s] for s in cart.skus)"},
                {"module": "shop.cart", "filename": "shop/cart.py", "function": "<genexpr>",
                 "lineno": 41, "in_app": true, "context_line": "    return sum(prices[s] for s in cart.skus)"}
            ]}
        }]},
        "breadcrumbs": {"values": [
            {"category": "query", "message": "SELECT * FROM cart WHERE id = 12"},
            {"category": "http", "message": "POST /checkout"}
        ]},
        "request": {"url": "https://shop.example.com/checkout", "method": "POST"},
        "contexts": {"runtime": {"name": "CPython", "version": "3.13.1"}}
    })
}

fn node(i: usize) -> Value {
    json!({
        "level": "error", "platform": "node", "release": "checkout@2.0.0",
        "environment": "staging",
        "exception": {"values": [{
            "type": "TypeError",
            "value": format!("Cannot read properties of undefined (reading 'items{}')", i % 3),
            "stacktrace": {"frames": [
                {"filename": "node:internal/process/task_queues", "module": "task_queues",
                 "function": "process.processTicksAndRejections", "lineno": 95, "colno": 5, "in_app": false},
                {"filename": "/srv/app/node_modules/express/lib/router/layer.js", "module": "express.lib.router:layer",
                 "function": "Layer.handle [as handle_request]", "lineno": 95, "colno": 5, "in_app": false},
                {"filename": "/srv/app/src/routes/cart.js", "module": "routes:cart", "function": "getCart",
                 "lineno": 14, "colno": 22, "in_app": true, "context_line": "  const n = readCart(req.session.cart);"},
                {"filename": "/srv/app/src/cart.js", "module": "cart", "function": "readCart",
                 "lineno": 3, "colno": 15, "in_app": true, "context_line": "  return cart.items.length;"}
            ]}
        }]}
    })
}

fn browser(i: usize) -> Value {
    json!({
        "level": "error", "platform": "javascript",
        "request": {"url": "https://shop.example.com/cart", "headers": {"User-Agent": "Mozilla/5.0 Chrome/131.0"}},
        "exception": {"values": [{
            "type": "TypeError", "value": "Cannot read properties of null (reading 'price')",
            "mechanism": {"type": "onerror", "handled": false},
            "stacktrace": {"frames": [
                {"filename": "https://shop.example.com/static/js/vendor.8d3e1f2a.js", "function": "HTMLButtonElement.r",
                 "lineno": 2, "colno": 8812 + i % 7, "in_app": true},
                {"filename": "[native code]", "function": "Array.forEach", "in_app": true},
                {"filename": "https://shop.example.com/static/js/main.3f2a1b9c.js", "function": "Object.addToCart",
                 "lineno": 1, "colno": 4123, "in_app": true}
            ]}
        }]}
    })
}

fn message(i: usize) -> Value {
    json!({
        "level": "warning", "platform": "python",
        "message": format!("charge {i} failed for order 2c7d3e60-3a4b-4c8e-9f6a-0b1c2d3e4f{:02x} after 250ms", i % 256)
    })
}

/// A mix of the four kinds, as objects.
fn events(n: usize) -> Vec<Map<String, Value>> {
    (0..n)
        .map(|i| {
            let v = match i % 4 {
                0 => python(i),
                1 => node(i),
                2 => browser(i),
                _ => message(i),
            };
            v.as_object().cloned().unwrap_or_default()
        })
        .collect()
}

/// The record the agent forwards for an event.
fn record(event: &Map<String, Value>, id: u64) -> LogRecord {
    let mut r = LogRecord::new("", 1_764_000_000_000_000_000);
    r.timestamp_ns = mecha_aggregator::store::days::now_ns();
    r.severity = Severity::Error;
    for (k, v) in [
        (attr::EVENT_ID, format!("{id:032x}")),
        (attr::PROJECT_ID, "1".to_string()),
        (attr::EVENT, Value::Object(event.clone()).to_string()),
    ] {
        r.attributes.insert(k.to_string(), Value::from(v));
    }
    r
}

fn bench_grouping(c: &mut Criterion) {
    let evs = events(400);
    let records: Vec<LogRecord> = evs
        .iter()
        .enumerate()
        .map(|(i, e)| record(e, i as u64))
        .collect();
    let bytes: usize = records.iter().map(LogRecord::approx_bytes).sum();
    let mut g = c.benchmark_group("grouping");
    g.throughput(Throughput::Elements(evs.len() as u64));
    g.bench_function("group", |b| {
        b.iter(|| {
            for e in &evs {
                black_box(group(black_box(e)));
            }
        })
    });
    println!(
        "read_and_group: {} events, {} bytes per event on average",
        records.len(),
        bytes / records.len()
    );
    g.bench_function("read_and_group", |b| {
        b.iter_batched(
            || records.clone(),
            |records| {
                for r in records {
                    black_box(group_record(r));
                }
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn bench_ingest(c: &mut Criterion) {
    let evs = events(BATCH);
    let next_id = AtomicU64::new(1);
    let mut g = c.benchmark_group("ingest");
    g.sample_size(10);
    g.throughput(Throughput::Elements(BATCH as u64));

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let issues =
        IssueStore::open(&dir.path().join("issues"), 100).unwrap_or_else(|e| panic!("{e}"));
    let now = mecha_aggregator::store::days::now_ns();
    g.bench_function("issue_store", |b| {
        b.iter_batched(
            || {
                evs.iter()
                    .map(|e| {
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        NewEvent {
                            project: 1,
                            event_id: format!("{id:032x}"),
                            timestamp_ns: now,
                            level: "error".into(),
                            grouping: group(e),
                            user: Some(format!("u{}", id % 50)),
                            release: Some("shop@1.4.2".into()),
                            environment: Some("production".into()),
                            json: Value::Object(e.clone()).to_string(),
                        }
                    })
                    .collect::<Vec<_>>()
            },
            |batch| issues.record(batch).unwrap_or_else(|e| panic!("{e}")),
            criterion::BatchSize::LargeInput,
        )
    });

    let wdir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let metrics = Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}")));
    let (store, hwms) = Store::open(&wdir.path().join("logs")).unwrap_or_else(|e| panic!("{e}"));
    let issues = Arc::new(
        IssueStore::open(&wdir.path().join("issues"), 100).unwrap_or_else(|e| panic!("{e}")),
    );
    let (hooks, _) = tokio::sync::broadcast::channel(HOOK_CAPACITY);
    let router = EventRouter::new(issues, Arc::clone(&metrics), hooks);
    let mut writer = Writer::new(Arc::new(store), hwms, metrics, 7).with_events(router);
    g.bench_function("writer", |b| {
        b.iter_batched(
            || {
                evs.iter()
                    .map(|e| record(e, next_id.fetch_add(1, Ordering::Relaxed)))
                    .collect::<Vec<_>>()
            },
            |batch| {
                writer
                    .write_batches(vec![batch])
                    .unwrap_or_else(|e| panic!("{e}"))
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_grouping, bench_ingest);
criterion_main!(benches);
