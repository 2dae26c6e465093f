//! Silences: label matchers and a time window during which matching alerts
//! are not notified, created and expired through the API
//! (`/api/v1/silences`) and `mecha silence`, persisted in
//! `<data_dir>/alerts/state.redb`.
//!
//! A silence is *pending* before `startsAt`, *active* until `endsAt`, then
//! *expired*; expiring one sets `endsAt` to now, so its alerts are notified
//! at their group's next flush. Expired silences are kept for
//! [`RETENTION`] to be listed, then dropped. Writes are blocking (call them
//! from `spawn_blocking`); this module must not notify.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use mecha_config::{Matcher, matches_all};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::alert::model::Labels;

/// Silence id → [`Silence`] as JSON.
const SILENCES: TableDefinition<&str, &[u8]> = TableDefinition::new("silences");

/// Expired silences are kept this long (Alertmanager's default retention).
pub const RETENTION: chrono::TimeDelta = chrono::TimeDelta::hours(120);

/// Most silences kept (active, pending and expired).
pub const MAX_SILENCES: usize = 10_000;

/// One silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    /// Its id (a UUID).
    pub id: String,
    /// Every matcher must match an alert's labels for it to be silenced.
    pub matchers: Vec<Matcher>,
    /// Start of the window.
    pub starts_at: DateTime<Utc>,
    /// End of the window.
    pub ends_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Who made it.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

/// Where a silence stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SilenceState {
    /// Not started yet.
    Pending,
    /// Silencing.
    Active,
    /// Over.
    Expired,
}

impl SilenceState {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SilenceState::Pending => "pending",
            SilenceState::Active => "active",
            SilenceState::Expired => "expired",
        }
    }
}

impl Silence {
    /// Its state at `now`.
    pub fn state(&self, now: DateTime<Utc>) -> SilenceState {
        if now >= self.ends_at {
            SilenceState::Expired
        } else if now < self.starts_at {
            SilenceState::Pending
        } else {
            SilenceState::Active
        }
    }

    /// Whether it silences an alert with `labels` at `now`.
    pub fn mutes(&self, labels: &Labels, now: DateTime<Utc>) -> bool {
        self.state(now) == SilenceState::Active && matches_all(&self.matchers, labels)
    }

    /// Checks what a new or updated silence must satisfy.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<(), String> {
        if self.matchers.is_empty() {
            return Err("expected at least one matcher, found none".into());
        }
        // A silence whose matchers all match the empty string would silence
        // every alert without those labels: almost surely a mistake.
        if self.matchers.iter().all(|m| m.matches("")) {
            return Err(
                "at least one matcher must not match the empty string (it would silence every alert)"
                    .into(),
            );
        }
        if self.ends_at <= now {
            return Err(format!(
                "expected endsAt in the future, found {}",
                self.ends_at.to_rfc3339()
            ));
        }
        if self.ends_at <= self.starts_at {
            return Err(format!(
                "expected endsAt after startsAt, found {} and {}",
                self.ends_at.to_rfc3339(),
                self.starts_at.to_rfc3339()
            ));
        }
        if self.created_by.trim().is_empty() {
            return Err("expected createdBy, found an empty string".into());
        }
        Ok(())
    }
}

/// The silence store.
#[derive(Debug)]
pub struct Silences {
    db: Arc<Database>,
    mem: RwLock<BTreeMap<String, Silence>>,
}

fn db_error<E: Into<redb::Error>>(action: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::AlertStore {
        action,
        reason: e.into().to_string(),
    }
}

