//! The single writer of the log store: deduplicates by source position, adds
//! documents to day indexes and commits them together with the high-water marks.
//!
//! High-water marks are kept per day and per stream and travel in each day's
//! commit payload, so the index and the marks can never disagree after a crash:
//! a replayed record is recognised exactly when its day committed it.
//!
//! A mark is not a single offset but a [`Seen`] set: batches of one stream may
//! arrive out of order (an agent has two in flight, and after an outage their
//! retries land in any order), and a single "largest offset" would then take
//! the earlier batch's records for replays and drop them. A batch covers one
//! contiguous range of its stream (sources cut chunks in order and the
//! forwarder joins consecutive ones), or, after an agent restart, two: the
//! replay of its buffer and then its re-read from the checkpoint, which starts
//! lower. `Seen` keeps those ranges and folds the oldest into a plain low mark
//! beyond [`MAX_RUNS`]. Keying by
//! day as well as by stream matters when one batch spans two days: if only one
//! day's commit lands before a crash, the other day's records are not wrongly
//! taken for duplicates on replay.
//!
//! Sentry events (records carrying `sentry.event`) take a detour when an
//! [`EventRouter`] is attached: they are grouped and recorded in the issue
//! store first (its own durable commit), then indexed like log lines. The
//! two stores cannot commit atomically together, so the log index's write of
//! an event is made idempotent instead: it deletes any document with the same
//! `sentry.event_id` before adding, and the issue store remembers which
//! events are not yet indexed. A crash after the issue commit leaves the
//! event counted but unindexed: its replay (the batch was never acknowledged)
//! is not counted again but is indexed; a crash after the index commit but
//! before the issue store noted it makes the replay index it again over
//! itself. Either way: counted once, found once.
//!
//! Everything here blocks (tantivy indexing and fsync); it runs on a blocking
//! thread, never on the async reactor. It must not know about channels or waiters.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;
use mecha_parsers::LogRecord;
use mecha_parsers::sentry::attr;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tantivy::{IndexWriter, TantivyDocument, Term};

use super::{Store, days};
use crate::issues::route::{EventRouter, ISSUE_ID_ATTR, PendingEvent};
use crate::issues::store::Recorded;
use crate::metrics::{DiscardReason, EventOutcome, Metrics};
use crate::{Error, IngestOutcome};

/// Per-stream high-water marks: what was indexed of each stream.
pub type Hwm = BTreeMap<String, Seen>;

/// Ranges kept per stream above the low mark. A batch arriving later than
/// this many newer batches of its stream would be taken for a replay; an agent
/// has at most `in_flight` (default 2) batches outstanding.
pub const MAX_RUNS: usize = 16;

/// The source offsets of one stream already indexed: every offset up to
/// `low`, and every offset inside one of `runs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Every offset at or below this was indexed (none when `None`).
    pub low: Option<u64>,
    /// Disjoint inclusive ranges above `low`, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<(u64, u64)>,
}

impl Seen {
    /// Whether a record at `offset` was indexed.
    pub fn contains(&self, offset: u64) -> bool {
        self.low.is_some_and(|l| offset <= l)
            || self.runs.iter().any(|&(a, b)| a <= offset && offset <= b)
    }

