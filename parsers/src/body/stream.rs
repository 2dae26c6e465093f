//! Streaming body parsing: the parsers hand each field to a [`FieldSink`] as
//! they find it, instead of building a `serde_json::Map`, and the rules that
//! lift the message, level and time out of structured fields ([`Lifter`]),
//! shared with the map-building path.
//!
//! The agent's tail writes every field straight into OTLP protobuf bytes
//! through a sink (`otlp::RecordBuf`): on the pipeline bench, building a
//! `BTreeMap` of `Value`s for every line only to encode and drop it was the
//! largest share of the agent's CPU. The map path ([`super::parse_body`])
//! stays the reference. [`parse_body_streaming`] handles the common shapes —
//! JSON objects, logfmt, plain and raw lines — and answers
//! [`Streamed::NotHandled`] for anything else (other formats, duplicate keys,
//! any error), so that the caller takes the reference path; a property test
//! holds the two to the same records. This module must not allocate per line
//! beyond the scratch buffers it is given.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use xxhash_rust::xxh3::xxh3_64;

use super::json::MAX_DEPTH;
use super::{BodyFormat, LEVEL_KEYS, MESSAGE_KEYS, TIME_KEYS, logfmt, plain};
use crate::{Severity, time};

/// A scalar field value as a body parser found it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    /// Text.
    Str(&'a str),
    /// An integer that fits `i64`.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// `true` or `false` (a bare logfmt key is `true`).
    Bool(bool),
    /// JSON `null`.
    Null,
}

impl<'a> Scalar<'a> {
    /// The scalar of a JSON value; `None` for arrays and objects. Integers
    /// that do not fit `i64` become floats, as the OTLP mapping does.
    pub fn of(v: &'a Value) -> Option<Scalar<'a>> {
        Some(match v {
            Value::String(s) => Scalar::Str(s),
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Null => Scalar::Null,
            Value::Number(n) => match n.as_i64() {
                Some(i) => Scalar::Int(i),
                None => Scalar::Float(n.as_f64().unwrap_or(0.0)),
            },
            Value::Array(_) | Value::Object(_) => return None,
        })
    }
}

/// Where a streaming parser puts the fields of one body, in input order.
///
/// Top-level fields arrive with their key; members of an array with an empty
/// key. An object or array is announced by [`FieldSink::open`], followed by its
/// members and a matching [`FieldSink::close`].
pub trait FieldSink {
    /// A scalar field.
    fn scalar(&mut self, key: &str, value: Scalar<'_>);
    /// An object (`array == false`) or array starts under `key`.
    fn open(&mut self, key: &str, array: bool);
    /// The innermost open object or array ends.
    fn close(&mut self);
    /// Forgets every field written since the parse began (the line turned
    /// out not to be in the format).
    fn reset(&mut self);
}

/// What [`parse_body_streaming`] found besides the fields it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Lifted {
    /// The message is in [`StreamScratch::message`] (a field was lifted);
    /// otherwise it is the whole text.
    pub message_lifted: bool,
    /// Severity from a level field or the line's prefix.
    pub severity: Option<Severity>,
    /// Event time from a time field or the line's prefix.
    pub timestamp_ns: Option<i64>,
    /// Top-level fields written to the sink (the lifted message not counted).
    pub fields: usize,
}

/// The outcome of [`parse_body_streaming`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Streamed {
    /// Parsed; the fields are in the sink.
    Parsed(Lifted),
    /// Not a shape this path handles: discard what the sink holds and use
    /// [`super::parse_body`].
    NotHandled,
}

/// Buffers reused from line to line, and the top-level keys the caller
/// adds itself.
#[derive(Debug, Default)]
pub struct StreamScratch {
    /// The lifted message, when [`Lifted::message_lifted`].
    pub message: String,
    /// Hashes of keys the caller adds to every record: a body that has one
    /// of them is left to the reference path, where the caller's value
    /// replaces the body's.
    reserved: Vec<u64>,
    /// Key hashes of the open objects, one set per nesting level.
    keys: Vec<Vec<u64>>,
    /// Keys that had escapes, one per nesting level.
    key_text: Vec<String>,
    /// An unescaped logfmt value.
    value: String,
}

