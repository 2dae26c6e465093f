//! The notification log: per (receiver, group key), which alerts were last
//! notified as firing and as resolved, and when. A flush consults it to send
//! only what changed (Alertmanager's deduplication), and it is persisted in
//! `<data_dir>/alerts/state.redb` so that a restart sends no duplicate and
//! still sends the resolve of what it had notified.
//!
//! Reads come from memory; writes go to the redb file first (blocking: call
//! them from `spawn_blocking`). This module must not decide whether to send.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::Error;

/// (receiver, group key) → [`Entry`] as JSON.
const NFLOG: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("nflog");

/// Entries not written for this long are dropped when the log is opened
/// (Alertmanager's default data retention, 120h).
pub const RETENTION: chrono::TimeDelta = chrono::TimeDelta::hours(120);

/// What was last notified to one receiver for one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Fingerprints notified as firing.
    pub firing: BTreeSet<String>,
    /// Fingerprints notified as resolved.
    pub resolved: BTreeSet<String>,
    /// When the notification was decided.
    pub sent_at: DateTime<Utc>,
}

/// The notification log.
#[derive(Debug)]
pub struct Nflog {
    db: Arc<Database>,
    mem: Mutex<HashMap<(String, String), Entry>>,
}

fn db_error<E: Into<redb::Error>>(action: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::AlertStore {
        action,
        reason: e.into().to_string(),
    }
}

impl Nflog {
    /// Loads the log from `db`, dropping entries older than [`RETENTION`]
    /// at `now` and unreadable ones (counted in the returned number).
    pub fn open(db: Arc<Database>, now: DateTime<Utc>) -> Result<(Nflog, usize), Error> {
        let act = "open notification log";
        let txn = db.begin_write().map_err(db_error(act))?;
        let mut mem = HashMap::new();
        let dropped = {
            let mut table = txn.open_table(NFLOG).map_err(db_error(act))?;
            let mut stale: Vec<(String, String)> = Vec::new();
            for row in table.iter().map_err(db_error(act))? {
                let (k, v) = row.map_err(db_error(act))?;
                let (receiver, group) = k.value();
                let key = (receiver.to_string(), group.to_string());
                match serde_json::from_slice::<Entry>(v.value()) {
                    Ok(e) if now - e.sent_at < RETENTION => {
                        mem.insert(key, e);
                    }
                    _ => stale.push(key),
                }
            }
            for (r, g) in &stale {
                table
                    .remove((r.as_str(), g.as_str()))
                    .map_err(db_error(act))?;
            }
            stale.len()
        };
        txn.commit().map_err(db_error(act))?;
        Ok((
            Nflog {
                db,
                mem: Mutex::new(mem),
            },
            dropped,
        ))
    }

    /// The last entry for a receiver and group.
    pub fn get(&self, receiver: &str, group_key: &str) -> Option<Entry> {
        let mem = self.mem.lock().unwrap_or_else(|p| p.into_inner());
        mem.get(&(receiver.to_string(), group_key.to_string()))
            .cloned()
    }

    /// Records a notification, durably before it is visible. Blocking.
    pub fn log(&self, receiver: &str, group_key: &str, entry: Entry) -> Result<(), Error> {
        let act = "write notification log";
        let json = serde_json::to_vec(&entry).map_err(|e| Error::AlertStore {
            action: act,
            reason: e.to_string(),
        })?;
        let txn = self.db.begin_write().map_err(db_error(act))?;
        {
            let mut table = txn.open_table(NFLOG).map_err(db_error(act))?;
            table
                .insert((receiver, group_key), json.as_slice())
                .map_err(db_error(act))?;
        }
        txn.commit().map_err(db_error(act))?;
        let mut mem = self.mem.lock().unwrap_or_else(|p| p.into_inner());
        mem.insert((receiver.to_string(), group_key.to_string()), entry);
        Ok(())
    }

