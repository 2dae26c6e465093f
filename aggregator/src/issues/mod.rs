//! Issues: Sentry events grouped by fingerprint ([`grouping`]).
//!
//! This module must not index logs or answer HTTP by itself.

pub mod grouping;
