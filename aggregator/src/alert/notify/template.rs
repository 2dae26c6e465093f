//! Message templates: the default title and text of each markup (markdown
//! for WeCom, DingTalk and Feishu cards, Slack mrkdwn, plain text), and
//! users' own templates in minijinja (Jinja2) syntax.
//!
//! Templates see one notification and the alerts of the message being
//! rendered (a long group is split over several messages, see
//! [`super::split`]). Rendering runs with a fuel limit so a user template
//! cannot loop for ever; a user template that fails to render falls back to
//! the default one (logged), so an alert is never lost to a template. This
//! module must not send anything.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::alert::model::{AlertStatus, Labels, Notification};

/// Template instructions one rendering may spend.
const FUEL: u64 = 200_000;

/// Longest annotation shown, in bytes (a stack trace in a description must
/// not crowd out the other alerts of a message).
pub const MAX_ANNOTATION_BYTES: usize = 800;

/// The markup a message is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Markup {
    /// CommonMark-ish: `**bold**`, `> quote`, `[text](url)` (WeCom,
    /// DingTalk, Feishu card `lark_md`).
    Markdown,
    /// Slack mrkdwn: `*bold*`, `<url|text>`.
    Slack,
    /// Plain text.
    Text,
}

/// Default title: `[FIRING:3] HighErrorRate (critical)`.
pub const DEFAULT_TITLE: &str = "[{{ status|upper }}:{{ firing if status == 'firing' else resolved }}] {{ alertname }}{% if severity %} ({{ severity }}){% endif %}";

const MARKDOWN: &str = r#"{% if show_title %}## {{ title }}
{% endif -%}
{% for a in alerts %}
**{{ a.name }}**{% if a.severity %} · {{ a.severity }}{% endif %} · {{ "🔥 firing" if a.status == "firing" else "✅ resolved" }}
{% if a.summary %}> {{ a.summary }}
{% endif -%}
{% if a.description and a.description != a.summary %}> {{ a.description }}
{% endif -%}
{% if a.value %}> {{ "Value at resolve" if a.status == "resolved" else "Value" }}: {{ a.value }}
{% endif -%}
{% if a.label_text %}> Labels: {{ a.label_text }}
{% endif -%}
> Started: {{ a.starts_at }}{% if a.status == "resolved" %} · Resolved: {{ a.ends_at }} (after {{ a.duration }}){% else %} (for {{ a.duration }}){% endif %}
{% if a.url %}> [Details]({{ a.url }})
{% endif -%}
{% endfor -%}
{% if omitted %}
**+{{ omitted }} more**
{% endif -%}
{% if parts > 1 %}
({{ part }}/{{ parts }})
{% endif %}"#;

const SLACK: &str = r#"{% if show_title %}*{{ title }}*
{% endif -%}
{% for a in alerts %}
*{{ a.name }}*{% if a.severity %} · {{ a.severity }}{% endif %} · {{ ":fire: firing" if a.status == "firing" else ":white_check_mark: resolved" }}
{% if a.summary %}> {{ a.summary }}
{% endif -%}
{% if a.description and a.description != a.summary %}> {{ a.description }}
{% endif -%}
{% if a.value %}> {{ "Value at resolve" if a.status == "resolved" else "Value" }}: {{ a.value }}
{% endif -%}
{% if a.label_text %}> Labels: {{ a.label_text }}
{% endif -%}
> Started: {{ a.starts_at }}{% if a.status == "resolved" %} · Resolved: {{ a.ends_at }} (after {{ a.duration }}){% else %} (for {{ a.duration }}){% endif %}
{% if a.url %}> <{{ a.url }}|Details>
{% endif -%}
{% endfor -%}
{% if omitted %}
*+{{ omitted }} more*
{% endif -%}
{% if parts > 1 %}
({{ part }}/{{ parts }})
{% endif %}"#;

