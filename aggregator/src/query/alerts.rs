//! The alerts and silences API, shaped like Alertmanager's v2 API so that
//! its users (and scripts) read it the same:
//!
//! - `GET /api/v1/alerts?filter=&silenced=&inhibited=&active=`: unresolved
//!   alerts with `status.state` (`active` or `suppressed`), `silencedBy`,
//!   `inhibitedBy` and `receivers`; `filter` (repeatable) is a matcher such
//!   as `alertname="X"`.
//! - `GET /api/v1/silences`, `GET /api/v1/silences/{id}`.
//! - `POST /api/v1/silences` with `{matchers, startsAt?, endsAt, createdBy,
//!   comment, id?}` → `{"silenceID": id}`; a matcher is
//!   `{name, value, isRegex, isEqual}` or a string `name=~"value"`.
//! - `DELETE /api/v1/silences/{id}`: expires the silence now.
//!
//! Bad bodies get 400 and unknown ids 404, each with `{"error": reason}`.
//! This module must not route or notify: it reads and changes the
//! dispatcher's state through its methods.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use mecha_config::{MatchOp, Matcher};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiState, error_response};
use crate::Error;
use crate::alert::dispatch::AlertView;
use crate::alert::dispatch::silence::Silence;

/// The alert and silence routes, to merge into the API router.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/silences", get(list_silences).post(post_silence))
        .route(
            "/api/v1/silences/{id}",
            get(get_silence).delete(expire_silence),
        )
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn respond(result: Result<Value, Error>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e @ Error::NotFound { .. }) => error_response(StatusCode::NOT_FOUND, &e),
        Err(e) if e.is_bad_request() => error_response(StatusCode::BAD_REQUEST, &e),
        Err(e) => {
            tracing::warn!(error = %e, "alerts API request failed");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, &e)
        }
    }
}

/// `GET /api/v1/alerts`
async fn list_alerts(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let result = (|| -> Result<Value, Error> {
        let Query(params) = query.map_err(|r| Error::Param {
            name: "query string",
            expected: "filter, silenced, inhibited, active",
            found: r.body_text(),
        })?;
        let mut filters = Vec::new();
        let (mut silenced, mut inhibited, mut active) = (true, true, true);
        for (k, v) in &params {
            match k.as_str() {
                "filter" => filters.push(Matcher::parse(v).map_err(|reason| Error::Invalid {
                    what: "filter",
                    reason,
                })?),
                "silenced" => silenced = flag("silenced", v)?,
                "inhibited" => inhibited = flag("inhibited", v)?,
                "active" => active = flag("active", v)?,
                _ => {}
            }
        }
        let alerts: Vec<Value> = state
            .alerting
            .dispatcher()
            .alerts()
            .into_iter()
            .filter(|v| mecha_config::matches_all(&filters, &v.alert.labels))
            .filter(|v| {
                let is_silenced = !v.silenced_by.is_empty();
                let is_inhibited = !v.inhibited_by.is_empty();
                (silenced || !is_silenced)
                    && (inhibited || !is_inhibited)
                    && (active || is_silenced || is_inhibited)
            })
            .map(|v| render_alert(&v))
            .collect();
        Ok(Value::Array(alerts))
    })();
    respond(result)
}

fn flag(name: &'static str, v: &str) -> Result<bool, Error> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(Error::Param {
            name,
            expected: "true or false",
            found: v.to_string(),
        }),
    }
}

fn render_alert(v: &AlertView) -> Value {
    let a = &v.alert;
    let ends_at = if a.ends_at > a.starts_at {
        Value::from(time(&a.ends_at))
    } else {
        Value::Null
    };
    json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "startsAt": time(&a.starts_at),
        "endsAt": ends_at,
        "generatorURL": a.generator_url,
        "fingerprint": a.fingerprint,
        "receivers": v.receivers.iter().map(|r| json!({"name": r})).collect::<Vec<_>>(),
        "status": {
            "state": v.state(),
            "silencedBy": v.silenced_by,
            "inhibitedBy": v.inhibited_by,
        },
    })
}

fn render_silence(s: &Silence, now: DateTime<Utc>) -> Value {
    json!({
        "id": s.id,
        "matchers": s.matchers.iter().map(|m| json!({
            "name": m.name,
            "value": m.value,
            "isRegex": m.is_regex(),
            "isEqual": m.is_equal(),
        })).collect::<Vec<_>>(),
        "startsAt": time(&s.starts_at),
        "endsAt": time(&s.ends_at),
        "updatedAt": time(&s.updated_at),
        "createdBy": s.created_by,
        "comment": s.comment,
        "status": { "state": s.state(now).as_str() },
    })
}

