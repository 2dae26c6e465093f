//! `agent.sentry`: the Sentry ingestion endpoint of the agent (`:9000`).
//!
//! ```yaml
//! agent:
//!   sentry:
//!     listen: "0.0.0.0:9000"
//!     projects:
//!       - id: 1
//!         keys: ["e12d836b15bb49d7bbf99e64295d995b"]
//!         rate_limit: { events_per_second: 50, burst: 200 }
//!         filters: { localhost: true, error_messages: ["*ResizeObserver loop*"] }
//!     trusted_proxies: ["10.0.0.0/8"]
//!     limits: { max_event_bytes: 1MiB }
//! ```
//!
//! Without `projects`, the endpoint runs in open mode: any key is accepted
//! for any numeric project id (for a laptop; the agent warns at start-up).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::values::{ByteSize, Duration, GlobPattern, Listen};

/// The Sentry endpoint. Point an SDK's DSN at it:
/// `http://<key>@<node>:9000/<project id>`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentryConfig {
    /// `host:port`, `:port`, or `off`. Default `0.0.0.0:9000` (`127.0.0.1:9000`
    /// for `mecha standalone` without a config file).
    #[serde(default = "default_listen")]
    pub listen: Listen,
    /// Projects and their public keys. Empty (the default): open mode, any
    /// key for any numeric project id.
    #[serde(default)]
    pub projects: Vec<SentryProject>,
    /// Rate limit of projects that set none (and of every project in open
    /// mode). Default: none.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// PII scrubbing of projects that set none. Default: on.
    #[serde(default)]
    pub scrub: ScrubConfig,
    /// Inbound filters of projects that set none. Default: browser
    /// extensions only.
    #[serde(default)]
    pub filters: FiltersConfig,
    /// Size limits.
    #[serde(default)]
    pub limits: SentryLimits,
    /// CIDR ranges (`10.0.0.0/8`, `fd00::/8`) or addresses of proxies whose
    /// `X-Forwarded-For` / `X-Real-IP` is believed. The client IP is the
    /// right-most forwarded address that is not itself a trusted proxy; from
    /// any other peer the headers are ignored, so a client cannot choose its
    /// IP. Default: none (the peer address is the client IP).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Expect a PROXY protocol v1 or v2 header on every connection (behind
    /// HAProxy, an AWS NLB, ...); connections without one are closed. The
    /// address it names is the peer. Default false.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// How long a connection may take to send its PROXY header. Default 5s.
    #[serde(default = "default_proxy_timeout")]
    pub proxy_protocol_timeout: Duration,
    /// Origins browser SDKs may send from (`https://shop.example`); `*`
    /// allows any. Default `["*"]`.
    #[serde(default = "default_cors")]
    pub cors_origins: Vec<String>,
    /// How long a request waits for its events to be safe in the buffer
    /// before it is answered 503 with `Retry-After`. Default 10s.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout: Duration,
    /// Events that may wait for the buffer, summed over requests; when
    /// full, requests get 429 with `Retry-After`. Default 4096.
    #[serde(default = "default_queue_events")]
    pub queue_events: usize,
}

impl Default for SentryConfig {
    fn default() -> Self {
        SentryConfig {
            listen: default_listen(),
            projects: Vec::new(),
            rate_limit: None,
            scrub: ScrubConfig::default(),
            filters: FiltersConfig::default(),
            limits: SentryLimits::default(),
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            proxy_protocol_timeout: default_proxy_timeout(),
            cors_origins: default_cors(),
            ack_timeout: default_ack_timeout(),
            queue_events: default_queue_events(),
        }
    }
}

/// One Sentry project.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentryProject {
    /// The numeric project id of the DSN's path.
    pub id: u64,
    /// Public keys (the DSN's user part) accepted for this project; any
    /// length. A key belongs to one project.
    pub keys: Vec<String>,
    /// Events per second this project may send. Default: the endpoint's
    /// `rate_limit`.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// PII scrubbing. Default: the endpoint's `scrub`.
    #[serde(default)]
    pub scrub: Option<ScrubConfig>,
    /// Inbound filters. Default: the endpoint's `filters`.
    #[serde(default)]
    pub filters: Option<FiltersConfig>,
}

/// A token bucket: `burst` events at once, refilled at `events_per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained rate (may be fractional: `0.5`).
    pub events_per_second: f64,
    /// Events accepted at once after a quiet spell. Default: one second's worth
    /// (at least 1).
    #[serde(default)]
    pub burst: Option<u32>,
}

impl RateLimitConfig {
    /// The bucket size.
    pub fn effective_burst(&self) -> u32 {
        self.burst
            .unwrap_or_else(|| self.events_per_second.ceil().clamp(1.0, u32::MAX as f64) as u32)
    }
}

