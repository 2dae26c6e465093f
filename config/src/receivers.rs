//! `aggregator.alerting.receivers`: named receivers, each a list of chat
//! robots and webhooks (WeCom, DingTalk, Feishu/Lark, Slack, generic webhook),
//! as Alertmanager's `receivers` are written.
//!
//! ```yaml
//! aggregator:
//!   alerting:
//!     receivers:
//!       - name: oncall
//!         wecom_configs:
//!           - key: ${WECOM_ROBOT_KEY}
//!             mentions: { users: [zhangsan], from_labels: [owner] }
//!         dingtalk_configs:
//!           - key_file: /etc/mecha/dingtalk-token
//!             secret_file: /etc/mecha/dingtalk-secret
//!         feishu_configs:
//!           - key: ${FEISHU_HOOK}
//!             secret: ${FEISHU_SECRET}
//!         slack_configs:
//!           - url_file: /etc/mecha/slack-webhook-url
//!         webhook_configs:
//!           - url: http://hooks.internal/alerts
//!             bearer_token_file: /etc/mecha/hook-token
//!             max_alerts: 50
//! ```
//!
//! Credentials (robot keys, signing secrets, webhook URLs, bearer tokens) are
//! written inline (usually as `${ENV}`) or read from a file (`*_file`, for
//! mounted Kubernetes secrets). They are [`Secret`]s: their `Debug` shows no
//! value, and no error of this module quotes one. This module only describes
//! receivers; it sends nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, de};

use crate::ConfigError;
use crate::values::Duration;

/// One receiver: every robot and webhook that gets a notification routed to
/// its name.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// The name routes refer to. Unique among receivers.
    pub name: String,
    /// WeCom (企业微信) group robots.
    #[serde(default)]
    pub wecom_configs: Vec<ChatConfig>,
    /// DingTalk (钉钉) custom robots.
    #[serde(default)]
    pub dingtalk_configs: Vec<ChatConfig>,
    /// Feishu (飞书) / Lark custom bots.
    #[serde(default)]
    pub feishu_configs: Vec<ChatConfig>,
    /// Slack incoming webhooks.
    #[serde(default)]
    pub slack_configs: Vec<ChatConfig>,
    /// Generic webhooks receiving Alertmanager's webhook payload (version 4).
    #[serde(default)]
    pub webhook_configs: Vec<WebhookConfig>,
}

/// The chat platforms; each reads the [`ChatConfig`] keys it documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChatKind {
    /// WeCom group robot.
    Wecom,
    /// DingTalk custom robot.
    Dingtalk,
    /// Feishu/Lark custom bot.
    Feishu,
    /// Slack incoming webhook.
    Slack,
}

impl ChatKind {
    /// The integration's name (`wecom`, ...), as in metrics and previews.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatKind::Wecom => "wecom",
            ChatKind::Dingtalk => "dingtalk",
            ChatKind::Feishu => "feishu",
            ChatKind::Slack => "slack",
        }
    }

    /// The message types the platform accepts, the default first.
    pub fn message_types(self) -> &'static [&'static str] {
        match self {
            ChatKind::Wecom | ChatKind::Dingtalk => &["markdown", "text"],
            ChatKind::Feishu => &["interactive", "text"],
            ChatKind::Slack => &["blocks", "text"],
        }
    }

    fn has_key(self) -> bool {
        self != ChatKind::Slack
    }

    fn has_secret(self) -> bool {
        matches!(self, ChatKind::Dingtalk | ChatKind::Feishu)
    }

    /// Whether a mention is written for phone numbers (WeCom text
    /// messages and DingTalk); elsewhere `mentions.mobiles` is refused.
    fn mentions_mobiles(self) -> bool {
        matches!(self, ChatKind::Wecom | ChatKind::Dingtalk)
    }
}

