//! What happens to a Sentry event before it leaves the node, on events real
//! SDKs sent (`tests/fixtures/sentry/`): the snapshots show the normalised
//! events and every value scrubbing replaced, and property tests check
//! that filter, normalise and scrub never panic and that normalising and
//! scrubbing twice changes nothing.

#![allow(clippy::unwrap_used)]

use mecha_parsers::Severity;
use mecha_parsers::sentry::filter::{FilterOptions, FilterReason, Filters};
use mecha_parsers::sentry::normalize::{NormalizeContext, Normalized, normalize};
use mecha_parsers::sentry::scrub::{ScrubOptions, scrub};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const PYTHON: &str = include_str!("fixtures/sentry/python_wsgi.json");
const NODE: &str = include_str!("fixtures/sentry/node_http.json");
const BROWSER: &str = include_str!("fixtures/sentry/browser.json");

/// 2025-12-01T08:45:35Z, a few seconds after the fixtures were sent.
const RECEIVED_NS: i64 = 1_764_578_735_000_000_000;

fn cx() -> NormalizeContext {
    NormalizeContext {
        received_ns: RECEIVED_NS,
        sent_at_ns: Some(RECEIVED_NS - 2_000_000_000),
        client_ip: Some("203.0.113.7".parse().unwrap()),
        fallback_event_id: "0123456789abcdef0123456789abcdef".into(),
        ..NormalizeContext::default()
    }
}

fn load(text: &str) -> Map<String, Value> {
    let mut event: Map<String, Value> = serde_json::from_str(text).unwrap();
    // The fixtures were captured on a machine whose clock said 2026; date
    // them to just before `RECEIVED_NS` so that no clamping shows.
    shift_to_received(&mut event);
    event
}

fn shift_to_received(event: &mut Map<String, Value>) {
    let secs = |v: &Value| -> Option<f64> {
        v.as_f64().or_else(|| {
            let t = chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok()?;
            Some(t.timestamp_micros() as f64 / 1e6)
        })
    };
    let Some(ts) = event.get("timestamp").and_then(secs) else {
        return;
    };
    let delta = (RECEIVED_NS as f64 / 1e9 - 3.0) - ts;
    let shift = |v: &mut Value| {
        if let Some(s) = secs(v) {
            *v = json!(((s + delta) * 1e3).round() / 1e3);
        }
    };
    if let Some(t) = event.get_mut("timestamp") {
        shift(t);
    }
    let crumbs = event
        .get_mut("breadcrumbs")
        .and_then(|b| b.get_mut("values"))
        .and_then(Value::as_array_mut);
    if let Some(crumbs) = crumbs {
        for c in crumbs {
            if let Some(t) = c.get_mut("timestamp") {
                shift(t);
            }
        }
    }
}

/// Every value that differs between `before` and `after`, with its path.
fn changes(before: &Value, after: &Value, path: &str, out: &mut Vec<Value>) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(w) => changes(v, w, &p, out),
                    None => out.push(json!({"path": p, "before": v, "after": null})),
                }
            }
            for (k, w) in b {
                if !a.contains_key(k) {
                    out.push(json!({"path": format!("{path}.{k}"), "before": null, "after": w}));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                changes(v, w, &format!("{path}.{i}"), out);
            }
        }
        (a, b) if a != b => out.push(json!({"path": path, "before": a, "after": b})),
        _ => {}
    }
}

fn scrubbed(text: &str, opts: &ScrubOptions) -> (usize, Vec<Value>) {
    let mut event = load(text);
    normalize(&mut event, &cx());
    let before = Value::Object(event.clone());
    let n = scrub(&mut event, opts);
    let mut out = Vec::new();
    changes(&before, &Value::Object(event), "", &mut out);
    (n, out)
}

fn normalized(text: &str) -> (Map<String, Value>, Normalized) {
    let mut event = load(text);
    let n = normalize(&mut event, &cx());
    (event, n)
}

