//! Turning one file's physical lines into log records.
//!
//! Per file: container envelope (configured, or detected from the first line
//! read) → partial-line merging (per stream) → multiline joining (per stream) →
//! body parsing → [`LogRecord`]. Every alteration is flagged on the record and
//! counted with its reason.
//!
//! Records leave in the order of their end offsets, so that positions are
//! monotonic per file even when a multiline record on one stream completes after
//! lines of the other stream: a finished record waits (in `held`) while another
//! stream's pending record might still end before it. Alongside records the
//! decoder emits *commit* offsets: every byte before a commit offset belongs to
//! a record already emitted, which is what a checkpoint may safely advance to.
//! This module does no I/O and reads no clock of its own.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mecha_parsers::body::{
    BodyFormat, Scalar, StreamScratch, Streamed, feed, parse_body, parse_body_streaming,
};
use mecha_parsers::container::{self, ContainerFormat, ContainerLine, PartialMerger, Stream};
use mecha_parsers::kubepath::parse_kube_path;
use mecha_parsers::model::keys;
use mecha_parsers::multiline::{Joiner, MultilineRule};
use mecha_parsers::otlp::{
    POSITION_OFFSET_KEY, POSITION_STREAM_KEY, RecordBuf, RecordHead, attr_field,
    position_offset_field, position_stream_field,
};
use mecha_parsers::{Resource, Severity};
use serde_json::{Map, Value};

use super::COMPONENT;
use crate::enrich::meta::Multiline;
use crate::metrics::{AgentMetrics, reason};

/// Attribute holding the original text when a body parsed into fields.
pub(super) const ORIGINAL_BODY: &str = "log.original";

/// A pending partial message is emitted alone after this much idle time
/// (a runtime writes the pieces of one message back to back).
const PARTIAL_IDLE_FLUSH: Duration = Duration::from_secs(5);

/// More finished records than this waiting behind another stream's pending
/// multiline record force that record out (bounds memory).
const MAX_HELD: usize = 1024;

/// The decoding settings shared by every file.
pub(super) struct DecodeCtx {
    /// Envelope format; `None` detects it per file.
    pub container_format: Option<ContainerFormat>,
    /// Body format.
    pub body_format: BodyFormat,
    /// Keep the original text under [`ORIGINAL_BODY`] when a body has fields.
    pub keep_original_body: bool,
    /// Multiline rule; `None` is off.
    pub multiline: Option<MultilineRule>,
    /// Idle time after which a pending multiline record is emitted.
    pub multiline_flush: Duration,
    /// Most lines in one multiline record.
    pub multiline_max_lines: usize,
    /// Most bytes of a merged or joined message.
    pub max_merged_bytes: usize,
    /// Sets `k8s.node.name` on every resource.
    pub node_name: Option<String>,
    /// Pod metadata, for files with a kubelet path.
    pub kube: Option<Arc<crate::enrich::KubeMeta>>,
    /// Where alterations are counted.
    pub metrics: Arc<AgentMetrics>,
    /// Wall clock in ns since the epoch, for `observed_ns` (a field so tests can
    /// pin it).
    pub wall_ns: fn() -> i64,
}

#[cfg(test)]
impl DecodeCtx {
    /// A copy, for tests that change one setting.
    pub(super) fn clone_for_test(&self) -> DecodeCtx {
        DecodeCtx {
            container_format: self.container_format,
            body_format: self.body_format,
            keep_original_body: self.keep_original_body,
            multiline: self.multiline.clone(),
            multiline_flush: self.multiline_flush,
            multiline_max_lines: self.multiline_max_lines,
            max_merged_bytes: self.max_merged_bytes,
            node_name: self.node_name.clone(),
            kube: self.kube.clone(),
            metrics: self.metrics.clone(),
            wall_ns: self.wall_ns,
        }
    }
}

/// What the decoder hands to the chunk builder.
#[derive(Debug)]
pub(super) enum Item {
    /// The records that follow come from this file.
    Source {
        /// Its resource.
        resource: Resource,
        /// Its stream identity.
        stream: Arc<str>,
    },
    /// A finished record: its `ScopeLogs.log_records` field, in
    /// [`Emitted::bytes`].
    Record {
        /// Where its bytes are.
        bytes: std::ops::Range<usize>,
        /// When not 0, every byte of the stream before this offset is in
        /// records emitted so far, this one included: the commit travels
        /// with the record, not as an item (and an `Arc` clone) per line.
        commit: u64,
    },
    /// Every byte of the stream before `offset` is in emitted records (when
    /// no record carries it).
    Commit {
        /// File fingerprint.
        stream: Arc<str>,
        /// The safe offset.
        offset: u64,
    },
}

/// The output of the decoders in one round: items in order, the records'
/// encoded bytes alongside (one buffer, not one allocation per record).
#[derive(Debug, Default)]
pub(super) struct Emitted {
    /// Items in order.
    pub items: Vec<Item>,
    /// The bytes the records' ranges point into.
    pub bytes: Vec<u8>,
    /// The stream of the last record, to announce a change only.
    last: Option<Arc<str>>,
}

