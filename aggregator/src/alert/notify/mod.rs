//! Receivers: deliver a [`Notification`] to a chat group or a webhook, each
//! with its platform's message format, signature, size and rate limits and
//! error codes. Built from `aggregator.alerting.receivers` by [`build`].
//!
//! This module must not decide what to send or when (grouping, waits,
//! repeats, silences, inhibition happen before); it only delivers, and says
//! whether a failed delivery may be retried.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::alert::model::Notification;

/// Why a delivery failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotifyError {
    /// Worth retrying later (network error, 5xx, the platform's rate limit).
    #[error("{receiver}: {reason} (will retry)")]
    Retryable {
        /// Receiver name.
        receiver: String,
        /// What happened.
        reason: String,
    },
    /// Retrying cannot help (invalid key, malformed request); the receiver is
    /// reported as failing.
    #[error("{receiver}: {reason}")]
    Permanent {
        /// Receiver name.
        receiver: String,
        /// What happened.
        reason: String,
    },
}

/// One receiver: every integration listed under one receiver name.
pub trait Notifier: Send + Sync {
    /// The receiver's name.
    fn name(&self) -> &str;
    /// Whether resolved alerts are sent to this receiver.
    fn send_resolved(&self) -> bool;
    /// Delivers `n` to every integration of the receiver.
    fn notify<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>>;
    /// Exactly what [`Notifier::notify`] would send for `n`, without sending
    /// it (`mecha alert preview`).
    fn preview(&self, n: &Notification) -> Vec<Preview>;
}

/// One request a receiver would send.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    /// The integration (`wecom`, `dingtalk`, `feishu`, `slack`, `webhook`)
    /// and its index under the receiver.
    pub integration: String,
    /// The URL, with secrets (robot keys, signatures) masked.
    pub url: String,
    /// The request body as sent.
    pub body: String,
}

/// The receivers of a config, by name.
pub fn build(
    receivers: &[mecha_config::ReceiverConfig],
) -> Result<HashMap<String, Arc<dyn Notifier>>, crate::Error> {
    // Placeholder until the integrations land: keeps the contract compiling.
    let _ = receivers;
    Ok(HashMap::new())
}