/// PII scrubbing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrubConfig {
    /// Scrub at all: values of keys like password, secret, token, auth,
    /// credit-card numbers, PEM keys, URL passwords and session cookies
    /// become `[Filtered]`. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Also remove IP addresses (`user.ip_address`, `REMOTE_ADDR`). Default false.
    #[serde(default)]
    pub scrub_ip: bool,
    /// More key names (case-insensitive substrings) whose values are scrubbed.
    #[serde(default)]
    pub extra_keys: Vec<String>,
    /// Key names never scrubbed.
    #[serde(default)]
    pub safe_keys: Vec<String>,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        ScrubConfig {
            enabled: true,
            scrub_ip: false,
            extra_keys: Vec::new(),
            safe_keys: Vec::new(),
        }
    }
}

/// Inbound filters: matching events are dropped (answered 200, as Sentry
/// does, and counted as `filtered_*`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiltersConfig {
    /// Drop events from localhost. Default false.
    #[serde(default)]
    pub localhost: bool,
    /// Drop errors caused by browser extensions. Default true.
    #[serde(default = "yes")]
    pub browser_extensions: bool,
    /// Drop events whose message matches one of these globs (`*`, `?`,
    /// case-insensitive). Default none.
    #[serde(default)]
    pub error_messages: Vec<GlobPattern>,
}

impl Default for FiltersConfig {
    fn default() -> Self {
        FiltersConfig {
            localhost: false,
            browser_extensions: true,
            error_messages: Vec::new(),
        }
    }
}

/// Size limits of the endpoint (Sentry's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentryLimits {
    /// Largest request body as sent (compressed). Default 20MiB; larger → 413.
    #[serde(default = "default_max_request")]
    pub max_request_bytes: ByteSize,
    /// Largest envelope or store body after decompression. Default 100MiB;
    /// a body that decompresses past it (a bomb) is stopped there → 413.
    #[serde(default = "default_max_envelope")]
    pub max_envelope_bytes: ByteSize,
    /// Largest event or transaction item. Default 1MiB; larger → 413.
    #[serde(default = "default_max_event")]
    pub max_event_bytes: ByteSize,
    /// Most items in one envelope. Default 1000.
    #[serde(default = "default_max_items")]
    pub max_envelope_items: usize,
    /// Tag values longer than this many characters are cut. Default 200.
    #[serde(default = "default_max_tag_value")]
    pub max_tag_value_chars: usize,
    /// Most connections open at once (each holds buffers, and with the
    /// PROXY protocol a task reading its header). Past it, new connections
    /// wait in the kernel's accept queue until one closes, and each that
    /// waits is counted in `mecha_component_errors_total{component="sentry",
    /// kind="connection_limit"}`. Default 1024.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for SentryLimits {
    fn default() -> Self {
        SentryLimits {
            max_request_bytes: default_max_request(),
            max_envelope_bytes: default_max_envelope(),
            max_event_bytes: default_max_event(),
            max_envelope_items: default_max_items(),
            max_tag_value_chars: default_max_tag_value(),
            max_connections: default_max_connections(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_listen() -> Listen {
    Listen(Some(([0, 0, 0, 0], 9000).into()))
}
fn default_proxy_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(5))
}
fn default_cors() -> Vec<String> {
    vec!["*".to_string()]
}
fn default_ack_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(10))
}
fn default_queue_events() -> usize {
    4096
}
fn default_max_request() -> ByteSize {
    ByteSize(20 << 20)
}
fn default_max_envelope() -> ByteSize {
    ByteSize(100 << 20)
}
fn default_max_event() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_items() -> usize {
    1000
}
fn default_max_tag_value() -> usize {
    200
}