impl StreamScratch {
    /// Scratch for a caller that adds the attributes `keys` to every record.
    pub fn with_reserved_keys(keys: &[&str]) -> StreamScratch {
        StreamScratch {
            reserved: keys.iter().map(|k| xxh3_64(k.as_bytes())).collect(),
            ..StreamScratch::default()
        }
    }
}

/// Writes a JSON value to `sink` as a streaming parser would have found it.
pub fn feed<S: FieldSink>(sink: &mut S, key: &str, v: &Value) {
    match v {
        Value::Array(a) => {
            sink.open(key, true);
            for e in a {
                feed(sink, "", e);
            }
            sink.close();
        }
        Value::Object(o) => {
            sink.open(key, false);
            for (k, e) in o {
                feed(sink, k, e);
            }
            sink.close();
        }
        other => {
            if let Some(s) = Scalar::of(other) {
                sink.scalar(key, s);
            }
        }
    }
}

/// Parses `text` in `format` into `sink`, when the format and the line are
/// ones this path handles.
pub fn parse_body_streaming<S: FieldSink>(
    format: BodyFormat,
    text: &str,
    sink: &mut S,
    scratch: &mut StreamScratch,
) -> Streamed {
    let plain = |text: &str| {
        let (timestamp_ns, severity) = plain::sniff(text);
        Streamed::Parsed(Lifted {
            severity,
            timestamp_ns,
            ..Lifted::default()
        })
    };
    match format {
        BodyFormat::Raw => Streamed::Parsed(Lifted::default()),
        BodyFormat::Json => done(stream(sink, scratch, |st| json_into(text, st))),
        BodyFormat::Logfmt => done(stream(sink, scratch, |st| logfmt_into(text, st, false))),
        BodyFormat::Auto => {
            let bytes = text.trim_start().as_bytes();
            match bytes.first() {
                Some(b'{') => done(stream(sink, scratch, |st| json_into(text, st))),
                // Syslog and apache error lines: the reference path.
                Some(b'<') if bytes.get(1).is_some_and(u8::is_ascii_digit) => Streamed::NotHandled,
                Some(b'[') => Streamed::NotHandled,
                Some(c) if c.is_ascii_alphanumeric() || *c == b':' => {
                    if text.contains(" [") && text.contains("] \"") {
                        // Perhaps an access log: the reference path decides.
                        return Streamed::NotHandled;
                    }
                    // Two pairs need two `=`: most unstructured lines have none.
                    if memchr::memchr_iter(b'=', text.as_bytes()).nth(1).is_none() {
                        return plain(text);
                    }
                    match stream(sink, scratch, |st| logfmt_into(text, st, true)) {
                        Err(Stop::NotThisFormat) => {
                            // Not logfmt after all: a plain line.
                            sink.reset();
                            plain(text)
                        }
                        other => done(other),
                    }
                }
                _ => plain(text),
            }
        }
        _ => Streamed::NotHandled,
    }
}

/// Why a streaming parse stopped early.
#[derive(Debug)]
enum Stop {
    /// It went wrong, or the reference path must decide.
    NotHandled,
    /// The line is well-formed but does not pass the sniffing judgement.
    NotThisFormat,
}

/// A parse that went wrong, or a line the reference path must decide.
#[derive(Debug)]
struct NotHandled;

impl From<NotHandled> for Stop {
    fn from(_: NotHandled) -> Stop {
        Stop::NotHandled
    }
}

fn done(r: Result<Lifted, Stop>) -> Streamed {
    match r {
        Ok(l) => Streamed::Parsed(l),
        Err(_) => Streamed::NotHandled,
    }
}

