//! The agent's disk buffer: an append-only log of opaque payloads between the
//! sources and the forwarder, which survives restarts and `kill -9`.
//!
//! A writer [`DiskBuffer::append`]s payloads (pre-encoded requests) and gets
//! strictly increasing sequence numbers; [`DiskBuffer::durable`] says up to
//! which one the records are fsynced, so that a source releases a position
//! only once its record is safe. The [`BufferReader`] hands records out in
//! order and [`BufferReader::ack`] marks them delivered; after a restart
//! reading resumes after the last persisted acknowledgement, so a record may
//! be delivered twice (the aggregator deduplicates) but is never lost unless
//! the disk lost it. This module knows nothing of what payloads mean and must
//! not grow a second copy of the data in memory: it reads one record at a
//! time.
//!
//! # On disk
//!
//! A buffer directory holds:
//!
//! * segment files `{first_seq:020}.seg`, named by the sequence number of
//!   their first record; a new one starts when the next record would take the
//!   current one past `segment_bytes`. Each is a plain run of frames
//!   `len u32 | crc32 u32 | seq u64 | payload` (little endian; `len` is the
//!   payload length, the CRC covers `seq` then the payload). Sequence numbers
//!   start at 1 and go up by one within a segment.
//! * `ack`: the highest acknowledged sequence number (20 bytes, with magic,
//!   version and CRC; see `ackfile.rs`), replaced atomically.
//!
//! Anything else in the directory is left alone (and reported).
//!
//! # Recovery
//!
//! Opening never refuses to start because of file contents, and never panics
//! on them:
//!
//! * The newest segment is checked record by record; at the first torn or
//!   corrupt frame (short header or payload, a length past the end, a
//!   sequence number out of place as in a zero-filled tail, a CRC mismatch) it
//!   is cut back to the last whole record, and the bytes cut are reported.
//! * Older segments are checked as they are read: at a corrupt record the rest
//!   of that segment is skipped and counted (`corrupt_segments`, and the
//!   records lost as `lost_records`).
//! * A missing or invalid ack file means reading starts from the oldest
//!   segment.
//! * The newest segment is never removed, even when acknowledged, so its name
//!   keeps sequence numbers increasing across restarts.
//!
//! # Limits
//!
//! `max_size` bounds the bytes of unacknowledged records (frames included).
//! Acknowledged records are removed a whole segment at a time, so the
//! directory holds at most about `max_size + segment_bytes`. Memory is bounded
//! by one record being read, one being written, and a 32-byte mark per record
//! handed out but not yet acknowledged.
//!
//! # Threads
//!
//! File I/O runs in `tokio::task::spawn_blocking` (one record per call, or
//! one group of records and its fsync for [`DiskBuffer::append_group`]), and
//! fsync passes in a background task that also uses blocking threads, so the
//! reactor never waits for the disk. The one exception is the reader when
//! all it has left to read is a few hundred KiB this process has just
//! appended: those pages are in the page cache, and copying them costs less
//! than the trip to a blocking thread and back. The core (`segments.rs`,
//! `cursor.rs`) is synchronous and tested without tokio.

mod ackfile;
mod cursor;
mod frame;
mod handle;
mod segments;

#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use ackfile::AckFileState;
pub use handle::{BufferReader, DiskBuffer, GroupAppended};

/// Sequence numbers read from disk above this are treated as corrupt, so that
/// no file content can bring `seq + 1` near overflow (2^62 records at a
/// million a second last 146,000 years).
const MAX_SEQ: u64 = 1 << 62;

/// Settings of a disk buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferOptions {
    /// Directory of the segment files and the ack file; created if missing.
    /// One buffer per directory, used by one process at a time.
    pub dir: PathBuf,
    /// Most bytes of unacknowledged records (16-byte frame headers included)
    /// kept on disk. A single payload larger than this is refused. Default
    /// 1 GiB.
    pub max_size: u64,
    /// A new segment file starts when the next record would take the current
    /// one past this; acknowledged space is freed a segment at a time.
    /// Default 64 MiB.
    pub segment_bytes: u64,
    /// Fsync passes run at most this often while there are unsynced writes
    /// (the first write after a quiet period is fsynced at once), so this is
    /// the longest a written record waits to become durable. Zero: fsync on
    /// every append, which then returns only once its record is durable.
    /// Default 500 ms.
    pub fsync_interval: Duration,
    /// What an append does when the buffer is full.
    pub when_full: WhenFull,
}

impl BufferOptions {
    /// The defaults, in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        BufferOptions {
            dir: dir.into(),
            max_size: 1024 * 1024 * 1024,
            segment_bytes: 64 * 1024 * 1024,
            fsync_interval: Duration::from_millis(500),
            when_full: WhenFull::default(),
        }
    }
}

/// What [`DiskBuffer::append`] does when unacknowledged records fill
/// `max_size`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait until acknowledgements free space (back-pressure to the source).
    #[default]
    Block,
    /// Drop the new payload and count it.
    DropNewest,
}

