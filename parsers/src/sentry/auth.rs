//! Sentry authentication: `X-Sentry-Auth` / `Authorization: Sentry ...`
//! headers, the `sentry_key` query string, and DSNs.
//!
//! A request names its project's public key in exactly one of those places
//! (or, for envelopes, in the envelope header's `dsn`). This module only reads
//! them; whether a key is valid for a project is the endpoint's decision.
//! Like Relay, a request that carries more than one of the request forms is
//! refused rather than resolved by precedence, so that a proxy adding a key
//! cannot be confused with the client's own.

use crate::ParseError;

const FORMAT: &str = "sentry_auth";

/// The newest protocol version this endpoint speaks (Sentry's is 7).
pub const PROTOCOL_VERSION: u16 = 7;

/// Longest auth header or query string read; anything longer is refused
/// (real ones are about 150 bytes).
const MAX_AUTH_LEN: usize = 4096;

/// What a request says about who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The project's public key (`sentry_key`): any non-empty text without
    /// whitespace, commas or quotes.
    pub public_key: String,
    /// `sentry_version`, when given.
    pub version: Option<u16>,
    /// `sentry_client` (`sentry.python/2.19.0`), when given.
    pub client: Option<String>,
}

/// Where a request's auth came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthSource {
    /// The `X-Sentry-Auth` header.
    XSentryAuth,
    /// The `Authorization` header with the `Sentry` scheme.
    Authorization,
    /// The query string (`?sentry_key=...`).
    Query,
    /// The envelope header's `dsn`.
    EnvelopeDsn,
}

impl AuthSource {
    /// The name used in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthSource::XSentryAuth => "X-Sentry-Auth header",
            AuthSource::Authorization => "Authorization header",
            AuthSource::Query => "query string",
            AuthSource::EnvelopeDsn => "envelope dsn",
        }
    }
}

/// Reads the auth of a request from its `X-Sentry-Auth` and `Authorization`
/// header values and its query string. `Ok(None)` when none of them carries
/// Sentry auth (an `Authorization` header of another scheme and a query
/// string without `sentry_` parameters are not auth); an error when one is
/// malformed or more than one is present.
pub fn from_request(
    x_sentry_auth: Option<&str>,
    authorization: Option<&str>,
    query: Option<&str>,
) -> Result<Option<(Auth, AuthSource)>, ParseError> {
    let mut found: Option<(Auth, AuthSource)> = None;
    let mut add = |auth: Auth, source: AuthSource| match &found {
        Some((_, first)) => Err(ParseError::malformed(
            FORMAT,
            format!(
                "multiple authorization payloads: {} and {}",
                first.as_str(),
                source.as_str()
            ),
        )),
        None => {
            found = Some((auth, source));
            Ok(())
        }
    };
    if let Some(v) = x_sentry_auth.filter(|v| !v.trim().is_empty()) {
        add(parse_header(v)?, AuthSource::XSentryAuth)?;
    }
    if let Some(v) = authorization.filter(|v| has_sentry_scheme(v)) {
        add(parse_header(v)?, AuthSource::Authorization)?;
    }
    if let Some(q) = query
        && let Some(auth) = parse_query(q)?
    {
        add(auth, AuthSource::Query)?;
    }
    Ok(found)
}

fn has_sentry_scheme(value: &str) -> bool {
    value
        .trim_start()
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("sentry "))
}

/// Parses `Sentry sentry_key=..., sentry_version=7, sentry_client=...`.
/// The `Sentry` scheme is optional in `X-Sentry-Auth`, values may be quoted,
/// and keys are read with or without their `sentry_` prefix.
pub fn parse_header(value: &str) -> Result<Auth, ParseError> {
    if value.len() > MAX_AUTH_LEN {
        return Err(ParseError::TooLarge {
            format: FORMAT,
            size: value.len(),
            limit: MAX_AUTH_LEN,
        });
    }
    let t = value.trim();
    let pairs = if has_sentry_scheme(t) {
        t.get(7..).unwrap_or_default()
    } else {
        t
    };
    let pairs = pairs.split(',').filter_map(|p| {
        let p = p.trim();
        if p.is_empty() {
            return None;
        }
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        Some((k.trim().to_string(), unquote(v.trim()).to_string()))
    });
    from_pairs(pairs)
}

