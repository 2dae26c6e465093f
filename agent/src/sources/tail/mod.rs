//! Tail source: follows container log files (and any other files matched by
//! globs), decodes their lines into [`LogRecord`](mecha_parsers::LogRecord)s and
//! sends them downstream in byte-bounded chunks.
//!
//! The pieces: `discover` lists files and watches directories, `reader` splits
//! a file into lines and fingerprints it, `decode` turns lines into records,
//! `tailer` owns the open files (rotation, truncation, deletion), `chunk` groups
//! records and wires their acknowledgement to `checkpoint`. This module is the
//! async loop that drives them.
//!
//! What it must not do: advance a checkpoint past data that is not acknowledged
//! downstream, read more than it can hand on (when the pipeline is full the
//! source stops reading: files are the buffer), or block the reactor — every
//! file operation runs in `spawn_blocking`, one bounded round at a time.

mod checkpoint;
mod chunk;
mod decode;
mod discover;
mod kube;
mod reader;
mod tailer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mecha_parsers::body::BodyFormat;
use mecha_parsers::container::ContainerFormat;
use mecha_parsers::multiline::MultilineRule;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Shutdown;
use crate::metrics::AgentMetrics;
use crate::pipeline::{Chunk, Output};
use checkpoint::AckBook;
use chunk::ChunkBuilder;
use decode::DecodeCtx;
use decode::Emitted;
use discover::{DirWatch, Globs, Wake};
use tailer::{Tailer, TailerConfig};

/// The `component` label of the tail source's metrics.
pub(crate) const COMPONENT: &str = "tail";

/// Checkpoints are written at most this often (when they changed).
const PERSIST_INTERVAL: Duration = Duration::from_secs(1);
/// An idle source checks its files for growth at least this often, so it
/// works without filesystem notifications.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Filesystem events trigger a rescan at most this often.
const MIN_RESCAN_GAP: Duration = Duration::from_millis(100);
/// How long shutdown waits for chunks in flight to be acknowledged before
/// writing the last checkpoint.
const FINAL_ACK_WAIT: Duration = Duration::from_secs(2);
/// The shortest sleep of an idle loop.
const MIN_IDLE_WAIT: Duration = Duration::from_millis(5);
/// How long the last chunk may wait for room in the pipeline at shutdown.
const FINAL_SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Where to start reading a file that has no checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadFrom {
    /// From its first byte.
    #[default]
    Beginning,
    /// From its end: only lines written from now on.
    End,
}

impl FromStr for ReadFrom {
    type Err = TailError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "beginning" => Ok(ReadFrom::Beginning),
            "end" => Ok(ReadFrom::End),
            other => Err(TailError::ReadFrom {
                found: other.to_owned(),
            }),
        }
    }
}

