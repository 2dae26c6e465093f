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
    MAX_STRING_CHARS, MAX_TAG_VALUE_CHARS, cap_chars, drop_flat, has_error, parse_ip, push_error,
    set, to_json_text, type_name,
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
            max_tag_value_chars: MAX_TAG_VALUE_CHARS,
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
    // Before the tags: `server_name` becomes a tag as text.
    for key in [
        "release",
        "environment",
        "dist",
        "server_name",
        "transaction",
    ] {
        normalize_short_string(event, key);
    }
    normalize_tags(event, limits);
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
    let mut hex: String = match t.len() {
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
    if hex.len() != 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    hex.make_ascii_lowercase();
    Some(hex)
}

fn normalize_event_id(event: &mut Map<String, Value>, cx: &NormalizeContext) -> String {
    let own = event.get("event_id");
    if let Some(id) = own.and_then(Value::as_str).and_then(parse_event_id) {
        set(event, "event_id", Value::String(id.clone()));
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
    set(event, "event_id", Value::String(id.clone()));
    id
}

/// An id derived from the event's content and arrival time, for the case
/// the endpoint gave no usable fallback: deterministic (no randomness in
/// this room), and two different events get different ids.
fn derived_event_id(event: &Map<String, Value>, cx: &NormalizeContext) -> String {
    // FNV-1a, twice with different offsets for 128 bits: not cryptographic,
    // it only has to spread; a hashing crate is not worth it for this.
    let text: String = event
        .iter()
        .map(|(k, v)| format!("{k}={}", to_json_text(v).unwrap_or_default()))
        .collect();
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
    set(event, "platform", Value::String(platform.clone()));
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
    set(event, "level", Value::String(name.to_owned()));
    severity
}

// ---- logentry ---------------------------------------------------------------

/// A scalar as text: strings as they are, anything else as JSON.
fn lenient_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => to_json_text(other).unwrap_or_else(|| TOO_DEEP.to_owned()),
    }
}

