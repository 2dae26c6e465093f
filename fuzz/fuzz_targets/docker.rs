//! Fuzzes the docker json-file line parser: its hand-written fast scanner and
//! the serde_json fallback. See `cri.rs` for how to run.
//!
//! Checked here, besides "no panic": on every line that is valid JSON the
//! parser's answer is the one a plain serde_json reading gives (so the fast
//! path never changes a result), the unescaped message is never longer than
//! the line, and `detect` agrees.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::container::{ContainerFormat, Stream, detect, parse_cri, parse_docker};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        check_line(line);
    }
});

fn check_line(line: &[u8]) {
    let parsed = parse_docker(line);
    if let Ok(parsed) = &parsed {
        assert!(parsed.message.len() <= line.len());
        if line.first() == Some(&b'{') {
            assert_eq!(detect(line), ContainerFormat::Docker);
        }
    }
    match reference(line) {
        Reference::NotJson => {}
        Reference::Rejected => assert!(parsed.is_err(), "accepted {parsed:?}"),
        Reference::Accepted {
            timestamp_ns,
            stream,
            partial,
            message,
        } => {
            let parsed = match parsed {
                Ok(parsed) => parsed,
                Err(e) => panic!("rejected valid line: {e}"),
            };
            assert_eq!(parsed.timestamp_ns, timestamp_ns);
            assert_eq!(parsed.stream, stream);
            assert_eq!(parsed.partial, partial);
            assert_eq!(&*parsed.message, &message[..]);
        }
    }
}

enum Reference {
    /// serde_json rejects the line: the fast path may be more lenient.
    NotJson,
    /// Valid JSON, but not a docker line.
    Rejected,
    Accepted {
        timestamp_ns: i64,
        stream: Stream,
        partial: bool,
        message: Vec<u8>,
    },
}

/// What the format says a line means, read with serde_json alone.
fn reference(line: &[u8]) -> Reference {
    let Ok(value) = serde_json::from_slice::<Value>(line) else {
        return Reference::NotJson;
    };
    let Value::Object(map) = value else {
        return Reference::Rejected;
    };
    let field = |key: &str| match map.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(()),
    };
    let (Ok(Some(log)), Ok(stream), Ok(Some(time))) =
        (field("log"), field("stream"), field("time"))
    else {
        return Reference::Rejected;
    };
    // The strict RFC 3339 reader is the CRI one; a CRI line around the
    // time borrows it. Strict timestamps never contain a space.
    if time.contains(' ') {
        return Reference::Rejected;
    }
    let cri_line = format!("{time} stdout F");
    let Ok(cri) = parse_cri(cri_line.as_bytes()) else {
        return Reference::Rejected;
    };
    let (message, partial) = match log.strip_suffix('\n') {
        Some(m) => (m.strip_suffix('\r').unwrap_or(m), false),
        None => (log, true),
    };
    Reference::Accepted {
        timestamp_ns: cri.timestamp_ns,
        stream: match stream {
            Some("stdout") => Stream::Stdout,
            Some("stderr") => Stream::Stderr,
            _ => Stream::Unknown,
        },
        partial,
        message: message.as_bytes().to_vec(),
    }
}
