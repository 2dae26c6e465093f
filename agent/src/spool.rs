//! The spool: where encoded chunks wait between the sources and the forwarder.
//!
//! With a **memory** buffer there is no spool: the sources' bounded channel
//! feeds the forwarder, and a chunk is acknowledged to its source when the
//! downstream acknowledges it.
//!
//! With a **disk** buffer, two tasks sit in between:
//!
//! - the *writer* appends each chunk to the [`DiskBuffer`] and acknowledges it
//!   to its source once the buffer reports it fsynced (so a file checkpoint
//!   never passes a line that is neither durable here nor delivered);
//! - the *reader* hands buffered records to the forwarder as chunks whose
//!   acknowledgement releases buffer space.
//!
//! The sources then never wait for the aggregator: while it is away the buffer
//! grows, up to `max_size`, and then sources wait (`block`) or new chunks are
//! dropped and counted (`drop_newest`); a dropped chunk is settled as
//! [`pipeline::Settled::Dropped`], so files move past its lines while a push
//! source tells its client the events were not stored. When a write fails (disk full, read-only
//! data dir) the writer reports it on `/ready`, holds the chunk and retries;
//! the sources wait behind it, so the files are the buffer until space returns.
//!
//! A buffered record is the chunk's record count (u32, little endian) followed
//! by its encoded OTLP request, so the forwarder can count records without
//! decoding.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;

use crate::Shutdown;
use crate::admin::Readiness;
use crate::buffer::{Appended, BufferError, BufferOptions, BufferReader, BufferStats, DiskBuffer};
use crate::metrics::{AgentMetrics, reason};
use crate::pipeline::{self, Chunk, ChunkEncoding, Input, Output};

const COMPONENT: &str = "buffer";
/// The readiness entry of the buffer.
const READINESS: &str = "buffer";
/// How long writes and reads are retried apart, at most.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// After shutdown is requested, how long an append may still wait for space.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// A running disk spool.
pub struct DiskSpool {
    buffer: DiskBuffer,
    writer: JoinHandle<()>,
    reader: JoinHandle<()>,
    stats: JoinHandle<()>,
}

impl DiskSpool {
    /// Opens the buffer, recovering what a crash left, and starts the writer
    /// (consuming `input`) and the reader; returns the input of the forwarder.
    pub async fn start(
        options: BufferOptions,
        input: Input,
        queue_chunks: usize,
        metrics: Arc<AgentMetrics>,
        readiness: Arc<Readiness>,
        shutdown: Shutdown,
    ) -> Result<(DiskSpool, Input), BufferError> {
        let dir = options.dir.clone();
        let (buffer, reader, report) = DiskBuffer::open(options).await?;
        if report.truncated_bytes > 0 {
            tracing::warn!(
                dir = %dir.display(),
                bytes = report.truncated_bytes,
                at = report.truncation.as_deref().unwrap_or(""),
                "buffer: cut a torn tail left by a crash; its chunks are read again from their files"
            );
        }
        tracing::info!(
            dir = %dir.display(),
            segments = report.segments,
            resume_after = report.resume_after,
            next = report.next_seq,
            "buffer opened"
        );
        let (output, forward_input) =
            pipeline::channel(queue_chunks, metrics.clone(), pipeline::ChunkCodec::Raw);
        let writer = tokio::spawn(write(
            buffer.clone(),
            input,
            metrics.clone(),
            readiness,
            shutdown.clone(),
        ));
        let reader = tokio::spawn(read(
            Arc::new(reader),
            output,
            metrics.clone(),
            shutdown.clone(),
        ));
        let stats = tokio::spawn(publish_stats(buffer.clone(), metrics, shutdown));
        Ok((
            DiskSpool {
                buffer,
                writer,
                reader,
                stats,
            },
            forward_input,
        ))
    }

    /// Waits for the writer to finish (every source has stopped and what they
    /// sent is durable and acknowledged).
    pub async fn writer_done(&mut self) {
        if let Err(e) = (&mut self.writer).await {
            tracing::error!(error = %e, "buffer writer task failed");
        }
    }

