//! The hand-off between sources and the forwarder: byte-bounded chunks of
//! records, each carrying the acknowledgement that releases its source position.
//!
//! A source sends [`Chunk`]s through an [`Output`]; the forwarder calls
//! [`Chunk::ack`] once the records are safe downstream (committed by the
//! aggregator, or later in the disk buffer). Only then may a file checkpoint
//! advance or a push source answer its client. Nothing here buffers without bound:
//! the channel holds a fixed number of chunks, each capped in bytes by its source.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::metrics::AgentMetrics;

/// Called once when a chunk's records are settled: safe downstream, or
/// dropped by policy. Either way its source may move past them; a client
/// waiting for them learns which.
pub type AckFn = Box<dyn FnOnce(Settled) + Send + 'static>;

/// What became of a chunk's records when its acknowledgement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Safe downstream (committed by the aggregator, or durable here).
    Kept,
    /// Dropped and counted where it happened: by policy (a full buffer under
    /// `drop_newest`, a chunk larger than the buffer takes) or refused for
    /// good downstream. Nothing was kept.
    Dropped,
}

/// How a chunk's request bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkEncoding {
    /// Protobuf bytes as they are.
    Raw,
    /// One zstd frame holding the protobuf bytes.
    Zstd,
}

/// A group of records from one source, already encoded as one OTLP
/// `ExportLogsServiceRequest`, with its acknowledgement.
///
/// Sources encode as they parse (see `mecha_parsers::otlp::LogsEncoder`), so
/// nothing downstream holds or re-encodes records: the disk buffer stores the
/// bytes, and the forwarder joins chunks into a batch by concatenating them,
/// since two protobuf messages written back to back decode as one message
/// whose repeated fields hold both. A chunk may be compressed where it is
/// sealed ([`ChunkCodec`]): zstd frames concatenate the same way, so the
/// buffer stores and the forwarder sends compressed bytes without touching
/// them again.
pub struct Chunk {
    /// The encoded request, as `encoding` says.
    pub request: Bytes,
    /// How `request` is stored.
    pub encoding: ChunkEncoding,
    /// Size of the protobuf bytes once decompressed.
    pub raw_bytes: usize,
    /// How many log records it holds.
    pub records: usize,
    on_ack: Option<AckFn>,
    awaited: bool,
}

impl Chunk {
    /// An uncompressed chunk whose acknowledgement runs `on_ack`.
    pub fn new(request: impl Into<Bytes>, records: usize, on_ack: Option<AckFn>) -> Self {
        let request = request.into();
        Chunk {
            raw_bytes: request.len(),
            request,
            encoding: ChunkEncoding::Raw,
            records,
            on_ack,
            awaited: false,
        }
    }

    /// A chunk of `records` whose `request` is stored as `encoding` and
    /// holds `raw_bytes` of protobuf.
    pub fn encoded(
        request: impl Into<Bytes>,
        encoding: ChunkEncoding,
        raw_bytes: usize,
        records: usize,
        on_ack: Option<AckFn>,
    ) -> Self {
        Chunk {
            request: request.into(),
            encoding,
            raw_bytes,
            records,
            on_ack,
            awaited: false,
        }
    }

    /// Marks the chunk as awaited by a client (a push source answers only
    /// once it is safe): the forwarder sends it without waiting for its
    /// batch to fill.
    pub fn awaited(mut self) -> Self {
        self.awaited = true;
        self
    }

    /// Whether a client waits for this chunk.
    pub fn is_awaited(&self) -> bool {
        self.awaited
    }

    /// Size of the request as stored, the unit of the byte limits of queues
    /// and the disk buffer.
    pub fn bytes(&self) -> usize {
        self.request.len()
    }

    /// The protobuf bytes, decompressed if need be.
    pub fn raw(&self) -> std::io::Result<Bytes> {
        match self.encoding {
            ChunkEncoding::Raw => Ok(self.request.clone()),
            ChunkEncoding::Zstd => {
                zstd::bulk::decompress(&self.request, self.raw_bytes).map(Bytes::from)
            }
        }
    }

    /// Splits the acknowledgement off, dropping the records: for a stage
    /// that has stored them elsewhere and acknowledges later.
    pub fn into_ack(mut self) -> Option<AckFn> {
        self.on_ack.take()
    }

    /// Marks the chunk as safe downstream, releasing its source position.
    pub fn ack(self) {
        self.settle(Settled::Kept);
    }

    /// Marks the chunk as dropped by policy: its source may move past it,
    /// but a client waiting for it is told nothing was kept.
    pub fn discard(self) {
        self.settle(Settled::Dropped);
    }

    /// Settles the chunk as [`Chunk::ack`] (`Kept`) or [`Chunk::discard`]
    /// (`Dropped`) does.
    pub fn settle(mut self, settled: Settled) {
        if let Some(f) = self.on_ack.take() {
            f(settled);
        }
    }
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("records", &self.records)
            .field("bytes", &self.request.len())
            .field("encoding", &self.encoding)
            .field("raw_bytes", &self.raw_bytes)
            .field("ack", &self.on_ack.is_some())
            .finish()
    }
}

