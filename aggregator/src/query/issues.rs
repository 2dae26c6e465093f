//! The issues API: list, detail with the latest event, an issue's events,
//! and status changes.
//!
//! - `GET /api/v1/issues?project=&status=&q=&sort=&limit=&cursor=`
//! - `GET /api/v1/issues/{id}`
//! - `GET /api/v1/issues/{id}/events?limit=&cursor=`
//! - `PUT /api/v1/issues/{id}` with `{"status": "resolved"|"unresolved"|"ignored"}`
//!
//! Store reads and writes run on blocking threads. Bad parameters and bodies
//! get 400 and unknown ids 404, each with `{"error": reason}`. This module
//! must not group events or touch the log index.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::{ApiState, error_response, params, rfc3339};
use crate::Error;
use crate::issues::Status;
use crate::issues::grouping;
use crate::issues::store::{EventPage, Issue, IssuePage, IssueStore, ListQuery, Sort, StoredEvent};
use crate::metrics::SearchOutcome;
use crate::store::days;

/// Issues per page when `limit` is not given.
pub const DEFAULT_ISSUES: usize = 100;
/// Largest page of issues; larger limits are lowered to it.
pub const MAX_ISSUES: usize = 1_000;
/// Events per page when `limit` is not given.
pub const DEFAULT_EVENTS: usize = 50;
/// Largest page of events.
pub const MAX_EVENTS: usize = 500;

/// The issue routes, to merge into the API router.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/issues", axum::routing::get(list))
        .route(
            "/api/v1/issues/{id}",
            axum::routing::get(detail).put(update),
        )
        .route("/api/v1/issues/{id}/events", axum::routing::get(events))
}

type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

/// `GET /api/v1/issues`
async fn list(State(state): State<ApiState>, query: Params) -> Response {
    let result = async {
        let params = query_params(query, "project, status, q, sort, limit, cursor")?;
        let q = list_query(&params)?;
        let page = blocking(&state, move |s| s.list(&q)).await?;
        Ok(render_page(page))
    }
    .await;
    respond(&state, result)
}

/// `GET /api/v1/issues/{id}`
async fn detail(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let result = async {
        let id = issue_id(&id)?;
        let (issue, latest) = blocking(&state, move |s| {
            let issue = s.get(id)?;
            let latest = match &issue {
                Some(_) => s.latest_event(id)?,
                None => None,
            };
            Ok((issue, latest))
        })
        .await?;
        let issue = found(issue, id)?;
        let mut v = render_issue(&issue);
        if let Value::Object(m) = &mut v {
            m.insert(
                "latest_event".into(),
                latest.map_or(Value::Null, render_full_event),
            );
        }
        Ok(v)
    }
    .await;
    respond(&state, result)
}

/// `GET /api/v1/issues/{id}/events`
async fn events(State(state): State<ApiState>, Path(id): Path<String>, query: Params) -> Response {
    let result = async {
        let id = issue_id(&id)?;
        let params = query_params(query, "limit, cursor")?;
        let limit = params::parse_limit_within(
            params.get("limit").map(String::as_str),
            DEFAULT_EVENTS,
            MAX_EVENTS,
        )?;
        let cursor = params.get("cursor").map(|c| event_cursor(c)).transpose()?;
        let (issue, page) = blocking(&state, move |s| {
            Ok((s.get(id)?, s.events(id, limit, cursor)?))
        })
        .await?;
        found(issue, id)?;
        Ok(render_events(page))
    }
    .await;
    respond(&state, result)
}

/// `PUT /api/v1/issues/{id}`
async fn update(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let result = async {
        let id = issue_id(&id)?;
        let Json(body) = body.map_err(|e| Error::Param {
            name: "body",
            expected: r#"a JSON object such as {"status": "resolved"}"#,
            found: e.body_text(),
        })?;
        let status = body
            .get("status")
            .and_then(Value::as_str)
            .and_then(Status::parse)
            .ok_or_else(|| Error::Param {
                name: "status",
                expected: "\"resolved\", \"unresolved\" or \"ignored\"",
                found: body
                    .get("status")
                    .map_or_else(|| "nothing".to_string(), Value::to_string),
            })?;
        let now = days::now_ns();
        let updated = blocking(&state, move |s| s.set_status(id, status, now)).await;
        if updated.is_err() {
            state.metrics.issue_store_error("update");
        }
        Ok(render_issue(&found(updated?, id)?))
    }
    .await;
    respond(&state, result)
}

