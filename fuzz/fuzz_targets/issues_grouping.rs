//! Fuzzes what the aggregator does with the event of every Sentry record it
//! receives: arbitrary bytes as the `sentry.event` JSON text, read and
//! grouped exactly as the writer does, plus message parameterisation of the
//! same bytes as text. See `cri.rs` for how to run.
//!
//! Checked on whatever groups: the hash is 32 lowercase hex digits, and
//! grouping the same event twice gives the same group.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_aggregator::issues::grouping::normalize_for_grouping;
use mecha_aggregator::issues::route::group_record;
use mecha_parsers::LogRecord;
use mecha_parsers::sentry::attr;
use serde_json::Value;

fn record(text: &str) -> LogRecord {
    let mut r = LogRecord::new("", 1);
    for (k, v) in [
        (attr::EVENT_ID, "9f1c2a7e3b8d4c5fa6e7d8c9b0a1f2e3"),
        (attr::PROJECT_ID, "1"),
        (attr::EVENT, text),
    ] {
        r.attributes.insert(k.to_string(), Value::from(v));
    }
    r
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = normalize_for_grouping(&text);
    let Some(g) = group_record(record(&text)) else {
        return;
    };
    assert_eq!(g.hash.len(), 32);
    assert!(
        g.hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(group_record(record(&text)), Some(g));
});