    /// Forgets a group whose alerts are all resolved and notified. Blocking.
    pub fn remove(&self, receiver: &str, group_key: &str) -> Result<(), Error> {
        let act = "write notification log";
        let txn = self.db.begin_write().map_err(db_error(act))?;
        {
            let mut table = txn.open_table(NFLOG).map_err(db_error(act))?;
            table.remove((receiver, group_key)).map_err(db_error(act))?;
        }
        txn.commit().map_err(db_error(act))?;
        let mut mem = self.mem.lock().unwrap_or_else(|p| p.into_inner());
        mem.remove(&(receiver.to_string(), group_key.to_string()));
        Ok(())
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.mem.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a flush with these (unmuted) `firing` and `resolved`
/// fingerprints must notify, given the last `entry` (Alertmanager's
/// deduplication):
///
/// - never notified: only if something fires;
/// - an alert fires that was not in the last notification's firing set;
/// - nothing fires any more but the last notification had firing alerts
///   (the "all resolved" notification; with `send_resolved` off nothing is
///   sent, but the log forgets the firing set);
/// - with `send_resolved`, an alert last notified as firing has resolved;
/// - otherwise, once `repeat` has passed since the last notification.
pub fn needs_update(
    entry: Option<&Entry>,
    firing: &BTreeSet<String>,
    resolved: &BTreeSet<String>,
    send_resolved: bool,
    repeat: std::time::Duration,
    now: DateTime<Utc>,
) -> bool {
    let Some(e) = entry else {
        return !firing.is_empty();
    };
    if !firing.is_subset(&e.firing) {
        return true;
    }
    if firing.is_empty() {
        return !e.firing.is_empty();
    }
    if send_resolved && resolved.iter().any(|fp| e.firing.contains(fp)) {
        return true;
    }
    let repeat = chrono::TimeDelta::from_std(repeat).unwrap_or(chrono::TimeDelta::MAX);
    now - e.sent_at >= repeat
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(fps: &[&str]) -> BTreeSet<String> {
        fps.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn needs_update_follows_alertmanager_dedup() {
        let t0 = DateTime::<Utc>::UNIX_EPOCH + chrono::TimeDelta::days(20_000);
        let four_h = std::time::Duration::from_secs(4 * 3600);
        let entry = |firing: &[&str], resolved: &[&str]| Entry {
            firing: set(firing),
            resolved: set(resolved),
            sent_at: t0,
        };
        let min = chrono::TimeDelta::minutes(1);
        #[allow(clippy::type_complexity)]
        let cases: &[(
            Option<Entry>,
            &[&str],
            &[&str],
            bool,
            chrono::TimeDelta,
            bool,
            &str,
        )] = &[
            (None, &["a"], &[], true, min, true, "first notification"),
            (
                None,
                &[],
                &["a"],
                true,
                min,
                false,
                "only resolved, never notified",
            ),
            (
                Some(entry(&["a"], &[])),
                &["a"],
                &[],
                true,
                min,
                false,
                "unchanged",
            ),
            (
                Some(entry(&["a"], &[])),
                &["a", "b"],
                &[],
                false,
                min,
                true,
                "new alert",
            ),
            (
                Some(entry(&["a", "b"], &[])),
                &["a"],
                &["b"],
                true,
                min,
                true,
                "resolved, send_resolved",
            ),
            (
                Some(entry(&["a", "b"], &[])),
                &["a"],
                &["b"],
                false,
                min,
                false,
                "resolved, no send_resolved",
            ),
            (
                Some(entry(&["a"], &[])),
                &["a"],
                &["c"],
                true,
                min,
                false,
                "resolved but never notified firing",
            ),
            (
                Some(entry(&["a"], &[])),
                &[],
                &["a"],
                false,
                min,
                true,
                "all resolved",
            ),
            (
                Some(entry(&[], &["a"])),
                &[],
                &["a"],
                true,
                min,
                false,
                "all resolved already notified",
            ),
            (
                Some(entry(&["a"], &[])),
                &["a"],
                &[],
                true,
                chrono::TimeDelta::hours(4),
                true,
                "repeat interval passed",
            ),
            (
                Some(entry(&["a"], &[])),
                &["a"],
                &[],
                true,
                chrono::TimeDelta::minutes(239),
                false,
                "repeat interval not passed",
            ),
        ];
        for (entry, firing, resolved, send_resolved, after, want, what) in cases {
            let got = needs_update(
                entry.as_ref(),
                &set(firing),
                &set(resolved),
                *send_resolved,
                four_h,
                t0 + *after,
            );
            assert_eq!(got, *want, "{what}");
        }
    }

    #[test]
    fn entries_survive_reopening_and_old_ones_expire() {
        let dir = crate::test_support::tempdir();
        let path = dir.path().join("state.redb");
        let t0 = DateTime::<Utc>::UNIX_EPOCH + chrono::TimeDelta::days(20_000);
        let e = Entry {
            firing: set(&["a"]),
            resolved: set(&[]),
            sent_at: t0,
        };
        {
            let db = Arc::new(Database::create(&path).unwrap_or_else(|e| panic!("{e}")));
            let (log, _) = Nflog::open(db, t0).unwrap_or_else(|e| panic!("{e}"));
            log.log("ops", "{}:{}", e.clone())
                .unwrap_or_else(|e| panic!("{e}"));
            log.log("ops", "{}:{x=\"1\"}", e.clone())
                .unwrap_or_else(|e| panic!("{e}"));
            log.remove("ops", "{}:{x=\"1\"}")
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let db = Arc::new(Database::create(&path).unwrap_or_else(|e| panic!("{e}")));
        let (log, dropped) = Nflog::open(Arc::clone(&db), t0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (log.get("ops", "{}:{}"), log.len(), dropped),
            (Some(e), 1, 0)
        );
        drop(log);
        let (log, dropped) = Nflog::open(db, t0 + RETENTION).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((log.len(), dropped), (0, 1));
    }
}
