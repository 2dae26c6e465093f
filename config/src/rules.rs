//! `aggregator.alerting.rules`: alert rules over logs and Sentry errors,
//! written the way Prometheus alerting rules are (`for`, `keep_firing_for`,
//! `labels`, `annotations` with `{{ $labels.x }}` and `{{ $value }}`).
//!
//! ```yaml
//! aggregator:
//!   alerting:
//!     evaluation_interval: 30s
//!     rules:
//!       - name: PaymentErrors
//!         type: log
//!         query: 'level:error AND namespace:shop'
//!         window: 5m
//!         above: 10
//!         group_by: [namespace, k8s.deployment.name]
//!         for: 2m
//!         labels: { severity: critical }
//!         annotations:
//!           summary: '{{ $value }} errors in {{ $labels.namespace }}'
//!       - name: NewIssue
//!         type: error
//!         on: new_issue
//!         project: 42
//!         environment: production
//!       - name: HotIssue
//!         type: error
//!         on: event_rate
//!         window: 10m
//!         at_least: 100
//! ```
//!
//! This module only describes and checks what one key alone or the rules
//! together can tell; the query syntax and the templates are checked by the
//! aggregator (`mecha_aggregator::alert::rules::check`), which owns their
//! parsers, with the same file, line and key in its messages.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::values::Duration;

/// One alert rule. Which keys apply depends on `type` (and `on` for error
/// rules); a key that does not apply is an error rather than ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The rule's name, unique among the rules; every alert of the rule
    /// carries it as the `alertname` label.
    pub name: String,
    /// `log`: a count of matching log records over a window. `error`: Sentry
    /// issues (new, regressed, or their event rate).
    #[serde(rename = "type")]
    pub kind: RuleKind,
    /// `log` rules: the search query, in the syntax of `mecha search` and
    /// `GET /api/v1/logs/search` (`level:error AND namespace:shop`; empty or
    /// `*` matches everything).
    #[serde(default)]
    pub query: Option<String>,
    /// `log` and `event_rate` rules: the period counted back from each
    /// evaluation (`5m`). `new_issue` and `regression` rules: how long the
    /// alert of an issue stays firing after the issue appeared or regressed,
    /// unless it is resolved or ignored sooner (default 1h).
    #[serde(default)]
    pub window: Option<Duration>,
    /// Fires when the count is greater than this (`above: 10` fires at 11).
    /// At most one of `above` and `at_least`; when neither is given a rule
    /// fires on any match (`above: 0`).
    #[serde(default)]
    pub above: Option<u64>,
    /// Fires when the count is at least this (`at_least: 10` fires at 10).
    #[serde(default)]
    pub at_least: Option<u64>,
    /// `log` rules: fields whose values split the count into one alert per
    /// group: schema fields (`namespace`, `pod`, `container`, `node`,
    /// `level`), resource attributes (`k8s.deployment.name`,
    /// `resource.app`) and record attributes (`attributes.tenant`, or a bare
    /// key). Each becomes a label, its name with every character other than
    /// letters, digits and `_` replaced by `_` (`k8s_deployment_name`).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// `error` rules: `new_issue` (an issue's first event), `regression` (a
    /// resolved issue received a newer event) or `event_rate` (events counted
    /// over `window`).
    #[serde(default)]
    pub on: Option<ErrorTrigger>,
    /// `event_rate` rules: count per `issue` (default; one alert per issue)
    /// or per `project` (one alert per project, all its issues together).
    #[serde(default)]
    pub per: Option<RatePer>,
    /// `error` rules: only this Sentry project (its numeric id).
    #[serde(default)]
    pub project: Option<u64>,
    /// `error` rules: only events (for `new_issue`/`regression`: issues)
    /// of these levels (`error`, `fatal`, `warning`, ...); one name or a list.
    #[serde(default)]
    pub level: OneOrMany,
    /// `error` rules: only events of this environment (`production`).
    #[serde(default)]
    pub environment: Option<String>,
    /// `error` rules: only events with all these tags (key → value).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// How long the condition must hold, evaluation after evaluation, before
    /// the alert fires (pending until then). Default 0: fires at once.
    #[serde(default, rename = "for")]
    pub for_: Option<Duration>,
    /// How long a firing alert keeps firing after its condition stopped
    /// holding (a flapping count does not resolve and refire). Default 0.
    #[serde(default)]
    pub keep_firing_for: Option<Duration>,
    /// How often this rule is evaluated. Default: `evaluation_interval`.
    #[serde(default)]
    pub interval: Option<Duration>,
    /// Labels added to every alert of the rule (`severity: critical`);
    /// identifying, used by routes and in the fingerprint.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations of every alert (`summary`, `description`, ...), templated
    /// with `{{ $labels.name }}`, `{{ $value }}` and `{{ $externalURL }}`.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// Kinds of rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// A count of log records.
    Log,
    /// Sentry issues.
    Error,
}