/// One chat robot (WeCom, DingTalk, Feishu/Lark) or Slack incoming webhook.
///
/// ```yaml
/// - key: ${WECOM_ROBOT_KEY}       # or key_file, or a url that carries ?key=
///   message_type: markdown
///   send_resolved: true
///   mentions: { users: [zhangsan], mobiles: ["13800001111"], from_labels: [owner] }
///   max_messages: 3
///   title: "{{ status }}: {{ common_labels.alertname }}"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    /// The robot's URL. WeCom default
    /// `https://qyapi.weixin.qq.com/cgi-bin/webhook/send` (the `key` is
    /// added as `?key=`), DingTalk default `https://oapi.dingtalk.com/robot/send`
    /// (`key` is added as `?access_token=`), Feishu default
    /// `https://open.feishu.cn/open-apis/bot/v2/hook/` (`key` is appended;
    /// use `https://open.larksuite.com/open-apis/bot/v2/hook/` for Lark).
    /// Slack: required, the incoming webhook URL. A URL that already holds
    /// the key needs no `key`. Treated as a credential.
    #[serde(default)]
    pub url: Option<Secret>,
    /// A file holding `url` (trailing newline ignored), instead of `url`.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// The robot's key: WeCom's `key`, DingTalk's `access_token`, Feishu's
    /// hook token (the last part of the hook URL). Not for Slack.
    #[serde(default)]
    pub key: Option<Secret>,
    /// A file holding `key`, instead of `key`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The signing secret of a DingTalk robot (加签, `SEC...`) or a Feishu bot
    /// (签名校验). Default: none, requests are not signed.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// A file holding `secret`, instead of `secret`.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// The message type. WeCom and DingTalk: `markdown` (default) or `text`;
    /// Feishu: `interactive` (a card with markdown, default) or `text`;
    /// Slack: `blocks` (mrkdwn sections, default) or `text`.
    #[serde(default)]
    pub message_type: Option<String>,
    /// Whether resolved alerts are sent. Default true.
    #[serde(default = "yes")]
    pub send_resolved: bool,
    /// Who is `@`-mentioned in the first message of a notification.
    #[serde(default)]
    pub mentions: MentionsConfig,
    /// Most messages one notification is split into when it exceeds the
    /// platform's size limit (WeCom markdown 4096 bytes, text 2048; DingTalk
    /// 20000; Feishu 20000; Slack 40000); the last one ends with a "+N more"
    /// line counting the alerts that did not fit. 1 to 20, default 3.
    #[serde(default = "default_max_messages")]
    pub max_messages: u32,
    /// A template of the message title (DingTalk's notification title, the
    /// Feishu card header, the first line elsewhere). Default: status,
    /// count, alert name and severity, e.g. `[FIRING:3] HighErrorRate (critical)`.
    /// See `text` for the template language.
    #[serde(default)]
    pub title: Option<TemplateText>,
    /// A template of the message text, in minijinja (Jinja2) syntax, over:
    /// `status`, `receiver`, `group_labels`, `common_labels`,
    /// `common_annotations`, `external_url`, `firing` and `resolved` (counts
    /// in the notification), `alertname` and `severity` (of the group),
    /// `title` (the rendered title) and `show_title` (false where the
    /// platform shows the title in a field of its own), `alerts` (those of
    /// this message, each with `status`, `labels`, `annotations`, `name`,
    /// `severity`, `summary`, `description`, `value`, `label_text`,
    /// `starts_at`, `ends_at`, `duration`, `url`), `omitted` (alerts counted
    /// in no message, shown on the last), `part` and `parts`. Default: a message per platform markup listing
    /// each alert's name, severity, summary, value, labels, start (and end)
    /// and link.
    #[serde(default)]
    pub text: Option<TemplateText>,
    /// Deadline of one request. Default 10s.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// TLS of the connection (a self-hosted or internal endpoint with its
    /// own CA). Default: the server certificate is checked against the
    /// system's roots.
    #[serde(default)]
    pub tls: TlsConfig,
    /// An HTTP(S) proxy for this robot, e.g. `http://proxy.internal:3128`
    /// (Alertmanager's `proxy_url`). Default: `HTTPS_PROXY` / `HTTP_PROXY`
    /// and `NO_PROXY` from the environment.
    #[serde(default)]
    pub proxy_url: Option<String>,
    /// Tests only: the period of the robot's rate limit (the platform's own
    /// limit per minute is then allowed per this period instead), so a test
    /// of the limit does not wait a minute.
    #[doc(hidden)]
    #[serde(default, rename = "test_rate_limit_period")]
    pub rate_limit_period: Option<Duration>,
}

