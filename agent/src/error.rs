//! The one error type of the agent crate.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The data dir cannot be created.
    #[error("data dir {path}: {reason}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A listener could not bind.
    #[error("{what} listener {addr}: {reason}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A tail source could not start.
    #[error("tail source: {0}")]
    Tail(#[from] crate::sources::tail::TailError),
    /// The forwarder could not be set up.
    #[error("forwarder: {0}")]
    Forward(#[from] crate::forward::ForwardError),
    /// The Sentry endpoint could not start.
    #[error("sentry endpoint: {0}")]
    Sentry(#[from] crate::sources::sentry::SentryError),
    /// The disk buffer could not be opened.
    #[error("disk buffer: {0}")]
    Buffer(#[from] crate::buffer::BufferError),
    /// Pod metadata enrichment could not start.
    #[error("agent.kubernetes: {reason}")]
    Kubernetes {
        /// Why.
        reason: String,
    },
}