/// Runs one streaming parse and resolves what the lifter saw.
fn stream<S: FieldSink>(
    sink: &mut S,
    scratch: &mut StreamScratch,
    parse: impl FnOnce(&mut Streaming<'_, S>) -> Result<(), Stop>,
) -> Result<Lifted, Stop> {
    scratch.message.clear();
    for k in &mut scratch.keys {
        k.clear();
    }
    let mut st = Streaming {
        sink,
        scratch,
        lift: Lifter::default(),
        message_rank: None,
        fields: 0,
    };
    parse(&mut st)?;
    Ok(Lifted {
        message_lifted: st.message_rank.is_some(),
        severity: st.lift.severity(),
        timestamp_ns: st.lift.timestamp(),
        fields: st.fields,
    })
}

/// The lifting rules of structured bodies, fed one top-level field at a time:
/// which field is the message, and the severity and time they give.
///
/// Equal to looking each list of names up in order in a map without
/// duplicate keys: the message is the first of [`MESSAGE_KEYS`] holding a
/// string, the severity the first of [`LEVEL_KEYS`] (`log.level` also as
/// `{"log":{"level":..}}`) that reads as one, the time likewise.
#[derive(Debug, Default)]
pub(crate) struct Lifter {
    /// Per [`LEVEL_KEYS`] entry: seen as a top-level key, and what it read as.
    level: [Option<Option<Severity>>; LEVEL_KEYS.len()],
    /// `level` inside a top-level `log` object.
    nested_log_level: Option<Option<Severity>>,
    /// Per [`TIME_KEYS`] entry: seen, and what it read as.
    time: [Option<Option<i64>>; TIME_KEYS.len()],
}

/// The rank of `key` among the message names, if it is one.
pub(crate) fn message_rank(key: &str) -> Option<usize> {
    MESSAGE_KEYS.iter().position(|k| *k == key)
}

impl Lifter {
    /// Considers a top-level scalar field.
    pub(crate) fn observe(&mut self, key: &str, v: &Scalar<'_>) {
        if let Some(i) = LEVEL_KEYS.iter().position(|k| *k == key)
            && let Some(slot) = self.level.get_mut(i)
        {
            *slot = Some(severity_of(v));
        }
        if let Some(i) = TIME_KEYS.iter().position(|k| *k == key)
            && let Some(slot) = self.time.get_mut(i)
        {
            *slot = Some(timestamp_of(v));
        }
    }

    /// Considers `level` inside a top-level `log` object.
    pub(crate) fn observe_nested_log_level(&mut self, v: &Scalar<'_>) {
        self.nested_log_level = Some(severity_of(v));
    }

    /// The severity the fields give.
    pub(crate) fn severity(&self) -> Option<Severity> {
        LEVEL_KEYS
            .iter()
            .zip(&self.level)
            .find_map(|(k, seen)| match seen {
                Some(s) => *s,
                // A dotted name also looks into the nested object.
                None if k.contains('.') => self.nested_log_level.flatten(),
                None => None,
            })
    }

    /// The time the fields give.
    pub(crate) fn timestamp(&self) -> Option<i64> {
        self.time.iter().find_map(|t| t.flatten())
    }
}

/// The severity a level field reads as.
pub(crate) fn severity_of(v: &Scalar<'_>) -> Option<Severity> {
    match v {
        Scalar::Str(s) => Severity::parse(s),
        // pino and bunyan write levels as numbers: 10 trace ... 60 fatal.
        Scalar::Int(n) => match n {
            10 => Some(Severity::Trace),
            20 => Some(Severity::Debug),
            30 => Some(Severity::Info),
            40 => Some(Severity::Warn),
            50 => Some(Severity::Error),
            60 => Some(Severity::Fatal),
            _ => None,
        },
        _ => None,
    }
}

/// The time a time field reads as.
pub(crate) fn timestamp_of(v: &Scalar<'_>) -> Option<i64> {
    match v {
        Scalar::Str(s) => time::parse_any_text(s),
        Scalar::Int(i) => time::epoch_int_to_nanos(*i),
        Scalar::Float(f) => time::epoch_to_nanos(*f),
        _ => None,
    }
}

/// One streaming parse in progress.
struct Streaming<'a, S> {
    sink: &'a mut S,
    scratch: &'a mut StreamScratch,
    lift: Lifter,
    /// Rank of the message candidate held in `scratch.message`.
    message_rank: Option<usize>,
    fields: usize,
}

