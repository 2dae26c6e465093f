//! Fuzzes JSON log bodies. See `cri.rs` for how to run.
//!
//! Checked against serde_json reading the same text: an accepted body keeps
//! every field but the one lifted out as the message, and a valid JSON object
//! is rejected only for nesting deeper than `MAX_DEPTH`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::body::{BodyFormat, parse_body};
use serde_json::{Map, Value};

/// Field names `parse_json` may lift out as the message.
const MESSAGE_KEYS: [&str; 4] = ["msg", "message", "log", "MESSAGE"];
/// `mecha_parsers::body::json::MAX_DEPTH` (the module is private).
const MAX_DEPTH: usize = 64;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = parse_body(BodyFormat::Json, &text);
    let reference = serde_json::from_str::<Map<String, Value>>(text.trim());
    match (parsed, reference) {
        (Ok(body), Ok(mut all)) => {
            assert!(body.message.len() <= text.len());
            for (key, value) in &body.fields {
                assert_eq!(all.remove(key).as_ref(), Some(value), "{key}");
            }
            match all.len() {
                0 => assert_eq!(body.message, text),
                1 => {
                    let (key, value) = all.iter().next().unwrap_or_else(|| unreachable!());
                    assert!(MESSAGE_KEYS.contains(&key.as_str()), "{key}");
                    assert_eq!(value, &Value::String(body.message));
                }
                n => panic!("{n} fields lost"),
            }
        }
        (Ok(body), Err(e)) => panic!("accepted what serde_json rejects ({e}): {body:?}"),
        (Err(e), Ok(all)) => {
            let deepest = all.values().map(depth).max().unwrap_or(0) + 1;
            assert!(
                deepest > MAX_DEPTH,
                "rejected valid JSON of depth {deepest}: {e}"
            );
        }
        (Err(_), Err(_)) => {}
    }
});

/// Nesting depth of objects and arrays (a scalar is 0).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}
