//! The way into the store: [`Ingest`] handles and the group-commit task behind them.
//!
//! Every receiver (gRPC, the in-process path of `mecha standalone`) pushes
//! batches through an [`Ingest`]; one task gathers them, hands them to the
//! blocking [`Writer`](crate::store::writer::Writer) at most once per commit
//! interval (sooner when much is pending), and answers every waiter once the
//! commit is durable and searchable. Bytes waiting for a commit are bounded by a
//! semaphore: over the bound, `push` waits, which slows senders down. This
//! module must not index or search by itself, and must not block the reactor.

use std::sync::Arc;
use std::time::Duration;

use mecha_parsers::LogRecord;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Error;
use crate::metrics::{Metrics, Transport};
use crate::store::writer::Writer;

/// Capacity of the command queue to the writer task; bytes are bounded separately.
const QUEUE_CAPACITY: usize = 1024;

/// What became of one pushed batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Records indexed and committed.
    pub accepted: usize,
    /// Records dropped because their source position was already indexed.
    pub duplicates: usize,
    /// Records dropped because their day is older than the retention period.
    pub discarded: usize,
}

/// A command to the writer task.
pub(crate) enum Command {
    /// Index records and answer after the commit.
    Push {
        records: Vec<LogRecord>,
        bytes: usize,
        permit: OwnedSemaphorePermit,
        reply: oneshot::Sender<Result<IngestOutcome, Error>>,
    },
    /// Commit what is pending, then delete days past retention.
    Retain {
        reply: oneshot::Sender<Result<usize, Error>>,
    },
    /// Commit what is pending and stop.
    Shutdown { reply: oneshot::Sender<()> },
}

/// A cheap, cloneable handle that pushes records into the store.
#[derive(Clone, Debug)]
pub struct Ingest {
    tx: mpsc::Sender<Command>,
    budget: Arc<Semaphore>,
    max_cost: u32,
    metrics: Arc<Metrics>,
    transport: Transport,
}

impl Ingest {
    /// Indexes `records`.
    ///
    /// Resolves only after the records are committed (durable and searchable) —
    /// the agent acknowledges upstream on this. Waits first while more than the
    /// configured bytes are pending.
    pub async fn push(&self, records: Vec<LogRecord>) -> Result<IngestOutcome, Error> {
        if records.is_empty() {
            return Ok(IngestOutcome::default());
        }
        let count = records.len();
        let bytes: usize = records.iter().map(LogRecord::approx_bytes).sum();
        self.metrics.received(self.transport, count, bytes);
        // A batch larger than the whole budget still goes through, alone.
        let cost = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, self.max_cost);
        let permit = Arc::clone(&self.budget)
            .acquire_many_owned(cost)
            .await
            .map_err(|_| Error::WriterStopped)?;
        let (reply, answer) = oneshot::channel();
        let gauge = &self.metrics.pending_records;
        gauge.add(count as i64);
        let sent = self
            .tx
            .send(Command::Push {
                records,
                bytes,
                permit,
                reply,
            })
            .await;
        let result = match sent {
            Ok(()) => answer.await.unwrap_or(Err(Error::WriterStopped)),
            Err(_) => Err(Error::WriterStopped),
        };
        gauge.sub(count as i64);
        result
    }

    /// The same queue, counted under another transport.
    pub(crate) fn for_transport(&self, transport: Transport) -> Ingest {
        Ingest {
            transport,
            ..self.clone()
        }
    }

    /// Asks the writer to delete days past retention.
    pub(crate) async fn apply_retention(&self) -> Result<usize, Error> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Retain { reply })
            .await
            .map_err(|_| Error::WriterStopped)?;
        answer.await.unwrap_or(Err(Error::WriterStopped))
    }

    /// Asks the writer to commit what is pending and stop.
    pub(crate) async fn shutdown(&self) {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = answer.await;
        }
    }
}

/// Starts the group-commit task over `writer`.
pub(crate) fn spawn(
    writer: Writer,
    metrics: Arc<Metrics>,
    commit_interval: Duration,
    max_pending_bytes: usize,
) -> (Ingest, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let max_cost = u32::try_from(max_pending_bytes.max(1)).unwrap_or(u32::MAX);
    let ingest = Ingest {
        tx,
        budget: Arc::new(Semaphore::new(max_cost as usize)),
        max_cost,
        metrics,
        transport: Transport::InProcess,
    };
    let task = GroupCommit {
        writer: Some(writer),
        pending: Vec::new(),
        pending_bytes: 0,
        // Commit early once half the budget waits, so pushers rarely stall.
        flush_bytes: (max_cost as usize / 2).max(1),
        interval: commit_interval,
        last_commit: None,
    };
    (ingest, tokio::spawn(task.run(rx)))
}

