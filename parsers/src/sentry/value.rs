//! Small helpers over an event's JSON values shared by normalisation,
//! scrubbing and the filters: reading the two shapes Sentry allows for lists,
//! cutting strings on char boundaries, and the `errors` list Sentry shows as
//! "processing errors". Nothing here knows a rule of its own.

use std::net::IpAddr;

use serde_json::{Map, Value};

/// Longest string, in chars, that normalisation keeps and scrubbing writes:
/// Relay's `MaxChars::Message` (8192).
pub(crate) const MAX_STRING_CHARS: usize = 8192;

/// Longest tag value, in chars, that normalisation keeps by default and
/// scrubbing writes: Sentry's `MAX_TAG_VALUE_LENGTH` (200).
pub(crate) const MAX_TAG_VALUE_CHARS: usize = 200;

/// The most entries normalisation appends to an event's `errors`, so a
/// hostile event cannot make its own error list grow without bound.
pub(crate) const MAX_ERRORS: usize = 64;

/// The items of a Sentry list field, which SDKs send either as
/// `{"values": [...]}` or as a bare list.
pub(crate) fn values_of(v: &Value) -> Option<&Vec<Value>> {
    match v {
        Value::Array(items) => Some(items),
        Value::Object(o) => o.get("values").and_then(Value::as_array),
        _ => None,
    }
}

/// The `(key, value)` entries of a field that SDKs send either as an object
/// or as a list of `[key, value]` pairs (headers, cookies, tags, query
/// strings). Entries of other shapes are skipped.
pub(crate) fn pairs_of(v: &Value) -> Vec<(&str, &Value)> {
    match v {
        Value::Object(o) => o.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|item| match item.as_array().map(Vec::as_slice) {
                Some([Value::String(k), v]) => Some((k.as_str(), v)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The value of the header `name` (case-insensitive) in `request.headers`.
pub(crate) fn header<'a>(request: &'a Value, name: &str) -> Option<&'a str> {
    let headers = request.get("headers")?;
    pairs_of(headers)
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

/// Parses an IP address as SDKs write it (surrounding whitespace allowed).
pub(crate) fn parse_ip(text: &str) -> Option<IpAddr> {
    text.trim().parse().ok()
}

/// Cuts `text` to at most `max` chars, ending it in `...` when cut (as
/// Relay's trimming does), and tells whether it cut. The result never
/// exceeds `max` chars, so cutting twice changes nothing.
pub(crate) fn cap_chars(text: &mut String, max: usize) -> bool {
    // Fast path: a string of at most `max` bytes has at most `max` chars.
    if text.len() <= max {
        return false;
    }
    let Some((cut, _)) = text.char_indices().nth(max) else {
        return false;
    };
    let keep = max.saturating_sub(3);
    let end = text.char_indices().nth(keep).map_or(cut, |(i, _)| i);
    text.truncate(end);
    text.push_str(&"..."[..max.min(3)]);
    true
}

/// Sets `key` of `event` to `value`. A key that is there already is kept
/// rather than made again: normalisation writes back several fields of
/// every event.
pub(crate) fn set(event: &mut Map<String, Value>, key: &str, value: Value) {
    match event.get_mut(key) {
        Some(slot) => *slot = value,
        None => {
            event.insert(key.to_owned(), value);
        }
    }
}

/// Appends `entry` to the event's `errors` list (creating it, or replacing a
/// value that is not a list), unless an equal entry is already there or the
/// list holds [`MAX_ERRORS`] entries.
pub(crate) fn push_error(event: &mut Map<String, Value>, entry: Value) {
    let errors = event
        .entry("errors")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !errors.is_array() {
        *errors = Value::Array(Vec::new());
    }
    if let Value::Array(list) = errors
        && list.len() < MAX_ERRORS
        && !list.contains(&entry)
    {
        list.push(entry);
    }
}

/// Whether the event's `errors` already holds an entry of type `ty`.
pub(crate) fn has_error(event: &Map<String, Value>, ty: &str) -> bool {
    event
        .get("errors")
        .and_then(Value::as_array)
        .is_some_and(|list| {
            list.iter()
                .any(|e| e.get("type").and_then(Value::as_str) == Some(ty))
        })
}

/// Drops `v` without recursion: serde_json drops nested values recursively,
/// which a value nested deep enough (built in code; the parser stops at 128
/// levels) would turn into a stack overflow.
pub(crate) fn drop_flat(v: Value) {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(o) => stack.extend(o.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

/// Nesting depth of `v` (a scalar is 0), counted without recursion and
/// giving up past `limit`.
pub(crate) fn depth_within(v: &Value, limit: usize) -> Option<usize> {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        let d = d + 1;
        if d > limit {
            return None;
        }
        deepest = deepest.max(d);
        stack.extend(children.map(|c| (c, d)));
    }
    Some(deepest)
}

/// `v` as JSON text, or `None` when it is nested deeper than serde_json's
/// own parser allows (128): writing it would recurse that deep.
pub(crate) fn to_json_text(v: &Value) -> Option<String> {
    depth_within(v, 128)?;
    serde_json::to_string(v).ok()
}

/// A short name of a JSON value's type for error messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn cap_chars_cuts_on_char_boundaries_and_is_stable() {
        let mut s = "é".repeat(10);
        assert!(cap_chars(&mut s, 5));
        assert_eq!(s, "éé...");
        assert!(!cap_chars(&mut s, 5));
        let mut short = String::from("😀😀");
        assert!(!cap_chars(&mut short, 2));
        let mut tiny = String::from("abcdef");
        assert!(cap_chars(&mut tiny, 2));
        assert_eq!(tiny, "..");
    }

    #[test]
    fn values_of_reads_both_list_shapes() {
        assert_eq!(values_of(&json!([1])), Some(&vec![json!(1)]));
        assert_eq!(values_of(&json!({"values": [2]})), Some(&vec![json!(2)]));
        assert_eq!(values_of(&json!("x")), None);
    }

    #[test]
    fn pairs_of_reads_objects_and_pair_lists() {
        let list = json!([["A", "1"], ["B"], 3, ["C", 2]]);
        let pairs = pairs_of(&list);
        assert_eq!(pairs, vec![("A", &json!("1")), ("C", &json!(2))]);
        assert_eq!(
            header(&json!({"headers": {"host": "h"}}), "Host"),
            Some("h")
        );
    }

    #[test]
    fn push_error_deduplicates_and_is_bounded() {
        let mut event = Map::new();
        event.insert("errors".into(), json!("not a list"));
        for i in 0..MAX_ERRORS * 2 {
            push_error(&mut event, json!({"type": "x", "n": i}));
            push_error(&mut event, json!({"type": "x", "n": i}));
        }
        assert_eq!(event["errors"].as_array().map(Vec::len), Some(MAX_ERRORS));
        assert!(has_error(&event, "x"));
        assert!(!has_error(&event, "y"));
    }
}
