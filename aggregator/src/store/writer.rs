//! The single writer of the log store: deduplicates by source position, adds
//! documents to day indexes and commits them together with the high-water marks.
//!
//! High-water marks are kept per day and per stream and travel in each day's
//! commit payload, so the index and the marks can never disagree after a crash:
//! a replayed record is recognised exactly when its day committed it. Keying by
//! day as well as by stream matters when one batch spans two days: if only one
//! day's commit lands before a crash, the other day's records are not wrongly
//! taken for duplicates on replay.
//!
//! Everything here blocks (tantivy indexing and fsync); it runs on a blocking
//! thread, never on the async reactor. It must not know about channels or waiters.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;
use mecha_parsers::LogRecord;
use serde::{Deserialize, Serialize};
use tantivy::{IndexWriter, TantivyDocument};

use super::{Store, days};
use crate::metrics::{DiscardReason, Metrics};
use crate::{Error, IngestOutcome};

/// Per-stream high-water marks: the largest source offset indexed per stream.
pub type Hwm = BTreeMap<String, u64>;

/// Memory budget of one day's index writer (tantivy's minimum is 15 MB).
const WRITER_HEAP_BYTES: usize = 48 * 1024 * 1024;

/// What a day's commit payload holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Payload {
    /// Format version, for later migrations.
    version: u32,
    /// High-water marks of the streams with records in this day.
    hwm: Hwm,
}

/// Reads the high-water marks from a day's commit payload (none yet: empty).
pub fn parse_payload(day: NaiveDate, payload: Option<&str>) -> Result<Hwm, Error> {
    let Some(text) = payload else {
        return Ok(Hwm::new());
    };
    serde_json::from_str::<Payload>(text)
        .map(|p| p.hwm)
        .map_err(|e| Error::Payload {
            day: days::dir_name(day),
            found: text.chars().take(64).collect(),
            reason: e.to_string(),
        })
}

fn render_payload(hwm: &Hwm) -> String {
    let p = serde_json::json!({ "version": 1, "hwm": hwm });
    p.to_string()
}

/// The one writer of a [`Store`].
pub struct Writer {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    retention_days: u32,
    clock: fn() -> i64,
    writers: HashMap<NaiveDate, IndexWriter<TantivyDocument>>,
    /// Marks as of each day's last commit.
    committed: HashMap<NaiveDate, Hwm>,
    /// Marks including uncommitted documents, for days touched since the last commit.
    pending: HashMap<NaiveDate, Hwm>,
    /// Documents added per day since the last commit.
    uncommitted: BTreeMap<NaiveDate, usize>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("open_days", &self.writers.keys().collect::<Vec<_>>())
            .field("uncommitted", &self.uncommitted)
            .finish()
    }
}

impl Writer {
    /// A writer over `store`, starting from the committed marks `hwms`.
    pub fn new(
        store: Arc<Store>,
        hwms: HashMap<NaiveDate, Hwm>,
        metrics: Arc<Metrics>,
        retention_days: u32,
    ) -> Writer {
        metrics.index_days.set(store.days().len() as i64);
        Writer {
            store,
            metrics,
            retention_days,
            clock: days::now_ns,
            writers: HashMap::new(),
            committed: hwms,
            pending: HashMap::new(),
            uncommitted: BTreeMap::new(),
        }
    }

    /// Replaces the clock (tests).
    #[cfg(test)]
    pub fn with_clock(mut self, clock: fn() -> i64) -> Writer {
        self.clock = clock;
        self
    }

    /// Indexes groups of records and commits them once; returns one outcome per
    /// group. On failure nothing uncommitted is kept and every group failed.
    pub fn write_batches(
        &mut self,
        batches: Vec<Vec<LogRecord>>,
    ) -> Result<Vec<IngestOutcome>, Error> {
        let started = Instant::now();
        let mut outcomes = Vec::with_capacity(batches.len());
        for records in batches {
            match self.add(records) {
                Ok(o) => outcomes.push(o),
                Err(e) => {
                    self.abandon_uncommitted();
                    return Err(e);
                }
            }
        }
        if let Err(e) = self.commit() {
            self.abandon_uncommitted();
            return Err(e);
        }
        self.metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(outcomes)
    }

    /// Adds records (not yet committed), dropping replays and expired days.
    pub fn add(&mut self, records: Vec<LogRecord>) -> Result<IngestOutcome, Error> {
        let now = (self.clock)();
        let oldest = days::oldest_kept(days::day_of(now), self.retention_days);
        let mut outcome = IngestOutcome::default();
        for record in records {
            let ts = days::effective_ns(record.timestamp_ns, record.observed_ns, now);
            let day = days::day_of(ts);
            if day < oldest {
                outcome.discarded += 1;
                continue;
            }
            if let Some(pos) = &record.position {
                let hwm = self.pending_hwm(day);
                match hwm.get(&*pos.stream) {
                    Some(&mark) if pos.offset <= mark => {
                        outcome.duplicates += 1;
                        continue;
                    }
                    _ => {
                        hwm.insert(pos.stream.to_string(), pos.offset);
                    }
                }
            }
            let doc = self.store.fields().to_document(record, ts);
            self.day_writer(day)?
                .add_document(doc)
                .map_err(|e| Error::index(days::dir_name(day), e))?;
            *self.uncommitted.entry(day).or_default() += 1;
            outcome.accepted += 1;
        }
        self.metrics
            .duplicate_records
            .inc_by(outcome.duplicates as u64);
        self.metrics
            .discarded(DiscardReason::Duplicate, outcome.duplicates);
        self.metrics
            .discarded(DiscardReason::OlderThanRetention, outcome.discarded);
        if outcome.duplicates + outcome.discarded > 0 {
            // One line per batch, not per record: replays come in whole batches.
            tracing::debug!(
                duplicates = outcome.duplicates,
                older_than_retention = outcome.discarded,
                "dropped records of a batch"
            );
        }
        Ok(outcome)
    }

