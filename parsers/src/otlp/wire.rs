//! The agent's forward path to bytes: writes the protobuf encoding of the
//! `ExportLogsServiceRequest` that [`super::encode_logs`] builds, straight from
//! [`LogRecord`]s, with no `opentelemetry_proto` structs and no `String` copies.
//!
//! Hand-written on purpose, because it is a measured hot path: in the
//! end-to-end agent bench (`cargo bench --bench pipeline`) about 12% of CPU
//! went to prost's `encoded_len` (recomputed at every nesting level) and more
//! to allocating and freeing the intermediate object graph (`KeyValue`,
//! `AnyValue`, cloned strings). This room must produce exactly the bytes prost
//! produces for `encode_logs` (the tests compare them byte for byte); it must
//! not grow fields `encode_logs` does not set, and it must not decode — that
//! stays prost's job. Change the two together.
//!
//! # Lengths, computed once
//!
//! Protobuf prefixes every embedded message with its length, a varint whose
//! own size depends on the length. We make two passes over the same tree in
//! the same order. The first pass pushes, in pre-order, the body length of
//! every message whose size depends on nested messages of variable size
//! (`ResourceLogs`, `Resource`, `ScopeLogs`, each `LogRecord`, and the
//! `ArrayValue`/`KeyValueList` of each JSON array or object) into a scratch
//! `Vec`: a slot is reserved before the children are sized and filled after,
//! so slots sit in exactly the order the writer needs them. The second pass
//! walks the same tree and consumes slots with a cursor. Lengths of leaves (a
//! scalar `AnyValue`, the `KeyValue` around a value, the scope) are a few
//! additions, so they are recomputed rather than stored. We do not reserve
//! varint space and patch it afterwards: a padded varint is valid protobuf but
//! not what prost writes, and shrinking it would move the message body.

use prost::encoding::{WireType, encoded_len_varint, key_len};
use serde_json::{Number, Value};

use super::{POSITION_OFFSET_KEY, POSITION_STREAM_KEY, SCOPE_NAME};
use crate::body::{FieldSink, Scalar};
use crate::model::{LogRecord, Resource, Severity};

/// Field numbers, from the `#[prost(tag = ..)]` of opentelemetry-proto 0.33's
/// generated types.
mod tag {
    /// `ExportLogsServiceRequest.resource_logs`.
    pub const REQUEST_RESOURCE_LOGS: u32 = 1;
    /// `ResourceLogs.resource`.
    pub const RESOURCE_LOGS_RESOURCE: u32 = 1;
    /// `ResourceLogs.scope_logs`.
    pub const RESOURCE_LOGS_SCOPE_LOGS: u32 = 2;
    /// `Resource.attributes`.
    pub const RESOURCE_ATTRIBUTES: u32 = 1;
    /// `ScopeLogs.scope`.
    pub const SCOPE_LOGS_SCOPE: u32 = 1;
    /// `ScopeLogs.log_records`.
    pub const SCOPE_LOGS_LOG_RECORDS: u32 = 2;
    /// `InstrumentationScope.name`.
    pub const SCOPE_NAME: u32 = 1;
    /// `LogRecord.time_unix_nano` (fixed64).
    pub const TIME_UNIX_NANO: u32 = 1;
    /// `LogRecord.severity_number` (enum, varint).
    pub const SEVERITY_NUMBER: u32 = 2;
    /// `LogRecord.severity_text`.
    pub const SEVERITY_TEXT: u32 = 3;
    /// `LogRecord.body`.
    pub const BODY: u32 = 5;
    /// `LogRecord.attributes`.
    pub const ATTRIBUTES: u32 = 6;
    /// `LogRecord.observed_time_unix_nano` (fixed64).
    pub const OBSERVED_TIME_UNIX_NANO: u32 = 11;
    /// `KeyValue.key`.
    pub const KV_KEY: u32 = 1;
    /// `KeyValue.value`.
    pub const KV_VALUE: u32 = 2;
    /// `AnyValue.string_value`.
    pub const STRING_VALUE: u32 = 1;
    /// `AnyValue.bool_value`.
    pub const BOOL_VALUE: u32 = 2;
    /// `AnyValue.int_value`.
    pub const INT_VALUE: u32 = 3;
    /// `AnyValue.double_value`.
    pub const DOUBLE_VALUE: u32 = 4;
    /// `AnyValue.array_value`.
    pub const ARRAY_VALUE: u32 = 5;
    /// `AnyValue.kvlist_value`.
    pub const KVLIST_VALUE: u32 = 6;
    /// `ArrayValue.values` and `KeyValueList.values`.
    pub const VALUES: u32 = 1;
}

/// Appends the protobuf encoding of `encode_logs(records)` to `buf`.
///
/// Byte for byte what prost writes for that request: one `ResourceLogs` per
/// distinct resource in order of first appearance, the source position in the
/// reserved attributes.
pub fn encode_logs_wire(records: &[LogRecord], buf: &mut Vec<u8>) {
    let mut enc = LogsEncoder::default();
    for r in records {
        enc.push(r);
    }
    enc.finish_into(buf);
}

