//! Fuzzes the multiline joiner with each built-in rule and with custom rules.
//! See `cri.rs` for how to run.
//!
//! Input: one byte picks the rule, one `max_lines`, two `max_bytes`; the rest
//! are the lines. Custom rules come from a fixed list of the patterns users
//! write: the regex comes from configuration, not from the log, and compiling
//! one per input would spend the run in `regex` (fuzzed upstream). Checked:
//! records partition the lines in order (first and last metadata, counts),
//! limits hold, and a record that is not `truncated` is its lines joined with
//! `\n`, trailing blank lines removed.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mecha_parsers::multiline::{Joined, Joiner, MultilineRule};

/// Start-of-record patterns as configured in the wild.
const PATTERNS: [&str; 4] = [
    r"^\d{4}-\d{2}-\d{2}",
    r"^\[",
    r"^(TRACE|DEBUG|INFO|WARN|ERROR|FATAL)\b",
    r"^\S",
];

fn custom(i: usize) -> Option<MultilineRule> {
    static RULES: OnceLock<Vec<Option<MultilineRule>>> = OnceLock::new();
    let rules = RULES.get_or_init(|| {
        PATTERNS
            .iter()
            .map(|p| MultilineRule::custom(p).ok())
            .collect()
    });
    rules.get(i)?.clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&[rule, max_lines, b0, b1], rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let max_lines = usize::from(max_lines % 16);
    let max_bytes = usize::from(u16::from_le_bytes([b0, b1]) % 2048);
    let text = String::from_utf8_lossy(rest);
    let lines: Vec<&str> = text.split('\n').collect();
    let rule = match rule % 9 {
        0 => MultilineRule::Java,
        1 => MultilineRule::Python,
        2 => MultilineRule::Go,
        3 => MultilineRule::Node,
        4 => MultilineRule::Builtin,
        n => match custom(usize::from(n - 5)) {
            Some(rule) => rule,
            None => panic!("a pattern of the list does not compile"),
        },
    };

    let mut joiner = Joiner::new(rule, max_bytes, max_lines);
    let mut next = 0;
    for (n, line) in lines.iter().enumerate() {
        if let Some(record) = joiner.push(line.to_string(), n) {
            check(&record, &lines, &mut next, max_bytes, max_lines);
        }
        assert!(joiner.is_pending());
    }
    if let Some(record) = joiner.flush() {
        check(&record, &lines, &mut next, max_bytes, max_lines);
    }
    assert!(!joiner.is_pending());
    assert_eq!(next, lines.len());
});

fn check(
    record: &Joined<usize>,
    lines: &[&str],
    next: &mut usize,
    max_bytes: usize,
    max_lines: usize,
) {
    assert_eq!(record.first, *next);
    assert!(record.lines >= 1);
    assert_eq!(record.last, record.first + record.lines - 1);
    *next = record.last + 1;
    assert!(record.text.len() <= max_bytes);
    let kept = record.text.split('\n').count();
    assert!(kept <= record.lines && kept <= max_lines.max(1));
    if !record.truncated {
        let mut whole = lines[record.first..=record.last].join("\n");
        while let Some(i) = whole.rfind('\n') {
            if !whole[i + 1..].trim().is_empty() {
                break;
            }
            whole.truncate(i);
        }
        assert_eq!(record.text, whole);
    }
}
