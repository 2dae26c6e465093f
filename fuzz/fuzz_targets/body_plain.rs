//! Fuzzes the time and level sniffing of plain lines (`body/plain.rs`), which
//! `auto` runs on every line it finds no structure in. See `cri.rs` for how to
//! run.
//!
//! The sniffer is crate-private, so its source (and that of the time readers
//! it uses) is compiled into this target as it stands in the parsers crate.
//! Checked: it looks only at the first few words of a line, a time is read
//! only from a token starting with a year, and `auto` reports exactly what it
//! found on a line it keeps raw.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::body::{BodyFormat, parse_body};
// `plain.rs` refers to these as `crate::Severity` and `crate::time`.
use mecha_parsers::Severity;

#[allow(dead_code)]
#[path = "../../parsers/src/time.rs"]
mod time;

#[allow(dead_code)]
#[path = "../../parsers/src/body/plain.rs"]
mod plain;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (ts, severity): (Option<i64>, Option<Severity>) = plain::sniff(&text);

    // A date, its clock, then at most three words for the level.
    let words: Vec<&str> = text.split_ascii_whitespace().take(5).collect();
    assert_eq!(plain::sniff(&words.join(" ")), (ts, severity));

    if ts.is_some() {
        let first = words.first().copied().unwrap_or_default();
        let first = first.strip_prefix('[').unwrap_or(first);
        assert!(first.bytes().take(4).filter(u8::is_ascii_digit).count() == 4);
    }

    if let Ok(auto) = parse_body(BodyFormat::Auto, &text)
        && auto.fields.is_empty()
        && auto.message == text
    {
        assert_eq!((auto.timestamp_ns, auto.severity), (ts, severity));
    }
});
