//! Merging of partial container lines into whole messages.
//!
//! Runtimes split a long message into pieces (CRI tag `P`, docker lines without
//! a trailing newline) and end it with a final piece. The pieces of stdout and
//! stderr of one container may interleave, so one pending buffer is kept per
//! stream. Memory is bounded by `max_bytes` per stream: past it, the rest of the
//! message is dropped (and the result says so) rather than buffered.
//!
//! A hand-written state machine; it must not know about files or timers (the
//! caller flushes on rotation or close).

use crate::container::{ContainerLine, Stream};
use crate::util::utf8_floor;

/// A whole message rebuilt from one or more pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// Timestamp of the first piece, in nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// The stream the pieces were written to.
    pub stream: Stream,
    /// The message: the pieces concatenated, at most `max_bytes` long.
    pub message: Vec<u8>,
    /// `true` when the message hit `max_bytes`: the pieces after the limit, up to
    /// and including the final one, were dropped, not emitted separately.
    pub truncated: bool,
    /// How many pieces (lines) made up the message, dropped ones included.
    pub parts: usize,
}

#[derive(Debug)]
struct Pending {
    timestamp_ns: i64,
    message: Vec<u8>,
    truncated: bool,
    parts: usize,
    /// Order in which pending messages were started, for [`PartialMerger::flush`].
    seq: u64,
}

/// Merges partial lines (CRI `P`, docker without newline) of ONE file into
/// whole messages.
#[derive(Debug)]
pub struct PartialMerger {
    max_bytes: usize,
    /// One slot per [`Stream`]: stdout, stderr, unknown.
    pending: [Option<Pending>; 3],
    next_seq: u64,
}

fn slot(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
        Stream::Unknown => 2,
    }
}

const STREAMS: [Stream; 3] = [Stream::Stdout, Stream::Stderr, Stream::Unknown];

impl PartialMerger {
    /// A merger that keeps at most `max_bytes` of any one message.
    pub fn new(max_bytes: usize) -> Self {
        PartialMerger {
            max_bytes,
            pending: [None, None, None],
            next_seq: 0,
        }
    }

    /// Adds one line. Returns the whole message when `line` is a final piece
    /// (a final line with nothing pending is returned as it is, cut to
    /// `max_bytes`).
    pub fn push(&mut self, line: ContainerLine<'_>) -> Option<Merged> {
        let stream = line.stream;
        let index = slot(stream);
        let seq = self.next_seq;
        let entry = self.pending.get_mut(index)?;
        let pending = entry.get_or_insert_with(|| Pending {
            timestamp_ns: line.timestamp_ns,
            message: Vec::new(),
            truncated: false,
            parts: 0,
            seq,
        });
        if pending.parts == 0 {
            self.next_seq += 1;
        }
        pending.parts += 1;
        if !pending.truncated {
            let room = self.max_bytes.saturating_sub(pending.message.len());
            if line.message.len() <= room {
                pending.message.extend_from_slice(&line.message);
            } else {
                // Cut the message, not the piece: runtimes split at a byte
                // count, so the piece may finish a UTF-8 sequence the kept
                // bytes began. The byte past the limit shows where it starts.
                pending
                    .message
                    .extend_from_slice(line.message.get(..=room).unwrap_or_default());
                let keep = utf8_floor(&pending.message, self.max_bytes);
                pending.message.truncate(keep);
                pending.truncated = true;
            }
        }
        if line.partial {
            return None;
        }
        entry.take().map(|p| p.into_merged(stream))
    }

    /// Emits one pending message (the oldest), for when the file was closed or
    /// rotated in the middle of a message. There can be one per stream: call
    /// until it returns `None`, or use [`PartialMerger::flush_all`].
    pub fn flush(&mut self) -> Option<Merged> {
        let index = (0..self.pending.len())
            .filter_map(|i| self.pending.get(i)?.as_ref().map(|p| (p.seq, i)))
            .min()?
            .1;
        let pending = self.pending.get_mut(index)?.take()?;
        Some(pending.into_merged(*STREAMS.get(index)?))
    }

    /// Emits every pending message, oldest first.
    pub fn flush_all(&mut self) -> Vec<Merged> {
        std::iter::from_fn(|| self.flush()).collect()
    }

    /// Whether a message is waiting for its final piece.
    pub fn is_pending(&self) -> bool {
        self.pending.iter().any(Option::is_some)
    }
}

impl Pending {
    fn into_merged(self, stream: Stream) -> Merged {
        Merged {
            timestamp_ns: self.timestamp_ns,
            stream,
            message: self.message,
            truncated: self.truncated,
            parts: self.parts,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::container::parse_cri;
    use proptest::prelude::*;

    fn line(ts: i64, stream: Stream, partial: bool, msg: &str) -> ContainerLine<'_> {
        ContainerLine {
            timestamp_ns: ts,
            stream,
            partial,
            message: Cow::Borrowed(msg.as_bytes()),
        }
    }

    #[test]
    fn final_line_alone_passes_through() {
        let mut m = PartialMerger::new(100);
        let out = m.push(line(5, Stream::Stdout, false, "hello")).unwrap();
        assert_eq!(
            out,
            Merged {
                timestamp_ns: 5,
                stream: Stream::Stdout,
                message: b"hello".to_vec(),
                truncated: false,
                parts: 1
            }
        );
        assert!(!m.is_pending());
    }

    #[test]
    fn cri_partials_are_joined_with_the_first_timestamp() {
        let mut m = PartialMerger::new(1 << 20);
        let lines = [
            "2024-01-15T10:20:30.000000001Z stdout P {\"msg\":\"a long",
            "2024-01-15T10:20:30.000000002Z stdout P  json ",
            "2024-01-15T10:20:30.000000003Z stdout F body\"}",
        ];
        let mut out = Vec::new();
        for l in lines {
            out.extend(m.push(parse_cri(l.as_bytes()).unwrap()));
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].message, b"{\"msg\":\"a long json body\"}");
        assert_eq!(out[0].timestamp_ns, 1_705_314_030_000_000_001);
        assert_eq!(out[0].parts, 3);
    }

