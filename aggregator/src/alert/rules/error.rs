//! Error rules over Sentry issues: `new_issue` and `regression` fire on the
//! issue store's announcements ([`IssueEvent`](crate::issues::IssueEvent)),
//! `event_rate` counts an issue's (or a project's) events over a window.
//!
//! Event rates are counted in the log index, where every Sentry event is a
//! slim record carrying `sentry.issue_id`, `sentry.project_id`, its level,
//! environment and tags: the count survives restarts and missed
//! announcements, and filters are plain query terms. An event-fired alert
//! stays firing for `window` (default 1h) after its event, or until the
//! issue is resolved or ignored. Filters: `project`, `level`,
//! `environment`, `tags`. This module must not keep state: the engine does.

use std::collections::BTreeMap;

use mecha_config::{ErrorTrigger, RatePer, RuleConfig};
use mecha_parsers::Severity;
use mecha_parsers::sentry::attr;
use serde_json::Value;

use super::log::quote;
use super::state::ActiveAlert;
use super::{Evaluation, Sample, base_labels, fingerprint, group_count};
use crate::Error;
use crate::alert::model::Labels;
use crate::issues::route::ISSUE_ID_ATTR;
use crate::issues::store::ListQuery;
use crate::issues::{Issue, IssueStore, Status};
use crate::store::Store;

/// Most issues read after missed announcements.
const CATCH_UP_LIMIT: usize = 10_000;

/// The samples of an error rule at `now_ns`. For event-fired rules:
/// `alerts` are the rule's active alerts and `triggers` the announcements
/// since the last evaluation.
pub(crate) fn evaluate(
    rule: &RuleConfig,
    store: &Store,
    issues: &IssueStore,
    alerts: &BTreeMap<String, ActiveAlert>,
    triggers: Vec<Sample>,
    now_ns: i64,
    external_url: &str,
) -> Result<Evaluation, Error> {
    match rule.on {
        Some(ErrorTrigger::EventRate) => rate(rule, store, issues, alerts, now_ns, external_url),
        Some(ErrorTrigger::NewIssue | ErrorTrigger::Regression) => {
            triggered(rule, issues, alerts, triggers, now_ns)
        }
        None => Ok(Evaluation::default()),
    }
}

/// The search query selecting a rule's events (project, level, environment,
/// tags); `*` without filters.
pub(crate) fn filter_query(rule: &RuleConfig) -> String {
    let mut parts = Vec::new();
    if let Some(p) = rule.project {
        parts.push(format!("{}:{}", attr::PROJECT_ID, quote(&p.to_string())));
    }
    if !rule.level.0.is_empty() {
        let levels: Vec<String> = rule
            .level
            .0
            .iter()
            .map(|l| format!("level:{}", quote(&severity_name(l))))
            .collect();
        parts.push(format!("({})", levels.join(" OR ")));
    }
    if let Some(env) = &rule.environment {
        parts.push(format!("environment:{}", quote(env)));
    }
    for (k, v) in &rule.tags {
        parts.push(format!("{k}:{}", quote(v)));
    }
    if parts.is_empty() {
        "*".to_string()
    } else {
        parts.join(" AND ")
    }
}

/// A Sentry level as the index names severities (`warning` → `warn`).
fn severity_name(level: &str) -> String {
    Severity::parse(level).map_or_else(|| level.to_ascii_lowercase(), |s| s.as_str().to_string())
}

