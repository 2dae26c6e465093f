//! Sentry envelopes: a JSON header line, then items, each a JSON header line
//! and a payload of `length` bytes or up to the next newline.
