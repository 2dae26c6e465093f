//! Normalisation of an event before it is forwarded: missing `event_id`,
//! `timestamp` and `level` filled in, clock drift corrected from the
//! envelope's `sent_at`, the client IP applied, the shapes SDKs may choose
//! between unified (`message`/`logentry`, `{"values": [...]}` or bare lists,
//! tags as an object or as pairs), tag values capped and oversized fields
//! trimmed.
//!
//! The rules follow Relay's store normalisation for the fields the issues
//! and the search need; the limits are Relay's (named where they are set).
//! What a rule could not keep is recorded in the event's `errors` list, the
//! way Sentry shows processing errors (`clock_drift`, `future_timestamp`,
//! `past_timestamp`, `invalid_data`, `value_too_long`). Unknown fields are
//! left as they are. This room must not read the clock, generate randomness
//! or panic: everything it needs arrives in [`NormalizeContext`], and
//! normalising an already normalised event changes nothing.

use std::net::IpAddr;

use chrono::{DateTime, SecondsFormat};
use serde_json::{Map, Number, Value, json};

use super::value::{
    MAX_STRING_CHARS, cap_chars, has_error, pairs_of, parse_ip, push_error, type_name,
};
use crate::Severity;
use crate::time::parse_rfc3339;

/// Size and time limits applied by [`normalize`]. The defaults are Relay's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizeLimits {
    /// Tag values longer than this many characters are cut. Sentry: 200.
    pub max_tag_value_chars: usize,
    /// Tags whose key is longer than this many characters are dropped.
    /// Sentry: 200 (`MAX_TAG_KEY_LENGTH`).
    pub max_tag_key_chars: usize,
    /// Any string longer than this many characters is cut, ending in `...`.
    /// Relay's limit for messages: 8192.
    pub max_string_chars: usize,
    /// Only the newest this many breadcrumbs are kept. Sentry: 100.
    pub max_breadcrumbs: usize,
    /// A stack trace keeps at most this many frames: the first and the last
    /// halves, dropping the middle (deep recursion repeats itself there).
    /// Relay: 250.
    pub max_frames: usize,
    /// Containers nested deeper than this inside `extra`, `contexts`,
    /// `request.data`, breadcrumb `data` and frame `vars` are replaced by
    /// their JSON text. Relay's largest data bags: 7.
    pub max_databag_depth: usize,
    /// Events dated further than this many seconds after their arrival get
    /// the arrival time. Relay: 60.
    pub max_secs_in_future: i64,
    /// Events dated further than this many seconds before their arrival get
    /// the arrival time. Relay: 30 days.
    pub max_secs_in_past: i64,
    /// A client clock this many seconds or more off the endpoint's (from the
    /// envelope's `sent_at`) is corrected; smaller drift is network delay.
    /// Relay: 55 minutes.
    pub min_clock_drift_secs: i64,
}

impl Default for NormalizeLimits {
    fn default() -> Self {
        NormalizeLimits {
            max_tag_value_chars: 200,
            max_tag_key_chars: 200,
            max_string_chars: MAX_STRING_CHARS,
            max_breadcrumbs: 100,
            max_frames: 250,
            max_databag_depth: 7,
            max_secs_in_future: 60,
            max_secs_in_past: 30 * 24 * 3600,
            min_clock_drift_secs: 55 * 60,
        }
    }
}

/// What normalisation needs to know besides the event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NormalizeContext {
    /// When the endpoint received the event, in nanoseconds since the epoch.
    pub received_ns: i64,
    /// The envelope header's `sent_at`, in nanoseconds since the epoch, when
    /// the client sent one: the difference to `received_ns` is the client's
    /// clock drift.
    pub sent_at_ns: Option<i64>,
    /// The client's address as the endpoint determined it (the peer, or a
    /// trusted proxy's forwarded address).
    pub client_ip: Option<IpAddr>,
    /// The id to give an event whose own `event_id` is missing or invalid:
    /// the envelope header's `event_id`, or one the endpoint generated (32
    /// hex digits or a UUID). When this is not a valid id either, an id is
    /// derived from the event's content and `received_ns`, so that retries
    /// of one event still share an id.
    pub fallback_event_id: String,
    /// Size and time limits.
    pub limits: NormalizeLimits,
}

