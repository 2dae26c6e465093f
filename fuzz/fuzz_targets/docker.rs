//! Fuzzes the docker json-file line parser (fast scanner and serde fallback)
//! and partial-line merging. See `cri.rs` for how to run.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::container::{PartialMerger, parse_docker};

fuzz_target!(|data: &[u8]| {
    let mut merger = PartialMerger::new(4096);
    for line in data.split(|&b| b == b'\n') {
        if let Ok(parsed) = parse_docker(line) {
            // The unescaped message is never longer than the line.
            assert!(parsed.message.len() <= line.len());
            let _ = merger.push(parsed);
        }
    }
    let _ = merger.flush_all();
});
