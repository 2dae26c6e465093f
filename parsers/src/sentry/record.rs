//! A Sentry event as an OTLP log record, the form in which it travels from
//! the agent to the aggregator (see [`super::attr`]).
