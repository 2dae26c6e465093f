//! Grouping of error events into issues, compatible with Sentry's default
//! strategy (newstyle:2023-01-11) for the common cases: a custom
//! `fingerprint` (with `{{ default }}` and the usual variables), else the
//! exception chain, else a lone stack trace, else the message with its
//! parameters stripped, else one fallback group.
//!
//! The rules (facts, not code) come from Sentry's grouping documentation and
//! `src/sentry/grouping/strategies/newstyle.py`: per exception its type
//! (unless synthetic), its stack trace (in-app frames only when the event has
//! any, recursion collapsed, see the `frame` module) and its value only when no frame
//! contributes; every exception of a chain contributes. A group is the hash of
//! those components. This module is a pure function of the event JSON: it
//! must not store, index or look at anything but the event.

mod frame;
mod message;

use serde_json::{Map, Value};
use xxhash_rust::xxh3::xxh3_128;

pub use message::{normalize_for_grouping, parameterize};

use frame::{is_javascript, str_field};

/// Longest title, as Sentry cuts it.
const MAX_TITLE_CHARS: usize = 100;
/// Longest culprit, as Sentry cuts it.
const MAX_CULPRIT_CHARS: usize = 200;
/// Title of an event with nothing to show.
const UNLABELED: &str = "<unlabeled event>";

/// Which part of the event decided its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupingMethod {
    /// The event's own `fingerprint`.
    Fingerprint,
    /// The exception chain (types and stack frames, or values without frames).
    Exception,
    /// A stack trace without an exception (top level, or the only thread's).
    Stacktrace,
    /// The message with parameters replaced by placeholders.
    Message,
    /// Nothing usable: every such event of a project shares one group, as in
    /// Sentry.
    Fallback,
}

impl GroupingMethod {
    /// The lowercase name shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupingMethod::Fingerprint => "fingerprint",
            GroupingMethod::Exception => "exception",
            GroupingMethod::Stacktrace => "stacktrace",
            GroupingMethod::Message => "message",
            GroupingMethod::Fallback => "fallback",
        }
    }
}

/// An event's group and how to present it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    /// Stable hash of the grouping components: 32 lowercase hex digits. Two
    /// events with the same hash (in one project) belong to one issue.
    pub hash: String,
    /// The issue title (`TypeError: x is undefined`, or the message).
    pub title: String,
    /// Where it happened (the event's `culprit` or `transaction`, else the
    /// top in-app frame's `module in function`, else the request URL); may
    /// be empty.
    pub culprit: String,
    /// What decided the group.
    pub method: GroupingMethod,
    /// The contributing components, one `path: value` line each, in the
    /// order they were hashed (what a reviewer reads to see why two events
    /// share an issue).
    pub components: Vec<String>,
}

/// Groups `event` (normalised, as forwarded by the agent).
pub fn group(event: &Map<String, Value>) -> Grouping {
    let (method, components) = match custom_fingerprint(event) {
        Some(fp) => (GroupingMethod::Fingerprint, fp),
        None => default_components(event),
    };
    Grouping {
        hash: hash(&components),
        title: title(event),
        culprit: culprit(event),
        method,
        components,
    }
}

/// 32 hex digits of a 128-bit hash over the component lines.
fn hash(components: &[String]) -> String {
    format!("{:032x}", xxh3_128(components.join("\n").as_bytes()))
}

/// The default components: exception chain, else stack trace, else message,
/// else none (fallback).
fn default_components(event: &Map<String, Value>) -> (GroupingMethod, Vec<String>) {
    let platform = str_field(event, "platform").unwrap_or("other");
    let exceptions = exceptions(event);
    let stacks: Vec<&[Value]> = exceptions
        .iter()
        .filter_map(|e| frames_of(e.get("stacktrace")))
        .chain(lone_stacktrace(event))
        .collect();
    // The "app" variant when any frame is in-app, else the "system" one.
    let in_app_only = stacks
        .iter()
        .flat_map(|s| s.iter())
        .any(|f| f.get("in_app").and_then(Value::as_bool) == Some(true));
    let mut out = Vec::new();
    for (i, e) in exceptions.iter().enumerate() {
        exception_components(e, i, platform, in_app_only, &mut out);
    }
    if !out.is_empty() {
        return (GroupingMethod::Exception, out);
    }
    if let Some(frames) = lone_stacktrace(event) {
        stack_components(frames, "stacktrace", platform, in_app_only, &mut out);
        if !out.is_empty() {
            return (GroupingMethod::Stacktrace, out);
        }
    }
    if let Some(m) = message_template(event) {
        let normalized = normalize_for_grouping(m);
        if !normalized.is_empty() {
            return (
                GroupingMethod::Message,
                vec![format!("message: {normalized}")],
            );
        }
    }
    (GroupingMethod::Fallback, Vec::new())
}