impl Emitted {
    fn record(&mut self, resource: &Resource, stream: &Arc<str>, field: &[u8]) {
        if !self.last.as_ref().is_some_and(|s| Arc::ptr_eq(s, stream)) {
            self.items.push(Item::Source {
                resource: resource.clone(),
                stream: stream.clone(),
            });
            self.last = Some(stream.clone());
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(field);
        self.items.push(Item::Record {
            bytes: start..self.bytes.len(),
            commit: 0,
        });
    }

    /// Records that every byte of `stream` before `offset` is emitted: on
    /// the last record if it is the stream's, else as an item.
    fn commit(&mut self, stream: &Arc<str>, offset: u64) {
        let ours = self.last.as_ref().is_some_and(|s| Arc::ptr_eq(s, stream));
        if let (true, Some(Item::Record { commit, .. })) = (ours, self.items.last_mut()) {
            *commit = offset;
            return;
        }
        self.items.push(Item::Commit {
            stream: stream.clone(),
            offset,
        });
    }

    /// Empties it for the next round, keeping the buffers.
    pub fn clear(&mut self) {
        self.items.clear();
        self.bytes.clear();
        self.last = None;
    }
}

/// Attributes the decoder adds to records itself: a body with one of these
/// keys takes the reference path, where the decoder's value replaces it.
const ADDED_KEYS: [&str; 8] = [
    ORIGINAL_BODY,
    keys::IOSTREAM,
    keys::FILE_PATH,
    keys::TRUNCATED,
    keys::INVALID_UTF8,
    keys::PARSE_ERROR,
    POSITION_STREAM_KEY,
    POSITION_OFFSET_KEY,
];

/// Flags collected over the lines of one record.
#[derive(Debug, Clone, Default, PartialEq)]
struct Flags {
    truncated: bool,
    invalid_utf8: bool,
    parse_error: Option<String>,
}

impl Flags {
    /// Appends the flags' attributes, as the reference path sets them.
    fn encode(&self, out: &mut Vec<u8>) {
        if self.truncated {
            attr_field(keys::TRUNCATED, Scalar::Bool(true), out);
        }
        if self.invalid_utf8 {
            attr_field(keys::INVALID_UTF8, Scalar::Bool(true), out);
        }
        if let Some(err) = &self.parse_error {
            attr_field(keys::PARSE_ERROR, Scalar::Str(err), out);
        }
    }

    fn merge(&mut self, other: &Flags) {
        self.truncated |= other.truncated;
        self.invalid_utf8 |= other.invalid_utf8;
        if self.parse_error.is_none() {
            self.parse_error.clone_from(&other.parse_error);
        }
    }
}

/// Position and envelope data of one (merged) line, carried through the joiner.
#[derive(Debug, Clone)]
pub(super) struct LineMeta {
    start: u64,
    end: u64,
    timestamp_ns: i64,
}

/// A partial message waiting for its final piece, per stream.
#[derive(Debug, Default)]
struct PartialSpan {
    start: Option<u64>,
    end: Option<u64>,
    flags: Flags,
    last_push: Option<Instant>,
}

/// A multiline joiner and what the decoder knows of its pending record.
struct Slot {
    joiner: Joiner<LineMeta>,
    pending: bool,
    start: u64,
    last_end: u64,
    flags: Flags,
    last_push: Option<Instant>,
}

/// A finished record waiting for in-order release; its bytes are in the
/// decoder's `arena`.
#[derive(Debug)]
struct Held {
    start: u64,
    end: u64,
    bytes: std::ops::Range<usize>,
}

/// The encoding state of one file's records, reused from record to record.
struct Encoding {
    /// The record being written.
    sink: RecordBuf,
    scratch: StreamScratch,
    /// `log.file.path`, the same for every record of the file.
    path_attr: Vec<u8>,
    /// The position's stream attribute, likewise.
    stream_attr: Vec<u8>,
    /// The position's offset attribute of the record being written.
    offset_attr: Vec<u8>,
    /// `log.iostream` of stdout and stderr.
    iostream: [Vec<u8>; 2],
    /// Per-record attributes added after the body's.
    extra: Vec<u8>,
    /// Encoded held records.
    arena: Vec<u8>,
    /// The wall clock at the last `now` seen, for `observed_ns`: read once
    /// per round, not once per record.
    wall: Option<(Instant, i64)>,
}

/// The decoding state of one file.
pub(super) struct Decoder {
    ctx: Arc<DecodeCtx>,
    stream_id: Arc<str>,
    path: String,
    resource: Resource,
    /// The file's pod, when pod metadata is on and the path names one.
    kube: Option<super::kube::FileKube>,
    /// Its pod's annotations drop its records.
    excluded: bool,
    /// The body format: the source's, or the pod's annotation.
    body_format: BodyFormat,
    /// The multiline joining in force: the source's, or the pod's annotation.
    multiline: Multiline,
    format: Option<ContainerFormat>,
    merger: PartialMerger,
    partials: [PartialSpan; 3],
    slots: Option<[Slot; 3]>,
    held: VecDeque<Held>,
    enc: Encoding,
    /// The last commit offset handed out: every byte before it is in
    /// released records.
    last_commit: u64,
    records_in: prometheus::IntCounter,
}

/// The joining a file gets: its pod's annotation, else the source's.
fn effective_multiline(ctx: &DecodeCtx, annotation: Option<Multiline>) -> Multiline {
    annotation.unwrap_or_else(|| {
        ctx.multiline
            .clone()
            .map_or(Multiline::Off, Multiline::Rule)
    })
}

/// One joiner per stream, or none when joining is off.
fn make_slots(ctx: &DecodeCtx, multiline: &Multiline) -> Option<[Slot; 3]> {
    let Multiline::Rule(rule) = multiline else {
        return None;
    };
    let make = || Slot {
        joiner: Joiner::new(
            rule.clone(),
            ctx.max_merged_bytes,
            ctx.multiline_max_lines.max(1),
        ),
        pending: false,
        start: 0,
        last_end: 0,
        flags: Flags::default(),
        last_push: None,
    };
    Some([make(), make(), make()])
}

fn slot_of(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
        Stream::Unknown => 2,
    }
}

const STREAMS: [Stream; 3] = [Stream::Stdout, Stream::Stderr, Stream::Unknown];