/// What an error rule fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorTrigger {
    /// An issue's first event.
    NewIssue,
    /// A resolved issue received a newer event.
    Regression,
    /// Events counted over a window.
    EventRate,
}

/// What an event-rate rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RatePer {
    /// Each issue alone.
    #[default]
    Issue,
    /// All issues of a project together.
    Project,
}

/// One string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        Ok(OneOrMany(match Raw::deserialize(d)? {
            Raw::One(s) => vec![s],
            Raw::Many(v) => v,
        }))
    }
}

/// How long a `new_issue` or `regression` alert stays firing by default.
pub const DEFAULT_ISSUE_WINDOW: std::time::Duration = std::time::Duration::from_secs(3_600);

impl RuleConfig {
    /// The threshold as "fires when count >= this".
    pub fn min_count(&self) -> u64 {
        match (self.above, self.at_least) {
            (_, Some(n)) => n,
            (Some(n), None) => n.saturating_add(1),
            (None, None) => 1,
        }
    }

    /// `for`, zero when not given.
    pub fn pending_for(&self) -> std::time::Duration {
        self.for_.map(|d| d.0).unwrap_or_default()
    }

    /// `keep_firing_for`, zero when not given.
    pub fn keep_firing(&self) -> std::time::Duration {
        self.keep_firing_for.map(|d| d.0).unwrap_or_default()
    }

    /// The window (the default for issue triggers; zero if a count rule
    /// has none, which the config check rejects).
    pub fn window_or_default(&self) -> std::time::Duration {
        match (self.window, self.on) {
            (Some(w), _) => w.0,
            (None, Some(ErrorTrigger::NewIssue | ErrorTrigger::Regression)) => DEFAULT_ISSUE_WINDOW,
            (None, _) => std::time::Duration::ZERO,
        }
    }

    /// The evaluation interval of this rule, given the global one.
    pub fn interval_or(&self, global: std::time::Duration) -> std::time::Duration {
        self.interval.map(|d| d.0).unwrap_or(global)
    }
}

