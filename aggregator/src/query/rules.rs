//! `GET /api/v1/rules`: the alert rules with their health, last evaluation,
//! last value and active (pending or firing) alerts, as of each rule's last
//! evaluation.
//!
//! Answers from the engine's status board without waiting for an
//! evaluation. This module must not evaluate or change rules.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;

use super::ApiState;

/// The rule routes, to merge into the API router.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/rules", axum::routing::get(list))
}

/// `GET /api/v1/rules`
async fn list(State(state): State<ApiState>) -> Response {
    Json(json!({ "rules": state.rules.snapshot() })).into_response()
}
