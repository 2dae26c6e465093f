//! Grouping records into chunks and wiring each chunk's acknowledgement to the
//! checkpoints.
//!
//! Records are encoded as they arrive and dropped at once. A chunk is sealed
//! when it reaches `max_bytes` of encoded records (so it exceeds the limit by
//! at most its last record) and after `max_delay`. Its acknowledgement advances each
//! file's checkpoint to the commit offsets the decoder emitted with the chunk's
//! records, never further. This module does no I/O.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mecha_parsers::Resource;
use mecha_parsers::otlp::LogsEncoder;
use tokio::time::Instant;

use super::checkpoint::AckBook;
use super::decode::Item;
use crate::pipeline::{AckFn, Chunk, ChunkCodec, Sealer};

/// Counts one chunk as alive until its acknowledgement runs or is dropped.
struct Alive(Arc<AtomicUsize>);

impl Alive {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Alive(count.clone())
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The chunk being filled.
pub(super) struct ChunkBuilder {
    encoder: LogsEncoder,
    /// The resource and stream of the records being pushed.
    resource: Resource,
    stream: Option<Arc<str>>,
    commits: HashMap<Arc<str>, u64>,
    /// The latest commit, kept out of the map: commits come once per line,
    /// nearly always for the same file as the one before.
    last_commit: Option<(Arc<str>, u64)>,
    started: Option<Instant>,
    max_bytes: usize,
    max_delay: Duration,
    book: Arc<Mutex<AckBook>>,
    alive: Arc<AtomicUsize>,
    /// The request being sealed, reused.
    request: Vec<u8>,
    sealer: Sealer,
}

impl ChunkBuilder {
    /// An empty builder.
    pub fn new(
        max_bytes: usize,
        max_delay: Duration,
        book: Arc<Mutex<AckBook>>,
        codec: ChunkCodec,
    ) -> Self {
        ChunkBuilder {
            encoder: LogsEncoder::default(),
            resource: Resource::default(),
            stream: None,
            commits: HashMap::new(),
            last_commit: None,
            started: None,
            max_bytes,
            max_delay,
            book,
            alive: Arc::new(AtomicUsize::new(0)),
            request: Vec::new(),
            sealer: codec.sealer(),
        }
    }

    /// The number of chunks sealed but neither acknowledged nor dropped yet.
    pub fn counter(&self) -> Arc<AtomicUsize> {
        self.alive.clone()
    }

    /// Adds a record (its bytes are in `bytes`), a resource change or a
    /// commit offset; returns the current chunk, sealed, when it is full as
    /// the record arrives.
    ///
    /// Sealing happens only before a record is added, so a commit offset always
    /// lands in the chunk holding the records it covers (or a later one).
    pub fn push(&mut self, item: Item, bytes: &[u8], now: Instant) -> Option<Chunk> {
        match item {
            Item::Source { resource, stream } => {
                self.resource = resource;
                self.stream = Some(stream);
                None
            }
            Item::Commit { stream, offset } => {
                self.commit(&stream, offset);
                None
            }
            Item::Record {
                bytes: range,
                commit,
            } => {
                let sealed = if self.encoder.bytes() >= self.max_bytes {
                    self.seal()
                } else {
                    None
                };
                if self.encoder.is_empty() {
                    self.started = Some(now);
                }
                self.encoder
                    .push_encoded(&self.resource, bytes.get(range).unwrap_or(&[]));
                if commit > 0
                    && let Some(stream) = self.stream.clone()
                {
                    self.commit(&stream, commit);
                }
                sealed
            }
        }
    }

    /// Notes a commit offset for the current chunk.
    fn commit(&mut self, stream: &Arc<str>, offset: u64) {
        match &mut self.last_commit {
            Some((s, o)) if Arc::ptr_eq(s, stream) => *o = (*o).max(offset),
            last => {
                if let Some((s, o)) = last.replace((stream.clone(), offset)) {
                    self.merge_commit(s, o);
                }
            }
        }
    }

    fn merge_commit(&mut self, stream: Arc<str>, offset: u64) {
        let e = self.commits.entry(stream).or_insert(0);
        *e = (*e).max(offset);
    }

    /// When the current chunk must be sent, if it holds records.
    pub fn deadline(&self) -> Option<Instant> {
        self.started.map(|s| s + self.max_delay)
    }

