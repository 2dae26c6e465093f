//! Feishu (飞书) / Lark custom bot: `POST .../open-apis/bot/v2/hook/TOKEN`.
//!
//! Signed (签名校验) in the body: `timestamp` (seconds, as a string) and
//! `sign` = base64 of HMAC-SHA256 with key "{timestamp}\n{secret}" over an
//! empty message — the key/message roles are the reverse of DingTalk's.
//! Messages are an interactive card (header coloured by status, a `lark_md`
//! body) or text. The answer carries `code` (0 success; 9499 and 11232 rate
//! limits; 19021 a signature mismatch or stale timestamp) and `msg`; older
//! deployments answer `StatusCode`/`StatusMessage`. A request body may hold
//! 20 KB; 100 messages a minute (and 5 a second) per bot.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use mecha_config::Secret;
use serde_json::{Value, json};
use sha2::Sha256;

use super::Outgoing;
use super::limit::Failure;

/// The hook address of Feishu (Lark: `https://open.larksuite.com/open-apis/bot/v2/hook/`).
pub const DEFAULT_URL: &str = "https://open.feishu.cn/open-apis/bot/v2/hook/";

/// Messages per minute one bot accepts.
pub const MESSAGES_PER_MINUTE: usize = 100;

/// Bytes of request body the platform accepts (20 KB, with room for the
/// signature fields).
pub const LIMIT: usize = 19_000;

/// `code`s of the rate limit.
pub const ERR_RATE_LIMITS: [i64; 2] = [9499, 11232];

/// `code` of a signature mismatch or a timestamp over an hour off.
pub const ERR_SIGN: i64 = 19021;

/// The bot's URL: the hook URL (or the default) followed by the token.
pub fn url(url: Option<&Secret>, key: Option<&Secret>) -> Result<reqwest::Url, String> {
    let mut base = url.map_or(DEFAULT_URL, Secret::expose).to_string();
    if let Some(key) = key {
        if !base.ends_with('/') {
            base.push('/');
        }
        base.push_str(key.expose());
    }
    reqwest::Url::parse(&base)
        .map_err(|e| format!("url: {e} (value not shown: it is a credential)"))
}

/// The signature of a request at `timestamp` (seconds).
pub fn sign(secret: &str, timestamp: i64) -> String {
    let key = format!("{timestamp}\n{secret}");
    let Ok(mac) = Hmac::<Sha256>::new_from_slice(key.as_bytes()) else {
        // HMAC takes keys of any length; unreachable.
        return String::new();
    };
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn text_with_mentions(card: bool, m: &Outgoing) -> String {
    let mut at: Vec<String> = m
        .mentions
        .users
        .iter()
        .map(|u| {
            if card {
                format!("<at id={u}></at>")
            } else {
                format!("<at user_id=\"{u}\"></at>")
            }
        })
        .collect();
    if m.mentions.all {
        at.push(if card {
            "<at id=all></at>".into()
        } else {
            "<at user_id=\"all\">所有人</at>".into()
        });
    }
    if at.is_empty() {
        m.text.clone()
    } else {
        format!("{}\n{}", m.text, at.join(" "))
    }
}

fn message(text: bool, m: &Outgoing) -> Value {
    if text {
        return json!({"msg_type": "text", "content": {"text": text_with_mentions(false, m)}});
    }
    json!({
        "msg_type": "interactive",
        "card": {
            "config": {"wide_screen_mode": true},
            "header": {
                "title": {"tag": "plain_text", "content": m.title},
                "template": if m.firing { "red" } else { "green" },
            },
            "elements": [
                {"tag": "div", "text": {"tag": "lark_md", "content": text_with_mentions(true, m)}}
            ],
        },
    })
}

/// The bytes the platform counts against [`LIMIT`]: the whole body.
pub fn size(text: bool, m: &Outgoing) -> usize {
    message(text, m).to_string().len()
}

/// The request body, signed at `timestamp` (seconds) when there is a secret.
pub fn body(text: bool, m: &Outgoing, secret: Option<&str>, timestamp: i64) -> Value {
    let mut b = message(text, m);
    if let Some(secret) = secret {
        b["timestamp"] = json!(timestamp.to_string());
        b["sign"] = json!(sign(secret, timestamp));
    }
    b
}

/// Judges the answer.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Result<(), Failure> {
    if let Some(r) = super::classify_status(status, retry_after, body) {
        return r;
    }
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = v
        .get("code")
        .or_else(|| v.get("StatusCode"))
        .and_then(Value::as_i64);
    let Some(code) = code else {
        return Err(Failure::Permanent(format!(
            "http {status}: expected a JSON body with code, found {:?}",
            super::split::truncate(body, 200)
        )));
    };
    let msg = v
        .get("msg")
        .or_else(|| v.get("StatusMessage"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    match code {
        0 => Ok(()),
        c if ERR_RATE_LIMITS.contains(&c) => Err(Failure::RateLimited {
            reason: format!("code {code}: {msg}"),
            retry_after,
        }),
        ERR_SIGN => Err(Failure::Permanent(format!(
            "code {code}: signature mismatch or clock off by over an hour: {msg}"
        ))),
        _ => Err(Failure::Permanent(format!("code {code}: {msg}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_keys_hmac_with_timestamp_and_secret() {
        // Computed independently with Python's hmac module:
        // base64(hmac.new(b"1700000000\nFSEC", b"", sha256).digest())
        assert_eq!(
            sign("FSEC", 1_700_000_000),
            "GQirn9P8uUWtAhgHs+ZzjS3MTN/zJm9NfgdOBh0YEbQ="
        );
    }

    #[test]
    fn codes_are_judged_as_the_platform_means_them() {
        assert_eq!(
            classify(200, None, r#"{"code":0,"msg":"success","data":{}}"#),
            Ok(())
        );
        assert_eq!(
            classify(200, None, r#"{"StatusCode":0,"StatusMessage":"success"}"#),
            Ok(())
        );
        assert!(matches!(
            classify(200, None, r#"{"code":11232,"msg":"frequency limited"}"#),
            Err(Failure::RateLimited { .. })
        ));
        assert!(matches!(
            classify(
                400,
                None,
                r#"{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}"#
            ),
            Err(Failure::Permanent(_))
        ));
    }

    #[test]
    fn the_token_ends_the_hook_url() {
        let u = url(None, Some(&Secret::new("abc"))).map(|u| u.to_string());
        assert_eq!(
            u.as_deref(),
            Ok("https://open.feishu.cn/open-apis/bot/v2/hook/abc")
        );
    }
}
