//! Sources: components that read what the node's workloads emit and send
//! [`crate::pipeline::Chunk`]s downstream. One module per source kind.

pub mod sentry;
pub mod tail;
