//! Config reload (SIGHUP, `POST /-/reload`), as Prometheus and Alertmanager
//! offer it: the config file is read again through the loader the binary
//! gives (the same checks as at start-up), and what can change while running
//! is applied — the alert rules, through the rule engine's reload, which
//! keeps the alerts and schedule of unchanged rules. Sections that only a
//! restart applies (receivers, route, inhibition, external URL, evaluation
//! interval) are named in the answer and logged when they changed. A config
//! that fails to load or check changes nothing. Every attempt is counted in
//! `mecha_config_reload_total{outcome}`.
//!
//! This module must not read files itself: the loader does.

use std::sync::{Arc, Mutex};

use mecha_config::AlertingConfig;

use crate::alert::rules::RuleReloader;
use crate::metrics::Metrics;

/// Reads and checks the config again: the binary's `load_checked`.
pub type LoadAlerting = dyn Fn() -> Result<AlertingConfig, String> + Send + Sync;

/// Where a reload reads the config from.
#[derive(Clone)]
pub struct ConfigSource(Arc<LoadAlerting>);

impl ConfigSource {
    /// A source that calls `load` (it may block: it runs off the reactor).
    pub fn new(
        load: impl Fn() -> Result<AlertingConfig, String> + Send + Sync + 'static,
    ) -> ConfigSource {
        ConfigSource(Arc::new(load))
    }
}

impl std::fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigSource")
    }
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The alert rules now evaluated.
    pub rules: usize,
    /// Changed sections that apply after a restart only.
    pub restart_required: Vec<&'static str>,
}

/// Reloads the config of a running aggregator; clones share one state, and
/// reloads run one at a time.
#[derive(Debug, Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    source: Option<ConfigSource>,
    metrics: Arc<Metrics>,
    /// The alerting config in effect.
    running: tokio::sync::Mutex<AlertingConfig>,
    rules: Mutex<Option<RuleReloader>>,
}

impl Reloader {
    /// A reloader of `running`, reading from `source` (`None`: started
    /// without a config file, reloads fail).
    pub(crate) fn new(
        source: Option<ConfigSource>,
        running: AlertingConfig,
        metrics: Arc<Metrics>,
    ) -> Reloader {
        Reloader {
            inner: Arc::new(Inner {
                source,
                metrics,
                running: tokio::sync::Mutex::new(running),
                rules: Mutex::new(None),
            }),
        }
    }

    /// Sets the rule engine reloads go to.
    pub(crate) fn set_rules(&self, rules: RuleReloader) {
        *self.inner.rules.lock().unwrap_or_else(|e| e.into_inner()) = Some(rules);
    }

    /// Reads the config again and applies it; on an error the running
    /// config stays, and the error says why.
    pub async fn reload(&self) -> Result<Reloaded, String> {
        let mut running = self.inner.running.lock().await;
        let result = self.apply(&mut running).await;
        self.inner.metrics.reload.reloaded(result.is_ok());
        match &result {
            Ok(r) if r.restart_required.is_empty() => {
                tracing::info!(rules = r.rules, "config reloaded");
            }
            Ok(r) => tracing::warn!(
                rules = r.rules,
                sections = %r.restart_required.join(", "),
                "config reloaded; these changed sections apply after a restart only"
            ),
            Err(e) => tracing::error!(error = %e, "config reload failed; the running config stays"),
        }
        result
    }

    async fn apply(&self, running: &mut AlertingConfig) -> Result<Reloaded, String> {
        let Some(source) = &self.inner.source else {
            return Err("no config file to reload: mecha was started without --config".into());
        };
        let load = Arc::clone(&source.0);
        let new = tokio::task::spawn_blocking(move || load())
            .await
            .map_err(|e| format!("config loader: {e}"))??;
        let rules = self
            .inner
            .rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| "no rule engine running".to_string())?;
        rules
            .reload(new.rules.clone())
            .await
            .map_err(|e| e.to_string())?;
        let restart_required = restart_required(running, &new);
        running.rules = new.rules;
        Ok(Reloaded {
            rules: running.rules.len(),
            restart_required,
        })
    }
}

/// The sections of `new` that differ from `old` and that only a restart
/// applies: the dispatcher and the receivers (whose rate limits and queues
/// the Alertmanager bridge shares) are built once per process.
fn restart_required(old: &AlertingConfig, new: &AlertingConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.receivers != new.receivers {
        out.push("aggregator.alerting.receivers");
    }
    // Matchers hold compiled regexes (no `PartialEq`); their `Debug`
    // shows every field and the regex source.
    if format!("{:?}", old.route) != format!("{:?}", new.route) {
        out.push("aggregator.alerting.route");
    }
    if format!("{:?}", old.inhibit_rules) != format!("{:?}", new.inhibit_rules) {
        out.push("aggregator.alerting.inhibit_rules");
    }
    if old.external_url != new.external_url {
        out.push("aggregator.alerting.external_url");
    }
    if old.evaluation_interval != new.evaluation_interval {
        out.push("aggregator.alerting.evaluation_interval");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alerting(yaml: &str) -> AlertingConfig {
        let text = format!("aggregator:\n  alerting:\n{yaml}");
        mecha_config::parse("t.yaml", &text, &|_| None)
            .unwrap_or_else(|e| panic!("{e}"))
            .aggregator
            .alerting
    }

    #[test]
    fn changed_sections_that_need_a_restart_are_named() {
        let old = alerting(
            "    receivers:\n      - name: a\n        wecom_configs:\n          - key: k1\n    route:\n      receiver: a\n",
        );
        let same = alerting(
            "    receivers:\n      - name: a\n        wecom_configs:\n          - key: k1\n    route:\n      receiver: a\n",
        );
        assert!(restart_required(&old, &same).is_empty());
        let new = alerting(
            "    evaluation_interval: 10s\n    receivers:\n      - name: a\n        wecom_configs:\n          - key: k2\n    route:\n      receiver: a\n      group_wait: 1s\n",
        );
        assert_eq!(
            restart_required(&old, &new),
            vec![
                "aggregator.alerting.receivers",
                "aggregator.alerting.route",
                "aggregator.alerting.evaluation_interval",
            ]
        );
    }

    #[tokio::test]
    async fn without_a_config_file_a_reload_fails_and_is_counted() {
        let metrics = Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}")));
        let r = Reloader::new(None, AlertingConfig::default(), Arc::clone(&metrics));
        let err = r.reload().await.err().unwrap_or_default();
        assert!(err.contains("without --config"), "{err}");
        let text = metrics.render();
        assert!(
            text.contains("mecha_config_reload_total{outcome=\"error\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mecha_config_last_reload_successful 0"),
            "{text}"
        );
    }
}
