//! Joins the events of concurrent requests into chunks and tells each
//! request when its events are safe.
//!
//! Requests hand their records to one task through a queue bounded in
//! events (a semaphore: a request that finds no room is answered 429 at
//! once). The task encodes whatever is queued into one chunk, up to
//! `max_chunk_bytes`, without waiting for more: under load chunks fill by
//! themselves, and when idle an event is not held back. The chunk's
//! acknowledgement (fsync in the disk buffer, or the aggregator's commit)
//! resolves every request in it; a pipeline that stays full for
//! `send_wait` fails them with [`Delivery::BufferFull`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mecha_parsers::LogRecord;
use mecha_parsers::otlp::LogsEncoder;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::pipeline::{Output, SendTimeoutError, Settled};

/// What became of a request's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Safe in the buffer (or committed downstream).
    Safe,
    /// The pipeline stayed full; nothing was kept.
    BufferFull,
    /// Dropped further on (by the buffer's `when_full` policy, or refused
    /// by the aggregator) and counted there as discards; nothing was kept.
    Dropped,
    /// The agent is stopping.
    Closed,
}

/// Why a request could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue has no room for this many events now.
    Full,
    /// The batcher has stopped.
    Closed,
}

struct Submission {
    records: Vec<LogRecord>,
    done: oneshot::Sender<Delivery>,
    _permit: OwnedSemaphorePermit,
}

/// The requests' side of the batcher.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::UnboundedSender<Submission>,
    room: Arc<Semaphore>,
    capacity: u32,
}

impl Batcher {
    /// Starts the batching task; it stops once every [`Batcher`] is dropped
    /// and what was queued is sent.
    pub fn start(
        output: Output,
        queue_events: usize,
        max_chunk_bytes: usize,
        send_wait: Duration,
    ) -> (Batcher, tokio::task::JoinHandle<()>) {
        // The channel is unbounded in messages but every message holds
        // permits for its events: the semaphore is the bound.
        let (tx, rx) = mpsc::unbounded_channel();
        let capacity = u32::try_from(queue_events.max(1)).unwrap_or(u32::MAX);
        let room = Arc::new(Semaphore::new(capacity as usize));
        let task = tokio::spawn(run(rx, output, max_chunk_bytes, send_wait));
        (Batcher { tx, room, capacity }, task)
    }

    /// Queues `records` (of one request); the receiver resolves once they
    /// are safe or lost.
    pub fn submit(&self, records: Vec<LogRecord>) -> Result<oneshot::Receiver<Delivery>, Refused> {
        let n = u32::try_from(records.len()).unwrap_or(u32::MAX);
        // A request larger than the whole queue takes all of it rather than
        // never fitting.
        let permit = self
            .room
            .clone()
            .try_acquire_many_owned(n.clamp(1, self.capacity))
            .map_err(|_| Refused::Full)?;
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Submission {
                records,
                done,
                _permit: permit,
            })
            .map_err(|_| Refused::Closed)?;
        Ok(rx)
    }
}

/// Chunks sealed but not yet acknowledged, at most. While they are on their
/// way (an fsync, a commit), requests gather in the queue and the next chunk
/// takes them all: the busier the endpoint, the larger its chunks, and an
/// idle one still sends each event at once.
const CHUNKS_IN_FLIGHT: usize = 4;

/// The requests of one chunk, resolved once by whoever comes first: the
/// acknowledgement or the batcher giving up. Holds one of the in-flight
/// permits until then.
struct Waiters(Mutex<Option<(Vec<Submission>, OwnedSemaphorePermit)>>);

