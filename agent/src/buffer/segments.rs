//! The synchronous core of the disk buffer: segment files, recovery, appends,
//! fsync passes and acknowledgement bookkeeping. No tokio here; every method
//! may block on the disk and is called from a blocking thread by the async
//! facade (or directly by tests).
//!
//! Two locks, taken in this order only: `writer` (held across the write of one
//! record, so appends are serialised) and `state` (held only for bookkeeping,
//! never across I/O), so that acks, stats and readers never wait for a write
//! or an fsync.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::ackfile::{self, AckFileState};
use super::cursor::Cursor;
use super::frame::{PreparedFrame, ReadError, SegmentFile};
use super::{BufferError, BufferOptions, BufferStats, RecoveryReport};

/// Extension of segment files.
const SEGMENT_EXT: &str = ".seg";
/// Digits of the zero-padded first sequence number in a segment's name, so
/// that names sort like numbers.
const SEGMENT_DIGITS: usize = 20;

/// Path of the segment whose first record is `first_seq`.
pub(super) fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}{SEGMENT_EXT}"))
}

/// The first sequence number named by a segment file name, if it is one.
fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_EXT)?;
    if digits.len() != SEGMENT_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Sequence numbers start at 1; a segment "0" is nothing this code wrote.
    digits
        .parse()
        .ok()
        .filter(|&s| s > 0 && s <= super::MAX_SEQ)
}

/// Locks a mutex, carrying on after a panic elsewhere: every critical section
/// leaves the state consistent between statements that can panic.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a repeated event is logged: the first time and at powers of two.
pub(super) fn worth_logging(count: u64) -> bool {
    count.is_power_of_two()
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AppendOutcome {
    /// The record was written with this sequence number.
    Written(u64),
    /// It would take unacknowledged bytes past `max_size`; nothing written.
    Full,
}

/// One segment file.
#[derive(Debug, Clone, Copy)]
struct SegMeta {
    /// Sequence number of its first record (and its name).
    first_seq: u64,
    /// Bytes of whole records in it.
    len: u64,
}

/// A reading position recorded for acknowledgement: the end of a record
/// handed to the reader, or the end of a stretch the reader skipped.
#[derive(Debug, Clone, Copy)]
struct Mark {
    /// Every record up to this sequence number is before the position.
    seq: u64,
    /// Segment of the position.
    seg: u64,
    /// Byte offset in that segment.
    end: u64,
    /// A record handed out (to be acked by the consumer), rather than a
    /// skipped stretch (acked implicitly once everything before it is).
    delivered: bool,
}

/// What the reader may read of a segment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bound {
    /// Bytes of whole records in the segment; `None` if it no longer exists.
    pub len: Option<u64>,
    /// The following segment, if any: once it exists, this one is final.
    pub next: Option<u64>,
}

/// The writer's side: the segment being appended to.
struct Writer {
    file: Arc<File>,
    path: PathBuf,
    first_seq: u64,
    /// Bytes of whole records; the file may be longer after a failed rewind.
    len: u64,
    next_seq: u64,
    /// A failed write could not be rewound: truncate before the next write.
    dirty_tail: bool,
}

/// Bookkeeping shared by writer, reader, acks and fsync passes.
struct State {
    segments: VecDeque<SegMeta>,
    /// The segment being appended to, for fsync passes.
    active: (PathBuf, Arc<File>),
    /// Written to since the last fsync pass planned it.
    active_dirty: bool,
    /// Segments closed since they were last fsynced.
    unsynced: Vec<(PathBuf, Arc<File>)>,
    /// A segment file was created: the directory needs an fsync.
    dir_dirty: bool,
    /// Segments fully acknowledged, to be removed by the next pass.
    to_delete: Vec<PathBuf>,
    /// The reader found the active segment corrupt: roll before the next write.
    roll_requested: Option<u64>,
    /// Sum of segment lengths.
    disk_bytes: u64,
    /// Bytes of records appended since the buffer was opened: the newest
    /// this many bytes at the head were written by this process.
    written_since_open: u64,
    /// Bytes at the start of the oldest segment that are acknowledged.
    ack_offset: u64,
    last_seq: u64,
    durable: u64,
    acked: u64,
    persisted_ack: u64,
    /// Positions handed out or skipped, not yet acknowledged.
    marks: VecDeque<Mark>,
    /// Bumped whenever the acknowledged position moves (space may be free).
    advances: u64,
    dropped_full: u64,
    truncated_bytes: u64,
    corrupt_segments: u64,
    lost_records: u64,
    write_errors: u64,
    sync_errors: u64,
    write_failed: bool,
}