/// Settings of the tail source.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Globs of the files to tail, e.g. `/var/log/containers/*.log`.
    pub include: Vec<String>,
    /// Globs of files to leave alone, matched against the full path and the
    /// file name (callers pass the defaults such as `*.gz` themselves).
    pub exclude: Vec<String>,
    /// Where files present at the very first start (no checkpoint file yet)
    /// are read from. Files discovered later are always read from the start.
    pub read_from: ReadFrom,
    /// The container envelope; `None` detects it per file from its first line.
    pub container_format: Option<ContainerFormat>,
    /// How the message inside the envelope is parsed.
    pub body_format: BodyFormat,
    /// When a body parses into fields, keep the original text under the
    /// attribute `log.original`.
    pub keep_original_body: bool,
    /// Join lines into multiline records (stack traces); `None` is off.
    pub multiline: Option<MultilineRule>,
    /// A pending multiline record is emitted after this much idle time.
    pub multiline_flush: Duration,
    /// Most lines in one multiline record; the rest is dropped and counted.
    pub multiline_max_lines: usize,
    /// Lines longer than this are cut (flagged `log.truncated`, counted).
    pub max_line_bytes: usize,
    /// Partial container lines are merged up to this many bytes.
    pub max_merged_line_bytes: usize,
    /// How often the globs are listed again (filesystem events also trigger it).
    pub rescan_interval: Duration,
    /// The checkpoint file (written atomically).
    pub checkpoint_path: PathBuf,
    /// Most bytes of records in one chunk sent downstream.
    pub chunk_max_bytes: usize,
    /// A partly filled chunk is sent after this long.
    pub chunk_max_delay: Duration,
    /// Most files open at once; further files are counted and skipped.
    pub max_open_files: usize,
    /// Sets the resource attribute `k8s.node.name` when set.
    pub node_name: Option<String>,
    /// Pod metadata for files with a kubelet path (`agent.kubernetes`).
    pub kube: Option<Arc<crate::enrich::KubeMeta>>,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            include: vec!["/var/log/containers/*.log".to_owned()],
            exclude: Vec::new(),
            read_from: ReadFrom::Beginning,
            container_format: None,
            body_format: BodyFormat::Auto,
            keep_original_body: false,
            multiline: None,
            multiline_flush: Duration::from_secs(1),
            multiline_max_lines: 500,
            max_line_bytes: 256 * 1024,
            max_merged_line_bytes: 1024 * 1024,
            rescan_interval: Duration::from_secs(1),
            checkpoint_path: PathBuf::from("checkpoints.json"),
            chunk_max_bytes: 1024 * 1024,
            chunk_max_delay: Duration::from_millis(200),
            max_open_files: 1024,
            node_name: None,
            kube: None,
        }
    }
}

/// Why the tail source could not start.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// No include glob was given.
    #[error("tail.include: expected at least one glob, found none")]
    NoInclude,
    /// A glob does not compile.
    #[error("tail.{key}: expected a glob, found {pattern:?}: {reason}")]
    Glob {
        /// `include` or `exclude`.
        key: &'static str,
        /// The pattern.
        pattern: String,
        /// What the glob compiler said.
        reason: String,
    },
    /// The checkpoint directory cannot be created or written.
    #[error("checkpoint directory {}: {source}", path.display())]
    CheckpointDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The checkpoint file exists but cannot be read.
    #[error("checkpoint file {}: {source}", path.display())]
    CheckpointRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `read_from` is not a known value.
    #[error("tail.read_from: expected \"beginning\" or \"end\", found {found:?}")]
    ReadFrom {
        /// The value given.
        found: String,
    },
    /// A blocking start-up step panicked or was cancelled.
    #[error("tail source start-up task failed: {0}")]
    Task(String),
}

/// The tail source.
pub struct TailSource;

/// A running tail source.
pub struct TailHandle {
    task: JoinHandle<()>,
    paths: Arc<Mutex<Vec<PathBuf>>>,
}

impl TailHandle {
    /// The files currently open (including rotated files still being drained).
    pub fn watched_files(&self) -> Vec<PathBuf> {
        self.paths
            .lock()
            .map(|p| p.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Waits for the source to stop after shutdown was signalled; checkpoints
    /// are persisted last.
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!("tail source task failed: {e}");
        }
    }
}

fn wall_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn task_error(e: tokio::task::JoinError) -> TailError {
    TailError::Task(e.to_string())
}

/// Loads the checkpoints; `true` when there was no checkpoint file (first start).
fn load_checkpoints(
    path: &std::path::Path,
    metrics: &AgentMetrics,
) -> Result<(AckBook, bool), TailError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| TailError::CheckpointDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    match checkpoint::load(path) {
        Ok(None) => Ok((AckBook::default(), true)),
        Ok(Some(entries)) => Ok((AckBook::with_entries(entries), false)),
        Err(checkpoint::LoadError::Io { path, source }) => {
            Err(TailError::CheckpointRead { path, source })
        }
        Err(e @ checkpoint::LoadError::Corrupt { .. }) => {
            // Refusing to start would turn one bad write into a crash loop.
            // Reading every file again from its start is safe: the aggregator
            // drops what it already has by position.
            metrics
                .errors
                .with_label_values(&[COMPONENT, "checkpoint"])
                .inc();
            tracing::warn!("tail: {e}; reading every file from its start");
            Ok((AckBook::default(), false))
        }
    }
}

