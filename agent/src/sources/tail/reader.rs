//! Reading one file as physical lines, and telling files apart by content.
//!
//! The reader splits on `'\n'`, cuts over-long lines at `max_line_bytes`
//! (skipping the rest up to the newline, so memory stays bounded by one line),
//! and holds back an incomplete last line until its newline arrives. It reads
//! with positioned reads (`pread`), so a reset after truncation is a matter of
//! changing an offset. It knows nothing of container formats or records.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use xxhash_rust::xxh3::xxh3_64;

/// Bytes of a file's head that can contribute to its fingerprint.
pub(super) const FINGERPRINT_MAX: usize = 256;
/// A complete first line at least this long identifies a file by itself.
const FINGERPRINT_MIN_LINE: usize = 16;
/// With a shorter first line, the file is identified by this many bytes.
const FINGERPRINT_SHORT: usize = 64;
/// An incomplete-line buffer larger than this is freed once its line is out.
const KEEP_CAPACITY: usize = 16 * 1024;
/// Bytes read per `pread` call.
const READ_BLOCK: usize = 64 * 1024;

/// The identity of a file's content, from its first bytes.
///
/// Runtimes reuse inodes, so a device and inode never decide identity alone;
/// the tailer binds this fingerprint to them (see `tailer::identity`). The
/// fingerprint is xxh3-64 of the first line when it is complete and at
/// least 16 bytes long (at most 256 bytes of it); of the first 64 bytes when
/// the first line is shorter; of the first 256 bytes when no newline appears in
/// them. `None` means the file is too short to tell yet: it is not read until it
/// grows, because a position without a stable identity could not be resumed.
pub(super) fn fingerprint(head: &[u8]) -> Option<String> {
    let head = head.get(..FINGERPRINT_MAX).unwrap_or(head);
    let cut = match memchr::memchr(b'\n', head) {
        Some(i) if i + 1 >= FINGERPRINT_MIN_LINE => i + 1,
        Some(_) if head.len() >= FINGERPRINT_SHORT => FINGERPRINT_SHORT,
        None if head.len() >= FINGERPRINT_MAX => FINGERPRINT_MAX,
        _ => return None,
    };
    let bytes = head.get(..cut)?;
    Some(format!("{:016x}", xxh3_64(bytes)))
}

