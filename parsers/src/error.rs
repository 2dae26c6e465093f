//! The one error type of the parsers crate.

/// Why a parser rejected its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The input does not have the shape the format requires.
    #[error("{format}: {reason}")]
    Malformed {
        /// Name of the format that rejected the input (`cri`, `docker`, ...).
        format: &'static str,
        /// What was expected and what was found.
        reason: String,
    },
    /// The input is larger than the limit the caller allows.
    #[error("{format}: input of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Name of the format.
        format: &'static str,
        /// Size of the input.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl ParseError {
    /// Shorthand for [`ParseError::Malformed`].
    pub fn malformed(format: &'static str, reason: impl Into<String>) -> Self {
        ParseError::Malformed {
            format,
            reason: reason.into(),
        }
    }
}