struct Waiter {
    reply: oneshot::Sender<Result<IngestOutcome, Error>>,
    _permit: OwnedSemaphorePermit,
}

struct GroupCommit {
    /// `None` once the blocking writer died (a panic): every push then fails.
    writer: Option<Writer>,
    pending: Vec<(Vec<LogRecord>, Waiter)>,
    pending_bytes: usize,
    flush_bytes: usize,
    interval: Duration,
    last_commit: Option<Instant>,
}

impl GroupCommit {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        loop {
            let due = self.last_commit.map(|t| t + self.interval);
            let command = if self.pending.is_empty() {
                rx.recv().await
            } else {
                let deadline = due.unwrap_or_else(Instant::now);
                tokio::select! {
                    c = rx.recv() => c,
                    () = tokio::time::sleep_until(deadline) => {
                        self.flush().await;
                        continue;
                    }
                }
            };
            match command {
                Some(Command::Push {
                    records,
                    bytes,
                    permit,
                    reply,
                }) => {
                    self.pending_bytes += bytes;
                    self.pending.push((
                        records,
                        Waiter {
                            reply,
                            _permit: permit,
                        },
                    ));
                    let is_due = due.is_none_or(|d| Instant::now() >= d);
                    if is_due || self.pending_bytes >= self.flush_bytes {
                        self.flush().await;
                    }
                }
                Some(Command::Retain { reply }) => {
                    self.flush().await;
                    let _ = reply.send(self.retain().await);
                }
                Some(Command::Shutdown { reply }) => {
                    self.flush().await;
                    self.close().await;
                    let _ = reply.send(());
                    return;
                }
                None => {
                    self.flush().await;
                    self.close().await;
                    return;
                }
            }
        }
    }

    /// Indexes and commits everything pending, then answers its waiters.
    async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.pending_bytes = 0;
        let (batches, waiters): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.pending).into_iter().unzip();
        let Some(mut writer) = self.writer.take() else {
            for w in waiters {
                let _ = w.reply.send(Err(Error::WriterStopped));
            }
            return;
        };
        let joined = tokio::task::spawn_blocking(move || {
            let result = writer.write_batches(batches);
            (writer, result)
        })
        .await;
        self.last_commit = Some(Instant::now());
        match joined {
            Ok((writer, Ok(outcomes))) => {
                self.writer = Some(writer);
                for (w, outcome) in waiters.into_iter().zip(outcomes) {
                    let _ = w.reply.send(Ok(outcome));
                }
            }
            Ok((writer, Err(e))) => {
                self.writer = Some(writer);
                tracing::error!(error = %e, "group commit failed; senders will retry");
                let reason = e.to_string();
                for w in waiters {
                    let _ = w.reply.send(Err(Error::CommitFailed {
                        reason: reason.clone(),
                    }));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "index writer task died; no more records are accepted");
                for w in waiters {
                    let _ = w.reply.send(Err(Error::Task {
                        what: "index writer",
                        reason: e.to_string(),
                    }));
                }
            }
        }
    }

    async fn retain(&mut self) -> Result<usize, Error> {
        let Some(mut writer) = self.writer.take() else {
            return Err(Error::WriterStopped);
        };
        let joined = tokio::task::spawn_blocking(move || {
            let result = writer.apply_retention();
            (writer, result)
        })
        .await;
        match joined {
            Ok((writer, result)) => {
                self.writer = Some(writer);
                result
            }
            Err(e) => Err(Error::Task {
                what: "retention",
                reason: e.to_string(),
            }),
        }
    }

    /// Drops the writer off the reactor: tantivy joins its threads on drop.
    async fn close(&mut self) {
        if let Some(writer) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || drop(writer)).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use mecha_parsers::Severity;

    use crate::test_support::*;
    use crate::{Aggregator, AggregatorOptions};

    #[tokio::test]
    async fn push_resolves_once_records_are_searchable() {
        let dir = tempdir();
        let agg = Aggregator::start(AggregatorOptions {
            grpc_listen: None,
            http_listen: None,
            ..options(dir.path())
        })
        .await
        .unwrap();
        let ingest = agg.ingest();
        let t = today_start_ns() + HOUR_NS;
        let mut pushes = Vec::new();
        for i in 0..20 {
            let ingest = ingest.clone();
            let r = at(record(t + i, Severity::Info, "a", "x"), &format!("s{i}"), 1);
            pushes.push(tokio::spawn(async move { ingest.push(vec![r]).await }));
        }
        for p in pushes {
            assert_eq!(p.await.unwrap().unwrap().accepted, 1);
        }
        // No waiting: a resolved push means committed and reloaded.
        let store = agg.store();
        assert_eq!(store.search("*", t, t + 100, 100).unwrap().total, 20);
        // Concurrent pushes were grouped into fewer commits than pushes.
        let commits = agg.metrics().commits.get();
        assert!(commits < 20, "{commits} commits for 20 pushes");
        let again = ingest
            .push(vec![at(record(t, Severity::Info, "a", "x"), "s0", 1)])
            .await
            .unwrap();
        assert_eq!((again.accepted, again.duplicates), (0, 1));
        agg.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn pushes_over_the_byte_bound_wait_but_all_land() {
        let dir = tempdir();
        let agg = Aggregator::start(AggregatorOptions {
            grpc_listen: None,
            http_listen: None,
            max_pending_bytes: 4 * 1024,
            ..options(dir.path())
        })
        .await
        .unwrap();
        let t = today_start_ns() + HOUR_NS;
        let mut pushes = Vec::new();
        for i in 0..16 {
            let ingest = agg.ingest();
            let batch: Vec<_> = (0..10)
                .map(|j| record(t + i * 10 + j, Severity::Info, "a", &"y".repeat(100)))
                .collect();
            pushes.push(tokio::spawn(async move { ingest.push(batch).await }));
        }
        for p in pushes {
            assert_eq!(p.await.unwrap().unwrap().accepted, 10);
        }
        assert_eq!(agg.metrics().pending_records.get(), 0);
        assert_eq!(agg.store().search("*", t, t + 1_000, 0).unwrap().total, 160);
        agg.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn push_after_shutdown_fails_instead_of_hanging() {
        let dir = tempdir();
        let agg = Aggregator::start(AggregatorOptions {
            grpc_listen: None,
            http_listen: None,
            ..options(dir.path())
        })
        .await
        .unwrap();
        let ingest = agg.ingest();
        agg.shutdown().await.unwrap();
        let t = today_start_ns() + HOUR_NS;
        let err = ingest.push(vec![record(t, Severity::Info, "a", "x")]).await;
        assert!(matches!(err, Err(crate::Error::WriterStopped)), "{err:?}");
    }

    /// Rough indexing throughput; run with
    /// `cargo test -p mecha-aggregator --release -- --ignored --nocapture indexing_throughput`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement, not a check"]
    async fn indexing_throughput() {
        let dir = tempdir();
        let agg = Aggregator::start(AggregatorOptions {
            grpc_listen: None,
            http_listen: None,
            commit_interval: std::time::Duration::from_millis(500),
            ..options(dir.path())
        })
        .await
        .unwrap();
        let t = today_start_ns() + HOUR_NS;
        let (pushers, batches, per_batch) = (8u64, 25u64, 1_000u64);
        let started = std::time::Instant::now();
        let mut tasks = Vec::new();
        for p in 0..pushers {
            let ingest = agg.ingest();
            tasks.push(tokio::spawn(async move {
                for b in 0..batches {
                    let batch: Vec<_> = (0..per_batch)
                        .map(|i| {
                            let n = (p * batches + b) * per_batch + i;
                            let r = record(
                                t + n as i64,
                                Severity::Info,
                                "shop",
                                &format!("GET /api/v1/orders/{n} 200 12ms user-agent=curl/8.5 trace={n:x} request served from cache"),
                            );
                            let r = with_attr(r, "user", format!("user{}", n % 97));
                            let r = with_attr(r, "status", 200);
                            at(r, &format!("file-{p}"), n + 1)
                        })
                        .collect();
                    ingest.push(batch).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = started.elapsed().as_secs_f64();
        let total = pushers * batches * per_batch;
        println!(
            "indexed {total} records in {elapsed:.2} s: {:.0} records/s, {} commits",
            total as f64 / elapsed,
            agg.metrics().commits.get()
        );
        assert_eq!(
            agg.store()
                .search("*", t, t + total as i64, 0)
                .unwrap()
                .total,
            total as usize
        );
        agg.shutdown().await.unwrap();
    }
}
