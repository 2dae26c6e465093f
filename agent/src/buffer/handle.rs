//! The async face of the buffer: a cloneable writer handle, the reader, and
//! the background task that fsyncs segments and persists acknowledgements.
//!
//! Every file operation runs on a blocking thread (`spawn_blocking`), one
//! record per call; the async side only waits. Wake-ups go through `watch`
//! channels (no polling): appends wake the reader, acknowledgements wake
//! appenders waiting for space, fsync passes publish the durable sequence
//! number.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex as AsyncMutex, Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::cursor::Cursor;
use super::frame::{PreparedFrame, frame_len};
use super::segments::{AppendOutcome, Segments, worth_logging};
use super::{Appended, BufferError, BufferOptions, BufferStats, Record, RecoveryReport, WhenFull};

/// After a failed fsync pass, the next try waits at least this long, so that
/// a broken disk with `fsync_interval: 0` does not spin.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The reader reads on the async side, without a blocking thread, when
/// what is left to read is at most this many bytes, all appended by this
/// process: the newest pages written, which the kernel still caches (a
/// 64 MiB segment is 256 times more).
const RECENT_READ_BYTES: u64 = 256 << 10;

/// State shared by the handles and the background task.
struct Shared {
    segs: Segments,
    fsync_interval: Duration,
    when_full: WhenFull,
    /// Something was written or acknowledged: an fsync pass is due.
    dirty: Notify,
    durable_tx: watch::Sender<u64>,
    appended_tx: watch::Sender<u64>,
    /// Follows [`Segments::advances`]: a change may have freed space.
    space_tx: watch::Sender<u64>,
}

impl Shared {
    /// Wakes appenders waiting for space if the acknowledged position moved.
    fn publish_space(&self) {
        let advances = self.segs.advances();
        self.space_tx.send_if_modified(|v| {
            let moved = advances > *v;
            *v = advances;
            moved
        });
    }
}

/// What [`DiskBuffer::append_group`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupAppended {
    /// Sequence numbers of the payloads written, in order: the group, or the
    /// part of it before the first payload that was not written.
    pub written: Vec<u64>,
    /// Whether the fsync asked for succeeded, so every written record is
    /// durable; if not, the next background pass makes them durable.
    pub durable: bool,
}

/// A request for an fsync pass, answered when it is done.
type SyncRequest = oneshot::Sender<Result<(), BufferError>>;

/// Runs `f` on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BufferError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| BufferError::Stopped)
}

/// The writing side of a disk buffer; clone it for each source.
///
/// Call [`DiskBuffer::sync`] at shutdown: records and acknowledgements not yet
/// fsynced survive a process exit (they are in the page cache) but not a
/// power loss.
#[derive(Clone)]
pub struct DiskBuffer {
    shared: Arc<Shared>,
    sync_tx: mpsc::Sender<SyncRequest>,
}

/// The reading side of a disk buffer: hands records out in order and takes
/// their acknowledgements. Its methods take `&self`, so it can be shared
/// between a reading task and an acknowledging one.
pub struct BufferReader {
    shared: Arc<Shared>,
    cursor: Arc<AsyncMutex<Cursor>>,
    /// Keeps the background task alive while acknowledgements may come.
    _sync_tx: mpsc::Sender<SyncRequest>,
}

impl DiskBuffer {
    /// Opens (creating if needed) the buffer in `options.dir`, recovering
    /// what a crash left (see the module docs), and starts its background
    /// fsync task. Must be called within a tokio runtime.
    pub async fn open(
        options: BufferOptions,
    ) -> Result<(DiskBuffer, BufferReader, RecoveryReport), BufferError> {
        let opts = options.clone();
        let (segs, cursor, report) = blocking(move || Segments::open(&opts)).await??;
        let stats = segs.stats();
        let advances = segs.advances();
        let shared = Arc::new(Shared {
            segs,
            fsync_interval: options.fsync_interval,
            when_full: options.when_full,
            dirty: Notify::new(),
            durable_tx: watch::channel(stats.durable_seq).0,
            appended_tx: watch::channel(stats.last_seq).0,
            space_tx: watch::channel(advances).0,
        });
        let (sync_tx, sync_rx) = mpsc::channel(64);
        tokio::spawn(run_syncer(shared.clone(), sync_rx));
        let reader = BufferReader {
            shared: shared.clone(),
            cursor: Arc::new(AsyncMutex::new(cursor)),
            _sync_tx: sync_tx.clone(),
        };
        Ok((DiskBuffer { shared, sync_tx }, reader, report))
    }

