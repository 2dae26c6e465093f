//! The issue store: issues, their recent events and which event ids were
//! seen, in one embedded [`redb`] file (`<data_dir>/issues/issues.redb`).
//!
//! Why redb: ACID transactions with a fsync per commit, so a commit that
//! returned survives `kill -9` and one that did not leaves nothing behind;
//! pure Rust in one file, nothing to run beside the aggregator; readers (the
//! HTTP API) never block the writer (the ingest thread) and see the last
//! commit whole. The alternatives were a second tantivy index (no
//! read-modify-write of counters) and SQLite (C, and a schema to migrate).
//!
//! Everything here is blocking: callers on the async reactor go through
//! `spawn_blocking`. This module must not group, index logs or answer HTTP.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use xxhash_rust::xxh3::xxh3_128;

use super::grouping::Grouping;
use crate::Error;

/// Issues by id, as JSON.
const ISSUES: TableDefinition<u64, &[u8]> = TableDefinition::new("issues");
/// (project, grouping hash) → issue id.
const HASHES: TableDefinition<(u64, &str), u64> = TableDefinition::new("hashes");
/// (project, event id) → (issue id, event time, indexed in the log search).
const SEEN: TableDefinition<(u64, &str), (u64, i64, bool)> = TableDefinition::new("seen");
/// (issue id, event time, event id) → the event's JSON text.
const EVENTS: TableDefinition<(u64, i64, &str), &str> = TableDefinition::new("events");
/// (event time, project, event id) → issue id: what retention walks.
const BY_TIME: TableDefinition<(i64, u64, &str), u64> = TableDefinition::new("by_time");
/// (issue id, hash of the user key): the distinct users of an issue.
const USERS: TableDefinition<(u64, u128), ()> = TableDefinition::new("users");
/// Counters (`next_issue_id`).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const NEXT_ISSUE_ID: &str = "next_issue_id";

/// Most distinct releases (and environments) kept per issue; later ones are
/// not added.
pub const MAX_SET_VALUES: usize = 100;
/// Longest release or environment name kept, in characters.
const MAX_SET_VALUE_CHARS: usize = 200;

/// Where an issue stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Open: new events are expected to need work.
    Unresolved,
    /// Fixed; a new event reopens it as a regression.
    Resolved,
    /// Muted: stays ignored whatever arrives.
    Ignored,
}

impl Status {
    /// Reads `unresolved`, `resolved` or `ignored`.
    pub fn parse(text: &str) -> Option<Status> {
        match text {
            "unresolved" => Some(Status::Unresolved),
            "resolved" => Some(Status::Resolved),
            "ignored" => Some(Status::Ignored),
            _ => None,
        }
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unresolved => "unresolved",
            Status::Resolved => "resolved",
            Status::Ignored => "ignored",
        }
    }
}

/// One issue: events of one project that share a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Issue {
    /// Small, stable id (1, 2, ...), never reused.
    pub id: u64,
    /// The Sentry project id.
    pub project: u64,
    /// Grouping hashes that lead here.
    pub hashes: Vec<String>,
    /// Title, from the latest event.
    pub title: String,
    /// Culprit, from the latest event.
    pub culprit: String,
    /// Level of the latest event (`error`, `warning`, ...).
    pub level: String,
    /// What grouped it (`exception`, `message`, ...).
    pub method: String,
    /// Where it stands.
    pub status: Status,
    /// Whether it was resolved and came back.
    pub regressed: bool,
    /// When it was resolved, if it is.
    pub resolved_at_ns: Option<i64>,
    /// Time of the oldest event, nanoseconds since the epoch.
    pub first_seen_ns: i64,
    /// Time of the newest event.
    pub last_seen_ns: i64,
    /// Events counted (each event id once).
    pub count: u64,
    /// Distinct users (by id, else email, else username, else IP).
    pub users: u64,
    /// Releases seen, first come first kept, at most [`MAX_SET_VALUES`].
    pub releases: Vec<String>,
    /// Environments seen, the same way.
    pub environments: Vec<String>,
    /// Id of the newest event.
    pub latest_event_id: String,
    /// Events currently kept for the events API.
    pub stored_events: u64,
}

