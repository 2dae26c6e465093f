//! The agent: mecha's node runtime.
//!
//! Sources (`sources/`) read what the node's workloads emit and hand byte-bounded
//! [`pipeline::Chunk`]s to the forwarder (`forward/`), which delivers them
//! downstream and acknowledges each chunk only once it is safe, so that file
//! checkpoints never run ahead of delivered data. The agent never depends on the
//! aggregator: in standalone mode the binary plugs the aggregator in as a
//! [`forward::Downstream`].

pub mod admin;
pub mod buffer;
pub mod enrich;
pub mod forward;
pub mod metrics;
pub mod pipeline;
pub mod sources;
pub mod spool;

mod error;
mod runtime;

pub use error::AgentError;
pub use metrics::AgentMetrics;
pub use pipeline::{Chunk, Output};
pub use runtime::Agent;

/// A signal that tells every task of the agent to stop.
pub type Shutdown = tokio_util::sync::CancellationToken;
