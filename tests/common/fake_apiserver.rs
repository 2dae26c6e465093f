//! A small Kubernetes API server for pods and namespaces that speaks the real
//! list/watch protocol, so the unmodified `kube` client inside `mecha` can be
//! driven through what a cluster does to it:
//!
//! - `GET /api/v1/pods` and `/api/v1/namespaces`: a `PodList` /
//!   `NamespaceList` with `metadata.resourceVersion`, `limit` + `continue`
//!   pages, `fieldSelector=spec.nodeName=<node>` (also `==` and `!=`);
//!   a list at a `resourceVersion` (or a `continue` token) older than the
//!   compacted history is `410 Gone` with a `Status` body.
//! - `?watch=true`: a chunked stream of `{"type": ADDED|MODIFIED|DELETED|
//!   BOOKMARK|ERROR, "object": …}` lines: every change after the request's
//!   `resourceVersion`, then live ones; `BOOKMARK`s when
//!   `allowWatchBookmarks=true`; the stream ends after `timeoutSeconds`. A
//!   `resourceVersion` older than the history is answered with an `ERROR`
//!   event holding a `Status` with code 410, as the real server does.
//! - [`FakeApiServer::compact`] drops the history and sends that `ERROR` to
//!   every open watch; [`FakeApiServer::stop`] / [`FakeApiServer::restart`]
//!   take the server away (connections reset, port refused) and back, with
//!   resourceVersions continuing or starting over.
//! - [`FakeApiServer::end_watches`] ends every open watch as its timeout
//!   does (optionally right after a `BOOKMARK`), noting the last version each
//!   one sent; [`FakeApiServer::refuse_next_watch_with_410`] answers the next
//!   pod watch with HTTP `410 Gone` and a `Status` (reason `Expired`), as a
//!   server does that finds the version compacted before it starts streaming.
//!
//! Resource versions are one counter for both kinds, as in etcd.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// How often open watches get a `BOOKMARK` (when they asked for them).
const BOOKMARK_EVERY: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Pods,
    Namespaces,
}

impl Kind {
    fn list_kind(self) -> &'static str {
        match self {
            Kind::Pods => "PodList",
            Kind::Namespaces => "NamespaceList",
        }
    }
    fn kind(self) -> &'static str {
        match self {
            Kind::Pods => "Pod",
            Kind::Namespaces => "Namespace",
        }
    }
}

#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    kind: Kind,
    kind_of_event: &'static str,
    object: Value,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub kind: Kind,
    pub watch: bool,
    pub query: HashMap<String, String>,
    /// A list's `metadata.resourceVersion` (none for watches and errors).
    pub listed_at: Option<u64>,
}

impl Request {
    /// The `resourceVersion` it asked for (0 when absent or not a number).
    pub fn resource_version(&self) -> u64 {
        self.query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// A watch that [`FakeApiServer::end_watches`] ended.
#[derive(Clone, Copy, Debug)]
pub struct Ended {
    pub kind: Kind,
    /// The resourceVersion of the last event (or bookmark) it sent.
    pub last_sent: u64,
}

struct Inner {
    rv: u64,
    /// Events with a resourceVersion at or below this are compacted away.
    oldest: u64,
    pods: BTreeMap<String, Value>,
    namespaces: BTreeMap<String, Value>,
    history: Vec<Event>,
    live: broadcast::Sender<Event>,
    requests: Vec<Request>,
    ended: Vec<Ended>,
    /// The next pod watch gets HTTP 410.
    refuse_next_pod_watch: bool,
    /// Put just before the next pod list page asked with a `continue`
    /// token is served: the token's snapshot is then gone.
    put_before_next_page: Option<Value>,
}

impl Inner {
    /// Creates or replaces `object`, telling the watches; its version.
    fn put(&mut self, kind: Kind, mut object: Value) -> u64 {
        self.rv += 1;
        let rv = self.rv;
        let key = key_of(kind, &object);
        object["apiVersion"] = json!("v1");
        object["kind"] = json!(kind.kind());
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if object["metadata"]["creationTimestamp"].is_null() {
            object["metadata"]["creationTimestamp"] =
                json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        let map = match kind {
            Kind::Pods => &mut self.pods,
            Kind::Namespaces => &mut self.namespaces,
        };
        let kind_of_event = if map.insert(key, object.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let e = Event {
            rv,
            kind,
            kind_of_event,
            object,
        };
        self.history.push(e.clone());
        let _ = self.live.send(e);
        rv
    }
}

type Shared = Arc<Mutex<Inner>>;

fn lock(s: &Shared) -> MutexGuard<'_, Inner> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The server; it stops when dropped.
pub struct FakeApiServer {
    state: Shared,
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeApiServer {
    /// Starts on a free port of 127.0.0.1.
    pub fn start() -> FakeApiServer {
        let (live, _) = broadcast::channel(4096);
        let state = Arc::new(Mutex::new(Inner {
            rv: 100,
            oldest: 0,
            pods: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            history: Vec::new(),
            live,
            requests: Vec::new(),
            ended: Vec::new(),
            refuse_next_pod_watch: false,
            put_before_next_page: None,
        }));
        let mut s = FakeApiServer {
            state,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            runtime: None,
        };
        s.serve();
        s
    }

    fn serve(&mut self) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("fake apiserver runtime: {e}"));
        let state = self.state.clone();
        let want = self.addr;
        let addr = runtime.block_on(async move {
            let listener = bind(want).await;
            let addr = listener
                .local_addr()
                .unwrap_or_else(|e| panic!("fake apiserver address: {e}"));
            let app = Router::new()
                .route("/api/v1/pods", get(pods))
                .route("/api/v1/namespaces", get(namespaces))
                .with_state(state);
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            addr
        });
        self.addr = addr;
        self.runtime = Some(runtime);
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.state).rv
    }

    /// Takes the server away: open watches are cut, new connections refused.
    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Ends every task, connections included: their sockets close.
            rt.shutdown_background();
        }
    }

