//! Sentry's ingestion protocol, as the agent's `:9000` endpoint receives it:
//! authentication ([`auth`]), envelopes ([`envelope`]), and what happens to an
//! event before it is forwarded — normalisation ([`normalize`]), PII scrubbing
//! ([`scrub`]) and inbound filters ([`filter`]) — and how an event travels to
//! the aggregator as an OTLP log record ([`record`]).
//!
//! Events are kept as JSON objects rather than a typed struct: Sentry's event
//! schema is large and grows, and unknown fields must survive the trip. Like
//! the rest of this crate, everything here is a pure function over bytes or
//! values: no HTTP, no clock reads, no panic on any input.

pub mod auth;
pub mod encoding;
pub mod envelope;
pub mod filter;
pub mod normalize;
pub mod record;
pub mod scrub;
pub mod security;

mod value;

/// Attribute names of the OTLP log record that carries one Sentry event from
/// the agent to the aggregator. The aggregator recognises an event by
/// [`attr::EVENT`], takes the event out of the attributes before indexing, and
/// groups it into an issue.
pub mod attr {
    /// The event's id: 32 lowercase hex digits. Idempotency key.
    pub const EVENT_ID: &str = "sentry.event_id";
    /// The numeric project id from the DSN, as a string.
    pub const PROJECT_ID: &str = "sentry.project_id";
    /// The whole normalised and scrubbed event, as JSON text.
    pub const EVENT: &str = "sentry.event";
}
