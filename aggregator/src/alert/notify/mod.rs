//! Receivers: deliver a [`Notification`] to a chat group or a webhook, each
//! with its platform's message format, signature, size and rate limits and
//! error codes. Built from `aggregator.alerting.receivers` by [`build`].
//!
//! A chat integration renders the notification with its templates
//! ([`template`]), spreads it over as few messages as the platform's byte
//! limit allows ([`split`]), and hands them to the robot's rate-limited
//! queue ([`limit`]), whose worker signs and sends them ([`wecom`],
//! [`dingtalk`], [`feishu`], [`slack`]); entries of any receivers that post
//! to the same robot (platform and URL with its key) share that queue and
//! its rate limit, as the platform counts per robot. The generic
//! [`webhook`] posts the notification as it is. Integrations with the same
//! `tls` and `proxy_url` share one HTTP client (HTTPS by rustls, see the root Cargo.toml); every
//! delivery attempt is counted by outcome, a refused certificate as
//! `tls_error`.
//!
//! This module must not decide what to send or when (grouping, waits,
//! repeats, silences, inhibition happen before); it only delivers, and says
//! whether a failed delivery may be retried.

pub mod dingtalk;
pub mod feishu;
pub mod limit;
pub mod slack;
pub mod split;
pub mod template;
pub mod webhook;
pub mod wecom;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use mecha_config::{ChatConfig, ChatKind, MentionsConfig, ReceiverConfig, Secret, TlsConfig};
use serde_json::Value;

use crate::alert::model::{AlertStatus, Notification};
use crate::metrics::{Metrics, NotifyMetrics, NotifyOutcome};
use limit::{Channel, Failure, Limiter, Rate};
use template::{Markup, Prepared, Slice, Templates};

/// Why a delivery failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotifyError {
    /// Worth retrying later (network error, 5xx, the platform's rate limit).
    #[error("{receiver}: {reason} (will retry)")]
    Retryable {
        /// Receiver name.
        receiver: String,
        /// What happened.
        reason: String,
    },
    /// Retrying cannot help (invalid key, malformed request); the receiver is
    /// reported as failing.
    #[error("{receiver}: {reason}")]
    Permanent {
        /// Receiver name.
        receiver: String,
        /// What happened.
        reason: String,
    },
}

/// One receiver: every integration listed under one receiver name.
pub trait Notifier: Send + Sync {
    /// The receiver's name.
    fn name(&self) -> &str;
    /// Whether resolved alerts are sent to this receiver.
    fn send_resolved(&self) -> bool;
    /// Delivers `n` to every integration of the receiver.
    fn notify<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>>;
    /// Exactly what [`Notifier::notify`] would send for `n` at `now`,
    /// without sending it (`mecha alert preview`).
    fn preview(&self, n: &Notification, now: DateTime<Utc>) -> Vec<Preview>;
}

/// One request a receiver would send.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    /// The integration (`wecom`, `dingtalk`, `feishu`, `slack`, `webhook`)
    /// and its index under the receiver.
    pub integration: String,
    /// The URL, with secrets (robot keys, signatures) masked.
    pub url: String,
    /// The request body as sent.
    pub body: String,
}

/// The receivers of a config, by name.
pub fn build(
    receivers: &[ReceiverConfig],
) -> Result<HashMap<String, Arc<dyn Notifier>>, crate::Error> {
    build_with_metrics(receivers, &Arc::new(Metrics::new()?))
}

/// The receivers of a config, by name, counting into `metrics`.
pub fn build_with_metrics(
    receivers: &[ReceiverConfig],
    metrics: &Arc<Metrics>,
) -> Result<HashMap<String, Arc<dyn Notifier>>, crate::Error> {
    if receivers.is_empty() {
        return Ok(HashMap::new());
    }
    let mut clients = Clients::default();
    let mut robots = Robots::default();
    let mut out: HashMap<String, Arc<dyn Notifier>> = HashMap::new();
    for r in receivers {
        let receiver = Receiver::new(r, &mut clients, &mut robots, &metrics.notify)?;
        out.insert(r.name.clone(), Arc::new(receiver));
    }
    Ok(out)
}

/// The receivers by name, as the HTTP API holds them.
#[derive(Clone, Default)]
pub struct Receivers(pub Arc<HashMap<String, Arc<dyn Notifier>>>);

impl Receivers {
    /// The receiver named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Notifier>> {
        self.0.get(name)
    }
}

impl std::fmt::Debug for Receivers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort();
        f.debug_tuple("Receivers").field(&names).finish()
    }
}