    /// The current chunk, if it holds records. Commit offsets without records
    /// stay for the next chunk.
    pub fn seal(&mut self) -> Option<Chunk> {
        if self.encoder.is_empty() {
            return None;
        }
        let records = self.encoder.records();
        self.request.clear();
        self.request.reserve(self.encoder.bytes() + 512);
        self.encoder.finish_into(&mut self.request);
        if let Some((s, o)) = self.last_commit.take() {
            self.merge_commit(s, o);
        }
        let commits = std::mem::take(&mut self.commits);
        self.started = None;
        let book = self.book.clone();
        let alive = Alive::new(&self.alive);
        let ack: AckFn = Box::new(move |_| {
            let _alive = alive;
            let mut book = book.lock().unwrap_or_else(|e| e.into_inner());
            for (stream, offset) in commits {
                book.ack(&stream, offset);
            }
        });
        Some(self.sealer.seal(&mut self.request, records, Some(ack)))
    }
}

#[cfg(test)]
mod tests {
    use mecha_parsers::LogRecord;
    use mecha_parsers::otlp::encode_record_field;

    use super::*;
    use std::path::Path;

    /// Pushes a record with `body`.
    fn record(b: &mut ChunkBuilder, body: &str, now: Instant) -> Option<Chunk> {
        let mut bytes = Vec::new();
        encode_record_field(&LogRecord::new(body, 1), &mut Vec::new(), &mut bytes);
        let item = Item::Record {
            bytes: 0..bytes.len(),
            commit: 0,
        };
        b.push(item, &bytes, now)
    }

    fn commit(b: &mut ChunkBuilder, stream: &Arc<str>, offset: u64, now: Instant) -> Option<Chunk> {
        let stream = stream.clone();
        b.push(Item::Commit { stream, offset }, &[], now)
    }

    #[test]
    fn ack_advances_checkpoint_to_the_commits_of_its_chunk_only() {
        let book = Arc::new(Mutex::new(AckBook::default()));
        book.lock()
            .unwrap_or_else(|e| e.into_inner())
            .register("f", Path::new("/f"), 0);
        let mut b = ChunkBuilder::new(
            10,
            Duration::from_millis(200),
            book.clone(),
            ChunkCodec::Raw,
        );
        let now = Instant::now();
        let stream: Arc<str> = Arc::from("f");
        assert!(record(&mut b, "a", now).is_none());
        assert!(commit(&mut b, &stream, 10, now).is_none());
        // The first chunk is full: it is sealed with commit 10 as the second
        // record arrives.
        let first = record(&mut b, &"b".repeat(100), now);
        commit(&mut b, &stream, 20, now);
        let second = b.seal();
        let offset = || book.lock().unwrap_or_else(|e| e.into_inner()).offset("f");
        assert_eq!(offset(), Some(0));
        if let Some(c) = first {
            c.ack();
        }
        assert_eq!(offset(), Some(10));
        if let Some(c) = second {
            c.ack();
        }
        assert_eq!(offset(), Some(20));
    }

    #[test]
    fn deadline_starts_with_the_first_record() {
        let book = Arc::new(Mutex::new(AckBook::default()));
        let mut b = ChunkBuilder::new(
            1 << 20,
            Duration::from_millis(200),
            book,
            ChunkCodec::Zstd(1),
        );
        assert_eq!(b.deadline(), None);
        let now = Instant::now();
        record(&mut b, "x", now);
        assert_eq!(b.deadline(), Some(now + Duration::from_millis(200)));
        assert!(b.seal().is_some());
        assert!(b.seal().is_none());
    }

    #[test]
    fn commits_of_interleaved_files_all_reach_the_checkpoints() {
        let book = Arc::new(Mutex::new(AckBook::default()));
        {
            let mut b = book.lock().unwrap_or_else(|e| e.into_inner());
            b.register("a", Path::new("/a"), 0);
            b.register("b", Path::new("/b"), 0);
        }
        let mut b = ChunkBuilder::new(
            1 << 20,
            Duration::from_millis(200),
            book.clone(),
            ChunkCodec::Raw,
        );
        let now = Instant::now();
        let (a, bb): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        record(&mut b, "x", now);
        for (s, o) in [(&a, 5), (&a, 7), (&bb, 3), (&a, 9), (&bb, 4)] {
            commit(&mut b, s, o, now);
        }
        if let Some(c) = b.seal() {
            c.ack();
        }
        let book = book.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!((book.offset("a"), book.offset("b")), (Some(9), Some(4)));
    }
}