#[test]
fn python_event_normalizes_like_relay() {
    let (event, n) = normalized(PYTHON);
    assert_eq!(n.event_id, "5aeef8f0087146c89e09b326655b546e");
    assert_eq!(n.level, Severity::Error);
    assert_eq!(n.user_key.as_deref(), Some("id:42"));
    assert_eq!(n.release.as_deref(), Some("shop@1.4.2"));
    insta::assert_json_snapshot!("python_normalized", event);
}

#[test]
fn node_event_normalizes_like_relay() {
    let (event, n) = normalized(NODE);
    assert_eq!(n.platform, "node");
    assert_eq!(n.user_key.as_deref(), Some("ip:::ffff:127.0.0.1"));
    insta::assert_json_snapshot!("node_normalized", event);
}

#[test]
fn browser_event_normalizes_like_relay() {
    let (event, n) = normalized(BROWSER);
    // `{{auto}}` became the client's address; email names the user first.
    assert_eq!(event["user"]["ip_address"], "203.0.113.7");
    assert_eq!(n.user_key.as_deref(), Some("email:ana@example.com"));
    insta::assert_json_snapshot!("browser_normalized", event);
}

#[test]
fn python_event_scrubbing() {
    let (n, changes) = scrubbed(PYTHON, &ScrubOptions::default());
    // A string with several secrets is one change and several replacements.
    assert!(n >= changes.len());
    insta::assert_json_snapshot!("python_scrubbed", changes);
}

#[test]
fn node_event_scrubbing() {
    let (n, changes) = scrubbed(NODE, &ScrubOptions::default());
    assert!(n >= changes.len());
    insta::assert_json_snapshot!("node_scrubbed", changes);
}

#[test]
fn browser_event_scrubbing_with_ip_addresses() {
    let opts = ScrubOptions {
        scrub_ip: true,
        ..ScrubOptions::default()
    };
    let (n, changes) = scrubbed(BROWSER, &opts);
    assert!(n >= changes.len());
    insta::assert_json_snapshot!("browser_scrubbed_ip", changes);
}

/// Which keys the key rule scrubs, `auth` against `author` in particular:
/// the decision reviewers should read.
#[test]
fn which_keys_are_secrets() {
    let keys = [
        "password",
        "db_passwd",
        "Secret",
        "api_key",
        "X-Api-Key",
        "apikey",
        "access_token",
        "csrftoken",
        "Authorization",
        "auth",
        "oauth_state",
        "authenticity",
        "authorised_by",
        "author",
        "co_author_id",
        "authority",
        "credentials",
        "bearer",
        "private_key",
        "privateKey",
        "mysql_pwd",
        "passport",
        "secretary",
        "username",
        "email",
        "session",
        "keyboard",
        "pwd",
    ];
    let extra: Map<String, Value> = keys.iter().map(|k| ((*k).to_owned(), json!("v"))).collect();
    let mut event = Map::new();
    event.insert("extra".into(), Value::Object(extra));
    scrub(&mut event, &ScrubOptions::default());
    let table: Vec<String> = keys
        .iter()
        .map(|k| {
            format!(
                "{k}: {}",
                if event["extra"][*k] == "v" {
                    "kept"
                } else {
                    "scrubbed"
                }
            )
        })
        .collect();
    insta::assert_json_snapshot!("secret_keys", table);
}

#[test]
fn real_sdk_events_pass_the_default_filters() {
    let filters = Filters::new(&FilterOptions::default()).unwrap();
    for text in [PYTHON, NODE, BROWSER] {
        assert_eq!(filters.check(&load(text)), None);
    }
    let localhost = Filters::new(&FilterOptions {
        localhost: true,
        ..FilterOptions::default()
    })
    .unwrap();
    // The Node app was called on 127.0.0.1.
    assert_eq!(localhost.check(&load(NODE)), Some(FilterReason::Localhost));
    assert_eq!(localhost.check(&load(PYTHON)), None);
}