    /// Brings it back on the same port. `reset_versions`: as after a restore
    /// of etcd, resourceVersions start over (below what clients hold), and
    /// the history is gone.
    pub fn restart(&mut self, reset_versions: bool) {
        self.stop();
        {
            let mut guard = lock(&self.state);
            let s = &mut *guard;
            if reset_versions {
                s.rv = 1;
                s.oldest = 1;
                s.history.clear();
                let rv = s.rv.to_string();
                for o in s.pods.values_mut().chain(s.namespaces.values_mut()) {
                    o["metadata"]["resourceVersion"] = json!(rv);
                }
            }
            let (live, _) = broadcast::channel(4096);
            s.live = live;
        }
        self.serve();
    }

    /// Drops the history: watches from an older resourceVersion get `410`,
    /// and every open watch gets an `ERROR` event with code 410 and ends.
    pub fn compact(&self) {
        let mut s = lock(&self.state);
        s.oldest = s.rv;
        s.history.clear();
        let gone = Event {
            rv: 0,
            kind: Kind::Pods,
            kind_of_event: "GONE",
            object: Value::Null,
        };
        let _ = s.live.send(gone);
    }

    /// Ends every open watch cleanly, as its `timeoutSeconds` would: no
    /// `ERROR`, so the client may resume from the last version it saw. With
    /// `bookmark`, a watch that asked for bookmarks first gets a `BOOKMARK`
    /// at the current resourceVersion.
    pub fn end_watches(&self, bookmark: bool) {
        let s = lock(&self.state);
        let end = Event {
            rv: s.rv,
            kind: Kind::Pods,
            kind_of_event: if bookmark {
                "END_AFTER_BOOKMARK"
            } else {
                "END"
            },
            object: Value::Null,
        };
        let _ = s.live.send(end);
    }

    /// The watches ended by [`FakeApiServer::end_watches`], in order.
    pub fn ended(&self) -> Vec<Ended> {
        lock(&self.state).ended.clone()
    }

    /// Answers the next pod watch request with HTTP `410 Gone`.
    pub fn refuse_next_watch_with_410(&self) {
        lock(&self.state).refuse_next_pod_watch = true;
    }

    /// Creates or replaces `pod` when a pod list asks for its next page,
    /// just before answering: as when a pod changes while a client pages
    /// through a list, the page gets `410 Gone` (its token's snapshot is
    /// no longer served).
    pub fn put_pod_before_next_page(&self, pod: Value) {
        lock(&self.state).put_before_next_page = Some(pod);
    }

    /// Creates or replaces a pod (`metadata.namespace`/`name` identify it).
    pub fn put_pod(&self, pod: Value) -> u64 {
        self.put(Kind::Pods, pod)
    }