    /// Appends one payload and returns its sequence number once it is written
    /// (and, with `fsync_interval: 0`, fsynced).
    ///
    /// When unacknowledged records fill `max_size`, waits for
    /// acknowledgements ([`WhenFull::Block`]) or returns
    /// [`Appended::Dropped`] ([`WhenFull::DropNewest`]). A payload that could
    /// never fit is refused with [`BufferError::TooLarge`]. On a write error
    /// nothing of the record stays on disk; a later append may succeed.
    pub async fn append(&self, payload: &[u8]) -> Result<Appended, BufferError> {
        let size = frame_len(payload.len());
        let max = self.shared.segs.max_frame();
        if size > max {
            return Err(BufferError::TooLarge { size, max });
        }
        let mut frame = PreparedFrame::new(payload);
        loop {
            // Subscribed before trying, so an ack in between is not missed.
            let mut space = self.shared.space_tx.subscribe();
            let shared = self.shared.clone();
            let (returned, outcome) = blocking(move || {
                let outcome = shared.segs.append_frame(&mut frame);
                if let Ok(AppendOutcome::Written(seq)) = outcome {
                    // Here rather than after the await, so that a caller
                    // dropping this future still wakes reader and fsync task.
                    shared.appended_tx.send_replace(seq);
                    shared.dirty.notify_one();
                }
                (frame, outcome)
            })
            .await?;
            frame = returned;
            match outcome? {
                AppendOutcome::Written(seq) => {
                    if self.shared.fsync_interval.is_zero() {
                        self.sync().await?;
                    }
                    return Ok(Appended::Written { seq });
                }
                AppendOutcome::Full => match self.shared.when_full {
                    WhenFull::DropNewest => {
                        self.shared.segs.count_dropped();
                        return Ok(Appended::Dropped);
                    }
                    WhenFull::Block => {
                        if space.changed().await.is_err() {
                            return Err(BufferError::Stopped);
                        }
                    }
                },
            }
        }
    }

    /// Appends `payloads` in order in one blocking call and then, if `sync`
    /// (or with `fsync_interval: 0`), fsyncs them in the same call: a group
    /// commit, one trip to a blocking thread and one fsync for every record
    /// of the group. The acknowledgement is not persisted by that fsync
    /// (the background pass does it), so that the writer's clients do not
    /// wait for the ack file's fsyncs too.
    ///
    /// Stops at the first payload that does not fit now, is too large, or
    /// whose write fails: that one and the rest are not written, and are
    /// left to [`DiskBuffer::append`], which waits for space or reports the
    /// error.
    pub async fn append_group(
        &self,
        payloads: Vec<Vec<u8>>,
        sync: bool,
    ) -> Result<GroupAppended, BufferError> {
        let sync = sync || self.shared.fsync_interval.is_zero();
        let shared = self.shared.clone();
        blocking(move || {
            let max = shared.segs.max_frame();
            let mut written = Vec::with_capacity(payloads.len());
            for payload in &payloads {
                if frame_len(payload.len()) > max {
                    break;
                }
                match shared.segs.append_frame(&mut PreparedFrame::new(payload)) {
                    Ok(AppendOutcome::Written(seq)) => written.push(seq),
                    Ok(AppendOutcome::Full) | Err(_) => break,
                }
            }
            let Some(&last) = written.last() else {
                return GroupAppended {
                    written,
                    durable: false,
                };
            };
            // The reader may read the records while they are fsynced.
            shared.appended_tx.send_replace(last);
            let durable = sync && shared.segs.sync_records().is_ok();
            if durable {
                publish_durable(&shared);
            } else {
                // Not durable yet: the background pass (or its retry) is due.
                shared.dirty.notify_one();
            }
            GroupAppended { written, durable }
        })
        .await
    }