/// `exception.values` (oldest first; the last is the one raised last), or
/// `exception` given as a bare list.
fn exceptions(event: &Map<String, Value>) -> Vec<&Map<String, Value>> {
    let list = match event.get("exception") {
        Some(Value::Object(e)) => e.get("values").and_then(Value::as_array),
        Some(Value::Array(a)) => Some(a),
        _ => None,
    };
    list.into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .collect()
}

/// The frames of a stack trace value, if it has any.
fn frames_of(stacktrace: Option<&Value>) -> Option<&[Value]> {
    let frames = stacktrace?.get("frames")?.as_array()?;
    (!frames.is_empty()).then_some(frames.as_slice())
}

/// A stack trace outside any exception: the top-level `stacktrace`, else the
/// stack of the only thread that has one (Sentry ignores threads when there
/// are several).
fn lone_stacktrace(event: &Map<String, Value>) -> Option<&[Value]> {
    if let Some(f) = frames_of(event.get("stacktrace")) {
        return Some(f);
    }
    let threads = match event.get("threads") {
        Some(Value::Object(t)) => t.get("values").and_then(Value::as_array),
        Some(Value::Array(a)) => Some(a),
        _ => None,
    }?;
    match threads.as_slice() {
        [only] => frames_of(only.get("stacktrace")),
        _ => None,
    }
}

/// Adds the components of exception number `i` of the chain.
fn exception_components(
    e: &Map<String, Value>,
    i: usize,
    platform: &str,
    in_app_only: bool,
    out: &mut Vec<String>,
) {
    let start = out.len();
    let prefix = format!("exception[{i}]");
    let synthetic = e
        .get("mechanism")
        .and_then(|m| m.get("synthetic"))
        .and_then(Value::as_bool)
        == Some(true);
    if let Some(frames) = frames_of(e.get("stacktrace")) {
        stack_components(frames, &prefix, platform, in_app_only, out);
    }
    let stack_contributes = out.len() > start;
    if !synthetic && let Some(ty) = str_field(e, "type") {
        out.push(format!("{prefix}.type: {ty}"));
    }
    if !stack_contributes && let Some(value) = str_field(e, "value") {
        let normalized = normalize_for_grouping(value);
        if !normalized.is_empty() {
            out.push(format!("{prefix}.value: {normalized}"));
        }
    }
}

/// Adds the components of a stack trace's frames (oldest first), skipping
/// non-app frames when `in_app_only`, recursive repeats and frames that
/// contribute nothing.
fn stack_components(
    frames: &[Value],
    prefix: &str,
    platform: &str,
    in_app_only: bool,
    out: &mut Vec<String>,
) {
    let mut prev: Option<&Map<String, Value>> = None;
    let mut n = 0;
    for f in frames {
        let Some(f) = f.as_object() else {
            continue;
        };
        let recursion = frame::is_recursion(f, prev);
        prev = Some(f);
        let in_app = f.get("in_app").and_then(Value::as_bool) == Some(true);
        if recursion || (in_app_only && !in_app) {
            continue;
        }
        let values = frame::components(f, platform);
        if values.is_empty() {
            continue;
        }
        for (name, value) in values {
            out.push(format!("{prefix}.frame[{n}].{name}: {value}"));
        }
        n += 1;
    }
}

/// The message to group by: the `logentry` template before it was
/// formatted, else the formatted text, else the legacy `message`.
fn message_template(event: &Map<String, Value>) -> Option<&str> {
    logentry_text(event, ["message", "formatted"])
}

