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

pub mod dispatch;
pub mod model;
pub mod notify;
pub mod preview;
pub mod reload;
pub mod rules;

use std::path::Path;
use std::sync::Arc;

use crate::Error;
use crate::alert::dispatch::{Clock, Dispatcher, DispatcherOptions};
use crate::alert::model::Alert;
use crate::metrics::Metrics;

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

/// The alerting pipeline of a running aggregator: the dispatcher with its
/// receivers, silences and notification log under `<data_dir>/alerts/`.
/// Without a `route` in the config it keeps and lists alerts but notifies
/// nobody.
#[derive(Debug, Clone)]
pub struct Alerting {
    dispatcher: Dispatcher,
}

impl Alerting {
    /// Starts the dispatcher with `receivers` (built once per process, so
    /// the dispatcher and the Alertmanager bridge share their rate limits);
    /// `external_url` goes into notifications when the config sets none.
    pub async fn start(
        config: &mecha_config::AlertingConfig,
        receivers: &notify::Receivers,
        data_dir: &Path,
        metrics: Arc<Metrics>,
        external_url: String,
    ) -> Result<Alerting, Error> {
        let notifiers = receivers.0.as_ref().clone();
        let dispatcher = Dispatcher::start(
            DispatcherOptions {
                route: config.route.clone(),
                inhibit_rules: config.inhibit_rules.clone(),
                notifiers,
                dir: data_dir.join("alerts"),
                external_url: config.external_url.clone().unwrap_or(external_url),
                clock: Clock::System,
            },
            metrics,
        )
        .await?;
        Ok(Alerting { dispatcher })
    }

    /// Where rules (and the Alertmanager bridge) put alerts.
    pub fn sink(&self) -> Arc<dyn AlertSink> {
        Arc::new(self.dispatcher.clone())
    }

    /// The dispatcher, for the API.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Stops the dispatcher's tasks.
    pub async fn shutdown(&self) {
        self.dispatcher.shutdown().await;
    }
}
