//! Scenario tests of the synchronous core: round trips, restarts, recovery
//! from every kind of damage, and a property test against a model.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::ackfile;
use super::cursor::Cursor;
use super::frame::frame_len;
use super::segments::{AppendOutcome, Segments, segment_path};
use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;
/// Records as (sequence number, payload).
type Records = Vec<(u64, Vec<u8>)>;

/// Small segments, so that a few records span several.
fn small(dir: &Path) -> BufferOptions {
    BufferOptions {
        segment_bytes: 1024,
        ..BufferOptions::new(dir)
    }
}

/// A payload that differs by sequence number and length.
fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (seq as usize).wrapping_mul(31).wrapping_add(k) as u8)
        .collect()
}

fn append(segs: &Segments, payload: &[u8]) -> Result<u64, Box<dyn std::error::Error>> {
    match segs.append(payload)? {
        AppendOutcome::Written(seq) => Ok(seq),
        AppendOutcome::Full => Err("buffer unexpectedly full".into()),
    }
}

/// Appends `n` records with lengths cycling through 0..200; returns them.
fn fill(segs: &Segments, n: u64) -> Result<Records, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    for i in 0..n {
        let next = segs.stats().last_seq + 1;
        let p = payload(next, (i as usize * 37) % 200);
        let seq = append(segs, &p)?;
        assert_eq!(seq, next);
        out.push((seq, p));
    }
    Ok(out)
}

fn read_all(segs: &Segments, cursor: &mut Cursor) -> Result<Records, BufferError> {
    let mut out = Vec::new();
    while let Some(r) = cursor.next(segs)? {
        out.push((r.seq, r.payload));
    }
    Ok(out)
}

/// The segment files of `dir`, oldest first.
fn segment_files(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    out.sort();
    Ok(out)
}

fn last_segment(dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    Ok(segment_files(dir)?.pop().ok_or("no segment file")?)
}

fn first_seq_of(path: &Path) -> Result<u64, Box<dyn std::error::Error>> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or("bad name")?;
    Ok(stem.parse()?)
}

#[test]
fn records_round_trip_across_many_segments() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (segs, mut cursor, report) = Segments::open(&small(dir.path()))?;
    assert_eq!(report.next_seq, 1);
    assert_eq!(report.ack_file, AckFileState::Missing);
    let written = fill(&segs, 300)?;
    assert!(segment_files(dir.path())?.len() > 10);
    let stats = segs.stats();
    assert_eq!(stats.unacked_records, 300);
    let bytes: u64 = written.iter().map(|(_, p)| frame_len(p.len())).sum();
    assert_eq!(stats.unacked_bytes, bytes);
    assert_eq!(stats.disk_bytes, bytes);
    assert_eq!(read_all(&segs, &mut cursor)?, written);
    assert!(segs.ack(300));
    segs.sync()?;
    let stats = segs.stats();
    assert_eq!((stats.unacked_records, stats.unacked_bytes), (0, 0));
    assert_eq!(stats.durable_seq, 300);
    // Only the newest segment stays: its name keeps sequence numbers going.
    assert_eq!(segment_files(dir.path())?.len(), 1);
    assert_eq!(stats.segments, 1);
    Ok(())
}

#[test]
fn a_segment_is_removed_only_once_all_its_records_are_acked() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (segs, mut cursor, _) = Segments::open(&small(dir.path()))?;
    fill(&segs, 60)?;
    let files = segment_files(dir.path())?;
    let second = first_seq_of(&files[1])?;
    read_all(&segs, &mut cursor)?;
    // Up to the last record of the first segment but one: nothing removed.
    segs.ack(second - 2);
    segs.sync()?;
    assert_eq!(segment_files(dir.path())?, files);
    segs.ack(second - 1);
    segs.sync()?;
    assert_eq!(segment_files(dir.path())?, files[1..]);
    Ok(())
}

#[test]
fn restart_resumes_after_the_persisted_ack() -> TestResult {
    let dir = tempfile::tempdir()?;
    let written = {
        let (segs, mut cursor, _) = Segments::open(&small(dir.path()))?;
        let written = fill(&segs, 50)?;
        read_all(&segs, &mut cursor)?;
        segs.ack(30);
        segs.sync()?;
        // Not persisted: re-delivered after the restart.
        segs.ack(40);
        written
    };
    let (segs, mut cursor, report) = Segments::open(&small(dir.path()))?;
    assert_eq!(report.ack_file, AckFileState::Loaded(30));
    assert_eq!(report.resume_after, 30);
    assert_eq!(report.next_seq, 51);
    assert_eq!(report.truncated_bytes, 0);
    let unacked: u64 = written[30..].iter().map(|(_, p)| frame_len(p.len())).sum();
    assert_eq!(segs.stats().unacked_bytes, unacked);
    assert_eq!(read_all(&segs, &mut cursor)?, written[30..]);
    assert_eq!(append(&segs, b"after")?, 51);
    Ok(())
}

