//! The Alertmanager bridge: `POST /api/v1/alertmanager/{receiver}` takes
//! Alertmanager's webhook payload (version 4) and delivers it through the
//! named receiver, so a team's existing Alertmanager reaches WeCom,
//! DingTalk and Feishu through mecha.
//!
//! Answers: 200 when delivered; 503 when delivery may succeed later
//! (Alertmanager retries 5xx); 422 when it cannot (a bad robot key:
//! Alertmanager does not retry 4xx); 400 with a JSON reason for a payload
//! that is not version 4 or not JSON; 404 for an unknown receiver; 413 over
//! 1 MiB. Every request is counted by outcome. This module must not group
//! or deduplicate: Alertmanager already did.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::ApiState;
use crate::alert::model::Notification;
use crate::alert::notify::NotifyError;

/// Largest payload accepted.
pub const MAX_BODY: usize = 1024 * 1024;

/// The bridge's route.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/alertmanager/{receiver}", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

fn answer(state: &ApiState, outcome: &'static str, status: StatusCode, body: Value) -> Response {
    state.metrics.notify.bridge_request(outcome);
    (status, Json(body)).into_response()
}

async fn receive(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return answer(
                &state,
                "too_large",
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": format!("expected a payload of at most {MAX_BODY} bytes")}),
            );
        }
        Err(r) => {
            return answer(
                &state,
                "bad_request",
                StatusCode::BAD_REQUEST,
                json!({"error": r.body_text()}),
            );
        }
    };
    let Some(receiver) = state.receivers.get(&name).cloned() else {
        return answer(
            &state,
            "unknown_receiver",
            StatusCode::NOT_FOUND,
            json!({"error": format!("no receiver {name:?} in aggregator.alerting.receivers")}),
        );
    };
    let n = match parse(&body) {
        Ok(n) => n,
        Err(reason) => {
            return answer(
                &state,
                "bad_request",
                StatusCode::BAD_REQUEST,
                json!({"error": reason}),
            );
        }
    };
    match receiver.notify(&n).await {
        Ok(()) => answer(
            &state,
            "delivered",
            StatusCode::OK,
            json!({"status": "delivered", "alerts": n.alerts.len()}),
        ),
        Err(e @ NotifyError::Retryable { .. }) => answer(
            &state,
            "retryable_error",
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": e.to_string()}),
        ),
        Err(e @ NotifyError::Permanent { .. }) => answer(
            &state,
            "permanent_error",
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": e.to_string()}),
        ),
    }
}

/// Reads an Alertmanager webhook payload, version 4 only.
pub fn parse(body: &[u8]) -> Result<Notification, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("expected an Alertmanager webhook payload (JSON): {e}"))?;
    match v.get("version") {
        Some(Value::String(s)) if s == "4" => {}
        Some(other) => {
            return Err(format!(
                "expected payload version \"4\", found {}",
                crate::alert::notify::split::truncate(&other.to_string(), 40)
            ));
        }
        None => return Err("expected payload version \"4\", found no version".into()),
    }
    serde_json::from_value(v)
        .map_err(|e| format!("expected an Alertmanager webhook payload (version 4): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &str = r#"{"receiver":"mecha","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"A"},"annotations":{},"startsAt":"2026-12-01T08:00:00.123Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://p/graph","fingerprint":"0123456789abcdef"}],"groupLabels":{},"commonLabels":{"alertname":"A"},"commonAnnotations":{},"externalURL":"http://am:9093","version":"4","groupKey":"{}:{}","truncatedAlerts":0}"#;

    #[test]
    fn a_version_4_payload_is_read() {
        let n = parse(PAYLOAD.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.alerts.len(), 1);
        assert_eq!(n.alerts[0].generator_url, "http://p/graph");
    }

    #[test]
    fn other_versions_and_bad_json_are_refused_with_a_reason() {
        let v3 = PAYLOAD.replace(r#""version":"4""#, r#""version":"3""#);
        let e = parse(v3.as_bytes()).err().unwrap_or_default();
        assert!(e.contains("version \"4\", found \"3\""), "{e}");
        let e = parse(b"{not json").err().unwrap_or_default();
        assert!(
            e.starts_with("expected an Alertmanager webhook payload (JSON)"),
            "{e}"
        );
        let e = parse(br#"{"version":"4"}"#).err().unwrap_or_default();
        assert!(e.contains("missing field"), "{e}");
    }
}