/// Builds an `ExportLogsServiceRequest` one record at a time, so a source can
/// encode each record as it is parsed and drop it at once, instead of holding
/// a batch of [`LogRecord`]s (and measuring their size) until it is sent.
///
/// Each record is written when pushed, into the group of its resource; only
/// the few bytes of the `ResourceLogs`/`ScopeLogs` headers wait for
/// [`LogsEncoder::finish_into`], which copies each group once behind them.
/// The result is what [`encode_logs_wire`] writes for the same records.
#[derive(Debug, Default)]
pub struct LogsEncoder {
    groups: Vec<Group>,
    /// The group of the previous record: consecutive records nearly always
    /// share a resource.
    last: Option<usize>,
    /// Scratch for the size slots of the record being written.
    sizes: Vec<usize>,
    /// Emptied group buffers, kept for the next request so that a reused
    /// encoder does not grow new ones record by record.
    spare: Vec<Vec<u8>>,
    records: usize,
    bytes: usize,
}

/// Most emptied group buffers an encoder keeps.
const MAX_SPARE: usize = 8;

#[derive(Debug)]
struct Group {
    resource: Resource,
    /// Encoded `ScopeLogs.log_records` fields, in push order.
    records: Vec<u8>,
}

impl LogsEncoder {
    /// Encodes `r` at the end of its resource's group.
    pub fn push(&mut self, r: &LogRecord) {
        let g = self.group(&r.resource);
        let Some(group) = self.groups.get_mut(g) else {
            return;
        };
        let before = group.records.len();
        encode_record_field(r, &mut self.sizes, &mut group.records);
        self.bytes += group.records.len() - before;
        self.records += 1;
    }

    /// Appends one record already encoded as a `ScopeLogs.log_records` field
    /// (by [`encode_record_field`] or [`RecordBuf::finish_into`]) to the group of
    /// `resource`.
    pub fn push_encoded(&mut self, resource: &Resource, field: &[u8]) {
        let g = self.group(resource);
        if let Some(group) = self.groups.get_mut(g) {
            group.records.extend_from_slice(field);
            self.bytes += field.len();
            self.records += 1;
        }
    }

    /// The index of `resource`'s group, created if new.
    fn group(&mut self, resource: &Resource) -> usize {
        let g = match self.last {
            Some(i)
                if self
                    .groups
                    .get(i)
                    .is_some_and(|g| g.resource.same_as(resource)) =>
            {
                i
            }
            _ => match self
                .groups
                .iter()
                .position(|g| g.resource.attributes == resource.attributes)
            {
                Some(i) => i,
                None => {
                    self.groups.push(Group {
                        resource: resource.clone(),
                        records: self.spare.pop().unwrap_or_default(),
                    });
                    self.groups.len() - 1
                }
            },
        };
        self.last = Some(g);
        g
    }

    /// Records pushed so far.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Encoded bytes of the records pushed so far (the request adds a few
    /// header bytes per resource).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Appends the request to `buf` and empties the encoder for reuse.
    pub fn finish_into(&mut self, buf: &mut Vec<u8>) {
        let scope = field_len(tag::SCOPE_LOGS_SCOPE, scope_len());
        let lens: Vec<(usize, usize, usize)> = self
            .groups
            .iter()
            .map(|g| {
                let res_len = resource_len(&g.resource);
                let sl_len = scope + g.records.len();
                let rl_len = field_len(tag::RESOURCE_LOGS_RESOURCE, res_len)
                    + field_len(tag::RESOURCE_LOGS_SCOPE_LOGS, sl_len);
                (res_len, sl_len, rl_len)
            })
            .collect();
        let total: usize = lens
            .iter()
            .map(|(_, _, rl)| field_len(tag::REQUEST_RESOURCE_LOGS, *rl))
            .sum();
        buf.reserve(total);
        let start = buf.len();
        let mut w = Writer {
            sizes: &[],
            next: 0,
            buf,
        };
        for (g, (res_len, sl_len, rl_len)) in self.groups.iter().zip(lens) {
            w.header(tag::REQUEST_RESOURCE_LOGS, rl_len);
            w.header(tag::RESOURCE_LOGS_RESOURCE, res_len);
            for (k, v) in g.resource.attributes.iter() {
                w.leaf_kv(tag::RESOURCE_ATTRIBUTES, k, Leaf::Str(v));
            }
            w.header(tag::RESOURCE_LOGS_SCOPE_LOGS, sl_len);
            w.header(tag::SCOPE_LOGS_SCOPE, scope_len());
            w.str_field(tag::SCOPE_NAME, SCOPE_NAME);
            w.buf.extend_from_slice(&g.records);
        }
        debug_assert_eq!(w.buf.len() - start, total, "sizes agree with bytes");
        for mut g in self.groups.drain(..) {
            if self.spare.len() < MAX_SPARE {
                g.records.clear();
                self.spare.push(g.records);
            }
        }
        self.last = None;
        self.records = 0;
        self.bytes = 0;
    }
}