impl SentryConfig {
    /// Checks what one key alone cannot; `fail(key, reason)` builds the
    /// error naming the key's line.
    pub(crate) fn check(
        &self,
        fail: &dyn Fn(String, String) -> crate::ConfigError,
    ) -> Result<(), crate::ConfigError> {
        let base = "agent.sentry";
        let mut owner: BTreeMap<&str, u64> = BTreeMap::new();
        let mut ids: BTreeMap<u64, usize> = BTreeMap::new();
        for (i, p) in self.projects.iter().enumerate() {
            let at = format!("{base}.projects[{i}]");
            if p.id == 0 {
                return Err(fail(
                    format!("{at}.id"),
                    "expected a project id of 1 or more, found 0".into(),
                ));
            }
            if let Some(first) = ids.insert(p.id, i) {
                return Err(fail(
                    format!("{at}.id"),
                    format!(
                        "project {} is already configured at projects[{first}]",
                        p.id
                    ),
                ));
            }
            if p.keys.is_empty() {
                return Err(fail(
                    format!("{at}.keys"),
                    "expected at least one public key, found none".into(),
                ));
            }
            for (k, key) in p.keys.iter().enumerate() {
                if let Err(e) = mecha_parsers::sentry::auth::validate_key(key) {
                    return Err(fail(format!("{at}.keys[{k}]"), e.to_string()));
                }
                if let Some(other) = owner.insert(key.as_str(), p.id)
                    && other != p.id
                {
                    return Err(fail(
                        format!("{at}.keys[{k}]"),
                        format!("key already belongs to project {other}: a key names one project"),
                    ));
                }
            }
            if let Some(r) = &p.rate_limit {
                check_rate(r, &format!("{at}.rate_limit"), fail)?;
            }
        }
        if let Some(r) = &self.rate_limit {
            check_rate(r, &format!("{base}.rate_limit"), fail)?;
        }
        for (i, p) in self.trusted_proxies.iter().enumerate() {
            if parse_cidr(p).is_none() {
                return Err(fail(
                    format!("{base}.trusted_proxies[{i}]"),
                    format!("expected a CIDR range such as 10.0.0.0/8 or an address, found {p:?}"),
                ));
            }
        }
        for (i, o) in self.cors_origins.iter().enumerate() {
            let ok = o == "*"
                || ((o.starts_with("http://") || o.starts_with("https://")) && !o.ends_with('/'));
            if !ok {
                return Err(fail(
                    format!("{base}.cors_origins[{i}]"),
                    format!(
                        "expected * or an origin such as https://shop.example (no path), found {o:?}"
                    ),
                ));
            }
        }
        let l = &self.limits;
        if l.max_event_bytes.0 > l.max_envelope_bytes.0 {
            return Err(fail(
                format!("{base}.limits.max_event_bytes"),
                format!(
                    "expected at most max_envelope_bytes ({} bytes), found {} bytes",
                    l.max_envelope_bytes.0, l.max_event_bytes.0
                ),
            ));
        }
        for (key, v) in [
            ("max_request_bytes", l.max_request_bytes.0),
            ("max_envelope_bytes", l.max_envelope_bytes.0),
            ("max_event_bytes", l.max_event_bytes.0),
        ] {
            if v < 1024 {
                return Err(fail(
                    format!("{base}.limits.{key}"),
                    format!("expected at least 1KiB, found {v} bytes"),
                ));
            }
        }
        for (key, v) in [
            ("max_envelope_items", l.max_envelope_items),
            ("max_connections", l.max_connections),
        ] {
            if v == 0 {
                return Err(fail(
                    format!("{base}.limits.{key}"),
                    "expected at least 1, found 0".into(),
                ));
            }
        }
        if self.queue_events == 0 {
            return Err(fail(
                format!("{base}.queue_events"),
                "expected at least 1, found 0".into(),
            ));
        }
        if self.ack_timeout.0.is_zero() {
            return Err(fail(
                format!("{base}.ack_timeout"),
                "expected more than 0s".into(),
            ));
        }
        Ok(())
    }
}

fn check_rate(
    r: &RateLimitConfig,
    key: &str,
    fail: &dyn Fn(String, String) -> crate::ConfigError,
) -> Result<(), crate::ConfigError> {
    if !(r.events_per_second.is_finite() && r.events_per_second > 0.0) {
        return Err(fail(
            format!("{key}.events_per_second"),
            format!("expected a rate above 0, found {}", r.events_per_second),
        ));
    }
    if r.burst == Some(0) {
        return Err(fail(
            format!("{key}.burst"),
            "expected at least 1, found 0".into(),
        ));
    }
    Ok(())
}