const TEXT: &str = r#"{% if show_title %}{{ title }}
{% endif -%}
{% for a in alerts %}
[{{ a.status|upper }}] {{ a.name }}{% if a.severity %} ({{ a.severity }}){% endif %}
{% if a.summary %}{{ a.summary }}
{% endif -%}
{% if a.description and a.description != a.summary %}{{ a.description }}
{% endif -%}
{% if a.value %}{{ "Value at resolve" if a.status == "resolved" else "Value" }}: {{ a.value }}
{% endif -%}
{% if a.label_text %}Labels: {{ a.label_text }}
{% endif -%}
Started: {{ a.starts_at }}{% if a.status == "resolved" %}, resolved: {{ a.ends_at }} (after {{ a.duration }}){% else %} (for {{ a.duration }}){% endif %}
{% if a.url %}{{ a.url }}
{% endif -%}
{% endfor -%}
{% if omitted %}
+{{ omitted }} more
{% endif -%}
{% if parts > 1 %}
({{ part }}/{{ parts }})
{% endif %}"#;

/// One alert as templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    /// `firing` or `resolved`.
    pub status: AlertStatus,
    /// All labels.
    pub labels: Labels,
    /// All annotations (long ones cut).
    pub annotations: Labels,
    /// The `alertname` label.
    pub name: String,
    /// The `severity` label, or empty.
    pub severity: String,
    /// The `summary` annotation, else the `title` one (an error rule's
    /// issue title), or empty.
    pub summary: String,
    /// The `description` annotation, or empty.
    pub description: String,
    /// The `value` annotation, else the alert's value as `{{ $value }}`
    /// prints it (for a resolved alert: the value when it resolved), or
    /// empty.
    pub value: String,
    /// Labels other than `alertname` and `severity`, as `k=v, k=v`.
    pub label_text: String,
    /// Start, `YYYY-MM-DD HH:MM:SS UTC`.
    pub starts_at: String,
    /// End, same format; empty while firing.
    pub ends_at: String,
    /// How long it fired (until now while firing), like `1h2m`.
    pub duration: String,
    /// `generatorURL`, or the external URL.
    pub url: String,
}

/// A notification prepared for templates.
#[derive(Debug, Clone)]
pub struct Prepared {
    base: Base,
    /// The alerts, in the notification's order.
    pub alerts: Vec<AlertView>,
}

#[derive(Debug, Clone, Serialize)]
struct Base {
    status: AlertStatus,
    receiver: String,
    group_labels: Labels,
    common_labels: Labels,
    common_annotations: Labels,
    external_url: String,
    firing: usize,
    resolved: usize,
    alertname: String,
    severity: String,
}

#[derive(Serialize)]
struct Ctx<'a> {
    #[serde(flatten)]
    base: &'a Base,
    title: &'a str,
    show_title: bool,
    alerts: &'a [AlertView],
    omitted: usize,
    part: usize,
    parts: usize,
}

impl Prepared {
    /// Prepares `n` as of `now` (for the durations of firing alerts).
    pub fn new(n: &Notification, now: DateTime<Utc>) -> Prepared {
        let alerts: Vec<AlertView> = n
            .alerts
            .iter()
            .map(|a| {
                let annotations: Labels = a
                    .annotations
                    .iter()
                    .map(|(k, v)| (k.clone(), super::split::truncate(v, MAX_ANNOTATION_BYTES)))
                    .collect();
                let get = |m: &Labels, k: &str| m.get(k).cloned().unwrap_or_default();
                let resolved = a.status == AlertStatus::Resolved;
                let end = if resolved { a.ends_at } else { now };
                let label_text = a
                    .labels
                    .iter()
                    .filter(|(k, _)| k.as_str() != "alertname" && k.as_str() != "severity")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                AlertView {
                    status: a.status,
                    name: get(&a.labels, "alertname"),
                    severity: get(&a.labels, "severity"),
                    summary: annotations
                        .get("summary")
                        .or_else(|| annotations.get("title"))
                        .cloned()
                        .unwrap_or_default(),
                    description: get(&annotations, "description"),
                    // A user's own `value` annotation is how they chose to
                    // show it (a unit, a percentage).
                    value: annotations.get("value").cloned().unwrap_or_else(|| {
                        a.value
                            .map(crate::alert::rules::template::format_value)
                            .unwrap_or_default()
                    }),
                    label_text,
                    starts_at: time(a.starts_at),
                    ends_at: if resolved {
                        time(a.ends_at)
                    } else {
                        String::new()
                    },
                    duration: duration(end.signed_duration_since(a.starts_at)),
                    url: if a.generator_url.is_empty() {
                        n.external_url.clone()
                    } else {
                        a.generator_url.clone()
                    },
                    labels: a.labels.clone(),
                    annotations,
                }
            })
            .collect();
        let firing = alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Firing)
            .count();
        let alertname = n
            .common_labels
            .get("alertname")
            .or_else(|| n.group_labels.get("alertname"))
            .cloned()
            .or_else(|| alerts.first().map(|a| a.name.clone()))
            .unwrap_or_default();
        Prepared {
            base: Base {
                status: n.status,
                receiver: n.receiver.clone(),
                group_labels: n.group_labels.clone(),
                common_labels: n.common_labels.clone(),
                common_annotations: n.common_annotations.clone(),
                external_url: n.external_url.clone(),
                firing,
                resolved: alerts.len() - firing,
                alertname,
                severity: n.common_labels.get("severity").cloned().unwrap_or_default(),
            },
            alerts,
        }
    }
}