/// Runs `f` on the issue store on a blocking thread.
async fn blocking<T: Send + 'static>(
    state: &ApiState,
    f: impl FnOnce(&IssueStore) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let store = Arc::clone(&state.issues);
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| Error::Task {
            what: "issue store",
            reason: e.to_string(),
        })?
}

fn respond(state: &ApiState, result: Result<Value, Error>) -> Response {
    match result {
        Ok(v) => {
            state.metrics.issue_request(SearchOutcome::Ok);
            Json(v).into_response()
        }
        Err(e @ Error::NotFound { .. }) => {
            state.metrics.issue_request(SearchOutcome::BadRequest);
            error_response(StatusCode::NOT_FOUND, &e)
        }
        Err(e) if e.is_bad_request() => {
            state.metrics.issue_request(SearchOutcome::BadRequest);
            error_response(StatusCode::BAD_REQUEST, &e)
        }
        Err(e) => {
            state.metrics.issue_request(SearchOutcome::Error);
            tracing::warn!(error = %e, "issues request failed");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, &e)
        }
    }
}

fn query_params(query: Params, expected: &'static str) -> Result<HashMap<String, String>, Error> {
    query.map(|Query(p)| p).map_err(|rejection| Error::Param {
        name: "query string",
        expected,
        found: rejection.body_text(),
    })
}

/// An issue id from the path: anything but a positive integer is an
/// unknown issue.
fn issue_id(text: &str) -> Result<u64, Error> {
    text.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| Error::NotFound {
            what: "issue",
            id: text.chars().take(64).collect(),
        })
}

fn found(issue: Option<Issue>, id: u64) -> Result<Issue, Error> {
    issue.ok_or_else(|| Error::NotFound {
        what: "issue",
        id: id.to_string(),
    })
}

fn list_query(params: &HashMap<String, String>) -> Result<ListQuery, Error> {
    let text = |k: &str| params.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let project = text("project")
        .map(|p| {
            p.parse::<u64>().map_err(|_| Error::Param {
                name: "project",
                expected: "a numeric project id",
                found: p.to_string(),
            })
        })
        .transpose()?;
    let status = match text("status") {
        None => Some(Status::Unresolved),
        Some("all") => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| Error::Param {
            name: "status",
            expected: "unresolved, resolved, ignored or all",
            found: s.to_string(),
        })?),
    };
    let sort = match text("sort") {
        None => Sort::default(),
        Some(s) => Sort::parse(s).ok_or_else(|| Error::Param {
            name: "sort",
            expected: "last_seen, first_seen, count or users",
            found: s.to_string(),
        })?,
    };
    let limit = params::parse_limit_within(text("limit"), DEFAULT_ISSUES, MAX_ISSUES)?;
    let cursor = text("cursor").map(issue_cursor).transpose()?;
    Ok(ListQuery {
        project,
        status,
        text: text("q").map(str::to_string),
        sort,
        limit,
        cursor,
    })
}

const CURSOR_EXPECTED: &str = "the `next` of a previous page";

fn bad_cursor(text: &str) -> Error {
    Error::Param {
        name: "cursor",
        expected: CURSOR_EXPECTED,
        found: text.chars().take(64).collect(),
    }
}

/// `<sort key>:<issue id>`.
fn issue_cursor(text: &str) -> Result<(i64, u64), Error> {
    let (key, id) = text.split_once(':').ok_or_else(|| bad_cursor(text))?;
    match (key.parse::<i64>(), id.parse::<u64>()) {
        (Ok(k), Ok(i)) => Ok((k, i)),
        _ => Err(bad_cursor(text)),
    }
}

/// `<event time ns>:<event id>`.
fn event_cursor(text: &str) -> Result<(i64, String), Error> {
    let (ts, id) = text.split_once(':').ok_or_else(|| bad_cursor(text))?;
    let valid_id = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    match ts.parse::<i64>() {
        Ok(t) if valid_id => Ok((t, id.to_string())),
        _ => Err(bad_cursor(text)),
    }
}

fn render_page(page: IssuePage) -> Value {
    json!({
        "issues": page.issues.iter().map(render_issue).collect::<Vec<_>>(),
        "next": page.next.map(|(k, id)| format!("{k}:{id}")),
    })
}

