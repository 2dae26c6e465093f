//! Annotation templates: the part of Prometheus' Go-template language that
//! alerting rules use in practice — `{{ $labels.name }}`, `{{ $value }}`,
//! `{{ $externalURL }}` — and nothing else.
//!
//! Hand-written rather than a template crate because the syntax is Go's
//! `text/template` (`$` variables, `.`-paths), not Jinja or Handlebars: a
//! Jinja engine would accept `{{ labels.x }}` and reject `{{ $labels.x }}`,
//! the very text users copy from their Prometheus rules. A template is
//! parsed once, when the rules are loaded, so a mistake (an unclosed `{{`, an
//! unknown variable, a function or pipeline that is not supported) is a
//! config error naming the rule's key, never a broken message at 3 a.m.
//!
//! This module must not know about rules or alerts beyond the three values.

use std::fmt::Write as _;

use crate::alert::model::Labels;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Label(String),
    Value,
    ExternalUrl,
}

/// What a template is expanded with.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The alert's labels (`$labels`).
    pub labels: &'a Labels,
    /// The value that fired it (`$value`).
    pub value: f64,
    /// The aggregator's external URL (`$externalURL`).
    pub external_url: &'a str,
}

impl Template {
    /// Parses `text`; the error says what is wrong and at which byte.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err(format!(
                    "unclosed `{{{{` at byte {}: expected `}}}}`",
                    offset + open
                ));
            };
            let raw = &after[..close];
            // Go's `{{-` and `-}}` trim the whitespace before and after.
            let trim_left = raw.starts_with("- ");
            let trim_right = raw.ends_with(" -");
            let action = raw.strip_prefix("- ").unwrap_or(raw);
            let action = action.strip_suffix(" -").unwrap_or(action).trim();
            if trim_left && let Some(Part::Text(t)) = parts.last_mut() {
                t.truncate(t.trim_end().len());
            }
            parts.push(
                parse_action(action)
                    .map_err(|e| format!("{e} in `{{{{{raw}}}}}` at byte {}", offset + open))?,
            );
            let consumed = open + 2 + close + 2;
            offset += consumed;
            rest = &rest[consumed..];
            if trim_right {
                let trimmed = rest.trim_start();
                offset += rest.len() - trimmed.len();
                rest = trimmed;
            }
        }
        if let Some(stray) = rest.find("}}") {
            return Err(format!("`}}}}` without `{{{{` at byte {}", offset + stray));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The text with every action replaced by its value; a label the alert
    /// does not have expands to nothing.
    pub fn expand(&self, cx: &Context<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Label(name) => {
                    if let Some(v) = cx.labels.get(name) {
                        out.push_str(v);
                    }
                }
                Part::Value => {
                    let _ = write!(out, "{}", format_value(cx.value));
                }
                Part::ExternalUrl => out.push_str(cx.external_url),
            }
        }
        out
    }
}

/// A value as Prometheus prints `{{ $value }}` for counts: integers without
/// a fraction, other numbers as the shortest exact decimal.
pub fn format_value(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn parse_action(action: &str) -> Result<Part, String> {
    if action.contains('|') {
        return Err(
            "pipelines are not supported (only $labels.<name>, $value, $externalURL)".into(),
        );
    }
    match action {
        "$value" | "$.Value" | ".Value" => return Ok(Part::Value),
        "$externalURL" => return Ok(Part::ExternalUrl),
        "" => return Err("empty action".into()),
        _ => {}
    }
    for prefix in ["$labels.", "$.Labels.", ".Labels."] {
        if let Some(name) = action.strip_prefix(prefix) {
            if mecha_config::is_label_name(name) {
                return Ok(Part::Label(name.to_string()));
            }
            return Err(format!(
                "expected a label name matching [a-zA-Z_][a-zA-Z0-9_]*, found {name:?}"
            ));
        }
    }
    if let Some(var) = action.strip_prefix('$') {
        let name: String = var
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        return Err(format!(
            "unknown variable ${name} (expected $labels.<name>, $value or $externalURL)"
        ));
    }
    Err(format!(
        "unsupported action {action:?} (functions and control structures are not supported; expected $labels.<name>, $value or $externalURL)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(text: &str, value: f64) -> String {
        let labels = Labels::from([
            ("alertname".to_string(), "PaymentErrors".to_string()),
            ("namespace".to_string(), "shop".to_string()),
            ("severity".to_string(), "critical".to_string()),
        ]);
        let t = Template::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        t.expand(&Context {
            labels: &labels,
            value,
            external_url: "https://mecha.example.com",
        })
    }

    #[test]
    fn templates_expand_labels_value_and_url() {
        let cases = [
            ("{{ $value }} errors in {{ $labels.namespace }}", 12.0),
            (
                "{{$labels.severity}}: {{ $labels.alertname }} ({{ $value }})",
                3.5,
            ),
            ("see {{ $externalURL }}/api/v1/logs/search", 0.0),
            ("missing: [{{ $labels.nope }}]", 1.0),
            (
                "Go style: {{ .Labels.namespace }} {{ .Value }} {{- $value -}}",
                7.0,
            ),
            ("no actions, just { braces }", 1.0),
            (
                "中文告警：{{ $labels.namespace }} 出现 {{ $value }} 个错误",
                42.0,
            ),
        ];
        let rendered: Vec<String> = cases
            .iter()
            .map(|(t, v)| format!("{t}\n=> {}", expand(t, *v)))
            .collect();
        insta::assert_snapshot!(rendered.join("\n\n"));
    }

    #[test]
    fn template_mistakes_say_what_and_where() {
        let cases = [
            "{{ $labels.namespace",
            "{{ $lables.namespace }}",
            "{{ humanize $value }}",
            "{{ $value | humanize }}",
            "{{ if $value }}x{{ end }}",
            "{{ $labels.k8s.namespace }}",
            "{{ }}",
            "oops }} here",
        ];
        let errors: Vec<String> = cases
            .iter()
            .map(|t| match Template::parse(t) {
                Ok(_) => format!("{t}\n=> accepted"),
                Err(e) => format!("{t}\n=> {e}"),
            })
            .collect();
        insta::assert_snapshot!(errors.join("\n\n"));
    }
}
