//! What happens to a request's body, off the HTTP layer: decompression,
//! envelope or store parsing, authentication by the envelope's `dsn`, and
//! for each event the inbound filters, normalisation and scrubbing (in that
//! order, so filters see the event as sent and nothing scrubbed is lost to
//! them) and its record.
//!
//! All of it is synchronous CPU work over one body, so the handler can run
//! it on the reactor for small bodies and on a blocking thread for large
//! ones. It never touches the network or the pipeline: it only returns the
//! records to send and what it dropped, by reason.

use std::net::IpAddr;
use std::sync::Arc;

use mecha_parsers::sentry::auth::{self, Auth};
use mecha_parsers::sentry::encoding::{self, ContentEncoding};
use mecha_parsers::sentry::envelope::{self, ItemType};
use mecha_parsers::sentry::normalize::{NormalizeContext, NormalizeLimits, normalize, user_key};
use mecha_parsers::sentry::record::event_record;
use mecha_parsers::sentry::scrub::scrub;
use mecha_parsers::sentry::security;
use mecha_parsers::{LogRecord, ParseError, Resource};
use serde_json::{Map, Value};

use super::projects::{Denied, ProjectRules, Projects};
use super::reply::Reject;
use crate::metrics::reason;

/// The three ingestion routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/api/{id}/envelope/`.
    Envelope,
    /// `/api/{id}/store/`.
    Store,
    /// `/api/{id}/security/`.
    Security,
}

impl Route {
    /// The route's name in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Envelope => "envelope",
            Route::Store => "store",
            Route::Security => "security",
        }
    }
}

/// Limits and context shared by every request.
pub struct IngestContext {
    /// Projects, keys and rules.
    pub projects: Projects,
    /// Largest body after decompression.
    pub max_envelope_bytes: usize,
    /// Largest event or transaction.
    pub max_event_bytes: usize,
    /// Most items per envelope.
    pub max_items: usize,
    /// Normalisation limits.
    pub normalize: NormalizeLimits,
    /// The agent's resource (node name).
    pub resource: Resource,
}

/// One request, as the handler gathered it.
#[derive(Clone)]
pub struct Incoming {
    /// Which route.
    pub route: Route,
    /// The project id of the path.
    pub project_id: u64,
    /// Auth from headers or query string; `None` leaves it to the envelope's `dsn`.
    pub auth: Option<(Auth, Arc<ProjectRules>)>,
    /// The body as received.
    pub body: bytes::Bytes,
    /// Its `Content-Encoding`.
    pub encoding: ContentEncoding,
    /// When the request arrived, ns since the epoch.
    pub received_ns: i64,
    /// The client's address.
    pub client_ip: Option<IpAddr>,
}

/// What a request yields.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Records to send, one per accepted event.
    pub records: Vec<LogRecord>,
    /// The id to answer with: the first event's, else the envelope's.
    pub event_id: Option<String>,
    /// Items seen, by type label.
    pub items: Vec<&'static str>,
    /// What was dropped, by reason.
    pub discards: Vec<&'static str>,
    /// The project's rules (for its rate limit).
    pub rules: Option<Arc<ProjectRules>>,
}