fn lock_book(book: &Mutex<AckBook>) -> std::sync::MutexGuard<'_, AckBook> {
    book.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes the checkpoints if they changed (off the reactor).
async fn persist(book: &Arc<Mutex<AckBook>>, path: &std::path::Path, metrics: &AgentMetrics) {
    let dirty = {
        let mut b = lock_book(book);
        b.prune(checkpoint::unix_now_s());
        b.take_dirty()
    };
    let Some(entries) = dirty else { return };
    let path = path.to_owned();
    let result = tokio::task::spawn_blocking(move || checkpoint::store(&path, entries)).await;
    let failed = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    if let Some(e) = failed {
        metrics
            .errors
            .with_label_values(&[COMPONENT, "checkpoint"])
            .inc();
        tracing::warn!("tail: cannot write checkpoints: {e}");
        // Try again next time.
        lock_book(book).mark_dirty();
    }
}

impl TailSource {
    /// Starts the source; returns once the first scan is done (so the caller
    /// can report how many files are watched).
    pub async fn start(
        opts: TailOptions,
        out: Output,
        metrics: Arc<AgentMetrics>,
        shutdown: Shutdown,
    ) -> Result<TailHandle, TailError> {
        let globs = Globs::new(&opts.include, &opts.exclude)?;
        let cp_path = opts.checkpoint_path.clone();
        let m = metrics.clone();
        let (book, first_start) =
            tokio::task::spawn_blocking(move || load_checkpoints(&cp_path, &m))
                .await
                .map_err(task_error)??;
        let book = Arc::new(Mutex::new(book));
        let ctx = Arc::new(DecodeCtx {
            container_format: opts.container_format,
            body_format: opts.body_format,
            keep_original_body: opts.keep_original_body,
            multiline: opts.multiline.clone(),
            multiline_flush: opts.multiline_flush,
            multiline_max_lines: opts.multiline_max_lines,
            max_merged_bytes: opts.max_merged_line_bytes,
            node_name: opts.node_name.clone(),
            kube: opts.kube.clone(),
            metrics: metrics.clone(),
            wall_ns,
        });
        let cfg = TailerConfig {
            start_at_end: first_start && opts.read_from == ReadFrom::End,
            max_open_files: opts.max_open_files.max(1),
            max_line_bytes: opts.max_line_bytes.max(1),
        };
        let wake = Arc::new(Wake::default());
        let mut tailer = Tailer::new(ctx, cfg, globs, book.clone());
        let now = Instant::now().into_std();
        let w = wake.clone();
        let tailer = tokio::task::spawn_blocking(move || {
            let watch = DirWatch::new(&tailer.roots(), w);
            tailer.set_watch(watch);
            tailer.scan(now);
            tailer
        })
        .await
        .map_err(task_error)?;
        // Write the checkpoints now: this proves the directory is writable and
        // records where the files of the first scan start.
        {
            let entries = lock_book(&book).snapshot();
            let path = opts.checkpoint_path.clone();
            tokio::task::spawn_blocking(move || checkpoint::store(&path, entries))
                .await
                .map_err(task_error)?
                .map_err(|source| TailError::CheckpointDir {
                    path: opts.checkpoint_path.clone(),
                    source,
                })?;
        }
        let paths = Arc::new(Mutex::new(tailer.paths()));
        let builder = ChunkBuilder::new(
            opts.chunk_max_bytes.max(1),
            opts.chunk_max_delay,
            book.clone(),
            out.codec(),
        );
        let driver = Driver {
            unacknowledged: builder.counter(),
            out: Some(out),
            metrics,
            shutdown,
            book,
            wake,
            paths: paths.clone(),
            opts,
        };
        let work = Box::new(Work {
            tailer,
            builder,
            emitted: Emitted::default(),
        });
        let task = tokio::spawn(driver.run(work));
        Ok(TailHandle { task, paths })
    }
}