/// Appends a varint. Written here rather than taken from prost so that it
/// inlines: nearly every value is a key or a length below 128, one byte.
#[inline]
fn encode_varint(mut v: u64, buf: &mut Vec<u8>) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Appends a field key.
#[inline]
fn encode_key(tag: u32, wire_type: WireType, buf: &mut Vec<u8>) {
    encode_varint(u64::from(tag << 3 | wire_type as u32), buf);
}

fn reserve(sizes: &mut Vec<usize>) -> usize {
    sizes.push(0);
    sizes.len() - 1
}

fn fill(sizes: &mut [usize], slot: usize, len: usize) {
    if let Some(s) = sizes.get_mut(slot) {
        *s = len;
    }
}

/// Appends `r` as one `ScopeLogs.log_records` field, exactly as prost writes
/// it; `sizes` is scratch.
pub fn encode_record_field(r: &LogRecord, sizes: &mut Vec<usize>, out: &mut Vec<u8>) {
    sizes.clear();
    size_record(r, sizes);
    let mut w = Writer {
        sizes,
        next: 0,
        buf: out,
    };
    w.record(r);
    debug_assert_eq!(w.next, sizes.len(), "every size slot is consumed once");
}

/// Size of a length-delimited field: key, length prefix, body.
fn field_len(tag: u32, body: usize) -> usize {
    key_len(tag) + encoded_len_varint(body as u64) + body
}

/// Size of a proto3 string field, which prost omits when empty.
fn str_field_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        field_len(tag, s.len())
    }
}

/// Size of a proto3 fixed64 field, which prost omits when zero.
fn fixed64_field_len(tag: u32, v: u64) -> usize {
    if v == 0 { 0 } else { key_len(tag) + 8 }
}

/// Size of a `KeyValue` body given the size of its `AnyValue` body.
fn kv_len(key: &str, any_len: usize) -> usize {
    str_field_len(tag::KV_KEY, key) + field_len(tag::KV_VALUE, any_len)
}

fn scope_len() -> usize {
    str_field_len(tag::SCOPE_NAME, SCOPE_NAME)
}

fn resource_len(res: &Resource) -> usize {
    res.attributes
        .iter()
        .map(|(k, v)| field_len(tag::RESOURCE_ATTRIBUTES, kv_len(k, Leaf::Str(v).any_len())))
        .sum()
}

fn severity_text(s: Severity) -> &'static str {
    if s == Severity::Unspecified {
        ""
    } else {
        s.as_str()
    }
}

fn severity_number_len(n: i32) -> usize {
    if n == 0 {
        0
    } else {
        key_len(tag::SEVERITY_NUMBER) + encoded_len_varint(i64::from(n) as u64)
    }
}

fn timestamp(ns: i64) -> u64 {
    u64::try_from(ns).unwrap_or(0)
}

fn position_offset(offset: u64) -> i64 {
    // OTLP has no unsigned integer; offsets beyond i64::MAX cannot occur in files.
    i64::try_from(offset).unwrap_or(i64::MAX)
}

/// Sizes a record (pushing its slots) and returns its body length.
fn size_record(r: &LogRecord, sizes: &mut Vec<usize>) -> usize {
    let slot = reserve(sizes);
    let mut len = fixed64_field_len(tag::TIME_UNIX_NANO, timestamp(r.timestamp_ns))
        + severity_number_len(r.severity.otlp_number())
        + str_field_len(tag::SEVERITY_TEXT, severity_text(r.severity))
        + field_len(tag::BODY, Leaf::Str(&r.body).any_len());
    for (k, v) in &r.attributes {
        len += field_len(tag::ATTRIBUTES, kv_len(k, size_any(v, sizes)));
    }
    if let Some(pos) = &r.position {
        len += field_len(
            tag::ATTRIBUTES,
            kv_len(POSITION_STREAM_KEY, Leaf::Str(&pos.stream).any_len()),
        );
        len += field_len(
            tag::ATTRIBUTES,
            kv_len(
                POSITION_OFFSET_KEY,
                Leaf::Int(position_offset(pos.offset)).any_len(),
            ),
        );
    }
    len += fixed64_field_len(tag::OBSERVED_TIME_UNIX_NANO, timestamp(r.observed_ns));
    fill(sizes, slot, len);
    len
}

/// Sizes a JSON value as an `AnyValue` (pushing slots for arrays and objects)
/// and returns the `AnyValue` body length.
fn size_any(v: &Value, sizes: &mut Vec<usize>) -> usize {
    match v {
        Value::Array(a) => {
            let slot = reserve(sizes);
            let inner = a
                .iter()
                .map(|e| field_len(tag::VALUES, size_any(e, sizes)))
                .sum();
            fill(sizes, slot, inner);
            field_len(tag::ARRAY_VALUE, inner)
        }
        Value::Object(o) => {
            let slot = reserve(sizes);
            let inner = o
                .iter()
                .map(|(k, v)| field_len(tag::VALUES, kv_len(k, size_any(v, sizes))))
                .sum();
            fill(sizes, slot, inner);
            field_len(tag::KVLIST_VALUE, inner)
        }
        Value::Null => 0,
        Value::Bool(b) => Leaf::Bool(*b).any_len(),
        Value::Number(n) => Leaf::from_number(n).any_len(),
        Value::String(s) => Leaf::Str(s).any_len(),
    }
}

