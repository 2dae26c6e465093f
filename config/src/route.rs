//! `aggregator.alerting.route` and `aggregator.alerting.inhibit_rules`:
//! Alertmanager's routing tree and inhibition rules, written as in an
//! `alertmanager.yml`.
//!
//! ```yaml
//! route:
//!   receiver: ops
//!   group_by: [alertname, namespace]
//!   routes:
//!     - matchers: ['severity=~"critical|page"']
//!       receiver: pager
//!       continue: true
//!     - match: { team: shop }
//!       receiver: shop-wecom
//! inhibit_rules:
//!   - source_matchers: ['severity="critical"']
//!     target_matchers: ['severity="warning"']
//!     equal: [alertname, namespace]
//! ```
//!
//! [`Matcher`] is also the matcher of silences (API and CLI), so one parser
//! reads `name="value"`, `name!="value"`, `name=~"regex"` and `name!~"regex"`
//! wherever they are written. This module only describes and checks; routing
//! happens in the aggregator.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::error::ConfigError;
use crate::values::{Duration, RegexPattern};

/// Default `group_wait`: how long a new group waits for more alerts before
/// its first notification.
pub const DEFAULT_GROUP_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// Default `group_interval`: how often a group is flushed after the first.
pub const DEFAULT_GROUP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);
/// Default `repeat_interval`: an unchanged group is sent again after this.
pub const DEFAULT_REPEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(4 * 3600);

/// How a [`Matcher`] compares a label's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// `=`: equal.
    Equal,
    /// `!=`: not equal.
    NotEqual,
    /// `=~`: the whole value matches the regex.
    Regex,
    /// `!~`: the whole value does not match the regex.
    NotRegex,
}

impl MatchOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// One label matcher, as Alertmanager writes it: `severity=~"crit|warn"`.
///
/// A missing label matches as the empty string, so `team=""` selects alerts
/// without a `team` label and `team!=""` those with one. Regexes are
/// anchored at both ends.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The label name.
    pub name: String,
    /// The comparison.
    pub op: MatchOp,
    /// The value or the regex, as written (unanchored).
    pub value: String,
    regex: Option<regex::Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.op, &self.value) == (&other.name, other.op, &other.value)
    }
}

impl Eq for Matcher {}

impl Matcher {
    /// A matcher; fails on an empty name or an invalid regex.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Matcher, String> {
        if name.is_empty() {
            return Err(format!(
                "expected a label name before {:?}, found none",
                op.as_str()
            ));
        }
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                regex::RegexBuilder::new(&format!("^(?:{value})$"))
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("invalid regex {value:?}: {e}"))?,
            ),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    /// Parses one matcher: `name="value"`, `name!=value`, `name=~"re"`,
    /// `name!~"re"`, optionally in braces (`{name="value"}`). Values may be
    /// double-quoted (with `\"`, `\\`, `\n` escapes) or bare.
    pub fn parse(s: &str) -> Result<Matcher, String> {
        let mut all = parse_matchers(s)?;
        match all.len() {
            1 => Ok(all.remove(0)),
            0 => Err(format!(
                "expected a matcher such as alertname=\"X\", found {s:?}"
            )),
            n => Err(format!("expected one matcher, found {n} in {s:?}")),
        }
    }

    /// Whether `value` (the empty string for a missing label) matches.
    pub fn matches(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(r)) => r.is_match(value),
            (MatchOp::NotRegex, Some(r)) => !r.is_match(value),
            // Unreachable: regex ops always carry their regex.
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }

    /// Whether the label set matches (a missing label is the empty string).
    pub fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches(labels.get(&self.name).map_or("", String::as_str))
    }

    /// Whether the operator is `=~` or `!~`.
    pub fn is_regex(&self) -> bool {
        matches!(self.op, MatchOp::Regex | MatchOp::NotRegex)
    }

    /// Whether the operator is `=` or `=~` (not negated).
    pub fn is_equal(&self) -> bool {
        matches!(self.op, MatchOp::Equal | MatchOp::Regex)
    }
}

