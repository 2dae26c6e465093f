//! Log rules: the number of records matching a search query over a window,
//! in total or per group of field values, against a threshold.
//!
//! Counts come from [`Store::count_by`] (the index's inverted lists, no hit
//! is loaded). The alert links to the same search, narrowed to its group.
//! This module must not keep state: the engine does.

use mecha_config::{RuleConfig, label_for_field};

use std::collections::BTreeMap;

use super::state::ActiveAlert;
use super::{Evaluation, Sample, base_labels, group_count};
use crate::Error;
use crate::alert::model::Labels;
use crate::store::Store;

/// The samples of a log rule at `now_ns`: one per group (or one in total
/// without `group_by`) whose count reaches the threshold, and the counts of
/// the groups of `alerts` (the rule's active alerts) that no longer do.
pub(crate) fn evaluate(
    rule: &RuleConfig,
    store: &Store,
    alerts: &BTreeMap<String, ActiveAlert>,
    now_ns: i64,
    external_url: &str,
) -> Result<Evaluation, Error> {
    let query = rule.query.as_deref().unwrap_or_default();
    let window = i64::try_from(rule.window_or_default().as_nanos()).unwrap_or(i64::MAX);
    let counts = store.count_by(query, now_ns.saturating_sub(window), now_ns, &rule.group_by)?;
    let min = rule.min_count();
    let mut out = Vec::new();
    if rule.group_by.is_empty() {
        if counts.total >= min {
            out.push(sample(rule, &[], counts.total, external_url));
        }
        return Ok(Evaluation::with_below(out, alerts, |_| Some(counts.total)));
    }
    for (values, n) in &counts.groups {
        if *n >= min {
            out.push(sample(rule, values, *n, external_url));
        }
    }
    if counts.other > 0 {
        tracing::warn!(
            rule = %rule.name,
            records = counts.other,
            "more groups than a rule alerts on; records in further groups are not alerted on"
        );
    }
    // An alert's labels hold its group's values (none for an empty one).
    let key = |labels: &Labels| -> Vec<String> {
        rule.group_by
            .iter()
            .map(|f| labels.get(&label_for_field(f)).cloned().unwrap_or_default())
            .collect()
    };
    Ok(Evaluation::with_below(out, alerts, |labels| {
        group_count(&counts, &key(labels))
    }))
}

fn sample(rule: &RuleConfig, values: &[String], count: u64, external_url: &str) -> Sample {
    let mut labels = Labels::new();
    let mut narrowed = Vec::new();
    for (field, value) in rule.group_by.iter().zip(values) {
        if !value.is_empty() {
            labels.insert(label_for_field(field), value.clone());
            narrowed.push(format!("{field}:{}", quote(value)));
        }
    }
    labels.extend(base_labels(rule));
    let query = rule.query.as_deref().unwrap_or_default().trim();
    let mut q = if query.is_empty() || query == "*" {
        String::new()
    } else {
        format!("({query})")
    };
    for n in narrowed {
        if !q.is_empty() {
            q.push_str(" AND ");
        }
        q.push_str(&n);
    }
    Sample {
        labels,
        value: count as f64,
        generator_url: search_url(external_url, &q, rule.window_or_default()),
        triggered_ns: None,
        issue_id: None,
        extra_annotations: Labels::new(),
    }
}

/// A value as a query phrase.
pub(crate) fn quote(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// The search API's URL for `q` over the last `window`.
pub(crate) fn search_url(external_url: &str, q: &str, window: std::time::Duration) -> String {
    format!(
        "{}/api/v1/logs/search?q={}&from=now-{}s",
        external_url.trim_end_matches('/'),
        encode(q),
        window.as_secs()
    )
}

/// Percent-encodes a query-string value.
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A sample with `<field>` in place of each group value.
pub(crate) fn placeholder(rule: &RuleConfig, value: f64, external_url: &str) -> Sample {
    let values: Vec<String> = rule.group_by.iter().map(|f| format!("<{f}>")).collect();
    let mut s = sample(rule, &values, value as u64, external_url);
    s.value = value;
    s
}
