//! WeCom (企业微信) group robot: `POST .../cgi-bin/webhook/send?key=KEY`
//! with `msgtype` `markdown` or `text`.
//!
//! Limits as the platform documents them: markdown `content` at most 4096
//! bytes of UTF-8, text `content` 2048, 20 messages a minute per robot. The
//! answer is HTTP 200 with `errcode` in the body: 0 is success, 45009 the
//! rate limit, 93000 an invalid key. Markdown mentions users as
//! `<@userid>` in the content; text lists them (and phone numbers, and
//! `@all`) in `mentioned_list`/`mentioned_mobile_list`.

use std::time::Duration;

use mecha_config::Secret;
use serde_json::{Value, json};

use super::Outgoing;
use super::limit::Failure;

/// The robot API's address.
pub const DEFAULT_URL: &str = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send";

/// Messages per minute one robot accepts.
pub const MESSAGES_PER_MINUTE: usize = 20;

/// Bytes of markdown content the platform accepts.
pub const MARKDOWN_LIMIT: usize = 4096;

/// Bytes of text content the platform accepts.
pub const TEXT_LIMIT: usize = 2048;

/// `errcode` of the rate limit ("api freq out of limit").
pub const ERR_RATE_LIMIT: i64 = 45009;

/// `errcode` of an invalid robot key.
pub const ERR_INVALID_KEY: i64 = 93000;

/// The robot's URL: the configured one (or the default) with `key=`.
pub fn url(url: Option<&Secret>, key: Option<&Secret>) -> Result<reqwest::Url, String> {
    let base = url.map_or(DEFAULT_URL, Secret::expose);
    let mut u = reqwest::Url::parse(base)
        .map_err(|e| format!("url: {e} (value not shown: it is a credential)"))?;
    if let Some(key) = key {
        u.query_pairs_mut().append_pair("key", key.expose());
    }
    Ok(u)
}

/// The byte limit of the message type.
pub fn limit(text: bool) -> usize {
    if text { TEXT_LIMIT } else { MARKDOWN_LIMIT }
}

fn content(text: bool, m: &Outgoing) -> String {
    if text || m.mentions.users.is_empty() {
        return m.text.clone();
    }
    // Markdown can mention users only (not phone numbers, not everyone).
    let at: Vec<String> = m.mentions.users.iter().map(|u| format!("<@{u}>")).collect();
    format!("{}\n{}", m.text, at.join(""))
}

/// The bytes the platform counts against [`limit`].
pub fn size(text: bool, m: &Outgoing) -> usize {
    content(text, m).len()
}

/// The request body.
pub fn body(text: bool, m: &Outgoing) -> Value {
    let content = content(text, m);
    if !text {
        return json!({"msgtype": "markdown", "markdown": {"content": content}});
    }
    let mut users = m.mentions.users.clone();
    let mut mobiles = m.mentions.mobiles.clone();
    if m.mentions.all {
        users.push("@all".into());
    }
    let mut t = json!({"content": content});
    if !users.is_empty() {
        t["mentioned_list"] = json!(users);
    }
    if !mobiles.is_empty() {
        mobiles.dedup();
        t["mentioned_mobile_list"] = json!(mobiles);
    }
    json!({"msgtype": "text", "text": t})
}

/// Judges the answer.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Result<(), Failure> {
    super::classify_errcode(
        status,
        retry_after,
        body,
        ERR_RATE_LIMIT,
        (ERR_INVALID_KEY, "invalid robot key"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errcodes_are_judged_as_the_platform_means_them() {
        assert_eq!(
            classify(200, None, r#"{"errcode":0,"errmsg":"ok"}"#),
            Ok(())
        );
        assert!(matches!(
            classify(
                200,
                None,
                r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#
            ),
            Err(Failure::RateLimited { .. })
        ));
        assert!(matches!(
            classify(200, None, r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#),
            Err(Failure::Permanent(r)) if r.contains("invalid robot key")
        ));
        assert!(matches!(
            classify(502, None, "bad gateway"),
            Err(Failure::Retryable(_))
        ));
        assert!(matches!(
            classify(200, None, "<html>"),
            Err(Failure::Permanent(_))
        ));
    }

    #[test]
    fn the_key_goes_in_the_query() {
        let u = url(None, Some(&Secret::new("a b"))).map(|u| u.to_string());
        assert_eq!(
            u.as_deref(),
            Ok("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=a+b")
        );
    }
}