impl<S: FieldSink> Streaming<'_, S> {
    /// Remembers `key` in the object at `depth` (1 = top level); a key seen
    /// twice is left to the reference path, where the last one wins.
    fn claim(&mut self, depth: usize, key: &str) -> Result<(), NotHandled> {
        let keys = &mut self.scratch.keys;
        while keys.len() < depth {
            keys.push(Vec::new());
        }
        let set = keys.get_mut(depth - 1).ok_or(NotHandled)?;
        let h = xxh3_64(key.as_bytes());
        if set.contains(&h) || (depth == 1 && self.scratch.reserved.contains(&h)) {
            return Err(NotHandled);
        }
        set.push(h);
        Ok(())
    }

    /// A top-level scalar field.
    fn top_scalar(&mut self, key: &str, v: Scalar<'_>) -> Result<(), NotHandled> {
        self.claim(1, key)?;
        self.lift.observe(key, &v);
        if let (Some(rank), Scalar::Str(s)) = (message_rank(key), v)
            && self.message_rank.is_none_or(|r| rank < r)
        {
            // A better message: the one held so far becomes a field.
            if let Some(old) = self.message_rank.and_then(|r| MESSAGE_KEYS.get(r)) {
                self.sink.scalar(old, Scalar::Str(&self.scratch.message));
                self.fields += 1;
            }
            self.scratch.message.clear();
            self.scratch.message.push_str(s);
            self.message_rank = Some(rank);
            return Ok(());
        }
        self.sink.scalar(key, v);
        self.fields += 1;
        Ok(())
    }
}

/// Streams a JSON object body through serde_json's own tokenizer, so that
/// what is valid JSON is exactly what the reference path accepts.
fn json_into<S: FieldSink>(text: &str, st: &mut Streaming<'_, S>) -> Result<(), Stop> {
    let trimmed = text.trim();
    if !trimmed.starts_with('{') {
        return Err(Stop::NotHandled);
    }
    let mut de = serde_json::Deserializer::from_str(trimmed);
    let top = Object {
        st,
        depth: 1,
        is_log: false,
    };
    de::Deserializer::deserialize_map(&mut de, top).map_err(|_| Stop::NotHandled)?;
    de.end().map_err(|_| Stop::NotHandled)
}

/// An object at `depth` (1 = the body itself); `is_log` marks the value of
/// a top-level `log` key, whose `level` the lifter reads.
struct Object<'s, 'a, S> {
    st: &'s mut Streaming<'a, S>,
    depth: usize,
    is_log: bool,
}

/// An array at `depth`.
struct Array<'s, 'a, S> {
    st: &'s mut Streaming<'a, S>,
    depth: usize,
}

/// One member's value: `key` is empty inside arrays; `in_log` marks the
/// members of a top-level `log` object.
struct Member<'s, 'a, 'k, S> {
    st: &'s mut Streaming<'a, S>,
    depth: usize,
    key: &'k str,
    in_log: bool,
}

/// A key, borrowed from the input or unescaped into the level's buffer.
struct KeySeed<'b>(&'b mut String);

enum Key<'de> {
    Borrowed(&'de str),
    Copied,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Key<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Key<'de>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
        self.0.clear();
        self.0.push_str(v);
        Ok(Key::Copied)
    }
}

fn too_deep<E: de::Error>() -> E {
    E::custom(format_args!("more than {MAX_DEPTH} levels of nesting"))
}