impl Decoder {
    /// A decoder for the file `path` with identity `stream_id`, whose reading
    /// starts at `offset`.
    pub fn new(ctx: Arc<DecodeCtx>, stream_id: Arc<str>, path: &Path, offset: u64) -> Self {
        let path = path.to_string_lossy().into_owned();
        let mut resource = Resource::default();
        let kube_path = parse_kube_path(&path);
        if let Some(kube) = &kube_path {
            kube.apply(&mut resource);
        }
        if let Some(node) = &ctx.node_name {
            resource.set(keys::NODE, node.clone());
        }
        let kube = ctx
            .kube
            .clone()
            .zip(kube_path)
            .map(|(k, p)| super::kube::FileKube::new(k, p, resource.clone()));
        let settings = kube.as_ref().map(|k| k.settings()).unwrap_or_default();
        if let Some(k) = &kube {
            resource = k.resource();
        }
        if settings.excluded {
            ctx.metrics.kube_files_excluded.inc();
        }
        let multiline = effective_multiline(&ctx, settings.multiline);
        let slots = make_slots(&ctx, &multiline);
        let body_format = settings.body_format.unwrap_or(ctx.body_format);
        let records_in = ctx.metrics.events_in.with_label_values(&[COMPONENT]);
        let mut path_attr = Vec::new();
        attr_field(keys::FILE_PATH, Scalar::Str(&path), &mut path_attr);
        let mut stream_attr = Vec::new();
        position_stream_field(&stream_id, &mut stream_attr);
        let iostream = [Stream::Stdout, Stream::Stderr].map(|s| {
            let mut b = Vec::new();
            attr_field(keys::IOSTREAM, Scalar::Str(s.as_str()), &mut b);
            b
        });
        let enc = Encoding {
            sink: RecordBuf::default(),
            scratch: StreamScratch::with_reserved_keys(&ADDED_KEYS),
            path_attr,
            stream_attr,
            offset_attr: Vec::new(),
            iostream,
            extra: Vec::new(),
            arena: Vec::new(),
            wall: None,
        };
        Decoder {
            enc,
            merger: PartialMerger::new(ctx.max_merged_bytes),
            format: ctx.container_format,
            ctx,
            stream_id,
            path,
            resource,
            kube,
            excluded: settings.excluded,
            body_format,
            multiline,
            partials: Default::default(),
            slots,
            held: VecDeque::new(),
            last_commit: offset,
            records_in,
        }
    }

    /// The file's identity.
    pub fn stream_id(&self) -> &Arc<str> {
        &self.stream_id
    }

    /// Takes up a change of the file's pod in the cache (labels, exclusion,
    /// parser and multiline annotations) for the records released from now
    /// on. Cheap when nothing changed.
    ///
    /// A file opened before its pod was known (API server away, or
    /// `wait_for_metadata` ran out) was decoded with the source's settings;
    /// once the pod's `mecha.io/parser*` or `mecha.io/multiline` arrive, the
    /// records pending under the old settings are finished as they are
    /// (queued in order, so no line is lost or sent twice and the commit
    /// offset stays behind what is not yet released) and the lines read
    /// from then on follow the new ones. Records finished earlier keep the
    /// settings they were decoded with.
    pub fn refresh_kube(&mut self) {
        let Some(k) = self.kube.as_mut() else { return };
        if !k.refresh() {
            return;
        }
        self.resource = k.resource();
        let settings = k.settings();
        if settings.excluded && !self.excluded {
            self.ctx.metrics.kube_files_excluded.inc();
        }
        self.excluded = settings.excluded;
        let body_format = settings.body_format.unwrap_or(self.ctx.body_format);
        let multiline = effective_multiline(&self.ctx, settings.multiline);
        if body_format == self.body_format && multiline == self.multiline {
            return;
        }
        // Finish what is pending with the settings its first lines were read
        // under; `release` hands it out in end-offset order.
        self.flush_slots(|_| true);
        self.body_format = body_format;
        if multiline != self.multiline {
            self.slots = make_slots(&self.ctx, &multiline);
            self.multiline = multiline;
        }
    }

    /// Decodes one physical line spanning `start..end` of the file.
    pub fn line(
        &mut self,
        bytes: &[u8],
        start: u64,
        end: u64,
        truncated: bool,
        now: Instant,
        out: &mut Emitted,
    ) {
        self.tick(now);
        let metrics = &self.ctx.metrics;
        if truncated {
            metrics.discard(COMPONENT, reason::LINE_TRUNCATED);
        }
        let format = *self.format.get_or_insert_with(|| container::detect(bytes));
        let mut flags = Flags {
            truncated,
            ..Flags::default()
        };
        let parsed = match format {
            // Plain files written on Windows end lines with "\r\n".
            ContainerFormat::Plain => Ok(ContainerLine {
                timestamp_ns: 0,
                stream: Stream::Unknown,
                partial: false,
                message: std::borrow::Cow::Borrowed(bytes.strip_suffix(b"\r").unwrap_or(bytes)),
            }),
            f => container::parse_line(f, bytes),
        };
        let cl = match parsed {
            Ok(cl) => cl,
            Err(e) => {
                // Bad input is data: keep the raw line as the message.
                metrics.discard(COMPONENT, reason::ENVELOPE_ERROR);
                flags.parse_error = Some(e.to_string());
                let meta = LineMeta {
                    start,
                    end,
                    timestamp_ns: 0,
                };
                self.message(bytes.to_vec(), Stream::Unknown, meta, flags, now);
                self.release(end, out);
                return;
            }
        };
        let index = slot_of(cl.stream);
        if let Some(span) = self.partials.get_mut(index) {
            span.start.get_or_insert(start);
            span.end = Some(end);
            span.flags.merge(&flags);
            span.last_push = Some(now);
        }
        if let Some(merged) = self.merger.push(cl) {
            let span = self
                .partials
                .get_mut(index)
                .map(std::mem::take)
                .unwrap_or_default();
            let mut flags = span.flags;
            if merged.truncated {
                metrics.discard(COMPONENT, reason::MERGE_TRUNCATED);
                flags.truncated = true;
            }
            let meta = LineMeta {
                start: span.start.unwrap_or(start),
                end,
                timestamp_ns: merged.timestamp_ns,
            };
            self.message(merged.message, merged.stream, meta, flags, now);
        }
        self.release(end, out);
    }