/// The HTTP clients of the receivers, one per distinct `tls` and
/// `proxy_url`, each with pooled connections.
#[derive(Default)]
pub(crate) struct Clients(HashMap<(TlsConfig, Option<String>), reqwest::Client>);

impl Clients {
    /// The client for `tls` and `proxy`, built on first use.
    pub(crate) fn get(
        &mut self,
        tls: &TlsConfig,
        proxy: Option<&str>,
    ) -> Result<reqwest::Client, String> {
        let key = (tls.clone(), proxy.map(str::to_string));
        if let Some(c) = self.0.get(&key) {
            return Ok(c.clone());
        }
        let client = http_client(tls, proxy)?;
        self.0.insert(key, client.clone());
        Ok(client)
    }
}

/// The chat robots of the receivers, one per platform and URL (with its
/// key): the platforms count their rate limit per robot, so every entry
/// posting to one robot shares its bucket and queue.
#[derive(Default)]
pub(crate) struct Robots(HashMap<(ChatKind, String), Arc<Robot>>);

/// One robot's rate limit and queue, started on first delivery (receivers
/// are built before the runtime runs their tasks).
struct Robot {
    rate: Rate,
    limiter: OnceLock<Limiter>,
}

impl Robot {
    fn limiter(&self) -> &Limiter {
        self.limiter.get_or_init(|| Limiter::spawn(self.rate))
    }
}

impl Robots {
    /// The robot of `kind` at `url`; `rate` is that of the first entry
    /// naming it.
    fn get(&mut self, kind: ChatKind, url: &reqwest::Url, rate: Rate) -> Arc<Robot> {
        let robot = self
            .0
            .entry((kind, url.as_str().to_string()))
            .or_insert_with(|| {
                Arc::new(Robot {
                    rate,
                    limiter: OnceLock::new(),
                })
            });
        Arc::clone(robot)
    }
}

/// An HTTP client with `tls` and `proxy` (without one, the environment's
/// `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`).
fn http_client(tls: &TlsConfig, proxy: Option<&str>) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("mecha/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = tls.ca_pem().map_err(|e| format!("tls.ca_file: {e}"))? {
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("tls.ca_file: expected PEM certificates: {e}"))?;
        // Only these CAs, as Alertmanager's `ca_file`: an internal
        // endpoint is not vouched for by a public root.
        b = b.tls_certs_only(certs);
    }
    if tls.insecure_skip_verify {
        b = b.tls_danger_accept_invalid_certs(true);
    }
    if let Some(p) = proxy {
        // The URL may carry credentials: the error does not quote it.
        let proxy =
            reqwest::Proxy::all(p).map_err(|_| "proxy_url: expected a proxy URL".to_string())?;
        b = b.proxy(proxy);
    }
    b.build().map_err(|e| format!("http client: {e}"))
}

/// What a request that got no answer becomes: a TLS failure (a refused
/// certificate) is [`Failure::Tls`], anything else (refused connection,
/// timeout) is retried.
pub(crate) fn send_failure(e: reqwest::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(t) = rustls_error(err) {
            return Failure::Tls(format!("tls: {t}"));
        }
        source = err.source();
    }
    // Without the URL: it carries the robot's key.
    Failure::Retryable(e.without_url().to_string())
}

/// `err` as a rustls error, looking through `io::Error` wrappers (hyper
/// wraps tokio-rustls' `io::Error` in another one), whose `source` skips
/// the error they wrap.
fn rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(t) = err.downcast_ref::<rustls::Error>() {
        return Some(t);
    }
    let mut io = err.downcast_ref::<std::io::Error>()?;
    for _ in 0..4 {
        let inner = io.get_ref()?;
        if let Some(t) = inner.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        io = inner.downcast_ref::<std::io::Error>()?;
    }
    None
}

/// One chat message ready to be encoded for its platform.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outgoing {
    /// One line: DingTalk's notification title, Feishu's card header,
    /// Slack's header block (elsewhere the text starts with it).
    pub title: String,
    /// The rendered message text, in the integration's markup.
    pub text: String,
    /// Who is `@`-mentioned.
    pub mentions: Mentions,
    /// Whether any alert shown is firing (card colour).
    pub firing: bool,
    /// Notifications merged into this message besides the first.
    pub merged: usize,
}

/// Who a message mentions, deduplicated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mentions {
    /// User ids.
    pub users: Vec<String>,
    /// Phone numbers.
    pub mobiles: Vec<String>,
    /// Everyone in the group.
    pub all: bool,
}

