//! Aggregation groups: the alerts of one route with the same group-by label
//! values, and the task that flushes them — first after `group_wait`, then
//! every `group_interval` — through silences, inhibition and the
//! notification log to the route's receiver.
//!
//! One task per group, as Alertmanager runs one goroutine per group: a slow
//! receiver delays only its own groups. A failed delivery is retried with
//! backoff until the group's next flush; the notification log is written only
//! after a delivery succeeded, so nothing is marked sent that was not. This
//! module must not route alerts or parse config.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::nflog::{Entry, needs_update};
use super::route::Route;
use super::{Shared, is_resolved};
use crate::alert::model::{Alert, AlertStatus, Labels, Notification, zero_time};
use crate::alert::notify::NotifyError;
use crate::metrics::NotifyOutcome;

/// First wait after a retryable failure; doubled per attempt.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One aggregation group.
#[derive(Debug)]
pub(super) struct Group {
    /// Its group-by label values.
    pub labels: Labels,
    /// Its alerts, by fingerprint.
    pub alerts: BTreeMap<String, Alert>,
    /// Whether its first flush happened.
    pub flushed: bool,
    /// Wakes the task for an early first flush.
    pub wake: Arc<Notify>,
}

impl Group {
    /// An empty group with these group-by label values.
    pub fn new(labels: Labels) -> Group {
        Group {
            labels,
            alerts: BTreeMap::new(),
            flushed: false,
            wake: Arc::new(Notify::new()),
        }
    }
}

/// Runs the group `key` until it is deleted or the dispatcher stops.
pub(super) async fn run(shared: Arc<Shared>, key: String, route: Arc<Route>, wake: Arc<Notify>) {
    let mut stop = shared.stop.subscribe();
    let mut next = Instant::now() + route.group_wait;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = wake.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        next = Instant::now() + route.group_interval;
        let deleted = tokio::select! {
            d = flush(&shared, &key, &route, next) => d,
            _ = stop.wait_for(|s| *s) => return,
        };
        if deleted {
            return;
        }
    }
}

/// What one flush found in the group.
struct Snapshot {
    labels: Labels,
    /// Unmuted alerts, resolved ones marked so.
    alerts: Vec<Alert>,
    firing: BTreeSet<String>,
    resolved: BTreeSet<String>,
    /// Every resolved alert as seen (muted or not): deleted after success.
    resolved_seen: Vec<Alert>,
}

/// Flushes group `key` once; returns whether the group was deleted.
async fn flush(shared: &Arc<Shared>, key: &str, route: &Arc<Route>, deadline: Instant) -> bool {
    let now = shared.clock.now();
    let Some(snap) = snapshot(shared, key, now) else {
        return true;
    };
    let receiver = route.receiver.as_str();
    let notifier = shared.notifiers.get(receiver).cloned();
    let send_resolved = notifier.as_ref().is_some_and(|n| n.send_resolved());
    let entry = shared.nflog.get(receiver, key);
    if needs_update(
        entry.as_ref(),
        &snap.firing,
        &snap.resolved,
        send_resolved,
        route.repeat_interval,
        now,
    ) {
        let mut alerts = snap.alerts;
        if !send_resolved {
            alerts.retain(|a| a.status == AlertStatus::Firing);
        }
        if !alerts.is_empty() {
            let Some(notifier) = notifier else {
                shared
                    .metrics
                    .alert_notification(receiver, NotifyOutcome::PermanentError);
                tracing::warn!(
                    receiver,
                    group = key,
                    "no receiver of that name is running; notification not sent"
                );
                return false;
            };
            let n = notification(shared, receiver, key, snap.labels, alerts);
            if !deliver(shared, notifier.as_ref(), &n, deadline).await {
                return false;
            }
        }
        let entry = Entry {
            firing: snap.firing,
            resolved: snap.resolved,
            sent_at: now,
        };
        let nflog = Arc::clone(&shared.nflog);
        let (r, k) = (receiver.to_string(), key.to_string());
        let logged = tokio::task::spawn_blocking(move || nflog.log(&r, &k, entry)).await;
        match logged {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, group = key, "notification sent but not logged: it may be sent again")
            }
            Err(e) => tracing::warn!(error = %e, group = key, "notification log task failed"),
        }
    }
    finish(shared, key, receiver, &snap.resolved_seen).await
}