    /// The highest durable (fsynced) sequence number, updated after each
    /// fsync pass: release a source position once its record is at or below
    /// it.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.shared.durable_tx.subscribe()
    }

    /// Fsyncs now what is written and persists the acknowledgement (for
    /// shutdown); returns once done.
    pub async fn sync(&self) -> Result<(), BufferError> {
        let (tx, rx) = oneshot::channel();
        self.sync_tx
            .send(tx)
            .await
            .map_err(|_| BufferError::Stopped)?;
        rx.await.map_err(|_| BufferError::Stopped)?
    }

    /// Counts for metrics.
    pub fn stats(&self) -> BufferStats {
        self.shared.segs.stats()
    }

    /// Whether the last write failed (e.g. disk full); for readiness.
    pub fn write_failed(&self) -> bool {
        self.shared.segs.last_write_failed()
    }
}

impl BufferReader {
    /// The next record after the last one handed out, waiting for an append
    /// when caught up. Cancel-safe: a record read by a dropped call is handed
    /// out by the next one.
    pub async fn next(&self) -> Result<Record, BufferError> {
        loop {
            // Subscribed before reading, so an append in between is not missed.
            let mut appended = self.shared.appended_tx.subscribe();
            if let Some(record) = self.try_next().await? {
                return Ok(record);
            }
            if appended.changed().await.is_err() {
                return Err(BufferError::Stopped);
            }
        }
    }

    /// The next record if one is written, without waiting for appends.
    /// Cancel-safe like [`BufferReader::next`].
    pub async fn try_next(&self) -> Result<Option<Record>, BufferError> {
        loop {
            // What this process appended a moment ago is still in the page
            // cache: reading it is a copy of a few microseconds, cheaper
            // than the trip to a blocking thread and back.
            let recent = {
                let mut cursor = self.cursor.try_lock().ok();
                match cursor.as_mut() {
                    Some(c) if c.reads_recent(&self.shared.segs, RECENT_READ_BYTES) => {
                        let ready = c.fill(&self.shared.segs);
                        self.shared.publish_space();
                        Some(ready)
                    }
                    _ => None,
                }
                // The lock goes here: the blocking read below takes it.
            };
            let ready = match recent {
                Some(ready) => ready?,
                None => {
                    let cursor = self.cursor.clone();
                    let shared = self.shared.clone();
                    blocking(move || {
                        let ready = cursor.blocking_lock().fill(&shared.segs);
                        // Stepping over acknowledged or corrupt records moves
                        // the acknowledged position too.
                        shared.publish_space();
                        ready
                    })
                    .await??
                }
            };
            if !ready {
                return Ok(None);
            }
            // Another caller may have taken it; then read on.
            if let Some(record) = self.cursor.lock().await.take(&self.shared.segs) {
                return Ok(Some(record));
            }
        }
    }

    /// Marks every record handed out up to `seq` as delivered. Segments wholly
    /// acknowledged are removed, and the acknowledgement is persisted, by the
    /// next fsync pass; records after the persisted acknowledgement are
    /// delivered again after a restart. Acks beyond the last record handed
    /// out stop there.
    pub fn ack(&self, seq: u64) {
        if self.shared.segs.ack(seq) {
            self.shared.dirty.notify_one();
            self.shared.publish_space();
        }
    }

    /// Counts for metrics (the same as [`DiskBuffer::stats`]).
    pub fn stats(&self) -> BufferStats {
        self.shared.segs.stats()
    }
}