#[test]
fn sequence_numbers_survive_a_restart_with_everything_acked() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let (segs, mut cursor, _) = Segments::open(&small(dir.path()))?;
        fill(&segs, 40)?;
        read_all(&segs, &mut cursor)?;
        segs.ack(40);
        segs.sync()?;
    }
    let (segs, mut cursor, report) = Segments::open(&small(dir.path()))?;
    assert_eq!(report.resume_after, 40);
    assert!(cursor.next(&segs)?.is_none());
    assert_eq!(segs.stats().unacked_bytes, 0);
    assert_eq!(append(&segs, b"x")?, 41);
    Ok(())
}

#[test]
fn a_record_is_durable_only_after_a_sync() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (segs, _cursor, _) = Segments::open(&small(dir.path()))?;
    assert_eq!(segs.durable(), 0);
    fill(&segs, 30)?;
    assert_eq!(segs.durable(), 0);
    assert!(segs.needs_sync());
    segs.sync()?;
    assert_eq!(segs.durable(), 30);
    assert!(!segs.needs_sync());
    Ok(())
}

#[test]
fn a_records_only_sync_makes_records_durable_and_leaves_the_ack_to_a_full_pass() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (segs, mut cursor, _) = Segments::open(&small(dir.path()))?;
    fill(&segs, 60)?;
    read_all(&segs, &mut cursor)?;
    segs.ack(60);
    fill(&segs, 5)?;
    let files = segment_files(dir.path())?;
    segs.sync_records()?;
    assert_eq!(segs.durable(), 65);
    // Neither the ack file nor the removal of acknowledged segments yet.
    assert_eq!(ackfile::load(dir.path()), AckFileState::Missing);
    assert_eq!(segment_files(dir.path())?, files);
    assert!(segs.needs_sync());
    segs.sync()?;
    assert_eq!(ackfile::load(dir.path()), AckFileState::Loaded(60));
    assert!(segment_files(dir.path())?.len() < files.len());
    assert!(!segs.needs_sync());
    Ok(())
}

#[test]
fn only_bytes_appended_since_open_and_within_the_window_count_as_recent() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let (segs, _cursor, _) = Segments::open(&small(dir.path()))?;
        fill(&segs, 3)?;
        segs.sync()?;
    }
    // Written before this open: maybe not in the page cache any more.
    let (segs, mut cursor, _) = Segments::open(&small(dir.path()))?;
    // Opening read the first record ahead; the rest is on disk only.
    assert_eq!(cursor.next(&segs)?.map(|r| r.seq), Some(1));
    assert!(!cursor.reads_recent(&segs, 1 << 20));
    read_all(&segs, &mut cursor)?;
    // Caught up: nothing to read is recent.
    assert!(cursor.reads_recent(&segs, 1 << 20));
    let written = fill(&segs, 30)?;
    let bytes: u64 = written.iter().map(|(_, p)| frame_len(p.len())).sum();
    // Across several segments, and only within the window.
    assert!(segment_files(dir.path())?.len() > 2);
    assert!(cursor.reads_recent(&segs, bytes));
    assert!(!cursor.reads_recent(&segs, bytes - 1));
    assert_eq!(read_all(&segs, &mut cursor)?, written);
    Ok(())
}

#[test]
fn a_full_buffer_refuses_until_an_ack_frees_space() -> TestResult {
    let dir = tempfile::tempdir()?;
    let opts = BufferOptions {
        max_size: 3 * frame_len(100),
        ..small(dir.path())
    };
    let (segs, mut cursor, _) = Segments::open(&opts)?;
    for _ in 0..3 {
        append(&segs, &[1; 100])?;
    }
    assert_eq!(segs.append(&[1; 100])?, AppendOutcome::Full);
    // A smaller record does not fit either: the limit is on bytes.
    assert_eq!(segs.append(&[])?, AppendOutcome::Full);
    let first = cursor.next(&segs)?.ok_or("expected a record")?;
    assert_eq!(segs.append(&[1; 100])?, AppendOutcome::Full);
    segs.ack(first.seq);
    assert_eq!(segs.append(&[1; 100])?, AppendOutcome::Written(4));
    match segs.append(&[0; 333]) {
        Err(BufferError::TooLarge {
            size: 349,
            max: 348,
        }) => {}
        other => return Err(format!("expected too large, found {other:?}").into()),
    }
    Ok(())
}