/// Whether `name` is a valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`), as
/// Prometheus and Alertmanager require.
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The label name a `group_by` field becomes: characters other than ASCII
/// letters, digits and `_` replaced by `_`, and a leading digit prefixed.
pub fn label_for_field(field: &str) -> String {
    let mut out: String = field
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

/// Labels every alert gets from the engine; a rule may not set them.
const RESERVED_LABELS: [&str; 1] = ["alertname"];

/// Checks what serde cannot: per-kind keys, thresholds, windows, names.
/// `fail(key, reason)` builds the error for a dotted key under `at`
/// (`aggregator.alerting.rules`).
pub(crate) fn check_rules<E>(
    rules: &[RuleConfig],
    at: &str,
    fail: &dyn Fn(String, String) -> E,
) -> Result<(), E> {
    let mut names = BTreeMap::new();
    for (i, r) in rules.iter().enumerate() {
        let key = |k: &str| format!("{at}[{i}].{k}");
        if r.name.trim().is_empty() {
            return Err(fail(
                key("name"),
                "expected a rule name, found an empty one".into(),
            ));
        }
        if let Some(first) = names.insert(r.name.as_str(), i) {
            return Err(fail(
                key("name"),
                format!(
                    "expected a unique name, found {:?} again (rules[{first}])",
                    r.name
                ),
            ));
        }
        let not_for = |k: &str, what: &str| fail(key(k), format!("`{k}` does not apply to {what}"));
        if r.above.is_some() && r.at_least.is_some() {
            return Err(fail(
                key("at_least"),
                "expected one of `above` and `at_least`, found both".into(),
            ));
        }
        match r.kind {
            RuleKind::Log => {
                if r.query.is_none() {
                    return Err(fail(key("query"), "a log rule needs a `query`".into()));
                }
                if r.window.is_none() {
                    return Err(fail(key("window"), "a log rule needs a `window`".into()));
                }
                let error_only = [
                    ("on", r.on.is_some()),
                    ("per", r.per.is_some()),
                    ("project", r.project.is_some()),
                    ("level", !r.level.0.is_empty()),
                    ("environment", r.environment.is_some()),
                    ("tags", !r.tags.is_empty()),
                ];
                if let Some((k, _)) = error_only.iter().find(|(_, set)| *set) {
                    return Err(not_for(k, "log rules (it is for error rules)"));
                }
            }
            RuleKind::Error => {
                let Some(on) = r.on else {
                    return Err(fail(
                        key("on"),
                        "an error rule needs `on`: new_issue, regression or event_rate".into(),
                    ));
                };
                if r.query.is_some() {
                    return Err(not_for(
                        "query",
                        "error rules (filter with project, level, environment, tags)",
                    ));
                }
                if !r.group_by.is_empty() {
                    return Err(not_for("group_by", "error rules (use `per`)"));
                }
                if on != ErrorTrigger::EventRate {
                    for (k, set) in [
                        ("above", r.above.is_some()),
                        ("at_least", r.at_least.is_some()),
                        ("per", r.per.is_some()),
                    ] {
                        if set {
                            return Err(not_for(k, "new_issue and regression rules"));
                        }
                    }
                } else if r.window.is_none() {
                    return Err(fail(
                        key("window"),
                        "an event_rate rule needs a `window`".into(),
                    ));
                }
            }
        }
        if let Some(w) = r.window
            && w.0.is_zero()
        {
            return Err(fail(
                key("window"),
                "expected a window longer than 0s, found 0s".into(),
            ));
        }
        if let Some(iv) = r.interval
            && iv.0 < std::time::Duration::from_secs(1)
        {
            return Err(fail(
                key("interval"),
                format!("expected at least 1s, found {}ms", iv.0.as_millis()),
            ));
        }
        for (j, f) in r.group_by.iter().enumerate() {
            if f.trim().is_empty() {
                return Err(fail(
                    format!("{at}[{i}].group_by[{j}]"),
                    "expected a field name, found an empty one".into(),
                ));
            }
        }
        for name in r.labels.keys() {
            if !is_label_name(name) {
                return Err(fail(
                    key(&format!("labels.{name}")),
                    format!(
                        "expected a label name matching [a-zA-Z_][a-zA-Z0-9_]*, found {name:?}"
                    ),
                ));
            }
            if RESERVED_LABELS.contains(&name.as_str()) {
                return Err(fail(
                    key(&format!("labels.{name}")),
                    format!("`{name}` is set from the rule's name and cannot be given"),
                ));
            }
        }
        for name in r.annotations.keys() {
            if !is_label_name(name) {
                return Err(fail(
                    key(&format!("annotations.{name}")),
                    format!(
                        "expected an annotation name matching [a-zA-Z_][a-zA-Z0-9_]*, found {name:?}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{Config, ConfigError};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        crate::parse("mecha.yaml", text, &|_| None)
    }

    fn rules(body: &str) -> String {
        format!("aggregator:\n  alerting:\n    rules:\n{body}")
    }

    #[test]
    fn every_kind_of_rule_is_read_with_its_defaults() {
        let text = rules(concat!(
            "      - name: PaymentErrors\n",
            "        type: log\n",
            "        query: 'level:error AND namespace:shop'\n",
            "        window: 5m\n",
            "        above: 10\n",
            "        group_by: [namespace, k8s.deployment.name]\n",
            "        for: 2m\n",
            "        keep_firing_for: 1m\n",
            "        labels: { severity: critical }\n",
            "        annotations: { summary: '{{ $value }} errors' }\n",
            "      - name: NewIssue\n",
            "        type: error\n",
            "        on: new_issue\n",
            "        project: 42\n",
            "        level: error\n",
            "        tags: { tenant: acme }\n",
            "      - name: HotIssue\n",
            "        type: error\n",
            "        on: event_rate\n",
            "        window: 10m\n",
            "        at_least: 100\n",
            "        per: project\n",
            "        interval: 1m\n",
        ));
        let c = match parse(&text) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let a = &c.aggregator.alerting;
        assert_eq!(a.evaluation_interval.0.as_secs(), 30);
        let [log, new, hot] = a.rules.as_slice() else {
            panic!("expected 3 rules, found {:?}", a.rules);
        };
        assert_eq!(log.min_count(), 11);
        assert_eq!(log.group_by, ["namespace", "k8s.deployment.name"]);
        assert_eq!(log.pending_for().as_secs(), 120);
        assert_eq!(log.keep_firing().as_secs(), 60);
        assert_eq!(log.interval_or(a.evaluation_interval.0).as_secs(), 30);
        assert_eq!(new.on, Some(super::ErrorTrigger::NewIssue));
        assert_eq!(new.level.0, ["error"]);
        assert_eq!(new.window_or_default(), super::DEFAULT_ISSUE_WINDOW);
        assert_eq!(new.min_count(), 1);
        assert_eq!(hot.min_count(), 100);
        assert_eq!(hot.per, Some(super::RatePer::Project));
        assert_eq!(hot.interval_or(a.evaluation_interval.0).as_secs(), 60);
    }

    #[test]
    fn rule_mistakes_name_line_and_key() {
        let log = "      - name: A\n        type: log\n        query: x\n";
        let cases = [
            (
                rules("      - name: A\n        type: metric\n"),
                5,
                "aggregator.alerting.rules[0].type",
                "unknown variant",
            ),
            (
                rules(&format!("{log}        window: 0s\n")),
                7,
                "aggregator.alerting.rules[0].window",
                "longer than 0s",
            ),
            (
                rules(log),
                4,
                "aggregator.alerting.rules[0].window",
                "needs a `window`",
            ),
            (
                rules(&format!(
                    "{log}        window: 1m\n{log}        window: 1m\n"
                )),
                8,
                "aggregator.alerting.rules[1].name",
                "unique name",
            ),
            (
                rules(&format!("{log}        window: 1m\n        on: new_issue\n")),
                8,
                "aggregator.alerting.rules[0].on",
                "does not apply",
            ),
            (
                rules(
                    "      - name: E\n        type: error\n        on: new_issue\n        above: 3\n",
                ),
                7,
                "aggregator.alerting.rules[0].above",
                "does not apply",
            ),
            (
                rules("      - name: E\n        type: error\n        on: sometimes\n"),
                6,
                "aggregator.alerting.rules[0].on",
                "unknown variant",
            ),
            (
                rules("      - name: E\n        type: error\n        on: event_rate\n"),
                4,
                "aggregator.alerting.rules[0].window",
                "needs a `window`",
            ),
            (
                rules(&format!(
                    "{log}        window: 1m\n        labels:\n          bad-name: x\n"
                )),
                9,
                "aggregator.alerting.rules[0].labels.bad-name",
                "label name",
            ),
            (
                rules(&format!(
                    "{log}        window: 1m\n        labels: {{ alertname: x }}\n"
                )),
                8,
                "aggregator.alerting.rules[0].labels.alertname",
                "cannot be given",
            ),
            (
                rules(&format!("{log}        window: 1m\n        wndow: 1m\n")),
                8,
                "aggregator.alerting.rules[0].wndow",
                "unknown field `wndow`",
            ),
        ];
        for (text, line, key, reason) in cases {
            match parse(&text) {
                Err(ConfigError::Invalid {
                    line: l,
                    key: k,
                    reason: r,
                    ..
                }) => {
                    assert_eq!((l, k.as_str()), (line, key), "{text}");
                    assert!(r.contains(reason), "{r:?} for {text}");
                }
                other => panic!("expected an error for {text:?}, got {other:?}"),
            }
        }
    }
}
