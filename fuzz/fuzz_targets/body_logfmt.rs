//! Fuzzes logfmt log bodies. See `cri.rs` for how to run.
//!
//! Checked: unescaping never makes the message longer than the line, there
//! are no more fields than words, and `auto` reads a line it takes for logfmt
//! exactly as the strict parser does.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::body::{BodyFormat, parse_body};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let strict = parse_body(BodyFormat::Logfmt, &text);
    let auto = parse_body(BodyFormat::Auto, &text);
    let Ok(auto) = auto else {
        panic!("auto failed");
    };
    assert!(auto.message.len() <= text.len());
    if let Ok(body) = strict {
        assert!(body.message.len() <= text.len());
        // Every field is a word of the line (quoted values may hold spaces,
        // so words are an upper bound, not a count).
        assert!(body.fields.len() <= text.split_whitespace().count());
        // `auto` either sniffed it as logfmt (same result) or chose another
        // reading (access log, raw).
        if !auto.fields.is_empty() && auto.fields.keys().eq(body.fields.keys()) {
            assert_eq!(auto, body);
        }
    }
});