/// Writes the segment back with `bytes` and reopens; checks that the earlier
/// records all survive and returns the report.
fn reopen_with_last_segment(
    dir: &Path,
    last: &Path,
    bytes: &[u8],
    earlier: &[(u64, Vec<u8>)],
) -> Result<(Segments, RecoveryReport), Box<dyn std::error::Error>> {
    fs::write(last, bytes)?;
    let (segs, mut cursor, report) = Segments::open(&small(dir))?;
    let got = read_all(&segs, &mut cursor)?;
    assert_eq!(got, earlier, "earlier records after {report:?}");
    Ok((segs, report))
}

#[test]
fn a_torn_tail_is_cut_at_every_offset_of_the_last_record() -> TestResult {
    let dir = tempfile::tempdir()?;
    let written = {
        let (segs, _, _) = Segments::open(&small(dir.path()))?;
        fill(&segs, 25)?
    };
    let last = last_segment(dir.path())?;
    let whole = fs::read(&last)?;
    let (last_seq, last_payload) = written.last().ok_or("no records")?;
    let flen = frame_len(last_payload.len()) as usize;
    assert!(
        whole.len() > flen,
        "the last record is not alone in its segment"
    );
    let base = whole.len() - flen;
    for keep in 0..flen {
        let (segs, report) =
            reopen_with_last_segment(dir.path(), &last, &whole[..base + keep], &written[..24])?;
        assert_eq!(report.truncated_bytes, keep as u64, "keeping {keep} bytes");
        assert_eq!(report.truncation.is_some(), keep > 0);
        assert_eq!(segs.stats().truncated_bytes, keep as u64);
        assert_eq!(fs::metadata(&last)?.len(), base as u64);
        // The lost record was never durable: its number is used again.
        assert_eq!(report.next_seq, *last_seq);
    }
    Ok(())
}

#[test]
fn a_flipped_bit_anywhere_in_the_last_record_is_detected() -> TestResult {
    let dir = tempfile::tempdir()?;
    let written = {
        let (segs, _, _) = Segments::open(&small(dir.path()))?;
        fill(&segs, 25)?
    };
    let last = last_segment(dir.path())?;
    let whole = fs::read(&last)?;
    let flen = frame_len(written[24].1.len()) as usize;
    let base = whole.len() - flen;
    for i in base..whole.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = whole.clone();
            bad[i] ^= bit;
            let (_, report) = reopen_with_last_segment(dir.path(), &last, &bad, &written[..24])?;
            assert_eq!(report.truncated_bytes, flen as u64, "flip {bit:#x} at {i}");
        }
    }
    Ok(())
}

#[test]
fn a_zero_filled_tail_after_power_loss_is_cut() -> TestResult {
    let dir = tempfile::tempdir()?;
    let written = {
        let (segs, _, _) = Segments::open(&small(dir.path()))?;
        fill(&segs, 25)?
    };
    let last = last_segment(dir.path())?;
    let mut bytes = fs::read(&last)?;
    bytes.extend_from_slice(&[0u8; 4096]);
    let (segs, report) = reopen_with_last_segment(dir.path(), &last, &bytes, &written)?;
    assert_eq!(report.truncated_bytes, 4096);
    let why = report.truncation.ok_or("expected a reason")?;
    assert!(why.contains("expected sequence 26, found 0"), "{why}");
    assert_eq!(append(&segs, b"next")?, 26);
    Ok(())
}

