//! The HTTP API: log search, issues ([`issues`]), alerts and silences
//! ([`alerts`]), health, readiness and the aggregator's `/metrics`.
//!
//! Handlers translate HTTP to store calls and back; searches run on blocking
//! threads because tantivy reads are CPU and disk work. This module must not
//! write to the store.

pub mod alerts;
pub mod bridge;
pub mod issues;
pub mod params;
pub mod rules;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::Error;
use crate::issues::IssueStore;
use crate::metrics::{Metrics, SearchOutcome};
use crate::store::{Hit, SearchResult, Store, days};

/// What the HTTP handlers share.
#[derive(Clone, Debug)]
pub(crate) struct ApiState {
    pub store: Arc<Store>,
    pub issues: Arc<IssueStore>,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub alerting: crate::alert::Alerting,
    pub rules: crate::alert::rules::RuleBoard,
    /// Alert receivers by name, for the Alertmanager bridge.
    pub receivers: crate::alert::notify::Receivers,
    /// Config reloads (`POST /-/reload`).
    pub reloader: crate::alert::reload::Reloader,
}

/// The routes of the HTTP API.
pub(crate) fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/logs/search", get(search))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(issues::routes())
        .merge(alerts::routes())
        .merge(rules::routes())
        .merge(bridge::routes())
        .with_state(state)
}

async fn health() -> &'static str {
    "ok"
}

