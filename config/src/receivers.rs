//! `aggregator.alerting.receivers`: named receivers, each a list of chat
//! robots and webhooks (WeCom, DingTalk, Feishu/Lark, Slack, generic webhook),
//! as Alertmanager's `receivers` are written.

use serde::Deserialize;

/// One receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// The name routes refer to.
    pub name: String,
}
