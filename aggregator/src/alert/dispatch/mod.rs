//! The dispatcher: Alertmanager's pipeline between the alerts that rules (or
//! the bridge) put and the receivers. Each alert is matched against the
//! routing tree ([`route`]), added to one aggregation group per matched
//! route (`group`), and each group is flushed on its timers through
//! silences ([`silence`]), inhibition ([`inhibit`]) and the notification log
//! ([`nflog`]) that decides what is new.
//!
//! State that must survive a restart — the notification log and silences —
//! lives in `<data_dir>/alerts/state.redb`; the alerts themselves are
//! rebuilt from the producers' re-puts. Time comes from `tokio::time` (and a
//! [`Clock`] that follows it in tests), so the timers run under paused time.
//! This module must not evaluate rules or format messages.

pub(crate) mod group;
pub mod inhibit;
pub mod nflog;
pub mod route;
pub mod silence;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use mecha_config::{InhibitRuleConfig, RouteConfig};
use redb::Database;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Error;
use crate::alert::AlertSink;
use crate::alert::model::{Alert, AlertStatus};
use crate::alert::notify::Notifier;
use crate::metrics::{DiscardReason, Metrics};

use self::group::Group;
use self::inhibit::Inhibitor;
use self::nflog::Nflog;
use self::route::Route;
use self::silence::{Silence, Silences};

/// Most distinct alerts held; further new ones are dropped and counted.
pub const MAX_ALERTS: usize = 100_000;

/// How often resolved alerts are forgotten and the gauges refreshed.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(15);

/// Wall-clock time for alert and silence timestamps.
#[derive(Debug, Clone)]
pub enum Clock {
    /// The system clock.
    System,
    /// Starts at a given moment and advances with `tokio::time` (so that it
    /// follows paused time in tests).
    Tokio {
        /// The wall-clock time at `at`.
        wall: DateTime<Utc>,
        /// The tokio instant of `wall`.
        at: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock at `wall` now, advancing with tokio's time.
    pub fn starting_at(wall: DateTime<Utc>) -> Clock {
        Clock::Tokio {
            wall,
            at: tokio::time::Instant::now(),
        }
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Tokio { wall, at } => chrono::TimeDelta::from_std(at.elapsed())
                .ok()
                .and_then(|d| wall.checked_add_signed(d))
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }
}

/// Whether an alert is resolved at `now`: said so, or its `ends_at` (when it
/// has one after its start) has passed — a producer that stopped re-sending
/// lets its alerts expire.
pub fn is_resolved(a: &Alert, now: DateTime<Utc>) -> bool {
    a.status == AlertStatus::Resolved || (a.ends_at > a.starts_at && a.ends_at <= now)
}

pub use crate::alert::model::fingerprint;

/// How to start a [`Dispatcher`].
pub struct DispatcherOptions {
    /// The routing tree; `None`: alerts are kept and listed but not notified.
    pub route: Option<RouteConfig>,
    /// Inhibition rules.
    pub inhibit_rules: Vec<InhibitRuleConfig>,
    /// Receivers by name.
    pub notifiers: HashMap<String, Arc<dyn Notifier>>,
    /// Where `state.redb` lives (`<data_dir>/alerts`).
    pub dir: PathBuf,
    /// The URL put in notifications as `externalURL`.
    pub external_url: String,
    /// Wall-clock time.
    pub clock: Clock,
}

/// An alert as the API shows it.
#[derive(Debug, Clone)]
pub struct AlertView {
    /// The alert.
    pub alert: Alert,
    /// The receivers of the routes it takes.
    pub receivers: Vec<String>,
    /// Active silences muting it.
    pub silenced_by: Vec<String>,
    /// Firing alerts inhibiting it.
    pub inhibited_by: Vec<String>,
}

impl AlertView {
    /// `suppressed` when silenced or inhibited, else `active`.
    pub fn state(&self) -> &'static str {
        if self.silenced_by.is_empty() && self.inhibited_by.is_empty() {
            "active"
        } else {
            "suppressed"
        }
    }
}

/// Alerts and groups, behind one lock held only for short, non-blocking
/// sections.
#[derive(Debug, Default)]
struct State {
    /// Every alert put, by fingerprint (resolved ones until maintenance).
    alerts: HashMap<String, Alert>,
    /// Aggregation groups by group key.
    groups: HashMap<String, Group>,
}

