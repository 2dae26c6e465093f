//! Acknowledged file positions and their persistence.
//!
//! The [`AckBook`] holds, per file identity (fingerprint), the offset up to
//! which every line has been acknowledged downstream. Acknowledgement
//! callbacks advance it; the source writes it to the checkpoint file every
//! second when it changed, and once more on shutdown. This module must never
//! record a *read* offset as acknowledged: a checkpoint that runs ahead of
//! delivered data loses lines on restart.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How long a checkpoint survives after its file was last seen open.
pub(super) const PRUNE_AFTER: Duration = Duration::from_secs(3600);

/// One file's acknowledged position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Entry {
    /// Last path the file was seen under (informational).
    pub path: PathBuf,
    /// Every byte before this offset is acknowledged downstream.
    pub offset: u64,
    /// Unix seconds when the file was last seen open.
    pub seen_unix_s: u64,
}

/// The on-disk form of the checkpoint file.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    files: HashMap<String, Entry>,
}

/// Acknowledged positions by file fingerprint, shared with ack callbacks.
#[derive(Debug, Default)]
pub(super) struct AckBook {
    entries: HashMap<String, Entry>,
    dirty: bool,
}

impl AckBook {
    /// A book holding previously persisted positions.
    pub fn with_entries(entries: HashMap<String, Entry>) -> Self {
        AckBook {
            entries,
            dirty: false,
        }
    }

    /// The acknowledged offset of a file, if it has a checkpoint.
    pub fn offset(&self, fingerprint: &str) -> Option<u64> {
        self.entries.get(fingerprint).map(|e| e.offset)
    }

    /// Starts tracking a file at `offset` (where reading begins), replacing any
    /// earlier position: the caller decided where reading resumes.
    pub fn register(&mut self, fingerprint: &str, path: &Path, offset: u64) {
        let seen_unix_s = unix_now_s();
        self.entries.insert(
            fingerprint.to_owned(),
            Entry {
                path: path.to_owned(),
                offset,
                seen_unix_s,
            },
        );
        self.dirty = true;
    }

    /// Advances a file's acknowledged offset; never moves it back.
    pub fn ack(&mut self, fingerprint: &str, offset: u64) {
        if let Some(e) = self.entries.get_mut(fingerprint)
            && offset > e.offset
        {
            e.offset = offset;
            self.dirty = true;
        }
    }

    /// Records that the file is still open (keeps its checkpoint from pruning).
    pub fn touch(&mut self, fingerprint: &str, path: &Path) {
        if let Some(e) = self.entries.get_mut(fingerprint) {
            e.seen_unix_s = unix_now_s();
            if e.path != path {
                e.path = path.to_owned();
                self.dirty = true;
            }
        }
    }

    /// Drops checkpoints of files not seen for [`PRUNE_AFTER`].
    pub fn prune(&mut self, now_unix_s: u64) {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now_unix_s.saturating_sub(e.seen_unix_s) < PRUNE_AFTER.as_secs());
        if self.entries.len() != before {
            self.dirty = true;
        }
    }

    /// A copy of the entries if they changed since the last call.
    pub fn take_dirty(&mut self) -> Option<HashMap<String, Entry>> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        Some(self.entries.clone())
    }

    /// Makes the next [`AckBook::take_dirty`] return the entries (after a
    /// failed write).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// A copy of every entry.
    pub fn snapshot(&self) -> HashMap<String, Entry> {
        self.entries.clone()
    }
}

/// Seconds since the Unix epoch; 0 if the clock is before it.
pub(super) fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Why a checkpoint file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(super) enum LoadError {
    /// The file exists but cannot be read.
    #[error("checkpoint file {path}: {source}")]
    Io {
        /// The checkpoint file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not a checkpoint file.
    #[error("checkpoint file {path}: expected checkpoint json, found {reason}")]
    Corrupt {
        /// The checkpoint file.
        path: PathBuf,
        /// What the JSON parser said.
        reason: String,
    },
}

/// Reads the checkpoint file; `Ok(None)` when it does not exist (first start).
pub(super) fn load(path: &Path) -> Result<Option<HashMap<String, Entry>>, LoadError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LoadError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let file: CheckpointFile = serde_json::from_slice(&bytes).map_err(|e| LoadError::Corrupt {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(Some(file.files))
}

/// Writes the checkpoint file atomically: temp file, fsync, rename, fsync of
/// the directory, so that a crash at any instant leaves the old or the new
/// file, never a torn one.
pub(super) fn store(path: &Path, entries: HashMap<String, Entry>) -> io::Result<()> {
    let file = CheckpointFile {
        version: 1,
        files: entries,
    };
    let bytes = serde_json::to_vec(&file).map_err(io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Directory fsync makes the rename durable; some filesystems refuse to
        // open a directory for it, which only weakens durability, not safety.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_never_moves_a_checkpoint_back() {
        let mut book = AckBook::default();
        book.register("a", Path::new("/x"), 10);
        book.ack("a", 50);
        book.ack("a", 20);
        assert_eq!(book.offset("a"), Some(50));
        book.ack("unknown", 5);
        assert_eq!(book.offset("unknown"), None);
    }

    #[test]
    fn stored_checkpoints_load_back() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("checkpoints.json");
        assert!(load(&path)?.is_none());
        let mut book = AckBook::default();
        book.register("abc", Path::new("/var/log/a.log"), 42);
        let dirty = book.take_dirty().ok_or("expected dirty entries")?;
        store(&path, dirty)?;
        let loaded = load(&path)?.ok_or("expected a checkpoint file")?;
        assert_eq!(loaded.get("abc").map(|e| e.offset), Some(42));
        assert!(book.take_dirty().is_none());
        Ok(())
    }

    #[test]
    fn corrupt_checkpoint_is_reported_with_its_path() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("checkpoints.json");
        fs::write(&path, b"not json")?;
        let err = load(&path).err().ok_or("expected an error")?;
        assert!(err.to_string().contains("checkpoints.json"), "{err}");
        Ok(())
    }

    #[test]
    fn stale_checkpoints_are_pruned() {
        let mut book = AckBook::default();
        book.register("old", Path::new("/a"), 1);
        let now = unix_now_s();
        book.prune(now + PRUNE_AFTER.as_secs() + 1);
        assert_eq!(book.offset("old"), None);
    }
}