/// The state that moves into `spawn_blocking` for each round: the files and
/// the chunk being filled. Building chunks there keeps the per-record work
/// (sizes, acknowledgement maps) off the reactor.
struct Work {
    tailer: Tailer,
    builder: ChunkBuilder,
    /// What the decoders emit in a round, reused.
    emitted: Emitted,
}

/// What one round produced.
struct Round {
    /// Sealed chunks, in order.
    chunks: Vec<Chunk>,
    /// Some file had new bytes.
    progressed: bool,
    /// Checkpoint lag in bytes.
    lag: u64,
    /// The open files, if they changed.
    paths: Option<Vec<PathBuf>>,
    /// When the next time-based work is due (idle flush, file close, chunk delay).
    deadline: Option<Instant>,
}

impl Work {
    /// One bounded round of blocking work: optional scan, reading, decoding,
    /// chunking. A chunk whose delay has passed is sealed too.
    fn round(&mut self, now: Instant, scan: bool, budget: usize) -> Round {
        let std_now = now.into_std();
        if scan {
            self.tailer.scan(std_now);
        }
        let mut items = std::mem::take(&mut self.emitted);
        let progressed = self.tailer.round(std_now, budget, &mut items);
        let mut chunks = self.chunk(&mut items, now);
        self.emitted = items;
        if self.builder.deadline().is_some_and(|d| now >= d) {
            chunks.extend(self.builder.seal());
        }
        let deadline = self
            .tailer
            .deadline()
            .map(Instant::from_std)
            .into_iter()
            .chain(self.builder.deadline())
            .min();
        Round {
            chunks,
            progressed,
            lag: self.tailer.touch_and_lag(),
            paths: self.tailer.take_paths_if_changed(),
            deadline,
        }
    }

    /// Emits everything pending (shutdown) as chunks.
    fn finish(&mut self, now: Instant) -> Vec<Chunk> {
        let mut items = Emitted::default();
        self.tailer.flush_all(now.into_std(), &mut items);
        let mut chunks = self.chunk(&mut items, now);
        chunks.extend(self.builder.seal());
        chunks
    }

    /// Feeds what the decoders emitted to the chunk builder, leaving
    /// `emitted` empty (its buffers kept for the next round).
    fn chunk(&mut self, emitted: &mut Emitted, now: Instant) -> Vec<Chunk> {
        let chunks = emitted
            .items
            .drain(..)
            .filter_map(|item| self.builder.push(item, &emitted.bytes, now))
            .collect();
        emitted.clear();
        chunks
    }
}

/// The async loop around the blocking rounds.
struct Driver {
    /// Chunks sealed but neither acknowledged nor dropped.
    unacknowledged: Arc<std::sync::atomic::AtomicUsize>,
    /// Dropped as soon as the last chunk is sent, so the forwarder sees the
    /// pipeline close while this source still waits for acknowledgements.
    out: Option<Output>,
    metrics: Arc<AgentMetrics>,
    shutdown: Shutdown,
    book: Arc<Mutex<AckBook>>,
    wake: Arc<Wake>,
    paths: Arc<Mutex<Vec<PathBuf>>>,
    opts: TailOptions,
}

/// What happened to a chunk handed to the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Ok,
    /// The pipeline is closed, or shutdown came while waiting for room. Nothing
    /// may be sent after this: a later chunk's acknowledgement would move the
    /// checkpoint past the dropped records.
    Stopped,
}

impl Driver {
    async fn send(&self, chunk: Chunk) -> Sent {
        let Some(out) = &self.out else {
            return Sent::Stopped;
        };
        tokio::select! {
            biased;
            r = out.send(chunk) => if r.is_ok() { Sent::Ok } else { Sent::Stopped },
            () = self.shutdown.cancelled() => Sent::Stopped,
        }
    }

