//! The admin listener (`:9600` by default): `/metrics` for Prometheus, `/health`
//! for liveness, `/ready` for readiness with the reasons it is not ready.
//!
//! Readiness problems are reported by components through [`Readiness`] (for
//! instance an unwritable data dir); the listener only shows them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::Shutdown;
use crate::metrics::AgentMetrics;

/// What components report about their readiness.
#[derive(Debug, Default)]
pub struct Readiness {
    started: std::sync::atomic::AtomicBool,
    problems: Mutex<BTreeMap<String, String>>,
}

impl Readiness {
    /// Marks start-up as complete.
    pub fn set_started(&self) {
        self.started
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Reports a problem of `component`, or clears it with `None`.
    pub fn set_problem(&self, component: &str, problem: Option<String>) {
        if let Ok(mut p) = self.problems.lock() {
            match problem {
                Some(text) => p.insert(component.to_string(), text),
                None => p.remove(component),
            };
        }
    }

    pub(crate) fn snapshot(&self) -> (bool, BTreeMap<String, String>) {
        let problems = self.problems.lock().map(|p| p.clone()).unwrap_or_default();
        let started = self.started.load(std::sync::atomic::Ordering::SeqCst);
        (started && problems.is_empty(), problems)
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Arc<AgentMetrics>,
    readiness: Arc<Readiness>,
}

/// Binds the admin listener and serves it until shutdown; returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<AgentMetrics>,
    readiness: Arc<Readiness>,
    shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready_handler))
        .with_state(AdminState { metrics, readiness });
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    Ok((addr, task))
}

async fn metrics_handler(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn ready_handler(State(s): State<AdminState>) -> impl IntoResponse {
    let (ready, problems) = s.readiness.snapshot();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "ready": ready, "problems": problems });
    (status, axum::Json(body))
}