impl State {
    fn unacked_bytes(&self) -> u64 {
        self.disk_bytes.saturating_sub(self.ack_offset)
    }

    /// Moves the acknowledged position to `end` of segment `seg`, which
    /// covers every record up to `seq`, and queues segments wholly before it
    /// for removal. The newest segment is never removed: its name keeps the
    /// sequence numbers increasing across restarts.
    fn advance(&mut self, dir: &Path, seq: u64, seg: u64, end: u64) {
        self.advances += 1;
        self.acked = self.acked.max(seq);
        while self.segments.len() > 1 {
            let Some(&front) = self.segments.front() else {
                break;
            };
            let whole = front.first_seq < seg || (front.first_seq == seg && end >= front.len);
            if !whole {
                break;
            }
            self.segments.pop_front();
            self.disk_bytes = self.disk_bytes.saturating_sub(front.len);
            self.ack_offset = 0;
            let path = segment_path(dir, front.first_seq);
            // Its descriptor must go too, or the space is not freed.
            self.unsynced.retain(|(p, _)| *p != path);
            self.to_delete.push(path);
        }
        if let Some(front) = self.segments.front()
            && front.first_seq == seg
        {
            self.ack_offset = self.ack_offset.max(end.min(front.len));
        }
    }
}

/// The segment files of one buffer dir.
pub(super) struct Segments {
    dir: PathBuf,
    max_size: u64,
    segment_bytes: u64,
    writer: Mutex<Writer>,
    state: Mutex<State>,
    /// One fsync pass at a time.
    sync_lock: Mutex<()>,
}

/// What an fsync pass does, captured under the state lock and carried out
/// without it.
struct SyncPlan {
    files: Vec<(PathBuf, Arc<File>)>,
    active_planned: bool,
    dir: bool,
    ack: Option<u64>,
    delete: Vec<PathBuf>,
    durable_to: u64,
}