/// Who a chat message `@`-mentions.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MentionsConfig {
    /// User ids: WeCom userid (`<@userid>` in markdown, `mentioned_list` in
    /// text), DingTalk `atUserIds`, Feishu open_id / user_id, Slack member id
    /// (`U024BE7LH`). Default none.
    #[serde(default)]
    pub users: Vec<String>,
    /// Phone numbers: WeCom text `mentioned_mobile_list` (WeCom markdown
    /// cannot mention by phone, nor everyone: use `message_type: text`),
    /// DingTalk `atMobiles`. Default none.
    #[serde(default)]
    pub mobiles: Vec<String>,
    /// Mention everyone in the group (`@all`, Slack `<!channel>`). Default false.
    #[serde(default)]
    pub all: bool,
    /// Labels (or annotations) of an alert whose values, split at commas,
    /// are mentioned too: all digits (an optional leading `+`) is a phone
    /// number, `all` or `@all` everyone, anything else a user id.
    /// Default `[mention]`.
    #[serde(default = "default_mention_labels")]
    pub from_labels: Vec<String>,
}

impl Default for MentionsConfig {
    fn default() -> Self {
        MentionsConfig {
            users: Vec::new(),
            mobiles: Vec::new(),
            all: false,
            from_labels: default_mention_labels(),
        }
    }
}

/// One generic webhook: receives the notification as Alertmanager's webhook
/// payload (version 4), as JSON.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where the payload is POSTed. Treated as a credential (a URL may carry
    /// a token).
    #[serde(default)]
    pub url: Option<Secret>,
    /// A file holding `url`, instead of `url`.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Sent as `Authorization: Bearer <token>`. Default: no header.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// A file holding `bearer_token`, instead of `bearer_token`.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// HTTP basic authentication, instead of a bearer token. Default none.
    #[serde(default)]
    pub basic_auth: Option<BasicAuthConfig>,
    /// Whether resolved alerts are sent. Default true.
    #[serde(default = "yes")]
    pub send_resolved: bool,
    /// Most alerts in one payload; the rest are counted in
    /// `truncatedAlerts`. `0` (default): all.
    #[serde(default)]
    pub max_alerts: u64,
    /// Deadline of one request. Default 10s.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// TLS of the connection. Default: the server certificate is checked
    /// against the system's roots.
    #[serde(default)]
    pub tls: TlsConfig,
    /// An HTTP(S) proxy for this webhook (Alertmanager's `proxy_url`).
    /// Default: `HTTPS_PROXY` / `HTTP_PROXY` and `NO_PROXY` from the
    /// environment.
    #[serde(default)]
    pub proxy_url: Option<String>,
}

/// TLS towards a receiver, named as Alertmanager's `tls_config`.
///
/// ```yaml
/// tls:
///   ca_file: /etc/mecha/internal-ca.pem
///   insecure_skip_verify: false
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// A PEM file of the CA certificates that sign the server's
    /// certificate. When set, only these CAs are trusted, as in
    /// Alertmanager. Default: the system's roots (`/etc/ssl/certs`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate, for a test endpoint only: the
    /// connection is encrypted but not authenticated. Default false.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