impl<'de, S: FieldSink> Visitor<'de> for Object<'_, '_, S> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Object { st, depth, is_log } = self;
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        let level = depth - 1;
        // A set left at this depth belongs to a sibling that has closed.
        if depth > 1
            && let Some(set) = st.scratch.keys.get_mut(level)
        {
            set.clear();
        }
        while st.scratch.key_text.len() <= level {
            st.scratch.key_text.push(String::new());
        }
        // The level's buffer is taken out while its key is in use, so that
        // the member can borrow the rest of the state.
        let mut buf = st
            .scratch
            .key_text
            .get_mut(level)
            .map(std::mem::take)
            .unwrap_or_default();
        let result = (|| {
            while let Some(key) = map.next_key_seed(KeySeed(&mut buf))? {
                let key: &str = match key {
                    Key::Borrowed(k) => k,
                    Key::Copied => &buf,
                };
                if depth > 1 {
                    st.claim(depth, key)
                        .map_err(|_| de::Error::custom("duplicate key"))?;
                }
                map.next_value_seed(Member {
                    st: &mut *st,
                    depth,
                    key,
                    in_log: is_log,
                })?;
            }
            Ok(())
        })();
        if let Some(slot) = st.scratch.key_text.get_mut(level) {
            *slot = buf;
        }
        result
    }
}

impl<'de, S: FieldSink> Visitor<'de> for Array<'_, '_, S> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Array { st, depth } = self;
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        while seq
            .next_element_seed(Member {
                st: &mut *st,
                depth,
                key: "",
                in_log: false,
            })?
            .is_some()
        {}
        Ok(())
    }
}

impl<'de, S: FieldSink> DeserializeSeed<'de> for Member<'_, '_, '_, S> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'s, 'a, S: FieldSink> Member<'s, 'a, '_, S> {
    fn scalar<E: de::Error>(self, v: Scalar<'_>) -> Result<(), E> {
        if self.depth == 1 {
            return self
                .st
                .top_scalar(self.key, v)
                .map_err(|_| E::custom("duplicate key"));
        }
        if self.in_log && self.key == "level" {
            self.st.lift.observe_nested_log_level(&v);
        }
        self.st.sink.scalar(self.key, v);
        Ok(())
    }

    /// Announces a nested object or array; returns the state to fill it.
    fn open<E: de::Error>(self, array: bool) -> Result<(&'s mut Streaming<'a, S>, usize), E> {
        if self.depth == 1 {
            self.st
                .claim(1, self.key)
                .map_err(|_| E::custom("duplicate key"))?;
            self.st.fields += 1;
        }
        self.st.sink.open(self.key, array);
        Ok((self.st, self.depth + 1))
    }
}

