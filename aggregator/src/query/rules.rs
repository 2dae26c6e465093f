//! `GET /api/v1/rules`: the alert rules with their health, last evaluation,
//! last value and active (pending or firing) alerts, as of each rule's last
//! evaluation. `POST /-/reload` (as Prometheus' and Alertmanager's): reads
//! the config file again and applies its rules (see [`crate::alert::reload`]).
//!
//! Answers from the engine's status board without waiting for an
//! evaluation. This module must not evaluate or change rules itself.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;

use super::ApiState;

/// The rule routes, to merge into the API router.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/rules", axum::routing::get(list))
        .route("/-/reload", axum::routing::post(reload))
}

/// `GET /api/v1/rules`
async fn list(State(state): State<ApiState>) -> Response {
    Json(json!({ "rules": state.rules.snapshot() })).into_response()
}

/// `POST /-/reload`: 200 with the rules now evaluated and the changed
/// sections that need a restart, or 400 with why the new config was
/// refused (the running one stays).
async fn reload(State(state): State<ApiState>) -> Response {
    match state.reloader.reload().await {
        Ok(r) => Json(json!({
            "status": "success",
            "rules": r.rules,
            "restart_required": r.restart_required,
        }))
        .into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "status": "error", "error": e })),
        )
            .into_response(),
    }
}
