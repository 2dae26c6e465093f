//! Fuzzes the CRI line parser, format detection and partial-line merging.
//!
//! The fuzz targets of `mecha-parsers` live in this directory, one per parser
//! of untrusted input. They need nightly Rust and cargo-fuzz:
//!
//! ```sh
//! cargo install cargo-fuzz
//! cd fuzz
//! cargo +nightly fuzz run cri -- -max_total_time=300   # or any target:
//! cargo +nightly fuzz list   # cri docker body_json body_logfmt body_syslog body_web multiline kubepath otlp_decode
//! ```
//!
//! A crash leaves its input in `fuzz/artifacts/<target>/`; replay it with
//! `cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>` and turn it
//! into a unit test beside the parser.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::container::{ContainerFormat, PartialMerger, detect, parse_cri, parse_line};

fuzz_target!(|data: &[u8]| {
    let _ = detect(data);
    let mut merger = PartialMerger::new(1024);
    for line in data.split(|&b| b == b'\n') {
        if let Ok(parsed) = parse_cri(line)
            && let Some(merged) = merger.push(parsed)
        {
            assert!(merged.message.len() <= 1024);
        }
        let _ = parse_line(ContainerFormat::Plain, line);
    }
    for merged in merger.flush_all() {
        assert!(merged.message.len() <= 1024);
    }
    assert!(!merger.is_pending());
});