/// Decodes (to at most `decoded_limit` bytes) and parses `req`; the records
/// of its events, or why it is refused.
pub fn process(
    cx: &IngestContext,
    req: Incoming,
    decoded_limit: usize,
) -> Result<Prepared, Reject> {
    let decoded =
        encoding::decode(req.encoding, &req.body, decoded_limit).map_err(|e| match e {
            ParseError::TooLarge { limit, .. } if req.encoding != ContentEncoding::Identity => {
                Reject::too_large(
                    reason::SENTRY_BOMB,
                    format!(
                        "body decompresses ({}) past the limit of {limit} bytes",
                        req.encoding.as_str()
                    ),
                )
            }
            ParseError::TooLarge { limit, size, .. } => Reject::too_large(
                reason::SENTRY_TOO_LARGE,
                format!("body of {size} bytes exceeds the limit of {limit} bytes"),
            ),
            e => Reject::decompression(req.encoding, e.to_string()),
        })?;
    let mut out = Prepared::default();
    let mut events: Vec<Map<String, Value>> = Vec::new();
    let mut sent_at_ns = None;
    let mut auth = req.auth;
    match req.route {
        Route::Envelope => {
            let env = envelope::parse(&decoded, cx.max_items)
                .map_err(|e| Reject::bad_request(reason::SENTRY_BAD_ENVELOPE, e.to_string()))?;
            auth = Some(envelope_auth(cx, req.project_id, auth, env.dsn())?);
            sent_at_ns = env.sent_at().and_then(parse_rfc3339_ns);
            out.event_id = env.event_id().and_then(valid_event_id);
            for item in &env.items {
                out.items.push(item.kind.label());
                match &item.kind {
                    ItemType::Event | ItemType::Transaction => {
                        check_event_size(cx, item.payload.len(), item.kind.name())?;
                        let mut event = envelope::parse_json_object(item.payload).map_err(|e| {
                            Reject::bad_request(
                                reason::SENTRY_INVALID_JSON,
                                format!("{} item: {e}", item.kind.name()),
                            )
                        })?;
                        if item.kind == ItemType::Transaction {
                            // No span pipeline yet: transactions are checked,
                            // counted and dropped until spans have a home.
                            out.discards.push(reason::SENTRY_TRANSACTION_UNSUPPORTED);
                            continue;
                        }
                        if let (None, Some(id)) = (event.get("event_id"), &out.event_id) {
                            event.insert("event_id".into(), Value::from(id.clone()));
                        }
                        events.push(event);
                    }
                    ItemType::Attachment => {
                        out.discards.push(reason::SENTRY_ATTACHMENT_UNSUPPORTED)
                    }
                    kind if kind.is_json() => {
                        // Optional items: a bad one is dropped alone, as
                        // Sentry drops it, and the events still go.
                        match envelope::parse_json_object(item.payload) {
                            Ok(_) => out.discards.push(reason::SENTRY_ITEM_UNSUPPORTED),
                            Err(_) => out.discards.push(reason::SENTRY_INVALID_ITEM),
                        }
                    }
                    _ => out.discards.push(reason::SENTRY_ITEM_UNSUPPORTED),
                }
            }
        }
        Route::Store => {
            let body =
                encoding::decode_store_body(&decoded, decoded_limit).map_err(|e| match e {
                    ParseError::TooLarge { limit, .. } => Reject::too_large(
                        reason::SENTRY_BOMB,
                        format!("store body decompresses past the limit of {limit} bytes"),
                    ),
                    e => Reject::bad_request(reason::SENTRY_INVALID_JSON, e.to_string()),
                })?;
            check_event_size(cx, body.len(), "event")?;
            out.items.push(ItemType::Event.label());
            let event = envelope::parse_json_object(&body)
                .map_err(|e| Reject::bad_request(reason::SENTRY_INVALID_JSON, e.to_string()))?;
            events.push(event);
        }
        Route::Security => {
            check_event_size(cx, decoded.len(), "security report")?;
            let reports = security::parse_reports(&decoded)
                .map_err(|e| Reject::bad_request(reason::SENTRY_INVALID_JSON, e.to_string()))?;
            out.items.extend(std::iter::repeat_n(
                "security",
                reports.events.len() + reports.other,
            ));
            out.discards.extend(std::iter::repeat_n(
                reason::SENTRY_ITEM_UNSUPPORTED,
                reports.other,
            ));
            events.extend(reports.events);
        }
    }
    let Some((_, rules)) = auth else {
        return Err(Reject::unauthorized(
            "missing authorization information".into(),
        ));
    };
    let mut ncx = NormalizeContext {
        received_ns: req.received_ns,
        sent_at_ns,
        client_ip: req.client_ip,
        limits: cx.normalize.clone(),
        fallback_event_id: String::new(),
    };
    for mut event in events {
        // An event without a valid id takes the envelope's, else a new one.
        ncx.fallback_event_id = match (&out.event_id, out.records.is_empty()) {
            (Some(id), true) => id.clone(),
            _ => uuid::Uuid::new_v4().simple().to_string(),
        };
        // Normalised first, so that the filters see the client's address
        // where the SDK sent `{{auto}}`, and a unified exception list.
        let mut n = normalize(&mut event, &ncx);
        if let Some(why) = rules.filters.check(&event) {
            out.discards.push(why.as_str());
            continue;
        }
        scrub(&mut event, &rules.scrub);
        // The user as scrubbing left them (an IP may be gone).
        n.user_key = user_key(&event);
        if valid_event_id(&n.event_id).is_none() {
            // Normalisation always fills the id; this keeps the record's
            // idempotency key well-formed whatever it returned.
            n.event_id = uuid::Uuid::new_v4().simple().to_string();
            event.insert("event_id".into(), Value::from(n.event_id.clone()));
        }
        if out.records.is_empty() {
            out.event_id = Some(n.event_id.clone());
        }
        out.records.push(event_record(
            &event,
            &n,
            req.project_id,
            req.received_ns,
            &cx.resource,
        ));
    }
    out.rules = Some(rules);
    Ok(out)
}

