//! Issues: Sentry events grouped by fingerprint ([`grouping`]) and kept with
//! their counts, users, releases and status ([`store`]).
//!
//! This module must not index logs or answer HTTP by itself.

pub mod grouping;
pub mod store;

pub use store::{Issue, IssueStore, Status};
