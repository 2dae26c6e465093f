//! Alerting: rules over logs and errors that fire alerts ([`rules`]), and
//! the Alertmanager-style pipeline that groups, deduplicates, inhibits,
//! silences and routes them ([`dispatch`]) to receivers ([`notify`]) — WeCom,
//! DingTalk, Feishu/Lark, Slack and generic webhooks.
//!
//! [`model`] is the contract between the halves: alerts and the
//! notifications built from them, shaped like Alertmanager's webhook payload
//! (version 4), which the Alertmanager bridge receives and the generic
//! webhook receiver sends. [`AlertSink`] is how alerts reach the dispatcher.
//!
//! This module must not index or search by itself (rules query the store
//! through its API) and must not block the reactor.

pub mod model;
pub mod notify;

use crate::alert::model::Alert;

/// Where alerts go once produced: the dispatcher, which groups, inhibits,
/// silences and routes them.
///
/// The semantics are those of Alertmanager's `POST /api/v2/alerts` as
/// Prometheus uses it: a producer re-sends every active alert on each
/// evaluation with `status: firing` and `ends_at` a few evaluation intervals
/// ahead (so an alert whose producer stopped reporting expires by itself),
/// and sends an alert once more with `status: resolved` and `ends_at` = the
/// moment it resolved. Alerts are identified by their `fingerprint` (a hash
/// of the labels); a put never blocks.
pub trait AlertSink: Send + Sync + 'static {
    /// Hands over the alerts of one evaluation (or one external push).
    fn put(&self, alerts: Vec<Alert>);
}