/// An issue as the API shows it.
pub fn render_issue(i: &Issue) -> Value {
    json!({
        "id": i.id,
        "project": i.project,
        "title": i.title,
        "culprit": i.culprit,
        "level": i.level,
        "status": i.status.as_str(),
        "regressed": i.regressed,
        "count": i.count,
        "users": i.users,
        "first_seen": rfc3339(i.first_seen_ns),
        "last_seen": rfc3339(i.last_seen_ns),
        "releases": i.releases,
        "environments": i.environments,
        "grouped_by": i.method,
        "hashes": i.hashes,
        "latest_event_id": i.latest_event_id,
        "resolved_at": i.resolved_at_ns.map(rfc3339),
    })
}

/// The whole stored event, with its id and time made explicit.
fn render_full_event(e: StoredEvent) -> Value {
    let mut event = match e.event {
        Value::Object(m) => m,
        other => Map::from_iter([("raw".to_string(), other)]),
    };
    event.insert("event_id".into(), Value::from(e.event_id));
    event.insert("timestamp".into(), Value::from(rfc3339(e.timestamp_ns)));
    Value::Object(event)
}

fn render_events(page: EventPage) -> Value {
    let events: Vec<Value> = page.events.into_iter().map(render_event_summary).collect();
    json!({
        "events": events,
        "next": page.next.map(|(ts, id)| format!("{ts}:{id}")),
    })
}

