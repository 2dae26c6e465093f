//! Normalisation of an event before it is forwarded: missing `event_id`,
//! `timestamp` and `level` filled in, clock drift corrected from the
//! envelope's `sent_at`, the client IP applied, tag values capped and
//! oversized fields trimmed.

use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::Severity;

/// Size limits applied by [`normalize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizeLimits {
    /// Tag values longer than this many characters are cut. Sentry: 200.
    pub max_tag_value_chars: usize,
}

impl Default for NormalizeLimits {
    fn default() -> Self {
        NormalizeLimits {
            max_tag_value_chars: 200,
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
    /// Size limits.
    pub limits: NormalizeLimits,
}

/// The facts about a normalised event that the pipeline needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The event id: 32 lowercase hex digits.
    pub event_id: String,
    /// The event time, in nanoseconds since the epoch.
    pub timestamp_ns: i64,
    /// The event level on mecha's scale.
    pub level: Severity,
}

/// Normalises `event` in place and returns its id, time and level.
pub fn normalize(event: &mut Map<String, Value>, cx: &NormalizeContext) -> Normalized {
    // Placeholder until the real rules land: keeps the contract compiling.
    let event_id = event
        .get("event_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Normalized {
        event_id,
        timestamp_ns: cx.received_ns,
        level: Severity::Error,
    }
}