fn rate(
    rule: &RuleConfig,
    store: &Store,
    issues: &IssueStore,
    alerts: &BTreeMap<String, ActiveAlert>,
    now_ns: i64,
    external_url: &str,
) -> Result<Evaluation, Error> {
    let window = i64::try_from(rule.window_or_default().as_nanos()).unwrap_or(i64::MAX);
    let per = rule.per.unwrap_or_default();
    let group_by: Vec<String> = match per {
        RatePer::Issue => vec![ISSUE_ID_ATTR.to_string(), attr::PROJECT_ID.to_string()],
        RatePer::Project => vec![attr::PROJECT_ID.to_string()],
    };
    let counts = store.count_by(
        &filter_query(rule),
        now_ns.saturating_sub(window),
        now_ns,
        &group_by,
    )?;
    let min = rule.min_count();
    let mut out = Vec::new();
    for (values, n) in &counts.groups {
        let n = *n;
        if n < min {
            continue;
        }
        let mut labels = Labels::new();
        let mut extra = Labels::new();
        let url = external_url.trim_end_matches('/');
        let generator_url = match (per, values.as_slice()) {
            (RatePer::Issue, [issue, project]) if !issue.is_empty() => {
                labels.insert("issue_id".into(), issue.clone());
                if !project.is_empty() {
                    labels.insert("project".into(), project.clone());
                }
                if let Some(i) = issue
                    .parse::<u64>()
                    .ok()
                    .and_then(|id| issues.get(id).ok().flatten())
                {
                    labels.insert("level".into(), i.level.clone());
                    extra.insert("title".into(), i.title.clone());
                    if !i.culprit.is_empty() {
                        extra.insert("culprit".into(), i.culprit.clone());
                    }
                }
                format!("{url}/api/v1/issues/{issue}")
            }
            (RatePer::Project, [project]) if !project.is_empty() => {
                labels.insert("project".into(), project.clone());
                format!("{url}/api/v1/issues?project={project}")
            }
            _ => continue,
        };
        labels.extend(base_labels(rule));
        out.push(Sample {
            labels,
            value: n as f64,
            generator_url,
            triggered_ns: None,
            issue_id: values
                .first()
                .and_then(|v| v.parse().ok())
                .filter(|_| per == RatePer::Issue),
            extra_annotations: extra,
        });
    }
    // An alert's group, read back from its labels as set above.
    let key = |labels: &Labels| -> Vec<String> {
        let get = |name: &str| labels.get(name).cloned().unwrap_or_default();
        match per {
            RatePer::Issue => vec![get("issue_id"), get("project")],
            RatePer::Project => vec![get("project")],
        }
    };
    Ok(Evaluation::with_below(out, alerts, |labels| {
        group_count(&counts, &key(labels))
    }))
}

fn triggered(
    rule: &RuleConfig,
    issues: &IssueStore,
    alerts: &BTreeMap<String, ActiveAlert>,
    triggers: Vec<Sample>,
    now_ns: i64,
) -> Result<Evaluation, Error> {
    let window = i64::try_from(rule.window_or_default().as_nanos()).unwrap_or(i64::MAX);
    let mut by_issue: BTreeMap<u64, Sample> = BTreeMap::new();
    for a in alerts.values() {
        let (Some(id), Some(at)) = (a.issue_id, a.triggered_ns) else {
            continue;
        };
        by_issue.insert(
            id,
            Sample {
                labels: a.labels.clone(),
                value: a.value,
                generator_url: a.generator_url.clone(),
                triggered_ns: Some(at),
                issue_id: Some(id),
                extra_annotations: Labels::new(),
            },
        );
    }
    for t in triggers {
        if let Some(id) = t.issue_id {
            by_issue.insert(id, t);
        }
    }
    let mut out = Vec::new();
    let mut below = BTreeMap::new();
    for (id, mut s) in by_issue {
        let expired = s
            .triggered_ns
            .is_some_and(|at| now_ns.saturating_sub(at) >= window);
        match issues.get(id)? {
            Some(issue) if !expired && issue.status == Status::Unresolved => {
                s.value = issue.count as f64;
                s.extra_annotations
                    .insert("title".into(), issue.title.clone());
                if !issue.culprit.is_empty() {
                    s.extra_annotations
                        .insert("culprit".into(), issue.culprit.clone());
                }
                out.push(s);
            }
            // Out of its window, resolved or ignored: the alert resolves,
            // showing the issue's count then.
            Some(issue) => {
                below.insert(fingerprint(&s.labels), issue.count as f64);
            }
            // Gone (retention): it resolves with its last count.
            None => {}
        }
    }
    Ok(Evaluation {
        samples: out,
        below,
    })
}

/// Whether an announced issue (and its event, when still kept) passes the
/// rule's filters.
pub(crate) fn trigger_matches(rule: &RuleConfig, issue: &Issue, event: Option<&Value>) -> bool {
    if rule.project.is_some_and(|p| p != issue.project) {
        return false;
    }
    if !rule.level.0.is_empty() {
        let level = event
            .and_then(|e| e.get("level"))
            .and_then(Value::as_str)
            .unwrap_or(&issue.level);
        let have = severity_name(level);
        if !rule.level.0.iter().any(|l| severity_name(l) == have) {
            return false;
        }
    }
    if let Some(env) = &rule.environment {
        let event_env = event
            .and_then(|e| e.get("environment"))
            .and_then(Value::as_str);
        let ok = match event_env {
            Some(e) => e == env,
            None => event.is_none() && issue.environments.iter().any(|e| e == env),
        };
        if !ok {
            return false;
        }
    }
    if !rule.tags.is_empty() {
        let Some(event) = event else {
            return false;
        };
        let tags = event_tags(event);
        if !rule
            .tags
            .iter()
            .all(|(k, v)| tags.get(k.as_str()) == Some(v))
        {
            return false;
        }
    }
    true
}