/// The facts about a normalised event that the pipeline needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The event id: 32 lowercase hex digits.
    pub event_id: String,
    /// The event time, in nanoseconds since the epoch (microsecond precision,
    /// like the `timestamp` written into the event).
    pub timestamp_ns: i64,
    /// The event level on mecha's scale.
    pub level: Severity,
    /// The platform (`python`, `javascript`, `node`, ..., `other`).
    pub platform: String,
    /// Who the event happened to, as Sentry's `user` tag names them:
    /// `id:...`, `username:...`, `email:...` or `ip:...`, the first the
    /// event has. This counts "users affected". Taken before scrubbing: when
    /// IP addresses are scrubbed, recompute it with [`user_key`] on the
    /// scrubbed event.
    pub user_key: Option<String>,
    /// The `release`, when the event names one.
    pub release: Option<String>,
    /// The `environment`, when the event names one.
    pub environment: Option<String>,
}

/// Platforms Sentry knows; any other value becomes `other` (Relay's list).
const PLATFORMS: &[&str] = &[
    "as3",
    "c",
    "cfml",
    "cocoa",
    "csharp",
    "elixir",
    "haskell",
    "go",
    "groovy",
    "java",
    "javascript",
    "native",
    "node",
    "objc",
    "other",
    "perl",
    "php",
    "python",
    "ruby",
];

/// Platforms whose SDKs run on the user's device, so that the client's
/// address is the user's even when the event does not say `{{auto}}`
/// (Relay's rule).
const DEVICE_PLATFORMS: &[&str] = &["javascript", "cocoa", "objc"];

/// Tag keys Sentry sets itself when it saves an event; a client may not.
const RESERVED_TAGS: &[&str] = &["release", "dist", "user", "filename", "function"];

/// The value SDKs send to ask for the client's address.
const AUTO_IP: &str = "{{auto}}";

const MICROS_PER_SEC: f64 = 1e6;

/// Normalises `event` in place and returns its id, time and level.
pub fn normalize(event: &mut Map<String, Value>, cx: &NormalizeContext) -> Normalized {
    let limits = &cx.limits;
    let event_id = normalize_event_id(event, cx);
    let platform = normalize_platform(event);
    let level = normalize_level(event);
    normalize_logentry(event, limits);
    for (key, alias) in [
        ("exception", Some("sentry.interfaces.Exception")),
        ("breadcrumbs", None),
        ("threads", None),
    ] {
        unify_values(event, key, alias);
    }
    normalize_exceptions(event);
    trim_stacktraces(event, limits.max_frames);
    trim_breadcrumbs(event, limits.max_breadcrumbs);
    normalize_tags(event, limits);
    for key in [
        "release",
        "environment",
        "dist",
        "server_name",
        "transaction",
    ] {
        normalize_short_string(event, key);
    }
    for key in ["user", "request", "contexts", "extra", "sdk"] {
        require_object(event, key);
    }
    normalize_ip_addresses(event, &platform, cx.client_ip);
    let timestamp_ns = normalize_timestamps(event, cx);
    limit_databags(event, limits);
    trim_strings(event, limits.max_string_chars);
    Normalized {
        event_id,
        timestamp_ns,
        level,
        platform,
        user_key: user_key(event),
        release: string_field(event, "release"),
        environment: string_field(event, "environment"),
    }
}

/// Who the event happened to, as Sentry's `user` tag names them (`id:42`,
/// `username:ana`, `email:ana@example.com`, `ip:10.1.2.3`), or `None`.
pub fn user_key(event: &Map<String, Value>) -> Option<String> {
    let user = event.get("user")?.as_object()?;
    let text = |key: &str| match user.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    if let Some(id) = text("id") {
        return Some(format!("id:{id}"));
    }
    if let Some(name) = text("username") {
        return Some(format!("username:{name}"));
    }
    if let Some(email) = text("email") {
        return Some(format!("email:{email}"));
    }
    let ip = user.get("ip_address")?.as_str().and_then(parse_ip)?;
    Some(format!("ip:{ip}"))
}

