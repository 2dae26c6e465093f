//! The one error type of the aggregator crate.
//!
//! Every fallible function here returns [`Error`]. Messages are lowercase, say
//! what was expected and what was found, and never carry credentials.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong in the aggregator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing (`create data directory`, `delete day index`, ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Binding a listener failed.
    #[error("bind {what} listener on {addr}: {source}")]
    Bind {
        /// `grpc` or `http`.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The index library reported an error.
    #[error("index {day}: {source}")]
    Index {
        /// The day index (`YYYY-MM-DD`) or `all` when not specific to one.
        day: String,
        /// The underlying error.
        #[source]
        source: tantivy::TantivyError,
    },
    /// A commit payload (high-water marks) could not be read back.
    #[error(
        "index {day}: commit payload: expected high-water-mark JSON, found {found:?}: {reason}"
    )]
    Payload {
        /// The day index.
        day: String,
        /// The start of the payload text.
        found: String,
        /// Why it could not be parsed.
        reason: String,
    },
    /// A group commit failed; every waiter of that commit receives this.
    #[error("commit failed, records not stored: {reason}")]
    CommitFailed {
        /// The underlying error, rendered.
        reason: String,
    },
    /// The issue store reported an error.
    #[error("issue store: {action}: {reason}")]
    IssueStore {
        /// What we were doing (`record events`, `list issues`, ...).
        action: &'static str,
        /// The underlying error, rendered.
        reason: String,
    },
    /// The alert state (notification log, silences) could not be read or
    /// written.
    #[error("alert state: {action}: {reason}")]
    AlertStore {
        /// What we were doing (`write silence`, `open notification log`, ...).
        action: &'static str,
        /// The underlying error, rendered.
        reason: String,
    },
    /// The alert rules' state file reported an error.
    #[error("alert rule state: {action}: {reason}")]
    AlertState {
        /// What we were doing (`write rule state`, ...).
        action: &'static str,
        /// The underlying error, rendered.
        reason: String,
    },
    /// A request or config item the alerting API cannot accept (a silence
    /// without matchers, an end before its start, ...).
    #[error("{what}: {reason}")]
    Invalid {
        /// What was given (`silence`, `route matchers`).
        what: &'static str,
        /// What was expected and what was found.
        reason: String,
    },
    /// An alert rule cannot be used as written.
    #[error("alert rule {rule:?}: {key}: {reason}")]
    Rule {
        /// The rule's name.
        rule: String,
        /// The key of the rule at fault (`query`, `annotations.summary`).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The rule engine is not running (stopped or failed).
    #[error("alert rule engine is not running")]
    RulesStopped,
    /// A search query could not be parsed.
    #[error("invalid query {query:?}: {reason}")]
    Query {
        /// The query text as given.
        query: String,
        /// The parser's reason.
        reason: String,
    },
    /// A request parameter had a value that could not be understood.
    #[error("parameter {name}: expected {expected}, found {found:?}")]
    Param {
        /// Parameter name (`from`, `to`, `limit`).
        name: &'static str,
        /// What the parameter accepts.
        expected: &'static str,
        /// What was given.
        found: String,
    },
    /// A requested item does not exist.
    #[error("no {what} {id:?}")]
    NotFound {
        /// What was asked for (`issue`).
        what: &'static str,
        /// The id as given.
        id: String,
    },
    /// The writer is gone: the aggregator is shutting down or its writer failed.
    #[error("index writer is not running (aggregator shutting down or writer failed)")]
    WriterStopped,
    /// A listener task failed.
    #[error("{what} server: {reason}")]
    Server {
        /// `grpc` or `http`.
        what: &'static str,
        /// The underlying error, rendered.
        reason: String,
    },
    /// A metric could not be registered (duplicate name: a programming error).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A receiver of `aggregator.alerting.receivers` cannot be built (its
    /// credentials are never part of the reason).
    #[error("receiver {receiver}: {reason}")]
    Receiver {
        /// The receiver's name.
        receiver: String,
        /// What is wrong.
        reason: String,
    },
    /// A blocking task panicked or was cancelled.
    #[error("background task {what}: {reason}")]
    Task {
        /// What the task was doing.
        what: &'static str,
        /// The join error, rendered.
        reason: String,
    },
}

impl Error {
    /// Wraps a tantivy error with the day it concerns.
    pub(crate) fn index(day: impl ToString, source: tantivy::TantivyError) -> Error {
        Error::Index {
            day: day.to_string(),
            source,
        }
    }

    /// Whether the error is the caller's fault (a bad query or parameter).
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            Error::Query { .. } | Error::Param { .. } | Error::Invalid { .. }
        )
    }
}