/// `GET /api/v1/silences`: newest end first, like `amtool silence query`.
async fn list_silences(State(state): State<ApiState>) -> Response {
    let d = state.alerting.dispatcher();
    let now = d.now();
    let mut all = d.silences();
    all.sort_by(|a, b| b.ends_at.cmp(&a.ends_at).then_with(|| a.id.cmp(&b.id)));
    let v: Vec<Value> = all.iter().map(|s| render_silence(s, now)).collect();
    Json(Value::Array(v)).into_response()
}

/// `GET /api/v1/silences/{id}`
async fn get_silence(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let d = state.alerting.dispatcher();
    respond(
        d.silence(&id)
            .map(|s| render_silence(&s, d.now()))
            .ok_or_else(|| Error::NotFound {
                what: "silence",
                id: id.chars().take(64).collect(),
            }),
    )
}

/// `DELETE /api/v1/silences/{id}`
async fn expire_silence(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let d = state.alerting.dispatcher();
    let result = d.expire_silence(&id).await;
    respond(result.map(|s| render_silence(&s, d.now())))
}

/// A matcher in a request: Alertmanager's object or the string form.
#[derive(Deserialize)]
#[serde(untagged)]
enum MatcherIn {
    Text(String),
    #[serde(rename_all = "camelCase")]
    Object {
        name: String,
        value: String,
        #[serde(default)]
        is_regex: bool,
        #[serde(default = "yes")]
        is_equal: bool,
    },
}

fn yes() -> bool {
    true
}

/// The body of `POST /api/v1/silences`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SilenceIn {
    #[serde(default)]
    id: String,
    matchers: Vec<MatcherIn>,
    #[serde(default)]
    starts_at: Option<DateTime<Utc>>,
    ends_at: DateTime<Utc>,
    created_by: String,
    #[serde(default)]
    comment: String,
}

