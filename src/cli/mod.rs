//! The subcommands of the binary, one module each.

pub mod alert;
pub mod api;
pub mod issues;
pub mod parse;
pub mod run;
pub mod search;
pub mod silence;
pub mod validate;