    /// Records that a batch covered `first..=last` of the stream.
    pub fn insert(&mut self, first: u64, last: u64) {
        let at = self.runs.partition_point(|&(a, _)| a < first);
        self.runs.insert(at, (first, last.max(first)));
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.runs.len());
        for (a, b) in self.runs.drain(..) {
            match merged.last_mut() {
                Some(prev) if a <= prev.1.saturating_add(1) => prev.1 = prev.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.runs = merged;
        // Runs reaching down to the low mark, and the oldest beyond the cap,
        // fold into it.
        while let Some(&(a, b)) = self.runs.first() {
            let touches = self.low.is_some_and(|l| a <= l.saturating_add(1));
            if !touches && self.runs.len() <= MAX_RUNS {
                break;
            }
            self.low = Some(self.low.map_or(b, |l| l.max(b)));
            self.runs.remove(0);
        }
    }
}

/// The ascending runs `(first, last)` of one stream's offsets in a batch.
#[derive(Default)]
struct Runs {
    runs: Vec<(u64, u64)>,
    /// Whether the stream's latest record in the batch ended the last run:
    /// only then may a higher offset extend it. Past [`MAX_BATCH_RUNS`]
    /// records claim nothing, and a run stretched over them and on to a
    /// higher offset would claim lines the batch never held, and drop them
    /// when they came.
    open: bool,
}

/// Ascending runs kept per stream within one batch (an agent's batch has one,
/// or two after a restart); bounds the repeat check of a hostile batch.
const MAX_BATCH_RUNS: usize = 64;

/// Memory budget of one day's index writer (tantivy's minimum is 15 MB).
const WRITER_HEAP_BYTES: usize = 48 * 1024 * 1024;

/// What a day's commit payload holds: version 2 keeps [`Seen`] sets under
/// `seen`; version 1 kept one offset per stream under `hwm`.
#[derive(Debug, Default, Deserialize)]
struct Payload {
    /// Format version.
    version: u32,
    /// Version 1: the largest offset indexed per stream.
    #[serde(default)]
    hwm: BTreeMap<String, u64>,
    /// Version 2: what was indexed per stream.
    #[serde(default)]
    seen: Hwm,
}

/// Reads the high-water marks from a day's commit payload (none yet: empty).
pub fn parse_payload(day: NaiveDate, payload: Option<&str>) -> Result<Hwm, Error> {
    let Some(text) = payload else {
        return Ok(Hwm::new());
    };
    let p = serde_json::from_str::<Payload>(text).map_err(|e| Error::Payload {
        day: days::dir_name(day),
        found: text.chars().take(64).collect(),
        reason: e.to_string(),
    })?;
    if p.version > 2 {
        return Err(Error::Payload {
            day: days::dir_name(day),
            found: text.chars().take(64).collect(),
            reason: format!(
                "version {} is newer than this mecha understands (2)",
                p.version
            ),
        });
    }
    let mut seen = p.seen;
    for (stream, mark) in p.hwm {
        seen.entry(stream).or_default().low = Some(mark);
    }
    Ok(seen)
}

fn render_payload(hwm: &Hwm) -> String {
    let p = serde_json::json!({ "version": 2, "seen": hwm });
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
    /// Where Sentry events go first; without one they are plain records.
    events: Option<EventRouter>,
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
            events: None,
        }
    }

    /// Sends Sentry events through `router` into the issue store.
    pub fn with_events(mut self, router: EventRouter) -> Writer {
        self.events = Some(router);
        self
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
        let mut events = Vec::new();
        for (i, records) in batches.into_iter().enumerate() {
            let records = match &self.events {
                Some(router) => router.take_events(i, records, &mut events),
                None => records,
            };
            match self.add(records) {
                Ok(o) => outcomes.push(o),
                Err(e) => {
                    self.abandon_uncommitted();
                    return Err(e);
                }
            }
        }
        let recorded = match self.add_events(events, &mut outcomes) {
            Ok(r) => r,
            Err(e) => {
                self.abandon_uncommitted();
                return Err(e);
            }
        };
        if let Err(e) = self.commit() {
            self.abandon_uncommitted();
            return Err(e);
        }
        if let Some(router) = &self.events
            && !recorded.is_empty()
        {
            let indexed: Vec<(u64, String)> = recorded
                .iter()
                .filter(|(_, r)| r.needs_index)
                .map(|(id, r)| (r.issue.project, id.clone()))
                .collect();
            router.mark_indexed(&indexed);
            router.announce(&recorded);
        }
        self.metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(outcomes)
    }

    /// Records `events` in the issue store (durably), then adds those not yet
    /// searchable to the log index (uncommitted); counts each into the
    /// outcome of its batch. Returns what the store did, by event id.
    fn add_events(
        &mut self,
        events: Vec<PendingEvent>,
        outcomes: &mut [IngestOutcome],
    ) -> Result<Vec<(String, Recorded)>, Error> {
        let Some(router) = self.events.clone() else {
            return Ok(Vec::new());
        };
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let now = (self.clock)();
        let oldest = days::oldest_kept(days::day_of(now), self.retention_days);
        let mut stored = Vec::with_capacity(events.len());
        let mut records = Vec::with_capacity(events.len());
        for e in events {
            let ts = days::effective_ns(e.record.timestamp_ns, e.record.observed_ns, now);
            if days::day_of(ts) < oldest {
                if let Some(o) = outcomes.get_mut(e.batch) {
                    o.discarded += 1;
                }
                self.metrics.discarded(DiscardReason::OlderThanRetention, 1);
                self.metrics
                    .issue_events(EventOutcome::OlderThanRetention, 1);
                continue;
            }
            let mut event = e.event;
            event.timestamp_ns = ts;
            records.push((e.batch, event.event_id.clone(), e.record));
            stored.push(event);
        }
        let recorded = router.record(stored)?;
        let mut out = Vec::with_capacity(recorded.len());
        for ((batch, event_id, mut record), r) in records.into_iter().zip(recorded) {
            if let Some(o) = outcomes.get_mut(batch) {
                if r.duplicate {
                    o.duplicates += 1;
                } else {
                    o.accepted += 1;
                }
            }
            if r.needs_index {
                record
                    .attributes
                    .insert(ISSUE_ID_ATTR.to_string(), Value::from(r.issue.id));
                // Only an event seen before can have a document already (a
                // crash after the index commit): the id is durable in the
                // issue store before any document is added. Deleting for new
                // events too would cost a term lookup per segment each.
                self.index_event(record, &event_id, r.duplicate)?;
            }
            out.push((event_id, r));
        }
        Ok(out)
    }

    /// Adds an event's record to its day's index (uncommitted), in place of
    /// any earlier document of the same event id when `replace`.
    fn index_event(
        &mut self,
        record: LogRecord,
        event_id: &str,
        replace: bool,
    ) -> Result<(), Error> {
        let now = (self.clock)();
        let ts = days::effective_ns(record.timestamp_ns, record.observed_ns, now);
        let day = days::day_of(ts);
        let mut term =
            Term::from_field_json_path(self.store.fields().attributes, attr::EVENT_ID, true);
        term.append_type_and_str(event_id);
        let doc = self.store.fields().to_document(record, ts);
        let writer = self.day_writer(day)?;
        if replace {
            writer.delete_term(term);
        }
        writer
            .add_document(doc)
            .map_err(|e| Error::index(days::dir_name(day), e))?;
        *self.uncommitted.entry(day).or_default() += 1;
        Ok(())
    }

    /// Adds records (not yet committed), dropping replays and expired days.
    pub fn add(&mut self, records: Vec<LogRecord>) -> Result<IngestOutcome, Error> {
        let now = (self.clock)();
        let oldest = days::oldest_kept(days::day_of(now), self.retention_days);
        let mut outcome = IngestOutcome::default();
        // The offsets of each (day, stream) this batch covers, replays
        // included, as ascending runs: a stream's records rise within a
        // chunk, but a batch may go back, as when an agent restarted and its
        // re-read from the checkpoint follows the replay of its buffer.
        let mut covered: HashMap<(NaiveDate, Arc<str>), Runs> = HashMap::new();
        for record in records {
            let ts = days::effective_ns(record.timestamp_ns, record.observed_ns, now);
            let day = days::day_of(ts);
            if day < oldest {
                outcome.discarded += 1;
                continue;
            }
            if let Some(pos) = &record.position {
                let o = pos.offset;
                let runs = covered.entry((day, pos.stream.clone())).or_default();
                // A repeat inside the batch is an offset an earlier run of it
                // holds, not merely one below the highest so far: the records
                // of a re-read that sit below a replayed chunk are new unless
                // the batch carries them twice. Taking them for repeats would
                // claim them seen, and their first copy, in a batch that
                // arrives later, would then be dropped too.
                let repeat = runs.runs.iter().any(|&(a, b)| a <= o && o <= b);
                let full = runs.runs.len() >= MAX_BATCH_RUNS;
                match runs.runs.last_mut() {
                    Some(run) if o > run.1 && runs.open => run.1 = o,
                    // Past the cap (only a sender going back and forth gets
                    // there) a record claims nothing: a later copy of it may
                    // be indexed again, but nothing is taken for seen unseen.
                    _ if full => runs.open = false,
                    _ => {
                        runs.runs.push((o, o));
                        runs.open = true;
                    }
                }
                let seen = self
                    .pending_hwm(day)
                    .get(&*pos.stream)
                    .is_some_and(|s| s.contains(o));
                if seen || repeat {
                    outcome.duplicates += 1;
                    continue;
                }
            }
            let doc = self.store.fields().to_document(record, ts);
            self.day_writer(day)?
                .add_document(doc)
                .map_err(|e| Error::index(days::dir_name(day), e))?;
            *self.uncommitted.entry(day).or_default() += 1;
            outcome.accepted += 1;
        }
        for ((day, stream), runs) in covered {
            let seen = self.pending_hwm(day).entry(stream.to_string()).or_default();
            for (first, last) in runs.runs {
                seen.insert(first, last);
            }
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
            // A day touched only by records without a position (events,
            // third-party OTLP) keeps its committed marks.
            let hwm = self
                .pending
                .get(&day)
                .or_else(|| self.committed.get(&day))
                .cloned()
                .unwrap_or_default();
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
        if let Some(router) = &self.events {
            let cut = oldest
                .and_hms_opt(0, 0, 0)
                .and_then(|t| t.and_utc().timestamp_nanos_opt())
                .unwrap_or(i64::MIN);
            match router.store().prune(cut) {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "forgot issue events past retention"),
                Err(e) => {
                    self.metrics.issue_store_error("retention");
                    return Err(e);
                }
            }
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

    use mecha_parsers::Severity;
    use serde_json::json;

    use crate::test_support::*;

    /// A Python-shaped KeyError event with tags, as the agent forwards it.
    fn key_error(ts: i64, id: &str, key: &str) -> LogRecord {
        let event = json!({
            "event_id": id,
            "level": "error",
            "platform": "python",
            "environment": "production",
            "release": "shop@1.4.2",
            "tags": [["tenant", "acme"]],
            "user": {"id": "u1"},
            "exception": {"values": [{
                "type": "KeyError",
                "value": format!("'{key}'"),
                "stacktrace": {"frames": [
                    {"module": "shop.cart", "function": "lookup", "in_app": true}
                ]}
            }]}
        });
        let mut r = event_record(ts, "7", id, &event);
        r.body = format!("KeyError: '{key}'");
        r
    }

    fn id(n: u32) -> String {
        format!("{n:032x}")
    }

    fn total(store: &Store, q: &str, t: i64) -> usize {
        store.search(q, t - HOUR_NS, t + HOUR_NS, 10).unwrap().total
    }

    #[test]
    fn events_are_grouped_and_searchable_by_tag_text_and_issue_while_logs_go_on() {
        let dir = tempdir();
        let (store, mut writer, issues) = open_store_with_issues(dir.path());
        let t = today_start_ns() + HOUR_NS;
        let log = at(record(t, Severity::Info, "shop", "order placed"), "f", 10);
        let batch = vec![
            key_error(t, &id(1), "apple"),
            log,
            key_error(t + 1, &id(2), "pear"),
        ];
        let o = writer.write_batches(vec![batch]).unwrap();
        assert_eq!((o[0].accepted, o[0].duplicates), (3, 0));
        let issue = issues.get(1).unwrap().unwrap();
        assert_eq!((issue.count, issue.users, issue.project), (2, 1, 7));
        assert!(issues.get(2).unwrap().is_none(), "one issue for both");
        for q in [
            "level:error",
            "environment:production",
            "release:\"shop@1.4.2\"",
            "tenant:acme",
            "KeyError",
            "sentry.issue_id:1",
            "sentry.project_id:7",
        ] {
            assert_eq!(total(&store, q, t), 2, "{q}");
        }
        assert_eq!(total(&store, "placed", t), 1);
        let hit = &store.search("pear", t - 1, t + 10, 1).unwrap().hits[0];
        assert!(
            !hit.attributes.contains_key(attr::EVENT),
            "event JSON not indexed"
        );
        assert_eq!(hit.attributes[attr::EVENT_ID], id(2).as_str());
        // A replay of both: acknowledged, not counted, not indexed again.
        let o = writer
            .write_batches(vec![vec![
                key_error(t, &id(1), "apple"),
                key_error(t + 1, &id(2), "pear"),
            ]])
            .unwrap();
        assert_eq!((o[0].accepted, o[0].duplicates), (0, 2));
        assert_eq!(issues.get(1).unwrap().unwrap().count, 2);
        assert_eq!(total(&store, "KeyError", t), 2);
    }

    /// Takes an event through the issue store commit (and the log index
    /// commit if `index_commits`), then drops the writer as a crash would.
    fn crash_after_the_issue_commit(dir: &std::path::Path, event: LogRecord, index_commits: bool) {
        let (store, mut writer, _issues) = open_store_with_issues(dir);
        let mut pending = Vec::new();
        let router = writer.events.clone().unwrap();
        assert!(router.take_events(0, vec![event], &mut pending).is_empty());
        let mut outcomes = vec![IngestOutcome::default()];
        writer.add_events(pending, &mut outcomes).unwrap();
        assert_eq!(outcomes[0].accepted, 1);
        if index_commits {
            writer.commit().unwrap();
            assert_eq!(store.search("*", 0, i64::MAX, 1).unwrap().total, 1);
        }
    }

    #[test]
    fn a_commit_of_records_without_positions_keeps_the_days_marks() {
        let dir = tempdir();
        let (store, mut writer) = open_store(dir.path());
        let t = today_start_ns() + HOUR_NS;
        let line = || at(record(t, Severity::Info, "a", "positioned"), "f", 10);
        writer.write_batches(vec![vec![line()]]).unwrap();
        let unpositioned = record(t, Severity::Info, "a", "from any sender");
        writer.write_batches(vec![vec![unpositioned]]).unwrap();
        let o = writer.write_batches(vec![vec![line()]]).unwrap();
        assert_eq!(o[0].duplicates, 1);
        assert_eq!(total(&store, "positioned", t), 1);
    }

    /// An agent restarted: its batch replays a buffered chunk of lines 3..=4
    /// and then its re-read from the checkpoint, lines 1..=4, while the
    /// earlier batch with lines 1..=2 is still in flight and lands after it.
    /// Every line is indexed once: lines 1..=2 of the re-read are new here,
    /// and their first copy is then the duplicate.
    #[test]
    fn a_reread_below_a_replayed_chunk_is_new_and_its_late_first_copy_a_duplicate() {
        let dir = tempdir();
        let (store, mut writer) = open_store(dir.path());
        let t = today_start_ns() + HOUR_NS;
        let line = |n: u64| {
            at(
                record(t, Severity::Info, "a", &format!("line{n}")),
                "f",
                n * 100,
            )
        };
        let replay_then_reread = vec![line(3), line(4), line(1), line(2), line(3), line(4)];
        let in_flight = vec![line(1), line(2)];
        let o = writer
            .write_batches(vec![replay_then_reread, in_flight])
            .unwrap();
        assert_eq!((o[0].accepted, o[0].duplicates), (4, 2));
        assert_eq!((o[1].accepted, o[1].duplicates), (0, 2));
        for n in 1..=4 {
            assert_eq!(total(&store, &format!("line{n}"), t), 1, "line {n}");
        }
        // The marks hold the whole range now: a replay of it all is dropped.
        let o = writer
            .write_batches(vec![(1..=4).map(line).collect()])
            .unwrap();
        assert_eq!((o[0].accepted, o[0].duplicates), (0, 4));
    }

    #[test]
    fn past_the_run_cap_a_batch_claims_no_line_it_did_not_hold() {
        let dir = tempdir();
        let (store, mut writer) = open_store(dir.path());
        let t = today_start_ns() + HOUR_NS;
        let line = |o: u64| at(record(t, Severity::Info, "a", &format!("at{o}")), "f", o);
        // A sender going back and forth: each run starts below every one
        // before it, so the batch holds MAX_BATCH_RUNS runs ...
        let mut batch = Vec::new();
        for k in 0..MAX_BATCH_RUNS as u64 {
            batch.push(line(100_000 - k * 1000));
            batch.push(line(100_000 - k * 1000 + 100));
        }
        // ... then goes back once more (a repeat, claiming nothing) and
        // jumps far ahead: that line must not stretch the last run over the
        // lines in between, which the batch never held.
        batch.push(line(37_000));
        batch.push(line(900_000));
        let o = writer.write_batches(vec![batch]).unwrap();
        assert_eq!((o[0].accepted, o[0].duplicates), (129, 1));
        let o = writer.write_batches(vec![vec![line(500_000)]]).unwrap();
        assert_eq!((o[0].accepted, o[0].duplicates), (1, 0));
        assert_eq!(total(&store, "at500000", t), 1);
    }

    #[test]
    fn a_crash_after_the_issue_commit_neither_loses_nor_double_counts_the_event() {
        let dir = tempdir();
        let t = today_start_ns() + HOUR_NS;
        crash_after_the_issue_commit(dir.path(), key_error(t, &id(1), "apple"), false);
        let (store, mut writer, issues) = open_store_with_issues(dir.path());
        assert_eq!(total(&store, "KeyError", t), 0);
        // The agent never got an acknowledgement and sends the batch again.
        let o = writer
            .write_batches(vec![vec![key_error(t, &id(1), "apple")]])
            .unwrap();
        assert_eq!((o[0].accepted, o[0].duplicates), (0, 1));
        assert_eq!(issues.get(1).unwrap().unwrap().count, 1);
        assert_eq!(total(&store, "KeyError", t), 1);
    }

    #[test]
    fn a_crash_after_the_index_commit_does_not_index_the_event_twice() {
        let dir = tempdir();
        let t = today_start_ns() + HOUR_NS;
        // Dies after the log index commit, before the issue store noted it.
        crash_after_the_issue_commit(dir.path(), key_error(t, &id(1), "apple"), true);
        let (store, mut writer, issues) = open_store_with_issues(dir.path());
        let o = writer
            .write_batches(vec![vec![key_error(t, &id(1), "apple")]])
            .unwrap();
        assert_eq!(o[0].duplicates, 1);
        assert_eq!(total(&store, "KeyError", t), 1, "re-indexed over itself");
        assert_eq!(issues.get(1).unwrap().unwrap().count, 1);
    }

    #[test]
    fn unreadable_events_are_indexed_as_log_lines_with_the_reason() {
        let dir = tempdir();
        let (store, mut writer, issues) = open_store_with_issues(dir.path());
        let t = today_start_ns() + HOUR_NS;
        let mut bad = key_error(t, &id(1), "apple");
        bad.attributes
            .insert(attr::EVENT.into(), Value::from("{truncated"));
        let o = writer.write_batches(vec![vec![bad]]).unwrap();
        assert_eq!(o[0].accepted, 1);
        assert!(issues.get(1).unwrap().is_none());
        let hits = store.search("KeyError", t - 1, t + 1, 1).unwrap().hits;
        let reason = hits[0].attributes["parse_error"].as_str().unwrap();
        assert!(reason.starts_with("sentry event: invalid JSON"), "{reason}");
    }

    #[test]
    fn events_past_retention_are_dropped_and_retention_prunes_the_issue_store() {
        let dir = tempdir();
        let (store, mut writer, issues) = open_store_with_issues(dir.path());
        let old = today_start_ns() - 30 * days::DAY_NS;
        let o = writer
            .write_batches(vec![vec![key_error(old, &id(1), "apple")]])
            .unwrap();
        assert_eq!((o[0].accepted, o[0].discarded), (0, 1));
        assert!(issues.get(1).unwrap().is_none());
        // Kept today, then everything moves past retention.
        let t = today_start_ns() + HOUR_NS;
        writer
            .write_batches(vec![vec![key_error(t, &id(2), "pear")]])
            .unwrap();
        assert_eq!(issues.seen_count().unwrap(), 1);
        let mut writer = writer.with_clock(|| days::now_ns() + 30 * days::DAY_NS);
        writer.apply_retention().unwrap();
        assert_eq!(issues.seen_count().unwrap(), 0);
        assert!(issues.get(1).unwrap().is_none());
        assert!(store.days().is_empty());
    }

    #[test]
    fn seen_keeps_out_of_order_batches_apart_and_folds_old_ones() {
        let mut s = Seen::default();
        assert!(!s.contains(0));
        s.insert(0, 90);
        // The batch after next arrives first: the one in between is not seen.
        s.insert(200, 290);
        assert!(s.contains(0) && s.contains(90) && s.contains(250));
        assert!(!s.contains(100) && !s.contains(199) && !s.contains(300));
        s.insert(100, 190);
        assert!(s.contains(150));
        // A replay spanning several ranges merges them.
        s.insert(50, 250);
        assert!(s.runs == [(0, 290)] && s.low.is_none(), "{s:?}");
        // In-order batches beyond the cap fold into the low mark.
        for i in 0..(MAX_RUNS as u64 + 5) {
            s.insert(1000 + i * 100, 1000 + i * 100 + 50);
        }
        assert_eq!(s.runs.len(), MAX_RUNS);
        assert_eq!(s.low, Some(1000 + 4 * 100 + 50));
        assert!(s.contains(1000) && !s.contains(1000 + 5 * 100 - 1));
    }

    #[test]
    fn payload_round_trips_and_garbage_names_the_day() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let mut hwm = Hwm::new();
        let mut seen = Seen::default();
        seen.insert(10, 42);
        seen.insert(100, 142);
        hwm.insert("file-a".into(), seen);
        let text = render_payload(&hwm);
        assert_eq!(parse_payload(day, Some(&text)).unwrap(), hwm);
        // Version 1 payloads still read: their mark becomes the low mark.
        let v1 = parse_payload(day, Some(r#"{"version":1,"hwm":{"f":7}}"#)).unwrap();
        assert_eq!(
            v1.get("f").map(|s| (s.low, s.contains(7), s.contains(8))),
            Some((Some(7), true, false))
        );
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
