//! Sentry envelopes: a JSON header line, then items, each a JSON header line
//! and a payload of `length` bytes or up to the next newline.
//!
//! The framing follows Sentry's envelope format: headers are single-line
//! JSON objects ended by `\n` (or the end of input); an item's payload is
//! exactly `length` bytes when the header says so (and may hold newlines),
//! else runs to the next `\n` (the JavaScript SDK omits `length` for JSON
//! items); the newline after a payload is optional at the end; blank lines
//! between items are skipped; an empty header `{}` is valid. Headers are kept
//! as JSON objects so unknown fields survive, and unknown item types are
//! kept (as [`ItemType::Other`]) for the caller to count.
//!
//! Parsing checks framing only. A framing error anywhere (a header that is
//! not a JSON object, a `length` past the end, a payload not followed by a
//! newline) rejects the whole envelope, as Sentry does: after a wrong length
//! nothing that follows can be trusted. Payloads are borrowed, not copied or
//! parsed; [`parse_json_object`] reads the JSON ones.

use serde_json::{Map, Value};

use crate::ParseError;
use crate::util::preview;

const FORMAT: &str = "sentry_envelope";

/// The kinds of item the endpoint knows. Names as in Sentry's protocol.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ItemType {
    /// An error or message event (JSON).
    Event,
    /// A transaction (JSON).
    Transaction,
    /// A file attached to an event.
    Attachment,
    /// One session update (JSON).
    Session,
    /// Aggregated sessions (JSON).
    Sessions,
    /// The SDK's report of what it dropped (JSON).
    ClientReport,
    /// A cron monitor check-in (JSON).
    CheckIn,
    /// Structured log records (JSON).
    Log,
    /// Standalone spans (JSON).
    Span,
    /// Any other type, by its name (`profile`, `replay_event`, ...).
    Other(String),
}

impl ItemType {
    /// The type of an item header's `type`.
    pub fn from_name(name: &str) -> ItemType {
        match name {
            "event" => ItemType::Event,
            "transaction" => ItemType::Transaction,
            "attachment" => ItemType::Attachment,
            "session" => ItemType::Session,
            "sessions" => ItemType::Sessions,
            "client_report" => ItemType::ClientReport,
            "check_in" => ItemType::CheckIn,
            "log" => ItemType::Log,
            "span" => ItemType::Span,
            other => ItemType::Other(other.to_string()),
        }
    }

    /// The protocol name (`event`, ..., or the unknown type's own name).
    pub fn name(&self) -> &str {
        match self {
            ItemType::Other(name) => name,
            known => known.label(),
        }
    }

    /// A name of bounded cardinality for metric labels: the protocol name of
    /// a known type, `other` for the rest.
    pub fn label(&self) -> &'static str {
        match self {
            ItemType::Event => "event",
            ItemType::Transaction => "transaction",
            ItemType::Attachment => "attachment",
            ItemType::Session => "session",
            ItemType::Sessions => "sessions",
            ItemType::ClientReport => "client_report",
            ItemType::CheckIn => "check_in",
            ItemType::Log => "log",
            ItemType::Span => "span",
            ItemType::Other(_) => "other",
        }
    }

    /// Whether the payload must be a JSON object.
    pub fn is_json(&self) -> bool {
        !matches!(self, ItemType::Attachment | ItemType::Other(_))
    }
}

/// One item: its header and its payload, borrowed from the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Item<'a> {
    /// The item's type, from the header's `type`.
    pub kind: ItemType,
    /// The whole item header, unknown fields included.
    pub header: Map<String, Value>,
    /// The payload bytes.
    pub payload: &'a [u8],
}

/// A parsed envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<'a> {
    /// The envelope header (`event_id`, `dsn`, `sent_at`, `sdk`, ...), unknown
    /// fields included; empty for `{}`.
    pub header: Map<String, Value>,
    /// The items, in order.
    pub items: Vec<Item<'a>>,
}

impl Envelope<'_> {
    /// The header's `dsn`, if it is a string.
    pub fn dsn(&self) -> Option<&str> {
        self.header.get("dsn").and_then(Value::as_str)
    }

    /// The header's `sent_at`, if it is a string.
    pub fn sent_at(&self) -> Option<&str> {
        self.header.get("sent_at").and_then(Value::as_str)
    }

    /// The header's `event_id`, if it is a string.
    pub fn event_id(&self) -> Option<&str> {
        self.header.get("event_id").and_then(Value::as_str)
    }
}