/// Reads `sentry_key`, `sentry_version` and `sentry_client` from a query
/// string; `Ok(None)` when it has no `sentry_` parameter at all.
pub fn parse_query(query: &str) -> Result<Option<Auth>, ParseError> {
    if query.len() > MAX_AUTH_LEN {
        return Err(ParseError::TooLarge {
            format: FORMAT,
            size: query.len(),
            limit: MAX_AUTH_LEN,
        });
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k.starts_with("sentry_"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if pairs.is_empty() {
        return Ok(None);
    }
    from_pairs(pairs.into_iter()).map(Some)
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

fn from_pairs(pairs: impl Iterator<Item = (String, String)>) -> Result<Auth, ParseError> {
    let mut key = None;
    let mut version = None;
    let mut client = None;
    for (k, v) in pairs {
        match k.strip_prefix("sentry_").unwrap_or(&k) {
            "key" => key = Some(v),
            "version" => {
                // Some SDKs send `7.0`; the major number is the version.
                let major = v.split('.').next().unwrap_or_default();
                version = Some(major.parse::<u16>().map_err(|_| {
                    ParseError::malformed(
                        FORMAT,
                        format!("sentry_version: expected a number, found {v:?}"),
                    )
                })?);
            }
            "client" => client = Some(v),
            // sentry_secret, sentry_timestamp: not needed for ingestion.
            _ => {}
        }
    }
    let key = key.ok_or_else(|| ParseError::malformed(FORMAT, "sentry_key is missing"))?;
    validate_key(&key)?;
    Ok(Auth {
        public_key: key,
        version,
        client,
    })
}

/// Checks that `key` can be a public key: non-empty, without whitespace,
/// control characters, commas, quotes, `@` or `/` (which would break the
/// header, query and DSN forms).
pub fn validate_key(key: &str) -> Result<(), ParseError> {
    if key.is_empty() {
        return Err(ParseError::malformed(FORMAT, "sentry_key is empty"));
    }
    if key
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | '"' | '@' | '/'))
    {
        return Err(ParseError::malformed(
            FORMAT,
            format!(
                "sentry_key: expected a key without spaces, commas or quotes, found {}",
                crate::util::preview_str(key)
            ),
        ));
    }
    Ok(())
}

/// The parts of a DSN (`https://<public_key>[:<secret>]@<host>[/<path>]/<project_id>`)
/// the endpoint needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    /// The public key (the DSN's user name).
    pub public_key: String,
    /// The numeric project id (the last path segment).
    pub project_id: u64,
}

/// Parses a DSN.
pub fn parse_dsn(dsn: &str) -> Result<Dsn, ParseError> {
    let bad = |why: &str| {
        ParseError::malformed(
            "sentry_dsn",
            format!("{why}, found {}", crate::util::preview_str(dsn)),
        )
    };
    if dsn.len() > MAX_AUTH_LEN {
        return Err(bad("expected a DSN of at most 4096 bytes"));
    }
    let url = url::Url::parse(dsn).map_err(|_| bad("expected a URL such as http://key@host/1"))?;
    let key = url.username();
    if key.is_empty() {
        return Err(bad("expected a public key before '@'"));
    }
    let key = percent_encoding::percent_decode_str(key)
        .decode_utf8()
        .map_err(|_| bad("expected a UTF-8 public key"))?
        .into_owned();
    validate_key(&key)?;
    let last = url
        .path_segments()
        .and_then(|mut s| s.rfind(|seg| !seg.is_empty()))
        .unwrap_or_default();
    let project_id = parse_project_id(last)
        .ok_or_else(|| bad("expected a numeric project id as the last path segment"))?;
    Ok(Dsn {
        public_key: key,
        project_id,
    })
}

