//! Cost of what happens to a Sentry event before it leaves the node: the
//! inbound filters, normalisation and PII scrubbing of a typical exception
//! event (the Python SDK's, ~5 KB of JSON with a request, frame variables
//! and breadcrumbs; `parsers/tests/fixtures/sentry/python_wsgi.json`),
//! reported in events per second. The endpoint's target is 20,000 events/s
//! per core in all, so these steps should take a small part of 50 µs.
//!
//! Run with `cargo bench --bench sentry_event` (add `-- --quick` for a
//! short run).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mecha_parsers::sentry::filter::{FilterOptions, Filters};
use mecha_parsers::sentry::normalize::{NormalizeContext, normalize};
use mecha_parsers::sentry::scrub::{ScrubOptions, scrub};
use serde_json::{Map, Value};

const EVENT: &str = include_str!("../parsers/tests/fixtures/sentry/python_wsgi.json");

fn event() -> Map<String, Value> {
    serde_json::from_str(EVENT).unwrap_or_default()
}

fn cx() -> NormalizeContext {
    NormalizeContext {
        received_ns: 1_796_114_735_000_000_000,
        sent_at_ns: Some(1_796_114_734_000_000_000),
        client_ip: Some(std::net::IpAddr::from([203, 0, 113, 7])),
        fallback_event_id: "0123456789abcdef0123456789abcdef".into(),
        ..NormalizeContext::default()
    }
}

fn bench(c: &mut Criterion) {
    let cx = cx();
    let scrub_opts = ScrubOptions::default();
    let filters = Filters::new(&FilterOptions {
        localhost: true,
        browser_extensions: true,
        error_messages: vec!["*ConnectionResetError*".into(), "*timed out*".into()],
    })
    .ok()
    .unwrap_or_default();
    let mut group = c.benchmark_group("sentry_event");
    group.throughput(Throughput::Elements(1));
    group.bench_function("filter", |b| {
        let ev = event();
        b.iter(|| black_box(filters.check(black_box(&ev))));
    });
    group.bench_function("normalize", |b| {
        b.iter_batched(
            event,
            |mut ev| black_box(normalize(&mut ev, &cx)),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("scrub", |b| {
        let mut normalized = event();
        normalize(&mut normalized, &cx);
        b.iter_batched(
            || normalized.clone(),
            |mut ev| black_box(scrub(&mut ev, &scrub_opts)),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("filter_normalize_scrub", |b| {
        b.iter_batched(
            event,
            |mut ev| {
                let dropped = filters.check(&ev);
                let n = normalize(&mut ev, &cx);
                black_box((dropped, n, scrub(&mut ev, &scrub_opts)))
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