/// Parses an envelope of at most `max_items` items (a bound on the memory
/// the headers take, since an item can be as short as `{"type":"x"}`).
pub fn parse(input: &[u8], max_items: usize) -> Result<Envelope<'_>, ParseError> {
    let (header, mut pos) = match read_header(input, 0)? {
        Some(h) => h,
        None => {
            return Err(ParseError::malformed(
                FORMAT,
                "empty envelope: expected a header line",
            ));
        }
    };
    let mut items = Vec::new();
    while let Some((item_header, after_header)) = read_header(input, pos)? {
        let n = items.len() + 1;
        if n > max_items {
            return Err(ParseError::malformed(
                FORMAT,
                format!("more than {max_items} items"),
            ));
        }
        let kind = match item_header.get("type") {
            Some(Value::String(t)) => ItemType::from_name(t),
            Some(other) => {
                return Err(ParseError::malformed(
                    FORMAT,
                    format!("item {n}: expected \"type\" to be a string, found {other}"),
                ));
            }
            None => {
                return Err(ParseError::malformed(
                    FORMAT,
                    format!("item {n}: the header has no \"type\""),
                ));
            }
        };
        let rest = input.get(after_header..).unwrap_or_default();
        let (payload, next) = match item_header.get("length") {
            None | Some(Value::Null) => {
                let len = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
                (&rest[..len], after_header + len)
            }
            Some(Value::Number(l)) => {
                let len = l
                    .as_u64()
                    .and_then(|l| usize::try_from(l).ok())
                    .ok_or_else(|| {
                        ParseError::malformed(
                            FORMAT,
                            format!(
                                "item {n} ({}): expected a length of 0 or more bytes, found {l}",
                                kind.name()
                            ),
                        )
                    })?;
                let payload = rest.get(..len).ok_or_else(|| {
                    ParseError::malformed(
                        FORMAT,
                        format!(
                            "item {n} ({}): length {len} exceeds the {} bytes left: truncated envelope or wrong length",
                            kind.name(),
                            rest.len()
                        ),
                    )
                })?;
                (payload, after_header + len)
            }
            Some(other) => {
                return Err(ParseError::malformed(
                    FORMAT,
                    format!(
                        "item {n} ({}): expected \"length\" to be a number, found {other}",
                        kind.name()
                    ),
                ));
            }
        };
        pos = match input.get(next) {
            None => next,
            Some(b'\n') => next + 1,
            Some(_) => {
                return Err(ParseError::malformed(
                    FORMAT,
                    format!(
                        "item {n} ({}): expected a newline after the payload of {} bytes, found {}: wrong length",
                        kind.name(),
                        payload.len(),
                        preview(input.get(next..).unwrap_or_default())
                    ),
                ));
            }
        };
        items.push(Item {
            kind,
            header: item_header,
            payload,
        });
    }
    Ok(Envelope { header, items })
}

/// A header line read, as a JSON object.
type Header = Map<String, Value>;

/// Reads a header line at `pos`: a JSON object followed by `\n` or the end.
/// Leading whitespace (blank lines) is skipped; `None` at the end of input.
fn read_header(input: &[u8], pos: usize) -> Result<Option<(Header, usize)>, ParseError> {
    let rest = input.get(pos..).unwrap_or_default();
    let skip = rest
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(rest.len());
    let rest = &rest[skip..];
    if rest.is_empty() {
        return Ok(None);
    }
    // A header is one line: parse only up to the newline, so an unterminated
    // object cannot swallow the payload that follows.
    let line_len = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
    let line = &rest[..line_len];
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        ParseError::malformed(
            FORMAT,
            format!(
                "invalid header at byte {}: {e}: {}",
                pos + skip,
                preview(line)
            ),
        )
    })?;
    let Value::Object(map) = value else {
        return Err(ParseError::malformed(
            FORMAT,
            format!(
                "expected a header object at byte {}, found {}",
                pos + skip,
                preview(line)
            ),
        ));
    };
    let end = pos + skip + line_len;
    let next = if end < input.len() { end + 1 } else { end };
    Ok(Some((map, next)))
}