    /// Deletes a pod.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> u64 {
        self.delete(Kind::Pods, &format!("{namespace}/{name}"))
    }

    /// Creates or replaces a namespace.
    pub fn put_namespace(&self, ns: Value) -> u64 {
        self.put(Kind::Namespaces, ns)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.state).requests.clone()
    }

    fn put(&self, kind: Kind, object: Value) -> u64 {
        lock(&self.state).put(kind, object)
    }

    fn delete(&self, kind: Kind, key: &str) -> u64 {
        let mut s = lock(&self.state);
        let map = match kind {
            Kind::Pods => &mut s.pods,
            Kind::Namespaces => &mut s.namespaces,
        };
        let Some(mut object) = map.remove(key) else {
            return s.rv;
        };
        s.rv += 1;
        let rv = s.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let e = Event {
            rv,
            kind,
            kind_of_event: "DELETED",
            object,
        };
        s.history.push(e.clone());
        let _ = s.live.send(e);
        rv
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds `addr`, retrying a moment when the port is still held by the
/// previous incarnation's closing sockets.
async fn bind(addr: SocketAddr) -> tokio::net::TcpListener {
    let mut last = None;
    for _ in 0..100 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fake apiserver cannot bind {addr}: {last:?}");
}

fn key_of(kind: Kind, o: &Value) -> String {
    let name = o["metadata"]["name"].as_str().unwrap_or_default();
    match kind {
        Kind::Pods => format!(
            "{}/{name}",
            o["metadata"]["namespace"].as_str().unwrap_or_default()
        ),
        Kind::Namespaces => name.to_owned(),
    }
}

/// A `fieldSelector` of pods: `spec.nodeName=x`, `==`, `!=`, comma-joined.
fn selected(kind: Kind, selector: Option<&String>, o: &Value) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    sel.split(',').all(|term| {
        let (field, want, negate) = if let Some((f, v)) = term.split_once("!=") {
            (f, v, true)
        } else if let Some((f, v)) = term.split_once("==") {
            (f, v, false)
        } else if let Some((f, v)) = term.split_once('=') {
            (f, v, false)
        } else {
            return false;
        };
        let have = match (kind, field) {
            (Kind::Pods, "spec.nodeName") => o["spec"]["nodeName"].as_str().unwrap_or_default(),
            (_, "metadata.name") => o["metadata"]["name"].as_str().unwrap_or_default(),
            (_, "metadata.namespace") => o["metadata"]["namespace"].as_str().unwrap_or_default(),
            _ => return false,
        };
        (have == want) != negate
    })
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

fn gone_response(message: &str) -> Response {
    (
        StatusCode::GONE,
        [(header::CONTENT_TYPE, "application/json")],
        status(410, "Expired", message).to_string(),
    )
        .into_response()
}

async fn pods(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    handle(s, Kind::Pods, q)
}

async fn namespaces(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    handle(s, Kind::Namespaces, q)
}

fn handle(s: Shared, kind: Kind, q: HashMap<String, String>) -> Response {
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    let mut st = lock(&s);
    st.requests.push(Request {
        kind,
        watch,
        query: q.clone(),
        listed_at: None,
    });
    if watch {
        drop(st);
        return watch_response(&s, kind, &q);
    }
    if kind == Kind::Pods
        && q.get("continue").is_some_and(|c| !c.is_empty())
        && let Some(pod) = st.put_before_next_page.take()
    {
        st.put(Kind::Pods, pod);
    }
    let (response, at) = list(&st, kind, &q);
    if let Some(r) = st.requests.last_mut() {
        r.listed_at = at;
    }
    response
}

/// The list response, and its resourceVersion when it is one.
fn list(st: &Inner, kind: Kind, q: &HashMap<String, String>) -> (Response, Option<u64>) {
    let selector = q.get("fieldSelector");
    // A continue token is "<resourceVersion>:<index of the next item>".
    let (at_rv, from) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let parsed = token
                .split_once(':')
                .and_then(|(rv, i)| Some((rv.parse::<u64>().ok()?, i.parse::<usize>().ok()?)));
            match parsed {
                Some((rv, i)) if rv >= st.oldest && rv == st.rv => (rv, i),
                // The snapshot of the token is no longer served.
                _ => {
                    return (
                        gone_response(
                            "The provided continue parameter is too old to display a consistent list result.",
                        ),
                        None,
                    );
                }
            }
        }
        None => {
            if let Some(rv) = q
                .get("resourceVersion")
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|rv| *rv != 0)
                && rv < st.oldest
            {
                return (
                    gone_response(&format!(
                        "Timeout: Too large resource version or too old: {rv}"
                    )),
                    None,
                );
            }
            (st.rv, 0)
        }
    };
    let map = match kind {
        Kind::Pods => &st.pods,
        Kind::Namespaces => &st.namespaces,
    };
    let all: Vec<&Value> = map
        .values()
        .filter(|o| selected(kind, selector, o))
        .collect();
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let page: Vec<Value> = all
        .iter()
        .skip(from)
        .take(limit)
        .map(|o| (*o).clone())
        .collect();
    let next = from + page.len();
    let mut metadata = json!({"resourceVersion": at_rv.to_string()});
    if next < all.len() {
        metadata["continue"] = json!(format!("{at_rv}:{next}"));
    }
    let body =
        json!({"apiVersion": "v1", "kind": kind.list_kind(), "metadata": metadata, "items": page});
    let response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    (response, Some(at_rv))
}