/// The background task: an fsync pass at most every `fsync_interval` while
/// something is dirty, and one on each request. Ends when every handle is
/// dropped.
async fn run_syncer(shared: Arc<Shared>, mut requests: mpsc::Receiver<SyncRequest>) {
    let interval = shared.fsync_interval;
    let mut deadline: Option<Instant> = None;
    let mut last_pass: Option<Instant> = None;
    let mut failures: u64 = 0;
    loop {
        tokio::select! {
            biased;
            request = requests.recv() => {
                let Some(first) = request else {
                    return;
                };
                // Everyone who asked by now shares this pass.
                let mut waiters = vec![first];
                while let Ok(more) = requests.try_recv() {
                    waiters.push(more);
                }
                let result = pass(&shared).await;
                last_pass = Some(Instant::now());
                // The pass covered whatever a pending deadline was for (writes
                // and acks made since notify `dirty` again, and re-arm it);
                // keeping it would run a second pass at once.
                if result.is_ok() {
                    deadline = None;
                }
                for waiter in waiters {
                    let _ = waiter.send(result.as_ref().map(|_| ()).map_err(BufferError::duplicate));
                }
            }
            () = shared.dirty.notified(), if deadline.is_none() => {
                let now = Instant::now();
                let due = last_pass.map_or(now, |t| t + interval);
                deadline = Some(due.max(now));
            }
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                deadline = None;
                let result = pass(&shared).await;
                let now = Instant::now();
                last_pass = Some(now);
                if let Err(e) = result {
                    failures += 1;
                    if worth_logging(failures) {
                        tracing::warn!(error = %e, failures, "buffer: background fsync failed; retrying");
                    }
                    deadline = Some(now + interval.max(RETRY_AFTER_FAILURE));
                }
            }
        }
    }
}

/// One fsync pass on a blocking thread, then publishes the durable sequence
/// number.
async fn pass(shared: &Arc<Shared>) -> Result<(), BufferError> {
    let s = shared.clone();
    let result = blocking(move || s.segs.sync()).await.and_then(|r| r);
    publish_durable(shared);
    result
}

