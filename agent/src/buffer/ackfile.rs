//! The persisted acknowledgement: the highest sequence number up to which
//! every record has been delivered, so that a restart resumes after it.
//!
//! The file is 20 bytes: `b"MBAK" | version u8 | 3 reserved bytes | seq u64 |
//! crc32 u32` (little endian, the CRC over the first 16 bytes). It is replaced
//! atomically (temp file, fsync, rename, fsync of the directory). A missing or
//! invalid file is never fatal: reading then starts from the oldest segment,
//! which re-delivers records (at-least-once) but loses none.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Name of the ack file in the buffer dir.
pub(super) const FILE_NAME: &str = "ack";
/// Name of the temp file it is written through.
pub(super) const TMP_NAME: &str = "ack.tmp";

const MAGIC: &[u8; 4] = b"MBAK";
const VERSION: u8 = 1;
const LEN: usize = 20;

/// What the ack file held when the buffer was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckFileState {
    /// No ack file (first start): reading starts from the oldest segment.
    Missing,
    /// Every record up to and including this sequence number was delivered.
    Loaded(u64),
    /// The file could not be used, for this reason; reading starts from the
    /// oldest segment.
    Invalid(String),
}

/// Reads the ack file of `dir`; never fails, since any problem only means
/// re-delivery.
pub(super) fn load(dir: &Path) -> AckFileState {
    let path = dir.join(FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return AckFileState::Missing,
        Err(e) => return AckFileState::Invalid(format!("{}: {e}", path.display())),
    };
    match decode(&bytes) {
        Ok(seq) => AckFileState::Loaded(seq),
        Err(reason) => AckFileState::Invalid(format!("{}: {reason}", path.display())),
    }
}

/// Replaces the ack file of `dir` atomically: a crash at any instant leaves
/// the old file or the new one, never a torn one.
pub(super) fn store(dir: &Path, seq: u64) -> io::Result<()> {
    let tmp = dir.join(TMP_NAME);
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&encode(seq))?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(FILE_NAME))?;
    fs::File::open(dir)?.sync_all()
}

fn encode(seq: u64) -> [u8; LEN] {
    let mut out = [0u8; LEN];
    out[0..4].copy_from_slice(MAGIC);
    out[4] = VERSION;
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&out[0..16]);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Result<u64, String> {
    let Ok(b) = <&[u8; LEN]>::try_from(bytes) else {
        return Err(format!("expected {LEN} bytes, found {}", bytes.len()));
    };
    if &b[0..4] != MAGIC {
        return Err(format!("expected magic \"MBAK\", found {:02x?}", &b[0..4]));
    }
    if b[4] != VERSION {
        return Err(format!("expected version {VERSION}, found {}", b[4]));
    }
    let [.., c0, c1, c2, c3] = *b;
    let stored = u32::from_le_bytes([c0, c1, c2, c3]);
    let computed = crc32fast::hash(&b[0..16]);
    if stored != computed {
        return Err(format!(
            "checksum mismatch: file says {stored:#010x}, bytes sum to {computed:#010x}"
        ));
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&b[8..16]);
    let seq = u64::from_le_bytes(seq);
    if seq > super::MAX_SEQ {
        return Err(format!(
            "expected a sequence number up to {}, found {seq}",
            super::MAX_SEQ
        ));
    }
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_ack_loads_back() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        assert_eq!(load(dir.path()), AckFileState::Missing);
        store(dir.path(), 12345)?;
        assert_eq!(load(dir.path()), AckFileState::Loaded(12345));
        store(dir.path(), 12346)?;
        assert_eq!(load(dir.path()), AckFileState::Loaded(12346));
        assert!(!dir.path().join(TMP_NAME).exists());
        Ok(())
    }

    #[test]
    fn every_damaged_ack_file_is_invalid_with_a_reason() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(FILE_NAME);
        let good = encode(7);
        for i in 0..LEN {
            let mut bad = good;
            bad[i] ^= 0x10;
            fs::write(&path, bad)?;
            assert!(
                matches!(load(dir.path()), AckFileState::Invalid(_)),
                "flip at byte {i}"
            );
        }
        fs::write(&path, encode(u64::MAX))?;
        assert!(matches!(load(dir.path()), AckFileState::Invalid(_)));
        for n in 0..LEN {
            fs::write(&path, &good[..n])?;
            match load(dir.path()) {
                AckFileState::Invalid(reason) => {
                    assert!(reason.contains("expected 20 bytes"), "{reason}");
                    assert!(reason.contains("ack"), "{reason}");
                }
                other => panic!("{n} bytes: expected invalid, found {other:?}"),
            }
        }
        Ok(())
    }
}
