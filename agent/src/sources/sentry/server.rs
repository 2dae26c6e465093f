//! The HTTP layer: routes, CORS, request-level checks (auth present and
//! known, size, encoding), and the answer once the events are safe. The
//! body's work is [`super::ingest`]'s; handlers only gather the request,
//! decide where that work runs and turn outcomes into answers and counts.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;
use mecha_parsers::sentry::auth::{self, PROTOCOL_VERSION};
use mecha_parsers::sentry::encoding::ContentEncoding;
use tokio::time::Instant;

use super::COMPONENT;
use super::batch::{Batcher, Delivery, Refused};
use super::client_ip::TrustedProxies;
use super::ingest::{self, Incoming, IngestContext, Prepared, Route};
use super::listener::Peer;
use super::reply::{self, Reject};
use crate::metrics::{AgentMetrics, reason};

/// Bodies up to this size (as sent) are processed on the reactor...
const INLINE_BODY_BYTES: usize = 64 << 10;
/// ...as long as they decompress to at most this: about 0.3 ms of inflating
/// and parsing. Larger ones go to a blocking thread.
const INLINE_DECODED_BYTES: usize = 128 << 10;

/// Headers browser SDKs send (and may ask to send) cross-origin.
const ALLOW_HEADERS: &str = "x-sentry-auth, x-requested-with, origin, accept, content-type, content-encoding, authorization, sentry-trace, baggage, traceparent";
/// Headers a browser SDK must be able to read from an answer.
const EXPOSE_HEADERS: &str = "x-sentry-error, x-sentry-rate-limits, retry-after";

/// Which origins may send from a browser.
#[derive(Debug, Clone)]
pub struct Cors {
    any: bool,
    origins: Vec<String>,
}

impl Cors {
    /// From the configured origins (`*` for any).
    pub fn new(origins: &[String]) -> Self {
        Cors {
            any: origins.iter().any(|o| o == "*"),
            origins: origins
                .iter()
                .filter(|o| *o != "*")
                .map(|o| o.to_ascii_lowercase())
                .collect(),
        }
    }

    /// The `Access-Control-Allow-Origin` to answer `origin` with, if allowed.
    fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        if self.any {
            return Some(HeaderValue::from_static("*"));
        }
        let o = origin?;
        let text = o.to_str().ok()?.to_ascii_lowercase();
        self.origins.contains(&text).then(|| o.clone())
    }
}

/// What every handler shares.
pub struct Shared {
    /// Body processing context.
    pub ingest: Arc<IngestContext>,
    /// Where records go.
    pub batcher: Batcher,
    /// Metrics.
    pub metrics: Arc<AgentMetrics>,
    /// Proxies whose forwarded addresses are believed.
    pub trusted: TrustedProxies,
    /// CORS.
    pub cors: Cors,
    /// Largest body as sent.
    pub max_request_bytes: usize,
    /// Longest wait for the events to be safe.
    pub ack_timeout: Duration,
    /// Large bodies decoded at once: each may take up to the decompressed
    /// limit in memory, so their number is bounded, not their arrival.
    pub large_bodies: tokio::sync::Semaphore,
    /// Pod metadata, found by the sender's IP.
    pub kube: Option<Arc<crate::enrich::KubeMeta>>,
}

type AppState = Arc<Shared>;

/// The endpoint's routes.
pub fn router(state: AppState) -> Router {
    let route = |r: Route| {
        post(
            move |s: State<AppState>, p: Path<String>, c: ConnectInfo<Peer>, req: Request| {
                handle(s, r, p, c, req)
            },
        )
        .fallback(method_not_allowed)
    };
    let mut app = Router::new();
    for (path, r) in [
        ("envelope", Route::Envelope),
        ("store", Route::Store),
        ("security", Route::Security),
    ] {
        app = app
            .route(&format!("/api/{{project_id}}/{path}/"), route(r))
            .route(&format!("/api/{{project_id}}/{path}"), route(r));
    }
    app.fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), cors))
        .with_state(state)
}

