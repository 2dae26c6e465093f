//! Fuzzes `auto`, the per-line sniffing that routes a body to a parser or
//! keeps it raw. See `cri.rs` for how to run.
//!
//! Checked: `auto` never fails, and its answer is either exactly what one of
//! the strict parsers says of the line or the raw line (with at most a time
//! and a level read from its start) — sniffing may choose, never invent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::body::{BodyFormat, parse_body};

const STRUCTURED: [BodyFormat; 5] = [
    BodyFormat::Json,
    BodyFormat::Syslog,
    BodyFormat::ApacheError,
    BodyFormat::Nginx,
    BodyFormat::Logfmt,
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let auto = match parse_body(BodyFormat::Auto, &text) {
        Ok(body) => body,
        Err(e) => panic!("auto failed: {e}"),
    };
    assert!(auto.message.len() <= text.len());
    let raw = auto.message == text && auto.fields.is_empty();
    let structured = STRUCTURED
        .iter()
        .any(|f| parse_body(*f, &text).is_ok_and(|b| b == auto));
    assert!(raw || structured, "{auto:?}");
});
