//! Fuzzes the decoding of Sentry request bodies: every `Content-Encoding`
//! and the base64/zlib form of old `/store/` bodies, and CSP reports. See
//! `cri.rs` for how to run.
//!
//! The first byte picks the encoding. Checked properties: no panic, and no
//! output past the limit, whatever the input claims to expand to.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::sentry::encoding::{ContentEncoding, decode, decode_store_body};
use mecha_parsers::sentry::security::parse_reports;

/// Small, so that bombs in the corpus hit it quickly.
const LIMIT: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let encoding = match pick % 5 {
        0 => ContentEncoding::Identity,
        1 => ContentEncoding::Gzip,
        2 => ContentEncoding::Deflate,
        3 => ContentEncoding::Brotli,
        _ => ContentEncoding::Zstd,
    };
    if let Ok(out) = decode(encoding, body, LIMIT) {
        assert!(out.len() <= LIMIT);
        let _ = parse_reports(&out);
    }
    if let Ok(out) = decode_store_body(body, LIMIT) {
        assert!(out.len() <= LIMIT);
    }
});
