//! Inbound filters: events a project does not want (from localhost, caused
//! by browser extensions, or with messages matching configured globs) are
//! dropped at the endpoint and counted by reason.
//!
//! Filters run before normalisation, so they read both shapes SDKs may send
//! (`{"values": [...]}` or bare lists, `message` or `logentry`). They only
//! read the event; they never change it.

use std::net::IpAddr;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde_json::{Map, Value};

use super::value::{header, parse_ip, values_of};
use crate::ParseError;

/// Which filters are on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterOptions {
    /// Drop events from localhost (`127.0.0.1`, `::1`, `localhost` URLs). Default false.
    pub localhost: bool,
    /// Drop errors caused by browser extensions. Default true.
    pub browser_extensions: bool,
    /// Drop events whose error message matches one of these globs (`*` and
    /// `?`, case-insensitive). Default none.
    pub error_messages: Vec<String>,
}

impl Default for FilterOptions {
    fn default() -> Self {
        FilterOptions {
            localhost: false,
            browser_extensions: true,
            error_messages: Vec::new(),
        }
    }
}

/// Why an event was filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterReason {
    /// From localhost.
    Localhost,
    /// Caused by a browser extension.
    BrowserExtension,
    /// The message matched a configured glob.
    ErrorMessage,
}

impl FilterReason {
    /// The reason's name in metrics (`filtered_localhost`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            FilterReason::Localhost => "filtered_localhost",
            FilterReason::BrowserExtension => "filtered_browser_extension",
            FilterReason::ErrorMessage => "filtered_error_message",
        }
    }
}

/// Compiled filters.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    opts: FilterOptions,
    error_messages: Option<GlobSet>,
}

impl Filters {
    /// Compiles `opts`; a bad glob is an error naming it.
    pub fn new(opts: &FilterOptions) -> Result<Filters, ParseError> {
        let error_messages = if opts.error_messages.is_empty() {
            None
        } else {
            let mut set = GlobSetBuilder::new();
            for (i, pattern) in opts.error_messages.iter().enumerate() {
                let glob = GlobBuilder::new(pattern)
                    .case_insensitive(true)
                    // `*` in a message glob crosses `/` (URLs, paths).
                    .literal_separator(false)
                    .build()
                    .map_err(|e| {
                        ParseError::malformed(
                            "sentry filter",
                            format!(
                                "error_messages[{i}]: invalid glob {pattern:?}: {}",
                                e.kind()
                            ),
                        )
                    })?;
                set.add(glob);
            }
            let set = set.build().map_err(|e| {
                ParseError::malformed("sentry filter", format!("error_messages: {e}"))
            })?;
            Some(set)
        };
        Ok(Filters {
            opts: opts.clone(),
            error_messages,
        })
    }

    /// Why `event` should be dropped, if it should.
    pub fn check(&self, event: &Map<String, Value>) -> Option<FilterReason> {
        if self.opts.localhost && is_localhost(event) {
            return Some(FilterReason::Localhost);
        }
        if self.opts.browser_extensions && is_browser_extension(event) {
            return Some(FilterReason::BrowserExtension);
        }
        if let Some(set) = &self.error_messages
            && error_messages(event).iter().any(|m| set.is_match(m))
        {
            return Some(FilterReason::ErrorMessage);
        }
        None
    }
}

// ---- localhost ----------------------------------------------------------------

/// Host names that are this machine (Relay's list), also as subdomains of
/// `localhost` (RFC 6761 reserves them all).
const LOCAL_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1"];

fn is_loopback(text: &str) -> bool {
    parse_ip(text).is_some_and(|ip: IpAddr| ip.is_loopback())
}

fn is_local_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    LOCAL_HOSTS.contains(&host.as_str()) || host.ends_with(".localhost") || is_loopback(&host)
}

/// The host of an absolute URL (`http://user@host:port/path`), without
/// port or brackets.
fn url_host(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split(']').next();
    }
    Some(host_port.split(':').next().unwrap_or(host_port))
}