    /// A whole message (partials merged): into the joiner, or straight to a record.
    fn message(
        &mut self,
        bytes: Vec<u8>,
        stream: Stream,
        meta: LineMeta,
        mut flags: Flags,
        now: Instant,
    ) {
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                self.ctx.metrics.discard(COMPONENT, reason::INVALID_UTF8);
                flags.invalid_utf8 = true;
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            }
        };
        let index = slot_of(stream);
        let Some(slot) = self.slots.as_mut().and_then(|s| s.get_mut(index)) else {
            let held = self.build(
                &text,
                stream,
                meta.start,
                meta.end,
                meta.timestamp_ns,
                flags,
            );
            self.hold(held);
            return;
        };
        let (line_start, line_end) = (meta.start, meta.end);
        let was_pending = slot.pending;
        let joined = slot.joiner.push(text, meta);
        let mut finished = None;
        match joined {
            Some(j) if j.last.end == line_end => {
                // The current line completed the record (a limit was reached).
                let mut f = std::mem::take(&mut slot.flags);
                f.merge(&flags);
                finished = Some((j, f));
            }
            Some(j) => {
                // The current line starts a new record.
                let f = std::mem::replace(&mut slot.flags, flags);
                slot.start = line_start;
                finished = Some((j, f));
            }
            None => {
                if !was_pending {
                    slot.start = line_start;
                }
                slot.flags.merge(&flags);
            }
        }
        slot.pending = slot.joiner.is_pending();
        slot.last_end = line_end;
        slot.last_push = Some(now);
        if let Some((j, mut f)) = finished {
            if j.truncated {
                self.ctx
                    .metrics
                    .discard(COMPONENT, reason::MULTILINE_TRUNCATED);
                f.truncated = true;
            }
            let held = self.build(
                &j.text,
                stream,
                j.first.start,
                j.last.end,
                j.first.timestamp_ns,
                f,
            );
            self.hold(held);
        }
    }

    /// Reads the wall clock for `observed_ns` once per distinct `now`.
    fn tick(&mut self, now: Instant) {
        if self.enc.wall.is_none_or(|(at, _)| at != now) {
            self.enc.wall = Some((now, (self.ctx.wall_ns)()));
        }
    }

    /// Parses the body and encodes the record into the arena.
    ///
    /// The streaming parser writes the body's fields straight into the
    /// record; lines it does not handle take the reference path (a map,
    /// where the decoder's attributes replace the body's of the same name),
    /// which writes the same record.
    fn build(
        &mut self,
        text: &str,
        stream: Stream,
        start: u64,
        end: u64,
        envelope_ts: i64,
        flags: Flags,
    ) -> Held {
        let ctx = &self.ctx;
        let enc = &mut self.enc;
        enc.sink.clear();
        enc.extra.clear();
        let observed_ns = enc.wall.map_or_else(|| (ctx.wall_ns)(), |(_, w)| w);
        let from = enc.arena.len();
        enc.offset_attr.clear();
        position_offset_field(end, &mut enc.offset_attr);
        match parse_body_streaming(self.body_format, text, &mut enc.sink, &mut enc.scratch) {
            Streamed::Parsed(l) => {
                if l.fields > 0 && ctx.keep_original_body {
                    attr_field(ORIGINAL_BODY, Scalar::Str(text), &mut enc.extra);
                }
                if let Some(io) = enc.iostream.get(slot_of(stream)) {
                    enc.extra.extend_from_slice(io);
                }
                flags.encode(&mut enc.extra);
                let head = RecordHead {
                    timestamp_ns: if envelope_ts > 0 {
                        envelope_ts
                    } else {
                        l.timestamp_ns.unwrap_or(0)
                    },
                    observed_ns,
                    severity: l.severity.unwrap_or(Severity::Unspecified),
                    body: if l.message_lifted {
                        &enc.scratch.message
                    } else {
                        text
                    },
                };
                let extra: [&[u8]; 4] = [
                    &enc.extra,
                    &enc.path_attr,
                    &enc.stream_attr,
                    &enc.offset_attr,
                ];
                enc.sink.finish_into(&head, &extra, &mut enc.arena);
            }
            Streamed::NotHandled => {
                enc.sink.clear();
                let (attrs, body, timestamp_ns, severity) = self.reference(text, stream, flags);
                let enc = &mut self.enc;
                for (k, v) in &attrs {
                    feed(&mut enc.sink, k, v);
                }
                let head = RecordHead {
                    timestamp_ns: if envelope_ts > 0 {
                        envelope_ts
                    } else {
                        timestamp_ns
                    },
                    observed_ns,
                    severity,
                    body: &body,
                };
                let extra: [&[u8]; 2] = [&enc.stream_attr, &enc.offset_attr];
                enc.sink.finish_into(&head, &extra, &mut enc.arena);
            }
        }
        Held {
            start,
            end,
            bytes: from..self.enc.arena.len(),
        }
    }

    /// The reference path of [`Decoder::build`]: attributes, body, time and
    /// severity of a line the streaming parser left alone.
    fn reference(
        &self,
        text: &str,
        stream: Stream,
        mut flags: Flags,
    ) -> (Map<String, Value>, String, i64, Severity) {
        let ctx = &self.ctx;
        let (mut attrs, body, timestamp_ns, severity) = match parse_body(self.body_format, text) {
            Ok(parsed) => {
                let mut attrs = parsed.fields;
                if !attrs.is_empty() && ctx.keep_original_body {
                    attrs.insert(ORIGINAL_BODY.to_owned(), Value::String(text.to_owned()));
                }
                (
                    attrs,
                    parsed.message,
                    parsed.timestamp_ns.unwrap_or(0),
                    parsed.severity.unwrap_or(Severity::Unspecified),
                )
            }
            Err(e) => {
                ctx.metrics.discard(COMPONENT, reason::BODY_PARSE_ERROR);
                if flags.parse_error.is_none() {
                    flags.parse_error = Some(e.to_string());
                }
                (Map::new(), text.to_owned(), 0, Severity::Unspecified)
            }
        };
        if stream != Stream::Unknown {
            attrs.insert(
                keys::IOSTREAM.to_owned(),
                Value::String(stream.as_str().to_owned()),
            );
        }
        attrs.insert(keys::FILE_PATH.to_owned(), Value::String(self.path.clone()));
        if flags.truncated {
            attrs.insert(keys::TRUNCATED.to_owned(), Value::Bool(true));
        }
        if flags.invalid_utf8 {
            attrs.insert(keys::INVALID_UTF8.to_owned(), Value::Bool(true));
        }
        if let Some(err) = flags.parse_error {
            attrs.insert(keys::PARSE_ERROR.to_owned(), Value::String(err));
        }
        (attrs, body, timestamp_ns, severity)
    }

    /// Drops released records' bytes from the arena: all of them once
    /// nothing is held, else the dead head once it is most of the arena.
    fn compact_arena(&mut self) {
        let arena = &mut self.enc.arena;
        let Some(live) = self.held.iter().map(|h| h.bytes.start).min() else {
            arena.clear();
            return;
        };
        if live >= 64 * 1024 && live * 2 >= arena.len() {
            arena.drain(..live);
            for h in &mut self.held {
                h.bytes = h.bytes.start - live..h.bytes.end - live;
            }
        }
    }

    /// Queues a finished record in end-offset order.
    fn hold(&mut self, held: Held) {
        let at = self.held.partition_point(|h| h.end <= held.end);
        self.held.insert(at, held);
    }

    /// The smallest last-line end of any pending multiline record: a finished
    /// record ending after it must wait, because that record may end first.
    fn pending_bound(&self) -> u64 {
        self.slots
            .iter()
            .flatten()
            .filter(|s| s.pending)
            .map(|s| s.last_end)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Emits the records that can no longer be overtaken, then the new commit
    /// offset; `consumed` is the offset past the last line decoded.
    fn release(&mut self, consumed: u64, out: &mut Emitted) {
        if self.held.len() > MAX_HELD {
            // Another stream's record has been pending for too long behind a
            // flood on this one: emit it as it is rather than hold without bound.
            self.flush_slots(|_| true);
        }
        let bound = self.pending_bound();
        let mut released = 0;
        while self.held.front().is_some_and(|h| h.end < bound) {
            if let Some(h) = self.held.pop_front() {
                released += 1;
                if self.excluded {
                    self.ctx.metrics.discard(COMPONENT, reason::KUBE_EXCLUDED);
                    continue;
                }
                let field = self.enc.arena.get(h.bytes).unwrap_or(&[]);
                out.record(&self.resource, &self.stream_id, field);
            }
        }
        self.records_in.inc_by(released);
        if let Some(k) = self.kube.as_ref().filter(|_| !self.excluded) {
            k.count_without(released);
        }
        self.compact_arena();
        let mut commit = consumed;
        for span in &self.partials {
            if let Some(s) = span.start {
                commit = commit.min(s);
            }
        }
        for slot in self.slots.iter().flatten().filter(|s| s.pending) {
            commit = commit.min(slot.start);
        }
        if let Some(h) = self.held.front() {
            commit = commit.min(h.start);
        }
        // Emitted right after the records it covers, so that it lands in
        // their chunk and acknowledging a chunk releases exactly its lines.
        if commit > self.last_commit {
            self.last_commit = commit;
            out.commit(&self.stream_id, commit);
        }
    }

    fn flush_partial(&mut self, index: usize, now: Instant) {
        // PartialMerger flushes oldest first over all streams; pull until the
        // wanted stream comes out, feeding every message on.
        while self.partials.get(index).is_some_and(|p| p.start.is_some()) {
            let Some(merged) = self.merger.flush() else {
                break;
            };
            let i = slot_of(merged.stream);
            let span = self
                .partials
                .get_mut(i)
                .map(std::mem::take)
                .unwrap_or_default();
            let mut flags = span.flags;
            if merged.truncated {
                self.ctx.metrics.discard(COMPONENT, reason::MERGE_TRUNCATED);
                flags.truncated = true;
            }
            let start = span.start.unwrap_or(0);
            let end = span.end.unwrap_or(start);
            let meta = LineMeta {
                start,
                end,
                timestamp_ns: merged.timestamp_ns,
            };
            self.message(merged.message, merged.stream, meta, flags, now);
        }
    }

    fn flush_slots(&mut self, mut which: impl FnMut(&Slot) -> bool) {
        let Some(slots) = self.slots.as_mut() else {
            return;
        };
        let mut done = Vec::new();
        for (i, slot) in slots.iter_mut().enumerate() {
            if !slot.pending || !which(slot) {
                continue;
            }
            if let Some(j) = slot.joiner.flush() {
                done.push((i, j, std::mem::take(&mut slot.flags)));
            }
            slot.pending = slot.joiner.is_pending();
        }
        for (i, j, mut f) in done {
            if j.truncated {
                self.ctx
                    .metrics
                    .discard(COMPONENT, reason::MULTILINE_TRUNCATED);
                f.truncated = true;
            }
            let stream = STREAMS.get(i).copied().unwrap_or(Stream::Unknown);
            let held = self.build(
                &j.text,
                stream,
                j.first.start,
                j.last.end,
                j.first.timestamp_ns,
                f,
            );
            self.hold(held);
        }
    }

    /// Emits what has been pending longer than the flush delays.
    pub fn flush_idle(&mut self, now: Instant, consumed: u64, out: &mut Emitted) {
        self.tick(now);
        for i in 0..self.partials.len() {
            let idle = self
                .partials
                .get(i)
                .and_then(|p| p.start.and(p.last_push))
                .is_some_and(|t| now.saturating_duration_since(t) >= PARTIAL_IDLE_FLUSH);
            if idle {
                self.flush_partial(i, now);
            }
        }
        let flush = self.ctx.multiline_flush;
        self.flush_slots(|s| {
            s.last_push
                .is_some_and(|t| now.saturating_duration_since(t) >= flush)
        });
        self.release(consumed, out);
    }

    /// Emits everything pending (file closed, truncated, or shutdown).
    pub fn flush_all(&mut self, now: Instant, consumed: u64, out: &mut Emitted) {
        self.tick(now);
        for i in 0..self.partials.len() {
            self.flush_partial(i, now);
        }
        self.flush_slots(|_| true);
        self.release(consumed, out);
    }

    /// When the next idle flush is due, if anything is pending.
    pub fn deadline(&self) -> Option<Instant> {
        let partial = self
            .partials
            .iter()
            .filter(|p| p.start.is_some())
            .filter_map(|p| p.last_push)
            .map(|t| t + PARTIAL_IDLE_FLUSH);
        let multiline = self
            .slots
            .iter()
            .flatten()
            .filter(|s| s.pending)
            .filter_map(|s| s.last_push)
            .map(|t| t + self.ctx.multiline_flush);
        partial.chain(multiline).min()
    }
}

