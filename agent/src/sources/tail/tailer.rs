//! The synchronous heart of the tail source: which files are open, where each
//! one is read from, and what rotation, truncation and deletion do to them.
//!
//! A [`Tailer`] does blocking file I/O and is driven from `spawn_blocking` by
//! the async loop in the parent module, one bounded round at a time; it never
//! sleeps, never reads a clock (the caller passes `now`) and never talks to the
//! pipeline. Identity is the content fingerprint combined with device and
//! inode: the inode tells apart two files that start with the same line (two
//! replicas printing the same banner), the content tells apart a new file that
//! reuses a deleted file's inode. A rename keeps both, so a rotated file keeps
//! its identity and its checkpoint.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::COMPONENT;
use super::checkpoint::AckBook;
use super::decode::{DecodeCtx, Decoder, Emitted};
use super::discover::{DirWatch, Globs};
use super::reader::{LineReader, fingerprint_file, last_line_boundary};
use crate::metrics::{AgentMetrics, reason};

/// A rotated or deleted file stays open this long after its last growth (or
/// after a scan found it gone, whichever is later) once read to its end, so a
/// writer that still holds it can finish.
pub(super) const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// Most bytes read from one file in one round, so a busy file cannot starve
/// the others.
const FILE_SLICE: usize = 256 * 1024;

/// Device and inode of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &fs::Metadata) -> Self {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// The stream identity of a file: its content fingerprint bound to its device
/// and inode.
fn identity(id: FileId, content: &str) -> String {
    let key = format!("{}:{}:{content}", id.dev, id.ino);
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(key.as_bytes()))
}

/// One open file.
struct Tailed {
    id: FileId,
    path: PathBuf,
    file: File,
    /// Set once the file has a fingerprint; reading starts only then.
    decoder: Option<Decoder>,
    reader: LineReader,
    size: u64,
    last_growth: Instant,
    /// When a scan found the path gone or pointing to another file.
    gone_since: Option<Instant>,
    at_eof: bool,
    /// Where `read_from: end` starts this file if it has no checkpoint: the
    /// last line boundary when it was first seen (first start only).
    start_at_end: Option<u64>,
    /// Size at the last identification attempt, to retry only on growth.
    identify_size: Option<u64>,
    /// When it was opened: a file whose pod is not in the cache yet waits
    /// from then, for at most `wait_for_metadata`.
    opened: Instant,
}

/// Settings of the tailer that are not about decoding.
pub(super) struct TailerConfig {
    /// Apply `read_from: end` to the files of the first scan.
    pub start_at_end: bool,
    /// Most files open at once.
    pub max_open_files: usize,
    /// Lines are cut at this many bytes.
    pub max_line_bytes: usize,
}

/// Every open file and the state needed to reconcile them with the disk.
pub(super) struct Tailer {
    ctx: Arc<DecodeCtx>,
    cfg: TailerConfig,
    globs: Globs,
    book: Arc<Mutex<AckBook>>,
    metrics: Arc<AgentMetrics>,
    files: Vec<Tailed>,
    /// Paths already warned about, so a persistent problem logs once.
    warned: HashSet<PathBuf>,
    scanned_once: bool,
    next: usize,
    watch: Option<DirWatch>,
    /// The set of open files changed since [`Tailer::take_paths_if_changed`].
    changed: bool,
    /// The read buffer shared by every file.
    scratch: Vec<u8>,
}

impl Tailer {
    /// A tailer with no open file yet.
    pub fn new(
        ctx: Arc<DecodeCtx>,
        cfg: TailerConfig,
        globs: Globs,
        book: Arc<Mutex<AckBook>>,
    ) -> Self {
        Tailer {
            metrics: ctx.metrics.clone(),
            ctx,
            cfg,
            globs,
            book,
            files: Vec::new(),
            warned: HashSet::new(),
            scanned_once: false,
            next: 0,
            watch: None,
            changed: true,
            scratch: Vec::new(),
        }
    }

    /// The glob roots, for watching.
    pub fn roots(&self) -> Vec<super::discover::Root> {
        self.globs.roots().to_vec()
    }