/// Whether the event comes from a developer's own machine: a loopback
/// client address, a request to `localhost`, or a page opened from a file.
fn is_localhost(event: &Map<String, Value>) -> bool {
    let user_ip = event
        .get("user")
        .and_then(|u| u.get("ip_address"))
        .and_then(Value::as_str);
    if user_ip.is_some_and(is_loopback) {
        return true;
    }
    let Some(request) = event.get("request") else {
        return false;
    };
    let remote_addr = request
        .get("env")
        .and_then(|e| e.get("REMOTE_ADDR"))
        .and_then(Value::as_str);
    if remote_addr.is_some_and(is_loopback)
        || header(request, "X-Forwarded-For").is_some_and(is_loopback)
    {
        return true;
    }
    match request.get("url").and_then(Value::as_str) {
        Some(url) if url.trim_start().to_ascii_lowercase().starts_with("file:") => true,
        Some(url) => url_host(url.trim()).is_some_and(is_local_host),
        // Without a URL, the Host header names the server (`localhost:3000`).
        None => ["Host", "X-Forwarded-Host"].iter().any(|name| {
            header(request, name).is_some_and(|h| {
                let host = h
                    .rsplit_once(':')
                    .filter(|(_, port)| port.bytes().all(|c| c.is_ascii_digit()));
                is_local_host(host.map_or(h, |(host, _)| host))
            })
        }),
    }
}

// ---- browser extensions --------------------------------------------------------

/// Error messages that browser extensions, injected toolbars and broken
/// third-party scripts cause, not the page's code. The facts (which texts)
/// come from Relay's inbound filter `browser_extensions.rs` and the
/// reports it cites; matched case-insensitively anywhere in an exception's
/// value.
const EXTENSION_MESSAGES: &[&str] = &[
    "top.globals",
    "originalcreatenotification",
    "canvas.contentdocument",
    "myapp_removeallhighlights",
    "http://tt.epicplay.com",
    "can't find variable: zitereader",
    "jigsaw is not defined",
    "combosearch is not defined",
    "http://loading.retry.widdit.com/",
    "atomicfindclose",
    "fb_xd_fragment",
    "bmi_safeaddonload",
    "ebcallbackmessagereceived",
    "_gcrweb",
    "conduitpage",
    "null is not an object (evaluating 'elt.parentnode')",
    "plugin.setsuspendstate is not a function",
    "extension context invalidated",
    "webkit-masked-url:",
    "can't access dead object",
];

/// URL schemes of extension code (Chrome, Firefox, Safari, legacy Edge).
const EXTENSION_SCHEMES: &[&str] = &[
    "chrome://",
    "chrome-extension://",
    "moz-extension://",
    "safari-extension://",
    "safari-web-extension://",
    "ms-browser-extension://",
];

/// Script sources of extensions and flaky third parties, matched anywhere in
/// a frame's URL (same source as [`EXTENSION_MESSAGES`]).
const EXTENSION_SOURCES: &[&str] = &[
    "graph.facebook.com",
    "connect.facebook.net",
    "eatdifferent.com.woopra-ns.com",
    "static.woopra.com/js/woopra.js",
    "webkit-masked-url",
    "127.0.0.1:4001/isrunning",
    "webappstoolbarba.texthelp.com/",
    "metrics.itunes.apple.com.edgesuite.net/",
    "kaspersky-labs.com",
];

/// Frame URLs that say nothing about where the code came from.
const ANONYMOUS_FRAMES: &[&str] = &["<anonymous>", "[native code]"];

fn exceptions(event: &Map<String, Value>) -> &[Value] {
    event
        .get("exception")
        .or_else(|| event.get("sentry.interfaces.Exception"))
        .and_then(values_of)
        .map_or(&[], Vec::as_slice)
}

