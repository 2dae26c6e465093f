//! The record frame: how one payload is laid out in a segment file, and a
//! bounded reader of frames.
//!
//! A frame is `len u32 | crc32 u32 | seq u64 | payload` (little endian), where
//! `len` is the payload length and the CRC covers `seq` and the payload. The
//! reader trusts no length it has not checked against the bytes that are
//! really there, so a corrupt length can neither make it allocate more than
//! the segment holds nor read past the end the writer has published.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes of a frame before its payload.
pub(super) const HEADER_LEN: u64 = 16;

/// How much [`SegmentFile`] reads ahead for small frames.
const READ_AHEAD: usize = 64 * 1024;

/// Bytes a payload of `payload_len` bytes takes on disk.
pub(super) fn frame_len(payload_len: usize) -> u64 {
    HEADER_LEN + payload_len as u64
}

/// The CRC stored in a frame: over the sequence number, then the payload.
pub(super) fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// A payload copied into a frame buffer, waiting for its sequence number.
///
/// The payload CRC is summed before the writer lock is taken; the header,
/// which needs the sequence number, is filled in under it by combining the
/// CRC of the sequence number with the payload's.
pub(super) struct PreparedFrame {
    bytes: Vec<u8>,
    payload_crc: Option<crc32fast::Hasher>,
}

impl PreparedFrame {
    /// Copies `payload` behind room for the header.
    pub fn new(payload: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(HEADER_LEN as usize + payload.len());
        bytes.resize(HEADER_LEN as usize, 0);
        bytes.extend_from_slice(payload);
        PreparedFrame {
            bytes,
            payload_crc: None,
        }
    }

    /// Bytes the frame takes on disk.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Sums the payload CRC if not done yet (the costly part, done outside
    /// any lock).
    pub fn prepare(&mut self) {
        if self.payload_crc.is_none() {
            let mut h = crc32fast::Hasher::new();
            h.update(&self.bytes[HEADER_LEN as usize..]);
            self.payload_crc = Some(h);
        }
    }

    /// The whole frame with its header filled in for `seq`. The caller has
    /// checked that the payload length fits in a `u32`.
    pub fn seal(&mut self, seq: u64) -> &[u8] {
        self.prepare();
        let payload_len = self.bytes.len() - HEADER_LEN as usize;
        let mut h = crc32fast::Hasher::new();
        h.update(&seq.to_le_bytes());
        if let Some(p) = &self.payload_crc {
            h.combine(p);
        }
        let crc = h.finalize();
        self.bytes[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
        self.bytes[4..8].copy_from_slice(&crc.to_le_bytes());
        self.bytes[8..16].copy_from_slice(&seq.to_le_bytes());
        &self.bytes
    }
}

/// Why the bytes at an offset are not the frame expected there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fault {
    /// Fewer bytes than a header remain: a torn header.
    ShortHeader {
        /// Bytes left before the end.
        available: u64,
    },
    /// The length runs past the end: a torn payload, or a corrupt length.
    ShortPayload {
        /// The length the header claims.
        len: u32,
        /// Payload bytes left before the end.
        available: u64,
    },
    /// Not the next sequence number: garbage, zeroes, or a foreign file.
    Sequence {
        /// The sequence number due here.
        expected: u64,
        /// The one in the header.
        found: u64,
    },
    /// The checksum does not match: bit rot or a torn write.
    Checksum {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the bytes read.
        computed: u32,
    },
    /// The file ends before the length recorded for it.
    Vanished,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::ShortHeader { available } => {
                write!(
                    f,
                    "torn header: expected {HEADER_LEN} bytes, found {available}"
                )
            }
            Fault::ShortPayload { len, available } => write!(
                f,
                "length {len} runs past the end: expected at most {available} payload bytes"
            ),
            Fault::Sequence { expected, found } => {
                write!(f, "expected sequence {expected}, found {found}")
            }
            Fault::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch: header says {stored:#010x}, bytes sum to {computed:#010x}"
            ),
            Fault::Vanished => write!(f, "file is shorter than its recorded length"),
        }
    }
}

