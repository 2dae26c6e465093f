//! The hand-off between sources and the forwarder: byte-bounded chunks of
//! records, each carrying the acknowledgement that releases its source position.
//!
//! A source sends [`Chunk`]s through an [`Output`]; the forwarder calls
//! [`Chunk::ack`] once the records are safe downstream (committed by the
//! aggregator, or later in the disk buffer). Only then may a file checkpoint
//! advance or a push source answer its client. Nothing here buffers without bound:
//! the channel holds a fixed number of chunks, each capped in bytes by its source.

use std::sync::Arc;

use mecha_parsers::LogRecord;
use tokio::sync::mpsc;

use crate::metrics::AgentMetrics;

/// Called once when every record of a chunk is safe downstream.
pub type AckFn = Box<dyn FnOnce() + Send + 'static>;

/// A group of records from one source, with its acknowledgement.
pub struct Chunk {
    /// The records, in source order.
    pub records: Vec<LogRecord>,
    /// Approximate size of the records in memory.
    pub bytes: usize,
    on_ack: Option<AckFn>,
}

impl Chunk {
    /// A chunk whose acknowledgement runs `on_ack`.
    pub fn new(records: Vec<LogRecord>, on_ack: Option<AckFn>) -> Self {
        let bytes = records.iter().map(LogRecord::approx_bytes).sum();
        Chunk {
            records,
            bytes,
            on_ack,
        }
    }

    /// A chunk whose size the source has already summed.
    pub fn with_bytes(records: Vec<LogRecord>, bytes: usize, on_ack: Option<AckFn>) -> Self {
        Chunk {
            records,
            bytes,
            on_ack,
        }
    }

    /// Marks the chunk as safe downstream, releasing its source position.
    pub fn ack(mut self) {
        if let Some(f) = self.on_ack.take() {
            f();
        }
    }

    /// Splits the records off, keeping the acknowledgement for later.
    pub fn take_records(&mut self) -> Vec<LogRecord> {
        std::mem::take(&mut self.records)
    }
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("records", &self.records.len())
            .field("bytes", &self.bytes)
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

impl Output {
    /// Sends a chunk, waiting while the pipeline is full (back-pressure).
    pub async fn send(&self, chunk: Chunk) -> Result<(), Closed> {
        let bytes = chunk.bytes;
        let n = chunk.records.len();
        self.tx.send(chunk).await.map_err(|_| Closed)?;
        self.metrics.queue_chunks.inc();
        self.metrics.queue_bytes.add(bytes as i64);
        self.metrics.queue_records.add(n as i64);
        Ok(())
    }
}

impl Input {
    /// The next chunk, or `None` once every source has stopped.
    pub async fn recv(&mut self) -> Option<Chunk> {
        let chunk = self.rx.recv().await?;
        self.metrics.queue_chunks.dec();
        self.metrics.queue_bytes.sub(chunk.bytes as i64);
        self.metrics.queue_records.sub(chunk.records.len() as i64);
        Some(chunk)
    }

    /// A chunk if one is ready now.
    pub fn try_recv(&mut self) -> Option<Chunk> {
        let chunk = self.rx.try_recv().ok()?;
        self.metrics.queue_chunks.dec();
        self.metrics.queue_bytes.sub(chunk.bytes as i64);
        self.metrics.queue_records.sub(chunk.records.len() as i64);
        Some(chunk)
    }
}
