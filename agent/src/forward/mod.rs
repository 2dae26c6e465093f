//! The forwarder: takes chunks from the pipeline, sends them downstream in
//! byte-bounded batches, retries until they are accepted, and only then
//! acknowledges them (which lets file checkpoints advance).
//!
//! Downstream is a [`Downstream`]: the OTLP/gRPC client of [`grpc`] in the agent
//! role, or the aggregator in-process in standalone mode. The forwarder must not
//! drop a batch on error: it retries with exponential backoff and jitter, forever,
//! while the bounded pipeline makes sources wait.

pub mod grpc;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use tokio::task::JoinHandle;

use crate::Shutdown;
use crate::metrics::AgentMetrics;
use crate::pipeline::{Chunk, ChunkEncoding, Input, Settled};

/// Why a batch was not accepted downstream.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The downstream could not be reached or did not answer in time; retry.
    #[error("{sink}: unavailable: {reason}")]
    Unavailable {
        /// Which downstream.
        sink: String,
        /// What went wrong.
        reason: String,
    },
    /// The downstream refused the batch for good (e.g. invalid argument); the
    /// records are dropped and counted.
    #[error("{sink}: rejected: {reason}")]
    Rejected {
        /// Which downstream.
        sink: String,
        /// Why it refused.
        reason: String,
    },
}

/// One batch: the requests of several chunks, which together form one OTLP
/// `ExportLogsServiceRequest`.
///
/// The parts stay as the chunks stored them (raw or zstd); each downstream
/// makes its wire form from them once ([`Batch::wire`]) and keeps it for the
/// retries.
#[derive(Debug)]
pub struct Batch {
    /// The chunks' requests in order, as stored, with their raw sizes.
    pub parts: Vec<(ChunkEncoding, Bytes, usize)>,
    /// How many log records it holds.
    pub records: usize,
    /// Size of the protobuf bytes of all parts.
    pub raw_bytes: usize,
    /// The downstream's wire form, made on the first attempt.
    pub wire: tokio::sync::OnceCell<Bytes>,
}

impl Batch {
    /// Joins the chunks' requests, in order, into one batch.
    pub fn join(chunks: &[Chunk]) -> Batch {
        Batch {
            parts: chunks
                .iter()
                .map(|c| (c.encoding, c.request.clone(), c.raw_bytes))
                .collect(),
            records: chunks.iter().map(|c| c.records).sum(),
            raw_bytes: chunks.iter().map(|c| c.raw_bytes).sum(),
            wire: tokio::sync::OnceCell::new(),
        }
    }

    /// The whole request as protobuf bytes. Blocks for as long as
    /// decompression takes: call off the reactor for large batches.
    pub fn raw(&self) -> std::io::Result<Bytes> {
        if let [(ChunkEncoding::Raw, only, _)] = self.parts.as_slice() {
            return Ok(only.clone());
        }
        let mut out = BytesMut::with_capacity(self.raw_bytes);
        for (encoding, bytes, raw) in &self.parts {
            match encoding {
                ChunkEncoding::Raw => out.extend_from_slice(bytes),
                ChunkEncoding::Zstd => out.extend_from_slice(&zstd::bulk::decompress(bytes, *raw)?),
            }
        }
        Ok(out.freeze())
    }

    /// The whole request as one zstd stream (a zstd frame per part, which
    /// decoders read as one): compressed parts as they are, raw ones
    /// compressed at `level`. Blocks like [`Batch::raw`].
    pub fn zstd(&self, level: i32) -> std::io::Result<Bytes> {
        if let [(ChunkEncoding::Zstd, only, _)] = self.parts.as_slice() {
            return Ok(only.clone());
        }
        let mut out = BytesMut::new();
        for (encoding, bytes, _) in &self.parts {
            match encoding {
                ChunkEncoding::Zstd => out.extend_from_slice(bytes),
                ChunkEncoding::Raw => out.extend_from_slice(&zstd::bulk::compress(bytes, level)?),
            }
        }
        Ok(out.freeze())
    }
}

/// Where batches go. `send` resolves only once the downstream has made the
/// records durable.
pub trait Downstream: Send + Sync + 'static {
    /// Name for logs and metrics (`grpc`, `in_process`).
    fn name(&self) -> &str;
    /// Delivers one batch. The batch is borrowed so that a failed attempt can
    /// be retried with the same bytes.
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<(), ForwardError>>;
}