/// An event on its way into the store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The Sentry project id.
    pub project: u64,
    /// 32 lowercase hex digits.
    pub event_id: String,
    /// Event time, nanoseconds since the epoch.
    pub timestamp_ns: i64,
    /// Level name.
    pub level: String,
    /// Its group.
    pub grouping: Grouping,
    /// The key its user is counted by, if it has one.
    pub user: Option<String>,
    /// Its release.
    pub release: Option<String>,
    /// Its environment.
    pub environment: Option<String>,
    /// The whole event as JSON text.
    pub json: String,
}

/// What became of one [`NewEvent`].
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The issue it belongs to, as of this commit.
    pub issue: Issue,
    /// Already seen: nothing was counted.
    pub duplicate: bool,
    /// Not yet in the log search (new, or seen before a crash cut the indexing).
    pub needs_index: bool,
    /// It created the issue.
    pub created: bool,
    /// It reopened a resolved issue.
    pub regressed: bool,
}

/// Order of an issue list (always newest or largest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// By the newest event.
    #[default]
    LastSeen,
    /// By the oldest event.
    FirstSeen,
    /// By event count.
    Count,
    /// By distinct users.
    Users,
}

impl Sort {
    /// Reads `last_seen`, `first_seen`, `count` or `users`.
    pub fn parse(text: &str) -> Option<Sort> {
        match text {
            "last_seen" => Some(Sort::LastSeen),
            "first_seen" => Some(Sort::FirstSeen),
            "count" => Some(Sort::Count),
            "users" => Some(Sort::Users),
            _ => None,
        }
    }

    fn key(self, issue: &Issue) -> i64 {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        match self {
            Sort::LastSeen => issue.last_seen_ns,
            Sort::FirstSeen => issue.first_seen_ns,
            Sort::Count => count(issue.count),
            Sort::Users => count(issue.users),
        }
    }
}

/// Which issues to list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this project's.
    pub project: Option<u64>,
    /// Only issues in this status; `None`: all.
    pub status: Option<Status>,
    /// Only issues whose title or culprit contains this (case-insensitive).
    pub text: Option<String>,
    /// Order.
    pub sort: Sort,
    /// Most issues returned.
    pub limit: usize,
    /// Continue after this position of a previous page.
    pub cursor: Option<(i64, u64)>,
}

/// One page of issues and where the next starts.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuePage {
    /// The issues.
    pub issues: Vec<Issue>,
    /// Position of the last one, when more follow.
    pub next: Option<(i64, u64)>,
}

/// One kept event of an issue.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Its id.
    pub event_id: String,
    /// Its time.
    pub timestamp_ns: i64,
    /// The event JSON (a string if it could not be read back as JSON).
    pub event: Value,
}

/// One page of events and where the next starts.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    /// Newest first.
    pub events: Vec<StoredEvent>,
    /// Position of the last one, when more follow.
    pub next: Option<(i64, String)>,
}

/// The issue store.
pub struct IssueStore {
    db: Database,
    path: PathBuf,
    max_events_per_issue: u64,
}

impl std::fmt::Debug for IssueStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssueStore")
            .field("path", &self.path)
            .finish()
    }
}

/// Wraps a redb error with what we were doing.
fn db_error<E: Into<redb::Error>>(action: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::IssueStore {
        action,
        reason: e.into().to_string(),
    }
}

