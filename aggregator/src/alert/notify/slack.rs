//! Slack incoming webhook: `POST https://hooks.slack.com/services/...` with
//! `text` (mrkdwn) or `blocks` (a header and mrkdwn sections).
//!
//! Slack answers 200 with the body `ok`; 4xx with a reason in the body
//! (`invalid_payload`, `no_service`, `channel_is_archived`): permanent; 429
//! with `Retry-After` (about one message a second per webhook). A section's
//! text holds at most 3000 characters and a message 50 blocks.

use std::time::Duration;

use mecha_config::Secret;
use serde_json::{Value, json};

use super::Outgoing;
use super::limit::Failure;
use super::split;

/// Messages per minute one webhook accepts (about one a second).
pub const MESSAGES_PER_MINUTE: usize = 60;

/// Bytes of one section's text (3000 characters, counted as bytes).
pub const SECTION_BYTES: usize = 3000;

/// The webhook URL (required).
pub fn url(url: Option<&Secret>) -> Result<reqwest::Url, String> {
    let Some(url) = url else {
        return Err("expected url or url_file with the incoming webhook URL".into());
    };
    reqwest::Url::parse(url.expose())
        .map_err(|e| format!("url: {e} (value not shown: it is a credential)"))
}

/// The byte limit of a message: `text` 40000; blocks 10 full sections.
pub fn limit(text: bool) -> usize {
    if text { 40_000 } else { 10 * SECTION_BYTES }
}

fn text_with_mentions(m: &Outgoing) -> String {
    let mut at: Vec<String> = m.mentions.users.iter().map(|u| format!("<@{u}>")).collect();
    if m.mentions.all {
        at.push("<!channel>".into());
    }
    if at.is_empty() {
        m.text.clone()
    } else {
        format!("{}\n{}", m.text, at.join(" "))
    }
}

/// The bytes counted against [`limit`].
pub fn size(_text: bool, m: &Outgoing) -> usize {
    text_with_mentions(m).len()
}

/// `text` in chunks of at most [`SECTION_BYTES`], cut at line ends where
/// possible and never inside a character.
fn sections(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.split('\n') {
        let line = split::truncate(line, SECTION_BYTES);
        let extra = if current.is_empty() { 0 } else { 1 };
        if current.len() + extra + line.len() > SECTION_BYTES {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(&line);
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

/// The request body.
pub fn body(text: bool, m: &Outgoing) -> Value {
    let content = text_with_mentions(m);
    if text {
        return json!({"text": content});
    }
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": split::truncate(&m.title, 150)},
    })];
    for s in sections(&content).into_iter().take(49) {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": s}}));
    }
    // `text` is what notifications and old clients show.
    json!({"text": m.title, "blocks": blocks})
}

/// Judges the answer.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Result<(), Failure> {
    if let Some(r) = super::classify_status(status, retry_after, body) {
        return r;
    }
    match (status, body.trim()) {
        (200..=299, _) => Ok(()),
        (_, said) => Err(Failure::Permanent(format!(
            "http {status}: {}",
            split::truncate(said, 200)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_becomes_sections_within_the_limit() {
        let text = format!("{}\n{}", "告".repeat(1500), "警".repeat(10));
        let s = sections(&text);
        assert_eq!(s.len(), 2);
        assert!(s.iter().all(|x| x.len() <= SECTION_BYTES));
    }

    #[test]
    fn statuses_are_judged_as_slack_means_them() {
        assert_eq!(classify(200, None, "ok"), Ok(()));
        assert!(matches!(
            classify(429, Some(Duration::from_secs(3)), ""),
            Err(Failure::RateLimited {
                retry_after: Some(_),
                ..
            })
        ));
        assert!(matches!(
            classify(404, None, "no_service"),
            Err(Failure::Permanent(_))
        ));
        assert!(matches!(
            classify(503, None, ""),
            Err(Failure::Retryable(_))
        ));
    }
}