impl Mentions {
    /// Nobody.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.mobiles.is_empty() && !self.all
    }

    fn add_user(&mut self, u: &str) {
        if !u.is_empty() && !self.users.iter().any(|x| x == u) {
            self.users.push(u.to_string());
        }
    }

    fn add_mobile(&mut self, m: &str) {
        if !self.mobiles.iter().any(|x| x == m) {
            self.mobiles.push(m.to_string());
        }
    }

    /// Adds everyone `other` mentions.
    pub fn union(&mut self, other: &Mentions) {
        for u in &other.users {
            self.add_user(u);
        }
        for m in &other.mobiles {
            self.add_mobile(m);
        }
        self.all |= other.all;
    }

    /// The configured mentions plus those named by the alerts' labels (or
    /// annotations) of `from_labels`.
    fn of(config: &MentionsConfig, n: &Notification) -> Mentions {
        let mut m = Mentions {
            all: config.all,
            ..Mentions::default()
        };
        for u in &config.users {
            m.add_user(u);
        }
        for p in &config.mobiles {
            m.add_mobile(p);
        }
        for a in &n.alerts {
            for label in &config.from_labels {
                let Some(value) = a.labels.get(label).or_else(|| a.annotations.get(label)) else {
                    continue;
                };
                for v in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                    if v == "all" || v == "@all" {
                        m.all = true;
                    } else if mecha_config::is_mobile(v) {
                        m.add_mobile(v);
                    } else if !v.contains(char::is_whitespace) {
                        m.add_user(v.trim_start_matches('@'));
                    }
                }
            }
        }
        m
    }
}

/// The receiver of a name: its chat robots and webhooks.
struct Receiver {
    name: String,
    chats: Vec<Chat>,
    webhooks: Vec<webhook::Webhook>,
}

impl Receiver {
    fn new(
        r: &ReceiverConfig,
        clients: &mut Clients,
        robots: &mut Robots,
        metrics: &NotifyMetrics,
    ) -> Result<Receiver, crate::Error> {
        let fail = |reason: String| crate::Error::Receiver {
            receiver: r.name.clone(),
            reason,
        };
        let mut chats = Vec::new();
        for (kind, configs) in r.chats() {
            for (i, c) in configs.iter().enumerate() {
                let chat = Chat::new(&r.name, kind, i, c, clients, robots, metrics)
                    .map_err(|e| fail(format!("{}_configs[{i}]: {e}", kind.as_str())))?;
                chats.push(chat);
            }
        }
        let mut webhooks = Vec::new();
        for (i, w) in r.webhook_configs.iter().enumerate() {
            webhooks.push(
                webhook::Webhook::new(&r.name, i, w, clients, metrics)
                    .map_err(|e| fail(format!("webhook_configs[{i}]: {e}")))?,
            );
        }
        Ok(Receiver {
            name: r.name.clone(),
            chats,
            webhooks,
        })
    }
}

impl Notifier for Receiver {
    fn name(&self) -> &str {
        &self.name
    }

    fn send_resolved(&self) -> bool {
        self.chats.iter().any(|c| c.send_resolved) || self.webhooks.iter().any(|w| w.send_resolved)
    }

    fn notify<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let mut jobs: Vec<BoxFuture<'a, (String, Result<(), Failure>)>> = Vec::new();
            for c in &self.chats {
                jobs.push(Box::pin(async move { (c.label(), c.deliver(n).await) }));
            }
            for w in &self.webhooks {
                jobs.push(Box::pin(async move { (w.label(), w.deliver(n).await) }));
            }
            let mut retryable = Vec::new();
            let mut permanent = Vec::new();
            for (label, result) in futures::future::join_all(jobs).await {
                match result {
                    Ok(()) => {}
                    Err(Failure::Permanent(r) | Failure::Tls(r)) => {
                        permanent.push(format!("{label}: {r}"));
                    }
                    Err(Failure::Retryable(r) | Failure::RateLimited { reason: r, .. }) => {
                        retryable.push(format!("{label}: {r}"));
                    }
                }
            }
            // Retry when any integration may still succeed; the others
            // are reported in the same reason.
            if !retryable.is_empty() {
                retryable.extend(permanent);
                return Err(NotifyError::Retryable {
                    receiver: self.name.clone(),
                    reason: retryable.join("; "),
                });
            }
            if !permanent.is_empty() {
                return Err(NotifyError::Permanent {
                    receiver: self.name.clone(),
                    reason: permanent.join("; "),
                });
            }
            Ok(())
        })
    }

    fn preview(&self, n: &Notification, now: DateTime<Utc>) -> Vec<Preview> {
        let mut out = Vec::new();
        for c in &self.chats {
            out.extend(c.preview(n, now));
        }
        for w in &self.webhooks {
            out.extend(w.preview(n));
        }
        out
    }
}

