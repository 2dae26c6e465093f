//! Fuzzes Sentry auth: the `X-Sentry-Auth` / `Authorization` header, the
//! query string and DSNs. See `cri.rs` for how to run.
//!
//! The input is split at the first two NUL bytes into header, query string
//! and DSN. Checked properties: no panic; an accepted key is non-empty and
//! passes `validate_key`; an accepted header read back from its canonical
//! form gives the same key and version.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::sentry::auth::{from_request, parse_dsn, parse_header, validate_key};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\0');
    let header = parts.next().unwrap_or_default();
    let query = parts.next().unwrap_or_default();
    let dsn = parts.next().unwrap_or_default();
    if let Ok(Some((auth, _))) = from_request(Some(header), Some(header), Some(query)) {
        assert!(validate_key(&auth.public_key).is_ok());
    }
    if let Ok(auth) = parse_header(header) {
        assert!(validate_key(&auth.public_key).is_ok());
        let mut canonical = format!("Sentry sentry_key={}", auth.public_key);
        if let Some(v) = auth.version {
            canonical.push_str(&format!(", sentry_version={v}"));
        }
        let again = parse_header(&canonical).unwrap_or_else(|e| panic!("{canonical:?}: {e}"));
        assert_eq!(
            (again.public_key, again.version),
            (auth.public_key, auth.version)
        );
    }
    if let Ok(d) = parse_dsn(dsn) {
        assert!(validate_key(&d.public_key).is_ok());
    }
});