/// Publishes the durable sequence number if it moved.
fn publish_durable(shared: &Shared) {
    let durable = shared.segs.durable();
    shared.durable_tx.send_if_modified(|v| {
        let moved = durable > *v;
        *v = (*v).max(durable);
        moved
    });
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use futures::FutureExt;
    use tokio::time::timeout;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn opts(dir: &Path) -> BufferOptions {
        BufferOptions {
            segment_bytes: 4096,
            ..BufferOptions::new(dir)
        }
    }

    async fn written(
        buffer: &DiskBuffer,
        payload: &[u8],
    ) -> Result<u64, Box<dyn std::error::Error>> {
        match buffer.append(payload).await? {
            Appended::Written { seq } => Ok(seq),
            Appended::Dropped => Err("unexpectedly dropped".into()),
        }
    }

    /// Waits for the next record, failing instead of hanging.
    async fn next(reader: &BufferReader) -> Result<Record, Box<dyn std::error::Error>> {
        Ok(timeout(Duration::from_secs(60), reader.next()).await??)
    }

    #[tokio::test]
    async fn records_round_trip_through_a_concurrent_reader() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (buffer, reader, _) = DiskBuffer::open(opts(dir.path())).await?;
        let consumer = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 500 {
                let r = reader.next().await?;
                reader.ack(r.seq);
                got.push(r);
            }
            Ok::<_, BufferError>((reader, got))
        });
        let mut sent = Vec::new();
        for i in 0..500u64 {
            let payload = vec![(i % 251) as u8; (i as usize * 13) % 700];
            let seq = written(&buffer, &payload).await?;
            sent.push(Record { seq, payload });
        }
        let (reader, got) = timeout(Duration::from_secs(60), consumer).await???;
        assert_eq!(got, sent);
        buffer.sync().await?;
        let stats = reader.stats();
        assert_eq!((stats.unacked_records, stats.unacked_bytes), (0, 0));
        assert_eq!(stats.durable_seq, 500);
        assert_eq!(stats.segments, 1);
        Ok(())
    }

    #[tokio::test]
    async fn restart_resumes_after_the_acknowledged_record() -> TestResult {
        let dir = tempfile::tempdir()?;
        {
            let (buffer, reader, _) = DiskBuffer::open(opts(dir.path())).await?;
            for i in 0..5u8 {
                written(&buffer, &[i; 10]).await?;
            }
            for _ in 0..5 {
                next(&reader).await?;
            }
            reader.ack(3);
            buffer.sync().await?;
        }
        let (buffer, reader, report) = DiskBuffer::open(opts(dir.path())).await?;
        assert_eq!(report.resume_after, 3);
        assert_eq!(
            next(&reader).await?,
            Record {
                seq: 4,
                payload: vec![3; 10]
            }
        );
        assert_eq!(written(&buffer, b"six").await?, 6);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_buffer_blocks_append_until_an_ack_frees_space() -> TestResult {
        let dir = tempfile::tempdir()?;
        let options = BufferOptions {
            max_size: 3 * frame_len(100),
            ..opts(dir.path())
        };
        let (buffer, reader, _) = DiskBuffer::open(options).await?;
        for _ in 0..3 {
            written(&buffer, &[1; 100]).await?;
        }
        let b = buffer.clone();
        let mut blocked = tokio::spawn(async move { b.append(&[2; 100]).await });
        // An hour of (paused) time later it is still waiting.
        assert!(
            timeout(Duration::from_secs(3600), &mut blocked)
                .await
                .is_err()
        );
        let first = next(&reader).await?;
        assert!(
            timeout(Duration::from_secs(3600), &mut blocked)
                .await
                .is_err()
        );
        reader.ack(first.seq);
        let appended = timeout(Duration::from_secs(1), blocked).await???;
        assert_eq!(appended, Appended::Written { seq: 4 });
        assert_eq!(buffer.stats().dropped_full, 0);
        Ok(())
    }

    #[tokio::test]
    async fn drop_newest_drops_and_counts_when_full() -> TestResult {
        let dir = tempfile::tempdir()?;
        let options = BufferOptions {
            max_size: 3 * frame_len(100),
            when_full: WhenFull::DropNewest,
            ..opts(dir.path())
        };
        let (buffer, reader, _) = DiskBuffer::open(options).await?;
        let mut outcomes = Vec::new();
        for _ in 0..5 {
            outcomes.push(buffer.append(&[1; 100]).await?);
        }
        assert_eq!(
            outcomes,
            [
                Appended::Written { seq: 1 },
                Appended::Written { seq: 2 },
                Appended::Written { seq: 3 },
                Appended::Dropped,
                Appended::Dropped
            ]
        );
        assert_eq!(buffer.stats().dropped_full, 2);
        let first = next(&reader).await?;
        reader.ack(first.seq);
        assert_eq!(
            buffer.append(&[1; 100]).await?,
            Appended::Written { seq: 4 }
        );
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_payload_larger_than_max_size_is_refused_not_blocked() -> TestResult {
        let dir = tempfile::tempdir()?;
        let options = BufferOptions {
            max_size: 1000,
            ..opts(dir.path())
        };
        let (buffer, _reader, _) = DiskBuffer::open(options).await?;
        // The largest that fits: 984 bytes and a 16-byte header.
        assert_eq!(written(&buffer, &[0; 984]).await?, 1);
        match timeout(Duration::from_secs(1), buffer.append(&[0; 985])).await? {
            Err(
                e @ BufferError::TooLarge {
                    size: 1001,
                    max: 1000,
                },
            ) => {
                assert!(e.to_string().contains("1001 bytes"), "{e}");
            }
            other => return Err(format!("expected too large, found {other:?}").into()),
        }
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn durable_advances_after_each_fsync_pass_at_most_once_per_interval() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (buffer, _reader, _) = DiskBuffer::open(opts(dir.path())).await?;
        let mut durable = buffer.durable();
        assert_eq!(*durable.borrow_and_update(), 0);
        // After a quiet period the first write is fsynced at once.
        let first = written(&buffer, b"first").await?;
        let start = Instant::now();
        timeout(Duration::from_secs(5), durable.changed()).await??;
        assert_eq!(*durable.borrow_and_update(), first);
        assert!(
            start.elapsed() < Duration::from_millis(10),
            "{:?}",
            start.elapsed()
        );
        // The next one waits out the interval since that pass.
        let second = written(&buffer, b"second").await?;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(*durable.borrow(), first);
        assert_eq!(buffer.stats().durable_seq, first);
        timeout(Duration::from_secs(5), durable.changed()).await??;
        assert_eq!(*durable.borrow_and_update(), second);
        assert!(
            start.elapsed() >= Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
        // sync() does not wait for the interval.
        let third = written(&buffer, b"third").await?;
        buffer.sync().await?;
        assert_eq!(*durable.borrow_and_update(), third);
        assert!(
            start.elapsed() < Duration::from_millis(510),
            "{:?}",
            start.elapsed()
        );
        Ok(())
    }

    #[tokio::test]
    async fn with_a_zero_interval_every_append_returns_durable() -> TestResult {
        let dir = tempfile::tempdir()?;
        let options = BufferOptions {
            fsync_interval: Duration::ZERO,
            ..opts(dir.path())
        };
        let (buffer, _reader, _) = DiskBuffer::open(options).await?;
        let durable = buffer.durable();
        for _ in 0..20 {
            let seq = written(&buffer, &[9; 300]).await?;
            assert!(*durable.borrow() >= seq);
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_group_is_appended_and_made_durable_by_one_call() -> TestResult {
        let dir = tempfile::tempdir()?;
        let options = BufferOptions {
            // Only the group's own fsync can make anything durable.
            fsync_interval: Duration::from_secs(3600),
            ..opts(dir.path())
        };
        let (buffer, reader, _) = DiskBuffer::open(options).await?;
        // The first write after a quiet period gets a background pass at
        // once; let it happen so that it cannot be mistaken for the group's.
        written(&buffer, b"zero").await?;
        buffer.sync().await?;
        next(&reader).await?;
        reader.ack(1);
        let durable = buffer.durable();
        let payloads = vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()];
        let g = buffer.append_group(payloads, true).await?;
        assert_eq!(g.written, [2, 3, 4]);
        assert!(g.durable);
        assert_eq!(*durable.borrow(), 4);
        assert_eq!(buffer.stats().durable_seq, 4);
        // The acknowledgement waits for a full pass.
        assert_eq!(
            super::super::ackfile::load(dir.path()),
            super::super::AckFileState::Missing
        );
        let got = [
            next(&reader).await?,
            next(&reader).await?,
            next(&reader).await?,
        ];
        assert_eq!(
            got.map(|r| r.payload),
            [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        // Without `sync` the records wait for the background pass.
        let g = buffer.append_group(vec![b"four".to_vec()], false).await?;
        assert_eq!((g.written, g.durable), (vec![5], false));
        assert_eq!(buffer.stats().durable_seq, 4);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_requested_pass_takes_the_place_of_a_pending_background_one() -> TestResult {
        let dir = tempfile::tempdir()?;
        let interval = Duration::from_secs(3600);
        let options = BufferOptions {
            fsync_interval: interval,
            ..opts(dir.path())
        };
        let (buffer, reader, _) = DiskBuffer::open(options).await?;
        written(&buffer, b"zero").await?;
        buffer.sync().await?;
        let t0 = Instant::now();
        // A write arms the background pass for an interval after that one ...
        tokio::time::sleep(Duration::from_secs(1)).await;
        written(&buffer, b"one").await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        // ... and a requested pass covers it first.
        buffer.sync().await?;
        let synced = Instant::now();
        next(&reader).await?;
        next(&reader).await?;
        reader.ack(2);
        // The acknowledgement waits a whole interval after the requested
        // pass: the background pass it replaced does not run at its old time.
        tokio::time::sleep_until(t0 + interval + Duration::from_secs(1)).await;
        assert_eq!(
            super::super::ackfile::load(dir.path()),
            super::super::AckFileState::Missing
        );
        // Then it is persisted: dropping the old deadline left nothing unsynced.
        tokio::time::sleep_until(synced + interval + Duration::from_secs(1)).await;
        assert_eq!(
            super::super::ackfile::load(dir.path()),
            super::super::AckFileState::Loaded(2)
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_group_stops_at_the_first_payload_that_does_not_fit() -> TestResult {
        let dir = tempfile::tempdir()?;
        let options = BufferOptions {
            max_size: 2 * frame_len(100),
            ..opts(dir.path())
        };
        let (buffer, _reader, _) = DiskBuffer::open(options).await?;
        let g = buffer
            .append_group(vec![vec![1; 100], vec![2; 100], vec![3; 10]], true)
            .await?;
        // The third is not written even though a later ack may make room:
        // the caller appends it (and waits) the usual way.
        assert_eq!((g.written, g.durable), (vec![1, 2], true));
        assert_eq!(buffer.stats().last_seq, 2);
        let g = buffer.append_group(vec![vec![0; 500]], true).await?;
        assert_eq!((g.written, g.durable), (vec![], false));
        Ok(())
    }

    #[tokio::test]
    async fn sync_persists_the_acknowledgement_now() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (buffer, reader, _) = DiskBuffer::open(opts(dir.path())).await?;
        for _ in 0..3 {
            written(&buffer, b"x").await?;
        }
        next(&reader).await?;
        next(&reader).await?;
        reader.ack(2);
        buffer.sync().await?;
        assert_eq!(
            super::super::ackfile::load(dir.path()),
            super::super::AckFileState::Loaded(2)
        );
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_reader_wakes_on_append() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (buffer, reader, _) = DiskBuffer::open(opts(dir.path())).await?;
        let reader = Arc::new(reader);
        let r = reader.clone();
        let mut waiting = tokio::spawn(async move { r.next().await });
        assert!(
            timeout(Duration::from_secs(3600), &mut waiting)
                .await
                .is_err()
        );
        assert!(reader.try_next().await?.is_none());
        let seq = written(&buffer, b"wake up").await?;
        let record = timeout(Duration::from_secs(1), waiting).await???;
        assert_eq!(
            record,
            Record {
                seq,
                payload: b"wake up".to_vec()
            }
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_dropped_next_loses_no_record() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (buffer, reader, _) = DiskBuffer::open(opts(dir.path())).await?;
        for i in 1..=20u8 {
            written(&buffer, &[i; 50]).await?;
        }
        let mut seen = Vec::new();
        loop {
            // Start a read and drop it after one poll (it usually is still
            // reading then), then read for real.
            if let Some(r) = reader.next().now_or_never() {
                seen.push(r?.seq);
                continue;
            }
            match timeout(Duration::from_secs(60), reader.try_next()).await?? {
                Some(r) => seen.push(r.seq),
                None => break,
            }
        }
        assert_eq!(seen, (1..=20).collect::<Vec<u64>>());
        Ok(())
    }

    /// A tmpfs mounted for one test; unmounted when dropped.
    struct Tmpfs {
        mnt: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Tmpfs {
        fn mount(size: &str) -> Result<Tmpfs, Box<dyn std::error::Error>> {
            let dir = tempfile::tempdir()?;
            let mnt = dir.path().join("mnt");
            std::fs::create_dir(&mnt)?;
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(&mnt)
                .output()
                .map_err(|e| format!("cannot run mount (this test needs it, as root): {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "mount -t tmpfs failed (this test needs root and mount rights): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )
                .into());
            }
            Ok(Tmpfs { mnt, _dir: dir })
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }

    /// Sum of the lengths of the segment files in `dir`.
    fn segment_bytes_on_disk(dir: &Path) -> io::Result<u64> {
        let mut total = 0;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.path().extension().is_some_and(|x| x == "seg") {
                total += entry.metadata()?.len();
            }
        }
        Ok(total)
    }

    #[tokio::test]
    async fn a_full_disk_fails_the_append_cleanly_and_recovers_when_space_returns() -> TestResult {
        let fs = Tmpfs::mount("256k")?;
        let dir = fs.mnt.join("buffer");
        let options = BufferOptions {
            segment_bytes: 64 * 1024,
            max_size: 64 * 1024 * 1024,
            ..BufferOptions::new(&dir)
        };
        let (buffer, reader, _) = DiskBuffer::open(options.clone()).await?;
        let payload = vec![0xab; 10_000];
        let mut last = 0;
        let error = loop {
            match buffer.append(&payload).await {
                Ok(Appended::Written { seq }) => last = seq,
                Ok(Appended::Dropped) => return Err("unexpectedly dropped".into()),
                Err(e) => break e,
            }
            if last > 100 {
                return Err("a 256 KiB tmpfs never filled up".into());
            }
        };
        match &error {
            BufferError::Write { path, source } => {
                assert_eq!(source.kind(), io::ErrorKind::StorageFull, "{error}");
                assert!(path.starts_with(&dir), "{error}");
                assert!(error.to_string().contains("write failed"), "{error}");
            }
            other => return Err(format!("expected a write error, found {other}").into()),
        }
        assert!(last > 10);
        assert!(buffer.write_failed());
        let stats = buffer.stats();
        assert_eq!((stats.write_errors, stats.last_seq), (1, last));
        // The partial frame was cut: the files hold whole records only.
        assert_eq!(segment_bytes_on_disk(&dir)?, stats.disk_bytes);
        // Still full: failing again does not corrupt anything either.
        assert!(buffer.append(&payload).await.is_err());

        // Deliver everything; removing the acknowledged segments frees space.
        for seq in 1..=last {
            assert_eq!(next(&reader).await?.seq, seq);
        }
        reader.ack(last);
        buffer.sync().await?;
        assert_eq!(written(&buffer, &payload).await?, last + 1);
        assert!(!buffer.write_failed());
        buffer.sync().await?;
        drop((buffer, reader));

        let (_buffer, reader, report) = DiskBuffer::open(options).await?;
        assert_eq!(report.truncated_bytes, 0);
        assert_eq!(report.resume_after, last);
        assert_eq!(
            next(&reader).await?,
            Record {
                seq: last + 1,
                payload
            }
        );
        Ok(())
    }

    /// Appends 1 GiB in 256 KiB payloads with the default fsync policy, then
    /// reads it back. Run with
    /// `cargo test --release -p mecha-agent buffer_throughput -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "writes 1 GiB; a measurement, not a check"]
    async fn buffer_throughput() -> TestResult {
        const TOTAL: u64 = 1024 * 1024 * 1024;
        const PAYLOAD: usize = 256 * 1024;
        let dir = tempfile::tempdir()?;
        let options = BufferOptions {
            // Room for the whole run without a reader.
            max_size: 2 * TOTAL,
            ..BufferOptions::new(dir.path())
        };
        let (buffer, reader, _) = DiskBuffer::open(options).await?;
        let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i * 7 % 251) as u8).collect();
        let n = TOTAL / PAYLOAD as u64;

        let start = std::time::Instant::now();
        for _ in 0..n {
            written(&buffer, &payload).await?;
        }
        let appended = start.elapsed();
        buffer.sync().await?;
        let durable = start.elapsed();

        let start = std::time::Instant::now();
        let mut bytes = 0u64;
        for seq in 1..=n {
            let r = reader.next().await?;
            assert_eq!(r.seq, seq);
            bytes += r.payload.len() as u64;
        }
        let read = start.elapsed();
        reader.ack(n);
        buffer.sync().await?;
        let mb = bytes as f64 / 1e6;
        println!(
            "buffer: {n} x {PAYLOAD} B: append {:.0} MB/s ({:.0} MB/s including the final fsync), read {:.0} MB/s",
            mb / appended.as_secs_f64(),
            mb / durable.as_secs_f64(),
            mb / read.as_secs_f64()
        );
        Ok(())
    }
}
