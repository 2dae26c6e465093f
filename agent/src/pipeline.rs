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

/// Called once when every record of a chunk is safe downstream.
pub type AckFn = Box<dyn FnOnce() + Send + 'static>;

/// A group of records from one source, already encoded as one OTLP
/// `ExportLogsServiceRequest`, with its acknowledgement.
///
/// Sources encode as they parse (see `mecha_parsers::otlp::LogsEncoder`), so
/// nothing downstream holds or re-encodes records: the disk buffer stores the
/// bytes, and the forwarder joins chunks into a batch by concatenating them,
/// since two protobuf messages written back to back decode as one message
/// whose repeated fields hold both.
pub struct Chunk {
    /// The encoded request.
    pub request: Bytes,
    /// How many log records it holds.
    pub records: usize,
    on_ack: Option<AckFn>,
    awaited: bool,
}

impl Chunk {
    /// A chunk whose acknowledgement runs `on_ack`.
    pub fn new(request: impl Into<Bytes>, records: usize, on_ack: Option<AckFn>) -> Self {
        Chunk {
            request: request.into(),
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

    /// Size of the encoded request, the unit of every byte limit downstream.
    pub fn bytes(&self) -> usize {
        self.request.len()
    }

    /// Splits the acknowledgement off, dropping the records: for a stage
    /// that has stored them elsewhere and acknowledges later.
    pub fn into_ack(mut self) -> Option<AckFn> {
        self.on_ack.take()
    }

    /// Marks the chunk as safe downstream, releasing its source position.
    pub fn ack(mut self) {
        if let Some(f) = self.on_ack.take() {
            f();
        }
    }
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("records", &self.records)
            .field("bytes", &self.request.len())
            .field("ack", &self.on_ack.is_some())
            .finish()
    }
}

/// The sending side of the pipeline, shared by all sources.
#[derive(Clone)]
pub struct Output {
    tx: mpsc::Sender<Chunk>,
    metrics: Arc<AgentMetrics>,
}

/// The receiving side, owned by the forwarder.
pub struct Input {
    rx: mpsc::Receiver<Chunk>,
    metrics: Arc<AgentMetrics>,
}

/// A bounded pipeline of `capacity` chunks.
pub fn channel(capacity: usize, metrics: Arc<AgentMetrics>) -> (Output, Input) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        Output {
            tx,
            metrics: metrics.clone(),
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
