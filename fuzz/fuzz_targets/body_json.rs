//! Fuzzes JSON log bodies and the auto-detection that routes to them. See
//! `cri.rs` for how to run.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::body::{BodyFormat, parse_body};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_body(BodyFormat::Json, &text);
    assert!(parse_body(BodyFormat::Auto, &text).is_ok());
});