async fn ready(State(state): State<ApiState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "indexes not open yet").into_response()
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /api/v1/logs/search?q=&from=&to=&limit=`
async fn search(
    State(state): State<ApiState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let response = match query {
        Ok(Query(params)) => run_search(&state, params).await,
        Err(rejection) => Err(Error::Param {
            name: "query string",
            expected: "URL-encoded parameters q, from, to, limit",
            found: rejection.body_text(),
        }),
    };
    match response {
        Ok(result) => {
            state.metrics.search(SearchOutcome::Ok);
            Json(render(result)).into_response()
        }
        Err(e) if e.is_bad_request() => {
            state.metrics.search(SearchOutcome::BadRequest);
            error_response(StatusCode::BAD_REQUEST, &e)
        }
        Err(e) => {
            state.metrics.search(SearchOutcome::Error);
            tracing::warn!(error = %e, "search failed");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, &e)
        }
    }
}

async fn run_search(
    state: &ApiState,
    params: HashMap<String, String>,
) -> Result<SearchResult, Error> {
    let now = days::now_ns();
    let to = match params.get("to") {
        Some(t) => params::parse_time("to", t, now)?,
        None => now,
    };
    let from = match params.get("from") {
        Some(t) => params::parse_time("from", t, now)?,
        None => to.saturating_sub(params::DEFAULT_LOOKBACK_NS),
    };
    if from > to {
        return Err(Error::Param {
            name: "from",
            expected: "a time not after `to`",
            found: params.get("from").cloned().unwrap_or_default(),
        });
    }
    let limit = params::parse_limit(params.get("limit").map(String::as_str))?;
    let q = params.get("q").cloned().unwrap_or_default();
    // Parse on the reactor (cheap) so a bad query fails fast without a thread.
    state.store.parse_query(&q)?;
    let store = Arc::clone(&state.store);
    tokio::task::spawn_blocking(move || store.search(&q, from, to, limit))
        .await
        .map_err(|e| Error::Task {
            what: "search",
            reason: e.to_string(),
        })?
}

fn render(result: SearchResult) -> Value {
    json!({
        "total": result.total,
        "hits": result.hits.into_iter().map(render_hit).collect::<Vec<_>>(),
    })
}

/// A time in nanoseconds as RFC 3339 UTC with nanoseconds.
fn rfc3339(ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn render_hit(hit: Hit) -> Value {
    json!({
        "timestamp": rfc3339(hit.timestamp_ns),
        "severity": hit.severity,
        "body": hit.body,
        "attributes": hit.attributes,
        "resource": hit.resource,
    })
}

fn error_response(status: StatusCode, error: &Error) -> Response {
    (status, Json(json!({ "error": error.to_string() }))).into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use mecha_parsers::Severity;
    use serde_json::Value;

    use crate::Aggregator;
    use crate::store::days::now_ns;
    use crate::test_support::*;

    const MINUTE_NS: i64 = 60_000_000_000;

    async fn seeded() -> (tempfile::TempDir, Aggregator, i64) {
        let dir = tempdir();
        let agg = Aggregator::start(options(dir.path())).await.unwrap();
        let now = now_ns();
        let records = vec![
            with_attr(
                record(
                    now - 30 * MINUTE_NS + 123,
                    Severity::Error,
                    "shop",
                    "card declined",
                ),
                "user",
                "Ann",
            ),
            record(now - 20 * MINUTE_NS, Severity::Info, "shop", "order placed"),
            record(now - 10 * MINUTE_NS, Severity::Error, "bank", "ledger down"),
        ];
        let outcome = agg.ingest().push(records).await.unwrap();
        assert_eq!(outcome.accepted, 3);
        (dir, agg, now)
    }

    fn bodies(v: &Value) -> Vec<&str> {
        v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["body"].as_str().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn search_returns_matching_hits_as_json() {
        let (_dir, agg, now) = seeded().await;
        let addr = agg.http_addr().unwrap();
        let (status, v) = search(addr, &[("q", "level:error AND namespace:shop")]).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["total"], 1);
        let hit = &v["hits"][0];
        assert_eq!(hit["severity"], "error");
        assert_eq!(hit["body"], "card declined");
        assert_eq!(hit["attributes"]["user"], "Ann");
        assert_eq!(hit["resource"]["k8s.namespace.name"], "shop");
        let ts = hit["timestamp"].as_str().unwrap();
        let parsed = chrono::DateTime::parse_from_rfc3339(ts).unwrap();
        assert_eq!(
            parsed.timestamp_nanos_opt(),
            Some(now - 30 * MINUTE_NS + 123)
        );
        assert!(ts.ends_with('Z') && ts.contains('.'), "{ts}");
        let (_, v) = search(addr, &[("q", "user:ann")]).await;
        assert_eq!(bodies(&v), ["card declined"]);
        agg.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn search_orders_newest_first_and_honours_range_and_limit() {
        let (_dir, agg, now) = seeded().await;
        let addr = agg.http_addr().unwrap();
        let (_, v) = search(addr, &[]).await;
        assert_eq!(bodies(&v), ["ledger down", "order placed", "card declined"]);
        let (_, v) = search(addr, &[("q", "*"), ("from", "now-15m")]).await;
        assert_eq!(bodies(&v), ["ledger down"]);
        let (_, v) = search(addr, &[("from", "25m"), ("to", "now-15m")]).await;
        assert_eq!(bodies(&v), ["order placed"]);
        let from_ms = ((now - 40 * MINUTE_NS) / 1_000_000).to_string();
        let to = chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(now - 25 * MINUTE_NS)
            .to_rfc3339();
        let (_, v) = search(addr, &[("from", &from_ms), ("to", &to)]).await;
        assert_eq!(bodies(&v), ["card declined"]);
        let (_, v) = search(addr, &[("limit", "1")]).await;
        assert_eq!(
            (v["total"].as_u64(), bodies(&v)),
            (Some(3), vec!["ledger down"])
        );
        agg.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn bad_queries_and_parameters_get_400_with_a_reason() {
        let (_dir, agg, _) = seeded().await;
        let addr = agg.http_addr().unwrap();
        for params in [
            vec![("q", "level:(error")],
            vec![("q", "timestamp:[yesterday TO now]")],
            vec![("from", "last tuesday")],
            vec![("to", "now-1y")],
            vec![("limit", "many")],
            vec![("from", "now-1h"), ("to", "now-2h")],
        ] {
            let (status, v) = search(addr, &params).await;
            assert_eq!(status, 400, "{params:?} gave {v}");
            let reason = v["error"].as_str().unwrap();
            assert!(
                reason.starts_with("invalid query") || reason.starts_with("parameter "),
                "{params:?} gave {reason:?}"
            );
        }
        agg.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn health_ready_and_metrics_answer() {
        let (_dir, agg, _) = seeded().await;
        let addr = agg.http_addr().unwrap();
        let get = |path: &'static str| async move {
            let resp = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        };
        assert_eq!(get("/health").await, (200, "ok".to_string()));
        assert_eq!(get("/ready").await.0, 200);
        search(addr, &[("q", "level:(")]).await;
        let (status, text) = get("/metrics").await;
        assert_eq!(status, 200);
        for line in [
            "mecha_aggregator_received_records_total{transport=\"in_process\"} 3",
            "mecha_aggregator_indexed_records_total 3",
            "mecha_aggregator_search_requests_total{outcome=\"bad_request\"} 1",
            "mecha_aggregator_index_days",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        agg.shutdown().await.unwrap();
    }
}