/// One line of an issue's event list.
fn render_event_summary(e: StoredEvent) -> Value {
    let empty = Map::new();
    let m = e.event.as_object().unwrap_or(&empty);
    let field = |k: &str| m.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "event_id": e.event_id,
        "timestamp": rfc3339(e.timestamp_ns),
        "level": m.get("level").and_then(Value::as_str).unwrap_or("error"),
        "message": grouping::title(m),
        "tags": m.get("tags").cloned().unwrap_or_else(|| json!([])),
        "user": field("user"),
        "release": field("release"),
        "environment": field("environment"),
        "platform": field("platform"),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::{Value, json};

    use crate::issues::IssueEvent;
    use crate::store::days::now_ns;
    use crate::test_support::*;
    use crate::{Aggregator, IngestOutcome};

    const MINUTE_NS: i64 = 60_000_000_000;

    fn exception(ty: &str, value: &str, function: &str, user: &str) -> Value {
        json!({
            "level": "error",
            "platform": "python",
            "release": "shop@1.4.2",
            "environment": "production",
            "user": {"id": user},
            "tags": [["tenant", "acme"]],
            "extra": {"order": 42},
            "breadcrumbs": {"values": [{"message": "clicked pay"}]},
            "request": {"url": "https://shop.example.com/pay", "method": "POST"},
            "exception": {"values": [{
                "type": ty,
                "value": value,
                "stacktrace": {"frames": [
                    {"module": "shop.pay", "function": function, "lineno": 3, "in_app": true}
                ]}
            }]}
        })
    }

    async fn push(agg: &Aggregator, ts: i64, n: u32, event: &Value) -> IngestOutcome {
        let r = event_record(ts, "1", &format!("{n:032x}"), event);
        agg.ingest().push(vec![r]).await.unwrap()
    }

    /// Two issues: a KeyError seen three times by two users, a ValueError once.
    async fn seeded() -> (tempfile::TempDir, Aggregator, i64) {
        let dir = tempdir();
        let agg = Aggregator::start(options(dir.path())).await.unwrap();
        let now = now_ns();
        let key_error = |v: &str, u: &str| exception("KeyError", v, "charge", u);
        push(&agg, now - 30 * MINUTE_NS, 1, &key_error("'a'", "u1")).await;
        push(&agg, now - 20 * MINUTE_NS, 2, &key_error("'b'", "u2")).await;
        push(&agg, now - 10 * MINUTE_NS, 3, &key_error("'c'", "u1")).await;
        let v = exception("ValueError", "bad amount", "parse", "u3");
        push(&agg, now - 5 * MINUTE_NS, 4, &v).await;
        (dir, agg, now)
    }

    async fn call(
        addr: std::net::SocketAddr,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut req = reqwest::Client::new().request(method, format!("http://{addr}{path}"));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
        call(addr, reqwest::Method::GET, path, None).await
    }

    fn ids(v: &Value) -> Vec<u64> {
        v["issues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_u64().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn issues_list_with_counts_users_and_releases_newest_first() {
        let (_dir, agg, _) = seeded().await;
        let addr = agg.http_addr().unwrap();
        let (status, v) = get(addr, "/api/v1/issues").await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(ids(&v), [2, 1]);
        let key_error = &v["issues"][1];
        assert_eq!(key_error["title"], "KeyError: 'c'");
        assert_eq!(key_error["culprit"], "shop.pay in charge");
        assert_eq!(
            (&key_error["count"], &key_error["users"]),
            (&json!(3), &json!(2))
        );
        assert_eq!(key_error["level"], "error");
        assert_eq!(key_error["status"], "unresolved");
        assert_eq!(key_error["regressed"], false);
        assert_eq!(key_error["releases"], json!(["shop@1.4.2"]));
        assert_eq!(key_error["environments"], json!(["production"]));
        assert_eq!(key_error["project"], 1);
        assert!(
            key_error["first_seen"].as_str().unwrap() < key_error["last_seen"].as_str().unwrap()
        );
        assert_eq!(v["next"], Value::Null);
        let (_, by_count) = get(addr, "/api/v1/issues?sort=count").await;
        assert_eq!(ids(&by_count), [1, 2]);
        let (_, found) = get(addr, "/api/v1/issues?q=valueerror&project=1").await;
        assert_eq!(ids(&found), [2]);
        let (_, none) = get(addr, "/api/v1/issues?project=2").await;
        assert_eq!(ids(&none), Vec::<u64>::new());
        // Pages of one follow the cursor to the end.
        let (_, first) = get(addr, "/api/v1/issues?limit=1").await;
        let next = first["next"].as_str().unwrap();
        let (_, second) = get(addr, &format!("/api/v1/issues?limit=1&cursor={next}")).await;
        assert_eq!((ids(&first), ids(&second)), (vec![2], vec![1]));
        assert_eq!(second["next"], Value::Null);
        agg.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn detail_has_the_latest_event_and_events_list_newest_first() {
        let (_dir, agg, _) = seeded().await;
        let addr = agg.http_addr().unwrap();
        let (status, v) = get(addr, "/api/v1/issues/1").await;
        assert_eq!(status, 200, "{v}");
        let latest = &v["latest_event"];
        assert_eq!(latest["event_id"], format!("{:032x}", 3));
        assert_eq!(latest["extra"]["order"], 42);
        assert_eq!(latest["exception"]["values"][0]["value"], "'c'");
        assert_eq!(
            latest["exception"]["values"][0]["stacktrace"]["frames"][0]["function"],
            "charge"
        );
        assert_eq!(latest["breadcrumbs"]["values"][0]["message"], "clicked pay");
        assert_eq!(latest["request"]["method"], "POST");
        assert_eq!(latest["user"]["id"], "u1");
        assert_eq!(latest["tags"], json!([["tenant", "acme"]]));
        let (status, v) = get(addr, "/api/v1/issues/1/events?limit=2").await;
        assert_eq!(status, 200, "{v}");
        let events = v["events"].as_array().unwrap();
        let ids: Vec<&str> = events
            .iter()
            .map(|e| e["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [format!("{:032x}", 3), format!("{:032x}", 2)]);
        assert_eq!(events[0]["message"], "KeyError: 'c'");
        assert_eq!(events[0]["level"], "error");
        assert_eq!(events[0]["tags"], json!([["tenant", "acme"]]));
        let next = v["next"].as_str().unwrap();
        let (_, rest) = get(addr, &format!("/api/v1/issues/1/events?cursor={next}")).await;
        assert_eq!(rest["events"].as_array().unwrap().len(), 1);
        assert_eq!(rest["next"], Value::Null);
        agg.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn resolving_hides_an_issue_until_a_new_event_reopens_it_as_regressed() {
        let (_dir, agg, now) = seeded().await;
        let addr = agg.http_addr().unwrap();
        let mut hooks = agg.subscribe_issues();
        let put =
            |body: &'static str| call(addr, reqwest::Method::PUT, "/api/v1/issues/1", Some(body));
        let (status, v) = put(r#"{"status": "resolved"}"#).await;
        assert_eq!((status, v["status"].as_str()), (200, Some("resolved")));
        let (_, open) = get(addr, "/api/v1/issues").await;
        assert_eq!(ids(&open), [2]);
        let (_, resolved) = get(addr, "/api/v1/issues?status=resolved").await;
        assert_eq!(ids(&resolved), [1]);
        let (_, all) = get(addr, "/api/v1/issues?status=all").await;
        assert_eq!(ids(&all).len(), 2);
        // A replay of an old event changes nothing; a new one reopens.
        let old = exception("KeyError", "'a'", "charge", "u1");
        let o = push(&agg, now - 30 * MINUTE_NS, 1, &old).await;
        assert_eq!(o.duplicates, 1);
        assert_eq!(get(addr, "/api/v1/issues/1").await.1["status"], "resolved");
        push(&agg, now_ns(), 5, &old).await;
        let (_, v) = get(addr, "/api/v1/issues/1").await;
        assert_eq!(
            (v["status"].as_str(), v["regressed"].as_bool()),
            (Some("unresolved"), Some(true))
        );
        assert_eq!(v["count"], 4);
        let announced: Vec<IssueEvent> = std::iter::from_fn(|| hooks.try_recv().ok()).collect();
        assert!(
            matches!(&announced[..], [IssueEvent::Regressed { issue, .. }, IssueEvent::Event { .. }] if issue.id == 1),
            "{announced:?}"
        );
        let (_, v) = put(r#"{"status": "ignored"}"#).await;
        assert_eq!(
            (v["status"].as_str(), v["regressed"].as_bool()),
            (Some("ignored"), Some(false))
        );
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in [
            "mecha_aggregator_issues_created_total 2",
            "mecha_aggregator_issues_regressed_total 1",
            "mecha_aggregator_issue_events_total{outcome=\"grouped\"} 5",
            "mecha_aggregator_issue_events_total{outcome=\"duplicate\"} 1",
            "mecha_aggregator_issue_events_total{outcome=\"received\"} 6",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        agg.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn new_issues_are_announced_after_both_commits() {
        let dir = tempdir();
        let agg = Aggregator::start(options(dir.path())).await.unwrap();
        let mut hooks = agg.subscribe_issues();
        let now = now_ns();
        push(&agg, now, 1, &exception("KeyError", "'a'", "charge", "u1")).await;
        match hooks.try_recv().unwrap() {
            IssueEvent::Created { issue, event_id } => {
                assert_eq!((issue.id, issue.count), (1, 1));
                assert_eq!(event_id, format!("{:032x}", 1));
                // Announced means searchable.
                let hits = agg
                    .store()
                    .search("sentry.issue_id:1", now - 1, now + 1, 1)
                    .unwrap();
                assert_eq!(hits.total, 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            hooks.try_recv().unwrap(),
            IssueEvent::Event { .. }
        ));
        push(&agg, now, 1, &exception("KeyError", "'a'", "charge", "u1")).await;
        assert!(hooks.try_recv().is_err(), "a replay announces nothing");
        agg.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn bad_ids_get_404_and_bad_parameters_and_bodies_400_with_a_reason() {
        let (_dir, agg, _) = seeded().await;
        let addr = agg.http_addr().unwrap();
        for path in [
            "/api/v1/issues/999",
            "/api/v1/issues/abc",
            "/api/v1/issues/0",
            "/api/v1/issues/-1",
            "/api/v1/issues/99999999999999999999999",
            "/api/v1/issues/999/events",
        ] {
            let (status, v) = get(addr, path).await;
            assert_eq!(status, 404, "{path} gave {v}");
            assert!(v["error"].as_str().unwrap().starts_with("no issue"), "{v}");
        }
        for path in [
            "/api/v1/issues?status=open",
            "/api/v1/issues?sort=random",
            "/api/v1/issues?project=shop",
            "/api/v1/issues?limit=many",
            "/api/v1/issues?cursor=garbage",
            "/api/v1/issues?cursor=1:x",
            "/api/v1/issues/1/events?cursor=5:nothex",
            "/api/v1/issues/1/events?limit=-1",
        ] {
            let (status, v) = get(addr, path).await;
            assert_eq!(status, 400, "{path} gave {v}");
            assert!(
                v["error"].as_str().unwrap().starts_with("parameter "),
                "{v}"
            );
        }
        // A huge limit is lowered, not refused.
        let (status, v) = get(addr, "/api/v1/issues?limit=1000000000").await;
        assert_eq!((status, ids(&v).len()), (200, 2));
        for (body, status) in [
            ("{\"status\": \"fixed\"}", 400),
            ("{}", 400),
            ("not json", 400),
            ("[\"resolved\"]", 400),
        ] {
            let (got, v) = call(addr, reqwest::Method::PUT, "/api/v1/issues/1", Some(body)).await;
            assert_eq!(got, status, "{body} gave {v}");
            assert!(v["error"].as_str().is_some(), "{v}");
        }
        let (got, _) = call(
            addr,
            reqwest::Method::PUT,
            "/api/v1/issues/77",
            Some("{\"status\": \"resolved\"}"),
        )
        .await;
        assert_eq!(got, 404);
        agg.shutdown().await.unwrap();
    }
}