/// `n` without resolved alerts, for integrations that do not send them;
/// `None` when nothing is left to send.
pub(crate) fn for_integration(n: &Notification, send_resolved: bool) -> Option<Notification> {
    if send_resolved {
        return (!n.alerts.is_empty()).then(|| n.clone());
    }
    let mut n = n.clone();
    n.alerts.retain(|a| a.status == AlertStatus::Firing);
    if n.alerts.is_empty() {
        return None;
    }
    n.status = AlertStatus::Firing;
    Some(n)
}

/// One chat robot of a receiver.
struct Chat {
    send_resolved: bool,
    mentions: MentionsConfig,
    max_messages: usize,
    templates: Templates,
    sender: Arc<ChatSender>,
    robot: Arc<Robot>,
}

/// The part of a [`Chat`] its queue's worker needs: how to encode, sign,
/// send and judge the answer.
struct ChatSender {
    receiver: String,
    integration: String,
    kind: ChatKind,
    /// `message_type: text` (else the platform's rich default).
    text_mode: bool,
    /// The URL with the key, before any per-request signature.
    url: reqwest::Url,
    secret: Option<Secret>,
    client: reqwest::Client,
    timeout: Duration,
    metrics: NotifyMetrics,
}

impl Chat {
    fn new(
        receiver: &str,
        kind: ChatKind,
        index: usize,
        c: &ChatConfig,
        clients: &mut Clients,
        robots: &mut Robots,
        metrics: &NotifyMetrics,
    ) -> Result<Chat, String> {
        let client = clients.get(&c.tls, c.proxy_url.as_deref())?;
        let text_mode = c.effective_message_type(kind) == "text";
        let key = c.key()?;
        let configured = c.url()?;
        let url = match kind {
            ChatKind::Wecom => wecom::url(configured.as_ref(), key.as_ref())?,
            ChatKind::Dingtalk => dingtalk::url(configured.as_ref(), key.as_ref())?,
            ChatKind::Feishu => feishu::url(configured.as_ref(), key.as_ref())?,
            ChatKind::Slack => slack::url(configured.as_ref())?,
        };
        let markup = match (kind, text_mode) {
            (_, true) => Markup::Text,
            (ChatKind::Slack, false) => Markup::Slack,
            (_, false) => Markup::Markdown,
        };
        let per_minute = match kind {
            ChatKind::Wecom => wecom::MESSAGES_PER_MINUTE,
            ChatKind::Dingtalk => dingtalk::MESSAGES_PER_MINUTE,
            ChatKind::Feishu => feishu::MESSAGES_PER_MINUTE,
            ChatKind::Slack => slack::MESSAGES_PER_MINUTE,
        };
        let integration = format!("{}[{index}]", kind.as_str());
        metrics.set_failing(receiver, &integration, false);
        let rate = Rate {
            messages: per_minute,
            period: c.rate_limit_period.map_or(Duration::from_secs(60), |d| d.0),
        };
        let robot = robots.get(kind, &url, rate);
        Ok(Chat {
            send_resolved: c.send_resolved,
            mentions: c.mentions.clone(),
            max_messages: c.max_messages.clamp(1, 20) as usize,
            templates: Templates::new(
                markup,
                c.title.as_ref().map(|t| t.0.as_str()),
                c.text.as_ref().map(|t| t.0.as_str()),
            ),
            sender: Arc::new(ChatSender {
                receiver: receiver.to_string(),
                integration,
                kind,
                text_mode,
                url,
                secret: c.secret()?,
                client,
                timeout: c.timeout.0,
                metrics: metrics.clone(),
            }),
            robot,
        })
    }

    fn label(&self) -> String {
        self.sender.integration.clone()
    }

