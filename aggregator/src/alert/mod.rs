//! Alerting: rules over logs and errors that fire alerts ([`rules`]), and
//! the Alertmanager-style pipeline that groups, deduplicates, inhibits,
//! silences and routes them to receivers ([`notify`]) — WeCom, DingTalk,
//! Feishu/Lark, Slack and generic webhooks.
//!
//! [`model`] is the contract between the two halves: alerts and the
//! notifications built from them, shaped like Alertmanager's webhook payload
//! (version 4), which the Alertmanager bridge receives and the generic
//! webhook receiver sends.
//!
//! This module must not index or search by itself (rules query the store
//! through its API) and must not block the reactor.

pub mod model;
pub mod notify;