    /// Keeps the directory watcher, retrying its failed roots on each scan.
    pub fn set_watch(&mut self, watch: DirWatch) {
        self.watch = Some(watch);
    }

    /// The open paths, if they changed since the last call.
    pub fn take_paths_if_changed(&mut self) -> Option<Vec<PathBuf>> {
        std::mem::take(&mut self.changed).then(|| self.paths())
    }

    fn book(&self) -> std::sync::MutexGuard<'_, AckBook> {
        // A poisoned lock only means an ack callback panicked mid-update of a
        // plain map; the data is still usable.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn error(&mut self, path: &Path, kind: &str, err: &dyn std::fmt::Display) {
        self.metrics
            .errors
            .with_label_values(&[COMPONENT, kind])
            .inc();
        if self.warned.insert(path.to_owned()) {
            tracing::warn!(path = %path.display(), kind, "tail: {err}");
        }
    }

    /// The paths of the files currently open.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }

    /// Lists the globs and reconciles the result with the open files: new
    /// files are opened, a path now naming another file marks the old one as
    /// rotated, a vanished path marks its file as gone (it is still drained).
    pub fn scan(&mut self, now: Instant) {
        if let Some(w) = self.watch.as_mut() {
            w.retry();
        }
        let mut walk_errors = Vec::new();
        let found = self
            .globs
            .walk(&mut |dir, e| walk_errors.push((dir.to_owned(), e.to_string())));
        for (dir, e) in walk_errors {
            self.error(&dir, "read_dir", &e);
        }
        let mut by_id: HashMap<FileId, PathBuf> = HashMap::new();
        let mut order = Vec::new();
        for path in found {
            match fs::metadata(&path) {
                Ok(meta) if meta.is_file() => {
                    let id = FileId::of(&meta);
                    if let std::collections::hash_map::Entry::Vacant(v) = by_id.entry(id) {
                        v.insert(path.clone());
                        order.push(id);
                    }
                }
                Ok(_) => {}
                // Deleted between the listing and the stat: the next scan settles it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => self.error(&path, "stat", &e),
            }
        }
        for f in &mut self.files {
            match by_id.get(&f.id) {
                Some(path) => {
                    if *path != f.path {
                        // Renamed within the globs (e.g. `app.log` → `app.log.1`):
                        // same open handle, same position.
                        self.metrics.rotations.inc();
                        f.path = path.clone();
                        self.changed = true;
                    }
                    f.gone_since = None;
                }
                None if f.gone_since.is_none() => {
                    self.metrics.rotations.inc();
                    f.gone_since = Some(now);
                }
                None => {}
            }
        }
        // One handle per inode: a second path to an open file (a hard link, a
        // rename seen twice) is the same stream, never a second one.
        let open: HashSet<FileId> = self.files.iter().map(|f| f.id).collect();
        for id in order {
            if open.contains(&id) {
                continue;
            }
            let Some(path) = by_id.remove(&id) else {
                continue;
            };
            if self.files.len() >= self.cfg.max_open_files {
                let limit = self.cfg.max_open_files;
                self.error(
                    &path,
                    "too_many_files",
                    &format!("max_open_files: expected at most {limit} open files, found more; not opened"),
                );
                continue;
            }
            self.open(path, now);
        }
        self.scanned_once = true;
        self.metrics.files_watched.set(self.files.len() as i64);
    }

    fn open(&mut self, path: PathBuf, now: Instant) {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Found by the scan, gone before it could be opened (rotated
                // and deleted in between): whatever it held was never read.
                self.metrics.discard(COMPONENT, reason::FILE_VANISHED);
                tracing::debug!(path = %path.display(), "tail: file vanished before it was opened");
                return;
            }
            Err(e) => return self.error(&path, "open", &e),
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => return self.error(&path, "stat", &e),
        };
        self.warned.remove(&path);
        self.changed = true;
        let start_at_end = if self.cfg.start_at_end && !self.scanned_once {
            Some(last_line_boundary(&file, meta.len()).unwrap_or(meta.len()))
        } else {
            None
        };
        self.files.push(Tailed {
            id: FileId::of(&meta),
            path,
            file,
            decoder: None,
            reader: LineReader::new(0, self.cfg.max_line_bytes),
            size: meta.len(),
            last_growth: now,
            gone_since: None,
            at_eof: false,
            start_at_end,
            identify_size: None,
            opened: now,
        });
        let i = self.files.len() - 1;
        self.identify(i, now);
    }

    /// Fingerprints file `i` and decides where reading starts. Leaves it
    /// unidentified if it is too short to tell.
    fn identify(&mut self, i: usize, now: Instant) {
        let Some(f) = self.files.get_mut(i) else {
            return;
        };
        if f.decoder.is_some() || f.identify_size == Some(f.size) {
            return;
        }
        if let Some(kube) = &self.ctx.kube {
            let path = mecha_parsers::kubepath::parse_kube_path(&f.path.to_string_lossy());
            if super::kube::should_wait(kube, path.as_ref(), f.opened, now) {
                // Its pod is not in the cache yet: other files are read
                // meanwhile, and this one is tried again next round.
                return;
            }
        }
        f.identify_size = Some(f.size);
        let fp = match fingerprint_file(&f.file) {
            Ok(Some(content)) => identity(f.id, &content),
            Ok(None) => return,
            Err(e) => {
                let path = f.path.clone();
                return self.error(&path, "read", &e);
            }
        };
        // Identities bind the inode, and one handle is open per inode (see
        // `scan`), so two open files never share a stream.
        debug_assert!(
            !self
                .files
                .iter()
                .filter_map(|g| g.decoder.as_ref())
                .any(|d| **d.stream_id() == *fp)
        );
        let known = self.book().offset(&fp);
        let Some(f) = self.files.get_mut(i) else {
            return;
        };
        let offset = match known {
            Some(o) if o <= f.size => o,
            Some(_) => {
                // The file is shorter than its checkpoint: truncated while we
                // were away. Its head is unchanged, so start over.
                self.metrics.discard(COMPONENT, reason::TRUNCATED_FILE);
                0
            }
            None => f.start_at_end.unwrap_or(0),
        };
        let stream: Arc<str> = Arc::from(fp.as_str());
        f.reader = LineReader::new(offset, self.cfg.max_line_bytes);
        f.decoder = Some(Decoder::new(self.ctx.clone(), stream, &f.path, offset));
        let path = f.path.clone();
        tracing::debug!(path = %path.display(), stream = %fp, offset, checkpoint = ?known, "tail: reading file");
        self.book().register(&fp, &path, offset);
    }

    /// Reads up to about `budget` bytes, round-robin over the open files
    /// (each at most [`FILE_SLICE`] per round), closes drained rotated files and
    /// flushes idle multiline records. Returns whether any byte was read.
    pub fn round(&mut self, now: Instant, budget: usize, out: &mut Emitted) -> bool {
        let n = self.files.len();
        let mut used = 0;
        let mut progressed = false;
        for k in 0..n {
            if used >= budget {
                break;
            }
            let i = (self.next + k) % n;
            let slice = FILE_SLICE.min(budget - used);
            let read = self.poll(i, now, slice, out);
            used += read;
            progressed |= read > 0;
        }
        if n > 0 {
            self.next = (self.next + 1) % n;
        }
        self.close_drained(now, out);
        self.metrics.files_watched.set(self.files.len() as i64);
        progressed
    }

    /// One turn of file `i`; returns the bytes read.
    fn poll(&mut self, i: usize, now: Instant, slice: usize, out: &mut Emitted) -> usize {
        let Some(f) = self.files.get_mut(i) else {
            return 0;
        };
        let size = match f.file.metadata() {
            Ok(m) => m.len(),
            Err(e) => {
                // Unreadable: a gone file is then closed after its grace time.
                f.at_eof = true;
                let path = f.path.clone();
                self.error(&path, "stat", &e);
                return 0;
            }
        };
        if size > f.size {
            f.last_growth = now;
        }
        f.size = size;
        if f.decoder.is_some() && size < f.reader.read_offset() {
            // copytruncate: same handle, but the file shrank below what we
            // read. Lines written between our last read and the truncation are
            // lost (the unavoidable race of copytruncate), and if the file
            // regrows past our offset before we look, the shrink goes unseen.
            // The head may be new content, so identify the file again.
            self.metrics.discard(COMPONENT, reason::TRUNCATED_FILE);
            self.metrics.rotations.inc();
            if let Some(mut d) = f.decoder.take() {
                d.flush_all(now, f.reader.consumed(), out);
            }
            f.reader.reset();
            f.start_at_end = None;
            f.identify_size = None;
        }
        if f.decoder.is_none() {
            self.identify(i, now);
        }
        let Some(f) = self.files.get_mut(i) else {
            return 0;
        };
        let Some(decoder) = f.decoder.as_mut() else {
            return 0;
        };
        decoder.refresh_kube();
        let mut read = 0;
        if f.reader.read_offset() < size {
            let result = f.reader.read(&f.file, slice, &mut self.scratch, &mut |l| {
                decoder.line(l.bytes, l.start, l.end, l.truncated, now, out)
            });
            match result {
                Ok(o) => {
                    read = o.bytes;
                    f.at_eof = o.eof;
                }
                Err(e) => {
                    f.at_eof = true;
                    let path = f.path.clone();
                    self.error(&path, "read", &e);
                    return 0;
                }
            }
        } else {
            f.at_eof = true;
        }
        self.metrics
            .bytes_in
            .with_label_values(&[COMPONENT])
            .inc_by(read as u64);
        if let Some(f) = self.files.get_mut(i) {
            let consumed = f.reader.consumed();
            if let Some(d) = f.decoder.as_mut() {
                d.flush_idle(now, consumed, out);
            }
        }
        read
    }

    /// Closes rotated or deleted files that were read to their end and have
    /// been quiet for [`DRAIN_GRACE`], emitting their incomplete last line.
    fn close_drained(&mut self, now: Instant, out: &mut Emitted) {
        let mut i = 0;
        while let Some(f) = self.files.get(i) {
            let quiet_since = f.gone_since.map(|g| g.max(f.last_growth));
            let done = quiet_since.is_some_and(|q| now.saturating_duration_since(q) >= DRAIN_GRACE)
                && (f.at_eof || f.decoder.is_none());
            if !done {
                i += 1;
                continue;
            }
            // `at_eof` and `last_growth` date from the file's last turn, which
            // is long ago when other files took the read budget: ask the file.
            let unread = f.decoder.is_some()
                && f.file
                    .metadata()
                    .is_ok_and(|m| m.len() > f.reader.read_offset());
            if unread {
                if let Some(f) = self.files.get_mut(i) {
                    f.at_eof = false;
                }
                i += 1;
                continue;
            }
            let mut f = self.files.remove(i);
            self.changed = true;
            if let Some(d) = f.decoder.as_mut() {
                f.reader
                    .finish(&mut |l| d.line(l.bytes, l.start, l.end, l.truncated, now, out));
                d.flush_all(now, f.reader.consumed(), out);
            }
            tracing::debug!(path = %f.path.display(), "tail: closed drained file");
        }
    }

    /// Emits every pending merge and multiline record (shutdown).
    pub fn flush_all(&mut self, now: Instant, out: &mut Emitted) {
        for f in &mut self.files {
            let consumed = f.reader.consumed();
            if let Some(d) = f.decoder.as_mut() {
                d.flush_all(now, consumed, out);
            }
        }
    }

    /// The earliest instant at which a round has time-based work to do.
    pub fn deadline(&self) -> Option<Instant> {
        self.files
            .iter()
            .filter_map(|f| {
                let flush = f.decoder.as_ref().and_then(Decoder::deadline);
                let close = f.gone_since.map(|g| g.max(f.last_growth) + DRAIN_GRACE);
                flush.into_iter().chain(close).min()
            })
            .min()
    }

    /// Refreshes the checkpoints of open files and returns the checkpoint lag:
    /// bytes of open files not yet acknowledged.
    pub fn touch_and_lag(&self) -> u64 {
        let mut book = self.book();
        let mut lag = 0u64;
        for f in &self.files {
            if let Some(d) = &f.decoder {
                book.touch(d.stream_id(), &f.path);
                let acked = book.offset(d.stream_id()).unwrap_or(0);
                lag += f.size.saturating_sub(acked);
            }
        }
        lag
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod close_tests {
    use super::super::decode::records_of;
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

    /// A tailer of `logs/*.log` and its metrics.
    fn tailer(logs: &Path) -> (Tailer, Arc<AgentMetrics>) {
        let metrics = Arc::new(AgentMetrics::new());
        let ctx = Arc::new(DecodeCtx {
            container_format: None,
            body_format: mecha_parsers::body::BodyFormat::Raw,
            keep_original_body: false,
            multiline: None,
            multiline_flush: Duration::from_secs(1),
            multiline_max_lines: 500,
            max_merged_bytes: 1 << 20,
            node_name: None,
            kube: None,
            metrics: metrics.clone(),
            wall_ns: || 1,
        });
        let globs = Globs::new(&[format!("{}/*.log", logs.display())], &[]).unwrap();
        let book = Arc::new(Mutex::new(AckBook::default()));
        let t = Tailer::new(
            ctx,
            TailerConfig {
                start_at_end: false,
                max_open_files: 10,
                max_line_bytes: 1 << 16,
            },
            globs,
            book,
        );
        (t, metrics)
    }

    #[test]
    fn a_file_gone_before_it_is_opened_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut t, metrics) = tailer(dir.path());
        t.open(dir.path().join("gone.log"), Instant::now());
        assert!(t.files.is_empty());
        let text = metrics.render();
        assert!(text.contains("reason=\"file_vanished\"} 1"), "{text}");
    }

    #[test]
    fn rotated_file_grown_after_its_last_turn_is_not_closed_unread() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        fs::create_dir_all(&logs).unwrap();
        let (mut t, _) = tailer(&logs);
        let a = logs.join("a.log");
        let b = logs.join("b.log");
        let line =
            |s: &str| format!("2026-11-23T10:00:00.000000000Z stdout F {s} padding padding\n");
        fs::write(&a, line("a first")).unwrap();
        fs::write(&b, line("b first")).unwrap();
        let t0 = Instant::now();
        t.scan(t0);
        let mut out = Emitted::default();
        // Both read to their end: b.log's at_eof is true.
        t.round(t0, 1 << 20, &mut out);
        let records = |out: &Emitted| records_of(out).len();
        assert_eq!(records(&out), 2);
        // b.log gets its last lines, then is rotated out of the glob.
        let mut f = OpenOptions::new().append(true).open(&b).unwrap();
        for i in 0..10 {
            f.write_all(line(&format!("b late {i}")).as_bytes())
                .unwrap();
        }
        fs::rename(&b, logs.join("b.log.1")).unwrap();
        // a.log has far more to read than one round's budget.
        let mut fa = OpenOptions::new().append(true).open(&a).unwrap();
        for i in 0..20_000 {
            fa.write_all(line(&format!("a bulk {i}")).as_bytes())
                .unwrap();
        }
        t.scan(t0 + Duration::from_millis(100)); // b.log is gone from the glob
        out.clear();
        let mut now = t0 + Duration::from_millis(100);
        // Rounds with a small budget, the first spent on a.log; a long stall
        // (a full pipeline) between two of them.
        t.next = 0;
        t.round(now, 64 * 1024, &mut out);
        now += Duration::from_secs(6);
        t.next = 0;
        t.round(now, 64 * 1024, &mut out);
        for _ in 0..100 {
            now += Duration::from_millis(10);
            t.round(now, 1 << 20, &mut out);
        }
        let late = records_of(&out)
            .iter()
            .filter(|r| r.body.contains("b late"))
            .count();
        assert_eq!(
            late, 10,
            "b.log's last lines were read before it was closed"
        );
    }
}