    async fn run(mut self, work: Box<Work>) {
        let mut slot = Some(work);
        let start = Instant::now();
        let mut next_scan = start + self.opts.rescan_interval;
        let mut last_scan = start;
        let mut next_persist = start + PERSIST_INTERVAL;
        let budget = self.opts.chunk_max_bytes.max(64 * 1024);
        let mut stopped = false;
        'main: while !self.shutdown.is_cancelled() {
            let Some(mut work) = slot.take() else { break };
            let now = Instant::now();
            let rescan_requested = self.wake.rescan.load(Ordering::Relaxed);
            let scan = now >= next_scan || (rescan_requested && now >= last_scan + MIN_RESCAN_GAP);
            if scan {
                self.wake.rescan.store(false, Ordering::Relaxed);
                next_scan = now + self.opts.rescan_interval;
                last_scan = now;
            }
            let result = tokio::task::spawn_blocking(move || {
                let round = work.round(now, scan, budget);
                (work, round)
            })
            .await;
            let (work, round) = match result {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("tail: read round failed, stopping the source: {e}");
                    self.metrics
                        .errors
                        .with_label_values(&[COMPONENT, "panic"])
                        .inc();
                    stopped = true;
                    break;
                }
            };
            slot = Some(work);
            self.metrics
                .checkpoint_lag_bytes
                .set(i64::try_from(round.lag).unwrap_or(i64::MAX));
            if let Some(p) = round.paths {
                *self.paths.lock().unwrap_or_else(|e| e.into_inner()) = p;
            }
            for chunk in round.chunks {
                // Waits while the pipeline is full: no new round is read
                // meanwhile, so the files are the buffer.
                if self.send(chunk).await == Sent::Stopped {
                    stopped = true;
                    break 'main;
                }
            }
            if Instant::now() >= next_persist {
                persist(&self.book, &self.opts.checkpoint_path, &self.metrics).await;
                next_persist = Instant::now() + PERSIST_INTERVAL;
            }
            if round.progressed {
                // More data is probably waiting; let other tasks run first.
                tokio::task::yield_now().await;
                continue;
            }
            let mut wake_at = (now + POLL_INTERVAL).min(next_scan).min(next_persist);
            if let Some(d) = round.deadline {
                wake_at = wake_at.min(d);
            }
            // A deadline already past must not turn this loop into a spin.
            wake_at = wake_at.max(now + MIN_IDLE_WAIT);
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = self.wake.notify.notified() => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
        if let Some(work) = slot.filter(|_| !stopped) {
            self.finish(work).await;
        }
        self.out = None;
        // Give the forwarder a moment to acknowledge what it holds, so the
        // last checkpoint includes it (what is not acknowledged is re-read).
        let deadline = Instant::now() + FINAL_ACK_WAIT;
        while self.unacknowledged.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        persist(&self.book, &self.opts.checkpoint_path, &self.metrics).await;
        tracing::debug!("tail: stopped");
    }

    /// Flushes pending merges and multiline records and sends what was read,
    /// waiting at most [`FINAL_SEND_TIMEOUT`] for room in the pipeline.
    async fn finish(&mut self, mut work: Box<Work>) {
        let now = Instant::now();
        let chunks = match tokio::task::spawn_blocking(move || work.finish(now)).await {
            Ok(chunks) => chunks,
            Err(e) => {
                tracing::error!("tail: final flush failed: {e}");
                return;
            }
        };
        let deadline = now + FINAL_SEND_TIMEOUT;
        for chunk in chunks {
            let Some(out) = &self.out else { break };
            match tokio::time::timeout_at(deadline, out.send(chunk)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    tracing::debug!("tail: pipeline not accepting the last chunks at shutdown");
                    break;
                }
            }
        }
    }
}