/// What one message shows: which alerts, and where it stands among the
/// notification's messages.
#[derive(Debug, Clone)]
pub struct Slice {
    /// The alerts shown.
    pub alerts: std::ops::Range<usize>,
    /// Alerts shown in no message ("+N more").
    pub omitted: usize,
    /// 1-based number of this message.
    pub part: usize,
    /// Messages of the notification.
    pub parts: usize,
}

/// The title and text templates of one integration.
#[derive(Debug, Clone)]
pub struct Templates {
    markup: Markup,
    title: Option<String>,
    text: Option<String>,
}

impl Templates {
    /// The defaults of `markup`, replaced by the user's where given.
    pub fn new(markup: Markup, title: Option<&str>, text: Option<&str>) -> Templates {
        Templates {
            markup,
            title: title.map(str::to_string),
            text: text.map(str::to_string),
        }
    }

    fn default_text(&self) -> &'static str {
        match self.markup {
            Markup::Markdown => MARKDOWN,
            Markup::Slack => SLACK,
            Markup::Text => TEXT,
        }
    }

    /// The title of the notification's messages (one line).
    pub fn title(&self, p: &Prepared) -> String {
        let ctx = Ctx {
            base: &p.base,
            title: "",
            show_title: false,
            alerts: &p.alerts,
            omitted: 0,
            part: 1,
            parts: 1,
        };
        let title = self.render_or_default(self.title.as_deref(), DEFAULT_TITLE, &ctx);
        title.lines().next().unwrap_or_default().trim().to_string()
    }

    /// The text of one message; `title` is shown at its top when
    /// `show_title` (platforms with a separate title field show it there).
    pub fn text(&self, p: &Prepared, title: &str, show_title: bool, s: &Slice) -> String {
        let alerts = p.alerts.get(s.alerts.clone()).unwrap_or_default();
        let ctx = Ctx {
            base: &p.base,
            title,
            show_title,
            alerts,
            omitted: s.omitted,
            part: s.part,
            parts: s.parts,
        };
        let text = self.render_or_default(self.text.as_deref(), self.default_text(), &ctx);
        text.trim_matches('\n').to_string()
    }

    fn render_or_default(&self, user: Option<&str>, default: &str, ctx: &Ctx<'_>) -> String {
        if let Some(source) = user {
            match render(source, ctx) {
                Ok(s) => return s,
                Err(e) => {
                    tracing::warn!(error = %e, receiver = %ctx.base.receiver, "user template failed, default used");
                }
            }
        }
        render(default, ctx).unwrap_or_else(|e| format!("template error: {e}"))
    }
}