/// `POST /api/v1/silences`
async fn post_silence(
    State(state): State<ApiState>,
    body: Result<Json<SilenceIn>, JsonRejection>,
) -> Response {
    let d = state.alerting.dispatcher();
    let result = async {
        let Json(body) = body.map_err(|r| Error::Invalid {
            what: "silence",
            reason: format!(
                "expected JSON with matchers, endsAt, createdBy and comment: {}",
                r.body_text()
            ),
        })?;
        let mut matchers = Vec::with_capacity(body.matchers.len());
        for m in body.matchers {
            let parsed = match m {
                MatcherIn::Text(t) => Matcher::parse(&t),
                MatcherIn::Object {
                    name,
                    value,
                    is_regex,
                    is_equal,
                } => {
                    let op = match (is_regex, is_equal) {
                        (false, true) => MatchOp::Equal,
                        (false, false) => MatchOp::NotEqual,
                        (true, true) => MatchOp::Regex,
                        (true, false) => MatchOp::NotRegex,
                    };
                    Matcher::new(&name, op, &value)
                }
            };
            matchers.push(parsed.map_err(|reason| Error::Invalid {
                what: "silence",
                reason,
            })?);
        }
        let now = d.now();
        let silence = Silence {
            id: body.id,
            matchers,
            starts_at: body.starts_at.unwrap_or(now),
            ends_at: body.ends_at,
            updated_at: now,
            created_by: body.created_by,
            comment: body.comment,
        };
        let id = d.upsert_silence(silence).await?;
        Ok(json!({ "silenceID": id }))
    }
    .await;
    respond(result)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::{Value, json};

    use crate::Aggregator;
    use crate::alert::model::{Alert, AlertStatus};
    use crate::test_support::*;

    fn alert(pairs: &[(&str, &str)]) -> Alert {
        Alert {
            status: AlertStatus::Firing,
            labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: Default::default(),
            starts_at: chrono::Utc::now(),
            ends_at: chrono::DateTime::UNIX_EPOCH,
            generator_url: "http://mecha/search".into(),
            fingerprint: String::new(),
            value: None,
        }
    }

    async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
        let mut req = reqwest::Client::new().request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    #[tokio::test]
    async fn silences_are_created_listed_and_expired_over_http_and_mute_alerts() {
        let dir = tempdir();
        let agg = Aggregator::start(options(dir.path())).await.unwrap();
        let base = format!("http://{}/api/v1", agg.http_addr().unwrap());
        agg.alert_sink().put(vec![
            alert(&[("alertname", "Down"), ("namespace", "shop-eu")]),
            alert(&[("alertname", "Down"), ("namespace", "bank")]),
        ]);
        let ends = (chrono::Utc::now() + chrono::TimeDelta::hours(2)).to_rfc3339();
        let (status, v) = call(
            reqwest::Method::POST,
            format!("{base}/silences"),
            Some(json!({
                "matchers": [
                    {"name": "alertname", "value": "Down", "isRegex": false, "isEqual": true},
                    "namespace=~\"shop.*\"",
                ],
                "endsAt": ends,
                "createdBy": "ann",
                "comment": "deploy",
            })),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        let id = v["silenceID"].as_str().unwrap().to_string();

        let (_, list) = call(reqwest::Method::GET, format!("{base}/silences"), None).await;
        assert_eq!(list.as_array().map(Vec::len), Some(1));
        let s = &list[0];
        assert_eq!(s["id"], id.as_str());
        assert_eq!(s["status"]["state"], "active");
        assert_eq!(s["createdBy"], "ann");
        assert_eq!(
            s["matchers"][1],
            json!({"name": "namespace", "value": "shop.*", "isRegex": true, "isEqual": true})
        );

        let (_, alerts) = call(reqwest::Method::GET, format!("{base}/alerts"), None).await;
        let states: Vec<(String, String, Value)> = alerts
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["labels"]["namespace"].as_str().unwrap().to_string(),
                    a["status"]["state"].as_str().unwrap().to_string(),
                    a["status"]["silencedBy"].clone(),
                )
            })
            .collect();
        assert_eq!(
            states,
            [
                ("bank".into(), "active".into(), json!([])),
                ("shop-eu".into(), "suppressed".into(), json!([id])),
            ]
        );
        let (_, unsilenced) = call(
            reqwest::Method::GET,
            format!(
                "{base}/alerts?silenced=false&filter={}",
                encode("alertname=\"Down\"")
            ),
            None,
        )
        .await;
        assert_eq!(unsilenced.as_array().map(Vec::len), Some(1));

        let (status, v) = call(
            reqwest::Method::DELETE,
            format!("{base}/silences/{id}"),
            None,
        )
        .await;
        assert_eq!(
            (status, &v["status"]["state"]),
            (200, &json!("expired")),
            "{v}"
        );
        let (_, alerts) = call(reqwest::Method::GET, format!("{base}/alerts"), None).await;
        assert!(
            alerts
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["status"]["state"] == "active"),
            "{alerts}"
        );
        let (status, _) = call(
            reqwest::Method::DELETE,
            format!("{base}/silences/{id}"),
            None,
        )
        .await;
        assert_eq!(status, 400, "expiring twice");
        let (status, _) = call(reqwest::Method::GET, format!("{base}/silences/nope"), None).await;
        assert_eq!(status, 404);
        agg.shutdown().await.unwrap();

        // Silences survive a restart.
        let agg = Aggregator::start(options(dir.path())).await.unwrap();
        let base = format!("http://{}/api/v1", agg.http_addr().unwrap());
        let (_, v) = call(reqwest::Method::GET, format!("{base}/silences/{id}"), None).await;
        assert_eq!(v["status"]["state"], "expired");
        agg.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn bad_silences_get_400_with_a_reason() {
        let dir = tempdir();
        let agg = Aggregator::start(options(dir.path())).await.unwrap();
        let url = format!("http://{}/api/v1/silences", agg.http_addr().unwrap());
        let ends = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
        let past = (chrono::Utc::now() - chrono::TimeDelta::hours(1)).to_rfc3339();
        let cases = [
            (
                json!({"matchers": [], "endsAt": ends, "createdBy": "a"}),
                "at least one matcher",
            ),
            (
                json!({"matchers": ["a=~\"(\""], "endsAt": ends, "createdBy": "a"}),
                "invalid regex",
            ),
            (
                json!({"matchers": ["a=\"1\""], "endsAt": past, "createdBy": "a"}),
                "endsAt",
            ),
            (
                json!({"matchers": ["a=\"1\""], "endsAt": ends, "createdBy": ""}),
                "createdBy",
            ),
            (json!({"matchers": ["a=\"1\""], "createdBy": "a"}), "endsAt"),
        ];
        for (body, want) in cases {
            let (status, v) = call(reqwest::Method::POST, url.clone(), Some(body.clone())).await;
            let reason = v["error"].as_str().unwrap_or_default();
            assert_eq!(status, 400, "{body} gave {v}");
            assert!(reason.contains(want), "{body}: {reason}");
        }
        agg.shutdown().await.unwrap();
    }
}
