//! Fuzzes the multiline joiner: the first byte picks the rule and the limits,
//! the rest is split into lines. Checks that limits hold and that every line
//! is accounted for. See `cri.rs` for how to run.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::multiline::{Joiner, MultilineRule};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let rule = match selector % 6 {
        0 => MultilineRule::Java,
        1 => MultilineRule::Python,
        2 => MultilineRule::Go,
        3 => MultilineRule::Node,
        4 => MultilineRule::Builtin,
        _ => match MultilineRule::custom(r"^\S") {
            Ok(rule) => rule,
            Err(_) => return,
        },
    };
    let max_bytes = usize::from(selector >> 3) * 16;
    let max_lines = usize::from(selector & 7);
    let text = String::from_utf8_lossy(rest);
    let mut joiner = Joiner::new(rule, max_bytes, max_lines);
    let mut consumed = 0;
    let mut total = 0;
    for (n, line) in text.split('\n').enumerate() {
        total += 1;
        if let Some(record) = joiner.push(line.to_string(), n) {
            assert!(record.text.len() <= max_bytes);
            consumed += record.lines;
        }
    }
    if let Some(record) = joiner.flush() {
        assert!(record.text.len() <= max_bytes);
        consumed += record.lines;
    }
    assert_eq!(consumed, total);
});