/// Batching and retry settings.
#[derive(Debug, Clone)]
pub struct ForwarderOptions {
    /// Largest batch, in encoded bytes (one chunk alone may exceed it).
    pub batch_max_bytes: usize,
    /// A partly filled batch is sent after this.
    pub batch_timeout: Duration,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// After shutdown is requested, how long to keep trying to deliver what is left.
    pub drain_timeout: Duration,
    /// Batches sent at once (acknowledged in order).
    pub max_in_flight: usize,
}

impl Default for ForwarderOptions {
    fn default() -> Self {
        ForwarderOptions {
            batch_max_bytes: 1024 * 1024,
            batch_timeout: Duration::from_millis(100),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
            max_in_flight: 2,
        }
    }
}

/// Runs the forwarder until every source has stopped and what they sent is
/// delivered, or until the drain deadline after shutdown.
///
/// Up to `max_in_flight` batches are sent at once, each in its own task, so the
/// round trip of one batch (encoding, compression, the downstream's commit)
/// overlaps the next. Acknowledgements still happen strictly in batch order:
/// a checkpoint must never pass lines of an earlier batch that is still
/// retrying.
pub async fn run(
    mut input: Input,
    downstream: Arc<dyn Downstream>,
    opts: ForwarderOptions,
    metrics: Arc<AgentMetrics>,
    shutdown: Shutdown,
) {
    let sink = downstream.name().to_string();
    let max_in_flight = opts.max_in_flight.max(1);
    let mut in_flight: VecDeque<JoinHandle<Delivery>> = VecDeque::new();
    loop {
        // Acknowledge, in order, what has been delivered; wait for the oldest
        // batch when the window is full.
        loop {
            let full = in_flight.len() >= max_in_flight;
            let Some(front) = in_flight.front_mut() else {
                break;
            };
            if !full && !front.is_finished() {
                break;
            }
            let done = front.await;
            in_flight.pop_front();
            if !settle(done, &sink) {
                return abandon(in_flight);
            }
        }
        let first = tokio::select! {
            c = input.recv() => c,
            done = async { in_flight.front_mut()?.await.ok() }, if !in_flight.is_empty() => {
                in_flight.pop_front();
                if !settle(done.ok_or(()), &sink) {
                    return abandon(in_flight);
                }
                continue;
            }
        };
        let Some(first) = first else {
            break; // every source has stopped
        };
        // Batches are bounded by their protobuf size, which is what a
        // receiver's message size limit applies to.
        let mut bytes = first.raw_bytes;
        let mut awaited = first.is_awaited();
        let mut chunks = vec![first];
        let fill_until = tokio::time::Instant::now() + opts.batch_timeout;
        while bytes < opts.batch_max_bytes {
            if let Some(c) = input.try_recv() {
                awaited |= c.is_awaited();
                bytes += c.raw_bytes;
                chunks.push(c);
                continue;
            }
            // A client is waiting for these records (a Sentry SDK holds its
            // request open): send what is here rather than fill the batch.
            if awaited {
                break;
            }
            match tokio::time::timeout_at(fill_until, input.recv()).await {
                Ok(Some(c)) => {
                    awaited |= c.is_awaited();
                    bytes += c.raw_bytes;
                    chunks.push(c);
                }
                Ok(None) | Err(_) => break,
            }
        }
        in_flight.push_back(tokio::spawn(deliver(
            chunks,
            downstream.clone(),
            opts.clone(),
            metrics.clone(),
            shutdown.clone(),
        )));
    }
    // Sources are done: deliver and acknowledge what is still in flight.
    while let Some(front) = in_flight.pop_front() {
        if !settle(front.await.map_err(|_| ()), &sink) {
            return abandon(in_flight);
        }
    }
}

/// The outcome of one batch: its chunks, and how they are settled (`None`:
/// not delivered, so they may not be acknowledged).
type Delivery = (Option<Settled>, Vec<Chunk>);

/// Settles a delivered batch, kept or (rejected downstream) dropped; false
/// when it was not delivered (or its task failed), after which nothing later
/// may be acknowledged.
fn settle<E>(done: Result<Delivery, E>, sink: &str) -> bool {
    match done {
        Ok((Some(how), chunks)) => {
            for c in chunks {
                c.settle(how);
            }
            true
        }
        Ok((None, chunks)) => {
            tracing::warn!(
                sink,
                chunks = chunks.len(),
                "stopping with undelivered records; they will be read again after restart"
            );
            false
        }
        Err(_) => {
            tracing::error!(sink, "a delivery task failed; stopping the forwarder");
            false
        }
    }
}