/// The formatted message: `logentry.formatted`, else the template, else the
/// legacy `message` (a string, or an object like `logentry`).
fn formatted_message(event: &Map<String, Value>) -> Option<&str> {
    logentry_text(event, ["formatted", "message"])
}

/// The first of the `logentry` fields `keys` that is set, else the legacy
/// `message`.
fn logentry_text<'a>(event: &'a Map<String, Value>, keys: [&str; 2]) -> Option<&'a str> {
    let entry = event.get("logentry").and_then(Value::as_object);
    keys.iter()
        .find_map(|k| entry.and_then(|l| str_field(l, k)))
        .or_else(|| legacy_message(event))
}

fn legacy_message(event: &Map<String, Value>) -> Option<&str> {
    match event.get("message") {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        Some(Value::Object(m)) => str_field(m, "formatted").or_else(|| str_field(m, "message")),
        _ => None,
    }
}

/// A custom fingerprint's components, or `None` when the event has none or
/// only `{{ default }}`.
fn custom_fingerprint(event: &Map<String, Value>) -> Option<Vec<String>> {
    let entries: Vec<String> = event
        .get("fingerprint")?
        .as_array()?
        .iter()
        .filter_map(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        })
        .collect();
    let is_default = |s: &str| fingerprint_variable(s) == Some("default");
    if entries.is_empty() || entries.iter().all(|e| is_default(e)) {
        return None;
    }
    let mut out = Vec::new();
    if entries.iter().any(|e| is_default(e)) {
        out = default_components(event).1;
    }
    for entry in entries.iter().filter(|e| !is_default(e)) {
        let value = match fingerprint_variable(entry) {
            Some(var) => fingerprint_value(event, var),
            None => entry.clone(),
        };
        out.push(format!("fingerprint: {value}"));
    }
    Some(out)
}

/// The variable name of a `{{ name }}` entry.
fn fingerprint_variable(entry: &str) -> Option<&str> {
    let inner = entry.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    (!inner.is_empty() && !inner.contains(char::is_whitespace)).then_some(inner)
}

/// The value of a fingerprint variable for this event, with Sentry's
/// `<no-...>` stand-ins when the event lacks it; unknown variables stay as
/// written.
fn fingerprint_value(event: &Map<String, Value>, var: &str) -> String {
    let last = exceptions(event).last().copied();
    let or = |v: Option<&str>, none: &str| v.map_or_else(|| none.to_string(), str::to_string);
    match var {
        "transaction" => or(str_field(event, "transaction"), "<no-transaction>"),
        "message" => or(
            formatted_message(event).or_else(|| last.and_then(|e| str_field(e, "value"))),
            "<no-message>",
        ),
        "type" | "error.type" => or(last.and_then(|e| str_field(e, "type")), "<no-type>"),
        "value" | "error.value" => or(last.and_then(|e| str_field(e, "value")), "<no-value>"),
        "function" | "stack.function" => or(
            crash_frame(event).and_then(|f| str_field(f, "function")),
            "<no-function>",
        ),
        "module" | "stack.module" => or(
            crash_frame(event).and_then(|f| str_field(f, "module")),
            "<no-module>",
        ),
        "level" => or(str_field(event, "level"), "<no-level>"),
        "logger" => or(str_field(event, "logger"), "<no-logger>"),
        _ => match var.strip_prefix("tags.") {
            Some(key) => tag(event, key)
                .map(str::to_string)
                .unwrap_or_else(|| format!("<no-value-for-tag-{key}>")),
            None => format!("{{{{ {var} }}}}"),
        },
    }
}

/// The frame that raised: the newest in-app frame of the last exception with
/// a stack, else its newest frame.
fn crash_frame(event: &Map<String, Value>) -> Option<&Map<String, Value>> {
    let frames = exceptions(event)
        .into_iter()
        .rev()
        .find_map(|e| frames_of(e.get("stacktrace")))
        .or_else(|| lone_stacktrace(event))?;
    let objects = || frames.iter().rev().filter_map(Value::as_object);
    objects()
        .find(|f| f.get("in_app").and_then(Value::as_bool) == Some(true))
        .or_else(|| objects().next())
}