/// Reads the group under the lock: its alerts with their state at `now`,
/// without those silenced or inhibited; marks the group flushed.
fn snapshot(shared: &Shared, key: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Snapshot> {
    let mut guard = shared.lock();
    let st = &mut *guard;
    let group = st.groups.get_mut(key)?;
    group.flushed = true;
    let sources: Vec<&Alert> = st
        .alerts
        .values()
        .filter(|a| !is_resolved(a, now))
        .collect();
    let mut snap = Snapshot {
        labels: group.labels.clone(),
        alerts: Vec::new(),
        firing: BTreeSet::new(),
        resolved: BTreeSet::new(),
        resolved_seen: Vec::new(),
    };
    for a in group.alerts.values() {
        let mut a = a.clone();
        let resolved = is_resolved(&a, now);
        if resolved {
            snap.resolved_seen.push(a.clone());
            a.status = AlertStatus::Resolved;
            if a.ends_at <= a.starts_at {
                a.ends_at = now;
            }
        } else {
            a.status = AlertStatus::Firing;
            // The producer's `ends_at` is only when the alert would expire
            // unless re-sent; Alertmanager does not expose an end not yet
            // reached (`types.Alerts`), and receivers read a future one as
            // "resolves then".
            a.ends_at = zero_time();
        }
        let muted = !shared.silences.silenced_by(&a.labels, now).is_empty()
            || (!resolved
                && !shared
                    .inhibitor
                    .inhibited_by(&a, sources.iter().copied())
                    .is_empty());
        if muted {
            continue;
        }
        if resolved {
            snap.resolved.insert(a.fingerprint.clone());
        } else {
            snap.firing.insert(a.fingerprint.clone());
        }
        snap.alerts.push(a);
    }
    Some(snap)
}

/// After a flush: drops the resolved alerts that did not change meanwhile,
/// and the group (with its log entry) once it is empty.
async fn finish(shared: &Arc<Shared>, key: &str, receiver: &str, resolved: &[Alert]) -> bool {
    let deleted = {
        let mut st = shared.lock();
        let Some(group) = st.groups.get_mut(key) else {
            return true;
        };
        for a in resolved {
            if group.alerts.get(&a.fingerprint) == Some(a) {
                group.alerts.remove(&a.fingerprint);
            }
        }
        if group.alerts.is_empty() {
            st.groups.remove(key);
            true
        } else {
            false
        }
    };
    if deleted {
        let nflog = Arc::clone(&shared.nflog);
        let (r, k) = (receiver.to_string(), key.to_string());
        let removed = tokio::task::spawn_blocking(move || nflog.remove(&r, &k)).await;
        if let Ok(Err(e)) = removed {
            tracing::warn!(error = %e, group = key, "cannot forget a finished group");
        }
        shared.refresh_gauges();
    }
    deleted
}

/// Builds the notification of a group.
fn notification(
    shared: &Shared,
    receiver: &str,
    key: &str,
    group_labels: Labels,
    mut alerts: Vec<Alert>,
) -> Notification {
    alerts.sort_by(|a, b| a.labels.cmp(&b.labels));
    let status = if alerts.iter().any(|a| a.status == AlertStatus::Firing) {
        AlertStatus::Firing
    } else {
        AlertStatus::Resolved
    };
    Notification {
        version: "4".into(),
        group_key: key.to_string(),
        truncated_alerts: 0,
        status,
        receiver: receiver.to_string(),
        group_labels,
        common_labels: common(alerts.iter().map(|a| &a.labels)),
        common_annotations: common(alerts.iter().map(|a| &a.annotations)),
        external_url: shared.external_url.clone(),
        alerts,
    }
}

/// The pairs every map has with the same value.
pub(crate) fn common<'a>(mut maps: impl Iterator<Item = &'a Labels>) -> Labels {
    let Some(first) = maps.next() else {
        return Labels::new();
    };
    let mut out = first.clone();
    for m in maps {
        out.retain(|k, v| m.get(k) == Some(v));
    }
    out
}

/// Sends `n`, retrying retryable errors with backoff until `deadline` (the
/// group's next flush). Every attempt is counted; returns whether it was
/// delivered.
async fn deliver(
    shared: &Shared,
    notifier: &dyn crate::alert::notify::Notifier,
    n: &Notification,
    deadline: Instant,
) -> bool {
    let receiver = n.receiver.as_str();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let outcome = match tokio::time::timeout_at(deadline, notifier.notify(n)).await {
            Ok(r) => r,
            Err(_) => Err(NotifyError::Retryable {
                receiver: receiver.to_string(),
                reason: "no answer before the group's next flush".into(),
            }),
        };
        match outcome {
            Ok(()) => {
                shared
                    .metrics
                    .alert_notification(receiver, NotifyOutcome::Success);
                return true;
            }
            Err(NotifyError::Permanent { reason, .. }) => {
                shared
                    .metrics
                    .alert_notification(receiver, NotifyOutcome::PermanentError);
                tracing::warn!(receiver, group = %n.group_key, %reason, "notification failed for good; the next flush tries again");
                return false;
            }
            Err(NotifyError::Retryable { reason, .. }) => {
                shared
                    .metrics
                    .alert_notification(receiver, NotifyOutcome::RetryableError);
                if Instant::now() + backoff >= deadline {
                    tracing::warn!(receiver, group = %n.group_key, %reason, "notification failed; retrying at the next flush");
                    return false;
                }
                tracing::debug!(receiver, %reason, ?backoff, "notification failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