/// Whether every matcher matches the label set.
pub fn matches_all(matchers: &[Matcher], labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|m| m.matches_labels(labels))
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}\"", self.name, self.op.as_str())?;
        for c in self.value.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Matcher::parse(&s).map_err(de::Error::custom)
    }
}

impl Serialize for Matcher {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Parses a comma-separated list of matchers, optionally in braces:
/// `{alertname="X", namespace=~"shop.*"}`.
pub fn parse_matchers(s: &str) -> Result<Vec<Matcher>, String> {
    let t = s.trim();
    let inner = match t.strip_prefix('{') {
        Some(rest) => rest
            .strip_suffix('}')
            .ok_or_else(|| format!("expected a closing }} in {s:?}"))?,
        None => t,
    };
    let chars: Vec<char> = inner.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        // Name: quoted, or up to the operator.
        let name = if chars[i] == '"' {
            let (n, next) = quoted(&chars, i, s)?;
            i = next;
            n
        } else {
            let start = i;
            while i < chars.len() && !matches!(chars[i], '=' | '!' | '~' | ',' | '"') {
                i += 1;
            }
            chars[start..i]
                .iter()
                .collect::<String>()
                .trim()
                .to_string()
        };
        skip_ws(&mut i);
        let rest: String = chars[i..].iter().take(2).collect();
        let op = if rest.starts_with("=~") {
            MatchOp::Regex
        } else if rest.starts_with("!~") {
            MatchOp::NotRegex
        } else if rest.starts_with("!=") {
            MatchOp::NotEqual
        } else if rest.starts_with('=') {
            MatchOp::Equal
        } else {
            return Err(format!(
                "expected an operator (=, !=, =~, !~) after {name:?} in {s:?}"
            ));
        };
        i += op.as_str().len();
        skip_ws(&mut i);
        let value = if i < chars.len() && chars[i] == '"' {
            let (v, next) = quoted(&chars, i, s)?;
            i = next;
            v
        } else {
            let start = i;
            while i < chars.len() && chars[i] != ',' {
                i += 1;
            }
            let v: String = chars[start..i].iter().collect();
            let v = v.trim().to_string();
            if v.contains('"') {
                return Err(format!("unbalanced quote in {s:?}"));
            }
            v
        };
        out.push(Matcher::new(&name, op, &value)?);
        skip_ws(&mut i);
        if i < chars.len() {
            if chars[i] != ',' {
                return Err(format!(
                    "expected a comma between matchers, found {:?} in {s:?}",
                    chars[i]
                ));
            }
            i += 1;
        }
    }
    Ok(out)
}

/// A double-quoted string starting at `chars[start]`; returns it unescaped
/// and the index after the closing quote.
fn quoted(chars: &[char], start: usize, whole: &str) -> Result<(String, usize), String> {
    let mut out = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '"' => return Ok((out, i + 1)),
            '\\' if i + 1 < chars.len() => {
                i += 1;
                out.push(match chars[i] {
                    'n' => '\n',
                    't' => '\t',
                    c => c,
                });
            }
            c => out.push(c),
        }
        i += 1;
    }
    Err(format!("unterminated quoted string in {whole:?}"))
}

/// `group_by`: label names, or `...` for every label (each distinct label
/// set is its own group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// Group by these labels' values (none: one group per route).
    Labels(Vec<String>),
    /// `...`: group by all labels.
    All,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy::Labels(Vec::new())
    }
}