impl IssueStore {
    /// Opens (or creates) the store in `dir`, keeping at most
    /// `max_events_per_issue` events per issue for the events API.
    pub fn open(dir: &Path, max_events_per_issue: u64) -> Result<IssueStore, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            action: "create issue store directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("issues.redb");
        let db = Database::create(&path).map_err(db_error("open issue store"))?;
        // Create every table once, so that readers never meet a missing one.
        let txn = db.begin_write().map_err(db_error("open issue store"))?;
        {
            txn.open_table(ISSUES)
                .map_err(db_error("open issue store"))?;
            txn.open_table(HASHES)
                .map_err(db_error("open issue store"))?;
            txn.open_table(SEEN).map_err(db_error("open issue store"))?;
            txn.open_table(EVENTS)
                .map_err(db_error("open issue store"))?;
            txn.open_table(BY_TIME)
                .map_err(db_error("open issue store"))?;
            txn.open_table(USERS)
                .map_err(db_error("open issue store"))?;
            txn.open_table(META).map_err(db_error("open issue store"))?;
        }
        txn.commit().map_err(db_error("open issue store"))?;
        Ok(IssueStore {
            db,
            path,
            max_events_per_issue: max_events_per_issue.max(1),
        })
    }

    /// Groups `events` into issues in one durable commit: new events are
    /// counted, stored and marked not yet indexed; events seen before are
    /// not counted again (and report whether they still need indexing).
    pub fn record(&self, events: Vec<NewEvent>) -> Result<Vec<Recorded>, Error> {
        let act = "record events";
        let txn = self.db.begin_write().map_err(db_error(act))?;
        let mut out = Vec::with_capacity(events.len());
        {
            let mut issues = txn.open_table(ISSUES).map_err(db_error(act))?;
            let mut hashes = txn.open_table(HASHES).map_err(db_error(act))?;
            let mut seen = txn.open_table(SEEN).map_err(db_error(act))?;
            let mut stored = txn.open_table(EVENTS).map_err(db_error(act))?;
            let mut by_time = txn.open_table(BY_TIME).map_err(db_error(act))?;
            let mut users = txn.open_table(USERS).map_err(db_error(act))?;
            let mut meta = txn.open_table(META).map_err(db_error(act))?;
            // Issues touched by this commit, written once at the end.
            let mut touched: HashMap<u64, Issue> = HashMap::new();
            for ev in events {
                let key = (ev.project, ev.event_id.as_str());
                let before = seen.get(key).map_err(db_error(act))?.map(|g| g.value());
                if let Some((issue_id, _, indexed)) = before {
                    let issue = match touched.get(&issue_id) {
                        Some(i) => Some(i.clone()),
                        None => read_issue(&issues, issue_id)?,
                    };
                    if let Some(issue) = issue {
                        out.push(Recorded {
                            issue,
                            duplicate: true,
                            needs_index: !indexed,
                            created: false,
                            regressed: false,
                        });
                    }
                    continue;
                }
                let hash_key = (ev.project, ev.grouping.hash.as_str());
                let existing = hashes
                    .get(hash_key)
                    .map_err(db_error(act))?
                    .map(|g| g.value());
                let (mut issue, created) = match existing {
                    Some(id) => match touched.remove(&id) {
                        Some(i) => (i, false),
                        None => match read_issue(&issues, id)? {
                            Some(i) => (i, false),
                            None => (new_issue(id, &ev), true),
                        },
                    },
                    None => {
                        let id = meta
                            .get(NEXT_ISSUE_ID)
                            .map_err(db_error(act))?
                            .map_or(1, |g| g.value());
                        meta.insert(NEXT_ISSUE_ID, id + 1).map_err(db_error(act))?;
                        hashes.insert(hash_key, id).map_err(db_error(act))?;
                        (new_issue(id, &ev), true)
                    }
                };
                let regressed = apply_event(&mut issue, &ev);
                if let Some(user) = &ev.user {
                    let user_key = (issue.id, xxh3_128(user.as_bytes()));
                    if users.insert(user_key, ()).map_err(db_error(act))?.is_none() {
                        issue.users += 1;
                    }
                }
                seen.insert(key, (issue.id, ev.timestamp_ns, false))
                    .map_err(db_error(act))?;
                by_time
                    .insert(
                        (ev.timestamp_ns, ev.project, ev.event_id.as_str()),
                        issue.id,
                    )
                    .map_err(db_error(act))?;
                let event_key = (issue.id, ev.timestamp_ns, ev.event_id.as_str());
                stored
                    .insert(event_key, ev.json.as_str())
                    .map_err(db_error(act))?;
                issue.stored_events += 1;
                while issue.stored_events > self.max_events_per_issue {
                    let oldest = stored
                        .range((issue.id, i64::MIN, "")..(issue.id.saturating_add(1), i64::MIN, ""))
                        .map_err(db_error(act))?
                        .next()
                        .transpose()
                        .map_err(db_error(act))?
                        .map(|(k, _)| {
                            let (_, ts, id) = k.value();
                            (ts, id.to_string())
                        });
                    let Some((ts, id)) = oldest else {
                        break;
                    };
                    stored
                        .remove((issue.id, ts, id.as_str()))
                        .map_err(db_error(act))?;
                    issue.stored_events -= 1;
                }
                out.push(Recorded {
                    issue: issue.clone(),
                    duplicate: false,
                    needs_index: true,
                    created,
                    regressed,
                });
                touched.insert(issue.id, issue);
            }
            for issue in touched.values() {
                write_issue(&mut issues, issue)?;
            }
        }
        txn.commit().map_err(db_error(act))?;
        Ok(out)
    }

    /// Notes that these events are in the log search. Not synced on its own
    /// (the next commit carries it): losing it only costs an idempotent
    /// re-index of the same events after a crash.
    pub fn mark_indexed(&self, events: &[(u64, String)]) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        let act = "mark events indexed";
        let mut txn = self.db.begin_write().map_err(db_error(act))?;
        txn.set_durability(Durability::None)
            .map_err(db_error(act))?;
        {
            let mut seen = txn.open_table(SEEN).map_err(db_error(act))?;
            for (project, event_id) in events {
                let key = (*project, event_id.as_str());
                let current = seen.get(key).map_err(db_error(act))?.map(|g| g.value());
                if let Some((issue, ts, false)) = current {
                    seen.insert(key, (issue, ts, true)).map_err(db_error(act))?;
                }
            }
        }
        txn.commit().map_err(db_error(act))
    }

    /// One issue.
    pub fn get(&self, id: u64) -> Result<Option<Issue>, Error> {
        let act = "read issue";
        let txn = self.db.begin_read().map_err(db_error(act))?;
        let issues = txn.open_table(ISSUES).map_err(db_error(act))?;
        read_issue(&issues, id)
    }

    /// A page of issues.
    pub fn list(&self, q: &ListQuery) -> Result<IssuePage, Error> {
        let act = "list issues";
        let txn = self.db.begin_read().map_err(db_error(act))?;
        let table = txn.open_table(ISSUES).map_err(db_error(act))?;
        let needle = q.text.as_ref().map(|t| t.to_lowercase());
        let mut matching: Vec<(i64, Issue)> = Vec::new();
        for row in table.iter().map_err(db_error(act))? {
            let (_, bytes) = row.map_err(db_error(act))?;
            let issue = decode_issue(bytes.value())?;
            let keep = q.project.is_none_or(|p| p == issue.project)
                && q.status.is_none_or(|s| s == issue.status)
                && needle.as_ref().is_none_or(|n| {
                    issue.title.to_lowercase().contains(n.as_str())
                        || issue.culprit.to_lowercase().contains(n.as_str())
                });
            if keep {
                matching.push((q.sort.key(&issue), issue));
            }
        }
        matching.sort_by(|(ka, a), (kb, b)| kb.cmp(ka).then(b.id.cmp(&a.id)));
        let after = |(k, i): &(i64, Issue)| q.cursor.is_none_or(|c| (*k, i.id) < c);
        let mut rest = matching.into_iter().filter(after);
        let issues: Vec<(i64, Issue)> = rest.by_ref().take(q.limit).collect();
        let more = rest.next().is_some();
        let next = issues.last().filter(|_| more).map(|(k, i)| (*k, i.id));
        Ok(IssuePage {
            issues: issues.into_iter().map(|(_, i)| i).collect(),
            next,
        })
    }

    /// The newest kept event of an issue.
    pub fn latest_event(&self, id: u64) -> Result<Option<StoredEvent>, Error> {
        Ok(self.events(id, 1, None)?.events.into_iter().next())
    }

    /// A page of an issue's kept events, newest first, strictly before
    /// `cursor` when given.
    pub fn events(
        &self,
        id: u64,
        limit: usize,
        cursor: Option<(i64, String)>,
    ) -> Result<EventPage, Error> {
        let act = "read events";
        let txn = self.db.begin_read().map_err(db_error(act))?;
        let table = txn.open_table(EVENTS).map_err(db_error(act))?;
        let start = (id, i64::MIN, "");
        let rows = match &cursor {
            Some((ts, event_id)) => table.range(start..(id, *ts, event_id.as_str())),
            None => table.range(start..(id.saturating_add(1), i64::MIN, "")),
        }
        .map_err(db_error(act))?;
        let mut events = Vec::new();
        let mut more = false;
        for row in rows.rev() {
            let (k, v) = row.map_err(db_error(act))?;
            if events.len() == limit {
                more = true;
                break;
            }
            let (_, ts, event_id) = k.value();
            let text = v.value();
            events.push(StoredEvent {
                event_id: event_id.to_string(),
                timestamp_ns: ts,
                event: serde_json::from_str(text).unwrap_or_else(|_| Value::from(text)),
            });
        }
        let next = events
            .last()
            .filter(|_| more)
            .map(|e| (e.timestamp_ns, e.event_id.clone()));
        Ok(EventPage { events, next })
    }

    /// Sets an issue's status (resolving at `now_ns`); `None` if there is no
    /// such issue.
    pub fn set_status(&self, id: u64, status: Status, now_ns: i64) -> Result<Option<Issue>, Error> {
        let act = "update issue";
        let txn = self.db.begin_write().map_err(db_error(act))?;
        let updated = {
            let mut issues = txn.open_table(ISSUES).map_err(db_error(act))?;
            let Some(mut issue) = read_issue(&issues, id)? else {
                return Ok(None);
            };
            issue.status = status;
            issue.regressed = false;
            issue.resolved_at_ns = (status == Status::Resolved).then_some(now_ns);
            write_issue(&mut issues, &issue)?;
            issue
        };
        txn.commit().map_err(db_error(act))?;
        Ok(Some(updated))
    }

    /// Forgets events older than `oldest_ns` (and their ids: replays that old
    /// are dropped as past retention anyway), and issues whose newest event
    /// is older; returns how many events went.
    pub fn prune(&self, oldest_ns: i64) -> Result<usize, Error> {
        let act = "apply retention to issues";
        let txn = self.db.begin_write().map_err(db_error(act))?;
        let mut pruned = 0;
        {
            let mut by_time = txn.open_table(BY_TIME).map_err(db_error(act))?;
            let mut seen = txn.open_table(SEEN).map_err(db_error(act))?;
            let mut stored = txn.open_table(EVENTS).map_err(db_error(act))?;
            let mut issues = txn.open_table(ISSUES).map_err(db_error(act))?;
            let mut hashes = txn.open_table(HASHES).map_err(db_error(act))?;
            let mut users = txn.open_table(USERS).map_err(db_error(act))?;
            let expired: Vec<(i64, u64, String, u64)> = by_time
                .range(..(oldest_ns, 0, ""))
                .map_err(db_error(act))?
                .map(|row| {
                    row.map(|(k, v)| {
                        let (ts, project, id) = k.value();
                        (ts, project, id.to_string(), v.value())
                    })
                })
                .collect::<Result<_, _>>()
                .map_err(db_error(act))?;
            let mut touched: HashMap<u64, Issue> = HashMap::new();
            for (ts, project, event_id, issue_id) in expired {
                by_time
                    .remove((ts, project, event_id.as_str()))
                    .map_err(db_error(act))?;
                seen.remove((project, event_id.as_str()))
                    .map_err(db_error(act))?;
                let removed = stored
                    .remove((issue_id, ts, event_id.as_str()))
                    .map_err(db_error(act))?
                    .is_some();
                if removed {
                    let issue = match touched.remove(&issue_id) {
                        Some(i) => Some(i),
                        None => read_issue(&issues, issue_id)?,
                    };
                    if let Some(mut issue) = issue {
                        issue.stored_events = issue.stored_events.saturating_sub(1);
                        touched.insert(issue_id, issue);
                    }
                }
                pruned += 1;
            }
            for issue in touched.values() {
                write_issue(&mut issues, issue)?;
            }
            // Issues with nothing newer than the cut go, with their hashes and users.
            let mut gone = Vec::new();
            for row in issues.iter().map_err(db_error(act))? {
                let (_, bytes) = row.map_err(db_error(act))?;
                let issue = decode_issue(bytes.value())?;
                if issue.last_seen_ns < oldest_ns {
                    gone.push(issue);
                }
            }
            for issue in gone {
                issues.remove(issue.id).map_err(db_error(act))?;
                for h in &issue.hashes {
                    hashes
                        .remove((issue.project, h.as_str()))
                        .map_err(db_error(act))?;
                }
                users
                    .retain_in((issue.id, 0)..=(issue.id, u128::MAX), |_, _| false)
                    .map_err(db_error(act))?;
            }
        }
        txn.commit().map_err(db_error(act))?;
        Ok(pruned)
    }

    /// How many events ids are remembered (tests, metrics).
    pub fn seen_count(&self) -> Result<u64, Error> {
        let act = "count seen events";
        let txn = self.db.begin_read().map_err(db_error(act))?;
        let seen = txn.open_table(SEEN).map_err(db_error(act))?;
        seen.len().map_err(db_error(act))
    }
}