/// Reads `10.0.0.0/8`, `fd00::/8`, or a single address (as a /32 or /128).
pub fn parse_cidr(text: &str) -> Option<ipnet::IpNet> {
    let t = text.trim();
    t.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| t.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

#[cfg(test)]
mod tests {
    use crate::{Config, ConfigError};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        crate::parse("mecha.yaml", text, &|_| None)
    }

    #[test]
    fn defaults_are_sentrys() {
        let c = parse("").unwrap_or_default();
        let s = &c.agent.sentry;
        assert_eq!(s.listen.to_string(), "0.0.0.0:9000");
        assert!(s.projects.is_empty());
        assert_eq!(s.limits.max_request_bytes.0, 20 << 20);
        assert_eq!(s.limits.max_envelope_bytes.0, 100 << 20);
        assert_eq!(s.limits.max_event_bytes.0, 1 << 20);
        assert_eq!(s.limits.max_connections, 1024);
        assert!(s.scrub.enabled && s.filters.browser_extensions && !s.filters.localhost);
        assert_eq!(s.cors_origins, vec!["*".to_string()]);
    }

    #[test]
    fn a_full_sentry_config_is_read() {
        let c = parse(
            "agent:\n  sentry:\n    listen: ':9100'\n    projects:\n      - id: 7\n        keys: [abc, def]\n        rate_limit: { events_per_second: 0.5, burst: 3 }\n        scrub: { scrub_ip: true }\n        filters: { localhost: true, error_messages: ['*Script error*'] }\n    trusted_proxies: [10.0.0.0/8, '::1']\n    proxy_protocol: true\n    cors_origins: ['https://shop.example']\n    limits: { max_event_bytes: 64KiB }\n",
        );
        let c = match c {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let s = &c.agent.sentry;
        let p = &s.projects[0];
        assert_eq!((p.id, p.keys.len()), (7, 2));
        assert_eq!(p.rate_limit.map(|r| r.effective_burst()), Some(3));
        assert_eq!(
            p.scrub.as_ref().map(|s| (s.enabled, s.scrub_ip)),
            Some((true, true))
        );
        assert_eq!(p.filters.as_ref().map(|f| f.error_messages.len()), Some(1));
        assert!(s.proxy_protocol);
        assert_eq!(s.limits.max_event_bytes.0, 64 << 10);
        assert_eq!(s.limits.max_envelope_bytes.0, 100 << 20);
    }

    #[test]
    fn sentry_mistakes_name_line_and_key() {
        let cases = [
            (
                "agent:\n  sentry:\n    projects:\n      - id: 1\n        keys: []\n",
                5,
                "agent.sentry.projects[0].keys",
            ),
            (
                "agent:\n  sentry:\n    projects:\n      - id: 1\n        keys: ['a b']\n",
                5,
                "agent.sentry.projects[0].keys[0]",
            ),
            (
                "agent:\n  sentry:\n    projects:\n      - id: 1\n        keys: [k]\n      - id: 2\n        keys: [k]\n",
                7,
                "agent.sentry.projects[1].keys[0]",
            ),
            (
                "agent:\n  sentry:\n    projects:\n      - id: 1\n        keys: [k]\n      - id: 1\n        keys: [j]\n",
                6,
                "agent.sentry.projects[1].id",
            ),
            (
                "agent:\n  sentry:\n    projects:\n      - id: x\n        keys: [k]\n",
                4,
                "agent.sentry.projects[0].id",
            ),
            (
                "agent:\n  sentry:\n    trusted_proxies: [10.0.0.0/33]\n",
                3,
                "agent.sentry.trusted_proxies[0]",
            ),
            (
                "agent:\n  sentry:\n    rate_limit: { events_per_second: 0 }\n",
                3,
                "agent.sentry.rate_limit.events_per_second",
            ),
            (
                "agent:\n  sentry:\n    cors_origins: [shop.example]\n",
                3,
                "agent.sentry.cors_origins[0]",
            ),
            (
                "agent:\n  sentry:\n    limits:\n      max_event_bytes: 200MiB\n",
                4,
                "agent.sentry.limits.max_event_bytes",
            ),
            (
                "agent:\n  sentry:\n    limits:\n      max_connections: 0\n",
                4,
                "agent.sentry.limits.max_connections",
            ),
            (
                "agent:\n  sentry:\n    listen: nowhere\n",
                3,
                "agent.sentry.listen",
            ),
            (
                "agent:\n  sentry:\n    filters: { error_messages: ['['] }\n",
                3,
                "agent.sentry.filters.error_messages[0]",
            ),
            (
                "agent:\n  sentry:\n    lisen: ':1'\n",
                3,
                "agent.sentry.lisen",
            ),
        ];
        for (text, line, key) in cases {
            match parse(text) {
                Err(ConfigError::Invalid {
                    line: l, key: k, ..
                }) => {
                    assert_eq!((l, k.as_str()), (line, key), "{text}");
                }
                other => panic!("expected an error for {text:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn cidrs_and_bare_addresses_are_read() {
        assert!(super::parse_cidr("10.0.0.0/8").is_some());
        assert_eq!(
            super::parse_cidr("10.1.2.3").map(|n| n.prefix_len()),
            Some(32)
        );
        assert_eq!(super::parse_cidr("::1").map(|n| n.prefix_len()), Some(128));
        assert!(super::parse_cidr("10.0.0.0/40").is_none());
        assert!(super::parse_cidr("proxy").is_none());
    }
}