/// Why a frame could not be read.
#[derive(Debug)]
pub(super) enum ReadError {
    /// The bytes are not a valid frame.
    Fault(Fault),
    /// The file could not be read.
    Io(io::Error),
}

/// A frame read back.
#[derive(Debug)]
pub(super) struct Frame {
    /// Its sequence number.
    pub seq: u64,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// Bytes the frame takes on disk.
    pub fn len(&self) -> u64 {
        frame_len(self.payload.len())
    }
}

/// A segment file opened for reading, with a small read-ahead buffer.
///
/// Bytes below the end the writer has published never change (segments are
/// append-only, and a failed write is rewound only past that end), so what
/// the buffer holds stays valid as the segment grows. The buffer is never
/// filled past the end passed in, so it cannot hold half of a write in
/// progress.
pub(super) struct SegmentFile {
    file: File,
    buf: Vec<u8>,
    buf_start: u64,
}

impl SegmentFile {
    /// Opens `path` read-only.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(SegmentFile {
            file: File::open(path)?,
            buf: Vec::new(),
            buf_start: 0,
        })
    }

    /// Reads the frame at `offset`, which must carry `expected` as sequence
    /// number, trusting no byte at or past `end`.
    pub fn read_frame(&mut self, offset: u64, end: u64, expected: u64) -> Result<Frame, ReadError> {
        let available = end.saturating_sub(offset);
        if available < HEADER_LEN {
            return Err(ReadError::Fault(Fault::ShortHeader { available }));
        }
        let mut header = [0u8; HEADER_LEN as usize];
        self.read_exact_at(offset, &mut header, end)?;
        let [
            l0,
            l1,
            l2,
            l3,
            c0,
            c1,
            c2,
            c3,
            s0,
            s1,
            s2,
            s3,
            s4,
            s5,
            s6,
            s7,
        ] = header;
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        let stored = u32::from_le_bytes([c0, c1, c2, c3]);
        let seq = u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]);
        let available = available - HEADER_LEN;
        if u64::from(len) > available {
            return Err(ReadError::Fault(Fault::ShortPayload { len, available }));
        }
        // Checked before reading the payload: a zero-filled or foreign tail is
        // recognised without reading (and allocating) what its length claims.
        if seq != expected {
            return Err(ReadError::Fault(Fault::Sequence {
                expected,
                found: seq,
            }));
        }
        let mut payload = vec![0u8; len as usize];
        self.read_exact_at(offset + HEADER_LEN, &mut payload, end)?;
        let computed = checksum(seq, &payload);
        if computed != stored {
            return Err(ReadError::Fault(Fault::Checksum { stored, computed }));
        }
        Ok(Frame { seq, payload })
    }

    /// Fills `out` from `offset`; the caller has checked that it ends at or
    /// before `end`.
    fn read_exact_at(&mut self, offset: u64, out: &mut [u8], end: u64) -> Result<(), ReadError> {
        debug_assert!(offset + out.len() as u64 <= end);
        let mut done = 0;
        // Whatever the read-ahead already holds.
        let cached_end = self.buf_start + self.buf.len() as u64;
        if offset >= self.buf_start && offset < cached_end {
            let from = (offset - self.buf_start) as usize;
            let n = (self.buf.len() - from).min(out.len());
            out[..n].copy_from_slice(&self.buf[from..from + n]);
            done = n;
        }
        if done == out.len() {
            return Ok(());
        }
        let at = offset + done as u64;
        let rest = &mut out[done..];
        if rest.len() >= READ_AHEAD {
            // Large payloads go straight into their own buffer.
            return self.file.read_exact_at(rest, at).map_err(map_eof);
        }
        let fill = (end - at).min(READ_AHEAD as u64) as usize;
        self.buf.resize(fill, 0);
        self.buf_start = at;
        if let Err(e) = self.file.read_exact_at(&mut self.buf, at) {
            self.buf.clear();
            return Err(map_eof(e));
        }
        rest.copy_from_slice(&self.buf[..rest.len()]);
        Ok(())
    }
}

