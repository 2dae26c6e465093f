//! Sentry authentication: `X-Sentry-Auth` / `Authorization: Sentry ...`
//! headers, the `sentry_key` query string, and DSNs.