impl Silences {
    /// Loads the silences in `db`, dropping those expired for longer than
    /// [`RETENTION`] at `now`.
    pub fn open(db: Arc<Database>, now: DateTime<Utc>) -> Result<Silences, Error> {
        let act = "open silences";
        let txn = db.begin_write().map_err(db_error(act))?;
        let mut mem = BTreeMap::new();
        {
            let mut table = txn.open_table(SILENCES).map_err(db_error(act))?;
            let mut stale = Vec::new();
            for row in table.iter().map_err(db_error(act))? {
                let (k, v) = row.map_err(db_error(act))?;
                match serde_json::from_slice::<Silence>(v.value()) {
                    Ok(s) if now - s.ends_at < RETENTION => {
                        mem.insert(s.id.clone(), s);
                    }
                    Ok(_) => stale.push(k.value().to_string()),
                    Err(e) => {
                        tracing::warn!(id = k.value(), error = %e, "dropping an unreadable silence");
                        stale.push(k.value().to_string());
                    }
                }
            }
            for id in &stale {
                table.remove(id.as_str()).map_err(db_error(act))?;
            }
        }
        txn.commit().map_err(db_error(act))?;
        Ok(Silences {
            db,
            mem: RwLock::new(mem),
        })
    }

    /// Every silence, by id.
    pub fn list(&self) -> Vec<Silence> {
        self.mem
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// One silence.
    pub fn get(&self, id: &str) -> Option<Silence> {
        self.mem
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// The ids of the active silences that mute `labels` at `now`.
    pub fn silenced_by(&self, labels: &Labels, now: DateTime<Utc>) -> Vec<String> {
        self.mem
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| s.mutes(labels, now))
            .map(|s| s.id.clone())
            .collect()
    }

    /// Counts by state at `now`: (pending, active, expired).
    pub fn counts(&self, now: DateTime<Utc>) -> (usize, usize, usize) {
        let mem = self.mem.read().unwrap_or_else(|p| p.into_inner());
        let mut c = (0, 0, 0);
        for s in mem.values() {
            match s.state(now) {
                SilenceState::Pending => c.0 += 1,
                SilenceState::Active => c.1 += 1,
                SilenceState::Expired => c.2 += 1,
            }
        }
        c
    }

    /// Stores a new silence (no id yet: one is given) or replaces a
    /// pending or active one with the same id. Returns the id. Blocking.
    pub fn upsert(&self, mut silence: Silence, now: DateTime<Utc>) -> Result<String, Error> {
        let invalid = |reason: String| Error::Invalid {
            what: "silence",
            reason,
        };
        if silence.id.is_empty() {
            silence.id = uuid::Uuid::new_v4().to_string();
            // A window that began in the past begins now (as Alertmanager).
            if silence.starts_at < now {
                silence.starts_at = now;
            }
        } else {
            match self.get(&silence.id) {
                None => {
                    return Err(Error::NotFound {
                        what: "silence",
                        id: silence.id,
                    });
                }
                Some(old) if old.state(now) == SilenceState::Expired => {
                    return Err(invalid(format!(
                        "silence {} has expired and cannot be changed; create a new one",
                        old.id
                    )));
                }
                Some(_) => {}
            }
        }
        silence.updated_at = now;
        silence.validate(now).map_err(invalid)?;
        {
            let mem = self.mem.read().unwrap_or_else(|p| p.into_inner());
            if mem.len() >= MAX_SILENCES && !mem.contains_key(&silence.id) {
                return Err(invalid(format!(
                    "already {MAX_SILENCES} silences; expire some first"
                )));
            }
        }
        self.write(&silence)?;
        let id = silence.id.clone();
        self.mem
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), silence);
        Ok(id)
    }

    /// Expires a silence at `now` and returns it. Blocking.
    pub fn expire(&self, id: &str, now: DateTime<Utc>) -> Result<Silence, Error> {
        let Some(mut s) = self.get(id) else {
            return Err(Error::NotFound {
                what: "silence",
                id: id.to_string(),
            });
        };
        match s.state(now) {
            SilenceState::Expired => {
                return Err(Error::Invalid {
                    what: "silence",
                    reason: format!("silence {id} has already expired"),
                });
            }
            SilenceState::Pending => {
                s.starts_at = now;
                s.ends_at = now;
            }
            SilenceState::Active => s.ends_at = now,
        }
        s.updated_at = now;
        self.write(&s)?;
        self.mem
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(s.id.clone(), s.clone());
        Ok(s)
    }

    fn write(&self, s: &Silence) -> Result<(), Error> {
        let act = "write silence";
        let json = serde_json::to_vec(s).map_err(|e| Error::AlertStore {
            action: act,
            reason: e.to_string(),
        })?;
        let txn = self.db.begin_write().map_err(db_error(act))?;
        {
            let mut table = txn.open_table(SILENCES).map_err(db_error(act))?;
            table
                .insert(s.id.as_str(), json.as_slice())
                .map_err(db_error(act))?;
        }
        txn.commit().map_err(db_error(act))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::TimeDelta::days(20_000)
    }

    fn silence(matchers: &[&str], from_min: i64, to_min: i64) -> Silence {
        Silence {
            id: String::new(),
            matchers: matchers
                .iter()
                .map(|m| Matcher::parse(m).unwrap_or_else(|e| panic!("{e}")))
                .collect(),
            starts_at: t0() + chrono::TimeDelta::minutes(from_min),
            ends_at: t0() + chrono::TimeDelta::minutes(to_min),
            updated_at: t0(),
            created_by: "ann".into(),
            comment: "deploy".into(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn silences_mute_while_active_and_survive_reopening() {
        let dir = crate::test_support::tempdir();
        let path = dir.path().join("state.redb");
        let db = Arc::new(Database::create(&path).unwrap_or_else(|e| panic!("{e}")));
        let store = Silences::open(Arc::clone(&db), t0()).unwrap_or_else(|e| panic!("{e}"));
        let id = store
            .upsert(
                silence(&["alertname=\"Down\"", "namespace=~\"shop.*\""], 10, 70),
                t0(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let shop = labels(&[("alertname", "Down"), ("namespace", "shop-eu")]);
        let bank = labels(&[("alertname", "Down"), ("namespace", "bank")]);
        let at = |m: i64| t0() + chrono::TimeDelta::minutes(m);
        assert!(store.silenced_by(&shop, at(5)).is_empty(), "pending");
        assert_eq!(store.silenced_by(&shop, at(10)), std::slice::from_ref(&id));
        assert!(store.silenced_by(&bank, at(10)).is_empty());
        assert_eq!(store.counts(at(10)), (0, 1, 0));
        let expired = store.expire(&id, at(20)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(expired.ends_at, at(20));
        assert!(store.silenced_by(&shop, at(20)).is_empty());
        assert!(matches!(
            store.expire(&id, at(21)),
            Err(Error::Invalid { .. })
        ));
        drop(store);
        let store = Silences::open(Arc::clone(&db), at(30)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.get(&id).map(|s| s.ends_at), Some(at(20)));
        drop(store);
        let store = Silences::open(db, at(20) + RETENTION).unwrap_or_else(|e| panic!("{e}"));
        assert!(store.list().is_empty());
    }

    #[test]
    fn invalid_silences_are_refused_with_a_reason() {
        let dir = crate::test_support::tempdir();
        let db =
            Arc::new(Database::create(dir.path().join("s.redb")).unwrap_or_else(|e| panic!("{e}")));
        let store = Silences::open(db, t0()).unwrap_or_else(|e| panic!("{e}"));
        let cases = [
            (silence(&[], 0, 10), "at least one matcher"),
            (silence(&["a=~\".*\""], 0, 10), "empty string"),
            (silence(&["a=\"1\""], 10, 5), "endsAt after startsAt"),
            (silence(&["a=\"1\""], -20, -10), "endsAt in the future"),
        ];
        for (s, want) in cases {
            match store.upsert(s, t0()) {
                Err(Error::Invalid { reason, .. }) => assert!(reason.contains(want), "{reason}"),
                other => panic!("expected {want:?}, got {other:?}"),
            }
        }
        let mut unknown = silence(&["a=\"1\""], 0, 10);
        unknown.id = "nope".into();
        assert!(matches!(
            store.upsert(unknown, t0()),
            Err(Error::NotFound { .. })
        ));
    }
}