/// A file shorter than its recorded length is a content fault, not an I/O
/// error that a retry could cure.
fn map_eof(e: io::Error) -> ReadError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ReadError::Fault(Fault::Vanished)
    } else {
        ReadError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn write_frames(path: &Path, frames: &[(u64, &[u8])]) -> io::Result<u64> {
        let mut f = File::create(path)?;
        let mut len = 0;
        for (seq, payload) in frames {
            let mut p = PreparedFrame::new(payload);
            let bytes = p.seal(*seq);
            f.write_all(bytes)?;
            len += bytes.len() as u64;
        }
        Ok(len)
    }

    fn frame_at(
        f: &mut SegmentFile,
        offset: u64,
        end: u64,
        seq: u64,
    ) -> Result<Frame, Box<dyn std::error::Error>> {
        f.read_frame(offset, end, seq)
            .map_err(|e| format!("frame {seq} at {offset}: {e:?}").into())
    }

    #[test]
    fn sealed_header_checksum_matches_a_direct_sum() {
        let mut p = PreparedFrame::new(b"hello");
        let bytes = p.seal(42).to_vec();
        assert_eq!(&bytes[0..4], &5u32.to_le_bytes());
        assert_eq!(&bytes[4..8], &checksum(42, b"hello").to_le_bytes());
        assert_eq!(&bytes[8..16], &42u64.to_le_bytes());
        assert_eq!(&bytes[16..], b"hello");
    }

    #[test]
    fn frames_read_back_through_small_and_large_reads() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s");
        let big = vec![7u8; 3 * READ_AHEAD + 5];
        let small = b"small".to_vec();
        let end = write_frames(&path, &[(1, &small), (2, &big), (3, &small), (4, b"")])?;
        let mut f = SegmentFile::open(&path)?;
        let mut offset = 0;
        for (seq, want) in [(1, &small[..]), (2, &big[..]), (3, &small[..]), (4, b"")] {
            let frame = frame_at(&mut f, offset, end, seq)?;
            assert_eq!(frame.payload, want);
            offset += frame.len();
        }
        assert_eq!(offset, end);
        Ok(())
    }

    #[test]
    fn reads_never_trust_bytes_past_the_end() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s");
        let end = write_frames(&path, &[(1, b"abc"), (2, b"defgh")])?;
        let mut f = SegmentFile::open(&path)?;
        let first = frame_len(3);
        // The second frame is on disk, but the end says it is not published.
        assert!(matches!(
            f.read_frame(first, first + HEADER_LEN + 2, 2),
            Err(ReadError::Fault(Fault::ShortPayload {
                len: 5,
                available: 2
            }))
        ));
        assert!(matches!(
            f.read_frame(first, first + 3, 2),
            Err(ReadError::Fault(Fault::ShortHeader { available: 3 }))
        ));
        assert_eq!(frame_at(&mut f, first, end, 2)?.payload, b"defgh");
        Ok(())
    }

    #[test]
    fn faults_are_named() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s");
        let end = write_frames(&path, &[(5, b"payload")])?;
        let mut f = SegmentFile::open(&path)?;
        let err = f.read_frame(0, end, 6);
        assert!(matches!(
            err,
            Err(ReadError::Fault(Fault::Sequence {
                expected: 6,
                found: 5
            }))
        ));
        let mut bytes = std::fs::read(&path)?;
        bytes[HEADER_LEN as usize] ^= 1;
        std::fs::write(&path, &bytes)?;
        let mut f = SegmentFile::open(&path)?;
        match f.read_frame(0, end, 5) {
            Err(ReadError::Fault(fault @ Fault::Checksum { .. })) => {
                assert!(fault.to_string().contains("checksum mismatch"), "{fault}");
            }
            other => return Err(format!("expected a checksum fault, found {other:?}").into()),
        }
        // A file cut shorter than the length recorded for it.
        std::fs::write(&path, &bytes[..10])?;
        let mut f = SegmentFile::open(&path)?;
        assert!(matches!(
            f.read_frame(0, end, 5),
            Err(ReadError::Fault(Fault::Vanished))
        ));
        Ok(())
    }
}