/// An event's tags, whether sent as `[[k, v], ...]` or as an object.
fn event_tags(event: &Value) -> BTreeMap<&str, String> {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match event.get("tags") {
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), text(v)?)))
            .collect(),
        Some(Value::Array(pairs)) => pairs
            .iter()
            .filter_map(|p| match p.as_array()?.as_slice() {
                [k, v] => Some((k.as_str()?, text(v)?)),
                _ => None,
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// The sample an announced issue gives an event-fired rule.
pub(crate) fn trigger_sample(
    rule: &RuleConfig,
    issue: &Issue,
    now_ns: i64,
    external_url: &str,
) -> Sample {
    let mut labels = issue_labels(issue.project, issue.id, &issue.level);
    labels.extend(base_labels(rule));
    let mut extra = Labels::from([("title".to_string(), issue.title.clone())]);
    if !issue.culprit.is_empty() {
        extra.insert("culprit".into(), issue.culprit.clone());
    }
    Sample {
        labels,
        value: issue.count as f64,
        generator_url: format!(
            "{}/api/v1/issues/{}",
            external_url.trim_end_matches('/'),
            issue.id
        ),
        triggered_ns: Some(now_ns),
        issue_id: Some(issue.id),
        extra_annotations: extra,
    }
}

fn issue_labels(project: u64, id: u64, level: &str) -> Labels {
    Labels::from([
        ("project".to_string(), project.to_string()),
        ("issue_id".to_string(), id.to_string()),
        ("level".to_string(), level.to_string()),
    ])
}

/// The event `event_id` of an issue if still kept, else its newest event.
pub(crate) fn event_json(issues: &IssueStore, id: u64, event_id: &str) -> Option<Value> {
    let page = issues.events(id, 20, None).ok()?;
    let mut events = page.events.into_iter();
    let first = events.next()?;
    if first.event_id == event_id {
        return Some(first.event);
    }
    Some(
        events
            .find(|e| e.event_id == event_id)
            .map_or(first.event, |e| e.event),
    )
}

/// After missed announcements: issues newer than `max_id` (created) and
/// unresolved regressed ones (`false`).
pub(crate) fn issues_since(issues: &IssueStore, max_id: u64) -> Result<Vec<(Issue, bool)>, Error> {
    let page = issues.list(&ListQuery {
        status: Some(Status::Unresolved),
        limit: CATCH_UP_LIMIT,
        ..ListQuery::default()
    })?;
    let mut out: Vec<(Issue, bool)> = page
        .issues
        .into_iter()
        .filter_map(|i| {
            if i.id > max_id {
                Some((i, true))
            } else if i.regressed {
                Some((i, false))
            } else {
                None
            }
        })
        .collect();
    out.sort_by_key(|(i, _)| i.id);
    Ok(out)
}

/// A sample with `<issue_id>` (and `<project>` when the rule names none)
/// in place of a real issue (`mecha alert preview`).
pub(crate) fn placeholder(
    rule: &RuleConfig,
    value: f64,
    now_ns: i64,
    external_url: &str,
) -> Sample {
    let project = rule
        .project
        .map_or_else(|| "<project>".to_string(), |p| p.to_string());
    let level = rule
        .level
        .0
        .first()
        .cloned()
        .unwrap_or_else(|| "error".into());
    let url = external_url.trim_end_matches('/');
    let mut labels = Labels::from([("project".to_string(), project.clone())]);
    let mut extra = Labels::new();
    let generator_url = if rule.per == Some(RatePer::Project) {
        format!("{url}/api/v1/issues?project={project}")
    } else {
        labels.insert("issue_id".into(), "<issue_id>".into());
        labels.insert("level".into(), level);
        extra.insert("title".into(), "<issue title>".into());
        format!("{url}/api/v1/issues/<issue_id>")
    };
    labels.extend(base_labels(rule));
    let triggered = rule.on != Some(ErrorTrigger::EventRate);
    Sample {
        labels,
        value,
        generator_url,
        triggered_ns: triggered.then_some(now_ns),
        issue_id: None,
        extra_annotations: extra,
    }
}
