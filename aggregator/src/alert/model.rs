//! Alerts and notifications, shaped like Alertmanager's (webhook payload
//! version 4), so that the Alertmanager bridge and mecha's own rules feed one
//! pipeline and the generic webhook receiver sends what Alertmanager sends.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Label or annotation names to values, sorted (as Alertmanager sorts them).
pub type Labels = BTreeMap<String, String>;

/// Whether an alert (or a notification's group) is firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// Active.
    Firing,
    /// No longer active.
    Resolved,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: AlertStatus,
    /// Identifying labels (`alertname`, `severity`, group-by labels, ...).
    pub labels: Labels,
    /// Informational text (`summary`, `description`, ...), templated.
    pub annotations: Labels,
    /// Since when it is firing.
    pub starts_at: DateTime<Utc>,
    /// When it resolved; Alertmanager writes `0001-01-01T00:00:00Z` for a
    /// firing alert.
    pub ends_at: DateTime<Utc>,
    /// A link to what fired it (the search or the issue).
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    /// Stable identity: a hash of the labels, 16 lowercase hex digits.
    #[serde(default)]
    pub fingerprint: String,
    /// The value of the rule's condition (a log rule's count, an error
    /// rule's event rate or issue count): while firing the current one, once
    /// resolved the one at resolve time. Alerts of mecha's own rules carry
    /// it, bridged ones do not. Not part of Alertmanager's payload, so not
    /// serialized: the webhook sends exactly what Alertmanager sends, and
    /// messages show it (see `notify::template`).
    #[serde(skip)]
    pub value: Option<f64>,
}

/// What Alertmanager writes as `endsAt` of a firing alert in notifications:
/// Go's zero time, `0001-01-01T00:00:00Z` (`types.Alerts` hides an end that
/// has not been reached yet).
pub fn zero_time() -> DateTime<Utc> {
    DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// What a receiver is asked to deliver: one group's alerts at one moment,
/// exactly the fields of Alertmanager's webhook payload version 4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Always `"4"`.
    pub version: String,
    /// The group's key (its route and group-by label values).
    pub group_key: String,
    /// Alerts left out for `max_alerts`.
    #[serde(default)]
    pub truncated_alerts: u64,
    /// `firing` if any alert in `alerts` is firing.
    pub status: AlertStatus,
    /// The receiver's name.
    pub receiver: String,
    /// The group-by labels and their values.
    pub group_labels: Labels,
    /// Labels every alert of the group has with the same value.
    pub common_labels: Labels,
    /// Annotations every alert of the group has with the same value.
    pub common_annotations: Labels,
    /// The aggregator's external URL.
    #[serde(rename = "externalURL")]
    pub external_url: String,
    /// The group's alerts, firing and (for receivers that send resolved
    /// notifications) resolved.
    pub alerts: Vec<Alert>,
}

/// The alert fingerprint of a label set: FNV-1a (64 bit) over the sorted
/// label names and values, each followed by the byte 255, as 16 lowercase
/// hex digits — the function Prometheus and Alertmanager use
/// (`model.LabelSet.Fingerprint`), so an alert has the same fingerprint here
/// and in Alertmanager.
pub fn fingerprint(labels: &Labels) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut h = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (name, value) in labels {
        add(name.as_bytes());
        add(&[255]);
        add(value.as_bytes());
        add(&[255]);
    }
    format!("{h:016x}")
}