    /// After the forwarder has stopped: stops the reader and persists the
    /// buffer's acknowledgement.
    pub async fn close(self) {
        if let Err(e) = self.reader.await {
            tracing::error!(error = %e, "buffer reader task failed");
        }
        if let Err(e) = self.buffer.sync().await {
            tracing::error!(error = %e, "buffer: final sync failed; undelivered chunks may be sent twice after restart");
        }
        if let Err(e) = self.stats.await {
            tracing::error!(error = %e, "buffer stats task failed");
        }
    }
}

/// Set in a payload's record count when the request is one zstd frame,
/// followed by the raw size. Payloads written before chunks could be
/// compressed never have it (no chunk holds 2^31 records).
const ZSTD_PAYLOAD: u32 = 1 << 31;

/// The payload of one buffered chunk: the record count (with
/// [`ZSTD_PAYLOAD`] and the raw size for a compressed request), then the
/// request as stored.
fn encode(chunk: &Chunk, out: &mut Vec<u8>) {
    out.clear();
    let records = u32::try_from(chunk.records)
        .unwrap_or(u32::MAX)
        .min(ZSTD_PAYLOAD - 1);
    match chunk.encoding {
        ChunkEncoding::Raw => out.extend_from_slice(&records.to_le_bytes()),
        ChunkEncoding::Zstd => {
            out.extend_from_slice(&(records | ZSTD_PAYLOAD).to_le_bytes());
            let raw = u32::try_from(chunk.raw_bytes).unwrap_or(u32::MAX);
            out.extend_from_slice(&raw.to_le_bytes());
        }
    }
    out.extend_from_slice(&chunk.request);
}

/// What a buffered payload holds: record count, encoding, raw size and the
/// request as stored.
fn decode(payload: Vec<u8>) -> (usize, ChunkEncoding, usize, Bytes) {
    let payload = Bytes::from(payload);
    let word = |at: usize| {
        payload
            .get(at..at + 4)
            .and_then(|h| <[u8; 4]>::try_from(h).ok())
            .map(u32::from_le_bytes)
    };
    match (word(0), word(4)) {
        (Some(h), Some(raw)) if h & ZSTD_PAYLOAD != 0 => (
            (h & !ZSTD_PAYLOAD) as usize,
            ChunkEncoding::Zstd,
            raw as usize,
            payload.slice(8..),
        ),
        (Some(h), _) if h & ZSTD_PAYLOAD == 0 => {
            let request = payload.slice(4..);
            (h as usize, ChunkEncoding::Raw, request.len(), request)
        }
        // Never written by `encode`; CRC-checked by the buffer. Sent as an
        // empty request rather than dropped, so acknowledgements stay in order.
        _ => (0, ChunkEncoding::Raw, 0, Bytes::new()),
    }
}

/// Chunks waiting to be acknowledged to their sources, by sequence number.
type Pending = VecDeque<(u64, Option<pipeline::AckFn>)>;

/// The writer: appends chunks and acknowledges them to their sources once
/// durable, in order.
///
/// Whatever chunks are queued when it turns to the input are appended as one
/// group, in one blocking call; when a client waits for any of them (a
/// Sentry SDK), that call also fsyncs the group, and the chunks are
/// acknowledged as soon as it returns. While that fsync runs, the next
/// chunks queue up and form the next group: a group commit whose groups grow
/// with the load, with no timer, so that an idle endpoint answers after one
/// write and one fsync.
async fn write(
    buffer: DiskBuffer,
    mut input: Input,
    metrics: Arc<AgentMetrics>,
    readiness: Arc<Readiness>,
    shutdown: Shutdown,
) {
    let mut durable = buffer.durable();
    // Only the acknowledgements wait for fsync; the records are in the buffer.
    let mut pending: Pending = VecDeque::new();
    let mut payload = Vec::new();
    loop {
        let chunk = tokio::select! {
            biased;
            changed = durable.changed() => {
                if changed.is_err() {
                    break; // the buffer stopped
                }
                let upto = *durable.borrow_and_update();
                release(&mut pending, upto);
                continue;
            }
            chunk = input.recv() => chunk,
        };
        let Some(chunk) = chunk else {
            break; // every source has stopped
        };
        let mut group = vec![chunk];
        let mut bytes = group[0].bytes();
        while bytes < GROUP_BYTES
            && let Some(c) = input.try_recv()
        {
            bytes += c.bytes();
            group.push(c);
        }
        let awaited = group.iter().any(Chunk::is_awaited);
        let payloads = group
            .iter()
            .map(|c| {
                let mut p = Vec::new();
                encode(c, &mut p);
                p
            })
            .collect();
        let (written, synced) = match buffer.append_group(payloads, awaited).await {
            Ok(g) => (g.written, g.durable),
            Err(_) => (Vec::new(), false),
        };
        let mut rest = group.into_iter();
        if !written.is_empty() {
            readiness.set_problem(READINESS, None);
        }
        for (seq, chunk) in written.iter().zip(&mut rest) {
            pending.push_back((*seq, chunk.into_ack()));
        }
        if synced {
            release(&mut pending, *durable.borrow_and_update());
        } else if awaited && !written.is_empty() {
            early_sync(&buffer);
        }
        // What the group could not take (no room, a failed write, a chunk
        // too large) goes one at a time, waiting and retrying as need be.
        for chunk in rest {
            if !append_one(
                &buffer,
                chunk,
                &mut payload,
                &mut pending,
                &metrics,
                &readiness,
                &shutdown,
            )
            .await
            {
                return finish(&buffer, pending, &mut durable).await;
            }
        }
    }
    finish(&buffer, pending, &mut durable).await;
}