impl<'de, S: FieldSink> Visitor<'de> for Member<'_, '_, '_, S> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(Scalar::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(Scalar::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        match i64::try_from(v) {
            Ok(i) => self.scalar(Scalar::Int(i)),
            Err(_) => self.scalar(Scalar::Float(v as f64)),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(Scalar::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(Scalar::Str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar(Scalar::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let is_log = self.depth == 1 && self.key == "log";
        let (st, depth) = self.open(false)?;
        Object { st, depth, is_log }.visit_map(map)?;
        st.sink.close();
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let (st, depth) = self.open(true)?;
        Array { st, depth }.visit_seq(seq)?;
        st.sink.close();
        Ok(())
    }
}

/// Streams a logfmt body; `sniffed` applies the `auto` judgement.
fn logfmt_into<S: FieldSink>(
    text: &str,
    st: &mut Streaming<'_, S>,
    sniffed: bool,
) -> Result<(), Stop> {
    let mut value = std::mem::take(&mut st.scratch.value);
    let mut dup = false;
    let scanned = logfmt::scan(text, &mut value, &mut |key, v| {
        let v = v.map_or(Scalar::Bool(true), Scalar::Str);
        dup |= st.top_scalar(key, v).is_err();
    });
    st.scratch.value = value;
    let Ok(counts) = scanned else {
        // Strict logfmt errs with a reason; `auto` takes the line as plain.
        return Err(if sniffed {
            Stop::NotThisFormat
        } else {
            Stop::NotHandled
        });
    };
    if dup {
        return Err(Stop::NotHandled);
    }
    match (sniffed, counts.sniffed_as_logfmt(), counts.pairs > 0) {
        (true, true, _) | (false, _, true) => Ok(()),
        (true, false, _) => Err(Stop::NotThisFormat),
        (false, _, false) => Err(Stop::NotHandled),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::LogRecord;
    use crate::body::parse_body;
    use crate::otlp::{RecordBuf, RecordHead, decode_logs_request, encode_logs_wire};
    use proptest::prelude::*;
    use serde_json::json;

    /// What the reference path makes of a line, as the wire carries it.
    fn reference(format: BodyFormat, text: &str) -> Option<LogRecord> {
        let b = parse_body(format, text).ok()?;
        let r = LogRecord {
            timestamp_ns: b.timestamp_ns.unwrap_or(0),
            severity: b.severity.unwrap_or(Severity::Unspecified),
            body: b.message,
            attributes: b.fields,
            ..LogRecord::default()
        };
        let mut buf = Vec::new();
        encode_logs_wire(&[r], &mut buf);
        decode_logs_request(&buf).unwrap().pop()
    }

    /// What the streaming path makes of it, if it handles it; also the
    /// field count it reported.
    fn streamed(format: BodyFormat, text: &str) -> Option<(LogRecord, usize)> {
        let mut sink = RecordBuf::default();
        let mut scratch = StreamScratch::default();
        let Streamed::Parsed(l) = parse_body_streaming(format, text, &mut sink, &mut scratch)
        else {
            return None;
        };
        let head = RecordHead {
            timestamp_ns: l.timestamp_ns.unwrap_or(0),
            observed_ns: 0,
            severity: l.severity.unwrap_or(Severity::Unspecified),
            body: if l.message_lifted {
                &scratch.message
            } else {
                text
            },
        };
        let mut field = Vec::new();
        sink.finish_into(&head, &[], &mut field);
        let mut enc = crate::otlp::LogsEncoder::default();
        enc.push_encoded(&crate::Resource::default(), &field);
        let mut buf = Vec::new();
        enc.finish_into(&mut buf);
        let r = decode_logs_request(&buf).unwrap().pop()?;
        Some((r, l.fields))
    }

    fn same(format: BodyFormat, text: &str) -> bool {
        match streamed(format, text) {
            None => true,
            Some((got, fields)) => {
                let want = reference(format, text);
                assert_eq!(Some(&got), want.as_ref(), "{format} {text:?}");
                assert_eq!(fields, got.attributes.len(), "{text:?}");
                true
            }
        }
    }

    #[test]
    fn common_shapes_take_the_streaming_path_and_agree() {
        let lines = [
            (
                BodyFormat::Auto,
                r#"{"level":"info","msg":"request handled","path":"/api/v1/orders/7","status":200,"duration_ms":12.5}"#,
            ),
            (
                BodyFormat::Auto,
                r#"level=warn msg="slow query" table=orders rows=7 took=1.2s caller=db.go:118"#,
            ),
            (
                BodyFormat::Auto,
                "2026-11-23 10:00:00.123 INFO 1 --- [nio-8080-exec-1] c.s.OrderController : order 7 accepted",
            ),
            (BodyFormat::Auto, "plain words and nothing else"),
            (
                BodyFormat::Auto,
                r#"{"@timestamp":"2024-01-15T10:20:30.123+00:00","message":"user logged in","log":{"level":"error","logger":"x"},"user":{"id":42,"roles":["admin",{"a":null}]}}"#,
            ),
            (
                BodyFormat::Auto,
                r#"{"msg":"a\"b\\u00e9\n","mes\u0073age":"second","level":50,"time":1705314030123}"#,
            ),
            (
                BodyFormat::Auto,
                r#"{"MESSAGE":"m","log":"l","message":"x"}"#,
            ),
            (
                BodyFormat::Auto,
                r#"{"msg":42,"message":"the string wins"}"#,
            ),
            (BodyFormat::Auto, "a=1 b=2 the rest is prose"),
            (
                BodyFormat::Json,
                r#"{"k":[1,2,[3,{"x":18446744073709551615}]],"e":{}}"#,
            ),
            (BodyFormat::Logfmt, r#"msg="a \"q\"" flag level=error"#),
            (BodyFormat::Raw, "level=error msg=kept raw"),
        ];
        for (format, text) in lines {
            assert!(streamed(format, text).is_some(), "not streamed: {text:?}");
            same(format, text);
        }
    }

    #[test]
    fn duplicates_other_formats_and_errors_are_left_to_the_reference_path() {
        for (format, text) in [
            (BodyFormat::Auto, r#"{"a":1,"a":2}"#),
            (BodyFormat::Auto, r#"{"o":{"x":1,"x":2}}"#),
            (BodyFormat::Auto, "a=1 b=2 a=3"),
            (
                BodyFormat::Auto,
                "<34>Oct 11 22:14:15 mymachine su: 'su root' failed",
            ),
            (
                BodyFormat::Auto,
                "[Wed Oct 11 14:32:52 2000] [error] [client 127.0.0.1] denied",
            ),
            (
                BodyFormat::Auto,
                r#"10.1.2.3 - - [15/Jan/2024:10:20:30 +0000] "GET / HTTP/1.1" 503 12"#,
            ),
            (BodyFormat::Auto, r#"{"broken":"#),
            (BodyFormat::Json, "not json"),
            (BodyFormat::Logfmt, "=value"),
            (BodyFormat::Nginx, "anything"),
        ] {
            assert!(streamed(format, text).is_none(), "streamed: {text:?}");
        }
        // Sibling objects may repeat each other's keys.
        assert!(streamed(BodyFormat::Json, r#"{"a":{"x":1},"b":{"x":2}}"#).is_some());
        let deep = format!("{}1{}", "[".repeat(70), "]".repeat(70));
        assert!(streamed(BodyFormat::Json, &format!("{{\"d\":{deep}}}")).is_none());
    }

    fn key() -> impl Strategy<Value = String> {
        let known: Vec<&str> = MESSAGE_KEYS
            .iter()
            .chain(&LEVEL_KEYS)
            .chain(&TIME_KEYS)
            .copied()
            .chain(["err"])
            .collect();
        prop_oneof![
            prop::sample::select(known).prop_map(str::to_owned),
            "[a-z_]{1,6}",
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            prop::num::f64::NORMAL.prop_map(Value::from),
            prop::sample::select(vec![
                "error",
                "WARN",
                "info",
                "30",
                "2024-01-15T10:20:30Z",
                "1705314030",
                "x y \"z\"",
                "",
                "é\n\t",
            ])
            .prop_map(|s| Value::String(s.to_owned())),
            prop::sample::select(vec![10i64, 40, 50, 1_705_314_030, 1_705_314_030_123])
                .prop_map(Value::from),
            "\\PC{0,10}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Wherever the streaming path answers, it makes the record the
        /// reference path makes.
        #[test]
        fn json_bodies_agree(fields in prop::collection::vec((key(), value()), 0..8)) {
            // Written by hand so that duplicate keys reach the parsers.
            let body: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}:{}", json!(k), v))
                .collect();
            let text = format!("{{{}}}", body.join(","));
            same(BodyFormat::Auto, &text);
            same(BodyFormat::Json, &text);
        }

        #[test]
        fn logfmt_bodies_agree(
            pairs in prop::collection::vec((key(), prop::option::of("[a-z0-9:.=-]{0,6}|\\PC{0,6}")), 0..7),
            quote in any::<bool>(),
        ) {
            let text: Vec<String> = pairs
                .iter()
                .map(|(k, v)| match v {
                    None => k.clone(),
                    Some(v) if quote => format!("{k}={}", json!(v)),
                    Some(v) => format!("{k}={v}"),
                })
                .collect();
            let text = text.join(" ");
            same(BodyFormat::Auto, &text);
            same(BodyFormat::Logfmt, &text);
        }

        #[test]
        fn any_text_agrees(text in "\\PC{0,80}|[a-z=\" {}:\\[\\],0-9]{0,60}") {
            for format in BodyFormat::ALL {
                same(*format, &text);
            }
        }
    }
}
