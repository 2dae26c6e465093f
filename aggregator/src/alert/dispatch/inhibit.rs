//! Inhibition: while a firing alert matches a rule's `source_matchers`,
//! alerts matching its `target_matchers` that have the same values for the
//! `equal` labels are muted (e.g. a critical alert mutes the warning of the
//! same cluster).
//!
//! As in Alertmanager an alert never inhibits itself, and when an alert
//! matches both sides of a rule, sources that also match the target side are
//! ignored for it, so that two such alerts cannot mute each other. This
//! module must not hold alerts: the dispatcher passes the firing ones.

use mecha_config::{InhibitRuleConfig, matches_all};

use crate::alert::model::Alert;

/// The inhibition rules of a config.
#[derive(Debug, Clone, Default)]
pub struct Inhibitor {
    rules: Vec<InhibitRuleConfig>,
}

impl Inhibitor {
    /// Rules from `aggregator.alerting.inhibit_rules`.
    pub fn new(rules: Vec<InhibitRuleConfig>) -> Inhibitor {
        Inhibitor { rules }
    }

    /// The fingerprints of the firing alerts in `sources` that inhibit
    /// `target` (empty: not inhibited).
    pub fn inhibited_by<'a>(
        &self,
        target: &Alert,
        sources: impl Iterator<Item = &'a Alert> + Clone,
    ) -> Vec<String> {
        let mut by = Vec::new();
        for rule in &self.rules {
            if !matches_all(&rule.target_matchers, &target.labels) {
                continue;
            }
            let two_sided = matches_all(&rule.source_matchers, &target.labels);
            for source in sources.clone() {
                if source.fingerprint == target.fingerprint
                    || !matches_all(&rule.source_matchers, &source.labels)
                    || (two_sided && matches_all(&rule.target_matchers, &source.labels))
                {
                    continue;
                }
                let equal = rule
                    .equal
                    .iter()
                    .all(|l| source.labels.get(l) == target.labels.get(l));
                if equal && !by.contains(&source.fingerprint) {
                    by.push(source.fingerprint.clone());
                }
            }
        }
        by
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::model::AlertStatus;

    fn alert(fp: &str, pairs: &[(&str, &str)]) -> Alert {
        Alert {
            status: AlertStatus::Firing,
            labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: Default::default(),
            starts_at: chrono::DateTime::UNIX_EPOCH,
            ends_at: chrono::DateTime::UNIX_EPOCH,
            generator_url: String::new(),
            fingerprint: fp.into(),
            value: None,
        }
    }

    fn rule(source: &[&str], target: &[&str], equal: &[&str]) -> InhibitRuleConfig {
        let m = |v: &[&str]| {
            v.iter()
                .map(|s| mecha_config::Matcher::parse(s).unwrap_or_else(|e| panic!("{e}")))
                .collect()
        };
        InhibitRuleConfig {
            source_matchers: m(source),
            target_matchers: m(target),
            equal: equal.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_source_mutes_targets_with_equal_labels_only() {
        let inh = Inhibitor::new(vec![rule(
            &["severity=\"critical\""],
            &["severity=\"warning\""],
            &["cluster"],
        )]);
        let crit_a = alert("c1", &[("severity", "critical"), ("cluster", "a")]);
        let warn_a = alert("w1", &[("severity", "warning"), ("cluster", "a")]);
        let warn_b = alert("w2", &[("severity", "warning"), ("cluster", "b")]);
        let all = [crit_a.clone(), warn_a.clone(), warn_b.clone()];
        assert_eq!(inh.inhibited_by(&warn_a, all.iter()), ["c1"]);
        assert!(inh.inhibited_by(&warn_b, all.iter()).is_empty());
        assert!(inh.inhibited_by(&crit_a, all.iter()).is_empty());
        // A label missing on both sides counts as equal.
        let crit = alert("c2", &[("severity", "critical")]);
        let warn = alert("w3", &[("severity", "warning")]);
        assert_eq!(inh.inhibited_by(&warn, [crit, warn.clone()].iter()), ["c2"]);
    }

    #[test]
    fn alerts_matching_both_sides_do_not_mute_each_other_or_themselves() {
        let inh = Inhibitor::new(vec![rule(&["team=\"ops\""], &["team=\"ops\""], &[])]);
        let a = alert("a", &[("team", "ops")]);
        let b = alert("b", &[("team", "ops")]);
        let all = [a.clone(), b.clone()];
        assert!(inh.inhibited_by(&a, all.iter()).is_empty());
        assert!(inh.inhibited_by(&b, all.iter()).is_empty());
    }
}
