//! The log store: one tantivy index per UTC day under `<data_dir>/logs/<YYYY-MM-DD>/`.
//!
//! [`Store`] owns the set of open day indexes and their readers and answers
//! searches; [`writer::Writer`] (one per process) adds documents, deduplicates
//! by source position and commits. Everything here is blocking: callers on the
//! async reactor must go through `spawn_blocking` or the writer thread. This
//! module must not know about HTTP, gRPC or tokio.

pub mod count;
pub mod days;
pub mod schema;
pub mod writer;

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use chrono::NaiveDate;
use tantivy::collector::{Count, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, RangeQuery};
use tantivy::query_grammar::{self, UserInputAst, UserInputLeaf};
use tantivy::tokenizer::TokenizerManager;
use tantivy::{DateTime, Index, IndexReader, Order, ReloadPolicy, TantivyDocument, Term};

use crate::Error;
pub use schema::{Fields, Hit};
pub use writer::Hwm;

/// One day's index and its reader.
#[derive(Clone)]
pub struct DayIndex {
    /// The UTC day.
    pub day: NaiveDate,
    /// The index.
    pub index: Index,
    /// Its reader; reloaded explicitly after each commit.
    pub reader: IndexReader,
}

impl std::fmt::Debug for DayIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DayIndex").field("day", &self.day).finish()
    }
}

/// The result of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// Matches in the whole time range, not just those returned.
    pub total: usize,
    /// Up to `limit` hits, newest first.
    pub hits: Vec<Hit>,
}

/// All day indexes under one directory.
pub struct Store {
    root: PathBuf,
    fields: Fields,
    parser: QueryParser,
    days: RwLock<BTreeMap<NaiveDate, Arc<DayIndex>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .field("days", &self.days())
            .finish()
    }
}