fn string_field(event: &Map<String, Value>, key: &str) -> Option<String> {
    event
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// An `invalid_data` entry for `errors`.
fn invalid(name: &str, reason: String) -> Value {
    json!({"type": "invalid_data", "name": name, "reason": reason})
}

// ---- event_id ---------------------------------------------------------------

/// A valid event id as 32 lowercase hex digits: 32 hex digits, or a UUID
/// with dashes (8-4-4-4-12), in any case.
pub fn parse_event_id(text: &str) -> Option<String> {
    let t = text.trim();
    let hex: String = match t.len() {
        32 => t.to_owned(),
        36 => {
            let b = t.as_bytes();
            if [8, 13, 18, 23].iter().any(|&i| b.get(i) != Some(&b'-')) {
                return None;
            }
            t.chars().filter(|&c| c != '-').collect()
        }
        _ => return None,
    };
    (hex.len() == 32 && hex.bytes().all(|c| c.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

fn normalize_event_id(event: &mut Map<String, Value>, cx: &NormalizeContext) -> String {
    let own = event.get("event_id");
    if let Some(id) = own.and_then(Value::as_str).and_then(parse_event_id) {
        event.insert("event_id".into(), Value::String(id.clone()));
        return id;
    }
    if let Some(bad) = own.filter(|v| !v.is_null()) {
        let reason = match bad {
            Value::String(_) => "expected 32 hex digits or a UUID".to_owned(),
            other => format!("expected a string, found {}", type_name(other)),
        };
        push_error(event, invalid("event_id", reason));
    }
    let id = parse_event_id(&cx.fallback_event_id).unwrap_or_else(|| derived_event_id(event, cx));
    event.insert("event_id".into(), Value::String(id.clone()));
    id
}

/// An id derived from the event's content and arrival time, for the case
/// the endpoint gave no usable fallback: deterministic (no randomness in
/// this room), and two different events get different ids.
fn derived_event_id(event: &Map<String, Value>, cx: &NormalizeContext) -> String {
    // FNV-1a, twice with different offsets for 128 bits: not cryptographic,
    // it only has to spread; a hashing crate is not worth it for this.
    let text = serde_json::to_string(event).unwrap_or_default();
    let mut hashes = [0xcbf2_9ce4_8422_2325_u64, 0x6c62_272e_07bb_0142_u64];
    for h in &mut hashes {
        for b in cx.received_ns.to_le_bytes().iter().chain(text.as_bytes()) {
            *h ^= u64::from(*b);
            *h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{:016x}{:016x}", hashes[0], hashes[1])
}

// ---- platform and level -----------------------------------------------------

fn normalize_platform(event: &mut Map<String, Value>) -> String {
    let platform = event
        .get("platform")
        .and_then(Value::as_str)
        .filter(|p| PLATFORMS.contains(p))
        .unwrap_or("other")
        .to_owned();
    event.insert("platform".into(), Value::String(platform.clone()));
    platform
}

/// Reads a Sentry level, with its aliases, case-insensitively: the Sentry
/// name to write back and mecha's severity.
fn parse_level(text: &str) -> Option<(&'static str, Severity)> {
    Some(match text.trim().to_ascii_lowercase().as_str() {
        "fatal" | "critical" => ("fatal", Severity::Fatal),
        "error" => ("error", Severity::Error),
        "warning" | "warn" => ("warning", Severity::Warn),
        "info" | "log" => ("info", Severity::Info),
        "debug" => ("debug", Severity::Debug),
        _ => return None,
    })
}

fn normalize_level(event: &mut Map<String, Value>) -> Severity {
    let parsed = match event.get("level") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let level = parse_level(s);
            if level.is_none() {
                let reason = format!("unknown level {:?}", s.chars().take(32).collect::<String>());
                push_error(event, invalid("level", reason));
            }
            level
        }
        Some(other) => {
            let reason = format!("expected a string, found {}", type_name(other));
            push_error(event, invalid("level", reason));
            None
        }
    };
    // Sentry's default level for an event is `error`.
    let (name, severity) = parsed.unwrap_or(("error", Severity::Error));
    event.insert("level".into(), Value::String(name.to_owned()));
    severity
}

// ---- logentry ---------------------------------------------------------------

/// A scalar as text: strings as they are, anything else as JSON.
fn lenient_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Unifies `message` (a string, or the legacy `sentry.interfaces.Message`
/// object) and `logentry` into `logentry` with a `formatted` text.
fn normalize_logentry(event: &mut Map<String, Value>, limits: &NormalizeLimits) {
    let legacy = event.remove("sentry.interfaces.Message");
    let message = event.remove("message").filter(|m| !m.is_null());
    let mut logentry = match event.remove("logentry").filter(|l| !l.is_null()) {
        Some(l) => l,
        None => match legacy.filter(|l| !l.is_null()).or(message.clone()) {
            Some(l) => l,
            None => return,
        },
    };
    if !matches!(logentry, Value::Object(_)) {
        logentry = match logentry {
            Value::String(s) => json!({ "formatted": s }),
            Value::Array(_) => {
                let reason = "expected an object or a string, found a list".to_owned();
                push_error(event, invalid("logentry", reason));
                return;
            }
            scalar => json!({ "formatted": scalar.to_string() }),
        };
    }
    let Value::Object(entry) = &mut logentry else {
        return;
    };
    for key in ["formatted", "message"] {
        if let Some(v) = entry.get_mut(key)
            && !v.is_string()
            && !v.is_null()
        {
            *v = Value::String(lenient_string(v));
        }
    }
    let has_text = |e: &Map<String, Value>, k: &str| e.get(k).is_some_and(Value::is_string);
    if !has_text(entry, "formatted") {
        if let Some(Value::String(template)) = entry.get("message") {
            let formatted = match entry.get("params") {
                Some(params) => format_params(template, params, limits.max_string_chars),
                None => template.clone(),
            };
            entry.insert("formatted".into(), Value::String(formatted));
        } else if let Some(m) = &message
            && !has_text(entry, "message")
        {
            // Both forms sent: the top-level string fills the logentry.
            entry.insert("formatted".into(), Value::String(lenient_string(m)));
        }
    }
    event.insert("logentry".into(), logentry);
}

/// Fills a logging template's placeholders from `params`, as the SDKs'
/// logging integrations send them: `%s`-style (Python) positionally from a
/// list or `%(name)s` from an object, and `{0}`/`{}` (.NET, Java). Text that
/// cannot be filled is kept as written. The result is at most `max` chars.
fn format_params(template: &str, params: &Value, max: usize) -> String {
    let mut out = String::with_capacity(template.len());
    let mut next = 0usize;
    let mut rest = template;
    while let Some(i) = rest.find(['%', '{']) {
        out.push_str(rest.get(..i).unwrap_or_default());
        rest = rest.get(i..).unwrap_or_default();
        let (consumed, fill) = placeholder(rest, params, &mut next);
        match fill {
            Fill::Param(v) => out.push_str(&lenient_string(v)),
            Fill::Percent => out.push('%'),
            Fill::Verbatim => out.push_str(rest.get(..consumed).unwrap_or_default()),
        }
        rest = rest.get(consumed..).unwrap_or_default();
        // Parameters can be long: stop once the text is past any limit.
        if out.len() > max.saturating_mul(4) {
            rest = "";
        }
    }
    out.push_str(rest);
    cap_chars(&mut out, max);
    out
}

/// What a placeholder of a logging template is replaced with.
enum Fill<'a> {
    /// A parameter's text.
    Param(&'a Value),
    /// `%%`: one percent sign.
    Percent,
    /// Not a placeholder, or one without a parameter: the text as written.
    Verbatim,
}

/// Reads one placeholder at the start of `text` (which starts with `%` or
/// `{`): how many bytes it spans and what replaces it.
fn placeholder<'a>(text: &str, params: &'a Value, next: &mut usize) -> (usize, Fill<'a>) {
    let b = text.as_bytes();
    let mut take_next = |len: usize| match params.as_array().and_then(|p| p.get(*next)) {
        Some(v) => {
            *next += 1;
            (len, Fill::Param(v))
        }
        None => (len, Fill::Verbatim),
    };
    match b {
        [b'%', b'%', ..] => (2, Fill::Percent),
        [b'%', b'(', ..] => match text.find(')') {
            Some(close) if b.get(close + 1).is_some_and(u8::is_ascii_alphabetic) => {
                let name = text.get(2..close).unwrap_or_default();
                match params.get(name) {
                    Some(v) if params.is_object() => (close + 2, Fill::Param(v)),
                    _ => (close + 2, Fill::Verbatim),
                }
            }
            _ => (1, Fill::Verbatim),
        },
        [b'%', c, ..] if b"sdirfxXgeoc".contains(c) => take_next(2),
        [b'{', b'}', ..] => take_next(2),
        [b'{', ..] => {
            let index = text
                .find('}')
                .filter(|&close| close <= 4)
                .and_then(|close| Some((close, text.get(1..close)?.parse::<usize>().ok()?)));
            match index.and_then(|(close, i)| Some((close, params.as_array()?.get(i)?))) {
                Some((close, v)) => (close + 1, Fill::Param(v)),
                None => (1, Fill::Verbatim),
            }
        }
        _ => (1, Fill::Verbatim),
    }
}

// ---- list fields, exceptions and stack traces -------------------------------

/// Unifies a list field sent as `{"values": [...]}` or as a bare list into
/// the first form, dropping items that are not objects. Other shapes are
/// removed with an error.
fn unify_values(event: &mut Map<String, Value>, key: &str, alias: Option<&str>) {
    let alias_value = alias.and_then(|a| event.remove(a));
    let Some(raw) = event.remove(key).or(alias_value) else {
        return;
    };
    let mut container = match raw {
        Value::Null => return,
        Value::Array(items) => json!({ "values": items }),
        Value::Object(o) if o.get("values").is_some_and(Value::is_array) => Value::Object(o),
        // A single exception or thread sent without a list around it.
        Value::Object(o) if key != "breadcrumbs" && !o.contains_key("values") => {
            json!({ "values": [o] })
        }
        other => {
            let reason = format!(
                "expected {{\"values\": [...]}} or a list, found {}",
                type_name(&other)
            );
            push_error(event, invalid(key, reason));
            return;
        }
    };
    if let Some(Value::Array(items)) = container.get_mut("values") {
        let before = items.len();
        items.retain(Value::is_object);
        if items.len() != before {
            let reason = format!("{} items are not objects", before - items.len());
            push_error(event, invalid(&format!("{key}.values"), reason));
        }
    }
    event.insert(key.to_owned(), container);
}

fn values_mut<'a>(event: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Vec<Value>> {
    event.get_mut(key)?.get_mut("values")?.as_array_mut()
}

/// Exception `type` and `value` as text; a lone exception takes over a
/// top-level `stacktrace` (Relay does the same).
fn normalize_exceptions(event: &mut Map<String, Value>) {
    let top_stacktrace = event.get("stacktrace").is_some_and(Value::is_object);
    let Some(values) = values_mut(event, "exception") else {
        return;
    };
    for exc in values.iter_mut() {
        for key in ["type", "value"] {
            if let Some(v) = exc.get_mut(key)
                && !v.is_string()
                && !v.is_null()
            {
                *v = Value::String(lenient_string(v));
            }
        }
    }
    let lone_without_stack = values.len() == 1
        && values
            .first()
            .is_some_and(|e| e.get("stacktrace").is_none_or(Value::is_null));
    if top_stacktrace
        && lone_without_stack
        && let Some(st) = event.remove("stacktrace")
        && let Some(Value::Object(exc)) = values_mut(event, "exception").and_then(|v| v.first_mut())
    {
        exc.insert("stacktrace".into(), st);
    }
}

/// Every stack trace of the event, with the path to name it in errors.
fn stacktraces_mut(event: &mut Map<String, Value>) -> Vec<(String, &mut Value)> {
    let mut out = Vec::new();
    for (key, value) in event.iter_mut() {
        match key.as_str() {
            "stacktrace" => out.push((key.clone(), value)),
            "exception" | "threads" => {
                let Some(items) = value.get_mut("values").and_then(Value::as_array_mut) else {
                    continue;
                };
                for (i, item) in items.iter_mut().enumerate() {
                    let Value::Object(item) = item else { continue };
                    for (sk, st) in item.iter_mut() {
                        if sk == "stacktrace" || sk == "raw_stacktrace" {
                            out.push((format!("{key}.values.{i}.{sk}"), st));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Keeps at most `max` frames per stack trace: the first and the last ones.
fn trim_stacktraces(event: &mut Map<String, Value>, max: usize) {
    let mut trimmed = Vec::new();
    for (name, st) in stacktraces_mut(event) {
        let Some(frames) = st.get_mut("frames").and_then(Value::as_array_mut) else {
            continue;
        };
        let len = frames.len();
        if len > max {
            let head = max / 2;
            frames.drain(head..len - (max - head));
            trimmed.push(json!({
                "type": "value_too_long",
                "name": format!("{name}.frames"),
                "original_length": len,
            }));
        }
    }
    for entry in trimmed {
        push_error(event, entry);
    }
}

/// Keeps the newest `max` breadcrumbs (SDKs append, so the last ones).
fn trim_breadcrumbs(event: &mut Map<String, Value>, max: usize) {
    let Some(crumbs) = values_mut(event, "breadcrumbs") else {
        return;
    };
    let len = crumbs.len();
    if len > max {
        crumbs.drain(..len - max);
        let entry = json!({
            "type": "value_too_long",
            "name": "breadcrumbs.values",
            "original_length": len,
        });
        push_error(event, entry);
    }
}

// ---- tags -------------------------------------------------------------------

/// Tags as a list of `[key, value]` string pairs: values stringified,
/// reserved and duplicate keys dropped (the first wins), empty or over-long
/// keys and empty or multi-line values dropped with an error, long values
/// cut. An `environment` tag becomes the event's environment when it has
/// none; `server_name` and `site` are also offered as tags.
fn normalize_tags(event: &mut Map<String, Value>, limits: &NormalizeLimits) {
    let raw = event.remove("tags");
    let mut entries: Vec<(String, Value)> = Vec::new();
    match &raw {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => entries.extend(o.iter().map(|(k, v)| (k.clone(), v.clone()))),
        Some(Value::Array(items)) => {
            let pairs = pairs_of(raw.as_ref().unwrap_or(&Value::Null));
            if pairs.len() != items.len() {
                let reason = format!(
                    "{} entries are not [key, value] pairs",
                    items.len() - pairs.len()
                );
                push_error(event, invalid("tags", reason));
            }
            entries.extend(pairs.into_iter().map(|(k, v)| (k.to_owned(), v.clone())));
        }
        Some(other) => {
            let reason = format!(
                "expected an object or a list of pairs, found {}",
                type_name(other)
            );
            push_error(event, invalid("tags", reason));
        }
    }
    for key in ["server_name", "site"] {
        if let Some(Value::String(v)) = event.get(key) {
            entries.push((key.to_owned(), Value::String(v.clone())));
        }
    }

    let mut tags: Vec<Value> = Vec::with_capacity(entries.len());
    let mut seen: Vec<String> = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let mut value = match value {
            Value::Null => continue,
            Value::String(s) => s,
            other => other.to_string(),
        };
        if key.is_empty() || key.chars().count() > limits.max_tag_key_chars {
            let ty = if key.is_empty() {
                "invalid_data"
            } else {
                "value_too_long"
            };
            push_error(
                event,
                json!({"type": ty, "name": "tags", "reason": "tag key empty or too long"}),
            );
            continue;
        }
        if RESERVED_TAGS.contains(&key.as_str()) || seen.contains(&key) {
            continue;
        }
        if key == "environment" {
            if !event.get("environment").is_some_and(Value::is_string) {
                event.insert("environment".into(), Value::String(value));
            }
            continue;
        }
        if value.is_empty() || value.contains('\n') {
            let reason = "tag value empty or multi-line";
            push_error(
                event,
                json!({"type": "invalid_data", "name": "tags", "key": key, "reason": reason}),
            );
            continue;
        }
        if cap_chars(&mut value, limits.max_tag_value_chars) {
            push_error(
                event,
                json!({"type": "value_too_long", "name": "tags", "key": key}),
            );
        }
        seen.push(key.clone());
        tags.push(json!([key, value]));
    }
    if raw.is_some() || !tags.is_empty() {
        event.insert("tags".into(), Value::Array(tags));
    }
}

/// Fields that must be strings: numbers become text (`"release": 12`),
/// other shapes are removed with an error.
fn normalize_short_string(event: &mut Map<String, Value>, key: &str) {
    match event.get_mut(key) {
        None | Some(Value::String(_)) => {}
        Some(Value::Null) => {
            event.remove(key);
        }
        Some(v @ (Value::Number(_) | Value::Bool(_))) => *v = Value::String(v.to_string()),
        Some(other) => {
            let reason = format!("expected a string, found {}", type_name(other));
            event.remove(key);
            push_error(event, invalid(key, reason));
        }
    }
}

/// Interfaces that must be objects; other shapes are removed with an error.
fn require_object(event: &mut Map<String, Value>, key: &str) {
    match event.get(key) {
        None | Some(Value::Object(_)) => {}
        Some(Value::Null) => {
            event.remove(key);
        }
        Some(other) => {
            let reason = format!("expected an object, found {}", type_name(other));
            event.remove(key);
            push_error(event, invalid(key, reason));
        }
    }
}

// ---- client IP ----------------------------------------------------------------

/// Applies the client's address the way Relay does: `{{auto}}` in
/// `user.ip_address` or `request.env.REMOTE_ADDR` means "the client's
/// address"; a request without `REMOTE_ADDR` gets it; a user without an
/// address takes the SDK's own `REMOTE_ADDR`, or on device platforms
/// (browser, iOS) the client's address.
fn normalize_ip_addresses(
    event: &mut Map<String, Value>,
    platform: &str,
    client_ip: Option<IpAddr>,
) {
    let client = client_ip.map(|ip| Value::String(ip.to_string()));
    let mut sdk_remote_addr = None;
    if let Some(Value::Object(request)) = event.get_mut("request") {
        let env = request
            .entry("env")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(env) = env {
            match env.get("REMOTE_ADDR") {
                Some(Value::String(s)) if s == AUTO_IP => {
                    if let Some(c) = &client {
                        env.insert("REMOTE_ADDR".into(), c.clone());
                    }
                }
                Some(Value::String(s)) => sdk_remote_addr = parse_ip(s),
                _ => {
                    if let Some(c) = &client {
                        env.insert("REMOTE_ADDR".into(), c.clone());
                    }
                }
            }
            if env.is_empty() {
                request.remove("env");
            }
        }
    }
    let user_ip = event
        .get("user")
        .and_then(|u| u.get("ip_address"))
        .filter(|ip| !ip.is_null());
    let fill = match user_ip {
        Some(Value::String(s)) if s == AUTO_IP => client.clone(),
        Some(_) => None,
        None => match sdk_remote_addr {
            Some(ip) => Some(Value::String(ip.to_string())),
            None if DEVICE_PLATFORMS.contains(&platform) => client.clone(),
            None => None,
        },
    };
    if let Some(ip) = fill {
        let user = event
            .entry("user")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(user) = user {
            user.insert("ip_address".into(), ip);
        }
    }
}

// ---- timestamps ---------------------------------------------------------------

/// Reads a Sentry timestamp as microseconds since the epoch: seconds as a
/// number (float or integer) or as text, or RFC 3339 text (UTC when the
/// offset is missing). Out of range, non-finite and other values give `None`.
pub fn parse_timestamp_micros(v: &Value) -> Option<i64> {
    let secs = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => {
            let t = s.trim();
            if let Some(ns) = parse_rfc3339(t.as_bytes(), true) {
                return Some(ns.div_euclid(1000));
            }
            if t.is_empty() || t.len() > 32 || !t.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
                return None;
            }
            t.parse::<f64>().ok()?
        }
        _ => return None,
    };
    // Beyond ±9.2e12 seconds the nanoseconds no longer fit an i64.
    if !secs.is_finite() || secs.abs() >= 9.2e9 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)]
    Some((secs * MICROS_PER_SEC).round() as i64)
}

/// Float seconds with microsecond precision, as Relay writes timestamps.
fn timestamp_value(micros: i64) -> Value {
    #[allow(clippy::cast_precision_loss)]
    let secs = micros as f64 / MICROS_PER_SEC;
    Number::from_f64(secs).map_or(Value::Null, Value::Number)
}

fn rfc3339(micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

/// Decides the event time and writes `timestamp` and `received` back as
/// float seconds; corrects clock drift and clamps times too far off.
fn normalize_timestamps(event: &mut Map<String, Value>, cx: &NormalizeContext) -> i64 {
    let limits = &cx.limits;
    let received = cx.received_ns.div_euclid(1000);
    let mut time = match event.get("timestamp") {
        None | Some(Value::Null) => received,
        Some(v) => match parse_timestamp_micros(v) {
            Some(t) => t,
            None => {
                let reason = format!(
                    "expected seconds since the epoch or RFC 3339, found {}",
                    type_name(v)
                );
                push_error(event, invalid("timestamp", reason));
                received
            }
        },
    };

    // Clock drift: the SDK's clock is off by the difference between when it
    // says it sent the envelope and when it arrived. Applied once: a second
    // pass sees the `clock_drift` error and leaves the times alone.
    let mut shift = 0i64;
    if let Some(sent_at) = cx.sent_at_ns.map(|ns| ns.div_euclid(1000))
        && let Some(drift) = received.checked_sub(sent_at)
        && drift.unsigned_abs()
            >= limits
                .min_clock_drift_secs
                .unsigned_abs()
                .saturating_mul(1_000_000)
        && !has_error(event, "clock_drift")
    {
        shift = drift;
        time = time.saturating_add(drift);
        let entry = json!({
            "type": "clock_drift",
            "name": "timestamp",
            "sdk_time": rfc3339(sent_at),
            "server_time": rfc3339(received),
        });
        push_error(event, entry);
    }

    let future = received.saturating_add(limits.max_secs_in_future.saturating_mul(1_000_000));
    let past = received.saturating_sub(limits.max_secs_in_past.saturating_mul(1_000_000));
    let clamp = if time > future {
        Some("future_timestamp")
    } else if time < past {
        Some("past_timestamp")
    } else {
        None
    };
    if let Some(ty) = clamp {
        let entry = json!({
            "type": ty,
            "name": "timestamp",
            "sdk_time": rfc3339(time),
            "server_time": rfc3339(received),
        });
        push_error(event, entry);
        shift = shift.saturating_add(received.saturating_sub(time));
        time = received;
    }

    event.insert("timestamp".into(), timestamp_value(time));
    event.insert("received".into(), timestamp_value(received));
    shift_other_timestamps(event, shift);
    time.saturating_mul(1000)
}

/// Moves `start_timestamp` and the breadcrumbs' times by `shift`
/// microseconds (the drift correction the event time got), writing each as
/// float seconds.
fn shift_other_timestamps(event: &mut Map<String, Value>, shift: i64) {
    let mut fields: Vec<&mut Value> = Vec::new();
    for (key, value) in event.iter_mut() {
        match key.as_str() {
            "start_timestamp" => fields.push(value),
            "breadcrumbs" => {
                if let Some(crumbs) = value.get_mut("values").and_then(Value::as_array_mut) {
                    fields.extend(crumbs.iter_mut().filter_map(|c| c.get_mut("timestamp")));
                }
            }
            _ => {}
        }
    }
    for field in fields {
        if let Some(t) = parse_timestamp_micros(field) {
            *field = timestamp_value(t.saturating_add(shift));
        }
    }
}

// ---- size limits ---------------------------------------------------------------

/// The data bags of the event: free-form objects SDKs fill.
fn databags_mut(event: &mut Map<String, Value>) -> Vec<&mut Value> {
    let mut bags = Vec::new();
    let mut stacktraces = Vec::new();
    for (key, value) in event.iter_mut() {
        match key.as_str() {
            "extra" | "contexts" => bags.push(value),
            "request" => {
                if let Some(data) = value.get_mut("data") {
                    bags.push(data);
                }
            }
            "breadcrumbs" => {
                if let Some(crumbs) = value.get_mut("values").and_then(Value::as_array_mut) {
                    bags.extend(crumbs.iter_mut().filter_map(|c| c.get_mut("data")));
                }
            }
            "stacktrace" => stacktraces.push(value),
            "exception" | "threads" => {
                if let Some(items) = value.get_mut("values").and_then(Value::as_array_mut) {
                    for item in items.iter_mut() {
                        if let Value::Object(item) = item {
                            for (k, st) in item.iter_mut() {
                                if k == "stacktrace" || k == "raw_stacktrace" {
                                    stacktraces.push(st);
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    for st in stacktraces {
        if let Some(frames) = st.get_mut("frames").and_then(Value::as_array_mut) {
            bags.extend(frames.iter_mut().filter_map(|f| f.get_mut("vars")));
        }
    }
    bags
}

/// Nesting depth of `v` (a scalar is 0), counted without recursion and
/// giving up past `limit`.
fn depth_within(v: &Value, limit: usize) -> Option<usize> {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        let d = d + 1;
        if d > limit {
            return None;
        }
        deepest = deepest.max(d);
        stack.extend(children.map(|c| (c, d)));
    }
    Some(deepest)
}

/// Text for a container nested too deep, or too large to keep as text.
const TOO_DEEP: &str = "[nested too deep]";

/// Replaces containers nested `max_databag_depth` deep in a data bag by
/// their JSON text (when it fits `max_string_chars`, else a marker), as
/// Relay does, so that no bag is deeper than the limit.
fn limit_databags(event: &mut Map<String, Value>, limits: &NormalizeLimits) {
    // serde_json's own parser stops at 128 levels; a subtree is written as
    // text only up to that depth, so writing it never recurses further.
    const MAX_TEXT_DEPTH: usize = 128;
    for bag in databags_mut(event) {
        let mut stack: Vec<(&mut Value, usize)> = vec![(bag, 0)];
        while let Some((v, depth)) = stack.pop() {
            if !(v.is_object() || v.is_array()) {
                continue;
            }
            if depth >= limits.max_databag_depth {
                let text = depth_within(v, MAX_TEXT_DEPTH)
                    .and_then(|_| serde_json::to_string(v).ok())
                    .filter(|t| t.chars().count() <= limits.max_string_chars);
                *v = Value::String(text.unwrap_or_else(|| TOO_DEEP.to_owned()));
                continue;
            }
            match v {
                Value::Array(a) => stack.extend(a.iter_mut().map(|c| (c, depth + 1))),
                Value::Object(o) => stack.extend(o.values_mut().map(|c| (c, depth + 1))),
                _ => {}
            }
        }
    }
}

/// Cuts every string of the event to `max` chars, walking without
/// recursion so that no nesting depth can exhaust the stack.
fn trim_strings(event: &mut Map<String, Value>, max: usize) {
    let mut stack: Vec<&mut Value> = event.values_mut().collect();
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) => {
                cap_chars(s, max);
            }
            Value::Array(a) => stack.extend(a.iter_mut()),
            Value::Object(o) => stack.extend(o.values_mut()),
            _ => {}
        }
    }
}