fn check_event_size(cx: &IngestContext, len: usize, what: &str) -> Result<(), Reject> {
    if len > cx.max_event_bytes {
        return Err(Reject::too_large(
            reason::SENTRY_TOO_LARGE,
            format!(
                "{what} of {len} bytes exceeds the limit of {} bytes",
                cx.max_event_bytes
            ),
        ));
    }
    Ok(())
}

/// The auth of an envelope request: the request's, checked against the
/// envelope's `dsn` when both are there (a mismatch is refused, as Sentry
/// refuses it), else the `dsn`'s.
fn envelope_auth(
    cx: &IngestContext,
    project_id: u64,
    request: Option<(Auth, Arc<ProjectRules>)>,
    dsn: Option<&str>,
) -> Result<(Auth, Arc<ProjectRules>), Reject> {
    let dsn = match dsn {
        Some(d) => Some(
            auth::parse_dsn(d)
                .map_err(|e| Reject::unauthorized(format!("bad envelope dsn: {e}")))?,
        ),
        None => None,
    };
    if let Some(d) = dsn.as_ref().filter(|d| d.project_id != project_id) {
        return Err(Reject::bad_request(
            reason::SENTRY_AUTH,
            format!(
                "project id mismatch between envelope dsn ({}) and request ({project_id})",
                d.project_id
            ),
        ));
    }
    match (request, dsn) {
        (Some(r), None) => Ok(r),
        (Some((a, rules)), Some(d)) => {
            if d.public_key != a.public_key {
                return Err(Reject::bad_request(
                    reason::SENTRY_AUTH,
                    "public key mismatch between envelope dsn and request".into(),
                ));
            }
            Ok((a, rules))
        }
        (None, Some(d)) => {
            let rules = authorize(&cx.projects, project_id, &d.public_key)?;
            Ok((
                Auth {
                    public_key: d.public_key,
                    version: None,
                    client: None,
                },
                rules,
            ))
        }
        (None, None) => Err(Reject::unauthorized(
            "missing authorization information".into(),
        )),
    }
}

/// `key` may send to `project`, or 403.
pub fn authorize(
    projects: &Projects,
    project: u64,
    key: &str,
) -> Result<Arc<ProjectRules>, Reject> {
    projects.authorize(project, key).map_err(|d| match d {
        Denied::UnknownKey => Reject::forbidden("unknown public key".into()),
        Denied::OtherProject(_) => {
            Reject::forbidden(format!("public key is not valid for project {project}"))
        }
    })
}

/// `id` if it is an event id (32 hex digits, or a UUID with dashes), lowercased without dashes.
fn valid_event_id(id: &str) -> Option<String> {
    let compact: String = id.chars().filter(|c| *c != '-').collect();
    (compact.len() == 32 && compact.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| compact.to_ascii_lowercase())
}