async fn cors(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let allow = s.cors.allow(req.headers().get(header::ORIGIN));
    let mut resp = if req.method() == Method::OPTIONS {
        // A preflight: answered here for every path, without auth, as
        // browsers send no credentials with it.
        s.metrics
            .sentry_requests
            .with_label_values(&["preflight", "200"])
            .inc();
        let mut r = StatusCode::OK.into_response();
        if allow.is_some() {
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("3600"),
            );
        }
        r
    } else {
        next.run(req).await
    };
    if let Some(origin) = allow {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

async fn not_found(State(s): State<AppState>, req: Request) -> Response {
    s.metrics
        .sentry_requests
        .with_label_values(&["unknown", "404"])
        .inc();
    Reject::not_found(format!("no such endpoint: {}", req.uri().path())).into_response()
}

async fn method_not_allowed(State(s): State<AppState>, req: Request) -> Response {
    s.metrics
        .sentry_requests
        .with_label_values(&["unknown", "405"])
        .inc();
    let mut r = Reject::not_found(format!("{} is not allowed here; send POST", req.method()))
        .into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
    r
}

async fn handle(
    State(s): State<AppState>,
    route: Route,
    Path(project): Path<String>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
) -> Response {
    let resp = match serve(&s, route, &project, peer, req).await {
        Ok((prepared, n)) => {
            s.metrics.sentry_events_accepted.inc_by(n);
            s.metrics
                .events_in
                .with_label_values(&[COMPONENT])
                .inc_by(n);
            reply::accepted(prepared.event_id.as_deref())
        }
        Err((rej, events)) => {
            if let Some(why) = rej.reason {
                s.metrics
                    .discarded
                    .with_label_values(&[COMPONENT, why])
                    .inc_by(events);
            }
            if let Some(enc) = rej.decompression {
                s.metrics
                    .sentry_decompression_errors
                    .with_label_values(&[enc.as_str()])
                    .inc();
            }
            tracing::debug!(route = route.as_str(), status = rej.status.as_u16(), detail = %rej.detail, "sentry: request refused");
            rej.into_response()
        }
    };
    s.metrics
        .sentry_requests
        .with_label_values(&[route.as_str(), resp.status().as_str()])
        .inc();
    resp
}

/// A refusal and how many events it drops (1 when they were never counted).
type Refusal = (Reject, u64);

async fn serve(
    s: &Shared,
    route: Route,
    project: &str,
    peer: Peer,
    req: Request,
) -> Result<(Prepared, u64), Refusal> {
    let one = |r: Reject| (r, 1);
    let project_id = auth::parse_project_id(project).ok_or_else(|| {
        one(Reject::bad_request(
            reason::SENTRY_INVALID_PROJECT,
            format!("expected a numeric project id, found {project:?}"),
        ))
    })?;
    let (parts, body) = req.into_parts();
    let h = &parts.headers;
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    let found = auth::from_request(
        text("x-sentry-auth"),
        text("authorization"),
        parts.uri.query(),
    )
    .map_err(|e| one(Reject::unauthorized(e.to_string())))?;
    let auth = match found {
        Some((a, _)) => {
            if a.version.is_some_and(|v| v > PROTOCOL_VERSION) {
                return Err(one(Reject::bad_request(
                    reason::SENTRY_AUTH,
                    format!(
                        "unsupported protocol version ({})",
                        a.version.unwrap_or_default()
                    ),
                )));
            }
            let rules =
                ingest::authorize(&s.ingest.projects, project_id, &a.public_key).map_err(one)?;
            Some((a, rules))
        }
        // An envelope may carry its auth in its header's dsn.
        None if route == Route::Envelope => None,
        None => {
            return Err(one(Reject::unauthorized(
                "missing authorization information".into(),
            )));
        }
    };
    let encoding =
        ContentEncoding::parse(text("content-encoding").unwrap_or_default()).map_err(|e| {
            let mut r = Reject::bad_request(reason::SENTRY_DECOMPRESSION, e.to_string());
            r.status = StatusCode::UNSUPPORTED_MEDIA_TYPE;
            one(r)
        })?;
    let body = read_body(s, h, body).await.map_err(one)?;
    s.metrics
        .bytes_in
        .with_label_values(&[COMPONENT])
        .inc_by(body.len() as u64);
    let client_ip =
        s.trusted
            .client_ip(peer.addr().ip(), text("x-forwarded-for"), text("x-real-ip"));
    let incoming = Incoming {
        route,
        project_id,
        auth,
        body,
        encoding,
        received_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        client_ip: Some(client_ip),
    };
    let prepared = run_ingest(s, incoming).await.map_err(one)?;
    for item in &prepared.items {
        s.metrics.sentry_items.with_label_values(&[item]).inc();
    }
    for why in &prepared.discards {
        s.metrics
            .discarded
            .with_label_values(&[COMPONENT, why])
            .inc();
    }
    let n = prepared.records.len() as u64;
    if n == 0 {
        return Ok((prepared, 0));
    }
    if let Some(rules) = &prepared.rules {
        let want = u32::try_from(n).unwrap_or(u32::MAX);
        s.ingest
            .projects
            .take(project_id, rules, want, Instant::now())
            .map_err(|after| {
                (
                    Reject::too_many(
                        reason::SENTRY_RATE_LIMITED,
                        after,
                        "project",
                        format!("project {project_id} is over its rate limit"),
                    ),
                    n,
                )
            })?;
    }
    let mut prepared = prepared;
    let mut records = std::mem::take(&mut prepared.records);
    if let Some(kube) = &s.kube {
        // The connection's peer is the pod that sent the event (a proxy's
        // forwarded address names a client outside, not a pod).
        kube.enrich_pushed(peer.addr().ip(), &mut records, COMPONENT);
    }
    let waiting = s.batcher.submit(records).map_err(|refused| match refused {
        Refused::Full => (buffer_full(), n),
        Refused::Closed => (
            Reject::unavailable(None, Duration::from_secs(5), "the agent is stopping".into()),
            n,
        ),
    })?;
    match tokio::time::timeout(s.ack_timeout, waiting).await {
        Ok(Ok(Delivery::Safe)) => Ok((prepared, n)),
        Ok(Ok(Delivery::BufferFull)) => Err((buffer_full(), n)),
        // Counted once, by the component that dropped them (buffer or
        // forwarder): not again here, so that discards summed over
        // components are each event once.
        Ok(Ok(Delivery::Dropped)) => Err((
            Reject {
                reason: None,
                ..buffer_full()
            },
            n,
        )),
        Ok(Ok(Delivery::Closed)) | Ok(Err(_)) => Err((
            Reject::unavailable(
                None,
                Duration::from_secs(5),
                "the events were not stored; retry".into(),
            ),
            n,
        )),
        Err(_) => {
            // Not a discard: the events may still be stored; the SDK's
            // retry is deduplicated by event id downstream.
            s.metrics
                .errors
                .with_label_values(&[COMPONENT, "ack_timeout"])
                .inc();
            Err((
                Reject::unavailable(
                    None,
                    Duration::from_secs(5),
                    "the buffer did not confirm in time; retry".into(),
                ),
                n,
            ))
        }
    }
}

fn buffer_full() -> Reject {
    Reject::too_many(
        reason::SENTRY_BUFFER_FULL,
        Duration::from_secs(1),
        "organization",
        "the agent's buffer is full; retry later".into(),
    )
}

/// Reads the body, refusing it (413) past `max_request_bytes` without
/// reading further.
async fn read_body(s: &Shared, h: &HeaderMap, body: Body) -> Result<bytes::Bytes, Reject> {
    let max = s.max_request_bytes;
    let declared = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = |size: String| {
        Reject::too_large(
            reason::SENTRY_TOO_LARGE,
            format!("request body of {size} exceeds the limit of {max} bytes"),
        )
    };
    if let Some(len) = declared.filter(|l| *l > max as u64) {
        return Err(too_large(format!("{len} bytes")));
    }
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large("more bytes".into()))
        }
        Err(e) => Err(Reject::bad_request(
            reason::SENTRY_BAD_ENVELOPE,
            format!("reading the body failed: {e}"),
        )),
    }
}

/// Runs the body's work on the reactor when it is small, else (or when it
/// turns out to decompress large) on a blocking thread.
async fn run_ingest(s: &Shared, req: Incoming) -> Result<Prepared, Reject> {
    let cx = s.ingest.clone();
    if req.body.len() <= INLINE_BODY_BYTES {
        match ingest::process(
            &cx,
            req.clone(),
            INLINE_DECODED_BYTES.min(cx.max_envelope_bytes),
        ) {
            Err(r)
                if r.reason == Some(reason::SENTRY_BOMB)
                    && cx.max_envelope_bytes > INLINE_DECODED_BYTES => {}
            done => return done,
        }
    }
    let limit = cx.max_envelope_bytes;
    let _turn = s.large_bodies.acquire().await.map_err(|_| {
        Reject::unavailable(None, Duration::from_secs(1), "the agent is stopping".into())
    })?;
    tokio::task::spawn_blocking(move || ingest::process(&cx, req, limit))
        .await
        .unwrap_or_else(|e| {
            Err(Reject::unavailable(
                None,
                Duration::from_secs(1),
                format!("processing failed: {e}"),
            ))
        })
}