impl Segments {
    /// Opens (creating if needed) the buffer in `opts.dir` and recovers it:
    /// the newest segment is checked record by record and cut at the first
    /// bad one; older segments are checked as they are read. Returns the
    /// reader's cursor, positioned after the persisted acknowledgement.
    pub fn open(opts: &BufferOptions) -> Result<(Segments, Cursor, RecoveryReport), BufferError> {
        let dir = opts.dir.clone();
        let dir_err = |source| BufferError::Dir {
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(dir_err)?;
        let mut found = Vec::new();
        let mut ignored_files = Vec::new();
        for entry in fs::read_dir(&dir).map_err(dir_err)? {
            let entry = entry.map_err(dir_err)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == ackfile::FILE_NAME {
                continue;
            }
            if name == ackfile::TMP_NAME {
                // A write of the ack file that did not reach its rename.
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            match parse_segment_name(&name) {
                Some(first) if is_file => found.push(first),
                _ => ignored_files.push(entry.path()),
            }
        }
        found.sort_unstable();
        for path in &ignored_files {
            tracing::warn!(path = %path.display(), "buffer dir: ignoring a file that is not a segment");
        }

        let ack_file = ackfile::load(&dir);
        let persisted = match &ack_file {
            AckFileState::Loaded(seq) => *seq,
            AckFileState::Missing => 0,
            AckFileState::Invalid(reason) => {
                tracing::warn!(
                    reason,
                    "buffer ack file invalid; reading from the oldest segment"
                );
                0
            }
        };

        // The newest segment: keep its whole records, cut the rest.
        let mut truncated_bytes = 0;
        let mut truncation = None;
        let mut next_seq = persisted.saturating_add(1);
        let mut active: Option<(u64, u64)> = None; // (first_seq, len)
        if let Some(&last) = found.last() {
            let path = segment_path(&dir, last);
            let (good, expected, file_len, fault) = scan(&path, last)?;
            if let Some(fault) = fault {
                truncated_bytes = file_len - good;
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|source| BufferError::Open {
                        path: path.clone(),
                        source,
                    })?;
                file.set_len(good)
                    .and_then(|()| file.sync_all())
                    .map_err(|source| BufferError::Write {
                        path: path.clone(),
                        source,
                    })?;
                let why = format!(
                    "{}: cut {truncated_bytes} bytes at offset {good}: {fault}",
                    path.display()
                );
                tracing::warn!(reason = why, "buffer: cut a torn or corrupt tail");
                truncation = Some(why);
            }
            if expected >= next_seq {
                next_seq = expected;
                active = Some((last, good));
            } else if good == 0 {
                // Empty, and the ack says its sequence numbers are used up.
                remove_segment(&path);
                found.pop();
            }
        }
        let (active_first, active_len) = match active {
            Some(a) => a,
            None => {
                // No segment to continue: start one named by the next number.
                create_segment(&dir, next_seq)?;
                found.push(next_seq);
                (next_seq, 0)
            }
        };

        // Segments entirely acknowledged (never the newest).
        let mut removed_segments = 0;
        while found.len() > 1 && found[1] - 1 <= persisted {
            remove_segment(&segment_path(&dir, found[0]));
            found.remove(0);
            removed_segments += 1;
        }

        let mut segments = VecDeque::with_capacity(found.len());
        let mut disk_bytes = 0;
        for &first in &found {
            let len = if first == active_first {
                active_len
            } else {
                let path = segment_path(&dir, first);
                match fs::metadata(&path) {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(source) => return Err(BufferError::Open { path, source }),
                }
            };
            disk_bytes += len;
            segments.push_back(SegMeta {
                first_seq: first,
                len,
            });
        }

        let active_path = segment_path(&dir, active_first);
        let file = OpenOptions::new()
            .append(true)
            .open(&active_path)
            .map_err(|source| BufferError::Open {
                path: active_path.clone(),
                source,
            })?;
        // What is on disk now is claimed durable below: make it so (after a
        // process crash it may still be only in the page cache).
        for seg in &segments {
            let path = segment_path(&dir, seg.first_seq);
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|source| BufferError::Sync { path, source })?;
        }
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| BufferError::Sync {
                path: dir.clone(),
                source,
            })?;

