//! Fuzzes the nginx/apache access log and apache error log parsers. See
//! `cri.rs` for how to run.
//!
//! Checked: an access log line keeps the whole line as its message and a
//! status-derived severity; an error log message is the tail of the line.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::Severity;
use mecha_parsers::body::{BodyFormat, parse_body};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(body) = parse_body(BodyFormat::Nginx, &text) {
        assert_eq!(body.message, text);
        assert!(body.timestamp_ns.is_some());
        let status = body.fields.get("status").and_then(|s| s.as_u64());
        let want = match status {
            Some(500..=599) => Severity::Error,
            Some(400..=499) => Severity::Warn,
            Some(100..=399) => Severity::Info,
            other => panic!("status {other:?}"),
        };
        assert_eq!(body.severity, Some(want));
        assert!(body.fields.contains_key("client_ip"));
    }
    if let Ok(body) = parse_body(BodyFormat::ApacheError, &text) {
        assert!(text.ends_with(body.message.as_str()));
        assert!(body.timestamp_ns.is_some() && body.severity.is_some());
    }
    assert!(parse_body(BodyFormat::Auto, &text).is_ok());
});
