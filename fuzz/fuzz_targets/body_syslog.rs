//! Fuzzes syslog bodies, RFC 3164 and RFC 5424 (structured data included).
//! See `cri.rs` for how to run.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::body::{BodyFormat, parse_body};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for format in [
        BodyFormat::Syslog,
        BodyFormat::Syslog3164,
        BodyFormat::Syslog5424,
    ] {
        let _ = parse_body(format, &text);
    }
    assert!(parse_body(BodyFormat::Auto, &text).is_ok());
});
