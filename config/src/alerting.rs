//! `aggregator.alerting`: alert rules over logs and errors, the routing tree,
//! inhibition, and the receivers that deliver notifications to chat groups.
//!
//! The semantics follow Prometheus (rules: `for`, `keep_firing_for`, labels,
//! annotations) and Alertmanager (route, inhibit_rules, receivers), so that a
//! team's existing configuration reads the same here.

use serde::Deserialize;

use crate::receivers::ReceiverConfig;
use crate::route::{InhibitRuleConfig, RouteConfig};
use crate::rules::RuleConfig;
use crate::values::Duration;

/// `aggregator.alerting`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    /// The URL users reach the aggregator's HTTP API at, for links in
    /// messages (search and issue links). Default: the HTTP listener's address.
    #[serde(default)]
    pub external_url: Option<String>,
    /// Receivers, by name: where notifications go.
    #[serde(default)]
    pub receivers: Vec<ReceiverConfig>,
    /// The routing tree: which receiver each alert goes to, grouped how and
    /// notified when. Without it alerts are kept (and listed by the API) but
    /// not notified.
    #[serde(default)]
    pub route: Option<RouteConfig>,
    /// While an alert matching a rule's source fires, alerts matching its
    /// target (with equal `equal` labels) are not notified.
    #[serde(default)]
    pub inhibit_rules: Vec<InhibitRuleConfig>,
    /// How often rules are evaluated, unless a rule sets its own `interval`.
    /// Default 30s: half of Prometheus' 1m, because log and error rules are
    /// cheap counts over the local index and a chat alert a minute late is
    /// the complaint this feature answers.
    #[serde(default = "default_evaluation_interval")]
    pub evaluation_interval: Duration,
    /// Alert rules over logs and errors (see [`RuleConfig`]); their state
    /// lives in `<data_dir>/alerts/rules.redb`.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            external_url: None,
            receivers: Vec::new(),
            route: None,
            inhibit_rules: Vec::new(),
            evaluation_interval: default_evaluation_interval(),
            rules: Vec::new(),
        }
    }
}

fn default_evaluation_interval() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}