/// The value of tag `key`, whether tags are `[[k, v], ...]` pairs or an object.
pub fn tag<'a>(event: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    match event.get("tags")? {
        Value::Object(m) => m.get(key).and_then(Value::as_str),
        Value::Array(pairs) => pairs.iter().find_map(|p| match p.as_array()?.as_slice() {
            [k, v] if k.as_str() == Some(key) => v.as_str(),
            _ => None,
        }),
        _ => None,
    }
}

/// The title Sentry shows: `Type: first line of value` for errors, else the
/// first line of the message, else `<unlabeled event>`.
pub fn title(event: &Map<String, Value>) -> String {
    if let Some(e) = exceptions(event).last() {
        let ty = str_field(e, "type");
        let value = str_field(e, "value").and_then(|v| v.lines().find(|l| !l.trim().is_empty()));
        return match (ty, value) {
            (Some(t), Some(v)) => format!("{}: {}", t, clip(v.trim(), MAX_TITLE_CHARS)),
            (Some(t), None) => t.to_string(),
            (None, Some(v)) => format!("Error: {}", clip(v.trim(), MAX_TITLE_CHARS)),
            (None, None) => crash_frame(event)
                .and_then(|f| str_field(f, "function"))
                .unwrap_or("<unknown>")
                .to_string(),
        };
    }
    formatted_message(event)
        .and_then(|m| m.lines().map(str::trim).find(|l| !l.is_empty()))
        .map(|l| clip(l, MAX_TITLE_CHARS))
        .unwrap_or_else(|| UNLABELED.to_string())
}

/// The culprit: the event's own, else its transaction, else the newest
/// in-app frame of the last stack (`module in function`, or
/// `function(module)` for JavaScript), else the request URL.
fn culprit(event: &Map<String, Value>) -> String {
    let own = str_field(event, "culprit").or_else(|| str_field(event, "transaction"));
    if let Some(c) = own {
        return clip(c, MAX_CULPRIT_CHARS);
    }
    let platform = str_field(event, "platform").unwrap_or("other");
    let synthetic = exceptions(event).last().is_some_and(|e| {
        e.get("mechanism")
            .and_then(|m| m.get("synthetic"))
            .and_then(Value::as_bool)
            == Some(true)
    });
    let from_frames = if synthetic {
        None
    } else {
        exceptions(event)
            .into_iter()
            .rev()
            .find_map(|e| frames_of(e.get("stacktrace")))
            .or_else(|| lone_stacktrace(event))
            .and_then(|frames| stack_culprit(frames, platform))
    };
    let url = || {
        event
            .get("request")
            .and_then(|r| r.get("url"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    clip(
        &from_frames.or_else(url).unwrap_or_default(),
        MAX_CULPRIT_CHARS,
    )
}

/// The culprit of a stack: its newest in-app frame, else its newest frame.
fn stack_culprit(frames: &[Value], platform: &str) -> Option<String> {
    let mut fallback = None;
    for f in frames.iter().rev().filter_map(Value::as_object) {
        let in_app = f.get("in_app").and_then(Value::as_bool) == Some(true);
        if in_app {
            if let Some(c) = frame_culprit(f, platform) {
                return Some(c);
            }
        } else if fallback.is_none() {
            fallback = Some(frame_culprit(f, platform));
        }
    }
    fallback.flatten()
}

fn frame_culprit(f: &Map<String, Value>, platform: &str) -> Option<String> {
    let platform = str_field(f, "platform").unwrap_or(platform);
    let function = str_field(f, "function").unwrap_or("?");
    if matches!(platform, "objc" | "cocoa" | "native") {
        return Some(function.to_string());
    }
    let location = frame::display_module(f, platform)
        .or_else(|| str_field(f, "filename").map(str::to_string))?;
    Some(if is_javascript(platform) {
        format!("{function}({location})")
    } else {
        format!("{location} in {function}")
    })
}

/// At most `max` characters, `...` marking a cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(3)).collect();
    out.push_str("...");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