    /// The messages `n` becomes on this robot, each within its byte limit.
    fn messages(&self, n: &Notification, now: DateTime<Utc>) -> Vec<Outgoing> {
        let Some(n) = for_integration(n, self.send_resolved) else {
            return Vec::new();
        };
        let s = &*self.sender;
        let prepared = Prepared::new(&n, now);
        let title = self.templates.title(&prepared);
        let mut mentions = Mentions::of(&self.mentions, &n);
        if !s.kind_mentions_mobiles() {
            mentions.mobiles.clear();
        }
        let show_title = s.title_in_text();
        let firing = n.status == AlertStatus::Firing;
        let limit = s.limit();
        let message = |slice: &Slice| Outgoing {
            title: title.clone(),
            text: self.templates.text(&prepared, &title, show_title, slice),
            mentions: if slice.alerts.start == 0 {
                mentions.clone()
            } else {
                Mentions::default()
            },
            firing,
            merged: 0,
        };
        let max = self.max_messages;
        let parts = split::plan::<()>(prepared.alerts.len(), limit, max, |alerts, omitted| {
            // The widest part numbers, so the final text is never longer.
            let m = message(&Slice {
                alerts,
                omitted,
                part: max,
                parts: max,
            });
            Ok(s.size(&m))
        })
        .unwrap_or_default();
        let count = parts.len();
        parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let mut m = message(&Slice {
                    alerts: p.alerts,
                    omitted: p.omitted,
                    part: i + 1,
                    parts: count,
                });
                let size = s.size(&m);
                if size > limit {
                    // One alert alone is too long (or a user template
                    // grew): cut the text rather than have it refused.
                    let keep = m.text.len().saturating_sub(size - limit);
                    m.text = split::truncate(&m.text, keep);
                }
                m
            })
            .collect()
    }

    async fn deliver(&self, n: &Notification) -> Result<(), Failure> {
        let messages = self.messages(n, Utc::now());
        if messages.is_empty() {
            return Ok(());
        }
        let limiter = self.robot.limiter();
        let answers: Vec<_> = messages
            .into_iter()
            .map(|m| limiter.submit(Arc::clone(&self.sender) as Arc<dyn Channel>, m))
            .collect();
        let mut result = Ok(());
        for answer in answers {
            let r = answer
                .await
                .unwrap_or_else(|_| Err(Failure::Retryable("rate-limit queue stopped".into())));
            if let Err(f) = r {
                // A permanent failure wins: retrying would not help it.
                if !matches!(result, Err(Failure::Permanent(_) | Failure::Tls(_))) {
                    result = Err(f);
                }
            }
        }
        result
    }

    fn preview(&self, n: &Notification, now: DateTime<Utc>) -> Vec<Preview> {
        self.messages(n, now)
            .iter()
            .map(|m| {
                let (url, mut body) = self.sender.request(m, now);
                // The signature is derived from the secret: masked too.
                if let Some(sign) = body.get_mut("sign") {
                    *sign = Value::String("****".into());
                }
                Preview {
                    integration: self.sender.integration.clone(),
                    url: self.sender.masked(&url),
                    body: body.to_string(),
                }
            })
            .collect()
    }
}

impl ChatSender {
    fn kind_mentions_mobiles(&self) -> bool {
        matches!(self.kind, ChatKind::Wecom | ChatKind::Dingtalk)
    }

    /// Whether the text starts with the title (else the platform shows the
    /// title in a field of its own).
    fn title_in_text(&self) -> bool {
        self.text_mode || matches!(self.kind, ChatKind::Wecom | ChatKind::Dingtalk)
    }

    /// The URL and body of one request for `m`, signed as of `now`.
    fn request(&self, m: &Outgoing, now: DateTime<Utc>) -> (reqwest::Url, Value) {
        let secret = self.secret.as_ref().map(Secret::expose);
        match self.kind {
            ChatKind::Wecom => (self.url.clone(), wecom::body(self.text_mode, m)),
            ChatKind::Dingtalk => (
                dingtalk::signed_url(&self.url, secret, now.timestamp_millis()),
                dingtalk::body(self.text_mode, m),
            ),
            ChatKind::Feishu => (
                self.url.clone(),
                feishu::body(self.text_mode, m, secret, now.timestamp()),
            ),
            ChatKind::Slack => (self.url.clone(), slack::body(self.text_mode, m)),
        }
    }

    /// The URL with its credentials replaced by `****`.
    fn masked(&self, url: &reqwest::Url) -> String {
        match self.kind {
            ChatKind::Wecom => mask_query(url, &["key"]),
            ChatKind::Dingtalk => mask_query(url, &["access_token", "sign"]),
            ChatKind::Feishu | ChatKind::Slack => mask_path(url),
        }
    }