#[test]
fn garbage_after_the_last_record_is_cut() -> TestResult {
    let dir = tempfile::tempdir()?;
    let written = {
        let (segs, _, _) = Segments::open(&small(dir.path()))?;
        fill(&segs, 25)?
    };
    let last = last_segment(dir.path())?;
    let mut bytes = fs::read(&last)?;
    // A length field claiming 4 GiB, then noise.
    bytes.extend_from_slice(&[0xff; 4]);
    bytes.extend((0..300u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let (_, report) = reopen_with_last_segment(dir.path(), &last, &bytes, &written)?;
    assert_eq!(report.truncated_bytes, 304);
    Ok(())
}

#[test]
fn a_corrupt_record_in_an_older_segment_skips_the_rest_of_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let written = {
        let (segs, _, _) = Segments::open(&small(dir.path()))?;
        fill(&segs, 60)?
    };
    let files = segment_files(dir.path())?;
    let second = first_seq_of(&files[1])?;
    assert!(second > 4);
    // Flip a payload byte of the third record of the first segment.
    let mut bytes = fs::read(&files[0])?;
    let offset: u64 = written[..2].iter().map(|(_, p)| frame_len(p.len())).sum();
    assert!(!written[2].1.is_empty());
    bytes[offset as usize + 16] ^= 0x40;
    fs::write(&files[0], &bytes)?;

    let (segs, mut cursor, report) = Segments::open(&small(dir.path()))?;
    assert_eq!(report.truncated_bytes, 0);
    let got = read_all(&segs, &mut cursor)?;
    let mut expected = written[..2].to_vec();
    expected.extend(written.iter().filter(|(s, _)| *s >= second).cloned());
    assert_eq!(got, expected);
    let stats = segs.stats();
    assert_eq!(stats.corrupt_segments, 1);
    assert_eq!(stats.lost_records, second - 3);
    // Acknowledging past it removes the damaged segment.
    segs.ack(second);
    segs.sync()?;
    assert!(!files[0].exists());
    Ok(())
}

#[test]
fn corruption_found_while_reading_the_active_segment_moves_the_writer_on() -> TestResult {
    let dir = tempfile::tempdir()?;
    let opts = BufferOptions {
        max_size: 3 * frame_len(100),
        ..small(dir.path())
    };
    let (segs, mut cursor, _) = Segments::open(&opts)?;
    for i in 1..=3u8 {
        append(&segs, &[i; 100])?;
    }
    assert_eq!(segs.append(&[4; 100])?, AppendOutcome::Full);
    // Bit rot in the second record, behind the reader's back.
    let path = segment_path(dir.path(), 1);
    let mut bytes = fs::read(&path)?;
    bytes[frame_len(100) as usize + 20] ^= 0x01;
    fs::write(&path, &bytes)?;

    assert_eq!(cursor.next(&segs)?.map(|r| r.seq), Some(1));
    assert!(cursor.next(&segs)?.is_none());
    let stats = segs.stats();
    assert_eq!((stats.corrupt_segments, stats.lost_records), (1, 2));
    assert_eq!(stats.segments, 2, "the writer moved to a new segment");
    // Acknowledging the one record handed out also steps past the damage,
    // so the space its bytes held is free.
    segs.ack(1);
    assert_eq!(segs.stats().unacked_bytes, 0);
    assert_eq!(segs.append(&[4; 100])?, AppendOutcome::Written(4));
    assert_eq!(
        cursor.next(&segs)?.map(|r| (r.seq, r.payload)),
        Some((4, vec![4; 100]))
    );
    segs.sync()?;
    assert!(!path.exists());
    Ok(())
}

#[test]
fn a_garbage_older_segment_is_skipped_whole() -> TestResult {
    let dir = tempfile::tempdir()?;
    let written = {
        let (segs, _, _) = Segments::open(&small(dir.path()))?;
        fill(&segs, 60)?
    };
    let files = segment_files(dir.path())?;
    let (second, third) = (first_seq_of(&files[1])?, first_seq_of(&files[2])?);
    fs::write(
        &files[1],
        b"this is not a segment at all, but it is named like one",
    )?;
    let (segs, mut cursor, _) = Segments::open(&small(dir.path()))?;
    let got = read_all(&segs, &mut cursor)?;
    let expected: Vec<_> = written
        .iter()
        .filter(|(s, _)| *s < second || *s >= third)
        .cloned()
        .collect();
    assert_eq!(got, expected);
    assert_eq!(segs.stats().lost_records, third - second);
    Ok(())
}

#[test]
fn foreign_files_in_the_dir_are_left_alone() -> TestResult {
    let dir = tempfile::tempdir()?;
    let written = {
        let (segs, _, _) = Segments::open(&small(dir.path()))?;
        fill(&segs, 5)?
    };
    let notes = dir.path().join("notes.txt");
    let short_name = dir.path().join("123.seg");
    let a_dir = segment_path(dir.path(), 1_000_000);
    fs::write(&notes, b"hello")?;
    fs::write(&short_name, b"\0\0\0\0")?;
    fs::create_dir(&a_dir)?;
    fs::write(dir.path().join("ack.tmp"), b"half an ack file")?;
    let (segs, mut cursor, report) = Segments::open(&small(dir.path()))?;
    let mut ignored = report.ignored_files.clone();
    ignored.sort();
    let mut want = vec![notes.clone(), short_name.clone(), a_dir.clone()];
    want.sort();
    assert_eq!(ignored, want);
    assert!(notes.exists() && short_name.exists() && a_dir.exists());
    assert!(!dir.path().join("ack.tmp").exists());
    assert_eq!(read_all(&segs, &mut cursor)?, written);
    assert_eq!(append(&segs, b"x")?, 6);
    Ok(())
}

#[test]
fn a_missing_or_invalid_ack_file_restarts_from_the_oldest_segment() -> TestResult {
    let dir = tempfile::tempdir()?;
    let written = {
        let (segs, mut cursor, _) = Segments::open(&small(dir.path()))?;
        let written = fill(&segs, 60)?;
        read_all(&segs, &mut cursor)?;
        segs.ack(30);
        segs.sync()?;
        written
    };
    let oldest = first_seq_of(&segment_files(dir.path())?[0])?;
    assert!(oldest > 1 && oldest <= 31);
    let ack = dir.path().join("ack");
    for damage in [None, Some(&b"garbage"[..])] {
        match damage {
            None => fs::remove_file(&ack)?,
            Some(bytes) => fs::write(&ack, bytes)?,
        }
        let (segs, mut cursor, report) = Segments::open(&small(dir.path()))?;
        match damage {
            None => assert_eq!(report.ack_file, AckFileState::Missing),
            Some(_) => assert!(matches!(report.ack_file, AckFileState::Invalid(_))),
        }
        assert_eq!(report.resume_after, oldest - 1);
        let got = read_all(&segs, &mut cursor)?;
        assert_eq!(got, written[(oldest - 1) as usize..]);
    }
    Ok(())
}

#[test]
fn an_ack_beyond_the_data_keeps_sequence_numbers_increasing() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let (segs, _, _) = Segments::open(&small(dir.path()))?;
        fill(&segs, 10)?;
    }
    // The newest segment lost its records (say, to a torn tail) after the ack
    // of 100 was persisted.
    super::ackfile::store(dir.path(), 100)?;
    let (segs, mut cursor, report) = Segments::open(&small(dir.path()))?;
    assert_eq!(report.next_seq, 101);
    assert!(cursor.next(&segs)?.is_none());
    assert_eq!(append(&segs, b"x")?, 101);
    assert_eq!(cursor.next(&segs)?.map(|r| r.seq), Some(101));
    Ok(())
}