/// How sources should seal their chunks: compressed when the downstream
/// sends zstd anyway, so that compression happens once, on the source's
/// blocking thread, before the disk buffer (which then holds several times
/// more records per byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChunkCodec {
    /// Leave chunks uncompressed (in-process downstream, gzip or no wire
    /// compression).
    #[default]
    Raw,
    /// zstd at this level.
    Zstd(i32),
}

/// Seals chunks by a [`ChunkCodec`], keeping its compression context.
pub struct Sealer {
    compressor: Option<zstd::bulk::Compressor<'static>>,
}

impl ChunkCodec {
    /// A sealer for one source.
    pub fn sealer(self) -> Sealer {
        let compressor = match self {
            ChunkCodec::Raw => None,
            // A context that cannot be made (out of memory) leaves chunks raw.
            ChunkCodec::Zstd(level) => zstd::bulk::Compressor::new(level).ok(),
        };
        Sealer { compressor }
    }
}

impl Sealer {
    /// A chunk of `records` holding the request in `raw`, which is left
    /// empty: its capacity is kept for the next chunk when the chunk is
    /// compressed, and moved into the chunk when not.
    pub fn seal(&mut self, raw: &mut Vec<u8>, records: usize, on_ack: Option<AckFn>) -> Chunk {
        if let Some(c) = self.compressor.as_mut()
            && let Ok(z) = c.compress(raw)
        {
            let chunk = Chunk::encoded(z, ChunkEncoding::Zstd, raw.len(), records, on_ack);
            raw.clear();
            return chunk;
        }
        Chunk::new(std::mem::take(raw), records, on_ack)
    }
}

/// The sending side of the pipeline, shared by all sources.
#[derive(Clone)]
pub struct Output {
    tx: mpsc::Sender<Chunk>,
    metrics: Arc<AgentMetrics>,
    codec: ChunkCodec,
}

/// The receiving side, owned by the forwarder.
pub struct Input {
    rx: mpsc::Receiver<Chunk>,
    metrics: Arc<AgentMetrics>,
}

/// A bounded pipeline of `capacity` chunks, whose sources seal chunks by
/// `codec`.
pub fn channel(capacity: usize, metrics: Arc<AgentMetrics>, codec: ChunkCodec) -> (Output, Input) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        Output {
            tx,
            metrics: metrics.clone(),
            codec,
        },
        Input { rx, metrics },
    )
}

/// The forwarder has gone away; the source should stop.
#[derive(Debug, thiserror::Error)]
#[error("pipeline closed")]
pub struct Closed;

/// Why [`Output::send_timeout`] did not send.
#[derive(Debug, thiserror::Error)]
pub enum SendTimeoutError {
    /// The pipeline stayed full for the whole wait; the chunk is returned.
    #[error("pipeline full")]
    Full(Chunk),
    /// The forwarder has gone away.
    #[error("pipeline closed")]
    Closed(Chunk),
}

impl Output {
    /// How sources should seal their chunks.
    pub fn codec(&self) -> ChunkCodec {
        self.codec
    }

    /// Sends a chunk, waiting while the pipeline is full (back-pressure).
    pub async fn send(&self, chunk: Chunk) -> Result<(), Closed> {
        let bytes = chunk.bytes();
        let n = chunk.records;
        self.tx.send(chunk).await.map_err(|_| Closed)?;
        self.counted(bytes, n);
        Ok(())
    }

    /// Sends a chunk, waiting at most `wait` for room: for push sources,
    /// which answer their clients "try later" rather than wait without end.
    pub async fn send_timeout(
        &self,
        chunk: Chunk,
        wait: std::time::Duration,
    ) -> Result<(), SendTimeoutError> {
        // Reserving first keeps the chunk if the wait runs out.
        let permit = match tokio::time::timeout(wait, self.tx.reserve()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(SendTimeoutError::Closed(chunk)),
            Err(_) => return Err(SendTimeoutError::Full(chunk)),
        };
        let (bytes, n) = (chunk.bytes(), chunk.records);
        permit.send(chunk);
        self.counted(bytes, n);
        Ok(())
    }

    fn counted(&self, bytes: usize, records: usize) {
        self.metrics.queue_chunks.inc();
        self.metrics.queue_bytes.add(bytes as i64);
        self.metrics.queue_records.add(records as i64);
    }
}

impl Input {
    /// The next chunk, or `None` once every source has stopped.
    pub async fn recv(&mut self) -> Option<Chunk> {
        let chunk = self.rx.recv().await?;
        self.metrics.queue_chunks.dec();
        self.metrics.queue_bytes.sub(chunk.bytes() as i64);
        self.metrics.queue_records.sub(chunk.records as i64);
        Some(chunk)
    }

    /// A chunk if one is ready now.
    pub fn try_recv(&mut self) -> Option<Chunk> {
        let chunk = self.rx.try_recv().ok()?;
        self.metrics.queue_chunks.dec();
        self.metrics.queue_bytes.sub(chunk.bytes() as i64);
        self.metrics.queue_records.sub(chunk.records as i64);
        Some(chunk)
    }
}