    async fn send_once(&self, m: Outgoing) -> Result<(), Failure> {
        let now = Utc::now();
        let (url, body) = self.request(&m, now);
        let started = Instant::now();
        let sent = self
            .client
            .post(url)
            .timeout(self.timeout)
            .json(&body)
            .send()
            .await;
        let result = match sent {
            Err(e) => Err(send_failure(e)),
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = retry_after(resp.headers());
                match resp.text().await {
                    Err(e) => Err(Failure::Retryable(e.without_url().to_string())),
                    Ok(text) => match self.kind {
                        ChatKind::Wecom => wecom::classify(status, retry_after, &text),
                        ChatKind::Dingtalk => dingtalk::classify(status, retry_after, &text),
                        ChatKind::Feishu => feishu::classify(status, retry_after, &text),
                        ChatKind::Slack => slack::classify(status, retry_after, &text),
                    },
                }
            }
        };
        record(
            &self.metrics,
            &self.receiver,
            &self.integration,
            &result,
            started.elapsed(),
        );
        result
    }
}

impl Channel for ChatSender {
    fn send(&self, message: Outgoing) -> BoxFuture<'static, Result<(), Failure>> {
        // The worker owns an Arc of the sender; the future borrows nothing.
        let this = ChatSender {
            receiver: self.receiver.clone(),
            integration: self.integration.clone(),
            kind: self.kind,
            text_mode: self.text_mode,
            url: self.url.clone(),
            secret: self.secret.clone(),
            client: self.client.clone(),
            timeout: self.timeout,
            metrics: self.metrics.clone(),
        };
        Box::pin(async move { this.send_once(message).await })
    }

    fn size(&self, m: &Outgoing) -> usize {
        match self.kind {
            ChatKind::Wecom => wecom::size(self.text_mode, m),
            ChatKind::Dingtalk => dingtalk::size(self.text_mode, m),
            ChatKind::Feishu => feishu::size(self.text_mode, m),
            ChatKind::Slack => slack::size(self.text_mode, m),
        }
    }

    fn limit(&self) -> usize {
        match self.kind {
            ChatKind::Wecom => wecom::limit(self.text_mode),
            ChatKind::Dingtalk => dingtalk::LIMIT,
            ChatKind::Feishu => feishu::LIMIT,
            ChatKind::Slack => slack::limit(self.text_mode),
        }
    }

    fn merge(&self, into: &mut Outgoing, next: Outgoing) {
        into.text.push_str("\n\n");
        if !self.title_in_text() {
            // The next notification's title would be lost in the header.
            let title = match self.kind {
                ChatKind::Slack => format!("*{}*\n", next.title),
                _ => format!("**{}**\n", next.title),
            };
            into.text.push_str(&title);
        }
        into.text.push_str(&next.text);
        into.mentions.union(&next.mentions);
        into.firing |= next.firing;
        into.merged += 1 + next.merged;
        let first = into
            .title
            .split(" (+")
            .next()
            .unwrap_or_default()
            .to_string();
        into.title = format!("{first} (+{} more)", into.merged);
    }

    fn backlog(&self, waiting: usize) {
        self.metrics
            .set_queued(&self.receiver, &self.integration, waiting);
    }
}

/// Counts one attempt; a permanent failure marks the integration failing
/// and is logged with its reason, a success clears it.
pub(crate) fn record(
    metrics: &NotifyMetrics,
    receiver: &str,
    integration: &str,
    result: &Result<(), Failure>,
    took: Duration,
) {
    let outcome = match result {
        Ok(()) => NotifyOutcome::Success,
        Err(Failure::Permanent(_)) => NotifyOutcome::PermanentError,
        Err(Failure::Tls(_)) => NotifyOutcome::TlsError,
        Err(_) => NotifyOutcome::RetryableError,
    };
    metrics.attempt(receiver, integration, outcome, took.as_secs_f64());
    match result {
        Ok(()) => metrics.set_failing(receiver, integration, false),
        Err(Failure::Permanent(reason) | Failure::Tls(reason)) => {
            metrics.set_failing(receiver, integration, true);
            tracing::warn!(receiver, integration, %reason, "alert receiver failing");
        }
        Err(Failure::Retryable(reason) | Failure::RateLimited { reason, .. }) => {
            tracing::info!(receiver, integration, %reason, "alert delivery failed, will retry");
        }
    }
}

/// The `Retry-After` header in seconds, if any.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(600)))
}

