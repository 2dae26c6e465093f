//! DingTalk (钉钉) custom robot: `POST .../robot/send?access_token=TOKEN`,
//! signed (加签) with `&timestamp=<ms>&sign=<sig>` where `sig` is the
//! URL-encoded base64 of HMAC-SHA256(key = secret, message =
//! "{timestamp}\n{secret}").
//!
//! Markdown or text; mentions in `at` (`atMobiles`, `atUserIds`,
//! `isAtAll`), and each mentioned `@mobile`/`@userid` must also appear in
//! the text or DingTalk shows no mention. 20 messages a minute per robot;
//! `errcode` 130101 is the rate limit, 310000 a failed security check (bad
//! signature, stale timestamp, missing keyword, IP not allowed).

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use mecha_config::Secret;
use serde_json::{Value, json};
use sha2::Sha256;

use super::Outgoing;
use super::limit::Failure;

/// The robot API's address.
pub const DEFAULT_URL: &str = "https://oapi.dingtalk.com/robot/send";

/// Messages per minute one robot accepts.
pub const MESSAGES_PER_MINUTE: usize = 20;

/// Bytes of message text the platform accepts.
pub const LIMIT: usize = 20_000;

/// `errcode` of the rate limit ("send too fast").
pub const ERR_RATE_LIMIT: i64 = 130_101;

/// `errcode` of a failed security check (signature, keyword, IP).
pub const ERR_SECURITY: i64 = 310_000;

/// The robot's URL: the configured one (or the default) with
/// `access_token=`.
pub fn url(url: Option<&Secret>, key: Option<&Secret>) -> Result<reqwest::Url, String> {
    let base = url.map_or(DEFAULT_URL, Secret::expose);
    let mut u = reqwest::Url::parse(base)
        .map_err(|e| format!("url: {e} (value not shown: it is a credential)"))?;
    if let Some(key) = key {
        u.query_pairs_mut()
            .append_pair("access_token", key.expose());
    }
    Ok(u)
}

/// The signature of a request at `timestamp_ms` (before URL encoding).
pub fn sign(secret: &str, timestamp_ms: i64) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC takes keys of any length; unreachable.
        return String::new();
    };
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `url` with `timestamp` and `sign` when the robot has a secret.
pub fn signed_url(url: &reqwest::Url, secret: Option<&str>, timestamp_ms: i64) -> reqwest::Url {
    let mut u = url.clone();
    if let Some(secret) = secret {
        u.query_pairs_mut()
            .append_pair("timestamp", &timestamp_ms.to_string())
            .append_pair("sign", &sign(secret, timestamp_ms));
    }
    u
}

fn text_with_mentions(m: &Outgoing) -> String {
    let at: Vec<String> = m
        .mentions
        .mobiles
        .iter()
        .chain(&m.mentions.users)
        .map(|x| format!("@{x}"))
        .collect();
    if at.is_empty() {
        m.text.clone()
    } else {
        format!("{}\n\n{}", m.text, at.join(" "))
    }
}

/// The bytes the platform counts against [`LIMIT`].
pub fn size(_text: bool, m: &Outgoing) -> usize {
    text_with_mentions(m).len()
}

/// The request body.
pub fn body(text: bool, m: &Outgoing) -> Value {
    let content = text_with_mentions(m);
    let mut b = if text {
        json!({"msgtype": "text", "text": {"content": content}})
    } else {
        json!({"msgtype": "markdown", "markdown": {"title": m.title, "text": content}})
    };
    if !m.mentions.is_empty() {
        b["at"] = json!({
            "atMobiles": m.mentions.mobiles,
            "atUserIds": m.mentions.users,
            "isAtAll": m.mentions.all,
        });
    }
    b
}

/// Judges the answer.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Result<(), Failure> {
    super::classify_errcode(
        status,
        retry_after,
        body,
        ERR_RATE_LIMIT,
        (
            ERR_SECURITY,
            "security check failed (signature, keyword or IP)",
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_and_secret() {
        // Computed independently with Python's hmac module:
        // base64(hmac.new(b"SECabc", b"1700000000000\nSECabc", sha256).digest())
        assert_eq!(
            sign("SECabc", 1_700_000_000_000),
            "jcUpW0QmtKduN03n4JqQ0PBosVjqnM8gU7fIIvsDmCM="
        );
        let u = signed_url(
            &url(None, Some(&Secret::new("tok"))).unwrap_or_else(|e| panic!("{e}")),
            Some("SECabc"),
            1_700_000_000_000,
        );
        assert_eq!(
            u.as_str(),
            "https://oapi.dingtalk.com/robot/send?access_token=tok&timestamp=1700000000000&sign=jcUpW0QmtKduN03n4JqQ0PBosVjqnM8gU7fIIvsDmCM%3D"
        );
    }

    #[test]
    fn errcodes_are_judged_as_the_platform_means_them() {
        assert_eq!(
            classify(200, None, r#"{"errcode":0,"errmsg":"ok"}"#),
            Ok(())
        );
        assert!(matches!(
            classify(200, None, r#"{"errcode":130101,"errmsg":"send too fast"}"#),
            Err(Failure::RateLimited { .. })
        ));
        assert!(matches!(
            classify(200, None, r#"{"errcode":310000,"errmsg":"sign not match"}"#),
            Err(Failure::Permanent(_))
        ));
    }
}