impl Waiters {
    fn resolve(&self, outcome: Delivery) {
        let taken = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((subs, _in_flight)) = taken {
            for s in subs {
                let _ = s.done.send(outcome);
            }
        }
    }
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Submission>,
    output: Output,
    max_chunk_bytes: usize,
    send_wait: Duration,
) {
    let mut encoder = LogsEncoder::default();
    let mut sealer = output.codec().sealer();
    let mut request = Vec::new();
    let in_flight = Arc::new(Semaphore::new(CHUNKS_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Never closed: the semaphore lives in this task.
        let permit = in_flight.clone().acquire_owned().await;
        let mut subs = Vec::new();
        let mut next = Some(first);
        while let Some(mut s) = next.take() {
            for r in &s.records {
                encoder.push(r);
            }
            // Encoded: the records are not needed any more, only the waiter.
            s.records = Vec::new();
            subs.push(s);
            if encoder.bytes() < max_chunk_bytes {
                next = rx.try_recv().ok();
            }
        }
        let records = encoder.records();
        request.clear();
        encoder.finish_into(&mut request);
        let Ok(permit) = permit else {
            return;
        };
        let waiters = Arc::new(Waiters(Mutex::new(Some((subs, permit)))));
        let on_ack = waiters.clone();
        let chunk = sealer
            .seal(
                &mut request,
                records,
                Some(Box::new(move |settled| {
                    on_ack.resolve(match settled {
                        Settled::Kept => Delivery::Safe,
                        Settled::Dropped => Delivery::Dropped,
                    })
                })),
            )
            .awaited();
        match output.send_timeout(chunk, send_wait).await {
            Ok(()) => {}
            Err(SendTimeoutError::Full(chunk)) => {
                drop(chunk.into_ack());
                waiters.resolve(Delivery::BufferFull);
            }
            Err(SendTimeoutError::Closed(chunk)) => {
                drop(chunk.into_ack());
                waiters.resolve(Delivery::Closed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::AgentMetrics;
    use crate::pipeline;

    fn records(n: usize) -> Vec<LogRecord> {
        (0..n)
            .map(|i| LogRecord::new(format!("event {i}"), 1))
            .collect()
    }

    #[tokio::test]
    async fn queued_requests_share_a_chunk_and_its_acknowledgement() {
        let (output, mut input) =
            pipeline::channel(4, Arc::new(AgentMetrics::new()), pipeline::ChunkCodec::Raw);
        let (b, _task) = Batcher::start(output, 100, 1 << 20, Duration::from_secs(1));
        let r1 = b.submit(records(2)).unwrap_or_else(|_| panic!("refused"));
        let r2 = b.submit(records(3)).unwrap_or_else(|_| panic!("refused"));
        let mut got = 0;
        let mut chunks = Vec::new();
        while got < 5 {
            let c = input.recv().await.unwrap_or_else(|| panic!("closed"));
            got += c.records;
            chunks.push(c);
        }
        assert!(chunks.len() <= 2);
        for c in chunks {
            c.ack();
        }
        assert_eq!(r1.await, Ok(Delivery::Safe));
        assert_eq!(r2.await, Ok(Delivery::Safe));
    }

    #[tokio::test]
    async fn requests_arriving_while_chunks_are_in_flight_share_the_next_chunk() {
        let (output, mut input) =
            pipeline::channel(16, Arc::new(AgentMetrics::new()), pipeline::ChunkCodec::Raw);
        let (b, _task) = Batcher::start(output, 100, 1 << 20, Duration::from_secs(1));
        let mut held = Vec::new();
        let mut waiting = Vec::new();
        for _ in 0..CHUNKS_IN_FLIGHT {
            waiting.push(b.submit(records(1)).unwrap_or_else(|_| panic!("refused")));
            held.push(input.recv().await.unwrap_or_else(|| panic!("closed")));
        }
        // Every permit is out: these three wait in the queue together.
        for _ in 0..3 {
            waiting.push(b.submit(records(1)).unwrap_or_else(|_| panic!("refused")));
        }
        tokio::task::yield_now().await;
        assert!(input.try_recv().is_none());
        held.remove(0).ack();
        let next = input.recv().await.unwrap_or_else(|| panic!("closed"));
        assert_eq!(next.records, 3);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_frees_its_room_after_the_ack() {
        let (output, mut input) =
            pipeline::channel(4, Arc::new(AgentMetrics::new()), pipeline::ChunkCodec::Raw);
        let (b, _task) = Batcher::start(output, 3, 1 << 20, Duration::from_secs(1));
        let r1 = b.submit(records(3)).unwrap_or_else(|_| panic!("refused"));
        assert_eq!(b.submit(records(1)).err(), Some(Refused::Full));
        let c = input.recv().await.unwrap_or_else(|| panic!("closed"));
        c.ack();
        assert_eq!(r1.await, Ok(Delivery::Safe));
        assert!(b.submit(records(1)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_pipeline_full_past_the_wait_fails_the_requests_as_buffer_full() {
        let (output, _input) =
            pipeline::channel(1, Arc::new(AgentMetrics::new()), pipeline::ChunkCodec::Raw);
        let (b, _task) = Batcher::start(output, 100, 1 << 20, Duration::from_secs(2));
        // The first chunk fills the pipeline (nobody reads it).
        let first = b.submit(records(1)).unwrap_or_else(|_| panic!("refused"));
        tokio::task::yield_now().await;
        let second = b.submit(records(1)).unwrap_or_else(|_| panic!("refused"));
        // Paused time: the wait elapses as soon as every task is idle.
        assert_eq!(second.await, Ok(Delivery::BufferFull));
        drop(first);
    }

    #[tokio::test]
    async fn a_dropped_chunk_is_not_reported_safe() {
        let (output, mut input) =
            pipeline::channel(4, Arc::new(AgentMetrics::new()), pipeline::ChunkCodec::Raw);
        let (b, _task) = Batcher::start(output, 100, 1 << 20, Duration::from_secs(1));
        let r = b.submit(records(1)).unwrap_or_else(|_| panic!("refused"));
        drop(input.recv().await);
        // The waiter went with the chunk: the request sees its sender gone.
        assert!(r.await.is_err());
    }
}