/// Parses a payload that must be one JSON object (an event, a transaction).
pub fn parse_json_object(payload: &[u8]) -> Result<Map<String, Value>, ParseError> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ParseError::malformed(
            "sentry_event",
            format!("expected a JSON object, found {}", json_kind(&other)),
        )),
        Err(e) => Err(ParseError::malformed(
            "sentry_event",
            format!("invalid JSON: {e}"),
        )),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Writes an envelope in the canonical form: every item with its `length`
/// (the header's own `length` is replaced), each line ended by `\n`.
pub fn serialize(header: &Map<String, Value>, items: &[(Map<String, Value>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    write_json_line(&mut out, header);
    for (h, payload) in items {
        let mut h = h.clone();
        h.insert("length".into(), Value::from(payload.len()));
        write_json_line(&mut out, &h);
        out.extend_from_slice(payload);
        out.push(b'\n');
    }
    out
}

fn write_json_line(out: &mut Vec<u8>, map: &Map<String, Value>) {
    // Serialising a map of JSON values cannot fail; an empty object is the
    // harmless fallback.
    if serde_json::to_writer(&mut *out, map).is_err() {
        out.extend_from_slice(b"{}");
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "9ec79c33ec9942ab8353589fcb2e04dc";

    fn ok(input: &str) -> Envelope<'_> {
        match parse(input.as_bytes(), 100) {
            Ok(e) => e,
            Err(e) => panic!("{input:?}: {e}"),
        }
    }

    fn err(input: &str) -> String {
        match parse(input.as_bytes(), 100) {
            Ok(e) => panic!("{input:?} parsed: {e:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn payloads<'a>(e: &'a Envelope<'a>) -> Vec<(&'a str, &'a [u8])> {
        e.items.iter().map(|i| (i.kind.name(), i.payload)).collect()
    }

    #[test]
    fn items_with_length_may_hold_newlines() {
        let text = format!(
            "{{\"event_id\":\"{ID}\",\"dsn\":\"https://k@h/42\"}}\n{{\"type\":\"attachment\",\"length\":7,\"filename\":\"a.log\"}}\nab\r\ncd\n\n{{\"type\":\"event\",\"length\":41}}\n{{\"message\":\"hello world\",\"level\":\"error\"}}\n"
        );
        let e = ok(&text);
        assert_eq!(e.event_id(), Some(ID));
        assert_eq!(e.dsn(), Some("https://k@h/42"));
        assert_eq!(
            payloads(&e),
            vec![
                ("attachment", &b"ab\r\ncd\n"[..]),
                (
                    "event",
                    &br#"{"message":"hello world","level":"error"}"#[..]
                )
            ]
        );
        assert_eq!(
            e.items[0].header.get("filename"),
            Some(&Value::from("a.log"))
        );
    }

    #[test]
    fn items_without_length_end_at_the_newline_or_the_end() {
        let e = ok("{}\n{\"type\":\"event\"}\n{\"a\":1}\n{\"type\":\"session\"}\n{\"s\":2}");
        assert!(e.header.is_empty());
        assert_eq!(
            payloads(&e),
            vec![("event", &b"{\"a\":1}"[..]), ("session", &b"{\"s\":2}"[..])]
        );
    }

    #[test]
    fn trailing_newline_variants_all_parse() {
        for tail in ["", "\n", "\n\n"] {
            let text = format!("{{}}\n{{\"type\":\"event\",\"length\":2}}\n{{}}{tail}");
            let e = ok(&text);
            assert_eq!(payloads(&e), vec![("event", &b"{}"[..])], "{tail:?}");
        }
        // A header alone, with or without its newline.
        assert!(ok("{}").items.is_empty());
        assert!(ok("{}\n").items.is_empty());
        // An item header at the very end has an empty payload.
        let e = ok("{}\n{\"type\":\"attachment\"}");
        assert_eq!(payloads(&e), vec![("attachment", &b""[..])]);
        let e = ok(
            "{}\n{\"type\":\"attachment\",\"length\":0}\n\n{\"type\":\"attachment\",\"length\":0}",
        );
        assert_eq!(e.items.len(), 2);
    }

    #[test]
    fn unknown_item_types_are_kept_by_name() {
        let e = ok("{}\n{\"type\":\"profile_chunk\",\"x\":1}\nbinary\n");
        assert_eq!(e.items[0].kind, ItemType::Other("profile_chunk".into()));
        assert_eq!(e.items[0].kind.label(), "other");
        assert_eq!(e.items[0].payload, b"binary");
    }

    #[test]
    fn wrong_lengths_are_named() {
        // Too long: past the end, a truncated envelope. Too short: the
        // payload is not followed by its newline.
        for (input, expected) in [
            (
                "{}\n{\"type\":\"event\",\"length\":100}\n{\"a\":1}\n",
                "item 1 (event): length 100 exceeds the 8 bytes left",
            ),
            (
                "{}\n{\"type\":\"event\",\"length\":3}\n{\"a\":1}\n",
                "expected a newline after the payload of 3 bytes",
            ),
        ] {
            let m = err(input);
            assert!(m.contains(expected), "{m}");
        }
    }

    #[test]
    fn bad_headers_are_named() {
        assert!(err("").contains("empty envelope"));
        assert!(err("   \n").contains("empty envelope"));
        assert!(err("{\"event_id\":").contains("invalid header at byte 0"));
        assert!(err("[1]\n").contains("expected a header object"));
        assert!(err("{}\n{\"length\":2}\n{}\n").contains("item 1: the header has no \"type\""));
        assert!(err("{}\n{\"type\":3}\n").contains("\"type\" to be a string"));
        assert!(err("{}\n{\"type\":\"event\",\"length\":-1}\n").contains("length of 0 or more"));
        assert!(
            err("{}\n{\"type\":\"event\",\"length\":\"2\"}\n{}\n")
                .contains("\"length\" to be a number")
        );
        // A truncated item header.
        assert!(err("{}\n{\"type\":\"ev").contains("invalid header"));
    }

    #[test]
    fn too_many_items_are_refused() {
        let mut s = String::from("{}\n");
        for _ in 0..5 {
            s.push_str("{\"type\":\"x\",\"length\":0}\n\n");
        }
        assert!(parse(s.as_bytes(), 5).is_ok());
        assert!(parse(s.as_bytes(), 4).is_err());
    }

    #[test]
    fn json_payloads_must_be_objects() {
        assert!(parse_json_object(b"{\"a\":1}").is_ok());
        let e = parse_json_object(b"[1]").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("sentry_event: expected a JSON object, found an array")
        );
        let e = parse_json_object(b"{\"a\":").err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("sentry_event: invalid JSON")));
    }

    fn header() -> impl Strategy<Value = Map<String, Value>> {
        proptest::collection::btree_map("[a-z_]{1,8}", "[ -~]{0,16}", 0..4)
            .prop_map(|m| m.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
    }

    proptest! {
        #[test]
        fn parsing_never_panics(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&input, 16);
        }

        #[test]
        fn parsing_never_panics_on_envelope_like_text(input in "(\\{\\}|\\{\"type\":\"(event|attachment)\"(,\"length\":[0-9]{1,2})?\\}|[a-z{}\"]{0,8}|\n){0,12}") {
            let _ = parse(input.as_bytes(), 16);
        }

        #[test]
        fn serialised_envelopes_read_back(
            env_header in header(),
            items in proptest::collection::vec(
                (
                    prop_oneof![Just("event"), Just("attachment"), Just("session"), Just("zzz")],
                    header(),
                    proptest::collection::vec(any::<u8>(), 0..64),
                ),
                0..6,
            ),
        ) {
            let items: Vec<(Map<String, Value>, Vec<u8>)> = items
                .into_iter()
                .map(|(t, mut h, p)| {
                    h.insert("type".into(), Value::from(t));
                    (h, p)
                })
                .collect();
            let refs: Vec<(Map<String, Value>, &[u8])> =
                items.iter().map(|(h, p)| (h.clone(), p.as_slice())).collect();
            let bytes = serialize(&env_header, &refs);
            let parsed = parse(&bytes, 16);
            prop_assert!(parsed.is_ok(), "{:?}", parsed);
            let parsed = parsed.unwrap_or_else(|_| Envelope { header: Map::new(), items: Vec::new() });
            prop_assert_eq!(&parsed.header, &env_header);
            prop_assert_eq!(parsed.items.len(), items.len());
            for (got, (h, p)) in parsed.items.iter().zip(&items) {
                prop_assert_eq!(got.payload, p.as_slice());
                prop_assert_eq!(got.kind.name(), h.get("type").and_then(Value::as_str).unwrap_or_default());
            }
        }
    }
}