// ---- properties ----------------------------------------------------------------

/// Field names of Sentry events and of what scrubbing looks for, so that
/// arbitrary events reach the rules rather than unknown keys only.
const KEYS: &[&str] = &[
    "event_id",
    "timestamp",
    "level",
    "platform",
    "message",
    "logentry",
    "formatted",
    "params",
    "exception",
    "values",
    "type",
    "value",
    "stacktrace",
    "frames",
    "vars",
    "breadcrumbs",
    "threads",
    "tags",
    "user",
    "ip_address",
    "id",
    "request",
    "env",
    "REMOTE_ADDR",
    "headers",
    "Cookie",
    "cookies",
    "query_string",
    "data",
    "extra",
    "contexts",
    "release",
    "environment",
    "password",
    "token",
    "author",
    "sessionid",
    "url",
    "start_timestamp",
    "errors",
    "server_name",
];

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9 ._:/@?=&;-]{0,24}",
        Just("{{auto}}".to_owned()),
        Just("4111 1111 1111 1111".to_owned()),
        Just("Bearer abc.def".to_owned()),
        Just("postgres://u:p@h/d?token=t&a=b".to_owned()),
        Just("sessionid=1; theme=dark".to_owned()),
        Just("-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----".to_owned()),
        Just("198.51.100.7 and ::1".to_owned()),
        Just("2025-12-01T08:45:31Z".to_owned()),
        Just("{\"password\": \"x\", \"a\": [1]}".to_owned()),
        Just("é😀\u{200d}\u{0301}".repeat(3)),
        Just("warn".to_owned()),
        Just("FC6D8C0C-43FC-4630-AD85-0EE518F1B9D0".to_owned()),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (1.5e9f64..1.8e9).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        string().prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

fn event() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((prop::sample::select(KEYS), json_value()), 0..12)
        .prop_map(|kv| kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// What the endpoint does to an event: normalise, scrub, and read the user
/// as scrubbing left it.
fn process(event: &mut Map<String, Value>, opts: &ScrubOptions) -> Normalized {
    let mut n = normalize(event, &cx());
    scrub(event, opts);
    n.user_key = mecha_parsers::sentry::normalize::user_key(event);
    n
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn filter_normalize_scrub_never_panic_and_are_idempotent(mut ev in event(), scrub_ip in any::<bool>()) {
        let filters = Filters::new(&FilterOptions { localhost: true, browser_extensions: true, error_messages: vec!["*boom*".into()] }).unwrap();
        let _ = filters.check(&ev);
        let opts = ScrubOptions { scrub_ip, ..ScrubOptions::default() };
        let first = process(&mut ev, &opts);
        let once = ev.clone();
        let second = process(&mut ev, &opts);
        prop_assert_eq!(&ev, &once);
        prop_assert_eq!(first.event_id.len(), 32);
        prop_assert_eq!(first, second);
    }

    #[test]
    fn fixtures_with_any_field_replaced_stay_idempotent(key in prop::sample::select(KEYS), value in json_value()) {
        for text in [PYTHON, NODE, BROWSER] {
            let mut ev = load(text);
            ev.insert(key.to_owned(), value.clone());
            process(&mut ev, &ScrubOptions::default());
            let once = ev.clone();
            process(&mut ev, &ScrubOptions::default());
            prop_assert_eq!(&ev, &once);
        }
    }
}

/// Found by the idempotence property: a multi-line host name was dropped as
/// a tag, made one line by scrubbing, and offered as a tag the second time.
#[test]
fn a_multi_line_server_name_goes_at_once() {
    let mut ev =
        load(r#"{"server_name": "-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----"}"#);
    process(&mut ev, &ScrubOptions::default());
    assert!(ev.get("server_name").is_none(), "{ev:?}");
    let once = ev.clone();
    process(&mut ev, &ScrubOptions::default());
    assert_eq!(ev, once);
}