fn render(source: &str, ctx: &Ctx<'_>) -> Result<String, minijinja::Error> {
    let mut env = minijinja::Environment::new();
    env.set_fuel(Some(FUEL));
    let template = env.template_from_str(source)?;
    template.render(minijinja::value::Serde(ctx))
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `1d2h`, `3h4m`, `5m6s`, `7s`: the two largest units.
fn duration(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, minutes, seconds) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d{hours}h")
    } else if hours > 0 {
        format!("{hours}h{minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_show_two_units() {
        let d = chrono::TimeDelta::seconds;
        assert_eq!(duration(d(7)), "7s");
        assert_eq!(duration(d(306)), "5m6s");
        assert_eq!(duration(d(3 * 3600 + 240)), "3h4m");
        assert_eq!(duration(d(90_000)), "1d1h");
        assert_eq!(duration(d(-5)), "0s");
    }

    /// The default text of `n`'s alerts in `markup`.
    fn default_text(markup: Markup, n: &Notification) -> String {
        let p = Prepared::new(n, crate::alert::notify::tests::now());
        let t = Templates::new(markup, None, None);
        let title = t.title(&p);
        t.text(
            &p,
            &title,
            true,
            &Slice {
                alerts: 0..n.alerts.len(),
                omitted: 0,
                part: 1,
                parts: 1,
            },
        )
    }

    #[test]
    fn default_messages_show_a_rule_alerts_value_and_its_issue_title() {
        // What a new-issue rule without annotations sends: the issue's
        // title (no summary) and its value, firing then resolved.
        let mut n = crate::alert::notify::tests::notification(AlertStatus::Firing, 1);
        n.alerts[0].annotations = Labels::from([(
            "title".to_string(),
            "ZeroDivisionError: division by zero".to_string(),
        )]);
        n.alerts[0].value = Some(12.0);
        let firing = default_text(Markup::Markdown, &n);
        let mut r = crate::alert::notify::tests::notification(AlertStatus::Resolved, 1);
        r.alerts[0].annotations = n.alerts[0].annotations.clone();
        r.alerts[0].value = Some(0.0);
        let resolved = default_text(Markup::Text, &r);
        assert!(
            firing.contains("> ZeroDivisionError: division by zero\n"),
            "{firing}"
        );
        assert!(firing.contains("> Value: 12\n"), "{firing}");
        assert!(resolved.contains("Value at resolve: 0\n"), "{resolved}");
        insta::assert_snapshot!(format!("{firing}\n\n---\n\n{resolved}"));
    }

    #[test]
    fn a_value_annotation_wins_over_the_alerts_value() {
        let mut n = crate::alert::notify::tests::notification(AlertStatus::Firing, 1);
        n.alerts[0].value = Some(0.97);
        let p = Prepared::new(&n, crate::alert::notify::tests::now());
        assert_eq!(p.alerts[0].value, "97%");
        n.alerts[0].annotations.remove("value");
        let p = Prepared::new(&n, crate::alert::notify::tests::now());
        assert_eq!(p.alerts[0].value, "0.97");
    }

    #[test]
    fn a_failing_user_template_falls_back_to_the_default() {
        let n = crate::alert::notify::tests::notification(AlertStatus::Firing, 1);
        let p = Prepared::new(&n, crate::alert::notify::tests::now());
        let t = Templates::new(
            Markup::Text,
            Some("{{ 1 / 0 }}"),
            Some("{% for x in range(100000000) %}x{% endfor %}"),
        );
        let title = t.title(&p);
        assert!(title.starts_with("[FIRING:1] "), "{title}");
        let text = t.text(
            &p,
            &title,
            true,
            &Slice {
                alerts: 0..1,
                omitted: 0,
                part: 1,
                parts: 1,
            },
        );
        assert!(text.contains("[FIRING] "), "{text}");
    }

    #[test]
    fn user_templates_see_the_documented_variables() {
        let n = crate::alert::notify::tests::notification(AlertStatus::Resolved, 2);
        let p = Prepared::new(&n, crate::alert::notify::tests::now());
        let t = Templates::new(
            Markup::Text,
            Some("{{ receiver }}/{{ status }}/{{ resolved }}"),
            Some(
                "{% for a in alerts %}{{ a.name }}={{ a.value }};{% endfor %}{{ part }}/{{ parts }}+{{ omitted }} {{ common_labels.alertname }}",
            ),
        );
        assert_eq!(t.title(&p), "值班/resolved/2");
        let text = t.text(
            &p,
            "",
            false,
            &Slice {
                alerts: 0..1,
                omitted: 1,
                part: 2,
                parts: 3,
            },
        );
        assert_eq!(text, "磁盘使用率过高=82%;2/3+1 磁盘使用率过高");
    }
}