/// One node of the routing tree. Unset settings are inherited from the
/// parent (the root's defaults are documented on each field).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The receiver alerts of this route go to. Required on the root;
    /// inherited by children.
    #[serde(default)]
    pub receiver: Option<String>,
    /// Labels whose values split alerts into groups (one notification per
    /// group); `[...]` groups by every label. Inherited; root default: none
    /// (one group per route).
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    /// How long a new group waits for more alerts before its first
    /// notification. Inherited; root default 30s.
    #[serde(default)]
    pub group_wait: Option<Duration>,
    /// How often a group is flushed after its first notification (new alerts
    /// wait for the next flush). Inherited; root default 5m.
    #[serde(default)]
    pub group_interval: Option<Duration>,
    /// An unchanged group is notified again after this long. Inherited; root
    /// default 4h.
    #[serde(default)]
    pub repeat_interval: Option<Duration>,
    /// Label matchers an alert must all satisfy to take this route:
    /// `alertname="X"`, `severity!="info"`, `namespace=~"shop.*"`,
    /// `team!~"a|b"`. Not inherited.
    #[serde(default)]
    pub matchers: Vec<Matcher>,
    /// Legacy equality matchers (`match: {severity: critical}`).
    #[serde(default, rename = "match")]
    pub match_eq: BTreeMap<String, String>,
    /// Legacy regex matchers (`match_re: {service: "^(foo|bar)$"}`),
    /// anchored.
    #[serde(default)]
    pub match_re: BTreeMap<String, RegexPattern>,
    /// Whether an alert that matched this route goes on to be matched
    /// against the following siblings. Default false: the first matching
    /// child wins.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    /// Child routes, tried in order; an alert no child matches stays on this
    /// route.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

impl RouteConfig {
    /// Every matcher of the route: `matchers`, then `match`, then `match_re`.
    pub fn all_matchers(&self) -> Result<Vec<Matcher>, String> {
        let mut out = self.matchers.clone();
        for (k, v) in &self.match_eq {
            out.push(Matcher::new(k, MatchOp::Equal, v)?);
        }
        for (k, v) in &self.match_re {
            out.push(Matcher::new(k, MatchOp::Regex, v.0.as_str())?);
        }
        Ok(out)
    }

    /// The route's own `group_by`, if set.
    pub fn group_by(&self) -> Option<GroupBy> {
        self.group_by.as_ref().map(|g| {
            if g.iter().any(|l| l == "...") {
                GroupBy::All
            } else {
                GroupBy::Labels(g.clone())
            }
        })
    }
}

/// One inhibition rule: while an alert matching `source_matchers` fires,
/// alerts matching `target_matchers` with the same values of the `equal`
/// labels are not notified.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    /// Matchers a firing alert must satisfy to inhibit others.
    #[serde(default)]
    pub source_matchers: Vec<Matcher>,
    /// Matchers an alert must satisfy to be inhibited.
    #[serde(default)]
    pub target_matchers: Vec<Matcher>,
    /// Labels that must have equal values in source and target (a label
    /// missing from both counts as equal).
    #[serde(default)]
    pub equal: Vec<String>,
}

