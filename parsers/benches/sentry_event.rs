//! Cost of what happens to a Sentry event before it leaves the node: the
//! inbound filters, normalisation and PII scrubbing of a typical exception
//! event (the Python SDK's, ~5 KB of JSON with a request, frame variables
//! and breadcrumbs; `parsers/tests/fixtures/sentry/python_wsgi.json`),
//! reported in events per second. The endpoint's target is 20,000 events/s
//! per core in all, so these steps should take a small part of 50 µs.
//!
//! Each iteration gets an event of its own, made just before it (as the
//! endpoint has one just parsed), and frees it after the clock stopped:
//! timing a batch of events made long before, and freeing them inside the
//! measurement, measured the allocator and the cache more than the steps
//! (the same code varied by 5x between runs). What freeing an event costs
//! is measured on its own, as `drop`.
//!
//! `parse` (the JSON text into an event) and `record` (the processed event
//! into the record it travels as) complete the steps; `ingest` is all of
//! them in the endpoint's order, from the gzipped body to the record.
//!
//! Run with `cargo bench -p mecha-parsers --bench sentry_event` (add
//! `-- --quick` for a short run).

use std::hint::black_box;

/// The allocator of the `mecha` binary, so that the figures are the
/// endpoint's: with glibc's, allocation and freeing weigh differently.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mecha_parsers::Resource;
use mecha_parsers::sentry::encoding::{ContentEncoding, decode};
use mecha_parsers::sentry::envelope::parse_json_object;
use mecha_parsers::sentry::filter::{FilterOptions, Filters};
use mecha_parsers::sentry::normalize::{NormalizeContext, normalize, user_key};
use mecha_parsers::sentry::record::event_record;
use mecha_parsers::sentry::scrub::{ScrubOptions, scrub};
use serde_json::{Map, Value};

const EVENT: &str = include_str!("../tests/fixtures/sentry/python_wsgi.json");

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
        b.iter_batched_ref(
            event,
            |ev| black_box(normalize(ev, &cx)),
            BatchSize::PerIteration,
        );
    });
    group.bench_function("scrub", |b| {
        let mut normalized = event();
        normalize(&mut normalized, &cx);
        b.iter_batched_ref(
            || normalized.clone(),
            |ev| black_box(scrub(ev, &scrub_opts)),
            BatchSize::PerIteration,
        );
    });
    group.bench_function("filter_normalize_scrub", |b| {
        b.iter_batched_ref(
            event,
            |ev| {
                let dropped = filters.check(ev);
                let n = normalize(ev, &cx);
                black_box((dropped, n, scrub(ev, &scrub_opts)))
            },
            BatchSize::PerIteration,
        );
    });
    // Decompression of the same event gzipped as SDKs send it, and as
    // baselines of this run the streaming decoder and the copy of the plain
    // body (what the endpoint does with an uncompressed one).
    let gzipped = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = std::io::Write::write_all(&mut e, EVENT.as_bytes());
        e.finish().unwrap_or_default()
    };
    group.bench_function("gunzip", |b| {
        b.iter(|| black_box(decode(ContentEncoding::Gzip, black_box(&gzipped), 1 << 20)));
    });
    // The streaming decoder `decode` used for every gzip body before small
    // ones were inflated in one call, as this run's baseline for `gunzip`.
    group.bench_function("gunzip_streaming_baseline", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(gzipped.len() * 4);
            let read = std::io::Read::read_to_end(
                &mut flate2::bufread::MultiGzDecoder::new(black_box(&gzipped[..])),
                &mut out,
            );
            black_box((read.ok(), out))
        });
    });
    group.bench_function("identity_baseline", |b| {
        b.iter(|| {
            black_box(decode(
                ContentEncoding::Identity,
                black_box(EVENT.as_bytes()),
                1 << 20,
            ))
        });
    });
    group.bench_function("parse", |b| {
        b.iter_batched(
            || (),
            |()| black_box(parse_json_object(black_box(EVENT.as_bytes()))),
            BatchSize::PerIteration,
        );
    });
    let resource = Resource::default();
    group.bench_function("record", |b| {
        let mut processed = event();
        let n = normalize(&mut processed, &cx);
        scrub(&mut processed, &scrub_opts);
        b.iter(|| black_box(event_record(&processed, &n, 1, 0, &resource)));
    });
    group.bench_function("ingest", |b| {
        b.iter_batched(
            || (),
            |()| {
                let body = decode(ContentEncoding::Gzip, &gzipped, 1 << 20).ok()?;
                let mut ev = parse_json_object(&body).ok()?;
                let mut n = normalize(&mut ev, &cx);
                if filters.check(&ev).is_some() {
                    return None;
                }
                scrub(&mut ev, &scrub_opts);
                n.user_key = user_key(&ev);
                Some(event_record(&ev, &n, 1, 0, &resource))
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("drop", |b| {
        let mut processed = event();
        normalize(&mut processed, &cx);
        scrub(&mut processed, &scrub_opts);
        b.iter_batched(|| processed.clone(), drop, BatchSize::PerIteration);
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