// ---------------------------------------------------------------------------
// Property test: random appends, reads, acks, syncs, restarts and crashes that
// tear the unsynced tail, against a model.

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Read(u8),
    Ack(u8),
    Sync,
    Restart,
    /// Drop without sync and cut up to this many unsynced bytes off the end.
    Crash(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..300).prop_map(Op::Append),
        4 => (1u8..6).prop_map(Op::Read),
        3 => any::<u8>().prop_map(Op::Ack),
        1 => Just(Op::Sync),
        1 => Just(Op::Restart),
        1 => any::<u16>().prop_map(Op::Crash),
    ]
}

/// What the buffer should hold.
#[derive(Debug, Default)]
struct Model {
    records: BTreeMap<u64, Vec<u8>>,
    next_seq: u64,
    acked: u64,
    persisted: u64,
    handed: u64,
    /// The newest segment and its length when it was last fsynced.
    synced: Option<(PathBuf, u64)>,
}

impl Model {
    fn unacked_bytes(&self) -> u64 {
        self.records
            .range(self.acked + 1..)
            .map(|(_, p)| frame_len(p.len()))
            .sum()
    }
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

fn model_opts(dir: &Path) -> BufferOptions {
    BufferOptions {
        max_size: 3000,
        segment_bytes: 700,
        ..BufferOptions::new(dir)
    }
}

fn synced_now(dir: &Path) -> Result<Option<(PathBuf, u64)>, String> {
    let last = last_segment(dir).map_err(|e| e.to_string())?;
    let len = fs::metadata(&last).map_err(|e| e.to_string())?.len();
    Ok(Some((last, len)))
}

fn run_model(ops: &[Op]) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let opts = model_opts(dir.path());
    let err = |e: BufferError| e.to_string();
    let (mut segs, mut cursor, _) = Segments::open(&opts).map_err(err)?;
    let mut m = Model {
        next_seq: 1,
        synced: synced_now(dir.path())?,
        ..Model::default()
    };
    for (i, op) in ops.iter().enumerate() {
        let at = || format!("op {i} {op:?}");
        match *op {
            Op::Append(len) => {
                let p = payload(m.next_seq, len);
                let full = m.unacked_bytes() + frame_len(len) > opts.max_size;
                let got = segs.append(&p).map_err(err)?;
                if full {
                    check(got == AppendOutcome::Full, || format!("{}: {got:?}", at()))?;
                } else {
                    check(got == AppendOutcome::Written(m.next_seq), || {
                        format!("{}: expected seq {}, got {got:?}", at(), m.next_seq)
                    })?;
                    m.records.insert(m.next_seq, p);
                    m.next_seq += 1;
                }
            }
            Op::Read(n) => {
                for _ in 0..n {
                    let got = cursor.next(&segs).map_err(err)?;
                    let want = m.records.range(m.handed + 1..).next();
                    match (got, want) {
                        (None, None) => break,
                        (Some(r), Some((&seq, p))) => {
                            check(r.seq == seq && r.payload == *p, || {
                                format!("{}: expected seq {seq}, got seq {}", at(), r.seq)
                            })?;
                            m.handed = seq;
                        }
                        (got, want) => {
                            return Err(format!(
                                "{}: expected {:?}, got {:?}",
                                at(),
                                want.map(|w| w.0),
                                got.map(|r| r.seq)
                            ));
                        }
                    }
                }
            }
            Op::Ack(k) => {
                if m.handed > m.acked {
                    let seq = m.acked + 1 + u64::from(k) % (m.handed - m.acked);
                    segs.ack(seq);
                    m.acked = seq;
                }
            }
            Op::Sync => {
                segs.sync().map_err(err)?;
                m.persisted = m.acked;
                m.synced = synced_now(dir.path())?;
                check(segs.durable() == m.next_seq - 1, || {
                    format!("{}: durable {}", at(), segs.durable())
                })?;
            }
            Op::Restart | Op::Crash(_) => {
                drop(cursor);
                drop(segs);
                let mut cut = 0;
                if let Op::Crash(k) = *op {
                    let last = last_segment(dir.path()).map_err(|e| e.to_string())?;
                    let len = fs::metadata(&last).map_err(|e| e.to_string())?.len();
                    let floor = match &m.synced {
                        Some((p, l)) if *p == last => *l,
                        _ => 0,
                    };
                    let new_len = len - u64::from(k) % (len.saturating_sub(floor) + 1);
                    fs::OpenOptions::new()
                        .write(true)
                        .open(&last)
                        .and_then(|f| f.set_len(new_len))
                        .map_err(|e| e.to_string())?;
                    // Records of the newest segment that still fit whole.
                    let first = first_seq_of(&last).map_err(|e| e.to_string())?;
                    let mut end = 0;
                    let mut seq = first;
                    while let Some(p) = m.records.get(&seq) {
                        if end + frame_len(p.len()) > new_len {
                            break;
                        }
                        end += frame_len(p.len());
                        seq += 1;
                    }
                    m.records.split_off(&seq);
                    m.next_seq = seq.max(m.persisted + 1);
                    cut = new_len - end;
                }
                let (s, c, report) = Segments::open(&opts).map_err(err)?;
                (segs, cursor) = (s, c);
                m.acked = m.persisted;
                m.handed = m.persisted;
                m.synced = synced_now(dir.path())?;
                check(report.truncated_bytes == cut, || {
                    format!("{}: cut {cut}, report {report:?}", at())
                })?;
                check(
                    report.next_seq == m.next_seq && report.resume_after == m.persisted,
                    || format!("{}: model {m:?}, report {report:?}", at()),
                )?;
            }
        }
        let stats = segs.stats();
        check(stats.unacked_bytes == m.unacked_bytes(), || {
            format!("{}: unacked bytes {stats:?} vs {}", at(), m.unacked_bytes())
        })?;
        check(
            stats.unacked_records == (m.next_seq - 1).saturating_sub(m.acked),
            || format!("{}: unacked records {stats:?}", at()),
        )?;
        check(
            stats.lost_records == 0 && stats.corrupt_segments == 0,
            || format!("{}: {stats:?}", at()),
        )?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn buffer_matches_a_model_through_restarts_and_crashes(
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run_model(&ops).map_err(TestCaseError::fail)?;
    }
}
