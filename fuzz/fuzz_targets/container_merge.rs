//! Fuzzes the merging of partial container lines: a whole container log file
//! (CRI `P`/`F` lines, docker lines with and without their trailing newline,
//! plain lines, mixed at will) goes through one `PartialMerger`. See `cri.rs`
//! for how to run.
//!
//! The first two bytes are the merger's `max_bytes`. Checked against a model
//! that keeps every piece: each final piece emits exactly one message, which
//! is the pieces of its stream concatenated (cut to `max_bytes`, never by more
//! than a UTF-8 sequence, when `truncated`), stamped with the first piece's
//! time and counting every piece; `flush_all` emits what is left, oldest
//! first. A message that is valid UTF-8 stays valid when cut, however the
//! runtime split it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::container::{
    ContainerFormat, ContainerLine, Merged, PartialMerger, Stream, parse_docker, parse_line,
};

/// What the model remembers of a message still waiting for its final piece.
struct Pending {
    timestamp_ns: i64,
    bytes: Vec<u8>,
    parts: usize,
    started: usize,
}

fuzz_target!(|data: &[u8]| {
    let Some((head, file)) = data.split_at_checked(2) else {
        return;
    };
    let max_bytes = usize::from(u16::from_le_bytes([head[0], head[1]]) % 4096);
    let mut merger = PartialMerger::new(max_bytes);
    let mut model: [Option<Pending>; 3] = [None, None, None];
    for (n, raw) in file.split(|&b| b == b'\n').enumerate() {
        let Some(line) = parse(raw) else {
            continue;
        };
        let index = slot(line.stream);
        let pending = model[index].get_or_insert_with(|| Pending {
            timestamp_ns: line.timestamp_ns,
            bytes: Vec::new(),
            parts: 0,
            started: n,
        });
        pending.bytes.extend_from_slice(&line.message);
        pending.parts += 1;
        let stream = line.stream;
        let partial = line.partial;
        let merged = merger.push(line);
        if partial {
            assert_eq!(merged, None);
        } else {
            let expected = model[index].take();
            match (merged, expected) {
                (Some(merged), Some(expected)) => check(&merged, stream, &expected, max_bytes),
                (merged, _) => panic!("a final piece gave {merged:?}"),
            }
        }
    }
    // What is left comes out oldest first.
    let mut left: Vec<(usize, Stream, Pending)> = model
        .into_iter()
        .zip([Stream::Stdout, Stream::Stderr, Stream::Unknown])
        .filter_map(|(p, s)| p.map(|p| (p.started, s, p)))
        .collect();
    left.sort_by_key(|(started, _, _)| *started);
    assert_eq!(merger.is_pending(), !left.is_empty());
    let flushed = merger.flush_all();
    assert_eq!(flushed.len(), left.len());
    for (merged, (_, stream, expected)) in flushed.iter().zip(&left) {
        check(merged, *stream, expected, max_bytes);
    }
    assert!(!merger.is_pending());
    assert_eq!(merger.flush(), None);
});

/// One line of a mixed file: docker if it parses as docker, else CRI if it
/// parses as CRI, else plain.
fn parse(raw: &[u8]) -> Option<ContainerLine<'_>> {
    if let Ok(line) = parse_docker(raw) {
        return Some(line);
    }
    [ContainerFormat::Cri, ContainerFormat::Plain]
        .into_iter()
        .find_map(|f| parse_line(f, raw).ok())
}

fn slot(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
        Stream::Unknown => 2,
    }
}

fn check(merged: &Merged, stream: Stream, expected: &Pending, max_bytes: usize) {
    assert_eq!(merged.stream, stream);
    assert_eq!(merged.timestamp_ns, expected.timestamp_ns);
    assert_eq!(merged.parts, expected.parts);
    assert!(merged.message.len() <= max_bytes);
    assert!(expected.bytes.starts_with(&merged.message));
    if merged.truncated {
        assert!(expected.bytes.len() > max_bytes);
        // A cut backs up over at most one UTF-8 sequence (three bytes).
        assert!(merged.message.len() + 3 >= max_bytes);
    } else {
        assert_eq!(merged.message, expected.bytes);
    }
    // Runtimes split long lines at a byte count, inside UTF-8 sequences too:
    // the text is the pieces together, and a cut must not make it invalid.
    if std::str::from_utf8(&expected.bytes).is_ok() {
        assert!(std::str::from_utf8(&merged.message).is_ok());
    }
}