/// A project id as Sentry writes it: decimal digits, at most 19 of them, no sign.
pub fn parse_project_id(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(a: &Result<Option<(Auth, AuthSource)>, ParseError>) -> Option<(&str, AuthSource)> {
        a.as_ref()
            .ok()
            .and_then(|o| o.as_ref())
            .map(|(a, s)| (a.public_key.as_str(), *s))
    }

    #[test]
    fn x_sentry_auth_header_is_read_with_every_field() {
        let a = parse_header(
            "Sentry sentry_key=abc123, sentry_version=7, sentry_client=sentry.python/2.19.0, sentry_timestamp=1700000000",
        );
        assert_eq!(
            a,
            Ok(Auth {
                public_key: "abc123".into(),
                version: Some(7),
                client: Some("sentry.python/2.19.0".into()),
            })
        );
    }

    #[test]
    fn header_without_scheme_quoted_values_and_short_keys_are_read() {
        let a = parse_header("sentry_key=\"k\",sentry_version=\"7.0\", key_without_value");
        assert_eq!(a.as_ref().map(|a| a.public_key.as_str()), Ok("k"));
        assert_eq!(a.map(|a| a.version), Ok(Some(7)));
        let a = parse_header("SENTRY key=x, version=7");
        assert_eq!(a.map(|a| a.public_key), Ok("x".to_string()));
    }

    #[test]
    fn header_without_key_or_with_bad_version_is_an_error() {
        assert!(parse_header("Sentry sentry_version=7").is_err());
        assert!(parse_header("Sentry sentry_key=, sentry_version=7").is_err());
        assert!(parse_header("Sentry sentry_key=a b").is_err());
        let e = parse_header("Sentry sentry_key=a, sentry_version=seven");
        assert!(
            e.as_ref()
                .is_err_and(|e| e.to_string().contains("sentry_version")),
            "{e:?}"
        );
        assert!(parse_header(&"x".repeat(5000)).is_err());
    }

    #[test]
    fn query_string_auth_is_read_and_decoded() {
        let a = parse_query(
            "sentry_key=a%2Bb&sentry_version=7&sentry_client=sentry.javascript.browser%2F8.0.0",
        );
        assert_eq!(
            a,
            Ok(Some(Auth {
                public_key: "a+b".into(),
                version: Some(7),
                client: Some("sentry.javascript.browser/8.0.0".into()),
            }))
        );
        assert_eq!(parse_query("foo=bar"), Ok(None));
        assert_eq!(parse_query(""), Ok(None));
        assert!(parse_query("sentry_version=7").is_err());
    }

    #[test]
    fn one_form_of_auth_is_taken_from_wherever_it_is() {
        let h = from_request(Some("Sentry sentry_key=a"), None, None);
        assert_eq!(key(&h), Some(("a", AuthSource::XSentryAuth)));
        let h = from_request(None, Some("Sentry sentry_key=b"), Some("x=1"));
        assert_eq!(key(&h), Some(("b", AuthSource::Authorization)));
        let h = from_request(None, Some("Bearer token"), Some("sentry_key=c"));
        assert_eq!(key(&h), Some(("c", AuthSource::Query)));
        assert_eq!(from_request(None, Some("Basic eDp5"), None), Ok(None));
        assert_eq!(from_request(Some(" "), None, Some("a=b")), Ok(None));
    }

    #[test]
    fn two_forms_of_auth_are_refused_even_when_they_agree() {
        for (x, a, q) in [
            (
                Some("Sentry sentry_key=a"),
                Some("Sentry sentry_key=a"),
                None,
            ),
            (Some("Sentry sentry_key=a"), None, Some("sentry_key=a")),
            (None, Some("Sentry sentry_key=a"), Some("sentry_key=b")),
        ] {
            let r = from_request(x, a, q);
            assert!(
                r.as_ref()
                    .is_err_and(|e| e.to_string().contains("multiple")),
                "{r:?}"
            );
        }
    }

    #[test]
    fn dsns_give_key_and_project() {
        let d = parse_dsn("https://e12d836b15bb49d7bbf99e64295d995b@o1.ingest.sentry.io/42");
        assert_eq!(
            d,
            Ok(Dsn {
                public_key: "e12d836b15bb49d7bbf99e64295d995b".into(),
                project_id: 42
            })
        );
        let d = parse_dsn("http://pub:secret@node:9000/some/path/7/");
        assert_eq!(
            d.map(|d| (d.public_key, d.project_id)),
            Ok(("pub".into(), 7))
        );
        assert!(parse_dsn("http://node:9000/7").is_err());
        assert!(parse_dsn("http://k@node:9000/abc").is_err());
        assert!(parse_dsn("not a url").is_err());
    }

    #[test]
    fn project_ids_are_plain_decimals() {
        assert_eq!(parse_project_id("42"), Some(42));
        assert_eq!(parse_project_id("0042"), Some(42));
        for bad in ["", "-1", "+1", "4x", "99999999999999999999", " 1"] {
            assert_eq!(parse_project_id(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn auth_parsing_never_panics(x in ".{0,200}", a in ".{0,200}", q in ".{0,200}") {
            let _ = from_request(Some(&x), Some(&a), Some(&q));
            let _ = parse_dsn(&x);
        }

        #[test]
        fn a_written_header_reads_back(k in "[A-Za-z0-9_.+-]{1,64}", v in 1u16..100) {
            let h = format!("Sentry sentry_key={k}, sentry_version={v}");
            let a = parse_header(&h);
            prop_assert_eq!(a.map(|a| (a.public_key, a.version)), Ok((k, Some(v))));
        }
    }
}