/// A scalar `AnyValue`.
#[derive(Clone, Copy)]
enum Leaf<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
}

impl<'a> Leaf<'a> {
    /// The same choice as `json_to_any`: integers that fit i64 stay integers.
    fn from_number(n: &Number) -> Leaf<'a> {
        match n.as_i64() {
            Some(i) => Leaf::Int(i),
            None => Leaf::Double(n.as_f64().unwrap_or(0.0)),
        }
    }

    /// `AnyValue` body length; oneof members are written even when default.
    fn any_len(self) -> usize {
        match self {
            Leaf::Str(s) => field_len(tag::STRING_VALUE, s.len()),
            Leaf::Bool(_) => key_len(tag::BOOL_VALUE) + 1,
            Leaf::Int(i) => key_len(tag::INT_VALUE) + encoded_len_varint(i as u64),
            Leaf::Double(_) => key_len(tag::DOUBLE_VALUE) + 8,
        }
    }
}

/// The second pass: writes bytes, taking lengths from the first pass's slots.
struct Writer<'a> {
    sizes: &'a [usize],
    next: usize,
    buf: &'a mut Vec<u8>,
}

impl Writer<'_> {
    fn take(&mut self) -> usize {
        let len = self.peek();
        self.next += 1;
        len
    }

    fn peek(&self) -> usize {
        debug_assert!(self.next < self.sizes.len(), "size slots run out");
        self.sizes.get(self.next).copied().unwrap_or(0)
    }

    /// Key and length prefix of a length-delimited field.
    fn header(&mut self, tag: u32, len: usize) {
        encode_key(tag, WireType::LengthDelimited, self.buf);
        encode_varint(len as u64, self.buf);
    }

    /// A string written even when empty (a oneof member).
    fn str_always(&mut self, tag: u32, s: &str) {
        self.header(tag, s.len());
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// A proto3 string field, omitted when empty.
    fn str_field(&mut self, tag: u32, s: &str) {
        if !s.is_empty() {
            self.str_always(tag, s);
        }
    }

    fn fixed64_field(&mut self, tag: u32, v: u64) {
        if v != 0 {
            encode_key(tag, WireType::SixtyFourBit, self.buf);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn leaf(&mut self, leaf: Leaf<'_>) {
        match leaf {
            Leaf::Str(s) => self.str_always(tag::STRING_VALUE, s),
            Leaf::Bool(b) => {
                encode_key(tag::BOOL_VALUE, WireType::Varint, self.buf);
                encode_varint(u64::from(b), self.buf);
            }
            Leaf::Int(i) => {
                encode_key(tag::INT_VALUE, WireType::Varint, self.buf);
                encode_varint(i as u64, self.buf);
            }
            Leaf::Double(d) => {
                encode_key(tag::DOUBLE_VALUE, WireType::SixtyFourBit, self.buf);
                self.buf.extend_from_slice(&d.to_le_bytes());
            }
        }
    }

    /// A `KeyValue` field holding a scalar.
    fn leaf_kv(&mut self, tag: u32, key: &str, leaf: Leaf<'_>) {
        let any_len = leaf.any_len();
        self.header(tag, kv_len(key, any_len));
        self.str_field(tag::KV_KEY, key);
        self.header(tag::KV_VALUE, any_len);
        self.leaf(leaf);
    }

    /// `AnyValue` body length of `v`; an array's or object's comes from the
    /// next slot, which is its own.
    fn any_len(&self, v: &Value) -> usize {
        match v {
            Value::Array(_) => field_len(tag::ARRAY_VALUE, self.peek()),
            Value::Object(_) => field_len(tag::KVLIST_VALUE, self.peek()),
            Value::Null => 0,
            Value::Bool(b) => Leaf::Bool(*b).any_len(),
            Value::Number(n) => Leaf::from_number(n).any_len(),
            Value::String(s) => Leaf::Str(s).any_len(),
        }
    }

    /// Writes the body of `v` as an `AnyValue` (nothing for null: `value: None`).
    fn any(&mut self, v: &Value) {
        match v {
            Value::Array(a) => {
                let inner = self.take();
                self.header(tag::ARRAY_VALUE, inner);
                for e in a {
                    let len = self.any_len(e);
                    self.header(tag::VALUES, len);
                    self.any(e);
                }
            }
            Value::Object(o) => {
                let inner = self.take();
                self.header(tag::KVLIST_VALUE, inner);
                for (k, v) in o {
                    self.json_kv(tag::VALUES, k, v);
                }
            }
            Value::Null => {}
            Value::Bool(b) => self.leaf(Leaf::Bool(*b)),
            Value::Number(n) => self.leaf(Leaf::from_number(n)),
            Value::String(s) => self.leaf(Leaf::Str(s)),
        }
    }

    /// A `KeyValue` field holding any JSON value.
    fn json_kv(&mut self, tag: u32, key: &str, v: &Value) {
        let any_len = self.any_len(v);
        self.header(tag, kv_len(key, any_len));
        self.str_field(tag::KV_KEY, key);
        self.header(tag::KV_VALUE, any_len);
        self.any(v);
    }

    /// A `LogRecord` field, fields in tag order as prost writes them.
    fn record(&mut self, r: &LogRecord) {
        let len = self.take();
        self.header(tag::SCOPE_LOGS_LOG_RECORDS, len);
        self.fixed64_field(tag::TIME_UNIX_NANO, timestamp(r.timestamp_ns));
        let severity = r.severity.otlp_number();
        if severity != 0 {
            encode_key(tag::SEVERITY_NUMBER, WireType::Varint, self.buf);
            encode_varint(i64::from(severity) as u64, self.buf);
        }
        self.str_field(tag::SEVERITY_TEXT, severity_text(r.severity));
        let body = Leaf::Str(&r.body);
        self.header(tag::BODY, body.any_len());
        self.leaf(body);
        for (k, v) in &r.attributes {
            self.json_kv(tag::ATTRIBUTES, k, v);
        }
        if let Some(pos) = &r.position {
            self.leaf_kv(tag::ATTRIBUTES, POSITION_STREAM_KEY, Leaf::Str(&pos.stream));
            self.leaf_kv(
                tag::ATTRIBUTES,
                POSITION_OFFSET_KEY,
                Leaf::Int(position_offset(pos.offset)),
            );
        }
        self.fixed64_field(tag::OBSERVED_TIME_UNIX_NANO, timestamp(r.observed_ns));
    }
}

/// Where the next field of a [`RecordBuf`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    /// A `KeyValue` under this tag: `LogRecord.attributes` at the top, or
    /// `KeyValueList.values` inside an object.
    Kv(u32),
    /// An `AnyValue` in `ArrayValue.values`.
    Array,
}

/// An object or array of a [`RecordBuf`] whose members are being written.
#[derive(Debug)]
struct OpenValue {
    /// Where its members start in `attrs`; its headers go here on close.
    start: usize,
    /// Its key, in `keys`.
    key: std::ops::Range<usize>,
    /// What holds it.
    container: Container,
    /// An array (else an object).
    array: bool,
}

/// One log record written field by field, for a streaming body parser (a
/// [`FieldSink`](crate::body::FieldSink)): each attribute becomes OTLP bytes
/// as it is found, with no `Value` tree in between, and
/// [`RecordBuf::finish_into`] writes the record around them.
///
/// Nested objects and arrays cannot know their length in advance: their
/// members are written first and their headers inserted in front on close,
/// which moves the members once per level of nesting (log bodies are flat or
/// nearly so). For the same fields in the same order the bytes are those
/// [`encode_record_field`] writes.
#[derive(Debug, Default)]
pub struct RecordBuf {
    attrs: Vec<u8>,
    open: Vec<OpenValue>,
    keys: Vec<u8>,
    prefix: Vec<u8>,
    fields: usize,
}

/// The fields of a log record besides its attributes.
#[derive(Debug, Clone, Copy)]
pub struct RecordHead<'a> {
    /// Event time, ns since the epoch; 0 when unknown.
    pub timestamp_ns: i64,
    /// Observation time, ns since the epoch.
    pub observed_ns: i64,
    /// Severity.
    pub severity: Severity,
    /// The message.
    pub body: &'a str,
}