/// Checks the routing tree and inhibition rules of `aggregator.alerting`:
/// every route's receiver exists, the root has a receiver and no matchers,
/// intervals are not zero, `group_by` is either `...` or label names.
pub(crate) fn check(
    alerting: &crate::AlertingConfig,
    fail: &dyn Fn(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let base = "aggregator.alerting";
    let names: BTreeSet<&str> = alerting.receivers.iter().map(|r| r.name.as_str()).collect();
    if let Some(root) = &alerting.route {
        let at = format!("{base}.route");
        if root.receiver.is_none() {
            return Err(fail(
                at,
                "expected a receiver on the root route, found none".into(),
            ));
        }
        if !root.matchers.is_empty() || !root.match_eq.is_empty() || !root.match_re.is_empty() {
            return Err(fail(
                format!("{at}.matchers"),
                "the root route matches every alert: expected no matchers".into(),
            ));
        }
        if root.continue_matching {
            return Err(fail(
                format!("{at}.continue"),
                "the root route cannot have continue: it has no siblings".into(),
            ));
        }
        check_route(root, &at, &names, fail)?;
    }
    for (i, rule) in alerting.inhibit_rules.iter().enumerate() {
        for (key, matchers) in [
            ("source_matchers", &rule.source_matchers),
            ("target_matchers", &rule.target_matchers),
        ] {
            if matchers.is_empty() {
                return Err(fail(
                    format!("{base}.inhibit_rules[{i}]"),
                    format!("expected {key} with at least one matcher, found none"),
                ));
            }
        }
    }
    Ok(())
}

fn check_route(
    route: &RouteConfig,
    at: &str,
    receivers: &BTreeSet<&str>,
    fail: &dyn Fn(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if let Some(r) = &route.receiver
        && !receivers.contains(r.as_str())
    {
        let known: Vec<&str> = receivers.iter().copied().collect();
        let known = if known.is_empty() {
            "none are configured".to_string()
        } else {
            format!("known: {}", known.join(", "))
        };
        return Err(fail(
            format!("{at}.receiver"),
            format!("no receiver named {r:?} under aggregator.alerting.receivers ({known})"),
        ));
    }
    if let Some(g) = &route.group_by {
        let mut seen = BTreeSet::new();
        for (i, label) in g.iter().enumerate() {
            if label == "..." && g.len() > 1 {
                return Err(fail(
                    format!("{at}.group_by[{i}]"),
                    "`...` groups by every label: expected it alone".into(),
                ));
            }
            if label.is_empty() {
                return Err(fail(
                    format!("{at}.group_by[{i}]"),
                    "expected a label name, found an empty string".into(),
                ));
            }
            if !seen.insert(label) {
                return Err(fail(
                    format!("{at}.group_by[{i}]"),
                    format!("label {label:?} is listed twice"),
                ));
            }
        }
    }
    for (key, d) in [
        ("group_interval", route.group_interval),
        ("repeat_interval", route.repeat_interval),
    ] {
        if d.is_some_and(|d| d.0.is_zero()) {
            return Err(fail(
                format!("{at}.{key}"),
                "expected a duration above zero, found 0".into(),
            ));
        }
    }
    for (i, child) in route.routes.iter().enumerate() {
        check_route(child, &format!("{at}.routes[{i}]"), receivers, fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matchers_parse_every_operator_and_quoting() {
        let cases = [
            ("alertname=\"X\"", "alertname", MatchOp::Equal, "X"),
            ("severity!=info", "severity", MatchOp::NotEqual, "info"),
            (
                "namespace=~\"shop.*\"",
                "namespace",
                MatchOp::Regex,
                "shop.*",
            ),
            ("team !~ \"a|b\"", "team", MatchOp::NotRegex, "a|b"),
            (
                "{msg=\"say \\\"hi\\\"\"}",
                "msg",
                MatchOp::Equal,
                "say \"hi\"",
            ),
            ("empty=\"\"", "empty", MatchOp::Equal, ""),
        ];
        for (text, name, op, value) in cases {
            let m = Matcher::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((m.name.as_str(), m.op, m.value.as_str()), (name, op, value));
            // What is displayed parses back to the same matcher.
            assert_eq!(Matcher::parse(&m.to_string()), Ok(m.clone()), "{text}");
        }
        for bad in [
            "alertname",
            "=\"x\"",
            "a=~\"(\"",
            "a=\"x",
            "a=\"x\" b=\"y\"",
        ] {
            assert!(Matcher::parse(bad).is_err(), "{bad} was accepted");
        }
        let list = parse_matchers("{a=\"1\", b=~\"2|3\"}").unwrap_or_default();
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn matchers_anchor_regexes_and_treat_missing_labels_as_empty() {
        let l = labels(&[("namespace", "shop-eu"), ("severity", "crit")]);
        let m = |s: &str| Matcher::parse(s).unwrap_or_else(|e| panic!("{e}"));
        assert!(m("namespace=~\"shop.*\"").matches_labels(&l));
        assert!(!m("namespace=~\"shop\"").matches_labels(&l));
        assert!(!m("namespace!~\"shop-.*\"").matches_labels(&l));
        assert!(m("severity=~\"crit|warn\"").matches_labels(&l));
        assert!(m("team=\"\"").matches_labels(&l));
        assert!(!m("team!=\"\"").matches_labels(&l));
        assert!(m("team!=\"a\"").matches_labels(&l));
    }

    fn parse(text: &str) -> Result<crate::Config, ConfigError> {
        crate::parse("mecha.yaml", text, &|_| None)
    }

    const RECEIVERS: &str =
        "aggregator:\n  alerting:\n    receivers:\n      - name: ops\n      - name: pager\n";

    #[test]
    fn a_routing_tree_is_read_with_legacy_matchers() {
        let text = format!(
            "{RECEIVERS}    route:\n      receiver: ops\n      group_by: ['...']\n      group_wait: 10s\n      routes:\n        - matchers: ['severity=~\"crit|page\"']\n          receiver: pager\n          continue: true\n        - match: {{ team: shop }}\n          match_re: {{ service: 'cart|pay' }}\n    inhibit_rules:\n      - source_matchers: ['severity=\"critical\"']\n        target_matchers: ['severity=\"warning\"']\n        equal: [alertname]\n"
        );
        let c = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        let a = &c.aggregator.alerting;
        let Some(root) = &a.route else {
            panic!("no route read")
        };
        assert_eq!(root.group_by(), Some(GroupBy::All));
        assert_eq!(root.group_wait.map(|d| d.0.as_secs()), Some(10));
        assert!(root.routes[0].continue_matching);
        let legacy = root.routes[1].all_matchers().unwrap_or_default();
        let shown: Vec<String> = legacy.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["team=\"shop\"", "service=~\"cart|pay\""]);
        assert!(legacy[1].matches("cart") && !legacy[1].matches("cartx"));
        assert_eq!(a.inhibit_rules[0].equal, ["alertname"]);
    }

    #[test]
    fn routing_mistakes_name_line_and_key() {
        let cases = [
            (
                format!(
                    "{RECEIVERS}    route:\n      receiver: ops\n      routes:\n        - receiver: pager\n        - receiver: nobody\n"
                ),
                10,
                "aggregator.alerting.route.routes[1].receiver",
            ),
            (
                format!("{RECEIVERS}    route:\n      group_by: [a]\n"),
                6,
                "aggregator.alerting.route",
            ),
            (
                format!(
                    "{RECEIVERS}    route:\n      receiver: ops\n      routes:\n        - matchers: ['a=~\"(\"']\n"
                ),
                9,
                "aggregator.alerting.route.routes[0].matchers[0]",
            ),
            (
                format!("{RECEIVERS}    route:\n      receiver: ops\n      group_by: ['...', a]\n"),
                8,
                "aggregator.alerting.route.group_by[0]",
            ),
            (
                format!("{RECEIVERS}    route:\n      receiver: ops\n      repeat_interval: 0s\n"),
                8,
                "aggregator.alerting.route.repeat_interval",
            ),
            (
                format!(
                    "{RECEIVERS}    route:\n      receiver: ops\n      matchers: ['a=\"b\"']\n"
                ),
                8,
                "aggregator.alerting.route.matchers",
            ),
            (
                format!(
                    "{RECEIVERS}    inhibit_rules:\n      - source_matchers: ['a=\"b\"']\n        equal: [x]\n"
                ),
                7,
                "aggregator.alerting.inhibit_rules[0]",
            ),
        ];
        for (text, line, key) in cases {
            match parse(&text) {
                Err(ConfigError::Invalid {
                    line: l, key: k, ..
                }) => assert_eq!((l, k.as_str()), (line, key), "{text}"),
                other => panic!("expected an error for {text}, got {other:?}"),
            }
        }
    }
}