fn parse_rfc3339_ns(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()?
        .timestamp_nanos_opt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mecha_parsers::sentry::filter::Filters;
    use mecha_parsers::sentry::scrub::ScrubOptions;

    fn cx(projects: Projects) -> IngestContext {
        IngestContext {
            projects,
            max_envelope_bytes: 1 << 20,
            max_event_bytes: 4096,
            max_items: 10,
            normalize: NormalizeLimits::default(),
            resource: Resource::default(),
        }
    }

    fn rules() -> ProjectRules {
        ProjectRules {
            filters: Filters::default(),
            scrub: ScrubOptions::default(),
            rate: None,
        }
    }

    fn open() -> IngestContext {
        cx(Projects::new(Vec::new(), rules()))
    }

    fn incoming(route: Route, body: &str, auth: bool) -> Incoming {
        Incoming {
            route,
            project_id: 42,
            auth: auth.then(|| {
                (
                    Auth {
                        public_key: "k".into(),
                        version: Some(7),
                        client: None,
                    },
                    Arc::new(rules()),
                )
            }),
            body: bytes::Bytes::from(body.to_string()),
            encoding: ContentEncoding::Identity,
            received_ns: 1_700_000_000_000_000_000,
            client_ip: None,
        }
    }

    fn process_all(cx: &IngestContext, req: Incoming) -> Result<Prepared, Reject> {
        process(cx, req, cx.max_envelope_bytes)
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    /// The event a record carries.
    fn event_of(r: &LogRecord) -> Value {
        let text = r.attributes.get("sentry.event").and_then(Value::as_str);
        serde_json::from_str(text.unwrap_or("")).unwrap_or_default()
    }

    #[test]
    fn an_envelope_event_takes_the_header_id_and_becomes_one_record() {
        let body =
            format!("{{\"event_id\":\"{ID}\"}}\n{{\"type\":\"event\"}}\n{{\"message\":\"hi\"}}\n");
        let p = process_all(&open(), incoming(Route::Envelope, &body, true))
            .unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(p.records.len(), 1);
        assert_eq!(p.event_id.as_deref(), Some(ID));
        let event = event_of(&p.records[0]);
        assert_eq!(event["event_id"], ID);
        assert_eq!(event["logentry"]["formatted"], "hi");
    }

    #[test]
    fn other_items_are_counted_and_a_bad_optional_item_does_not_cost_the_event() {
        let body = "{}\n{\"type\":\"session\"}\nnot json\n{\"type\":\"transaction\"}\n{\"type\":\"transaction\"}\n{\"type\":\"attachment\",\"length\":3}\nabc\n{\"type\":\"event\"}\n{\"message\":\"x\"}\n{\"type\":\"replay_event\"}\n{}";
        let p = process_all(&open(), incoming(Route::Envelope, body, true))
            .unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(p.records.len(), 1);
        assert_eq!(
            p.items,
            vec!["session", "transaction", "attachment", "event", "other"]
        );
        assert_eq!(
            p.discards,
            vec![
                reason::SENTRY_INVALID_ITEM,
                reason::SENTRY_TRANSACTION_UNSUPPORTED,
                reason::SENTRY_ATTACHMENT_UNSUPPORTED,
                reason::SENTRY_ITEM_UNSUPPORTED
            ]
        );
        // A generated id when neither the event nor the envelope has one.
        assert!(
            p.event_id
                .as_deref()
                .is_some_and(|id| valid_event_id(id).is_some())
        );
    }

    #[test]
    fn bad_bodies_are_refused_with_their_reason_and_status() {
        let cases = [
            (
                "{}\n{\"type\":\"event\",\"length\":99}\n{}\n",
                400,
                reason::SENTRY_BAD_ENVELOPE,
            ),
            (
                "{}\n{\"type\":\"event\"}\n{\"message\":\n",
                400,
                reason::SENTRY_INVALID_JSON,
            ),
            (
                "{}\n{\"type\":\"transaction\"}\n[]\n",
                400,
                reason::SENTRY_INVALID_JSON,
            ),
            (
                &*format!(
                    "{{}}\n{{\"type\":\"event\"}}\n{{\"m\":\"{}\"}}\n",
                    "x".repeat(5000)
                ),
                413,
                reason::SENTRY_TOO_LARGE,
            ),
        ];
        for (body, status, why) in cases {
            let r = process_all(&open(), incoming(Route::Envelope, body, true)).err();
            assert_eq!(
                r.as_ref().map(|r| (r.status.as_u16(), r.reason)),
                Some((status, Some(why))),
                "{body}"
            );
        }
    }

    #[test]
    fn the_envelope_dsn_authenticates_and_must_agree_with_the_request() {
        let p = Projects::new(vec![(42, vec!["good".into()], rules())], rules());
        let c = cx(p);
        let env = |dsn: &str| format!("{{\"dsn\":\"{dsn}\"}}\n{{\"type\":\"event\"}}\n{{}}\n");
        let ok = process_all(
            &c,
            incoming(Route::Envelope, &env("http://good@node:9000/42"), false),
        );
        assert!(ok.is_ok(), "{:?}", ok.err());
        let status = |r: Result<Prepared, Reject>| r.err().map(|r| r.status.as_u16());
        assert_eq!(
            status(process_all(
                &c,
                incoming(Route::Envelope, &env("http://bad@node:9000/42"), false)
            )),
            Some(403)
        );
        assert_eq!(
            status(process_all(
                &c,
                incoming(Route::Envelope, &env("http://good@node:9000/7"), false)
            )),
            Some(400)
        );
        assert_eq!(
            status(process_all(&c, incoming(Route::Envelope, "{}\n", false))),
            Some(401)
        );
        // Request auth (key "k") against a dsn naming another key.
        assert_eq!(
            status(process_all(
                &c,
                incoming(Route::Envelope, &env("http://good@node:9000/42"), true)
            )),
            Some(400)
        );
    }

    #[test]
    fn store_bodies_and_security_reports_become_events() {
        let p = process_all(
            &open(),
            incoming(Route::Store, "{\"message\":\"legacy\"}", true),
        )
        .unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(p.records.len(), 1);
        assert_eq!(p.records[0].body, "legacy");
        let csp = r#"{"csp-report":{"document-uri":"https://a/","effective-directive":"img-src","blocked-uri":"https://b/x.png"}}"#;
        let p = process_all(&open(), incoming(Route::Security, csp, true))
            .unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(
            p.records[0].body,
            "Blocked 'img-src' from 'https://b/x.png'"
        );
        let r = process_all(&open(), incoming(Route::Store, "[1]", true)).err();
        assert_eq!(r.map(|r| r.status.as_u16()), Some(400));
    }

    /// The endpoint normalises, then applies the project's filters, then
    /// scrubs, and honours a filter's verdict: whatever those rules are, the
    /// record holds exactly what calling them in that order gives, and a
    /// filtered event is counted under the filter's reason, not forwarded.
    #[test]
    fn normalisation_filters_and_scrubbing_are_applied_in_that_order() {
        use mecha_parsers::sentry::filter::FilterOptions;
        let opts = FilterOptions {
            localhost: true,
            error_messages: vec!["*dropme*".into()],
            ..FilterOptions::default()
        };
        let rules = ProjectRules {
            filters: Filters::new(&opts).unwrap_or_else(|e| panic!("{e}")),
            scrub: ScrubOptions::default(),
            rate: None,
        };
        let c = cx(Projects::new(Vec::new(), rules.clone()));
        let events = [
            serde_json::json!({"message": "dropme please", "level": "warning"}),
            serde_json::json!({"message": "keep", "request": {"url": "http://localhost/x"}}),
            // Local only once normalisation has put the client's address in.
            serde_json::json!({"event_id": ID, "message": "mine", "user": {"ip_address": "{{auto}}"}}),
            serde_json::json!({
                "event_id": ID,
                "message": "keep me",
                "extra": {"password": "hunter2", "card": "4111 1111 1111 1111"},
                "user": {"ip_address": "{{auto}}"}
            }),
        ];
        for (i, event) in events.into_iter().enumerate() {
            let body = format!("{{}}\n{{\"type\":\"event\"}}\n{event}\n");
            let mut req = incoming(Route::Envelope, &body, false);
            req.auth = Some((
                Auth {
                    public_key: "k".into(),
                    version: None,
                    client: None,
                },
                Arc::new(rules.clone()),
            ));
            let local = i == 2;
            req.client_ip = if local { "127.0.0.1" } else { "198.51.100.7" }
                .parse()
                .ok();
            let mut ncx = NormalizeContext {
                received_ns: req.received_ns,
                sent_at_ns: None,
                client_ip: req.client_ip,
                limits: c.normalize.clone(),
                fallback_event_id: String::new(),
            };
            let p = process_all(&c, req).unwrap_or_else(|r| panic!("{r:?}"));
            let Value::Object(mut expected) = event else {
                panic!("not an object");
            };
            // The fallback id is generated: take the one the endpoint used.
            if let Some(got) = p.records.first() {
                ncx.fallback_event_id = event_of(got)["event_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
            }
            normalize(&mut expected, &ncx);
            if let Some(why) = rules.filters.check(&expected) {
                assert!(p.records.is_empty());
                assert_eq!(p.discards, vec![why.as_str()]);
                assert!(i < 3, "event {i} was filtered");
                continue;
            }
            assert_eq!(i, 3, "event {i} passed the filters");
            scrub(&mut expected, &rules.scrub);
            let got = event_of(&p.records[0]);
            assert_eq!(got, Value::Object(expected));
        }
    }

    #[test]
    fn event_ids_are_hex_with_or_without_dashes() {
        assert_eq!(
            valid_event_id("0123456789ABCDEF0123456789abcdef").as_deref(),
            Some(ID)
        );
        assert_eq!(
            valid_event_id("01234567-89ab-cdef-0123-456789abcdef").as_deref(),
            Some(ID)
        );
        assert_eq!(valid_event_id("xyz"), None);
        assert_eq!(valid_event_id(""), None);
    }
}