/// Judges a `{"errcode", "errmsg"}` answer (WeCom and DingTalk robots):
/// 0 is delivered, `rate_limit` backs off, -1 ("system busy") retries,
/// `permanent.0` is permanent with the reason `permanent.1`, any other code
/// is permanent as the platform wrote it.
pub(crate) fn classify_errcode(
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
    rate_limit: i64,
    permanent: (i64, &str),
) -> Result<(), Failure> {
    if let Some(r) = classify_status(status, retry_after, body) {
        return r;
    }
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let Some(code) = v.get("errcode").and_then(Value::as_i64) else {
        return Err(Failure::Permanent(format!(
            "http {status}: expected a JSON body with errcode, found {:?}",
            split::truncate(body, 200)
        )));
    };
    let msg = v.get("errmsg").and_then(Value::as_str).unwrap_or_default();
    match code {
        0 => Ok(()),
        c if c == rate_limit => Err(Failure::RateLimited {
            reason: format!("errcode {code}: {msg}"),
            retry_after,
        }),
        c if c == permanent.0 => Err(Failure::Permanent(format!(
            "errcode {code}: {}: {msg}",
            permanent.1
        ))),
        -1 => Err(Failure::Retryable(format!("errcode {code}: {msg}"))),
        _ => Err(Failure::Permanent(format!("errcode {code}: {msg}"))),
    }
}

/// Judges an HTTP status before the platform's body is read: `None` when
/// the body decides.
pub(crate) fn classify_status(
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
) -> Option<Result<(), Failure>> {
    let said = split::truncate(body.trim(), 200);
    match status {
        429 => Some(Err(Failure::RateLimited {
            reason: format!("http 429: {said}"),
            retry_after,
        })),
        500..=599 | 408 => Some(Err(Failure::Retryable(format!("http {status}: {said}")))),
        _ => None,
    }
}