impl TlsConfig {
    /// The PEM text of `ca_file`, checked to hold at least one certificate;
    /// `None` without `ca_file`. Errors name the file, not the key.
    pub fn ca_pem(&self) -> Result<Option<Vec<u8>>, String> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut certificates = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            match cert {
                Ok(_) => certificates += 1,
                Err(e) => {
                    return Err(format!(
                        "{}: expected PEM certificates, found invalid PEM: {e}",
                        path.display()
                    ));
                }
            }
        }
        if certificates == 0 {
            return Err(format!(
                "{}: expected PEM certificates (-----BEGIN CERTIFICATE-----), found none",
                path.display()
            ));
        }
        Ok(Some(pem))
    }

    fn check(
        &self,
        at: &str,
        fail: &dyn Fn(String, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        if self.ca_file.is_some() && self.insecure_skip_verify {
            return Err(fail(
                format!("{at}.tls.insecure_skip_verify"),
                "set tls.ca_file or tls.insecure_skip_verify, not both".into(),
            ));
        }
        self.ca_pem()
            .map_err(|e| fail(format!("{at}.tls.ca_file"), e))?;
        Ok(())
    }
}

/// Checks a `proxy_url`: an http:// or https:// URL with a host.
fn check_proxy(
    proxy: Option<&String>,
    at: &str,
    fail: &dyn Fn(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let Some(p) = proxy else {
        return Ok(());
    };
    let rest = p
        .strip_prefix("http://")
        .or_else(|| p.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') && !p.contains(char::is_whitespace) => Ok(()),
        // The value may carry proxy credentials: not quoted.
        _ => Err(fail(
            format!("{at}.proxy_url"),
            "expected an http:// or https:// URL with a host (value not shown: it may carry credentials)"
                .into(),
        )),
    }
}

/// `Authorization: Basic` credentials of a webhook.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// The user name.
    pub username: String,
    /// The password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file holding `password`, instead of `password`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

impl BasicAuthConfig {
    /// The password (`password` or `password_file`), if any.
    pub fn password(&self) -> Result<Option<Secret>, String> {
        read_secret(
            "password",
            self.password.as_ref(),
            self.password_file.as_ref(),
        )
    }
}

/// A credential. Its `Debug` and `Display` show `<secret>`, never the value.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// A message template (minijinja syntax), checked when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateText(pub String);

impl TemplateText {
    /// Checks the template's syntax.
    pub fn parse(s: &str) -> Result<Self, String> {
        let env = minijinja::Environment::new();
        match env.template_from_str(s) {
            Ok(_) => Ok(TemplateText(s.to_string())),
            Err(e) => Err(format!(
                "invalid template: {} (line {} of the template)",
                e.detail().unwrap_or("syntax error"),
                e.line().unwrap_or(1)
            )),
        }
    }
}

impl<'de> Deserialize<'de> for TemplateText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TemplateText::parse(&s).map_err(de::Error::custom)
    }
}

/// Reads a credential written inline or in a file; `None` when neither is
/// set. Errors name the keys (`key`, `key_file`) and the file, never the
/// value.
pub fn read_secret(
    name: &str,
    inline: Option<&Secret>,
    file: Option<&PathBuf>,
) -> Result<Option<Secret>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!("set {name} or {name}_file, not both")),
        (Some(s), None) if s.0.trim().is_empty() => {
            Err(format!("expected a value for {name}, found an empty one"))
        }
        (Some(s), None) => Ok(Some(s.clone())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {name}_file {}: {e}", path.display()))?;
            let value = text.trim_end_matches(['\n', '\r']);
            if value.trim().is_empty() {
                return Err(format!("{name}_file {} is empty", path.display()));
            }
            Ok(Some(Secret(value.to_string())))
        }
        (None, None) => Ok(None),
    }
}

impl ChatConfig {
    /// The robot's URL as configured (`url` or `url_file`).
    pub fn url(&self) -> Result<Option<Secret>, String> {
        read_secret("url", self.url.as_ref(), self.url_file.as_ref())
    }

    /// The robot's key (`key` or `key_file`).
    pub fn key(&self) -> Result<Option<Secret>, String> {
        read_secret("key", self.key.as_ref(), self.key_file.as_ref())
    }