impl Store {
    /// Opens every day index under `root` (creating `root` if needed) and
    /// returns the store with the committed high-water marks of each day.
    pub fn open(root: &Path) -> Result<(Store, HashMap<NaiveDate, Hwm>), Error> {
        std::fs::create_dir_all(root).map_err(|source| Error::Io {
            action: "create index directory",
            path: root.to_path_buf(),
            source,
        })?;
        let fields = Fields::new();
        let parser = QueryParser::new(
            fields.schema.clone(),
            fields.default_fields(),
            TokenizerManager::default(),
        );
        let store = Store {
            root: root.to_path_buf(),
            fields,
            parser,
            days: RwLock::new(BTreeMap::new()),
        };
        let mut hwms = HashMap::new();
        let entries = std::fs::read_dir(root).map_err(|source| Error::Io {
            action: "list index directory",
            path: root.to_path_buf(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io {
                action: "list index directory",
                path: root.to_path_buf(),
                source,
            })?;
            let Some(day) = entry.file_name().to_str().and_then(days::parse_dir_name) else {
                continue;
            };
            let day_index = store.day(day)?;
            let payload = day_index
                .index
                .load_metas()
                .map_err(|e| Error::index(day, e))?
                .payload;
            hwms.insert(day, writer::parse_payload(day, payload.as_deref())?);
        }
        Ok((store, hwms))
    }

    /// The schema fields.
    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    /// The directory of a day's index.
    pub fn day_dir(&self, day: NaiveDate) -> PathBuf {
        self.root.join(days::dir_name(day))
    }

    /// The days that have an index, oldest first.
    pub fn days(&self) -> Vec<NaiveDate> {
        self.read_days().keys().copied().collect()
    }

    /// The index of a day, opening or creating it.
    pub fn day(&self, day: NaiveDate) -> Result<Arc<DayIndex>, Error> {
        if let Some(d) = self.read_days().get(&day) {
            return Ok(Arc::clone(d));
        }
        let dir = self.day_dir(day);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            action: "create day index directory",
            path: dir.clone(),
            source,
        })?;
        let directory = MmapDirectory::open(&dir)
            .map_err(|e| Error::index(day, tantivy::TantivyError::from(e)))?;
        let index = Index::open_or_create(directory, self.fields.schema.clone())
            .map_err(|e| Error::index(day, e))?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| Error::index(day, e))?;
        let opened = Arc::new(DayIndex { day, index, reader });
        let mut map = self.days.write().unwrap_or_else(PoisonError::into_inner);
        Ok(Arc::clone(map.entry(day).or_insert(opened)))
    }

    /// Forgets a day and deletes its directory.
    pub fn delete_day(&self, day: NaiveDate) -> Result<(), Error> {
        self.days
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&day);
        let dir = self.day_dir(day);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Io {
                action: "delete day index",
                path: dir,
                source,
            }),
        }
    }

    /// Parses a query in the search language (tantivy's query syntax; `level`
    /// is an alias of `severity`; empty or `*` matches everything; a purely
    /// negative query or group, such as `NOT level:debug`, means "everything but").
    pub fn parse_query(&self, query: &str) -> Result<Box<dyn Query>, Error> {
        parse_with(&self.parser, query)
    }

    /// Finds records matching `query` with `from_ns <= timestamp <= to_ns`,
    /// newest first, at most `limit` of them, and counts all matches.
    pub fn search(
        &self,
        query: &str,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<SearchResult, Error> {
        let parsed = self.parse_query(query)?;
        let mut result = SearchResult {
            total: 0,
            hits: Vec::new(),
        };
        if from_ns > to_ns {
            return Ok(result);
        }
        let range = RangeQuery::new(
            Bound::Included(Term::from_field_date(
                self.fields.timestamp,
                DateTime::from_timestamp_nanos(from_ns),
            )),
            Bound::Included(Term::from_field_date(
                self.fields.timestamp,
                DateTime::from_timestamp_nanos(to_ns),
            )),
        );
        let query = BooleanQuery::new(vec![(Occur::Must, parsed), (Occur::Must, Box::new(range))]);
        let (first, last) = (days::day_of(from_ns), days::day_of(to_ns));
        let indexes: Vec<Arc<DayIndex>> = self
            .read_days()
            .range(first..=last)
            .rev()
            .map(|(_, d)| Arc::clone(d))
            .collect();
        // Days hold disjoint time ranges, so taking the newest day's newest hits
        // first gives a global newest-first order without a merge.
        for day in indexes {
            let searcher = day.reader.searcher();
            let want = limit.saturating_sub(result.hits.len());
            if want == 0 {
                result.total += searcher
                    .search(&query, &Count)
                    .map_err(|e| Error::index(day.day, e))?;
                continue;
            }
            let top = TopDocs::with_limit(want)
                .order_by_fast_field::<DateTime>(schema::names::TIMESTAMP, Order::Desc);
            let (docs, count) = searcher
                .search(&query, &(top, Count))
                .map_err(|e| Error::index(day.day, e))?;
            result.total += count;
            for (_, addr) in docs {
                let doc: TantivyDocument =
                    searcher.doc(addr).map_err(|e| Error::index(day.day, e))?;
                result.hits.push(self.fields.to_hit(&doc));
            }
        }
        Ok(result)
    }

    fn read_days(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<NaiveDate, Arc<DayIndex>>> {
        self.days.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Checks the syntax of a query without a store (config validation): the
/// same parser and schema as [`Store::parse_query`].
pub fn check_query(query: &str) -> Result<(), Error> {
    let fields = Fields::new();
    let parser = QueryParser::new(
        fields.schema.clone(),
        fields.default_fields(),
        TokenizerManager::default(),
    );
    parse_with(&parser, query).map(|_| ())
}

fn parse_with(parser: &QueryParser, query: &str) -> Result<Box<dyn Query>, Error> {
    let trimmed = query.trim();
    if trimmed.is_empty() || trimmed == "*" {
        return Ok(Box::new(AllQuery));
    }
    let invalid = |reason: String| Error::Query {
        query: query.to_string(),
        reason,
    };
    let ast = query_grammar::parse_query(trimmed).map_err(|_| {
        // The strict parser says only "failed"; the lenient one says where.
        let (_, errors) = query_grammar::parse_query_lenient(trimmed);
        invalid(match errors.first() {
            Some(e) => format!("{} at position {}", e.message, e.pos),
            None => "syntax error".to_string(),
        })
    })?;
    parser
        .build_query_from_user_input_ast(complete_negations(ast))
        .map_err(|e| invalid(lowercase_first(&e.to_string())))
}

/// Gives every group made only of exclusions (`NOT b`, `a AND NOT b`'s inner
/// group) a "match all" to exclude from: tantivy matches nothing for a boolean
/// query with only must-not clauses, which would make `a AND NOT b` empty.
fn complete_negations(ast: UserInputAst) -> UserInputAst {
    match ast {
        UserInputAst::Clause(clauses) => {
            let mut clauses: Vec<_> = clauses
                .into_iter()
                .map(|(occur, sub)| (occur, complete_negations(sub)))
                .collect();
            if !clauses.is_empty()
                && clauses
                    .iter()
                    .all(|(occur, _)| *occur == Some(query_grammar::Occur::MustNot))
            {
                clauses.push((
                    Some(query_grammar::Occur::Must),
                    UserInputAst::Leaf(Box::new(UserInputLeaf::All)),
                ));
            }
            UserInputAst::Clause(clauses)
        }
        UserInputAst::Boost(inner, boost) => {
            UserInputAst::Boost(Box::new(complete_negations(*inner)), boost)
        }
        leaf @ UserInputAst::Leaf(_) => leaf,
    }
}

/// Error texts of tantivy start with a capital; ours do not.
fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use mecha_parsers::Severity;

    use super::*;
    use crate::test_support::*;

    /// A day of logs in namespaces `shop` and `bank`, one hour after midnight.
    fn seeded(dir: &Path) -> (Arc<Store>, i64) {
        let (store, mut writer) = open_store(dir);
        let t = today_start_ns() + HOUR_NS;
        let records = vec![
            with_attr(
                record(
                    t,
                    Severity::Error,
                    "shop",
                    "payment failed: connection refused",
                ),
                "user",
                "Ann",
            ),
            with_attr(
                record(t + 1, Severity::Info, "shop", "order placed"),
                "user",
                "bob",
            ),
            with_attr(
                record(
                    t + 2,
                    Severity::Error,
                    "bank",
                    "refused connection to ledger",
                ),
                "http.method",
                "GET",
            ),
            with_attr(
                record(t + 3, Severity::Warn, "shop", "slow query"),
                "status",
                500,
            ),
        ];
        let outcomes = writer.write_batches(vec![records]).unwrap();
        assert_eq!(outcomes[0].accepted, 4);
        (store, t)
    }

    fn bodies(store: &Store, q: &str, from: i64, to: i64) -> Vec<String> {
        let result = store.search(q, from, to, 100).unwrap();
        assert_eq!(result.total, result.hits.len(), "{q}");
        result.hits.into_iter().map(|h| h.body).collect()
    }

    #[test]
    fn field_queries_find_what_they_name() {
        let dir = tempdir();
        let (store, t) = seeded(dir.path());
        let (from, to) = (t - HOUR_NS, t + HOUR_NS);
        let q = |q: &str| bodies(&store, q, from, to);
        assert_eq!(
            q("level:error AND namespace:shop"),
            ["payment failed: connection refused"]
        );
        assert_eq!(
            q("severity:error AND namespace:shop"),
            q("level:error AND namespace:shop")
        );
        assert_eq!(
            q("attributes.user:ann"),
            ["payment failed: connection refused"]
        );
        // Keys that are not schema fields reach the attributes.
        assert_eq!(q("user:ann"), ["payment failed: connection refused"]);
        assert_eq!(q("user:ANN"), ["payment failed: connection refused"]);
        assert_eq!(
            q("attributes.http.method:get"),
            ["refused connection to ledger"]
        );
        assert_eq!(q("status:500"), ["slow query"]);
        assert_eq!(
            q("resource.k8s.namespace.name:bank"),
            ["refused connection to ledger"]
        );
        assert_eq!(q("pod:bank-pod"), ["refused connection to ledger"]);
        // A phrase matches words in order only; plain words match anywhere.
        assert_eq!(
            q("\"connection refused\""),
            ["payment failed: connection refused"]
        );
        assert_eq!(q("refused").len(), 2);
        // Plain words also find attribute values, whatever their key.
        assert_eq!(q("ann"), ["payment failed: connection refused"]);
        assert_eq!(q("bob AND placed"), ["order placed"]);
        assert_eq!(
            q("level:error AND NOT namespace:bank"),
            ["payment failed: connection refused"]
        );
        assert_eq!(
            q("level:error -namespace:bank"),
            ["payment failed: connection refused"]
        );
        assert_eq!(q("NOT level:error").len(), 2);
        assert_eq!(q("namespace:shop AND (NOT level:info)").len(), 2);
        assert_eq!(q("*").len(), 4);
        assert_eq!(q("").len(), 4);
    }

    #[test]
    fn time_range_bounds_the_hits() {
        let dir = tempdir();
        let (store, t) = seeded(dir.path());
        assert_eq!(
            bodies(&store, "*", t + 1, t + 2),
            ["refused connection to ledger", "order placed"]
        );
        assert!(bodies(&store, "*", t + 4, t + HOUR_NS).is_empty());
        assert_eq!(
            bodies(&store, "timestamp:[* TO *] AND level:warn", t, t + 3),
            ["slow query"]
        );
    }

    #[test]
    fn hits_are_newest_first_across_day_indexes() {
        let dir = tempdir();
        let (store, mut writer) = open_store(dir.path());
        let today = today_start_ns() + 60_000_000_000;
        let yesterday = today - DAY_NS_FOR_TESTS;
        // Written out of order, in two batches of one group.
        let batches = vec![
            vec![
                record(yesterday + 5, Severity::Info, "a", "y2"),
                record(today + 1, Severity::Info, "a", "t1"),
            ],
            vec![
                record(yesterday + 1, Severity::Info, "a", "y1"),
                record(today + 9, Severity::Info, "a", "t2"),
            ],
        ];
        writer.write_batches(batches).unwrap();
        assert_eq!(store.days().len(), 2);
        assert_eq!(
            bodies(&store, "*", yesterday - 1, today + 10),
            ["t2", "t1", "y2", "y1"]
        );
    }

    const DAY_NS_FOR_TESTS: i64 = days::DAY_NS;

    #[test]
    fn limit_caps_hits_while_total_counts_every_match() {
        let dir = tempdir();
        let (store, mut writer) = open_store(dir.path());
        let today = today_start_ns() + 60_000_000_000;
        let yesterday = today - days::DAY_NS;
        let mut records = Vec::new();
        for i in 0..30 {
            records.push(record(today + i, Severity::Info, "a", &format!("t{i}")));
            records.push(record(yesterday + i, Severity::Info, "a", &format!("y{i}")));
        }
        writer.write_batches(vec![records]).unwrap();
        let r = store.search("*", yesterday, today + 100, 5).unwrap();
        assert_eq!(r.total, 60);
        let got: Vec<_> = r.hits.iter().map(|h| h.body.as_str()).collect();
        assert_eq!(got, ["t29", "t28", "t27", "t26", "t25"]);
        // A limit spanning both days continues into yesterday.
        let r = store.search("*", yesterday, today + 100, 32).unwrap();
        assert_eq!(r.hits.len(), 32);
        assert_eq!(r.hits[31].body, "y28");
        // limit 0 only counts.
        let r = store.search("*", yesterday, today + 100, 0).unwrap();
        assert_eq!((r.total, r.hits.len()), (60, 0));
    }

    #[test]
    fn replays_are_dropped_across_a_reopen() {
        let dir = tempdir();
        let t = today_start_ns() + HOUR_NS;
        let batch = || {
            (0..10)
                .map(|i| {
                    at(
                        record(t + i, Severity::Info, "a", &format!("line {i}")),
                        "file-1",
                        100 * (i as u64 + 1),
                    )
                })
                .collect::<Vec<_>>()
        };
        {
            let (_store, mut writer) = open_store(dir.path());
            let o = writer.write_batches(vec![batch()]).unwrap();
            assert_eq!((o[0].accepted, o[0].duplicates), (10, 0));
            // Within one process the marks already hold.
            let o = writer.write_batches(vec![batch()]).unwrap();
            assert_eq!((o[0].accepted, o[0].duplicates), (0, 10));
        }
        let (store, mut writer) = open_store(dir.path());
        let o = writer.write_batches(vec![batch()]).unwrap();
        assert_eq!((o[0].accepted, o[0].duplicates), (0, 10));
        assert_eq!(
            store.search("*", t - 1, t + HOUR_NS, 100).unwrap().total,
            10
        );
        // A record past the mark of the same stream is new.
        let next = at(
            record(t + 20, Severity::Info, "a", "line 10"),
            "file-1",
            1_100,
        );
        let o = writer.write_batches(vec![vec![next]]).unwrap();
        assert_eq!((o[0].accepted, o[0].duplicates), (1, 0));
        assert_eq!(
            store.search("*", t - 1, t + HOUR_NS, 100).unwrap().total,
            11
        );
    }

    #[test]
    fn batches_arriving_out_of_order_are_all_kept_and_replays_of_either_dropped() {
        let dir = tempdir();
        let t = today_start_ns() + HOUR_NS;
        let batch = |from: u64| {
            (from..from + 5)
                .map(|i| {
                    at(
                        record(t + i as i64, Severity::Info, "a", &format!("line {i}")),
                        "file-1",
                        100 * i,
                    )
                })
                .collect::<Vec<_>>()
        };
        {
            let (_store, mut writer) = open_store(dir.path());
            // The second batch lands before the first (retries after an outage).
            let o = writer.write_batches(vec![batch(5), batch(0)]).unwrap();
            assert_eq!((o[0].accepted, o[1].accepted), (5, 5));
        }
        // After a restart, a replay of both (re-chunked) is dropped whole.
        let (store, mut writer) = open_store(dir.path());
        let mut replay = batch(0);
        replay.extend(batch(5));
        let o = writer.write_batches(vec![replay]).unwrap();
        assert_eq!((o[0].accepted, o[0].duplicates), (0, 10));
        assert_eq!(
            store.search("*", t - 1, t + HOUR_NS, 100).unwrap().total,
            10
        );
    }

    #[test]
    fn uncommitted_marks_do_not_survive_a_crash() {
        let dir = tempdir();
        let t = today_start_ns() + HOUR_NS;
        {
            let (_store, mut writer) = open_store(dir.path());
            let o = writer
                .add(vec![at(record(t, Severity::Info, "a", "x"), "s", 1)])
                .unwrap();
            assert_eq!(o.accepted, 1);
            // Dropped without commit: as if the process died.
        }
        let (store, mut writer) = open_store(dir.path());
        let o = writer
            .write_batches(vec![vec![at(record(t, Severity::Info, "a", "x"), "s", 1)]])
            .unwrap();
        assert_eq!((o[0].accepted, o[0].duplicates), (1, 0));
        assert_eq!(store.search("*", t - 1, t + 1, 10).unwrap().total, 1);
    }

    #[test]
    fn retention_deletes_whole_days_past_the_period_only() {
        let dir = tempdir();
        let (store, mut writer) = open_store(dir.path());
        let today = today();
        let old = [30u64, 8].map(|n| today.checked_sub_days(chrono::Days::new(n)).unwrap());
        let kept = [7u64, 1].map(|n| today.checked_sub_days(chrono::Days::new(n)).unwrap());
        for day in old.iter().chain(&kept) {
            store.day(*day).unwrap();
        }
        // A bare directory with a day's name (say, left by a crash) goes too;
        // other names are not ours to delete.
        let stray = today.checked_sub_days(chrono::Days::new(100)).unwrap();
        std::fs::create_dir_all(store.day_dir(stray)).unwrap();
        std::fs::create_dir_all(dir.path().join("notes")).unwrap();
        assert_eq!(writer.apply_retention().unwrap(), 3);
        assert_eq!(store.days(), kept.to_vec());
        for day in old.iter().chain([&stray]) {
            assert!(!store.day_dir(*day).exists(), "{day} still on disk");
        }
        for day in &kept {
            assert!(store.day_dir(*day).exists(), "{day} deleted");
        }
        assert!(dir.path().join("notes").exists());
        // Records for deleted days are dropped, not resurrected.
        let ts = today_start_ns() - 30 * days::DAY_NS;
        let o = writer
            .write_batches(vec![vec![record(ts, Severity::Info, "a", "old")]])
            .unwrap();
        assert_eq!((o[0].accepted, o[0].discarded), (0, 1));
        assert!(!store.day_dir(old[0]).exists());
    }

    #[test]
    fn malformed_queries_are_rejected_with_a_reason() {
        let dir = tempdir();
        let (store, _t) = seeded(dir.path());
        for bad in ["level:(error", "nosuchfield.x:[a TO", "body:\"unclosed"] {
            let err = store
                .parse_query(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.starts_with("invalid query"), "{bad:?} gave {err:?}");
        }
        let err = store.search("timestamp:[x TO y]", 0, 1, 1).err().unwrap();
        assert!(err.is_bad_request(), "{err}");
    }
}