fn mask_query(url: &reqwest::Url, keys: &[&str]) -> String {
    let mut u = url.clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if keys.contains(&k.as_ref()) {
                "****".to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    if pairs.is_empty() {
        return u.to_string();
    }
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.to_string().replace("%2A%2A%2A%2A", "****")
}

/// Keeps scheme, host and the path up to its last segment, which (Feishu's
/// hook token, Slack's webhook secret) becomes `****`.
fn mask_path(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    let path = u.path().trim_end_matches('/').to_string();
    let masked = match path.rsplit_once('/') {
        Some((head, _)) => format!("{head}/****"),
        None => "/****".to_string(),
    };
    u.set_path(&masked);
    u.to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;

    use super::*;
    use crate::alert::model::Alert;

    pub(crate) fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 8, 30, 0)
            .single()
            .unwrap_or_default()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A group of `count` disk alerts on different nodes, in Chinese.
    pub(crate) fn notification(status: AlertStatus, count: usize) -> Notification {
        let start = Utc
            .with_ymd_and_hms(2026, 12, 1, 8, 0, 0)
            .single()
            .unwrap_or_default();
        let end = Utc
            .with_ymd_and_hms(2026, 12, 1, 8, 25, 30)
            .single()
            .unwrap_or_default();
        let alerts = (0..count)
            .map(|i| Alert {
                status,
                labels: labels(&[
                    ("alertname", "磁盘使用率过高"),
                    ("severity", "critical"),
                    ("node", &format!("node-{i}")),
                    ("owner", "zhangsan"),
                ]),
                annotations: labels(&[
                    (
                        "summary",
                        &format!("节点 node-{i} 的磁盘 /data 使用率超过 95%"),
                    ),
                    ("description", "请尽快清理日志或扩容磁盘"),
                    (
                        "value",
                        if status == AlertStatus::Firing {
                            "97%"
                        } else {
                            "82%"
                        },
                    ),
                ]),
                starts_at: start,
                ends_at: if status == AlertStatus::Resolved {
                    end
                } else {
                    // What Alertmanager writes for a firing alert.
                    Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0)
                        .single()
                        .unwrap_or_default()
                },
                generator_url: format!("http://mecha.example/search?q=node-{i}"),
                fingerprint: format!("{i:016x}"),
                value: None,
            })
            .collect();
        Notification {
            version: "4".into(),
            group_key: "{}:{alertname=\"磁盘使用率过高\"}".into(),
            truncated_alerts: 0,
            status,
            receiver: "值班".into(),
            group_labels: labels(&[("alertname", "磁盘使用率过高")]),
            common_labels: labels(&[("alertname", "磁盘使用率过高"), ("severity", "critical")]),
            common_annotations: BTreeMap::new(),
            external_url: "http://mecha.example".into(),
            alerts,
        }
    }

    fn preview_of(yaml: &str, n: &Notification) -> Vec<Preview> {
        let text = format!("aggregator:\n  alerting:\n    receivers:\n{yaml}");
        let config =
            mecha_config::parse("test.yaml", &text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
        let metrics = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
        let r = Receiver::new(
            &config.aggregator.alerting.receivers[0],
            &mut Clients::default(),
            &mut Robots::default(),
            &metrics.notify,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        r.preview(n, now())
    }

    /// The previews of `n` as a snapshot: URL, then the body pretty-printed.
    fn shown(previews: &[Preview]) -> String {
        previews
            .iter()
            .map(|p| {
                let body = serde_json::from_str::<Value>(&p.body)
                    .ok()
                    .and_then(|v| serde_json::to_string_pretty(&v).ok())
                    .unwrap_or_else(|| p.body.clone());
                format!("{} POST {}\n{}\n", p.integration, p.url, body)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    const ALL: &str = "      - name: 值班\n        wecom_configs:\n          - key: WECOMKEY\n            mentions: { users: [lisi], from_labels: [owner] }\n          - key: WECOMKEY\n            message_type: text\n            mentions: { mobiles: ['13800001111'], from_labels: [owner] }\n        dingtalk_configs:\n          - key: DTTOKEN\n            secret: SECDINGTALK\n            mentions: { mobiles: ['13800001111'] }\n        feishu_configs:\n          - key: FEISHUHOOK\n            secret: FEISHUSECRET\n            mentions: { users: [ou_123] }\n        slack_configs:\n          - url: https://hooks.slack.com/services/T0/B0/SLACKSECRET\n        webhook_configs:\n          - url: http://hooks.internal/alerts\n            max_alerts: 1\n";

    #[test]
    fn firing_messages_of_every_platform() {
        let previews = preview_of(ALL, &notification(AlertStatus::Firing, 2));
        let text = shown(&previews);
        for secret in [
            "WECOMKEY",
            "DTTOKEN",
            "SECDINGTALK",
            "FEISHUHOOK",
            "FEISHUSECRET",
            "SLACKSECRET",
        ] {
            assert!(!text.contains(secret), "{secret} shown");
        }
        insta::assert_snapshot!(text);
    }

    #[test]
    fn resolved_messages_of_every_platform() {
        let previews = preview_of(ALL, &notification(AlertStatus::Resolved, 1));
        insta::assert_snapshot!(shown(&previews));
    }

    #[test]
    fn mentions_come_from_config_and_labels() {
        let mut n = notification(AlertStatus::Firing, 2);
        n.alerts[1]
            .labels
            .insert("mention".into(), "wangwu, 13900002222,@all".into());
        let m = Mentions::of(&MentionsConfig::default(), &n);
        assert_eq!(m.users, vec!["wangwu".to_string()]);
        assert_eq!(m.mobiles, vec!["13900002222".to_string()]);
        assert!(m.all);
    }

    #[test]
    fn a_big_group_is_split_within_the_wecom_limit() {
        let mut n = notification(AlertStatus::Firing, 200);
        for a in &mut n.alerts {
            a.annotations.insert(
                "description".into(),
                "数据库连接池耗尽，请检查慢查询。".repeat(30),
            );
        }
        let previews = preview_of(
            "      - name: a\n        wecom_configs:\n          - key: k\n            max_messages: 3\n",
            &n,
        );
        assert_eq!(previews.len(), 3);
        let mut shown = 0;
        for p in &previews {
            let body: Value = serde_json::from_str(&p.body).unwrap_or_default();
            let content = body["markdown"]["content"].as_str().unwrap_or_default();
            assert!(content.len() <= 4096, "{} bytes", content.len());
            shown += content.matches("**磁盘使用率过高**").count();
        }
        let last: Value = serde_json::from_str(&previews[2].body).unwrap_or_default();
        let content = last["markdown"]["content"].as_str().unwrap_or_default();
        let more = format!("**+{} more**", 200 - shown);
        assert!(content.contains(&more), "{more} missing from {content}");
    }

    #[test]
    fn resolved_alerts_are_left_out_where_not_wanted() {
        let mut n = notification(AlertStatus::Firing, 2);
        n.alerts[1].status = AlertStatus::Resolved;
        let kept = for_integration(&n, false).map(|n| n.alerts.len());
        assert_eq!(kept, Some(1));
        let resolved = notification(AlertStatus::Resolved, 2);
        assert!(for_integration(&resolved, false).is_none());
    }
}
