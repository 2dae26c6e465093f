//! The state of each rule's alerts — pending or firing, active since when —
//! persisted in `<data_dir>/alerts/rules.redb`, so that a restart neither
//! restarts a `for` countdown nor announces a firing alert as new.
//!
//! One row per (rule, fingerprint) holds the alert as JSON, and one row per
//! rule the hash of the definition it was computed under: after a restart or
//! reload, state is kept only for a rule whose definition did not change.
//! redb for the same reasons as the issue store (ACID commits, one file, pure
//! Rust). Blocking; callers on the reactor use `spawn_blocking`.
//!
//! This module must not evaluate rules or send alerts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::alert::model::Labels;

/// (rule name, fingerprint) → [`ActiveAlert`] as JSON.
const ALERTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("alerts");
/// Rule name → hash of its definition.
const RULES: TableDefinition<&str, &str> = TableDefinition::new("rules");
/// Counters (`max_issue_id`: the newest issue the error rules have seen).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Meta key of the newest issue id seen by the error rules.
pub const MAX_ISSUE_ID: &str = "max_issue_id";

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The condition holds, for less than the rule's `for`.
    Pending,
    /// Sent to the dispatcher as firing.
    Firing,
}

impl Phase {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Firing => "firing",
        }
    }
}

/// One active (pending or firing) alert of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveAlert {
    /// Its identifying labels.
    pub labels: Labels,
    /// Pending or firing.
    pub phase: Phase,
    /// When the condition started to hold (nanoseconds since the epoch).
    pub active_since_ns: i64,
    /// When it started firing (the alert's `startsAt`).
    pub fired_at_ns: Option<i64>,
    /// Since when the condition no longer holds while the alert is kept
    /// firing by `keep_firing_for`.
    pub lost_since_ns: Option<i64>,
    /// The value at the last evaluation where the condition held.
    pub value: f64,
    /// The link to what fired it.
    pub generator_url: String,
    /// Error rules fired by an event (new issue, regression): when it happened.
    #[serde(default)]
    pub triggered_ns: Option<i64>,
    /// Error rules: the issue.
    #[serde(default)]
    pub issue_id: Option<u64>,
}

/// What was persisted for one rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SavedRule {
    /// Hash of the definition the alerts were computed under.
    pub definition: String,
    /// Alerts by fingerprint.
    pub alerts: BTreeMap<String, ActiveAlert>,
}

/// The state file.
pub struct StateStore {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.path)
            .finish()
    }
}

fn db_error<E: Into<redb::Error>>(action: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::AlertState {
        action,
        reason: e.into().to_string(),
    }
}