    #[test]
    fn interleaved_stdout_and_stderr_partials_stay_apart() {
        let mut m = PartialMerger::new(100);
        assert_eq!(m.push(line(1, Stream::Stdout, true, "out-a ")), None);
        assert_eq!(m.push(line(2, Stream::Stderr, true, "err-a ")), None);
        let out = m.push(line(3, Stream::Stdout, false, "out-b")).unwrap();
        assert_eq!(
            (out.message.as_slice(), out.stream, out.timestamp_ns),
            (&b"out-a out-b"[..], Stream::Stdout, 1)
        );
        assert!(m.is_pending());
        let err = m.push(line(4, Stream::Stderr, false, "err-b")).unwrap();
        assert_eq!(
            (err.message.as_slice(), err.stream, err.timestamp_ns),
            (&b"err-a err-b"[..], Stream::Stderr, 2)
        );
        assert!(!m.is_pending());
    }

    #[test]
    fn message_past_max_bytes_is_cut_and_the_rest_dropped_up_to_the_final_piece() {
        let mut m = PartialMerger::new(8);
        assert_eq!(m.push(line(1, Stream::Stdout, true, "12345")), None);
        assert_eq!(m.push(line(2, Stream::Stdout, true, "67890")), None);
        assert_eq!(m.push(line(3, Stream::Stdout, true, "abc")), None);
        let out = m.push(line(4, Stream::Stdout, false, "end")).unwrap();
        assert_eq!(out.message, b"12345678");
        assert!(out.truncated);
        assert_eq!(out.parts, 4);
        // The next message starts clean.
        let next = m.push(line(5, Stream::Stdout, false, "next")).unwrap();
        assert_eq!(
            (next.message.as_slice(), next.truncated, next.parts),
            (&b"next"[..], false, 1)
        );
    }

    #[test]
    fn cut_does_not_split_a_utf8_char() {
        let mut m = PartialMerger::new(4);
        let out = m.push(line(1, Stream::Stdout, false, "abc€")).unwrap();
        assert_eq!(out.message, b"abc");
        assert!(out.truncated);
    }

    #[test]
    fn cut_does_not_split_a_utf8_char_the_runtime_split_across_pieces() {
        // containerd splits long lines at 16 KiB, inside a character too; with
        // max_bytes a multiple of that, the cut falls right after such a piece.
        let euro = "€".as_bytes();
        let first = [b"ab", &euro[..2]].concat();
        let rest = [&euro[2..], b"c"].concat();
        fn piece(partial: bool, message: &[u8]) -> ContainerLine<'_> {
            ContainerLine {
                timestamp_ns: 1,
                stream: Stream::Stdout,
                partial,
                message: Cow::Borrowed(message),
            }
        }
        let mut m = PartialMerger::new(4);
        assert_eq!(m.push(piece(true, &first)), None);
        let out = m.push(piece(false, &rest)).unwrap();
        assert_eq!((out.message.as_slice(), out.truncated), (&b"ab"[..], true));
    }

    #[test]
    fn flush_emits_pending_messages_oldest_first() {
        let mut m = PartialMerger::new(100);
        assert_eq!(m.flush(), None);
        m.push(line(1, Stream::Stderr, true, "err"));
        m.push(line(2, Stream::Stdout, true, "out"));
        let all = m.flush_all();
        assert_eq!(
            all.iter().map(|x| x.stream).collect::<Vec<_>>(),
            [Stream::Stderr, Stream::Stdout]
        );
        assert_eq!(all[0].message, b"err");
        assert!(!m.is_pending());
    }

    #[test]
    fn zero_max_bytes_keeps_nothing_but_still_counts() {
        let mut m = PartialMerger::new(0);
        let out = m.push(line(1, Stream::Unknown, false, "x")).unwrap();
        assert_eq!((out.message.len(), out.truncated, out.parts), (0, true, 1));
    }

    proptest! {
        #[test]
        fn merged_size_is_bounded_and_final_pieces_always_emit(
            max in 0usize..64,
            pieces in proptest::collection::vec((0u8..3, any::<bool>(), "[a-z€]{0,20}"), 0..40),
        ) {
            let mut m = PartialMerger::new(max);
            let mut finals = 0;
            let mut emitted = 0;
            for (s, partial, text) in &pieces {
                let stream = STREAMS[usize::from(*s)];
                finals += usize::from(!partial);
                if let Some(out) = m.push(line(0, stream, *partial, text)) {
                    prop_assert!(out.message.len() <= max);
                    prop_assert!(std::str::from_utf8(&out.message).is_ok());
                    emitted += 1;
                }
            }
            prop_assert_eq!(emitted, finals);
            let flushed = m.flush_all().len();
            prop_assert!(flushed <= 3);
            prop_assert!(!m.is_pending());
        }
    }
}