impl RecordBuf {
    /// Top-level attributes written so far.
    pub fn fields(&self) -> usize {
        self.fields
    }

    /// Forgets everything written, keeping the buffers.
    pub fn clear(&mut self) {
        self.attrs.clear();
        self.open.clear();
        self.keys.clear();
        self.fields = 0;
    }

    fn container(&self) -> Container {
        match self.open.last() {
            None => Container::Kv(tag::ATTRIBUTES),
            Some(o) if o.array => Container::Array,
            Some(_) => Container::Kv(tag::VALUES),
        }
    }

    fn writer(buf: &mut Vec<u8>) -> Writer<'_> {
        Writer {
            sizes: &[],
            next: 0,
            buf,
        }
    }

    /// Appends the record as one `ScopeLogs.log_records` field: `head`, the
    /// attributes written so far, then `extra`, attribute fields already
    /// encoded (by [`attr_field`]). Objects still open are closed first.
    pub fn finish_into(&mut self, head: &RecordHead<'_>, extra: &[&[u8]], out: &mut Vec<u8>) {
        while !self.open.is_empty() {
            crate::body::FieldSink::close(self);
        }
        let time = timestamp(head.timestamp_ns);
        let observed = timestamp(head.observed_ns);
        let severity = head.severity.otlp_number();
        let body = Leaf::Str(head.body);
        let extra_len: usize = extra.iter().map(|e| e.len()).sum();
        let len = fixed64_field_len(tag::TIME_UNIX_NANO, time)
            + severity_number_len(severity)
            + str_field_len(tag::SEVERITY_TEXT, severity_text(head.severity))
            + field_len(tag::BODY, body.any_len())
            + self.attrs.len()
            + extra_len
            + fixed64_field_len(tag::OBSERVED_TIME_UNIX_NANO, observed);
        out.reserve(len + 8);
        let mut w = Self::writer(out);
        w.header(tag::SCOPE_LOGS_LOG_RECORDS, len);
        w.fixed64_field(tag::TIME_UNIX_NANO, time);
        if severity != 0 {
            encode_key(tag::SEVERITY_NUMBER, WireType::Varint, w.buf);
            encode_varint(i64::from(severity) as u64, w.buf);
        }
        w.str_field(tag::SEVERITY_TEXT, severity_text(head.severity));
        w.header(tag::BODY, body.any_len());
        w.leaf(body);
        w.buf.extend_from_slice(&self.attrs);
        for e in extra {
            w.buf.extend_from_slice(e);
        }
        w.fixed64_field(tag::OBSERVED_TIME_UNIX_NANO, observed);
    }
}