impl StateStore {
    /// Opens (or creates) `dir/rules.redb`.
    pub fn open(dir: &Path) -> Result<StateStore, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            action: "create alert state directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("rules.redb");
        let act = "open rule state";
        let db = Database::create(&path).map_err(db_error(act))?;
        let txn = db.begin_write().map_err(db_error(act))?;
        {
            txn.open_table(ALERTS).map_err(db_error(act))?;
            txn.open_table(RULES).map_err(db_error(act))?;
            txn.open_table(META).map_err(db_error(act))?;
        }
        txn.commit().map_err(db_error(act))?;
        Ok(StateStore { db, path })
    }

    /// Everything persisted, by rule name. A row that cannot be read back is
    /// skipped with a warning: that alert starts over, the others do not.
    pub fn load(&self) -> Result<HashMap<String, SavedRule>, Error> {
        let act = "read rule state";
        let txn = self.db.begin_read().map_err(db_error(act))?;
        let rules = txn.open_table(RULES).map_err(db_error(act))?;
        let alerts = txn.open_table(ALERTS).map_err(db_error(act))?;
        let mut out: HashMap<String, SavedRule> = HashMap::new();
        for row in rules.iter().map_err(db_error(act))? {
            let (name, def) = row.map_err(db_error(act))?;
            out.entry(name.value().to_string()).or_default().definition = def.value().to_string();
        }
        for row in alerts.iter().map_err(db_error(act))? {
            let (key, bytes) = row.map_err(db_error(act))?;
            let (rule, fingerprint) = key.value();
            match serde_json::from_slice::<ActiveAlert>(bytes.value()) {
                Ok(alert) => {
                    out.entry(rule.to_string())
                        .or_default()
                        .alerts
                        .insert(fingerprint.to_string(), alert);
                }
                Err(e) => {
                    tracing::warn!(rule, fingerprint, error = %e, "unreadable alert state skipped");
                }
            }
        }
        Ok(out)
    }

    /// Replaces what is kept for `rule` (durably, in one commit).
    pub fn save(
        &self,
        rule: &str,
        definition: &str,
        alerts: &BTreeMap<String, ActiveAlert>,
    ) -> Result<(), Error> {
        let act = "write rule state";
        let txn = self.db.begin_write().map_err(db_error(act))?;
        {
            let mut rules = txn.open_table(RULES).map_err(db_error(act))?;
            rules.insert(rule, definition).map_err(db_error(act))?;
            let mut table = txn.open_table(ALERTS).map_err(db_error(act))?;
            remove_rule_alerts(&mut table, rule)?;
            for (fingerprint, alert) in alerts {
                let bytes = serde_json::to_vec(alert).map_err(|e| Error::AlertState {
                    action: act,
                    reason: e.to_string(),
                })?;
                table
                    .insert((rule, fingerprint.as_str()), bytes.as_slice())
                    .map_err(db_error(act))?;
            }
        }
        txn.commit().map_err(db_error(act))
    }

    /// Forgets a rule and its alerts.
    pub fn remove(&self, rule: &str) -> Result<(), Error> {
        let act = "remove rule state";
        let txn = self.db.begin_write().map_err(db_error(act))?;
        {
            let mut rules = txn.open_table(RULES).map_err(db_error(act))?;
            rules.remove(rule).map_err(db_error(act))?;
            let mut table = txn.open_table(ALERTS).map_err(db_error(act))?;
            remove_rule_alerts(&mut table, rule)?;
        }
        txn.commit().map_err(db_error(act))
    }

    /// A counter (0 when never set).
    pub fn meta(&self, key: &str) -> Result<u64, Error> {
        let act = "read rule state";
        let txn = self.db.begin_read().map_err(db_error(act))?;
        let meta = txn.open_table(META).map_err(db_error(act))?;
        Ok(meta
            .get(key)
            .map_err(db_error(act))?
            .map_or(0, |g| g.value()))
    }

    /// Sets a counter.
    pub fn set_meta(&self, key: &str, value: u64) -> Result<(), Error> {
        let act = "write rule state";
        let txn = self.db.begin_write().map_err(db_error(act))?;
        {
            let mut meta = txn.open_table(META).map_err(db_error(act))?;
            meta.insert(key, value).map_err(db_error(act))?;
        }
        txn.commit().map_err(db_error(act))
    }
}

fn remove_rule_alerts(
    table: &mut redb::Table<(&'static str, &'static str), &'static [u8]>,
    rule: &str,
) -> Result<(), Error> {
    let act = "write rule state";
    let mut keys = Vec::new();
    for row in table.range((rule, "")..).map_err(db_error(act))? {
        let (k, _) = row.map_err(db_error(act))?;
        let (r, f) = k.value();
        if r != rule {
            break;
        }
        keys.push(f.to_string());
    }
    for f in keys {
        table.remove((rule, f.as_str())).map_err(db_error(act))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn alert(value: f64) -> ActiveAlert {
        ActiveAlert {
            labels: Labels::from([("alertname".into(), "A".into())]),
            phase: Phase::Pending,
            active_since_ns: 5,
            fired_at_ns: None,
            lost_since_ns: None,
            value,
            generator_url: String::new(),
            triggered_ns: None,
            issue_id: None,
        }
    }

    #[test]
    fn saved_alerts_come_back_after_reopen_and_rules_are_separate() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = StateStore::open(dir.path()).unwrap();
            s.save(
                "a",
                "h1",
                &BTreeMap::from([("f1".into(), alert(1.0)), ("f2".into(), alert(2.0))]),
            )
            .unwrap();
            s.save("ab", "h2", &BTreeMap::from([("f1".into(), alert(3.0))]))
                .unwrap();
            // Replacing `a` leaves `ab` alone.
            s.save("a", "h1", &BTreeMap::from([("f2".into(), alert(4.0))]))
                .unwrap();
            s.set_meta(MAX_ISSUE_ID, 9).unwrap();
        }
        let s = StateStore::open(dir.path()).unwrap();
        let all = s.load().unwrap();
        assert_eq!(all["a"].definition, "h1");
        assert_eq!(all["a"].alerts.keys().collect::<Vec<_>>(), ["f2"]);
        assert_eq!(all["a"].alerts["f2"].value, 4.0);
        assert_eq!(all["ab"].alerts["f1"].value, 3.0);
        assert_eq!(s.meta(MAX_ISSUE_ID).unwrap(), 9);
        s.remove("a").unwrap();
        let all = s.load().unwrap();
        assert!(!all.contains_key("a"));
        assert!(all.contains_key("ab"));
    }
}