/// What the dispatcher and its group tasks share.
struct Shared {
    route: Option<Arc<Route>>,
    inhibitor: Inhibitor,
    notifiers: HashMap<String, Arc<dyn Notifier>>,
    nflog: Arc<Nflog>,
    silences: Arc<Silences>,
    metrics: Arc<Metrics>,
    clock: Clock,
    external_url: String,
    state: Mutex<State>,
    runtime: tokio::runtime::Handle,
    stop: watch::Sender<bool>,
    /// Group tasks and the maintenance task.
    tasks: Mutex<JoinSet<()>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough maps.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put(self: &Arc<Self>, alerts: Vec<Alert>) {
        let now = self.clock.now();
        let mut spawn = Vec::new();
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            for mut a in alerts {
                if a.labels.is_empty() {
                    self.metrics.discarded(DiscardReason::InvalidAlert, 1);
                    continue;
                }
                if a.fingerprint.is_empty() {
                    a.fingerprint = fingerprint(&a.labels);
                }
                if a.status == AlertStatus::Resolved && a.ends_at <= a.starts_at {
                    a.ends_at = now;
                }
                let merged = match st.alerts.get(&a.fingerprint) {
                    // A new firing of an alert that had resolved starts
                    // afresh; otherwise the first start is kept.
                    Some(old) if !is_resolved(old, now) => {
                        let mut m = a;
                        m.starts_at = m.starts_at.min(old.starts_at);
                        m
                    }
                    Some(_) => a,
                    None if st.alerts.len() >= MAX_ALERTS => {
                        self.metrics.discarded(DiscardReason::AlertLimit, 1);
                        continue;
                    }
                    None => a,
                };
                st.alerts.insert(merged.fingerprint.clone(), merged.clone());
                let Some(root) = &self.route else { continue };
                for r in root.matching(&merged.labels) {
                    let labels = r.group_labels(&merged.labels);
                    let key = r.group_key(&labels);
                    let group = st.groups.entry(key.clone()).or_insert_with(|| {
                        let g = Group::new(labels);
                        spawn.push((key, Arc::clone(&r), Arc::clone(&g.wake)));
                        g
                    });
                    // An alert that started long ago (a restart, a producer
                    // catching up) need not wait for more (Alertmanager).
                    let waited = chrono::TimeDelta::from_std(r.group_wait)
                        .ok()
                        .and_then(|w| merged.starts_at.checked_add_signed(w))
                        .is_some_and(|t| t <= now);
                    if !group.flushed && waited {
                        group.wake.notify_one();
                    }
                    group
                        .alerts
                        .insert(merged.fingerprint.clone(), merged.clone());
                }
            }
        }
        if !spawn.is_empty() {
            let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            // Reap finished groups so that the set does not grow.
            while tasks.try_join_next().is_some() {}
            for (key, route, wake) in spawn {
                tasks.spawn_on(
                    group::run(Arc::clone(self), key, route, wake),
                    &self.runtime,
                );
            }
        }
    }

    /// Every unresolved alert with its receivers and what mutes it.
    fn views(&self) -> Vec<AlertView> {
        let now = self.clock.now();
        let st = self.lock();
        let firing: Vec<&Alert> = st
            .alerts
            .values()
            .filter(|a| !is_resolved(a, now))
            .collect();
        let mut out: Vec<AlertView> = firing
            .iter()
            .map(|a| {
                let mut receivers: Vec<String> = self
                    .route
                    .iter()
                    .flat_map(|r| r.matching(&a.labels))
                    .map(|r| r.receiver.clone())
                    .collect();
                let mut seen = BTreeSet::new();
                receivers.retain(|r| seen.insert(r.clone()));
                AlertView {
                    alert: (*a).clone(),
                    receivers,
                    silenced_by: self.silences.silenced_by(&a.labels, now),
                    inhibited_by: self.inhibitor.inhibited_by(a, firing.iter().copied()),
                }
            })
            .collect();
        out.sort_by(|a, b| a.alert.labels.cmp(&b.alert.labels));
        out
    }

    fn refresh_gauges(&self) {
        let now = self.clock.now();
        let (mut active, mut suppressed) = (0i64, 0i64);
        let groups = {
            let st = self.lock();
            let firing: Vec<&Alert> = st
                .alerts
                .values()
                .filter(|a| !is_resolved(a, now))
                .collect();
            for a in &firing {
                let muted = !self.silences.silenced_by(&a.labels, now).is_empty()
                    || !self
                        .inhibitor
                        .inhibited_by(a, firing.iter().copied())
                        .is_empty();
                if muted {
                    suppressed += 1;
                } else {
                    active += 1;
                }
            }
            st.groups.len()
        };
        let (pending, active_s, expired) = self.silences.counts(now);
        self.metrics.alert_gauges(
            active,
            suppressed,
            groups,
            self.nflog.len(),
            (pending, active_s, expired),
        );
    }

    /// Forgets resolved alerts that no group holds any more.
    fn forget_resolved(&self) {
        let now = self.clock.now();
        let mut guard = self.lock();
        let st = &mut *guard;
        let held: BTreeSet<&String> = st.groups.values().flat_map(|g| g.alerts.keys()).collect();
        let gone: Vec<String> = st
            .alerts
            .iter()
            .filter(|(fp, a)| is_resolved(a, now) && !held.contains(fp))
            .map(|(fp, _)| fp.clone())
            .collect();
        for fp in gone {
            st.alerts.remove(&fp);
        }
    }
}