/// Stops the batches after an undelivered one: whatever they deliver is not
/// acknowledged, so it is read again after restart (and deduplicated).
fn abandon(in_flight: VecDeque<JoinHandle<Delivery>>) {
    for task in in_flight {
        task.abort();
    }
}

/// Sends one batch until it is accepted or the drain deadline after shutdown
/// passes; the chunks come back for the caller to acknowledge in order.
async fn deliver(
    chunks: Vec<Chunk>,
    downstream: Arc<dyn Downstream>,
    opts: ForwarderOptions,
    metrics: Arc<AgentMetrics>,
    shutdown: Shutdown,
) -> Delivery {
    let batch = Batch::join(&chunks);
    let n = batch.records as u64;
    let batch_bytes = batch.raw_bytes;
    let mut delay = opts.retry_initial;
    let mut attempt: u32 = 0;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    loop {
        let started = Instant::now();
        match downstream.send(&batch).await {
            Ok(()) => {
                metrics
                    .forward_latency
                    .observe(started.elapsed().as_secs_f64());
                metrics.forward_batches.with_label_values(&["ok"]).inc();
                metrics.forward_bytes.inc_by(batch_bytes as u64);
                metrics
                    .events_out
                    .with_label_values(&[downstream.name()])
                    .inc_by(n);
                metrics
                    .downstream_up
                    .with_label_values(&[downstream.name()])
                    .set(1);
                return (Some(Settled::Kept), chunks);
            }
            Err(ForwardError::Rejected { reason, .. }) => {
                metrics
                    .forward_batches
                    .with_label_values(&["rejected"])
                    .inc();
                metrics
                    .discarded
                    .with_label_values(&["forward", "rejected_downstream"])
                    .inc_by(n);
                tracing::error!(records = n, reason, "downstream rejected a batch; dropped");
                // The files move past these lines; a client waiting for
                // them (a Sentry SDK) is told they were not stored.
                return (Some(Settled::Dropped), chunks);
            }
            Err(e @ ForwardError::Unavailable { .. }) => {
                metrics.forward_batches.with_label_values(&["retry"]).inc();
                metrics
                    .downstream_up
                    .with_label_values(&[downstream.name()])
                    .set(0);
                attempt += 1;
                if attempt == 1 || attempt.is_power_of_two() {
                    tracing::warn!(error = %e, attempt, "downstream unavailable; retrying");
                }
            }
        }
        let wait = jitter(delay);
        delay = (delay * 2).min(opts.retry_max);
        let now = tokio::time::Instant::now();
        if shutdown.is_cancelled() && drain_deadline.is_none() {
            drain_deadline = Some(now + opts.drain_timeout);
        }
        if drain_deadline.is_some_and(|d| now + wait >= d) {
            return (None, chunks);
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled(), if drain_deadline.is_none() => {
                drain_deadline = Some(tokio::time::Instant::now() + opts.drain_timeout);
            }
        }
    }
}