/// The records `out` holds, decoded, with their resources.
#[cfg(test)]
pub(super) fn records_of(out: &Emitted) -> Vec<mecha_parsers::LogRecord> {
    let mut enc = mecha_parsers::otlp::LogsEncoder::default();
    let mut source = Resource::default();
    for item in &out.items {
        match item {
            Item::Source { resource, .. } => source = resource.clone(),
            Item::Record { bytes, .. } => {
                enc.push_encoded(&source, out.bytes.get(bytes.clone()).unwrap_or(&[]))
            }
            Item::Commit { .. } => {}
        }
    }
    let mut buf = Vec::new();
    enc.finish_into(&mut buf);
    mecha_parsers::otlp::decode_logs_request(&buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(multiline: Option<MultilineRule>) -> Arc<DecodeCtx> {
        Arc::new(DecodeCtx {
            container_format: None,
            body_format: BodyFormat::Auto,
            keep_original_body: false,
            multiline,
            multiline_flush: Duration::from_secs(1),
            multiline_max_lines: 500,
            max_merged_bytes: 1 << 20,
            node_name: None,
            kube: None,
            metrics: Arc::new(AgentMetrics::new()),
            wall_ns: || 1,
        })
    }

    /// Feeds CRI lines; returns the records' (body, end offset) and the commits.
    fn feed(d: &mut Decoder, lines: &[&str], now: Instant) -> (Vec<(String, u64)>, Vec<u64>) {
        let mut out = Emitted::default();
        let mut offset = 0u64;
        for l in lines {
            let end = offset + l.len() as u64 + 1;
            d.line(l.as_bytes(), offset, end, false, now, &mut out);
            offset = end;
        }
        split(out)
    }

    fn split(out: Emitted) -> (Vec<(String, u64)>, Vec<u64>) {
        let mut records = Vec::new();
        let mut commits = Vec::new();
        for r in records_of(&out) {
            records.push((r.body, r.position.map(|p| p.offset).unwrap_or(0)));
        }
        for item in out.items {
            match item {
                Item::Commit { offset, .. } | Item::Record { commit: offset, .. } if offset > 0 => {
                    commits.push(offset)
                }
                _ => {}
            }
        }
        (records, commits)
    }

    const OUT: &str = "2024-01-15T10:20:30.000000001Z stdout F";
    const ERR: &str = "2024-01-15T10:20:30.000000001Z stderr F";

    #[test]
    fn interleaved_streams_keep_positions_monotonic_and_commits_behind_pending_records() {
        let mut d = Decoder::new(
            ctx(Some(MultilineRule::Java)),
            Arc::from("fp"),
            Path::new("/x.log"),
            0,
        );
        let now = Instant::now();
        let lines = [
            format!("{OUT} 2024-01-15 ERROR failed"),
            format!("{ERR} stderr one"),
            format!("{ERR} stderr two"),
        ];
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (records, commits) = feed(&mut d, &refs, now);
        // "stderr one" is finished, but the stdout record pending since line 1
        // could still end before it: it waits, and the commit must not pass
        // the start of the pending stdout record.
        assert!(records.is_empty(), "{records:?}");
        assert!(commits.is_empty(), "{commits:?}");
        // The stdout record grows past "stderr one": now it can go.
        let mut out = Emitted::default();
        let cont = format!("{OUT} java.lang.RuntimeException: boom");
        d.line(cont.as_bytes(), 300, 400, false, now, &mut out);
        let (records, commits) = split(out);
        assert_eq!(
            records.iter().map(|(b, _)| b.as_str()).collect::<Vec<_>>(),
            ["stderr one"]
        );
        assert!(commits.is_empty(), "{commits:?}");
        let mut out = Emitted::default();
        d.flush_all(now, 400, &mut out);
        let (rest, commits) = split(out);
        let bodies: Vec<&str> = rest.iter().map(|(b, _)| b.as_str()).collect();
        assert_eq!(
            bodies,
            [
                "stderr two",
                "2024-01-15 ERROR failed\njava.lang.RuntimeException: boom"
            ]
        );
        let ends: Vec<u64> = records.iter().chain(&rest).map(|(_, e)| *e).collect();
        assert!(ends.windows(2).all(|w| w[0] < w[1]), "monotonic: {ends:?}");
        assert_eq!(commits, [400]);
    }

    /// A decoder for `web-0`'s `app` file with pod metadata on (cache empty)
    /// and the source's `body_format` and `multiline`.
    fn kube_decoder(
        body_format: BodyFormat,
        multiline: Option<MultilineRule>,
    ) -> (Decoder, Arc<crate::enrich::PodCache>) {
        use super::super::kube::tests::{CID, setup};
        let (cache, kube, _, _) = setup(Duration::from_secs(2));
        let mut c = ctx(multiline).clone_for_test();
        c.body_format = body_format;
        c.kube = Some(kube);
        let path = format!("/var/log/containers/web-0_shop_app-{CID}.log");
        let d = Decoder::new(Arc::new(c), Arc::from("fp"), Path::new(&path), 0);
        (d, cache)
    }

    fn bodies_of(records: &[mecha_parsers::LogRecord]) -> Vec<&str> {
        records.iter().map(|r| r.body.as_str()).collect()
    }

    /// The file's pod reaches the cache with `annotations`.
    fn pod_arrives(cache: &crate::enrich::PodCache, annotations: serde_json::Value) {
        let pod = super::super::kube::tests::pod(serde_json::json!({}), annotations);
        cache.apply_pod(pod, Instant::now());
    }

    /// Feeds `lines` as CRI stdout lines from `offset` on; returns the
    /// offset past the last.
    fn feed_at(d: &mut Decoder, lines: &[&str], mut offset: u64, out: &mut Emitted) -> u64 {
        let now = Instant::now();
        for l in lines {
            let line = format!("{OUT} {l}");
            let end = offset + line.len() as u64 + 1;
            d.line(line.as_bytes(), offset, end, false, now, out);
            offset = end;
        }
        offset
    }

    fn commits_of(out: &Emitted) -> Vec<u64> {
        out.items
            .iter()
            .filter_map(|i| match i {
                Item::Commit { offset, .. } | Item::Record { commit: offset, .. } => {
                    (*offset > 0).then_some(*offset)
                }
                Item::Source { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_multiline_annotation_known_at_open_joins_a_java_stack_trace() {
        let (mut d, cache) = kube_decoder(BodyFormat::Auto, None);
        pod_arrives(&cache, serde_json::json!({"mecha.io/multiline": "java"}));
        // A decoder made now reads the annotation in `Decoder::new`.
        let mut d2 = {
            let path = format!(
                "/var/log/containers/web-0_shop_app-{}.log",
                super::super::kube::tests::CID
            );
            Decoder::new(d.ctx.clone(), Arc::from("fp2"), Path::new(&path), 0)
        };
        let trace = [
            "2024-01-15 10:20:30 ERROR checkout failed",
            "java.lang.IllegalStateException: boom",
            "\tat com.shop.Cart.add(Cart.java:10)",
            "\tat com.shop.Main.main(Main.java:3)",
            "Caused by: java.io.IOException: disk",
            "\t... 2 more",
        ];
        let mut out = Emitted::default();
        let end = feed_at(&mut d2, &trace, 0, &mut out);
        let end = feed_at(&mut d2, &["2024-01-15 10:20:31 INFO next"], end, &mut out);
        d2.flush_all(Instant::now(), end, &mut out);
        let bodies: Vec<String> = records_of(&out).into_iter().map(|r| r.body).collect();
        assert_eq!(
            bodies,
            [trace.join("\n"), "2024-01-15 10:20:31 INFO next".to_owned()]
        );
        // The decoder opened before the pod was known joins nothing yet (its
        // refresh has not run): the annotation is the only thing joining.
        let mut out = Emitted::default();
        let end = feed_at(&mut d, &trace[..2], 0, &mut out);
        d.flush_all(Instant::now(), end, &mut out);
        assert_eq!(records_of(&out).len(), 2);
    }

    #[test]
    fn parser_and_multiline_annotations_arriving_late_apply_to_the_lines_after() {
        let (mut d, cache) = kube_decoder(BodyFormat::Raw, None);
        let mut out = Emitted::default();
        let before = [
            "level=info msg=before",
            "\tat com.shop.Cart.add(Cart.java:7)",
        ];
        let mid = feed_at(&mut d, &before, 0, &mut out);
        // The pod shows up (the API server is back).
        pod_arrives(
            &cache,
            serde_json::json!({"mecha.io/parser": "logfmt", "mecha.io/multiline": "java"}),
        );
        d.refresh_kube();
        let after = [
            "2024-01-15 ERROR checkout failed",
            "java.lang.IllegalStateException: boom",
            "\tat com.shop.Cart.add(Cart.java:10)",
            "level=info msg=after",
        ];
        let end = feed_at(&mut d, &after, mid, &mut out);
        d.flush_all(Instant::now(), end, &mut out);
        let records = records_of(&out);
        let bodies = bodies_of(&records);
        assert_eq!(
            bodies,
            [
                "level=info msg=before",
                "\tat com.shop.Cart.add(Cart.java:7)",
                "2024-01-15 ERROR checkout failed\njava.lang.IllegalStateException: boom\n\tat com.shop.Cart.add(Cart.java:10)",
                "after",
            ]
        );
        // Before: raw (no fields); after: logfmt fields.
        assert_eq!(records[0].attributes.get("msg"), None);
        assert_eq!(records[0].attributes.get("level"), None);
        assert_eq!(records[3].severity, Severity::Info);
        // Every line is in exactly one record, positions and commits in order.
        let ends: Vec<u64> = records
            .iter()
            .map(|r| r.position.as_ref().map_or(0, |p| p.offset))
            .collect();
        assert!(ends.windows(2).all(|w| w[0] < w[1]), "{ends:?}");
        assert_eq!(ends.last(), Some(&end));
        let commits = commits_of(&out);
        assert!(commits.windows(2).all(|w| w[0] < w[1]), "{commits:?}");
        assert_eq!(commits.last(), Some(&end));
    }

    #[test]
    fn a_record_pending_when_the_multiline_annotation_arrives_is_sent_once_whole() {
        let (mut d, cache) = kube_decoder(BodyFormat::Raw, Some(MultilineRule::Java));
        let mut out = Emitted::default();
        let before = [
            "2024-01-15 ERROR failed",
            "java.lang.IllegalStateException: boom",
        ];
        let mid = feed_at(&mut d, &before, 0, &mut out);
        assert!(records_of(&out).is_empty(), "the trace is still pending");
        assert!(commits_of(&out).is_empty(), "{:?}", commits_of(&out));
        pod_arrives(&cache, serde_json::json!({"mecha.io/multiline": "off"}));
        d.refresh_kube();
        let end = feed_at(
            &mut d,
            &["\tat com.shop.Cart.add(Cart.java:10)"],
            mid,
            &mut out,
        );
        let records = records_of(&out);
        let bodies = bodies_of(&records);
        // The pending record ends at the switch; the next line is not joined.
        assert_eq!(
            bodies,
            [
                "2024-01-15 ERROR failed\njava.lang.IllegalStateException: boom",
                "\tat com.shop.Cart.add(Cart.java:10)",
            ]
        );
        assert_eq!(
            records[0].position.as_ref().map(|p| p.offset),
            Some(mid),
            "ends where the old lines end"
        );
        assert_eq!(commits_of(&out), [end]);
        assert_eq!(d.deadline(), None, "nothing left pending");
    }

    #[test]
    fn pending_multiline_record_flushes_only_after_the_idle_delay() {
        let mut d = Decoder::new(
            ctx(Some(MultilineRule::Java)),
            Arc::from("fp"),
            Path::new("/x.log"),
            0,
        );
        let now = Instant::now();
        let (records, _) = feed(&mut d, &[&format!("{OUT} 2024-01-15 INFO alone")], now);
        assert!(records.is_empty());
        assert_eq!(d.deadline(), Some(now + Duration::from_secs(1)));
        let mut out = Emitted::default();
        d.flush_idle(now + Duration::from_millis(999), 0, &mut out);
        assert!(out.items.is_empty());
        d.flush_idle(now + Duration::from_secs(1), 0, &mut out);
        let (records, _) = split(out);
        assert_eq!(records.len(), 1);
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn commit_stays_at_the_start_of_a_pending_partial() {
        let mut d = Decoder::new(ctx(None), Arc::from("fp"), Path::new("/x.log"), 0);
        let now = Instant::now();
        let p = "2024-01-15T10:20:30.000000001Z stdout P piece";
        let (records, commits) = feed(&mut d, &[p, &format!("{ERR} other stream")], now);
        assert_eq!(records.len(), 1);
        assert!(
            commits.is_empty(),
            "commit must wait for the partial at 0: {commits:?}"
        );
        let metrics = d.ctx.metrics.clone();
        assert_eq!(metrics.events_in.with_label_values(&[COMPONENT]).get(), 1);
    }

    #[test]
    fn too_many_held_records_force_the_pending_one_out() {
        let mut d = Decoder::new(
            ctx(Some(MultilineRule::Java)),
            Arc::from("fp"),
            Path::new("/x.log"),
            0,
        );
        let now = Instant::now();
        let mut lines = vec![format!("{OUT} 2024-01-15 ERROR pending forever")];
        lines.extend((0..MAX_HELD + 10).map(|i| format!("{ERR} 2024-01-15 INFO line {i}")));
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (records, commits) = feed(&mut d, &refs, now);
        assert!(
            records.len() > MAX_HELD,
            "held records were released: {}",
            records.len()
        );
        assert!(records.iter().any(|(b, _)| b.ends_with("pending forever")));
        assert!(!commits.is_empty());
    }

    /// The record `build` makes of `text`, decoded.
    fn built(
        d: &mut Decoder,
        text: &str,
        stream: Stream,
        flags: Flags,
    ) -> mecha_parsers::LogRecord {
        let mut out = Emitted::default();
        let held = d.build(text, stream, 0, 100, 0, flags);
        out.record(
            &d.resource,
            &d.stream_id,
            d.enc.arena.get(held.bytes).unwrap_or(&[]),
        );
        d.enc.arena.clear();
        records_of(&out).pop().unwrap_or_default()
    }

    /// The record the reference path alone makes of `text`.
    fn reference(
        d: &Decoder,
        text: &str,
        stream: Stream,
        flags: Flags,
    ) -> mecha_parsers::LogRecord {
        let (attributes, body, timestamp_ns, severity) = d.reference(text, stream, flags);
        mecha_parsers::LogRecord {
            timestamp_ns,
            observed_ns: 1,
            severity,
            body,
            attributes,
            resource: d.resource.clone(),
            position: Some(mecha_parsers::SourcePosition {
                stream: d.stream_id.clone(),
                offset: 100,
            }),
        }
    }

    #[test]
    fn streamed_and_reference_records_are_the_same() {
        let lines = [
            r#"{"level":"error","msg":"db down","retry":3,"ctx":{"a":[1,null]}}"#,
            r#"level=warn msg="slow query" rows=7"#,
            "2024-01-15 10:20:30.123 ERROR 1 --- [main] c.s.App : boom",
            "<34>Oct 11 22:14:15 mymachine su: 'su root' failed",
            r#"{"broken":"#,
            "",
        ];
        let flag_sets = [
            Flags::default(),
            Flags {
                truncated: true,
                invalid_utf8: true,
                parse_error: Some("bad envelope".into()),
            },
        ];
        for keep in [false, true] {
            let mut c = (*ctx(None)).clone_for_test();
            c.keep_original_body = keep;
            let mut d = Decoder::new(Arc::new(c), Arc::from("fp"), Path::new("/var/log/x.log"), 0);
            d.tick(Instant::now());
            for text in lines {
                for stream in [Stream::Stdout, Stream::Unknown] {
                    for flags in &flag_sets {
                        let want = reference(&d, text, stream, flags.clone());
                        let mut got = built(&mut d, text, stream, flags.clone());
                        got.observed_ns = 1;
                        assert_eq!(got, want, "{text:?} {stream:?} {flags:?} keep={keep}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_body_field_named_like_an_added_attribute_gives_way_to_the_decoders() {
        let mut d = Decoder::new(ctx(None), Arc::from("fp"), Path::new("/var/log/x.log"), 0);
        let text = r#"{"msg":"hi","log.file.path":"/forged","log.iostream":"x","n":1}"#;
        let r = built(&mut d, text, Stream::Stderr, Flags::default());
        assert_eq!(r.body, "hi");
        assert_eq!(
            r.attributes.get(keys::FILE_PATH),
            Some(&Value::from("/var/log/x.log"))
        );
        assert_eq!(
            r.attributes.get(keys::IOSTREAM),
            Some(&Value::from("stderr"))
        );
        assert_eq!(r.attributes.get("n"), Some(&Value::from(1)));
    }
}