/// The URL of the code that threw: the innermost frame with a URL that is
/// not anonymous.
fn exception_source(exception: &Value) -> Option<&str> {
    let frames = exception.get("stacktrace")?.get("frames")?.as_array()?;
    frames.iter().rev().find_map(|f| {
        let url = f
            .get("abs_path")
            .or_else(|| f.get("filename"))
            .and_then(Value::as_str)?;
        (!ANONYMOUS_FRAMES.contains(&url)).then_some(url)
    })
}

fn is_browser_extension(event: &Map<String, Value>) -> bool {
    exceptions(event).iter().any(|exc| {
        let message = exc
            .get("value")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase);
        if message.is_some_and(|m| EXTENSION_MESSAGES.iter().any(|known| m.contains(known))) {
            return true;
        }
        exception_source(exc).is_some_and(|url| {
            let url = url.trim().to_ascii_lowercase();
            EXTENSION_SCHEMES.iter().any(|s| url.starts_with(s))
                || EXTENSION_SOURCES.iter().any(|s| url.contains(s))
        })
    })
}

// ---- error messages --------------------------------------------------------------

/// The texts the error-message globs are matched against: `"{type}:
/// {value}"` of each exception (or whichever of the two it has), and the
/// event's message in its `logentry` or `message` form.
fn error_messages(event: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    for exc in exceptions(event) {
        let ty = exc
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty());
        let value = exc
            .get("value")
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty());
        match (ty, value) {
            (Some(t), Some(v)) => out.push(format!("{t}: {v}")),
            (Some(t), None) => out.push(t.to_owned()),
            (None, Some(v)) => out.push(v.to_owned()),
            (None, None) => {}
        }
    }
    for key in ["logentry", "message", "sentry.interfaces.Message"] {
        match event.get(key) {
            Some(Value::String(s)) => out.push(s.clone()),
            Some(Value::Object(entry)) => {
                for field in ["formatted", "message"] {
                    if let Some(Value::String(s)) = entry.get(field) {
                        out.push(s.clone());
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(opts: &FilterOptions, event: Value) -> Option<FilterReason> {
        let Value::Object(map) = event else {
            panic!("test events are objects")
        };
        Filters::new(opts).unwrap().check(&map)
    }

    fn localhost() -> FilterOptions {
        FilterOptions {
            localhost: true,
            ..FilterOptions::default()
        }
    }

    #[test]
    fn nothing_but_browser_extensions_is_filtered_by_default() {
        let d = FilterOptions::default();
        assert_eq!(
            check(&d, json!({"user": {"ip_address": "127.0.0.1"}})),
            None
        );
        assert_eq!(
            check(
                &d,
                json!({"exception": [{"value": "Extension context invalidated."}]})
            ),
            Some(FilterReason::BrowserExtension)
        );
    }

    #[test]
    fn loopback_clients_and_localhost_urls_are_localhost() {
        for event in [
            json!({"user": {"ip_address": "127.0.0.1"}}),
            json!({"user": {"ip_address": "::1"}}),
            json!({"request": {"env": {"REMOTE_ADDR": "127.0.0.5"}}}),
            json!({"request": {"url": "http://localhost:3000/cart"}}),
            json!({"request": {"url": "http://app.localhost/"}}),
            json!({"request": {"url": "http://[::1]:8080/"}}),
            json!({"request": {"url": "https://user:pw@127.0.0.1/x"}}),
            json!({"request": {"url": "file:///home/ana/index.html"}}),
            json!({"request": {"headers": {"Host": "localhost:8000"}}}),
            json!({"request": {"headers": [["X-Forwarded-For", "127.0.0.1"]]}}),
        ] {
            assert_eq!(
                check(&localhost(), event.clone()),
                Some(FilterReason::Localhost),
                "{event}"
            );
        }
        for event in [
            json!({"user": {"ip_address": "198.51.100.1"}}),
            json!({"request": {"url": "http://localhost.example.com/"}}),
            json!({"request": {"url": "http://mylocalhost/"}}),
            json!({"request": {"url": "not a url"}}),
            json!({"request": {"headers": {"Host": "localhost.example.com:80"}}}),
            json!({}),
        ] {
            assert_eq!(check(&localhost(), event.clone()), None, "{event}");
        }
    }

    #[test]
    fn extension_frames_and_messages_are_browser_extensions() {
        let d = FilterOptions::default();
        for url in [
            "chrome-extension://abc/content.js",
            "moz-extension://x/y.js",
            "safari-web-extension://x/y.js",
            "https://fscr.kaspersky-labs.com/x/main.js",
        ] {
            let event = json!({"exception": {"values": [{"type": "Error", "stacktrace": {"frames": [
                {"abs_path": "https://shop.example.com/app.js"},
                {"abs_path": url},
                {"abs_path": "<anonymous>"},
            ]}}]}});
            assert_eq!(
                check(&d, event),
                Some(FilterReason::BrowserExtension),
                "{url}"
            );
        }
        for message in [
            "TypeError: can't access dead object",
            "null is not an object (evaluating 'elt.parentNode')",
            "top.GLOBALS is undefined",
        ] {
            assert_eq!(
                check(&d, json!({"exception": [{"value": message}]})),
                Some(FilterReason::BrowserExtension)
            );
        }
        let own = json!({"exception": [{"value": "x is undefined", "stacktrace": {"frames": [{"abs_path": "chrome-extension://a/b.js"}, {"abs_path": "https://shop.example.com/app.js"}]}}]});
        assert_eq!(check(&d, own), None);
        let off = FilterOptions {
            browser_extensions: false,
            ..FilterOptions::default()
        };
        assert_eq!(
            check(
                &off,
                json!({"exception": [{"value": "Extension context invalidated"}]})
            ),
            None
        );
    }

    #[test]
    fn error_message_globs_match_type_value_and_message() {
        let opts = FilterOptions {
            error_messages: vec![
                "*ConnectionResetError*".into(),
                "timeout after ? s".into(),
                "chunkloaderror: *".into(),
            ],
            ..FilterOptions::default()
        };
        for event in [
            json!({"exception": [{"type": "ConnectionResetError", "value": "peer"}]}),
            json!({"message": "Timeout after 5 s"}),
            json!({"logentry": {"formatted": "timeout after 9 s"}}),
            json!({"exception": {"values": [{"type": "ChunkLoadError", "value": "Loading chunk 7 failed.\n(/x/y)"}]}}),
        ] {
            assert_eq!(
                check(&opts, event.clone()),
                Some(FilterReason::ErrorMessage),
                "{event}"
            );
        }
        assert_eq!(check(&opts, json!({"message": "timeout after 10 s"})), None);
        assert_eq!(
            check(&opts, json!({"exception": [{"type": "ValueError"}]})),
            None
        );
    }

    #[test]
    fn a_bad_glob_is_an_error_naming_it() {
        let opts = FilterOptions {
            error_messages: vec!["ok*".into(), "[unclosed".into()],
            ..FilterOptions::default()
        };
        let err = Filters::new(&opts).unwrap_err().to_string();
        assert!(
            err.contains("error_messages[1]") && err.contains("\"[unclosed\""),
            "{err}"
        );
    }

    #[test]
    fn malformed_shapes_are_not_filtered_and_do_not_panic() {
        let all = FilterOptions {
            localhost: true,
            browser_extensions: true,
            error_messages: vec!["*".into()],
        };
        for event in [
            json!({"exception": "boom", "user": 3, "request": []}),
            json!({"exception": {"values": 1}, "message": 5}),
        ] {
            assert_eq!(check(&all, event), None);
        }
    }

    #[test]
    fn reasons_have_metric_names() {
        assert_eq!(FilterReason::Localhost.as_str(), "filtered_localhost");
        assert_eq!(
            FilterReason::BrowserExtension.as_str(),
            "filtered_browser_extension"
        );
        assert_eq!(
            FilterReason::ErrorMessage.as_str(),
            "filtered_error_message"
        );
    }
}
