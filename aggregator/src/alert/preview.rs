//! `mecha alert preview --rule NAME`: the sample alerts of one rule, routed
//! through the configured routing tree as the dispatcher routes them, and
//! the requests each matched receiver would send for the notification of
//! their group — sending nothing.
//!
//! This module must not send or persist anything.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use mecha_config::AlertingConfig;

use crate::Error;
use crate::alert::dispatch::group::common;
use crate::alert::dispatch::route::Route;
use crate::alert::model::{Alert, AlertStatus, Labels, Notification, zero_time};
use crate::alert::notify::{self, Notifier, Preview};
use crate::alert::rules::sample_alerts;

/// What one route would send for the rule's alerts.
#[derive(Debug, Clone)]
pub struct RoutedPreview {
    /// The route's key in group keys (`{}/{severity="critical"}`).
    pub route: String,
    /// The receiver it notifies.
    pub receiver: String,
    /// The notification the receiver gets.
    pub notification: Notification,
    /// The requests it would send.
    pub requests: Vec<Preview>,
}

/// Alerts of one aggregation group.
struct Group {
    key: String,
    route: Arc<Route>,
    labels: Labels,
    alerts: Vec<Alert>,
}

/// The preview of rule `name`: its sample alerts (with `value`, default
/// the threshold) and, per matched route and group, what the receiver
/// would send, all as of `now` (one instant, so that what it prints does
/// not depend on how long it took). `external_url` is used when the config
/// sets none.
pub fn rule(
    config: &AlertingConfig,
    name: &str,
    value: Option<f64>,
    external_url: &str,
    now: DateTime<Utc>,
) -> Result<(Vec<Alert>, Vec<RoutedPreview>), Error> {
    let Some(rule) = config.rules.iter().find(|r| r.name == name) else {
        let known: Vec<&str> = config.rules.iter().map(|r| r.name.as_str()).collect();
        return Err(Error::Invalid {
            what: "rule",
            reason: format!(
                "no rule {name:?} in aggregator.alerting.rules; known: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        });
    };
    let external_url = config.external_url.as_deref().unwrap_or(external_url);
    let now_ns = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
    let alerts = sample_alerts(rule, external_url, value, now_ns)?;
    let Some(route) = &config.route else {
        return Ok((alerts, Vec::new()));
    };
    let root = Route::build(route)?;
    let receivers = notify::build(&config.receivers)?;
    // One group per route and group key, in the order routing met them.
    let mut groups: Vec<Group> = Vec::new();
    for a in &alerts {
        for r in root.matching(&a.labels) {
            let group_labels = r.group_labels(&a.labels);
            let key = r.group_key(&group_labels);
            match groups.iter_mut().find(|g| g.key == key) {
                Some(g) => g.alerts.push(a.clone()),
                None => groups.push(Group {
                    key,
                    route: r,
                    labels: group_labels,
                    alerts: vec![a.clone()],
                }),
            }
        }
    }
    let mut out = Vec::new();
    for g in groups {
        let (key, r, group_labels, mut alerts) = (g.key, g.route, g.labels, g.alerts);
        alerts.sort_by(|a, b| a.labels.cmp(&b.labels));
        // Firing, they are notified without an end, as the dispatcher does.
        for a in &mut alerts {
            a.ends_at = zero_time();
        }
        let n = Notification {
            version: "4".into(),
            group_key: key,
            truncated_alerts: 0,
            status: AlertStatus::Firing,
            receiver: r.receiver.clone(),
            group_labels,
            common_labels: common(alerts.iter().map(|a| &a.labels)),
            common_annotations: common(alerts.iter().map(|a| &a.annotations)),
            external_url: external_url.to_string(),
            alerts,
        };
        let requests = receivers
            .get(&r.receiver)
            .map(|x: &Arc<dyn Notifier>| x.preview(&n, now))
            .unwrap_or_default();
        out.push(RoutedPreview {
            route: r.key.clone(),
            receiver: r.receiver.clone(),
            notification: n,
            requests,
        });
    }
    Ok((alerts, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preview_is_rendered_as_of_the_instant_it_is_given() {
        let yaml = "aggregator:\n  alerting:\n    receivers:\n      - name: chat\n        wecom_configs:\n          - key: k\n    route:\n      receiver: chat\n    rules:\n      - name: Errors\n        type: log\n        query: 'level:error'\n        window: 5m\n        above: 10\n";
        let config = mecha_config::parse("t.yaml", yaml, &|_| None)
            .unwrap_or_else(|e| panic!("{e}"))
            .aggregator
            .alerting;
        // An instant far from the wall clock: any part that read the clock
        // instead would show another start or a duration other than 0s.
        let now = DateTime::<Utc>::from_timestamp(1_600_000_000, 0).unwrap_or_default();
        let (alerts, routed) = rule(&config, "Errors", None, "http://localhost:8080", now)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].starts_at, now);
        let body = &routed[0].requests[0].body;
        let text = body.to_string();
        assert!(
            text.contains("Started: 2020-09-13 12:26:40 UTC (for 0s)"),
            "{text}"
        );
    }
}
