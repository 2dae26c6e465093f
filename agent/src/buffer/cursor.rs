//! The reader's position in the segments: reads one record at a time, steps
//! over what is already acknowledged, and skips the rest of a segment at a
//! corrupt record.
//!
//! A record read ahead is held as *pending* until it is handed out, so that a
//! reader whose future is dropped mid-read (a `select!` branch losing) finds
//! it again on the next call instead of acknowledging past it unseen.

use super::frame::{ReadError, SegmentFile};
use super::segments::{Segments, segment_path, worth_logging};
use super::{BufferError, Record};

/// A record read but not yet handed out.
struct Pending {
    record: Record,
    seg: u64,
    end: u64,
}

/// Where the reader is.
pub(super) struct Cursor {
    /// Segment being read (its first sequence number).
    seg: u64,
    /// Offset of the next frame in it.
    offset: u64,
    /// Sequence number the next frame must carry.
    expected: u64,
    /// Records up to here are not handed out: acknowledged before the
    /// buffer was opened, or already handed out.
    floor: u64,
    /// The rest of this segment is unreadable; move on once a later one exists.
    abandoned: bool,
    file: Option<SegmentFile>,
    pending: Option<Pending>,
}

impl Cursor {
    /// A cursor at the start of segment `seg` that hands out only records
    /// after `floor`.
    pub fn new(seg: u64, floor: u64) -> Self {
        Cursor {
            seg,
            offset: 0,
            expected: seg,
            floor,
            abandoned: false,
            file: None,
            pending: None,
        }
    }

    /// Reads ahead until a record is pending; false when caught up with the
    /// writer. Reads at most one record's payload into memory.
    pub fn fill(&mut self, segs: &Segments) -> Result<bool, BufferError> {
        if self.pending.is_some() {
            return Ok(true);
        }
        loop {
            let bound = segs.bound(self.seg);
            let len = match bound.len {
                Some(len) if !self.abandoned && self.offset < len => len,
                _ => match bound.next {
                    Some(next) => {
                        self.enter(segs, next);
                        continue;
                    }
                    None => return Ok(false),
                },
            };
            let path = segment_path(segs.dir(), self.seg);
            let file = match &mut self.file {
                Some(f) => f,
                None => match SegmentFile::open(&path) {
                    Ok(f) => self.file.insert(f),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        tracing::warn!(path = %path.display(), "buffer: segment vanished; skipping it");
                        self.abandon(segs);
                        continue;
                    }
                    Err(source) => return Err(BufferError::Read { path, source }),
                },
            };
            match file.read_frame(self.offset, len, self.expected) {
                Ok(frame) => {
                    let end = self.offset + frame.len();
                    self.offset = end;
                    self.expected = frame.seq + 1;
                    if frame.seq <= self.floor {
                        segs.skipped(frame.seq, self.seg, end);
                        continue;
                    }
                    self.floor = frame.seq;
                    self.pending = Some(Pending {
                        record: Record {
                            seq: frame.seq,
                            payload: frame.payload,
                        },
                        seg: self.seg,
                        end,
                    });
                    return Ok(true);
                }
                Err(ReadError::Fault(fault)) => {
                    tracing::warn!(
                        path = %path.display(),
                        offset = self.offset,
                        %fault,
                        "buffer: corrupt record; skipping the rest of the segment"
                    );
                    self.abandon(segs);
                }
                Err(ReadError::Io(source)) => {
                    // Reopened (and re-read from the same record) next time.
                    self.file = None;
                    return Err(BufferError::Read { path, source });
                }
            }
        }
    }

    /// Whether the next [`Cursor::fill`] reads at most `window` bytes, all
    /// of them appended by this process (see [`Segments::recent`]), or none.
    pub fn reads_recent(&self, segs: &Segments, window: u64) -> bool {
        self.pending.is_some() || (!self.abandoned && segs.recent(self.seg, self.offset, window))
    }

    /// Hands out the pending record, if any.
    pub fn take(&mut self, segs: &Segments) -> Option<Record> {
        let p = self.pending.take()?;
        segs.delivered(p.record.seq, p.seg, p.end);
        Some(p.record)
    }

    /// The next record, or `None` when caught up.
    #[cfg(test)]
    pub fn next(&mut self, segs: &Segments) -> Result<Option<Record>, BufferError> {
        Ok(if self.fill(segs)? {
            self.take(segs)
        } else {
            None
        })
    }

    /// Gives up on the rest of the current segment.
    fn abandon(&mut self, segs: &Segments) {
        segs.corrupt(self.seg);
        self.abandoned = true;
        self.file = None;
    }

    /// Moves to the start of segment `next`; records between here and there
    /// that were neither handed out nor acknowledged before are lost.
    fn enter(&mut self, segs: &Segments, next: u64) {
        let from = self.expected.max(self.floor.saturating_add(1));
        let lost = next.saturating_sub(from);
        if lost > 0 {
            segs.lost(lost);
            if worth_logging(lost) || self.abandoned {
                tracing::warn!(
                    from_seq = from,
                    lost,
                    "buffer: records lost to a corrupt or missing segment"
                );
            }
        }
        if lost > 0 || self.abandoned {
            segs.skipped(next - 1, next, 0);
        }
        debug_assert!(self.pending.is_none());
        *self = Cursor::new(next, self.floor);
    }
}