    /// Commits every day with uncommitted documents, each with its marks as
    /// payload, and makes them searchable.
    pub fn commit(&mut self) -> Result<(), Error> {
        let touched: Vec<(NaiveDate, usize)> =
            self.uncommitted.iter().map(|(d, n)| (*d, *n)).collect();
        if touched.is_empty() {
            return Ok(());
        }
        for (day, added) in touched {
            let name = days::dir_name(day);
            let hwm = self.pending.get(&day).cloned().unwrap_or_default();
            let writer = self.day_writer(day)?;
            let mut prepared = writer
                .prepare_commit()
                .map_err(|e| Error::index(&name, e))?;
            prepared.set_payload(&render_payload(&hwm));
            prepared.commit().map_err(|e| Error::index(&name, e))?;
            self.uncommitted.remove(&day);
            self.committed.insert(day, hwm);
            self.pending.remove(&day);
            self.metrics.indexed_records.inc_by(added as u64);
            self.store
                .day(day)?
                .reader
                .reload()
                .map_err(|e| Error::index(&name, e))?;
        }
        self.metrics.commits.inc();
        // Writers of past days hold memory; keep only today's open between commits.
        let today = days::day_of((self.clock)());
        self.writers.retain(|day, _| *day >= today);
        self.metrics.index_days.set(self.store.days().len() as i64);
        Ok(())
    }

    /// Deletes day indexes older than the retention period; returns how many.
    pub fn apply_retention(&mut self) -> Result<usize, Error> {
        let today = days::day_of((self.clock)());
        let oldest = days::oldest_kept(today, self.retention_days);
        let mut deleted = 0;
        let mut known: BTreeSet<NaiveDate> = list_day_dirs(self.store.day_dir(today).parent())?
            .into_iter()
            .collect();
        known.extend(self.store.days());
        for day in known {
            if day >= oldest {
                continue;
            }
            self.writers.remove(&day);
            self.committed.remove(&day);
            self.pending.remove(&day);
            self.uncommitted.remove(&day);
            self.store.delete_day(day)?;
            tracing::info!(day = %days::dir_name(day), "deleted day index past retention");
            deleted += 1;
        }
        self.metrics.index_days.set(self.store.days().len() as i64);
        Ok(deleted)
    }

    /// Forgets everything not committed: drops the writers of touched days
    /// (tantivy discards their uncommitted documents) and their pending marks.
    fn abandon_uncommitted(&mut self) {
        for day in std::mem::take(&mut self.uncommitted).into_keys() {
            self.writers.remove(&day);
            self.pending.remove(&day);
        }
        self.pending.clear();
    }

    fn pending_hwm(&mut self, day: NaiveDate) -> &mut Hwm {
        let committed = &self.committed;
        self.pending
            .entry(day)
            .or_insert_with(|| committed.get(&day).cloned().unwrap_or_default())
    }

    fn day_writer(&mut self, day: NaiveDate) -> Result<&mut IndexWriter<TantivyDocument>, Error> {
        if !self.writers.contains_key(&day) {
            let index = self.store.day(day)?;
            let writer = index
                .index
                .writer_with_num_threads(1, WRITER_HEAP_BYTES)
                .map_err(|e| Error::index(days::dir_name(day), e))?;
            self.writers.insert(day, writer);
            self.metrics.index_days.set(self.store.days().len() as i64);
        }
        self.writers
            .get_mut(&day)
            .ok_or_else(|| Error::CommitFailed {
                reason: format!("writer of {} vanished", days::dir_name(day)),
            })
    }
}

/// The days that have a directory under `root` (none if `root` is unknown).
fn list_day_dirs(root: Option<&std::path::Path>) -> Result<Vec<NaiveDate>, Error> {
    let Some(root) = root else {
        return Ok(Vec::new());
    };
    let entries = std::fs::read_dir(root).map_err(|source| Error::Io {
        action: "list index directory",
        path: root.to_path_buf(),
        source,
    })?;
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(days::parse_dir_name))
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_garbage_names_the_day() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let mut hwm = Hwm::new();
        hwm.insert("file-a".into(), 42);
        let text = render_payload(&hwm);
        assert_eq!(parse_payload(day, Some(&text)).unwrap(), hwm);
        assert_eq!(parse_payload(day, None).unwrap(), Hwm::new());
        let err = parse_payload(day, Some("not json"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("index 2026-11-23: commit payload: expected high-water-mark JSON, found \"not json\""),
            "{err}"
        );
    }
}
