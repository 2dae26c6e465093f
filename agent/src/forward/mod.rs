//! The forwarder: takes chunks from the pipeline, sends them downstream in
//! byte-bounded batches, retries until they are accepted, and only then
//! acknowledges them (which lets file checkpoints advance).
//!
//! Downstream is a [`Downstream`]: the OTLP/gRPC client of [`grpc`] in the agent
//! role, or the aggregator in-process in standalone mode. The forwarder must not
//! drop a batch on error: it retries with exponential backoff and jitter, forever,
//! while the bounded pipeline makes sources wait.

pub mod grpc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use mecha_parsers::LogRecord;

use crate::Shutdown;
use crate::metrics::AgentMetrics;
use crate::pipeline::{Chunk, Input};

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

/// Where batches go. `send` resolves only once the downstream has made the
/// records durable.
pub trait Downstream: Send + Sync + 'static {
    /// Name for logs and metrics (`grpc`, `in_process`).
    fn name(&self) -> &str;
    /// Delivers one batch. Records are borrowed so that a failed attempt can be
    /// retried without keeping a second copy of the batch.
    fn send<'a>(&'a self, records: &'a [LogRecord]) -> BoxFuture<'a, Result<(), ForwardError>>;
}

/// Batching and retry settings.
#[derive(Debug, Clone)]
pub struct ForwarderOptions {
    /// Largest batch, in approximate record bytes.
    pub batch_max_bytes: usize,
    /// A partly filled batch is sent after this.
    pub batch_timeout: Duration,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// After shutdown is requested, how long to keep trying to deliver what is left.
    pub drain_timeout: Duration,
}

impl Default for ForwarderOptions {
    fn default() -> Self {
        ForwarderOptions {
            batch_max_bytes: 1024 * 1024,
            batch_timeout: Duration::from_secs(1),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Runs the forwarder until every source has stopped and what they sent is
/// delivered, or until the drain deadline after shutdown.
pub async fn run(
    mut input: Input,
    downstream: Arc<dyn Downstream>,
    opts: ForwarderOptions,
    metrics: Arc<AgentMetrics>,
    shutdown: Shutdown,
) {
    let sink = downstream.name().to_string();
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    loop {
        // Gather a batch: wait for a first chunk, then fill until full or timed out.
        let first = tokio::select! {
            c = input.recv() => c,
            _ = shutdown.cancelled(), if drain_deadline.is_none() => {
                drain_deadline = Some(tokio::time::Instant::now() + opts.drain_timeout);
                continue;
            }
        };
        let Some(first) = first else {
            return; // every source has stopped and everything was delivered
        };
        let mut chunks = vec![first];
        let mut bytes = chunks[0].bytes;
        let fill_until = tokio::time::Instant::now() + opts.batch_timeout;
        while bytes < opts.batch_max_bytes {
            if let Some(c) = input.try_recv() {
                bytes += c.bytes;
                chunks.push(c);
                continue;
            }
            match tokio::time::timeout_at(fill_until, input.recv()).await {
                Ok(Some(c)) => {
                    bytes += c.bytes;
                    chunks.push(c);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let delivered = deliver(
            &mut chunks,
            downstream.as_ref(),
            &opts,
            &metrics,
            &shutdown,
            &mut drain_deadline,
        )
        .await;
        if !delivered {
            tracing::warn!(
                sink,
                chunks = chunks.len(),
                "stopping with undelivered records; they will be read again after restart"
            );
            return;
        }
    }
}

/// Sends one batch until it is accepted (true) or the drain deadline passes (false).
async fn deliver(
    chunks: &mut Vec<Chunk>,
    downstream: &dyn Downstream,
    opts: &ForwarderOptions,
    metrics: &AgentMetrics,
    shutdown: &Shutdown,
    drain_deadline: &mut Option<tokio::time::Instant>,
) -> bool {
    let records: Vec<LogRecord> = chunks.iter_mut().flat_map(|c| c.take_records()).collect();
    let n = records.len() as u64;
    let batch_bytes: usize = chunks.iter().map(|c| c.bytes).sum();
    let mut delay = opts.retry_initial;
    let mut attempt: u32 = 0;
    loop {
        let started = Instant::now();
        match downstream.send(&records).await {
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
                for c in chunks.drain(..) {
                    c.ack();
                }
                return true;
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
                for c in chunks.drain(..) {
                    c.ack();
                }
                return true;
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
            *drain_deadline = Some(now + opts.drain_timeout);
        }
        match drain_deadline {
            Some(d) if now + wait >= *d => return false,
            _ => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled(), if drain_deadline.is_none() => {
                *drain_deadline = Some(tokio::time::Instant::now() + opts.drain_timeout);
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

    use super::*;
    use crate::pipeline;

    /// Fails the first `failures` sends, then stores batches.
    struct Flaky {
        failures: AtomicUsize,
        got: Mutex<Vec<Vec<LogRecord>>>,
    }

    impl Downstream for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        fn send<'a>(&'a self, records: &'a [LogRecord]) -> BoxFuture<'a, Result<(), ForwardError>> {
            Box::pin(async move {
                if self.failures.load(Ordering::SeqCst) > 0 {
                    self.failures.fetch_sub(1, Ordering::SeqCst);
                    return Err(ForwardError::Unavailable {
                        sink: "flaky".into(),
                        reason: "down".into(),
                    });
                }
                if let Ok(mut g) = self.got.lock() {
                    g.push(records.to_vec());
                }
                Ok(())
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn batches_are_retried_until_accepted_and_only_then_acked() {
        let metrics = Arc::new(AgentMetrics::new());
        let (out, input) = pipeline::channel(4, metrics.clone());
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
            let rec = LogRecord::new(format!("line {i}"), 1);
            let ack: pipeline::AckFn = Box::new(move || {
                acked.fetch_add(1, Ordering::SeqCst);
            });
            assert!(out.send(Chunk::new(vec![rec], Some(ack))).await.is_ok());
        }
        drop(out);
        assert!(task.await.is_ok());
        assert_eq!(acked.load(Ordering::SeqCst), 3);
        let got = down.got.lock().map(|g| g.concat()).unwrap_or_default();
        let bodies: Vec<_> = got.iter().map(|r| r.body.as_str()).collect();
        assert_eq!(bodies, ["line 0", "line 1", "line 2"]);
        assert!(
            metrics
                .render()
                .contains("mecha_forward_batches_total{outcome=\"retry\"} 5")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_gives_up_after_the_drain_deadline_without_acking() {
        let metrics = Arc::new(AgentMetrics::new());
        let (out, input) = pipeline::channel(4, metrics.clone());
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
        let ack: pipeline::AckFn = Box::new(move || {
            a.fetch_add(1, Ordering::SeqCst);
        });
        assert!(
            out.send(Chunk::new(vec![LogRecord::new("x", 1)], Some(ack)))
                .await
                .is_ok()
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        shutdown.cancel();
        assert!(task.await.is_ok());
        assert_eq!(acked.load(Ordering::SeqCst), 0);
    }
}