fn new_issue(id: u64, ev: &NewEvent) -> Issue {
    Issue {
        id,
        project: ev.project,
        hashes: vec![ev.grouping.hash.clone()],
        title: ev.grouping.title.clone(),
        culprit: ev.grouping.culprit.clone(),
        level: ev.level.clone(),
        method: ev.grouping.method.as_str().to_string(),
        status: Status::Unresolved,
        regressed: false,
        resolved_at_ns: None,
        first_seen_ns: ev.timestamp_ns,
        last_seen_ns: ev.timestamp_ns,
        count: 0,
        users: 0,
        releases: Vec::new(),
        environments: Vec::new(),
        latest_event_id: ev.event_id.clone(),
        stored_events: 0,
    }
}

/// Counts `ev` into `issue`; returns whether it reopened a resolved issue.
fn apply_event(issue: &mut Issue, ev: &NewEvent) -> bool {
    issue.count += 1;
    issue.first_seen_ns = issue.first_seen_ns.min(ev.timestamp_ns);
    if ev.timestamp_ns >= issue.last_seen_ns || issue.count == 1 {
        issue.last_seen_ns = ev.timestamp_ns;
        issue.latest_event_id = ev.event_id.clone();
        issue.title = ev.grouping.title.clone();
        issue.culprit = ev.grouping.culprit.clone();
        issue.level = ev.level.clone();
    }
    add_bounded(&mut issue.releases, ev.release.as_deref());
    add_bounded(&mut issue.environments, ev.environment.as_deref());
    // An event from before the resolution (a late retry, an offline client)
    // is not a regression.
    let regressed = issue.status == Status::Resolved
        && issue.resolved_at_ns.is_none_or(|at| ev.timestamp_ns > at);
    if regressed {
        issue.status = Status::Unresolved;
        issue.regressed = true;
        issue.resolved_at_ns = None;
    }
    regressed
}

fn add_bounded(set: &mut Vec<String>, value: Option<&str>) {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return;
    };
    let v: String = v.chars().take(MAX_SET_VALUE_CHARS).collect();
    if set.len() < MAX_SET_VALUES && !set.contains(&v) {
        set.push(v);
    }
}

fn read_issue(
    table: &impl ReadableTable<u64, &'static [u8]>,
    id: u64,
) -> Result<Option<Issue>, Error> {
    let act = "read issue";
    match table.get(id).map_err(db_error(act))? {
        Some(bytes) => decode_issue(bytes.value()).map(Some),
        None => Ok(None),
    }
}

fn decode_issue(bytes: &[u8]) -> Result<Issue, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::IssueStore {
        action: "decode issue",
        reason: e.to_string(),
    })
}

fn write_issue(table: &mut redb::Table<u64, &'static [u8]>, issue: &Issue) -> Result<(), Error> {
    let bytes = serde_json::to_vec(issue).map_err(|e| Error::IssueStore {
        action: "encode issue",
        reason: e.to_string(),
    })?;
    table
        .insert(issue.id, bytes.as_slice())
        .map_err(db_error("write issue"))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