/// At most this many bytes of chunks are appended as one group.
const GROUP_BYTES: usize = 8 << 20;

/// An fsync pass now rather than at the next interval, for a chunk a client
/// waits for. Passes asked for together are one pass.
fn early_sync(buffer: &DiskBuffer) {
    let buffer = buffer.clone();
    tokio::spawn(async move {
        if let Err(e) = buffer.sync().await {
            tracing::debug!(error = %e, "buffer: early fsync failed; the interval's will follow");
        }
    });
}

/// Appends one chunk, waiting for space and retrying failed writes; false
/// when it gave up at shutdown (the chunk stays unacknowledged).
async fn append_one(
    buffer: &DiskBuffer,
    chunk: Chunk,
    payload: &mut Vec<u8>,
    pending: &mut Pending,
    metrics: &AgentMetrics,
    readiness: &Readiness,
    shutdown: &Shutdown,
) -> bool {
    encode(&chunk, payload);
    let mut delay = Duration::from_millis(100);
    loop {
        let appended = tokio::select! {
            r = buffer.append(payload) => r,
            _ = async {
                shutdown.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                // Full, or failing, at shutdown: the chunk stays unacknowledged
                // and its lines are read again after restart.
                tracing::warn!("buffer: gave up a chunk at shutdown; it will be read again");
                return false;
            }
        };
        match appended {
            Ok(Appended::Written { seq }) => {
                if delay > Duration::from_millis(100) {
                    tracing::info!("buffer: writes succeed again");
                }
                readiness.set_problem(READINESS, None);
                if chunk.is_awaited() {
                    // A client waits for this acknowledgement (a Sentry
                    // SDK): fsync now instead of at the next interval.
                    early_sync(buffer);
                }
                pending.push_back((seq, chunk.into_ack()));
                return true;
            }
            Ok(Appended::Dropped) => {
                metrics
                    .discarded
                    .with_label_values(&[COMPONENT, reason::BUFFER_FULL])
                    .inc_by(chunk.records as u64);
                // Dropped by policy: the source may move past these lines,
                // and a client waiting for them is told they were not kept.
                chunk.discard();
                return true;
            }
            Err(e @ BufferError::TooLarge { .. }) => {
                metrics
                    .discarded
                    .with_label_values(&[COMPONENT, reason::BUFFER_TOO_LARGE])
                    .inc_by(chunk.records as u64);
                tracing::error!(error = %e, records = chunk.records, "buffer: chunk dropped");
                chunk.discard();
                return true;
            }
            Err(e) => {
                metrics
                    .errors
                    .with_label_values(&[COMPONENT, "write"])
                    .inc();
                if delay == Duration::from_millis(100) {
                    tracing::error!(error = %e, "buffer: write failed; sources wait, retrying");
                }
                readiness.set_problem(READINESS, Some(e.to_string()));
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => {}
                }
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Makes what was written durable and acknowledges it.
async fn finish(
    buffer: &DiskBuffer,
    mut pending: Pending,
    durable: &mut tokio::sync::watch::Receiver<u64>,
) {
    if pending.is_empty() {
        return;
    }
    match buffer.sync().await {
        Ok(()) => release(&mut pending, *durable.borrow_and_update()),
        Err(e) => tracing::error!(
            error = %e,
            chunks = pending.len(),
            "buffer: final sync failed; those lines will be read again after restart"
        ),
    }
}

/// Acknowledges, in order, the chunks at or below the durable sequence.
fn release(pending: &mut Pending, durable: u64) {
    while pending.front().is_some_and(|(seq, _)| *seq <= durable) {
        if let Some((_, Some(ack))) = pending.pop_front() {
            ack(pipeline::Settled::Kept);
        }
    }
}

/// The reader: hands buffered chunks to the forwarder until shutdown.
async fn read(
    reader: Arc<BufferReader>,
    output: Output,
    metrics: Arc<AgentMetrics>,
    shutdown: Shutdown,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        let next = tokio::select! {
            r = reader.next() => r,
            // What is buffered is safe: no need to drain it before stopping.
            _ = shutdown.cancelled() => return,
        };
        match next {
            Ok(record) => {
                delay = Duration::from_millis(100);
                let seq = record.seq;
                let (records, encoding, raw, request) = decode(record.payload);
                if request.is_empty() {
                    metrics.discard(COMPONENT, reason::BUFFER_CORRUPT);
                }
                let r = reader.clone();
                let ack: pipeline::AckFn = Box::new(move |_| r.ack(seq));
                let chunk = Chunk::encoded(request, encoding, raw, records, Some(ack));
                if output.send(chunk).await.is_err() {
                    return; // the forwarder stopped
                }
            }
            Err(BufferError::Stopped) => return,
            Err(e) => {
                metrics.errors.with_label_values(&[COMPONENT, "read"]).inc();
                tracing::error!(error = %e, "buffer: read failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Copies the buffer's counts into the metrics every second, and once more at
/// shutdown.
async fn publish_stats(buffer: DiskBuffer, metrics: Arc<AgentMetrics>, shutdown: Shutdown) {
    let mut last = BufferStats::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.cancelled() => true,
        };
        let now = buffer.stats();
        metrics.record_buffer(&last, &now);
        last = now;
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use mecha_parsers::LogRecord;
    use mecha_parsers::otlp::{decode_logs_request, encode_logs_wire};

    use super::*;
    use crate::buffer::WhenFull;

    fn chunk(body: &str, acked: &Arc<AtomicUsize>) -> Chunk {
        let mut request = Vec::new();
        encode_logs_wire(&[LogRecord::new(body, 1)], &mut request);
        let a = acked.clone();
        Chunk::new(
            request,
            1,
            Some(Box::new(move |_| {
                a.fetch_add(1, Ordering::SeqCst);
            })),
        )
    }

    fn body(c: &Chunk) -> String {
        decode_logs_request(&c.request)
            .ok()
            .and_then(|r| r.into_iter().next())
            .map(|r| r.body)
            .unwrap_or_default()
    }

    struct Running {
        out: Output,
        forward: Input,
        spool: DiskSpool,
        shutdown: Shutdown,
        metrics: Arc<AgentMetrics>,
        readiness: Arc<Readiness>,
    }

    async fn start(options: BufferOptions) -> Running {
        let metrics = Arc::new(AgentMetrics::new());
        let readiness = Arc::new(Readiness::default());
        let shutdown = Shutdown::new();
        let (out, input) = pipeline::channel(2, metrics.clone(), pipeline::ChunkCodec::Raw);
        let started = DiskSpool::start(
            options,
            input,
            2,
            metrics.clone(),
            readiness.clone(),
            shutdown.clone(),
        )
        .await;
        let Ok((spool, forward)) = started else {
            panic!("cannot open the buffer");
        };
        Running {
            out,
            forward,
            spool,
            shutdown,
            metrics,
            readiness,
        }
    }

    async fn stop(r: Running) {
        r.shutdown.cancel();
        drop(r.out);
        let mut spool = r.spool;
        spool.writer_done().await;
        drop(r.forward);
        spool.close().await;
    }

    #[tokio::test]
    async fn chunks_are_acked_to_sources_once_durable_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let acked = Arc::new(AtomicUsize::new(0));
        let mut r = start(BufferOptions::new(dir.path())).await;
        for b in ["a", "b", "c"] {
            assert!(r.out.send(chunk(b, &acked)).await.is_ok());
        }
        // Acknowledged to the source without anything delivered downstream.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while acked.load(Ordering::SeqCst) < 3 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(acked.load(Ordering::SeqCst), 3);
        // The forwarder gets them in order; it delivers only the first.
        let mut got = Vec::new();
        for _ in 0..3 {
            match r.forward.recv().await {
                Some(c) => got.push(c),
                None => panic!("reader stopped"),
            }
        }
        assert_eq!(got.iter().map(body).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(got.iter().map(|c| c.records).sum::<usize>(), 3);
        let mut rest = got.split_off(1);
        for c in got {
            c.ack();
        }
        rest.clear(); // not delivered: no ack
        stop(r).await;

        // After a restart, the undelivered ones come again, and only they.
        let mut r = start(BufferOptions::new(dir.path())).await;
        let mut again = Vec::new();
        for _ in 0..2 {
            match tokio::time::timeout(Duration::from_secs(10), r.forward.recv()).await {
                Ok(Some(c)) => again.push(body(&c)),
                _ => panic!("buffered chunks were not handed out again"),
            }
        }
        assert_eq!(again, ["b", "c"]);
        stop(r).await;
    }

    #[tokio::test]
    async fn an_awaited_chunk_is_fsynced_without_waiting_for_the_interval() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let acked = Arc::new(AtomicUsize::new(0));
        let mut options = BufferOptions::new(dir.path());
        // Far longer than the test may run: only an early fsync can ack.
        options.fsync_interval = Duration::from_secs(3600);
        let r = start(options).await;
        let wait_for = |n: usize| {
            let acked = acked.clone();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                while acked.load(Ordering::SeqCst) < n && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                acked.load(Ordering::SeqCst)
            }
        };
        // The first write after start is fsynced at once; the next pass is
        // then an hour away.
        assert!(r.out.send(chunk("first", &acked)).await.is_ok());
        assert_eq!(wait_for(1).await, 1);
        assert!(r.out.send(chunk("plain", &acked)).await.is_ok());
        assert!(r.out.send(chunk("awaited", &acked).awaited()).await.is_ok());
        // The early pass made both durable, the one before it too.
        assert_eq!(wait_for(3).await, 3);
        stop(r).await;
    }

    #[tokio::test]
    async fn awaited_chunks_queued_together_are_acked_in_order_once_durable() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut options = BufferOptions::new(dir.path());
        // Only the groups' own fsyncs can acknowledge.
        options.fsync_interval = Duration::from_secs(3600);
        let mut r = start(options).await;
        let senders: Vec<_> = (0..20)
            .map(|i| {
                let out = r.out.clone();
                let order = order.clone();
                let mut request = Vec::new();
                encode_logs_wire(&[LogRecord::new(format!("e{i}"), 1)], &mut request);
                let c = Chunk::new(
                    request,
                    1,
                    Some(Box::new(move |_| {
                        order.lock().unwrap_or_else(|e| e.into_inner()).push(i)
                    })),
                )
                .awaited();
                async move { out.send(c).await.is_ok() }
            })
            .collect();
        // Sent in order; the writer takes whatever is queued as a group.
        for s in senders {
            assert!(s.await);
        }
        let mut got = Vec::new();
        for _ in 0..20 {
            match tokio::time::timeout(Duration::from_secs(30), r.forward.recv()).await {
                Ok(Some(c)) => got.push(body(&c)),
                _ => panic!("a chunk never reached the forwarder"),
            }
        }
        let want: Vec<String> = (0..20).map(|i| format!("e{i}")).collect();
        assert_eq!(got, want);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while order.lock().unwrap_or_else(|e| e.into_inner()).len() < 20
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let acked = order.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(acked, (0..20).collect::<Vec<_>>());
        assert_eq!(r.spool.buffer.stats().durable_seq, 20);
        stop(r).await;
    }

    #[tokio::test]
    async fn drop_newest_settles_what_does_not_fit_as_dropped_and_counts_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let settled = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut options = BufferOptions::new(dir.path());
        options.max_size = 200;
        options.segment_bytes = 200;
        options.when_full = WhenFull::DropNewest;
        let r = start(options).await;
        let big = "x".repeat(120);
        for _ in 0..3 {
            let mut request = Vec::new();
            encode_logs_wire(&[LogRecord::new(big.as_str(), 1)], &mut request);
            let s = settled.clone();
            let ack: pipeline::AckFn =
                Box::new(move |how| s.lock().unwrap_or_else(|e| e.into_inner()).push(how));
            assert!(r.out.send(Chunk::new(request, 1, Some(ack))).await.is_ok());
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let outcomes = loop {
            let got = settled.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if got.len() == 3 || tokio::time::Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The first fits and is kept; the two that don't are settled as
        // dropped, so a push source answers that they were not stored.
        let count = |how| outcomes.iter().filter(|o| **o == how).count();
        assert_eq!(
            (
                count(pipeline::Settled::Kept),
                count(pipeline::Settled::Dropped)
            ),
            (1, 2),
            "{outcomes:?}"
        );
        let text = r.metrics.render();
        assert!(
            text.contains(
                "mecha_component_discarded_events_total{component=\"buffer\",reason=\"buffer_full\"} 2"
            ),
            "{text}"
        );
        stop(r).await;
    }

    #[tokio::test]
    async fn a_failing_disk_holds_the_chunk_reports_not_ready_and_resumes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mnt = dir.path().join("small");
        std::fs::create_dir_all(&mnt).unwrap_or_else(|e| panic!("{e}"));
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(&mnt)
            .status();
        assert!(
            mounted.is_ok_and(|s| s.success()),
            "this test needs root to mount a small tmpfs"
        );
        struct Unmount(std::path::PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&self.0)
                    .status();
            }
        }
        let _unmount = Unmount(mnt.clone());
        let acked = Arc::new(AtomicUsize::new(0));
        let mut options = BufferOptions::new(&mnt);
        options.segment_bytes = 16 << 10;
        let mut r = start(options).await;
        // Fill the disk with a file that is not the buffer's.
        let filler = mnt.join("filler");
        let _ = std::fs::write(&filler, vec![0u8; 60 << 10]);
        let text = "y".repeat(8 << 10);
        assert!(r.out.send(chunk(&text, &acked)).await.is_ok());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let not_ready = || {
            r.readiness
                .snapshot()
                .1
                .get(READINESS)
                .is_some_and(|p| p.contains("write failed"))
        };
        while !not_ready() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(not_ready(), "{:?}", r.readiness.snapshot());
        assert_eq!(acked.load(Ordering::SeqCst), 0);
        // Space returns: the held chunk is written, acknowledged and handed out.
        std::fs::remove_file(&filler).unwrap_or_else(|e| panic!("{e}"));
        match tokio::time::timeout(Duration::from_secs(30), r.forward.recv()).await {
            Ok(Some(c)) => assert_eq!(body(&c), text),
            _ => panic!("the held chunk never reached the forwarder"),
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while acked.load(Ordering::SeqCst) < 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(acked.load(Ordering::SeqCst), 1);
        assert!(r.readiness.snapshot().1.is_empty());
        assert!(
            r.metrics
                .render()
                .contains("mecha_component_errors_total{component=\"buffer\",kind=\"write\"}")
        );
        stop(r).await;
    }

    #[test]
    fn payloads_round_trip_and_a_short_one_is_an_empty_chunk() {
        let acked = Arc::new(AtomicUsize::new(0));
        let c = chunk("hello", &acked);
        let mut p = Vec::new();
        encode(&c, &mut p);
        let raw = c.request.len();
        assert_eq!(
            decode(p.clone()),
            (1, ChunkEncoding::Raw, raw, c.request.clone())
        );
        assert_eq!(decode(vec![1, 2]), (0, ChunkEncoding::Raw, 0, Bytes::new()));
        // A compressed chunk keeps its encoding and raw size.
        let mut raw = c.raw().map(|b| b.to_vec()).unwrap_or_default();
        let z = pipeline::ChunkCodec::Zstd(1)
            .sealer()
            .seal(&mut raw, 1, None);
        assert_eq!(z.encoding, ChunkEncoding::Zstd);
        encode(&z, &mut p);
        let (n, encoding, raw_bytes, request) = decode(p);
        let back = Chunk::encoded(request, encoding, raw_bytes, n, None);
        assert_eq!((n, encoding), (1, ChunkEncoding::Zstd));
        assert_eq!(back.raw().ok(), Some(c.request.clone()));
    }
}