    /// The signing secret (`secret` or `secret_file`).
    pub fn secret(&self) -> Result<Option<Secret>, String> {
        read_secret("secret", self.secret.as_ref(), self.secret_file.as_ref())
    }

    /// The message type, defaulted.
    pub fn effective_message_type(&self, kind: ChatKind) -> &str {
        match &self.message_type {
            Some(t) => t,
            None => kind.message_types()[0],
        }
    }

    fn check(
        &self,
        kind: ChatKind,
        at: &str,
        fail: &dyn Fn(String, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let url = self.url().map_err(|e| fail(secret_key(at, "url", &e), e))?;
        let key = self.key().map_err(|e| fail(secret_key(at, "key", &e), e))?;
        let secret = self
            .secret()
            .map_err(|e| fail(secret_key(at, "secret", &e), e))?;
        let platform = kind.as_str();
        if let Some(url) = &url {
            check_url(url, &format!("{at}.url"), fail)?;
        }
        if key.is_some() && !kind.has_key() {
            return Err(fail(
                format!("{at}.key"),
                format!("{platform} has no key: its url carries it"),
            ));
        }
        if secret.is_some() && !kind.has_secret() {
            return Err(fail(
                format!("{at}.secret"),
                format!("{platform} signs no requests: only dingtalk and feishu take a secret"),
            ));
        }
        let has_key_in_url = url.as_ref().is_some_and(|u| match kind {
            ChatKind::Wecom => u.0.contains("key="),
            ChatKind::Dingtalk => u.0.contains("access_token="),
            ChatKind::Feishu => u.0.trim_end_matches('/').rsplit('/').next() != Some("hook"),
            ChatKind::Slack => true,
        });
        if key.is_none() && !has_key_in_url {
            let want = if kind == ChatKind::Slack {
                "expected url or url_file with the incoming webhook URL"
            } else {
                "expected key or key_file (or a url that carries the key)"
            };
            return Err(fail(at.to_string(), want.to_string()));
        }
        if let Some(t) = &self.message_type
            && !kind.message_types().contains(&t.as_str())
        {
            return Err(fail(
                format!("{at}.message_type"),
                format!(
                    "expected one of {} for {platform}, found {t:?}",
                    kind.message_types().join(", ")
                ),
            ));
        }
        if !(1..=20).contains(&self.max_messages) {
            return Err(fail(
                format!("{at}.max_messages"),
                format!("expected 1 to 20, found {}", self.max_messages),
            ));
        }
        check_timeout(self.timeout, &format!("{at}.timeout"), fail)?;
        self.tls.check(at, fail)?;
        check_proxy(self.proxy_url.as_ref(), at, fail)?;
        let m = &self.mentions;
        if !m.mobiles.is_empty() && !kind.mentions_mobiles() {
            return Err(fail(
                format!("{at}.mentions.mobiles"),
                format!("{platform} cannot mention by phone number: use mentions.users"),
            ));
        }
        for (i, mobile) in m.mobiles.iter().enumerate() {
            if !is_mobile(mobile) {
                return Err(fail(
                    format!("{at}.mentions.mobiles[{i}]"),
                    format!("expected a phone number of digits, found {mobile:?}"),
                ));
            }
        }
        for (i, user) in m.users.iter().enumerate() {
            if user.trim().is_empty() || user.chars().any(|c| c.is_whitespace() || c == ',') {
                return Err(fail(
                    format!("{at}.mentions.users[{i}]"),
                    format!("expected a user id without spaces or commas, found {user:?}"),
                ));
            }
        }
        Ok(())
    }
}

impl WebhookConfig {
    /// The webhook URL (`url` or `url_file`).
    pub fn url(&self) -> Result<Option<Secret>, String> {
        read_secret("url", self.url.as_ref(), self.url_file.as_ref())
    }

    /// The bearer token (`bearer_token` or `bearer_token_file`).
    pub fn bearer_token(&self) -> Result<Option<Secret>, String> {
        read_secret(
            "bearer_token",
            self.bearer_token.as_ref(),
            self.bearer_token_file.as_ref(),
        )
    }

