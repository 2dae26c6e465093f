//! Fuzzes syslog bodies, RFC 3164 and RFC 5424 (structured data included).
//! See `cri.rs` for how to run.
//!
//! Checked: `syslog` gives the answer of one of the two RFC parsers, every
//! accepted line has a severity and a facility, and the message is a part of
//! the line.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::body::{BodyFormat, parse_body};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let either = parse_body(BodyFormat::Syslog, &text);
    let rfc5424 = parse_body(BodyFormat::Syslog5424, &text);
    let rfc3164 = parse_body(BodyFormat::Syslog3164, &text);
    for body in [&either, &rfc5424, &rfc3164].into_iter().flatten() {
        assert!(body.severity.is_some());
        assert!(body.fields.contains_key("facility"));
        assert!(text.contains(body.message.as_str()));
    }
    if let Ok(body) = &either {
        assert!(rfc5424.as_ref() == Ok(body) || rfc3164.as_ref() == Ok(body));
    }
    assert!(parse_body(BodyFormat::Auto, &text).is_ok());
});