/// What became of an appended payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Appended {
    /// Written with this sequence number (durable once
    /// [`DiskBuffer::durable`] reaches it).
    Written {
        /// The record's sequence number.
        seq: u64,
    },
    /// The buffer was full and [`WhenFull::DropNewest`] is set: not written,
    /// counted in [`BufferStats::dropped_full`].
    Dropped,
}

/// A record handed out by the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number, to pass to [`BufferReader::ack`].
    pub seq: u64,
    /// The payload as appended.
    pub payload: Vec<u8>,
}

/// Counts for metrics and readiness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Bytes of records not yet acknowledged (frames included); what
    /// `max_size` limits.
    pub unacked_bytes: u64,
    /// Records not yet acknowledged (including any lost to corruption that
    /// the reader has not stepped past yet).
    pub unacked_records: u64,
    /// Bytes of all segment files, acknowledged records included.
    pub disk_bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Highest sequence number written.
    pub last_seq: u64,
    /// Highest sequence number acknowledged.
    pub acked_seq: u64,
    /// Highest sequence number fsynced.
    pub durable_seq: u64,
    /// Payloads dropped because the buffer was full ([`WhenFull::DropNewest`]).
    pub dropped_full: u64,
    /// Bytes cut from a torn or corrupt tail when the buffer was opened.
    pub truncated_bytes: u64,
    /// Segments whose rest was skipped at a corrupt record.
    pub corrupt_segments: u64,
    /// Records skipped with them, never handed out.
    pub lost_records: u64,
    /// Failed writes (each rewound to the last whole record).
    pub write_errors: u64,
    /// Failed fsync passes (fsync of data or directory, or the ack file).
    pub sync_errors: u64,
    /// The last write failed (e.g. disk full): not ready.
    pub write_failed: bool,
}

/// What opening the buffer found and repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files in use after opening.
    pub segments: usize,
    /// Fully acknowledged segment files removed.
    pub removed_segments: usize,
    /// Sequence number of the next append.
    pub next_seq: u64,
    /// Reading resumes after this sequence number.
    pub resume_after: u64,
    /// What the ack file held.
    pub ack_file: AckFileState,
    /// Bytes cut from the end of the newest segment; 0 when it was whole.
    pub truncated_bytes: u64,
    /// Where and why the newest segment was cut.
    pub truncation: Option<String>,
    /// Files in the directory that are not part of the buffer, left alone.
    pub ignored_files: Vec<PathBuf>,
}

/// Why a buffer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// The buffer directory cannot be created or listed.
    #[error("buffer dir {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A segment file cannot be opened or created.
    #[error("buffer segment {path}: cannot open: {source}")]
    Open {
        /// The segment file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Writing a record failed (e.g. no space left, read-only filesystem);
    /// the segment was cut back to its last whole record and a later append
    /// may succeed.
    #[error("buffer segment {path}: write failed: {source}")]
    Write {
        /// The segment file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Reading a record failed; the next read retries it.
    #[error("buffer segment {path}: read failed: {source}")]
    Read {
        /// The segment file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// An fsync failed; records written since the last good one are not yet
    /// durable (they are still buffered and will be read).
    #[error("buffer {path}: fsync failed: {source}")]
    Sync {
        /// The segment file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The ack file could not be written; acknowledged records may be
    /// delivered again after a restart.
    #[error("buffer ack file {path}: {source}")]
    AckFile {
        /// The ack file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A payload that can never fit.
    #[error("buffer: payload of {size} bytes with its frame: expected at most {max} (max_size)")]
    TooLarge {
        /// Bytes the record would take, header included.
        size: u64,
        /// The most a record may take.
        max: u64,
    },
    /// The background task of the buffer is gone (the runtime is shutting
    /// down, or a blocking task panicked).
    #[error("buffer: background task stopped")]
    Stopped,
}

impl BufferError {
    /// A copy for a second waiter on the same fsync pass (`io::Error` is not
    /// `Clone`; the copy keeps kind and message).
    fn duplicate(&self) -> BufferError {
        fn dup(e: &io::Error) -> io::Error {
            io::Error::new(e.kind(), e.to_string())
        }
        match self {
            BufferError::Dir { path, source } => BufferError::Dir {
                path: path.clone(),
                source: dup(source),
            },
            BufferError::Open { path, source } => BufferError::Open {
                path: path.clone(),
                source: dup(source),
            },
            BufferError::Write { path, source } => BufferError::Write {
                path: path.clone(),
                source: dup(source),
            },
            BufferError::Read { path, source } => BufferError::Read {
                path: path.clone(),
                source: dup(source),
            },
            BufferError::Sync { path, source } => BufferError::Sync {
                path: path.clone(),
                source: dup(source),
            },
            BufferError::AckFile { path, source } => BufferError::AckFile {
                path: path.clone(),
                source: dup(source),
            },
            BufferError::TooLarge { size, max } => BufferError::TooLarge {
                size: *size,
                max: *max,
            },
            BufferError::Stopped => BufferError::Stopped,
        }
    }
}