    fn check(
        &self,
        at: &str,
        fail: &dyn Fn(String, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let url = self.url().map_err(|e| fail(secret_key(at, "url", &e), e))?;
        let token = self
            .bearer_token()
            .map_err(|e| fail(secret_key(at, "bearer_token", &e), e))?;
        if let Some(basic) = &self.basic_auth {
            let at = format!("{at}.basic_auth");
            if token.is_some() {
                return Err(fail(at, "set bearer_token or basic_auth, not both".into()));
            }
            basic
                .password()
                .map_err(|e| fail(secret_key(&at, "password", &e), e))?;
        }
        match url {
            Some(url) => check_url(&url, &format!("{at}.url"), fail)?,
            None => {
                return Err(fail(
                    at.to_string(),
                    "expected url or url_file, found neither".into(),
                ));
            }
        }
        check_timeout(self.timeout, &format!("{at}.timeout"), fail)?;
        self.tls.check(at, fail)?;
        check_proxy(self.proxy_url.as_ref(), at, fail)
    }
}

/// A phone number as mention lists take it: digits, an optional leading `+`.
pub fn is_mobile(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    (5..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Checks the receivers of `aggregator.alerting`: unique names, and each
/// integration's keys (credentials are read, so a missing file is named).
pub(crate) fn check(
    receivers: &[ReceiverConfig],
    fail: &dyn Fn(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, r) in receivers.iter().enumerate() {
        let at = format!("aggregator.alerting.receivers[{i}]");
        if r.name.trim().is_empty() {
            return Err(fail(
                format!("{at}.name"),
                "expected a receiver name, found an empty one".into(),
            ));
        }
        if let Some(first) = names.insert(r.name.as_str(), i) {
            return Err(fail(
                format!("{at}.name"),
                format!(
                    "receiver {:?} is already defined at receivers[{first}]",
                    r.name
                ),
            ));
        }
        for (kind, configs) in r.chats() {
            for (j, c) in configs.iter().enumerate() {
                c.check(kind, &format!("{at}.{}_configs[{j}]", kind.as_str()), fail)?;
            }
        }
        for (j, w) in r.webhook_configs.iter().enumerate() {
            w.check(&format!("{at}.webhook_configs[{j}]"), fail)?;
        }
    }
    Ok(())
}

impl ReceiverConfig {
    /// The chat integrations of the receiver, by platform.
    pub fn chats(&self) -> [(ChatKind, &[ChatConfig]); 4] {
        [
            (ChatKind::Wecom, &self.wecom_configs),
            (ChatKind::Dingtalk, &self.dingtalk_configs),
            (ChatKind::Feishu, &self.feishu_configs),
            (ChatKind::Slack, &self.slack_configs),
        ]
    }
}

/// The key a credential error is about: `key_file` when the file failed.
fn secret_key(at: &str, name: &str, reason: &str) -> String {
    if reason.contains(&format!("{name}_file")) && !reason.starts_with("set ") {
        format!("{at}.{name}_file")
    } else {
        format!("{at}.{name}")
    }
}

fn check_url(
    url: &Secret,
    key: &str,
    fail: &dyn Fn(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let u = url.0.trim();
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    match rest {
        // The value is a credential: the reason does not quote it.
        Some(host)
            if !host.is_empty() && !host.starts_with('/') && !u.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(fail(
            key.to_string(),
            "expected an http:// or https:// URL with a host (value not shown: it is a credential)"
                .into(),
        )),
    }
}

fn check_timeout(
    timeout: Duration,
    key: &str,
    fail: &dyn Fn(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if timeout.0.is_zero() {
        return Err(fail(key.to_string(), "expected more than 0s".into()));
    }
    Ok(())
}

fn yes() -> bool {
    true
}
fn default_max_messages() -> u32 {
    3
}
fn default_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(10))
}
fn default_mention_labels() -> Vec<String> {
    vec!["mention".to_string()]
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use crate::{Config, ConfigError};

    fn parse_with(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        crate::parse("mecha.yaml", text, env)
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_with(text, &|_| None)
    }

    fn receivers(body: &str) -> String {
        format!("aggregator:\n  alerting:\n    receivers:\n{body}")
    }

    #[test]
    fn every_integration_is_read_with_its_defaults() {
        let text = receivers(
            "      - name: oncall\n        wecom_configs:\n          - key: k1\n        dingtalk_configs:\n          - key: t1\n            secret: SEC1\n            message_type: text\n        feishu_configs:\n          - url: https://open.larksuite.com/open-apis/bot/v2/hook/abc\n        slack_configs:\n          - url: https://hooks.slack.com/services/T/B/X\n        webhook_configs:\n          - url: http://hooks.internal/a\n            max_alerts: 5\n",
        );
        let c = match parse(&text) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let r = &c.aggregator.alerting.receivers[0];
        assert_eq!(r.name, "oncall");
        let w = &r.wecom_configs[0];
        assert!(w.send_resolved);
        assert_eq!(w.max_messages, 3);
        assert_eq!(w.timeout.0.as_secs(), 10);
        assert_eq!(w.mentions.from_labels, vec!["mention".to_string()]);
        assert_eq!(w.effective_message_type(super::ChatKind::Wecom), "markdown");
        assert_eq!(
            w.key().ok().flatten().map(|k| k.expose().to_string()),
            Some("k1".into())
        );
        let d = &r.dingtalk_configs[0];
        assert_eq!(d.effective_message_type(super::ChatKind::Dingtalk), "text");
        assert_eq!(
            r.feishu_configs[0].effective_message_type(super::ChatKind::Feishu),
            "interactive"
        );
        assert_eq!(r.webhook_configs[0].max_alerts, 5);
    }

    #[test]
    fn secrets_come_from_env_and_files_and_never_show() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("secret");
        let mut f = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
        f.write_all(b"SECfromfile\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let text = receivers(&format!(
            "      - name: a\n        dingtalk_configs:\n          - key: ${{DT_TOKEN}}\n            secret_file: {}\n",
            path.display()
        ));
        let env = |k: &str| (k == "DT_TOKEN").then(|| "tok-from-env".to_string());
        let c = match parse_with(&text, &env) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let d = &c.aggregator.alerting.receivers[0].dingtalk_configs[0];
        assert_eq!(
            d.key().ok().flatten().map(|s| s.expose().to_string()),
            Some("tok-from-env".to_string())
        );
        assert_eq!(
            d.secret().ok().flatten().map(|s| s.expose().to_string()),
            Some("SECfromfile".to_string())
        );
        let shown = format!("{:?}", c.aggregator.alerting.receivers);
        assert!(
            !shown.contains("tok-from-env") && !shown.contains("SECfromfile"),
            "{shown}"
        );
        assert!(shown.contains("<secret>"), "{shown}");
    }

    #[test]
    fn a_bad_url_is_refused_without_quoting_it() {
        let text = receivers(
            "      - name: a\n        slack_configs:\n          - url: hooks.slack.com/services/T/B/TOPSECRET\n",
        );
        let msg = parse(&text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.contains("mecha.yaml:6: aggregator.alerting.receivers[0].slack_configs[0].url"),
            "{msg}"
        );
        assert!(!msg.contains("TOPSECRET"), "{msg}");
    }

    #[test]
    fn receiver_mistakes_name_line_and_key() {
        let missing = "/nonexistent/mecha-secret";
        let cases = [
            (
                receivers(
                    "      - name: a\n        wecom_configs:\n          - message_type: card\n            key: k\n",
                ),
                6,
                "aggregator.alerting.receivers[0].wecom_configs[0].message_type",
            ),
            (
                receivers(
                    "      - name: a\n        wecom_configs:\n          - send_resolved: true\n",
                ),
                6,
                "aggregator.alerting.receivers[0].wecom_configs[0]",
            ),
            (
                receivers(&format!(
                    "      - name: a\n        wecom_configs:\n          - key_file: {missing}\n"
                )),
                6,
                "aggregator.alerting.receivers[0].wecom_configs[0].key_file",
            ),
            (
                receivers(
                    "      - name: a\n        wecom_configs:\n          - key: k\n            key_file: /x\n",
                ),
                6,
                "aggregator.alerting.receivers[0].wecom_configs[0].key",
            ),
            (
                receivers(
                    "      - name: a\n        wecom_configs:\n          - key: k\n            secret: s\n",
                ),
                7,
                "aggregator.alerting.receivers[0].wecom_configs[0].secret",
            ),
            (
                receivers(
                    "      - name: a\n        feishu_configs:\n          - key: k\n            mentions: { mobiles: ['13800001111'] }\n",
                ),
                7,
                "aggregator.alerting.receivers[0].feishu_configs[0].mentions.mobiles",
            ),
            (
                receivers(
                    "      - name: a\n        dingtalk_configs:\n          - key: k\n            mentions:\n              mobiles: ['138-0000']\n",
                ),
                8,
                "aggregator.alerting.receivers[0].dingtalk_configs[0].mentions.mobiles[0]",
            ),
            (
                receivers(
                    "      - name: a\n        wecom_configs:\n          - key: k\n            max_messages: 0\n",
                ),
                7,
                "aggregator.alerting.receivers[0].wecom_configs[0].max_messages",
            ),
            (
                receivers(
                    "      - name: a\n        wecom_configs:\n          - key: k\n            text: '{% if %}'\n",
                ),
                7,
                "aggregator.alerting.receivers[0].wecom_configs[0].text",
            ),
            (
                receivers(
                    "      - name: a\n        wecom_configs:\n          - key: k\n            colour: red\n",
                ),
                7,
                "aggregator.alerting.receivers[0].wecom_configs[0].colour",
            ),
            (
                receivers(
                    "      - name: a\n        wecom_configs:\n          - key: k\n            proxy_url: socks5://proxy:1080\n",
                ),
                7,
                "aggregator.alerting.receivers[0].wecom_configs[0].proxy_url",
            ),
            (
                receivers(
                    "      - name: a\n        webhook_configs:\n          - url: https://h/x\n            tls:\n              ca_file: /x.pem\n              insecure_skip_verify: true\n",
                ),
                9,
                "aggregator.alerting.receivers[0].webhook_configs[0].tls.insecure_skip_verify",
            ),
            (
                receivers("      - name: a\n      - name: a\n"),
                5,
                "aggregator.alerting.receivers[1].name",
            ),
            (
                receivers("      - name: a\n        webhook_configs:\n          - max_alerts: 3\n"),
                6,
                "aggregator.alerting.receivers[0].webhook_configs[0]",
            ),
            (
                receivers(
                    "      - name: a\n        webhook_configs:\n          - url: http://h/x\n            timeout: 0s\n",
                ),
                7,
                "aggregator.alerting.receivers[0].webhook_configs[0].timeout",
            ),
        ];
        for (text, line, key) in cases {
            match parse(&text) {
                Err(ConfigError::Invalid {
                    line: l,
                    key: k,
                    file,
                    ..
                }) => {
                    assert_eq!(
                        (l, k.as_str(), file.as_str()),
                        (line, key, "mecha.yaml"),
                        "{text}"
                    );
                }
                other => panic!("expected an error for {text:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_missing_secret_file_is_named_and_empty_files_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap_or_else(|e| panic!("{e}"));
        let text = receivers(&format!(
            "      - name: a\n        webhook_configs:\n          - url: http://h/x\n            bearer_token_file: {}\n",
            empty.display()
        ));
        let msg = parse(&text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.contains("webhook_configs[0].bearer_token_file"),
            "{msg}"
        );
        assert!(msg.contains("is empty"), "{msg}");
    }
}