        let oldest = segments.front().map_or(next_seq, |s| s.first_seq);
        let acked = persisted.max(oldest - 1);
        let file = Arc::new(file);
        let segs = Segments {
            dir: dir.clone(),
            max_size: opts.max_size,
            segment_bytes: opts.segment_bytes,
            writer: Mutex::new(Writer {
                file: file.clone(),
                path: active_path.clone(),
                first_seq: active_first,
                len: active_len,
                next_seq,
                dirty_tail: false,
            }),
            state: Mutex::new(State {
                segments,
                active: (active_path, file),
                active_dirty: false,
                unsynced: Vec::new(),
                dir_dirty: false,
                to_delete: Vec::new(),
                roll_requested: None,
                disk_bytes,
                written_since_open: 0,
                ack_offset: 0,
                last_seq: next_seq - 1,
                durable: next_seq - 1,
                acked,
                persisted_ack: persisted,
                marks: VecDeque::new(),
                advances: 0,
                dropped_full: 0,
                truncated_bytes,
                corrupt_segments: 0,
                lost_records: 0,
                write_errors: 0,
                sync_errors: 0,
                write_failed: false,
            }),
            sync_lock: Mutex::new(()),
        };
        let mut cursor = Cursor::new(oldest, acked);
        // Step over the acknowledged records of the oldest segment now, so
        // that the unacknowledged byte count is exact from the start. A read
        // error is not fatal here: the reader meets it again and reports it.
        if let Err(e) = cursor.fill(&segs) {
            tracing::warn!(error = %e, "buffer: cannot read ahead after open; the reader will retry");
        }
        let report = RecoveryReport {
            segments: lock(&segs.state).segments.len(),
            removed_segments,
            next_seq,
            resume_after: acked,
            ack_file,
            truncated_bytes,
            truncation,
            ignored_files,
        };
        Ok((segs, cursor, report))
    }

    /// The buffer dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The largest frame (header included) an append accepts.
    pub fn max_frame(&self) -> u64 {
        self.max_size
            .min(u64::from(u32::MAX) + super::frame::HEADER_LEN)
    }

    /// Appends one payload (a convenience over [`Segments::append_frame`]).
    #[cfg(test)]
    pub fn append(&self, payload: &[u8]) -> Result<AppendOutcome, BufferError> {
        self.append_frame(&mut PreparedFrame::new(payload))
    }

    /// Writes one record, unless unacknowledged bytes would pass `max_size`.
    /// On a write error the segment is cut back to its last whole record and
    /// the sequence number is not used.
    pub fn append_frame(&self, frame: &mut PreparedFrame) -> Result<AppendOutcome, BufferError> {
        let flen = frame.len();
        if flen > self.max_frame() {
            return Err(BufferError::TooLarge {
                size: flen,
                max: self.max_frame(),
            });
        }
        frame.prepare();
        let mut w = lock(&self.writer);
        let roll_requested = {
            let mut st = lock(&self.state);
            if st.unacked_bytes() + flen > self.max_size {
                return Ok(AppendOutcome::Full);
            }
            st.roll_requested
                .take_if(|seg| *seg == w.first_seq)
                .is_some()
        };
        if w.dirty_tail {
            if let Err(source) = w.file.set_len(w.len) {
                self.count_write_error(&w.path, &source);
                return Err(BufferError::Write {
                    path: w.path.clone(),
                    source,
                });
            }
            w.dirty_tail = false;
        }
        if w.len > 0 && (roll_requested || w.len + flen > self.segment_bytes) {
            self.roll(&mut w)?;
        }
        let seq = w.next_seq;
        if let Err(source) = (&*w.file).write_all(frame.seal(seq)) {
            // Cut the partial frame so the segment ends on a whole record;
            // if even that fails, retry before the next write.
            w.dirty_tail = w.file.set_len(w.len).is_err();
            self.count_write_error(&w.path, &source);
            return Err(BufferError::Write {
                path: w.path.clone(),
                source,
            });
        }
        w.len += flen;
        w.next_seq += 1;
        let mut st = lock(&self.state);
        if let Some(back) = st.segments.back_mut() {
            debug_assert_eq!(back.first_seq, w.first_seq);
            back.len = w.len;
        }
        st.disk_bytes += flen;
        st.written_since_open += flen;
        st.last_seq = seq;
        st.active_dirty = true;
        if st.write_failed {
            tracing::info!(path = %w.path.display(), "buffer: writing again after a failed write");
        }
        st.write_failed = false;
        Ok(AppendOutcome::Written(seq))
    }

    /// Counts a failed write (or segment creation) for stats and readiness.
    fn count_write_error(&self, path: &Path, source: &io::Error) {
        let mut st = lock(&self.state);
        st.write_errors += 1;
        st.write_failed = true;
        if worth_logging(st.write_errors) {
            tracing::warn!(
                path = %path.display(),
                error = %source,
                write_errors = st.write_errors,
                "buffer: write failed; the segment ends on its last whole record"
            );
        }
    }

    /// Closes the active segment and starts one named by the next sequence
    /// number. The old one is fsynced by the next pass.
    fn roll(&self, w: &mut Writer) -> Result<(), BufferError> {
        let first = w.next_seq;
        let (path, file) = create_segment(&self.dir, first).inspect_err(|e| {
            if let BufferError::Open { path, source } = e {
                self.count_write_error(path, source);
            }
        })?;
        let file = Arc::new(file);
        let old = (
            std::mem::replace(&mut w.path, path.clone()),
            std::mem::replace(&mut w.file, file.clone()),
        );
        w.first_seq = first;
        w.len = 0;
        let mut st = lock(&self.state);
        st.unsynced.push(old);
        st.active = (path, file);
        st.dir_dirty = true;
        st.segments.push_back(SegMeta {
            first_seq: first,
            len: 0,
        });
        Ok(())
    }

    /// Fsyncs every segment written since the last pass (and the directory
    /// after a new segment), then persists the acknowledgement if it moved and
    /// removes acknowledged segments. On success the durable sequence number
    /// covers every record written before the pass began.
    pub fn sync(&self) -> Result<(), BufferError> {
        self.sync_pass(true)
    }

    /// Like [`Segments::sync`] but leaves the acknowledgement and the
    /// removal of acknowledged segments to the next full pass: for a writer
    /// whose clients wait for their records to be durable, and should not
    /// also wait for the two fsyncs of the ack file.
    pub fn sync_records(&self) -> Result<(), BufferError> {
        self.sync_pass(false)
    }

    fn sync_pass(&self, with_ack: bool) -> Result<(), BufferError> {
        let _one_at_a_time = lock(&self.sync_lock);
        let plan = {
            let mut st = lock(&self.state);
            let mut files = std::mem::take(&mut st.unsynced);
            let active_planned = st.active_dirty;
            if active_planned {
                files.push(st.active.clone());
                st.active_dirty = false;
            }
            let dir = std::mem::take(&mut st.dir_dirty);
            SyncPlan {
                files,
                active_planned,
                dir,
                ack: (with_ack && st.acked > st.persisted_ack).then_some(st.acked),
                delete: if with_ack {
                    std::mem::take(&mut st.to_delete)
                } else {
                    Vec::new()
                },
                durable_to: st.last_seq,
            }
        };

        let mut error = None;
        let mut failed = Vec::new();
        for (path, file) in plan.files {
            if let Err(source) = file.sync_data() {
                error.get_or_insert(BufferError::Sync {
                    path: path.clone(),
                    source,
                });
                failed.push((path, file));
            }
        }
        let mut dir_failed = false;
        if plan.dir
            && let Err(source) = File::open(&self.dir).and_then(|d| d.sync_all())
        {
            dir_failed = true;
            error.get_or_insert(BufferError::Sync {
                path: self.dir.clone(),
                source,
            });
        }
        let data_ok = error.is_none();
        let mut ack_ok = true;
        if let Some(seq) = plan.ack
            && let Err(source) = ackfile::store(&self.dir, seq)
        {
            ack_ok = false;
            error.get_or_insert(BufferError::AckFile {
                path: self.dir.join(ackfile::FILE_NAME),
                source,
            });
        }
        for path in &plan.delete {
            remove_segment(path);
        }

        let mut st = lock(&self.state);
        if data_ok {
            st.durable = st.durable.max(plan.durable_to);
        } else {
            st.sync_errors += 1;
            // Retried by the next pass. A failed fsync may have dropped the
            // dirty pages (Linux marks them clean), so new records go to a
            // fresh segment rather than after ones of unknown fate.
            if plan.active_planned {
                st.active_dirty = true;
            }
            st.unsynced.extend(failed);
            st.dir_dirty |= dir_failed;
            if let Some(&back) = st.segments.back() {
                st.roll_requested = Some(back.first_seq);
            }
        }
        if ack_ok && let Some(seq) = plan.ack {
            st.persisted_ack = st.persisted_ack.max(seq);
        }
        if !ack_ok && data_ok {
            st.sync_errors += 1;
        }
        match error {
            Some(e) => {
                if worth_logging(st.sync_errors) {
                    tracing::warn!(error = %e, sync_errors = st.sync_errors, "buffer: fsync pass failed; retrying");
                }
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// The highest sequence number known to be on disk (fsynced).
    pub fn durable(&self) -> u64 {
        lock(&self.state).durable
    }

    /// Whether an fsync pass has anything to do.
    #[cfg(test)]
    pub fn needs_sync(&self) -> bool {
        let st = lock(&self.state);
        st.active_dirty
            || st.dir_dirty
            || !st.unsynced.is_empty()
            || !st.to_delete.is_empty()
            || st.acked > st.persisted_ack
    }

    /// Acknowledges every record handed to the reader up to `seq`: the
    /// position moves past them (and past what the reader skipped after
    /// them). Acks beyond the last record handed out stop there. Returns
    /// whether anything moved.
    pub fn ack(&self, seq: u64) -> bool {
        let mut st = lock(&self.state);
        let mut to = None;
        while let Some(&m) = st.marks.front() {
            if m.delivered && m.seq > seq {
                break;
            }
            st.marks.pop_front();
            to = Some(m);
        }
        match to {
            Some(m) => {
                st.advance(&self.dir, m.seq, m.seg, m.end);
                true
            }
            None => false,
        }
    }

    /// What the reader may read of segment `seg`.
    pub(super) fn bound(&self, seg: u64) -> Bound {
        let st = lock(&self.state);
        let idx = st.segments.partition_point(|s| s.first_seq < seg);
        let this = st
            .segments
            .get(idx)
            .filter(|s| s.first_seq == seg)
            .map(|s| s.len);
        let next_idx = if this.is_some() { idx + 1 } else { idx };
        Bound {
            len: this,
            next: st.segments.get(next_idx).map(|s| s.first_seq),
        }
    }

    /// Whether every byte from `offset` of segment `seg` to the write head
    /// was appended by this process and there are at most `window` of them:
    /// bytes the kernel still holds in its page cache, so that reading them
    /// costs a copy, not a wait for the disk.
    pub(super) fn recent(&self, seg: u64, offset: u64, window: u64) -> bool {
        let st = lock(&self.state);
        let mut behind = 0u64;
        for s in st.segments.iter().rev() {
            if s.first_seq > seg {
                behind = behind.saturating_add(s.len);
            } else if s.first_seq == seg {
                behind = behind.saturating_add(s.len.saturating_sub(offset));
                return behind <= window.min(st.written_since_open);
            } else {
                break;
            }
            if behind > window {
                return false;
            }
        }
        // The reader's segment is gone: let the careful path find out why.
        false
    }

    /// Records that the record up to `seq`, ending at `end` of `seg`, was
    /// handed to the reader.
    pub(super) fn delivered(&self, seq: u64, seg: u64, end: u64) {
        lock(&self.state).marks.push_back(Mark {
            seq,
            seg,
            end,
            delivered: true,
        });
    }

    /// Records that the reader stepped over everything up to `seq`, ending
    /// at `end` of `seg`, without handing it out (acknowledged before, or
    /// lost to corruption). It counts as acknowledged once every record
    /// handed out before it is.
    pub(super) fn skipped(&self, seq: u64, seg: u64, end: u64) {
        let mut st = lock(&self.state);
        let mark = Mark {
            seq,
            seg,
            end,
            delivered: false,
        };
        match st.marks.back_mut() {
            None => st.advance(&self.dir, seq, seg, end),
            Some(back) if !back.delivered => *back = mark,
            Some(_) => st.marks.push_back(mark),
        }
    }

    /// Records that the rest of segment `seg` is unreadable: counted, and if
    /// it is the active segment the writer moves to a new one now, so that
    /// no record is written after the damage and the reader can step past it
    /// (its bytes would otherwise count against `max_size` with nothing left
    /// to acknowledge them).
    pub(super) fn corrupt(&self, seg: u64) {
        let active = {
            let mut st = lock(&self.state);
            st.corrupt_segments += 1;
            st.segments.back().is_some_and(|s| s.first_seq == seg)
        };
        if !active {
            return;
        }
        let mut w = lock(&self.writer);
        if w.first_seq != seg || w.len == 0 {
            return;
        }
        if let Err(e) = self.roll(&mut w) {
            tracing::warn!(error = %e, "buffer: cannot leave a corrupt segment yet; the next append retries");
            lock(&self.state).roll_requested = Some(seg);
        }
    }

    /// Counts records the reader will never hand out.
    pub(super) fn lost(&self, n: u64) {
        lock(&self.state).lost_records += n;
    }

    /// How often the acknowledged position has moved: a change means an
    /// append that found the buffer full may fit now.
    pub fn advances(&self) -> u64 {
        lock(&self.state).advances
    }

    /// Counts a record dropped because the buffer was full.
    pub fn count_dropped(&self) {
        lock(&self.state).dropped_full += 1;
    }

    /// Whether the last write failed (cleared by the next successful one).
    pub fn last_write_failed(&self) -> bool {
        lock(&self.state).write_failed
    }

    /// Counts for metrics.
    pub fn stats(&self) -> BufferStats {
        let st = lock(&self.state);
        BufferStats {
            unacked_bytes: st.unacked_bytes(),
            unacked_records: st.last_seq.saturating_sub(st.acked),
            disk_bytes: st.disk_bytes,
            segments: st.segments.len() as u64,
            last_seq: st.last_seq,
            acked_seq: st.acked,
            durable_seq: st.durable,
            dropped_full: st.dropped_full,
            truncated_bytes: st.truncated_bytes,
            corrupt_segments: st.corrupt_segments,
            lost_records: st.lost_records,
            write_errors: st.write_errors,
            sync_errors: st.sync_errors,
            write_failed: st.write_failed,
        }
    }
}

/// Checks a segment record by record from the start: returns the length of
/// its whole records, the sequence number after the last, the file length,
/// and the fault that ended the scan before the end of the file, if any.
fn scan(
    path: &Path,
    first_seq: u64,
) -> Result<(u64, u64, u64, Option<super::frame::Fault>), BufferError> {
    let read_err = |source| BufferError::Read {
        path: path.to_owned(),
        source,
    };
    let file_len = fs::metadata(path).map_err(read_err)?.len();
    let mut file = SegmentFile::open(path).map_err(read_err)?;
    let mut offset = 0;
    let mut expected = first_seq;
    while offset < file_len {
        match file.read_frame(offset, file_len, expected) {
            Ok(frame) => {
                offset += frame.len();
                expected += 1;
            }
            Err(ReadError::Fault(fault)) => return Ok((offset, expected, file_len, Some(fault))),
            Err(ReadError::Io(source)) => return Err(read_err(source)),
        }
    }
    Ok((offset, expected, file_len, None))
}

/// Creates an empty segment; it must not exist yet.
fn create_segment(dir: &Path, first_seq: u64) -> Result<(PathBuf, File), BufferError> {
    let path = segment_path(dir, first_seq);
    match OpenOptions::new().append(true).create_new(true).open(&path) {
        Ok(f) => Ok((path, f)),
        Err(source) => Err(BufferError::Open { path, source }),
    }
}

/// Removes a segment file; a failure only leaves acknowledged records that the
/// next open removes again.
fn remove_segment(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "buffer: cannot remove an acknowledged segment")
        }
    }
}