/// The resourceVersion of an object.
fn rv_of(o: &Value) -> u64 {
    o["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn line(kind_of_event: &str, object: &Value) -> bytes::Bytes {
    let mut b = json!({"type": kind_of_event, "object": object}).to_string();
    b.push('\n');
    bytes::Bytes::from(b)
}

fn watch_response(s: &Shared, kind: Kind, q: &HashMap<String, String>) -> Response {
    let selector = q.get("fieldSelector").cloned();
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let mut st = lock(s);
    if kind == Kind::Pods && std::mem::take(&mut st.refuse_next_pod_watch) {
        return gone_response("too old resource version");
    }
    let from = q
        .get("resourceVersion")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    // Each line with the resourceVersion it tells the client.
    let mut first: Vec<(bytes::Bytes, u64)> = Vec::new();
    if from != 0 && (from < st.oldest || from > st.rv) {
        // What the real server sends for a version it no longer has.
        let e = status(
            410,
            "Expired",
            &format!("too old resource version: {from} ({})", st.oldest),
        );
        let body = Body::from_stream(futures::stream::iter([Ok::<_, std::io::Error>(line(
            "ERROR", &e,
        ))]));
        return ok_stream(body);
    }
    if from == 0 {
        // "Any": the current state as ADDED events, then changes.
        let map = match kind {
            Kind::Pods => &st.pods,
            Kind::Namespaces => &st.namespaces,
        };
        for o in map
            .values()
            .filter(|o| selected(kind, selector.as_ref(), o))
        {
            first.push((line("ADDED", o), rv_of(o)));
        }
    } else {
        for e in st.history.iter().filter(|e| e.rv > from && e.kind == kind) {
            if selected(kind, selector.as_ref(), &e.object) {
                first.push((line(e.kind_of_event, &e.object), e.rv));
            }
        }
    }
    let live = st.live.subscribe();
    let state = s.clone();
    drop(st);
    struct W {
        first: std::vec::IntoIter<(bytes::Bytes, u64)>,
        /// The version of the last line sent.
        last_sent: u64,
        live: broadcast::Receiver<Event>,
        deadline: tokio::time::Instant,
        bookmarks: Option<tokio::time::Interval>,
        state: Shared,
        done: bool,
    }
    let w = W {
        first: first.into_iter(),
        last_sent: from,
        live,
        deadline: tokio::time::Instant::now() + timeout,
        bookmarks: bookmarks.then(|| tokio::time::interval(BOOKMARK_EVERY)),
        state,
        done: false,
    };
    let stream = futures::stream::unfold(w, move |mut w| {
        let selector = selector.clone();
        async move {
            if w.done {
                return None;
            }
            if let Some((b, rv)) = w.first.next() {
                w.last_sent = rv;
                return Some((Ok::<_, std::io::Error>(b), w));
            }
            let bookmark_line = |rv: u64| {
                let o = json!({"kind": kind.kind(), "apiVersion": "v1",
                               "metadata": {"resourceVersion": rv.to_string()}});
                line("BOOKMARK", &o)
            };
            loop {
                let bookmark = async {
                    match w.bookmarks.as_mut() {
                        Some(i) => {
                            i.tick().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep_until(w.deadline) => return None,
                    () = bookmark => {
                        w.last_sent = lock(&w.state).rv;
                        return Some((Ok(bookmark_line(w.last_sent)), w));
                    }
                    e = w.live.recv() => match e {
                        Ok(e) if e.kind_of_event == "GONE" => {
                            w.done = true;
                            let st = status(410, "Expired", "too old resource version");
                            return Some((Ok(line("ERROR", &st)), w));
                        }
                        Ok(e) if e.kind_of_event.starts_with("END") => {
                            w.done = true;
                            let bookmark = w.bookmarks.is_some() && e.kind_of_event == "END_AFTER_BOOKMARK";
                            if bookmark {
                                w.last_sent = e.rv;
                            }
                            lock(&w.state).ended.push(Ended { kind, last_sent: w.last_sent });
                            if bookmark {
                                return Some((Ok(bookmark_line(e.rv)), w));
                            }
                            return None;
                        }
                        Ok(e) if e.kind == kind && selected(kind, selector.as_ref(), &e.object) => {
                            w.last_sent = e.rv;
                            return Some((Ok(line(e.kind_of_event, &e.object)), w));
                        }
                        Ok(_) => continue,
                        // Lagging this far never happens in tests; a real
                        // server would end the watch too.
                        Err(_) => return None,
                    },
                }
            }
        }
    });
    ok_stream(Body::from_stream(stream))
}

fn ok_stream(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_else(|e| panic!("watch response: {e}"))
}