/// Full jitter between half and the whole delay, so that many agents coming
/// back after an aggregator outage do not retry in lockstep.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let frac = 0.5 + (nanos % 1000) as f64 / 2000.0;
    d.mul_f64(frac)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use mecha_parsers::LogRecord;
    use mecha_parsers::otlp::{decode_logs_request, encode_logs_wire};

    use super::*;
    use crate::pipeline;

    /// A chunk holding one record per body.
    fn chunk(bodies: &[&str], ack: Option<pipeline::AckFn>) -> Chunk {
        let records: Vec<LogRecord> = bodies.iter().map(|b| LogRecord::new(*b, 1)).collect();
        let mut request = Vec::new();
        encode_logs_wire(&records, &mut request);
        Chunk::new(request, records.len(), ack)
    }

    fn bodies(batch: &Batch) -> Vec<String> {
        decode_logs_request(&batch.raw().unwrap_or_default())
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.body)
            .collect()
    }

    /// Fails the first `failures` sends, then stores batches.
    struct Flaky {
        failures: AtomicUsize,
        got: Mutex<Vec<String>>,
    }

    impl Downstream for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<(), ForwardError>> {
            Box::pin(async move {
                if self.failures.load(Ordering::SeqCst) > 0 {
                    self.failures.fetch_sub(1, Ordering::SeqCst);
                    return Err(ForwardError::Unavailable {
                        sink: "flaky".into(),
                        reason: "down".into(),
                    });
                }
                if let Ok(mut g) = self.got.lock() {
                    g.extend(bodies(batch));
                }
                Ok(())
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn batches_are_retried_until_accepted_and_only_then_acked() {
        let metrics = Arc::new(AgentMetrics::new());
        let (out, input) = pipeline::channel(4, metrics.clone(), pipeline::ChunkCodec::Raw);
        let down = Arc::new(Flaky {
            failures: AtomicUsize::new(5),
            got: Mutex::new(Vec::new()),
        });
        let acked = Arc::new(AtomicUsize::new(0));
        let shutdown = Shutdown::new();
        let task = tokio::spawn(run(
            input,
            down.clone(),
            ForwarderOptions::default(),
            metrics.clone(),
            shutdown.clone(),
        ));
        for i in 0..3 {
            let acked = acked.clone();
            let ack: pipeline::AckFn = Box::new(move |_| {
                acked.fetch_add(1, Ordering::SeqCst);
            });
            let body = format!("line {i}");
            assert!(out.send(chunk(&[&body], Some(ack))).await.is_ok());
        }
        drop(out);
        assert!(task.await.is_ok());
        assert_eq!(acked.load(Ordering::SeqCst), 3);
        let got = down.got.lock().map(|g| g.clone()).unwrap_or_default();
        assert_eq!(got, ["line 0", "line 1", "line 2"]);
        assert!(
            metrics
                .render()
                .contains("mecha_forward_batches_total{outcome=\"retry\"} 5")
        );
    }

    /// Rejects (for good) every batch whose first body is "bad".
    struct Picky;

    impl Downstream for Picky {
        fn name(&self) -> &str {
            "picky"
        }
        fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<(), ForwardError>> {
            Box::pin(async move {
                if bodies(batch).first().is_some_and(|b| b == "bad") {
                    return Err(ForwardError::Rejected {
                        sink: "picky".into(),
                        reason: "invalid".into(),
                    });
                }
                Ok(())
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_rejected_downstream_is_settled_as_dropped_and_counted() {
        // A client waiting for a rejected chunk (a Sentry SDK, with no disk
        // buffer between) must hear that nothing was stored.
        let metrics = Arc::new(AgentMetrics::new());
        let (out, input) = pipeline::channel(4, metrics.clone(), pipeline::ChunkCodec::Raw);
        let task = tokio::spawn(run(
            input,
            Arc::new(Picky),
            ForwarderOptions::default(),
            metrics.clone(),
            Shutdown::new(),
        ));
        let settled = Arc::new(Mutex::new(Vec::new()));
        for body in ["bad", "good"] {
            let s = settled.clone();
            let ack: pipeline::AckFn = Box::new(move |how| {
                if let Ok(mut g) = s.lock() {
                    g.push((body, how));
                }
            });
            assert!(out.send(chunk(&[body], Some(ack)).awaited()).await.is_ok());
            // Each is its own batch: the next is sent once this one settled.
            while !settled
                .lock()
                .map(|g| g.iter().any(|(b, _)| *b == body))
                .unwrap_or(true)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        drop(out);
        assert!(task.await.is_ok());
        let got = settled.lock().map(|g| g.clone()).unwrap_or_default();
        assert_eq!(
            got,
            [
                ("bad", pipeline::Settled::Dropped),
                ("good", pipeline::Settled::Kept)
            ]
        );
        assert!(metrics.render().contains(
            "mecha_component_discarded_events_total{component=\"forward\",reason=\"rejected_downstream\"} 1"
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn an_awaited_chunk_is_sent_without_waiting_for_the_batch_to_fill() {
        let metrics = Arc::new(AgentMetrics::new());
        let (out, input) = pipeline::channel(4, metrics.clone(), pipeline::ChunkCodec::Raw);
        let down = Arc::new(Flaky {
            failures: AtomicUsize::new(0),
            got: Mutex::new(Vec::new()),
        });
        let shutdown = Shutdown::new();
        let opts = ForwarderOptions {
            batch_timeout: Duration::from_secs(60),
            ..ForwarderOptions::default()
        };
        let _task = tokio::spawn(run(input, down.clone(), opts, metrics, shutdown));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ack: pipeline::AckFn = Box::new(move |_| {
            let _ = tx.send(tokio::time::Instant::now());
        });
        let start = tokio::time::Instant::now();
        assert!(
            out.send(chunk(&["waited for"], Some(ack)).awaited())
                .await
                .is_ok()
        );
        // Paused time moves only when everything is idle: an acknowledgement
        // before 60 s of it passed means the batch did not wait to fill.
        let acked_at = rx.await.unwrap_or(start + Duration::from_secs(3600));
        assert!(acked_at - start < Duration::from_secs(60));
        let got = down.got.lock().map(|g| g.clone()).unwrap_or_default();
        assert_eq!(got, ["waited for"]);
    }

    /// Delays a batch whose first body is "slow"; fails forever one whose first
    /// body is "down".
    struct Uneven;

    impl Downstream for Uneven {
        fn name(&self) -> &str {
            "uneven"
        }
        fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<(), ForwardError>> {
            Box::pin(async move {
                match bodies(batch).first().map(String::as_str) {
                    Some("slow") => tokio::time::sleep(Duration::from_secs(5)).await,
                    Some("down") => {
                        return Err(ForwardError::Unavailable {
                            sink: "uneven".into(),
                            reason: "down".into(),
                        });
                    }
                    _ => {}
                }
                Ok(())
            })
        }
    }

    /// Sends one chunk per body, each its own batch; returns the ack order.
    async fn ack_order(bodies: &[&str], stop_after: Option<Duration>) -> Vec<String> {
        let metrics = Arc::new(AgentMetrics::new());
        let (out, input) = pipeline::channel(8, metrics.clone(), pipeline::ChunkCodec::Raw);
        let shutdown = Shutdown::new();
        let opts = ForwarderOptions {
            batch_max_bytes: 1,
            max_in_flight: 4,
            ..ForwarderOptions::default()
        };
        let task = tokio::spawn(run(
            input,
            Arc::new(Uneven),
            opts,
            metrics,
            shutdown.clone(),
        ));
        let acked = Arc::new(Mutex::new(Vec::new()));
        for body in bodies {
            let a = acked.clone();
            let b = (*body).to_string();
            let ack: pipeline::AckFn = Box::new(move |_| {
                if let Ok(mut v) = a.lock() {
                    v.push(b);
                }
            });
            assert!(out.send(chunk(&[body], Some(ack))).await.is_ok());
        }
        if let Some(after) = stop_after {
            tokio::time::sleep(after).await;
            shutdown.cancel();
        }
        drop(out);
        assert!(task.await.is_ok());
        acked.lock().map(|v| v.clone()).unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn batches_in_flight_together_are_acknowledged_in_order() {
        let order = ack_order(&["slow", "fast 1", "fast 2"], None).await;
        assert_eq!(order, ["slow", "fast 1", "fast 2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_after_an_undelivered_one_is_never_acknowledged() {
        // "fast" is delivered, but "down" before it never is: acknowledging
        // "fast" would move the checkpoint past the lines of "down".
        let order = ack_order(&["ok", "down", "fast"], Some(Duration::from_secs(10))).await;
        assert_eq!(order, ["ok"]);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_gives_up_after_the_drain_deadline_without_acking() {
        let metrics = Arc::new(AgentMetrics::new());
        let (out, input) = pipeline::channel(4, metrics.clone(), pipeline::ChunkCodec::Raw);
        let down = Arc::new(Flaky {
            failures: AtomicUsize::new(usize::MAX),
            got: Mutex::new(Vec::new()),
        });
        let acked = Arc::new(AtomicUsize::new(0));
        let shutdown = Shutdown::new();
        let task = tokio::spawn(run(
            input,
            down,
            ForwarderOptions::default(),
            metrics,
            shutdown.clone(),
        ));
        let a = acked.clone();
        let ack: pipeline::AckFn = Box::new(move |_| {
            a.fetch_add(1, Ordering::SeqCst);
        });
        assert!(out.send(chunk(&["x"], Some(ack))).await.is_ok());
        tokio::time::sleep(Duration::from_secs(60)).await;
        shutdown.cancel();
        assert!(task.await.is_ok());
        assert_eq!(acked.load(Ordering::SeqCst), 0);
    }
}