fn leaf_of(v: Scalar<'_>) -> Option<Leaf<'_>> {
    match v {
        Scalar::Str(s) => Some(Leaf::Str(s)),
        Scalar::Int(i) => Some(Leaf::Int(i)),
        Scalar::Float(f) => Some(Leaf::Double(f)),
        Scalar::Bool(b) => Some(Leaf::Bool(b)),
        Scalar::Null => None,
    }
}

/// Writes one scalar member of `container`.
fn scalar_member(w: &mut Writer<'_>, container: Container, key: &str, v: Scalar<'_>) {
    let leaf = leaf_of(v);
    let any_len = leaf.map_or(0, Leaf::any_len);
    match container {
        Container::Kv(t) => {
            w.header(t, kv_len(key, any_len));
            w.str_field(tag::KV_KEY, key);
            w.header(tag::KV_VALUE, any_len);
        }
        Container::Array => w.header(tag::VALUES, any_len),
    }
    if let Some(l) = leaf {
        w.leaf(l);
    }
}

/// Appends one `LogRecord.attributes` field holding a scalar, for the
/// `extra` of [`RecordBuf::finish_into`] (attributes a source adds to every
/// record can be encoded once).
pub fn attr_field(key: &str, value: Scalar<'_>, out: &mut Vec<u8>) {
    let mut w = RecordBuf::writer(out);
    scalar_member(&mut w, Container::Kv(tag::ATTRIBUTES), key, value);
}

/// The source position attributes of a record, as [`encode_record_field`] writes
/// them: the stream's part (the same for every record of a stream, so it can
/// be encoded once) ...
pub fn position_stream_field(stream: &str, out: &mut Vec<u8>) {
    attr_field(POSITION_STREAM_KEY, Scalar::Str(stream), out);
}

/// ... and the offset's part.
pub fn position_offset_field(offset: u64, out: &mut Vec<u8>) {
    attr_field(
        POSITION_OFFSET_KEY,
        Scalar::Int(position_offset(offset)),
        out,
    );
}

impl FieldSink for RecordBuf {
    fn scalar(&mut self, key: &str, value: Scalar<'_>) {
        if self.open.is_empty() {
            self.fields += 1;
        }
        let container = self.container();
        scalar_member(&mut Self::writer(&mut self.attrs), container, key, value);
    }

    fn open(&mut self, key: &str, array: bool) {
        if self.open.is_empty() {
            self.fields += 1;
        }
        let container = self.container();
        let k = self.keys.len();
        self.keys.extend_from_slice(key.as_bytes());
        self.open.push(OpenValue {
            start: self.attrs.len(),
            key: k..self.keys.len(),
            container,
            array,
        });
    }

    fn close(&mut self) {
        let Some(o) = self.open.pop() else {
            return;
        };
        let inner = self.attrs.len().saturating_sub(o.start);
        let value_tag = if o.array {
            tag::ARRAY_VALUE
        } else {
            tag::KVLIST_VALUE
        };
        let any_len = field_len(value_tag, inner);
        let key = self
            .keys
            .get(o.key.clone())
            .and_then(|k| std::str::from_utf8(k).ok())
            .unwrap_or_default();
        self.prefix.clear();
        let mut w = Self::writer(&mut self.prefix);
        match o.container {
            Container::Kv(t) => {
                w.header(t, kv_len(key, any_len));
                w.str_field(tag::KV_KEY, key);
                w.header(tag::KV_VALUE, any_len);
            }
            Container::Array => w.header(tag::VALUES, any_len),
        }
        w.header(value_tag, inner);
        self.keys.truncate(o.key.start);
        let at = o.start.min(self.attrs.len());
        self.attrs.splice(at..at, self.prefix.iter().copied());
    }

    fn reset(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use proptest::prelude::*;
    use prost::Message;
    use serde_json::json;

    use super::*;
    use crate::model::SourcePosition;
    use crate::otlp::{decode_logs, encode_logs};

    /// Records tagged with their resource group and stably sorted by it:
    /// groups in order of first appearance, records in input order within a
    /// group — the grouping `encode_logs` makes.
    fn group_by_resource(records: &[LogRecord]) -> Vec<(usize, &LogRecord)> {
        let mut index: BTreeMap<&BTreeMap<String, String>, usize> = BTreeMap::new();
        let mut tagged: Vec<(usize, &LogRecord)> = records
            .iter()
            .map(|r| {
                let next = index.len();
                (*index.entry(&r.resource.attributes).or_insert(next), r)
            })
            .collect();
        tagged.sort_by_key(|(g, _)| *g);
        tagged
    }

    /// Asserts the wire bytes are prost's bytes for `encode_logs`, and that
    /// prost decodes them to the same request.
    fn assert_same_as_prost(records: &[LogRecord]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_logs_wire(records, &mut buf);
        let reference = encode_logs(records);
        let decoded = ExportLogsServiceRequest::decode(&buf[..]);
        assert_eq!(decoded.as_ref().ok(), Some(&reference));
        assert_eq!(buf, reference.encode_to_vec());
        buf
    }

    /// The records in the order `decode_logs` returns them: grouped by resource
    /// in order of first appearance.
    fn grouped(records: &[LogRecord]) -> Vec<LogRecord> {
        group_by_resource(records)
            .into_iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    fn decoded(buf: &[u8]) -> Vec<LogRecord> {
        ExportLogsServiceRequest::decode(buf)
            .map(decode_logs)
            .unwrap_or_default()
    }

    #[test]
    fn empty_batch_is_an_empty_request() {
        let buf = assert_same_as_prost(&[]);
        assert!(buf.is_empty());
    }

    #[test]
    fn appends_to_what_the_buffer_holds() {
        let mut buf = vec![7, 7];
        encode_logs_wire(&[LogRecord::new("x", 1)], &mut buf);
        assert_eq!(buf.get(..2), Some(&[7u8, 7][..]));
        assert_eq!(decoded(&buf[2..]), vec![LogRecord::new("x", 1)]);
    }

    #[test]
    fn empty_strings_and_default_record_match_prost() {
        let mut r = LogRecord::new("", 0);
        r.attributes.insert(String::new(), json!(""));
        r.resource.set("", "");
        let buf = assert_same_as_prost(&[r.clone(), LogRecord::default()]);
        assert_eq!(decoded(&buf).len(), 2);
    }

    #[test]
    fn null_attribute_is_an_any_value_without_value() {
        let mut r = LogRecord::new("b", 1);
        r.attributes.insert("n".into(), Value::Null);
        r.attributes.insert("a".into(), json!([null, {"x": null}]));
        let buf = assert_same_as_prost(std::slice::from_ref(&r));
        assert_eq!(decoded(&buf), vec![r]);
    }

    #[test]
    fn numbers_at_the_edges_match_prost() {
        let mut r = LogRecord::new("b", i64::MAX);
        r.timestamp_ns = i64::MAX;
        r.severity = Severity::Fatal;
        r.attributes.insert("min".into(), json!(i64::MIN));
        r.attributes.insert("max".into(), json!(i64::MAX));
        r.attributes.insert("neg".into(), json!(-1));
        r.attributes.insert("zero".into(), json!(0));
        r.attributes.insert("pi".into(), json!(3.25));
        r.attributes.insert("whole".into(), json!(2.0));
        r.attributes.insert("tiny".into(), json!(f64::MIN_POSITIVE));
        r.attributes.insert("negzero".into(), json!(-0.0));
        r.position = Some(SourcePosition {
            stream: "s".into(),
            offset: u64::MAX,
        });
        assert_same_as_prost(std::slice::from_ref(&r));
        // Beyond i64, JSON integers travel as doubles, as in `encode_logs`.
        r.attributes.insert("huge".into(), json!(u64::MAX));
        r.position = None;
        assert_same_as_prost(&[r]);
    }

    #[test]
    fn negative_timestamps_are_left_out_as_in_encode_logs() {
        let mut r = LogRecord::new("b", -5);
        r.timestamp_ns = -1;
        assert_same_as_prost(&[r]);
    }

    #[test]
    fn records_group_by_resource_by_pointer_and_by_content() {
        let mut a = Resource::default();
        a.set("k8s.pod.name", "a");
        let mut b = Resource::default();
        b.set("k8s.pod.name", "b");
        // Equal content, another allocation: must join `a`'s group.
        let a2 = Resource {
            attributes: Arc::new((*a.attributes).clone()),
        };
        let mk = |body: &str, res: &Resource| {
            let mut r = LogRecord::new(body, 1);
            r.resource = res.clone();
            r
        };
        let records = [mk("1", &a), mk("2", &b), mk("3", &a2), mk("4", &b)];
        let buf = assert_same_as_prost(&records);
        let req = ExportLogsServiceRequest::decode(&buf[..]).unwrap_or_default();
        assert_eq!(req.resource_logs.len(), 2);
        let bodies: Vec<String> = decoded(&buf).into_iter().map(|r| r.body).collect();
        assert_eq!(bodies, ["1", "3", "2", "4"]);
    }

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (prop::num::f64::NORMAL
                | prop::num::f64::SUBNORMAL
                | prop::num::f64::ZERO
                | prop::num::f64::NEGATIVE
                | prop::num::f64::POSITIVE)
                .prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::String),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        json_leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{0,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn severity() -> impl Strategy<Value = Severity> {
        prop::sample::select(Severity::ALL.to_vec())
    }

    /// A record whose resource is one of three shared ones, either the shared
    /// allocation itself or an equal copy.
    fn record(resources: Arc<Vec<Resource>>) -> impl Strategy<Value = LogRecord> {
        (
            prop_oneof![Just(0i64), 0..=i64::MAX],
            prop_oneof![Just(0i64), 0..=i64::MAX],
            severity(),
            "\\PC{0,30}",
            prop::collection::btree_map("[a-z_]{0,6}", json_value(), 0..5),
            (0..resources.len(), any::<bool>()),
            prop::option::of(("[a-z0-9]{0,8}", 0..=i64::MAX as u64)),
        )
            .prop_map(
                move |(ts, observed, severity, body, attrs, (ri, copy), pos)| {
                    let shared = resources.get(ri).cloned().unwrap_or_default();
                    let resource = if copy {
                        Resource {
                            attributes: Arc::new((*shared.attributes).clone()),
                        }
                    } else {
                        shared
                    };
                    LogRecord {
                        timestamp_ns: ts,
                        observed_ns: observed,
                        severity,
                        body,
                        attributes: attrs.into_iter().collect(),
                        resource,
                        position: pos.map(|(stream, offset)| SourcePosition {
                            stream: stream.into(),
                            offset,
                        }),
                    }
                },
            )
    }

    fn resources() -> Arc<Vec<Resource>> {
        let mut shop = Resource::default();
        shop.set("k8s.namespace.name", "shop");
        shop.set("k8s.pod.name", "web-7d9f8b-x2x9z");
        let mut auth = Resource::default();
        auth.set("k8s.namespace.name", "auth");
        Arc::new(vec![Resource::default(), shop, auth])
    }

    /// `r` written through a `RecordBuf`, attributes in map order.
    fn streamed(r: &LogRecord, sink: &mut RecordBuf) -> Vec<u8> {
        sink.clear();
        for (k, v) in &r.attributes {
            crate::body::feed(sink, k, v);
        }
        let mut extra = Vec::new();
        if let Some(pos) = &r.position {
            position_stream_field(&pos.stream, &mut extra);
            position_offset_field(pos.offset, &mut extra);
        }
        let head = RecordHead {
            timestamp_ns: r.timestamp_ns,
            observed_ns: r.observed_ns,
            severity: r.severity,
            body: &r.body,
        };
        let mut out = Vec::new();
        sink.finish_into(&head, &[&extra], &mut out);
        out
    }

    #[test]
    fn a_reset_sink_forgets_open_values_and_fields() {
        let mut sink = RecordBuf::default();
        sink.open("a", false);
        sink.scalar("b", Scalar::Int(1));
        FieldSink::reset(&mut sink);
        assert_eq!(sink.fields(), 0);
        let r = LogRecord::new("x", 1);
        assert_eq!(streamed(&r, &mut sink), {
            let mut out = Vec::new();
            encode_record_field(&r, &mut Vec::new(), &mut out);
            out
        });
    }

    proptest! {
        /// The streaming writer and the record encoder agree byte for byte,
        /// nested values included, with one sink reused for every record.
        #[test]
        fn record_buf_writes_what_encode_record_writes(
            records in prop::collection::vec(record(resources()), 1..20)
        ) {
            let mut sink = RecordBuf::default();
            for r in &records {
                let mut want = Vec::new();
                encode_record_field(r, &mut Vec::new(), &mut want);
                prop_assert_eq!(streamed(r, &mut sink), want);
                prop_assert_eq!(sink.fields(), r.attributes.len());
            }
        }

        #[test]
        fn wire_bytes_are_prosts_bytes_and_round_trip(
            records in prop::collection::vec(record(resources()), 0..40)
        ) {
            let buf = assert_same_as_prost(&records);
            prop_assert_eq!(decoded(&buf), grouped(&records));
        }

        /// A reused encoder writes each batch as a fresh one would, and two
        /// requests written back to back decode as one request holding both:
        /// what lets the forwarder join buffered requests without re-encoding.
        #[test]
        fn reused_encoder_and_concatenated_requests(
            a in prop::collection::vec(record(resources()), 0..20),
            b in prop::collection::vec(record(resources()), 0..20),
        ) {
            let mut enc = LogsEncoder::default();
            let mut joined = Vec::new();
            for batch in [&a, &b] {
                for r in batch.iter() {
                    enc.push(r);
                }
                prop_assert_eq!(enc.records(), batch.len());
                let mut alone = Vec::new();
                encode_logs_wire(batch, &mut alone);
                let before = joined.len();
                enc.finish_into(&mut joined);
                prop_assert!(enc.is_empty());
                prop_assert_eq!(&joined[before..], &alone[..]);
            }
            let mut expected = grouped(&a);
            expected.extend(grouped(&b));
            prop_assert_eq!(decoded(&joined), expected);
        }
    }
}