/// The running dispatcher. It implements [`AlertSink`].
#[derive(Clone)]
pub struct Dispatcher {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("routed", &self.shared.route.is_some())
            .field(
                "receivers",
                &self.shared.notifiers.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl AlertSink for Dispatcher {
    fn put(&self, alerts: Vec<Alert>) {
        self.shared.put(alerts);
    }
}

impl Dispatcher {
    /// Opens (or creates) `opts.dir/state.redb`, builds the routing tree and
    /// starts the maintenance task. Group tasks start as alerts arrive.
    pub async fn start(
        opts: DispatcherOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Dispatcher, Error> {
        let route = opts.route.as_ref().map(Route::build).transpose()?;
        let dir = opts.dir.clone();
        let now = opts.clock.now();
        let (nflog, silences) = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
                action: "create alert state directory",
                path: dir.clone(),
                source,
            })?;
            let path = dir.join("state.redb");
            let db = Arc::new(Database::create(&path).map_err(|e| Error::AlertStore {
                action: "open alert state",
                reason: format!("{}: {e}", path.display()),
            })?);
            let (nflog, dropped) = Nflog::open(Arc::clone(&db), now)?;
            if dropped > 0 {
                tracing::info!(
                    entries = dropped,
                    "notification log entries past retention dropped"
                );
            }
            let silences = Silences::open(db, now)?;
            Ok::<_, Error>((nflog, silences))
        })
        .await
        .map_err(|e| Error::Task {
            what: "open alert state",
            reason: e.to_string(),
        })??;
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            route,
            inhibitor: Inhibitor::new(opts.inhibit_rules),
            notifiers: opts.notifiers,
            nflog: Arc::new(nflog),
            silences: Arc::new(silences),
            metrics,
            clock: opts.clock,
            external_url: opts.external_url,
            state: Mutex::new(State::default()),
            runtime: tokio::runtime::Handle::current(),
            stop,
            tasks: Mutex::new(JoinSet::new()),
        });
        shared.refresh_gauges();
        shared
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spawn(maintenance(Arc::clone(&shared)));
        Ok(Dispatcher { shared })
    }

    /// The current time of the dispatcher's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.shared.clock.now()
    }

    /// Every unresolved alert with its state.
    pub fn alerts(&self) -> Vec<AlertView> {
        self.shared.views()
    }

    /// Every silence (pending, active and recently expired).
    pub fn silences(&self) -> Vec<Silence> {
        self.shared.silences.list()
    }

    /// One silence.
    pub fn silence(&self, id: &str) -> Option<Silence> {
        self.shared.silences.get(id)
    }

    /// Creates a silence (empty `id`) or changes one; returns its id.
    pub async fn upsert_silence(&self, silence: Silence) -> Result<String, Error> {
        let silences = Arc::clone(&self.shared.silences);
        let now = self.now();
        let id = blocking("write silence", move || silences.upsert(silence, now)).await?;
        self.shared.refresh_gauges();
        Ok(id)
    }

    /// Expires a silence now: its alerts are notified at their next flush.
    pub async fn expire_silence(&self, id: &str) -> Result<Silence, Error> {
        let silences = Arc::clone(&self.shared.silences);
        let now = self.now();
        let id = id.to_string();
        let s = blocking("expire silence", move || silences.expire(&id, now)).await?;
        self.shared.refresh_gauges();
        Ok(s)
    }

    /// Entries in the notification log.
    pub fn nflog_len(&self) -> usize {
        self.shared.nflog.len()
    }

    /// Stops every group task and waits for them (pending notifications
    /// are not sent; the notification log keeps what was).
    pub async fn shutdown(&self) {
        // send_replace: a task not yet polled has not subscribed, and `send`
        // would leave the value unchanged with no receiver to see it.
        self.shared.stop.send_replace(true);
        let mut tasks =
            std::mem::take(&mut *self.shared.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        while tasks.join_next().await.is_some() {}
    }
}

async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task {
            what,
            reason: e.to_string(),
        })?
}

async fn maintenance(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut every = tokio::time::interval(MAINTENANCE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        shared.forget_resolved();
        shared.refresh_gauges();
    }
}

#[cfg(test)]
mod tests;