/// Reads the fingerprint of an open file from its first bytes.
pub(super) fn fingerprint_file(file: &File) -> io::Result<Option<String>> {
    let mut head = [0u8; FINGERPRINT_MAX];
    let mut filled = 0;
    while filled < head.len() {
        let Some(rest) = head.get_mut(filled..) else {
            break;
        };
        let n = file.read_at(rest, filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(fingerprint(head.get(..filled).unwrap_or(&[])))
}

/// The offset just past the last `'\n'` before `size` (0 if none within the
/// last 64 KiB): where `read_from: end` starts so it never begins mid-line.
pub(super) fn last_line_boundary(file: &File, size: u64) -> io::Result<u64> {
    let start = size.saturating_sub(READ_BLOCK as u64);
    let mut buf = vec![0u8; (size - start) as usize];
    let mut filled = 0;
    while filled < buf.len() {
        let Some(rest) = buf.get_mut(filled..) else {
            break;
        };
        let n = file.read_at(rest, start + filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    let slice = buf.get(..filled).unwrap_or(&[]);
    Ok(match memchr::memrchr(b'\n', slice) {
        Some(i) => start + i as u64 + 1,
        None if start == 0 => 0,
        None => size,
    })
}

/// One physical line, without its `'\n'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RawLine<'a> {
    /// The bytes, at most `max_line_bytes` of them.
    pub bytes: &'a [u8],
    /// Offset of the first byte of the line.
    pub start: u64,
    /// Offset just past the line's `'\n'` (or past its last byte at close).
    pub end: u64,
    /// The line was longer than `max_line_bytes` and cut.
    pub truncated: bool,
}

/// What one call to [`LineReader::read`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct ReadOutcome {
    /// Bytes read from the file.
    pub bytes: usize,
    /// The read reached the end of the file.
    pub eof: bool,
}

/// Splits a file into lines from a given offset.
#[derive(Debug)]
pub(super) struct LineReader {
    /// Offset of the next byte to read from the file.
    read_offset: u64,
    /// Bytes of the current incomplete line (at most `max_line` of them).
    partial: Vec<u8>,
    /// Offset of the first byte of the current incomplete line.
    line_start: u64,
    /// The current line is over-long: its kept prefix is in `partial` and the
    /// rest is skipped up to the next newline.
    skipping: bool,
    max_line: usize,
}

impl LineReader {
    /// A reader that starts at `offset` and cuts lines at `max_line` bytes.
    pub fn new(offset: u64, max_line: usize) -> Self {
        LineReader {
            read_offset: offset,
            partial: Vec::new(),
            line_start: offset,
            skipping: false,
            max_line: max_line.max(1),
        }
    }

    /// Offset of the next byte to read.
    pub fn read_offset(&self) -> u64 {
        self.read_offset
    }

    /// Offset just past the last complete line handed out.
    pub fn consumed(&self) -> u64 {
        self.line_start
    }

    /// Restarts at offset 0 (after copytruncate), dropping any incomplete line.
    pub fn reset(&mut self) {
        *self = LineReader::new(0, self.max_line);
    }

    /// Reads up to about `budget` bytes, handing every complete line to
    /// `on_line`. `scratch` is a read buffer shared by all readers (so that
    /// memory does not grow with the number of open files).
    pub fn read(
        &mut self,
        file: &File,
        budget: usize,
        scratch: &mut Vec<u8>,
        on_line: &mut dyn FnMut(RawLine<'_>),
    ) -> io::Result<ReadOutcome> {
        let mut outcome = ReadOutcome::default();
        scratch.resize(READ_BLOCK, 0);
        loop {
            if outcome.bytes >= budget {
                return Ok(outcome);
            }
            let n = match file.read_at(scratch, self.read_offset) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                outcome.eof = true;
                return Ok(outcome);
            }
            let data = scratch.get(..n).unwrap_or(&[]);
            let base = self.read_offset;
            self.read_offset += n as u64;
            outcome.bytes += n;
            self.split(data, base, on_line);
        }
    }

    fn split(&mut self, data: &[u8], base: u64, on_line: &mut dyn FnMut(RawLine<'_>)) {
        let mut pos = 0;
        while let Some(rest) = data.get(pos..) {
            if rest.is_empty() {
                break;
            }
            let Some(i) = memchr::memchr(b'\n', rest) else {
                self.keep(rest);
                break;
            };
            let end = base + (pos + i + 1) as u64;
            let piece = rest.get(..i).unwrap_or(&[]);
            if self.partial.is_empty() && !self.skipping {
                let truncated = piece.len() > self.max_line;
                let bytes = piece.get(..self.max_line).unwrap_or(piece);
                on_line(RawLine {
                    bytes,
                    start: self.line_start,
                    end,
                    truncated,
                });
            } else {
                self.keep(piece);
                let line = std::mem::take(&mut self.partial);
                on_line(RawLine {
                    bytes: &line,
                    start: self.line_start,
                    end,
                    truncated: self.skipping,
                });
                // Keep a small buffer for the next incomplete line, not the
                // largest one ever seen: there is one reader per open file.
                if line.capacity() <= KEEP_CAPACITY {
                    self.partial = line;
                    self.partial.clear();
                }
                self.skipping = false;
            }
            self.line_start = end;
            pos += i + 1;
        }
    }

    /// Appends to the incomplete line, keeping at most `max_line` bytes.
    fn keep(&mut self, bytes: &[u8]) {
        if self.skipping {
            return;
        }
        let room = self.max_line - self.partial.len().min(self.max_line);
        if bytes.len() > room {
            self.partial
                .extend_from_slice(bytes.get(..room).unwrap_or(&[]));
            self.skipping = true;
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }

    /// Hands out the incomplete last line, if any (when a file is closed).
    pub fn finish(&mut self, on_line: &mut dyn FnMut(RawLine<'_>)) {
        if self.partial.is_empty() && !self.skipping {
            return;
        }
        let line = std::mem::take(&mut self.partial);
        on_line(RawLine {
            bytes: &line,
            start: self.line_start,
            end: self.read_offset,
            truncated: self.skipping,
        });
        self.skipping = false;
        self.line_start = self.read_offset;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Debug, PartialEq)]
    struct Line {
        text: String,
        start: u64,
        end: u64,
        truncated: bool,
    }

    fn read_all(reader: &mut LineReader, file: &File, budget: usize) -> Vec<Line> {
        let mut lines = Vec::new();
        let mut on_line = |l: RawLine<'_>| {
            lines.push(Line {
                text: String::from_utf8_lossy(l.bytes).into_owned(),
                start: l.start,
                end: l.end,
                truncated: l.truncated,
            })
        };
        let mut scratch = Vec::new();
        while let Ok(o) = reader.read(file, budget, &mut scratch, &mut on_line) {
            if o.eof {
                break;
            }
        }
        lines
    }

    #[test]
    fn incomplete_last_line_waits_for_its_newline() -> Result<(), Box<dyn std::error::Error>> {
        let mut tmp = tempfile::NamedTempFile::new()?;
        tmp.write_all(b"one\ntw")?;
        let file = File::open(tmp.path())?;
        let mut r = LineReader::new(0, 100);
        let lines = read_all(&mut r, &file, 1 << 20);
        assert_eq!(lines.len(), 1);
        assert_eq!((lines[0].start, lines[0].end), (0, 4));
        tmp.write_all(b"o\n")?;
        let lines = read_all(&mut r, &file, 1 << 20);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text, "two");
        assert_eq!((lines[0].start, lines[0].end), (4, 8));
        Ok(())
    }

    #[test]
    fn long_line_is_cut_and_the_rest_of_the_file_is_intact()
    -> Result<(), Box<dyn std::error::Error>> {
        let mut tmp = tempfile::NamedTempFile::new()?;
        let long = "x".repeat(200_000);
        write!(tmp, "a\n{long}\nb\n")?;
        let file = File::open(tmp.path())?;
        let mut r = LineReader::new(0, 1000);
        let lines = read_all(&mut r, &file, 1 << 20);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1].text.len(), 1000);
        assert!(lines[1].truncated);
        assert_eq!(lines[1].end, 2 + 200_001);
        assert_eq!(lines[2].text, "b");
        assert!(!lines[2].truncated);
        Ok(())
    }

    #[test]
    fn finish_hands_out_the_incomplete_line() -> Result<(), Box<dyn std::error::Error>> {
        let mut tmp = tempfile::NamedTempFile::new()?;
        tmp.write_all(b"a\nlast")?;
        let file = File::open(tmp.path())?;
        let mut r = LineReader::new(0, 100);
        let _ = read_all(&mut r, &file, 1 << 20);
        let mut got = Vec::new();
        r.finish(&mut |l| got.push((String::from_utf8_lossy(l.bytes).into_owned(), l.end)));
        assert_eq!(got, vec![("last".to_owned(), 6)]);
        Ok(())
    }

    #[test]
    fn fingerprint_waits_for_enough_bytes() {
        assert_eq!(fingerprint(b"short\n"), None);
        assert_eq!(fingerprint(b"no newline yet"), None);
        let a = fingerprint(b"2024-01-01 first line\nsecond");
        let b = fingerprint(b"2024-01-01 first line\nsomething else");
        assert!(a.is_some());
        assert_eq!(a, b, "only the first line counts");
        assert_ne!(a, fingerprint(b"2024-01-02 first line\n"));
        let short_first = [b"x\n".as_slice(), &[b'y'; 70]].concat();
        assert!(fingerprint(&short_first).is_some());
    }

    #[test]
    fn last_line_boundary_never_starts_mid_line() -> Result<(), Box<dyn std::error::Error>> {
        let mut tmp = tempfile::NamedTempFile::new()?;
        tmp.write_all(b"one\ntwo\nthr")?;
        let file = File::open(tmp.path())?;
        assert_eq!(last_line_boundary(&file, 11)?, 8);
        assert_eq!(last_line_boundary(&file, 8)?, 8);
        Ok(())
    }
}
