//! The event model and the codecs of mecha.
//!
//! This room turns bytes into events and events back into bytes: container log
//! envelopes (CRI, docker json-file), log bodies (JSON, logfmt, syslog,
//! nginx/apache), multiline joining and the OTLP wire form. Everything here is a
//! pure function (or a small state machine) over byte slices: no tokio, no files,
//! no network, and no panic on any input.

pub mod body;
pub mod container;
pub mod kubepath;
pub mod model;
pub mod multiline;
pub mod otlp;
pub mod sentry;

mod error;
mod time;
mod util;

pub use error::ParseError;
pub use model::{LogRecord, Resource, Severity, SourcePosition};