/// Unifies `message` (a string, or the legacy `sentry.interfaces.Message`
/// object) and `logentry` into `logentry` with a `formatted` text.
fn normalize_logentry(event: &mut Map<String, Value>, limits: &NormalizeLimits) {
    let legacy = event.remove("sentry.interfaces.Message");
    let mut message = event.remove("message").filter(|m| !m.is_null());
    let mut logentry = match event.remove("logentry").filter(|l| !l.is_null()) {
        Some(l) => l,
        None => match legacy.filter(|l| !l.is_null()).or_else(|| message.take()) {
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
        } else if let Some(Value::String(m)) = &message {
            // Both forms sent: the top-level string fills the logentry.
            entry.insert("formatted".into(), Value::String(m.clone()));
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
    // The form SDKs send most, and every event normalised once has, stays
    // where it is rather than being taken out and put back.
    let unified = !alias.is_some_and(|a| event.contains_key(a))
        && event
            .get(key)
            .and_then(|v| v.get("values"))
            .is_some_and(Value::is_array);
    if !unified {
        let alias_value = alias.and_then(|a| event.remove(a));
        let Some(raw) = event.remove(key).or(alias_value) else {
            return;
        };
        let container = match raw {
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
        event.insert(key.to_owned(), container);
    }
    if let Some(items) = values_mut(event, key) {
        let before = items.len();
        items.retain(Value::is_object);
        let dropped = before - items.len();
        if dropped > 0 {
            let reason = format!("{dropped} items are not objects");
            push_error(event, invalid(&format!("{key}.values"), reason));
        }
    }
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

/// Where a stack trace sits in the event: `stacktrace`, or the
/// `stacktrace`/`raw_stacktrace` of an exception's or thread's item.
struct StackPath<'e> {
    key: &'e str,
    item: Option<(usize, &'e str)>,
}

impl StackPath<'_> {
    /// The path as errors name it (`exception.values.0.stacktrace`); made
    /// only for the errors that need it.
    fn name(&self) -> String {
        match self.item {
            None => self.key.to_owned(),
            Some((i, field)) => format!("{}.values.{i}.{field}", self.key),
        }
    }
}

/// Every stack trace of the event, with where it sits.
fn stacktraces_mut(event: &mut Map<String, Value>) -> Vec<(StackPath<'_>, &mut Value)> {
    let mut out = Vec::new();
    for (key, value) in event.iter_mut() {
        match key.as_str() {
            "stacktrace" => out.push((StackPath { key, item: None }, value)),
            "exception" | "threads" => {
                let Some(items) = value.get_mut("values").and_then(Value::as_array_mut) else {
                    continue;
                };
                for (i, item) in items.iter_mut().enumerate() {
                    let Value::Object(item) = item else { continue };
                    for (field, st) in item.iter_mut() {
                        if field == "stacktrace" || field == "raw_stacktrace" {
                            let item = Some((i, field.as_str()));
                            out.push((StackPath { key, item }, st));
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
    for (path, st) in stacktraces_mut(event) {
        let Some(frames) = st.get_mut("frames").and_then(Value::as_array_mut) else {
            continue;
        };
        let len = frames.len();
        if len > max {
            let head = max / 2;
            frames.drain(head..len - (max - head));
            trimmed.push(json!({
                "type": "value_too_long",
                "name": format!("{}.frames", path.name()),
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
    let had_tags = matches!(raw, Some(Value::Object(_) | Value::Array(_)));
    // Taken out of the event, so the entries move rather than copy.
    let mut entries: Vec<(String, Value)> = Vec::new();
    match raw {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => entries.extend(o),
        Some(Value::Array(items)) => {
            let all = items.len();
            entries.extend(items.into_iter().filter_map(|item| match item {
                Value::Array(pair) => match <[Value; 2]>::try_from(pair) {
                    Ok([Value::String(k), v]) => Some((k, v)),
                    _ => None,
                },
                _ => None,
            }));
            if entries.len() != all {
                let reason = format!("{} entries are not [key, value] pairs", all - entries.len());
                push_error(event, invalid("tags", reason));
            }
        }
        Some(other) => {
            let reason = format!(
                "expected an object or a list of pairs, found {}",
                type_name(&other)
            );
            push_error(event, invalid("tags", reason));
        }
    }
    for key in ["server_name", "site"] {
        match event.get(key) {
            // A host or site name is one line. A multi-line one would be
            // dropped as a tag now and offered again once scrubbing has
            // made it one line: it goes, so normalising twice changes
            // nothing more.
            Some(Value::String(v)) if v.contains('\n') => {
                event.remove(key);
                let reason = "expected one line of text, found several";
                push_error(event, invalid(key, reason.to_owned()));
            }
            Some(Value::String(v)) => entries.push((key.to_owned(), Value::String(v.clone()))),
            _ => {}
        }
    }

    let mut tags: Vec<Value> = Vec::with_capacity(entries.len());
    let mut seen: Vec<String> = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let mut value = match value {
            Value::Null => continue,
            Value::String(s) => s,
            other => lenient_string(&other),
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
        tags.push(Value::Array(vec![Value::String(key), Value::String(value)]));
    }
    if had_tags || !tags.is_empty() {
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
    // Written as text only where it is used; most events name their own.
    let client = || client_ip.map(|ip| Value::String(ip.to_string()));
    let mut sdk_remote_addr = None;
    if let Some(Value::Object(request)) = event.get_mut("request") {
        let env = request
            .entry("env")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(env) = env {
            match env.get("REMOTE_ADDR") {
                Some(Value::String(s)) if s == AUTO_IP => {
                    if let Some(c) = client() {
                        env.insert("REMOTE_ADDR".into(), c);
                    }
                }
                // The client's own address here is what this rule wrote on
                // an earlier pass (or the SDK saw the same peer): it is not
                // the end user's, so it does not name the user.
                Some(Value::String(s)) => {
                    sdk_remote_addr = parse_ip(s).filter(|ip| Some(*ip) != client_ip)
                }
                _ => {
                    if let Some(c) = client() {
                        env.insert("REMOTE_ADDR".into(), c);
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
        Some(Value::String(s)) if s == AUTO_IP => client(),
        Some(_) => None,
        None => match sdk_remote_addr {
            Some(ip) => Some(Value::String(ip.to_string())),
            None if DEVICE_PLATFORMS.contains(&platform) => client(),
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

    set(event, "timestamp", timestamp_value(time));
    set(event, "received", timestamp_value(received));
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

/// Text for a container nested too deep, or too large to keep as text.
const TOO_DEEP: &str = "[nested too deep]";

/// Replaces containers nested `max_databag_depth` deep in a data bag by
/// their JSON text (when it fits `max_string_chars`, else a marker), as
/// Relay does, so that no bag is deeper than the limit.
fn limit_databags(event: &mut Map<String, Value>, limits: &NormalizeLimits) {
    let mut stack: Vec<(&mut Value, usize)> = Vec::with_capacity(64);
    for bag in databags_mut(event) {
        stack.push((bag, 0));
        while let Some((v, depth)) = stack.pop() {
            if !(v.is_object() || v.is_array()) {
                continue;
            }
            if depth >= limits.max_databag_depth {
                let text = to_json_text(v).filter(|t| t.chars().count() <= limits.max_string_chars);
                let text = Value::String(text.unwrap_or_else(|| TOO_DEEP.to_owned()));
                drop_flat(std::mem::replace(v, text));
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sentry::value::drop_flat;

    /// 2024-01-15T10:20:30Z.
    const RECEIVED_NS: i64 = 1_705_314_030_000_000_000;
    const RECEIVED_SECS: f64 = 1_705_314_030.0;
    const FALLBACK: &str = "0123456789abcdef0123456789abcdef";

    fn cx() -> NormalizeContext {
        NormalizeContext {
            received_ns: RECEIVED_NS,
            sent_at_ns: None,
            client_ip: Some("203.0.113.7".parse().unwrap()),
            fallback_event_id: FALLBACK.into(),
            limits: NormalizeLimits::default(),
        }
    }

    fn run(event: Value) -> (Map<String, Value>, Normalized) {
        run_with(event, &cx())
    }

    fn run_with(event: Value, cx: &NormalizeContext) -> (Map<String, Value>, Normalized) {
        let Value::Object(mut map) = event else {
            panic!("test events are objects")
        };
        let n = normalize(&mut map, cx);
        (map, n)
    }

    fn error_types(event: &Map<String, Value>) -> Vec<String> {
        event
            .get("errors")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|e| {
                        Some(format!("{}:{}", e["type"].as_str()?, e["name"].as_str()?))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn valid_event_ids_are_kept_as_lowercase_hex() {
        let (e, n) = run(json!({"event_id": "FC6D8C0C43FC4630AD850EE518F1B9D0"}));
        assert_eq!(n.event_id, "fc6d8c0c43fc4630ad850ee518f1b9d0");
        assert_eq!(e["event_id"], "fc6d8c0c43fc4630ad850ee518f1b9d0");
        let (_, n) = run(json!({"event_id": "fc6d8c0c-43fc-4630-ad85-0ee518f1b9d0"}));
        assert_eq!(n.event_id, "fc6d8c0c43fc4630ad850ee518f1b9d0");
    }

    #[test]
    fn missing_or_invalid_event_id_takes_the_fallback() {
        let (e, n) = run(json!({}));
        assert_eq!(n.event_id, FALLBACK);
        assert!(error_types(&e).is_empty());
        for bad in [
            json!("nope"),
            json!(42),
            json!("fc6d8c0c43fc4630ad850ee518f1b9dz"),
        ] {
            let (e, n) = run(json!({ "event_id": bad }));
            assert_eq!(n.event_id, FALLBACK);
            assert_eq!(error_types(&e), ["invalid_data:event_id"]);
        }
    }

    #[test]
    fn without_a_usable_fallback_the_id_is_derived_from_the_event() {
        let mut c = cx();
        c.fallback_event_id = String::new();
        let (_, a) = run_with(json!({"message": "a"}), &c);
        let (_, a2) = run_with(json!({"message": "a"}), &c);
        let (_, b) = run_with(json!({"message": "b"}), &c);
        assert_eq!(
            parse_event_id(&a.event_id).as_deref(),
            Some(a.event_id.as_str())
        );
        assert_eq!(a.event_id, a2.event_id);
        assert_ne!(a.event_id, b.event_id);
    }

    #[test]
    fn timestamps_are_read_in_every_sdk_form() {
        for (ts, secs) in [
            (json!(1_705_314_000.5), 1_705_314_000.5),
            (json!(1_705_314_000), 1_705_314_000.0),
            (json!("2024-01-15T10:20:00.500Z"), 1_705_314_000.5),
            (json!("2024-01-15T18:20:00.5+08:00"), 1_705_314_000.5),
            (json!("2024-01-15T10:20:00"), 1_705_314_000.0),
            (json!("1705314000.5"), 1_705_314_000.5),
        ] {
            let (e, n) = run(json!({ "timestamp": ts.clone() }));
            assert_eq!(e["timestamp"].as_f64(), Some(secs), "{ts}");
            #[allow(clippy::cast_possible_truncation)]
            let ns = (secs * 1e9) as i64;
            assert_eq!(n.timestamp_ns, ns, "{ts}");
            assert_eq!(e["received"].as_f64(), Some(RECEIVED_SECS));
            assert!(error_types(&e).is_empty(), "{ts}");
        }
    }

    #[test]
    fn missing_timestamp_is_the_arrival_time() {
        let (e, n) = run(json!({}));
        assert_eq!(n.timestamp_ns, RECEIVED_NS);
        assert_eq!(e["timestamp"].as_f64(), Some(RECEIVED_SECS));
        assert!(error_types(&e).is_empty());
    }

    #[test]
    fn unreadable_timestamps_are_the_arrival_time_with_an_error() {
        for bad in [
            json!("garbage"),
            json!("NaN"),
            json!(1e300),
            json!(-1e300),
            json!(true),
            json!({}),
        ] {
            let (e, n) = run(json!({ "timestamp": bad.clone() }));
            assert_eq!(n.timestamp_ns, RECEIVED_NS, "{bad}");
            assert_eq!(error_types(&e), ["invalid_data:timestamp"], "{bad}");
        }
    }

    #[test]
    fn future_and_past_timestamps_are_clamped_with_relays_errors() {
        let (e, n) = run(json!({"timestamp": RECEIVED_SECS + 61.0}));
        assert_eq!(n.timestamp_ns, RECEIVED_NS);
        assert_eq!(error_types(&e), ["future_timestamp:timestamp"]);
        assert_eq!(e["errors"][0]["server_time"], "2024-01-15T10:20:30Z");
        assert_eq!(e["errors"][0]["sdk_time"], "2024-01-15T10:21:31Z");

        let (e, n) = run(json!({"timestamp": RECEIVED_SECS - 31.0 * 86_400.0}));
        assert_eq!(n.timestamp_ns, RECEIVED_NS);
        assert_eq!(error_types(&e), ["past_timestamp:timestamp"]);

        let (e, _) = run(json!({"timestamp": RECEIVED_SECS + 59.0}));
        assert!(error_types(&e).is_empty());
        let (e, _) = run(json!({"timestamp": RECEIVED_SECS - 29.0 * 86_400.0}));
        assert!(error_types(&e).is_empty());
    }

    #[test]
    fn clock_drift_of_an_hour_is_corrected_once() {
        // The client's clock is two hours behind: it stamped the event and
        // the envelope two hours early.
        let mut c = cx();
        c.sent_at_ns = Some(RECEIVED_NS - 7200 * 1_000_000_000);
        let event = json!({
            "timestamp": RECEIVED_SECS - 7200.0 - 5.0,
            "breadcrumbs": [{"timestamp": RECEIVED_SECS - 7200.0 - 10.0, "message": "m"}],
        });
        let (mut e, n) = run_with(event, &c);
        assert_eq!(n.timestamp_ns, RECEIVED_NS - 5_000_000_000);
        assert_eq!(
            e["breadcrumbs"]["values"][0]["timestamp"].as_f64(),
            Some(RECEIVED_SECS - 10.0)
        );
        assert_eq!(error_types(&e), ["clock_drift:timestamp"]);
        let again = normalize(&mut e, &c);
        assert_eq!(again.timestamp_ns, n.timestamp_ns);
        assert_eq!(
            e["breadcrumbs"]["values"][0]["timestamp"].as_f64(),
            Some(RECEIVED_SECS - 10.0)
        );
    }

    #[test]
    fn small_clock_drift_is_network_delay_and_left_alone() {
        let mut c = cx();
        c.sent_at_ns = Some(RECEIVED_NS - 54 * 60 * 1_000_000_000);
        let (e, n) = run_with(json!({"timestamp": RECEIVED_SECS - 54.0 * 60.0}), &c);
        assert_eq!(n.timestamp_ns, RECEIVED_NS - 54 * 60 * 1_000_000_000);
        assert!(error_types(&e).is_empty());
    }

    #[test]
    fn levels_default_to_error_and_aliases_map() {
        for (level, sentry, severity) in [
            (json!(null), "error", Severity::Error),
            (json!("WARN"), "warning", Severity::Warn),
            (json!("warning"), "warning", Severity::Warn),
            (json!("Critical"), "fatal", Severity::Fatal),
            (json!("fatal"), "fatal", Severity::Fatal),
            (json!("log"), "info", Severity::Info),
            (json!("info"), "info", Severity::Info),
            (json!("debug"), "debug", Severity::Debug),
        ] {
            let (e, n) = run(json!({ "level": level.clone() }));
            assert_eq!(e["level"], sentry, "{level}");
            assert_eq!(n.level, severity, "{level}");
            assert!(error_types(&e).is_empty());
        }
        let (e, n) = run(json!({}));
        assert_eq!(
            (e["level"].as_str(), n.level),
            (Some("error"), Severity::Error)
        );
        for bad in [json!("verbose"), json!(3)] {
            let (e, n) = run(json!({ "level": bad }));
            assert_eq!(n.level, Severity::Error);
            assert_eq!(error_types(&e), ["invalid_data:level"]);
        }
    }

    #[test]
    fn platform_defaults_to_other() {
        assert_eq!(run(json!({})).1.platform, "other");
        assert_eq!(run(json!({"platform": "cobol"})).1.platform, "other");
        assert_eq!(run(json!({"platform": "python"})).0["platform"], "python");
    }

    #[test]
    fn a_string_message_becomes_logentry_formatted() {
        let (e, _) = run(json!({"message": "disk full"}));
        assert_eq!(e["logentry"], json!({"formatted": "disk full"}));
        assert!(e.get("message").is_none());
        let (e, _) = run(json!({"logentry": "as a string"}));
        assert_eq!(e["logentry"], json!({"formatted": "as a string"}));
    }

    #[test]
    fn logentry_params_fill_the_formatted_text() {
        let (e, _) =
            run(json!({"logentry": {"message": "user %s paid %d%%", "params": ["ana", 12]}}));
        assert_eq!(e["logentry"]["formatted"], "user ana paid 12%");
        assert_eq!(e["logentry"]["message"], "user %s paid %d%%");
        let (e, _) = run(json!({"logentry": {"message": "%(who)s left", "params": {"who": "bo"}}}));
        assert_eq!(e["logentry"]["formatted"], "bo left");
        let (e, _) = run(json!({"logentry": {"message": "{0} of {1} {2}", "params": ["1", 2]}}));
        assert_eq!(e["logentry"]["formatted"], "1 of 2 {2}");
        let (e, _) = run(json!({"logentry": {"message": "kept", "formatted": "given"}}));
        assert_eq!(e["logentry"]["formatted"], "given");
    }

    #[test]
    fn exception_lists_are_unified_to_values() {
        let exc = json!({"type": "ValueError", "value": "bad"});
        let (e, _) = run(json!({ "exception": [exc.clone()] }));
        assert_eq!(e["exception"], json!({ "values": [exc.clone()] }));
        let (e, _) = run(json!({ "exception": {"values": [exc.clone()]} }));
        assert_eq!(e["exception"], json!({ "values": [exc.clone()] }));
        let (e, _) = run(json!({ "exception": exc.clone() }));
        assert_eq!(e["exception"], json!({ "values": [exc.clone()] }));
        let (e, _) = run(json!({ "breadcrumbs": [{"message": "a"}], "threads": {"values": []} }));
        assert_eq!(e["breadcrumbs"], json!({"values": [{"message": "a"}]}));
        assert_eq!(e["threads"], json!({"values": []}));
    }

    #[test]
    fn malformed_lists_are_removed_with_an_error() {
        let (e, _) = run(json!({"exception": "boom", "breadcrumbs": 3}));
        assert!(e.get("exception").is_none() && e.get("breadcrumbs").is_none());
        assert_eq!(
            error_types(&e),
            ["invalid_data:exception", "invalid_data:breadcrumbs"]
        );
        let (e, _) = run(json!({"exception": [1, {"type": "E"}, "x"]}));
        assert_eq!(e["exception"]["values"], json!([{"type": "E"}]));
        assert_eq!(error_types(&e), ["invalid_data:exception.values"]);
    }

    #[test]
    fn exception_type_and_value_are_text_and_take_a_lone_stacktrace() {
        let st = json!({"frames": [{"function": "f"}]});
        let (e, _) =
            run(json!({"exception": [{"type": 1, "value": {"a": 1}}], "stacktrace": st.clone()}));
        assert_eq!(e["exception"]["values"][0]["type"], "1");
        assert_eq!(e["exception"]["values"][0]["value"], r#"{"a":1}"#);
        assert_eq!(e["exception"]["values"][0]["stacktrace"], st);
        assert!(e.get("stacktrace").is_none());
    }

    #[test]
    fn only_the_newest_breadcrumbs_are_kept() {
        let crumbs: Vec<Value> = (0..150)
            .map(|i| json!({"message": i.to_string()}))
            .collect();
        let (e, _) = run(json!({ "breadcrumbs": {"values": crumbs} }));
        let kept = e["breadcrumbs"]["values"].as_array().unwrap();
        assert_eq!(kept.len(), 100);
        assert_eq!(kept[0]["message"], "50");
        assert_eq!(kept[99]["message"], "149");
        assert_eq!(error_types(&e), ["value_too_long:breadcrumbs.values"]);
    }

    #[test]
    fn long_stack_traces_keep_their_first_and_last_frames() {
        let frames: Vec<Value> = (0..300).map(|i| json!({"lineno": i})).collect();
        let (e, _) = run(
            json!({"exception": [{"type": "RecursionError", "stacktrace": {"frames": frames}}]}),
        );
        let kept = e["exception"]["values"][0]["stacktrace"]["frames"]
            .as_array()
            .unwrap();
        assert_eq!(kept.len(), 250);
        assert_eq!(kept[0]["lineno"], 0);
        assert_eq!(kept[124]["lineno"], 124);
        assert_eq!(kept[125]["lineno"], 175);
        assert_eq!(kept[249]["lineno"], 299);
        assert_eq!(
            error_types(&e),
            ["value_too_long:exception.values.0.stacktrace.frames"]
        );
    }

    #[test]
    fn tags_become_string_pairs() {
        let (e, _) = run(json!({"tags": {"b": "x", "a": 1, "c": true, "d": null}}));
        assert_eq!(e["tags"], json!([["a", "1"], ["b", "x"], ["c", "true"]]));
        let (e, _) = run(json!({"tags": [["a", "1"], ["b", 2.5]]}));
        assert_eq!(e["tags"], json!([["a", "1"], ["b", "2.5"]]));
        assert!(error_types(&e).is_empty());
    }

    #[test]
    fn invalid_tags_are_dropped_with_errors() {
        let (e, _) = run(json!({"tags": 42}));
        assert!(e.get("tags").is_none());
        assert_eq!(error_types(&e), ["invalid_data:tags"]);
        let long_key = "k".repeat(201);
        let (e, _) = run(
            json!({"tags": [["ok", "1"], "junk", ["", "x"], [long_key, "x"], ["nl", "a\nb"], ["empty", ""]]}),
        );
        assert_eq!(e["tags"], json!([["ok", "1"]]));
        assert_eq!(
            error_types(&e),
            [
                "invalid_data:tags",
                "invalid_data:tags",
                "value_too_long:tags",
                "invalid_data:tags",
                "invalid_data:tags"
            ]
        );
    }

    #[test]
    fn tag_values_are_capped_on_char_boundaries() {
        let (e, _) = run(json!({"tags": {"t": "é".repeat(300)}}));
        let v = e["tags"][0][1].as_str().unwrap();
        assert_eq!(v.chars().count(), 200);
        assert!(v.ends_with("..."));
        assert_eq!(error_types(&e), ["value_too_long:tags"]);
    }

    #[test]
    fn reserved_and_duplicate_tags_are_dropped_and_environment_moves() {
        let (e, _) = run(json!({
            "tags": [["release", "1"], ["user", "u"], ["a", "1"], ["a", "2"], ["environment", "prod"]],
            "server_name": "web-1",
        }));
        assert_eq!(e["tags"], json!([["a", "1"], ["server_name", "web-1"]]));
        assert_eq!(e["environment"], "prod");
        assert_eq!(e["server_name"], "web-1");
    }

    #[test]
    fn auto_ip_and_browser_events_take_the_client_address() {
        let (e, n) = run(json!({"user": {"id": "7", "ip_address": "{{auto}}"}}));
        assert_eq!(e["user"]["ip_address"], "203.0.113.7");
        assert_eq!(n.user_key.as_deref(), Some("id:7"));
        let (e, n) = run(json!({"platform": "javascript"}));
        assert_eq!(e["user"]["ip_address"], "203.0.113.7");
        assert_eq!(n.user_key.as_deref(), Some("ip:203.0.113.7"));
        // A server SDK's peer is the server, not the user.
        let (e, _) = run(json!({"platform": "python"}));
        assert!(e.get("user").is_none());
        let (e, _) = run(json!({"platform": "javascript", "user": {"ip_address": "198.51.100.1"}}));
        assert_eq!(e["user"]["ip_address"], "198.51.100.1");
    }

    #[test]
    fn requests_get_remote_addr_and_the_sdks_one_names_the_user() {
        let (e, _) = run(json!({"request": {"url": "http://x/"}}));
        assert_eq!(e["request"]["env"]["REMOTE_ADDR"], "203.0.113.7");
        assert!(e.get("user").is_none());
        let (e, _) = run(json!({"request": {"env": {"REMOTE_ADDR": "{{auto}}"}}}));
        assert_eq!(e["request"]["env"]["REMOTE_ADDR"], "203.0.113.7");
        let (e, n) =
            run(json!({"platform": "python", "request": {"env": {"REMOTE_ADDR": "198.51.100.9"}}}));
        assert_eq!(e["request"]["env"]["REMOTE_ADDR"], "198.51.100.9");
        assert_eq!(e["user"]["ip_address"], "198.51.100.9");
        assert_eq!(n.user_key.as_deref(), Some("ip:198.51.100.9"));
    }

    #[test]
    fn normalized_names_release_environment_and_user() {
        let (_, n) = run(
            json!({"release": 12, "environment": "prod", "user": {"email": "a@b.c", "username": "ana"}}),
        );
        assert_eq!(n.release.as_deref(), Some("12"));
        assert_eq!(n.environment.as_deref(), Some("prod"));
        assert_eq!(n.user_key.as_deref(), Some("username:ana"));
    }

    #[test]
    fn interfaces_of_the_wrong_shape_are_removed() {
        let (e, _) = run(json!({"user": "bob", "extra": [1], "release": {"v": 1}}));
        assert!(e.get("user").is_none() && e.get("extra").is_none() && e.get("release").is_none());
        assert_eq!(
            error_types(&e),
            [
                "invalid_data:release",
                "invalid_data:user",
                "invalid_data:extra"
            ]
        );
    }

    #[test]
    fn huge_strings_are_cut_on_char_boundaries() {
        let (e, _) = run(json!({"message": "😀".repeat(10_000), "extra": {"x": "a".repeat(9000)}}));
        let m = e["logentry"]["formatted"].as_str().unwrap();
        assert_eq!(m.chars().count(), 8192);
        assert!(m.starts_with('😀') && m.ends_with("..."));
        assert_eq!(e["extra"]["x"].as_str().unwrap().chars().count(), 8192);
    }

    #[test]
    fn deep_data_bags_are_written_as_text_at_the_depth_limit() {
        let mut deep = json!("leaf");
        for i in 0..9 {
            deep = json!({ format!("k{i}"): deep });
        }
        let (e, _) = run(json!({ "extra": { "bag": deep } }));
        // extra.bag is depth 1, so extra.bag.k8 ... .k3 is depth 7: text.
        let mut v = &e["extra"]["bag"];
        for i in (3..9).rev() {
            v = &v[format!("k{i}")];
        }
        assert_eq!(v.as_str(), Some(r#"{"k2":{"k1":{"k0":"leaf"}}}"#));
    }

    #[test]
    fn nesting_deeper_than_any_parser_allows_does_not_overflow() {
        // Built by hand: `json!` would serialise the value, recursively.
        let mut deep = Value::from(1);
        for _ in 0..100_000 {
            deep = Value::Array(vec![deep]);
        }
        let mut extra = Map::new();
        extra.insert("bag".into(), deep);
        let mut event = Map::new();
        event.insert("extra".into(), Value::Object(extra));
        let (e, _) = run(Value::Object(event));
        let mut v = &e["extra"]["bag"];
        for _ in 1..7 {
            v = &v[0];
        }
        assert_eq!(v.as_str(), Some(TOO_DEEP));
        drop_flat(Value::Object(e));
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        let mut c = cx();
        c.sent_at_ns = Some(RECEIVED_NS - 3 * 3600 * 1_000_000_000);
        let (mut once, n1) = run_with(
            json!({
                "event_id": "FC6D8C0C-43FC-4630-AD85-0EE518F1B9D0",
                "timestamp": "2024-01-15T07:20:29.123456789Z",
                "message": "x",
                "level": "warn",
                "tags": {"a": 1, "long": "v".repeat(300)},
                "exception": [{"type": "E", "value": 3}],
                "breadcrumbs": [{"timestamp": "2024-01-15T07:20:00Z"}],
                "platform": "javascript",
                "request": {"url": "http://x/"},
            }),
            &c,
        );
        let snapshot = once.clone();
        let n2 = normalize(&mut once, &c);
        assert_eq!(once, snapshot);
        assert_eq!(n1, n2);
    }
}
