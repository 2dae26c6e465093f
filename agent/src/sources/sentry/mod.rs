//! The Sentry source: the endpoint (`:9000` by default) that Sentry SDKs
//! send to when their DSN names the node, `http://<key>@<node>:9000/<project>`.
//!
//! It speaks Sentry's ingestion protocol (`/api/{project}/envelope/`,
//! `/store/`, `/security/`), authenticates by per-project public keys,
//! limits sizes, stops decompression bombs, answers browsers' CORS, rate
//! limits per project, and turns each event into one OTLP log record (see
//! `mecha_parsers::sentry::record`) sent through the same pipeline as file
//! lines. A request is answered 200 only once its events are safe: fsynced
//! in the disk buffer, or (memory buffer) committed by the aggregator. When
//! they cannot be, it is answered 429/503 with `Retry-After`, so that the SDK
//! retries instead of losing them.
//!
//! This room must not parse protocols itself (the parsers crate does) nor
//! group, index or store events (the aggregator does).
//!
//! - [`listener`]: TCP accept and the optional PROXY protocol;
//! - [`server`]: routes, CORS, request checks and answers;
//! - [`ingest`]: the body's work (decode, parse, filter, normalise, scrub);
//! - [`projects`]: keys, per-project rules and rate limits;
//! - [`client_ip`]: the client address behind trusted proxies;
//! - [`batch`]: events of concurrent requests joined into chunks;
//! - [`reply`]: the answers SDKs read.

pub mod batch;
pub mod client_ip;
pub mod ingest;
pub mod listener;
pub mod projects;
pub mod reply;
pub mod server;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mecha_config::SentryConfig;
use mecha_parsers::sentry::normalize::NormalizeLimits;
use mecha_parsers::{Resource, model::keys};
use tokio::task::JoinHandle;

use crate::Shutdown;
use crate::metrics::AgentMetrics;
use crate::pipeline::Output;

/// The component name in metrics.
pub const COMPONENT: &str = "sentry";

/// Largest chunk of encoded events sent at once (the tail source's size).
const MAX_CHUNK_BYTES: usize = 1 << 20;
/// How long a chunk may wait for room in the pipeline before its requests
/// are told the buffer is full.
const SEND_WAIT: Duration = Duration::from_secs(2);

/// Bodies too large for the reactor decoded at once (about the cores of a
/// node agent's share): with the default limits at most 2 × 100 MiB of
/// decompressed envelopes in memory.
const LARGE_BODIES_AT_ONCE: usize = 2;

/// Why the source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SentryError {
    /// A filter or scrub option the parsers refused.
    #[error("agent.sentry.{key}: {reason}")]
    Config {
        /// The config key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The listener could not bind.
    #[error("sentry listener {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// A running Sentry endpoint.
pub struct SentryHandle {
    addr: SocketAddr,
    server: JoinHandle<()>,
    batcher: JoinHandle<()>,
}

impl SentryHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the server has answered its last request and every
    /// event it queued has been handed to the pipeline.
    pub async fn join(self) {
        if let Err(e) = self.server.await {
            tracing::error!(error = %e, "sentry server task failed");
        }
        if let Err(e) = self.batcher.await {
            tracing::error!(error = %e, "sentry batcher task failed");
        }
    }
}

/// Starts the endpoint of `config` on `addr`, sending to `output`.
pub async fn start(
    config: &SentryConfig,
    addr: SocketAddr,
    node_name: Option<&str>,
    kube: Option<Arc<crate::enrich::KubeMeta>>,
    output: Output,
    metrics: Arc<AgentMetrics>,
    shutdown: Shutdown,
) -> Result<SentryHandle, SentryError> {
    let ingest = Arc::new(ingest_context(config, node_name)?);
    let shared_open_mode = ingest.projects.open_mode();
    let (shared, batcher_task) = shared(config, ingest, kube, output, metrics.clone());
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| SentryError::Bind {
            addr,
            reason: e.to_string(),
        })?;
    let bound = tcp.local_addr().map_err(|e| SentryError::Bind {
        addr,
        reason: e.to_string(),
    })?;
    let listener = listener::SentryListener::start(
        tcp,
        listener::Accepting {
            proxy_protocol: config.proxy_protocol,
            timeout: config.proxy_protocol_timeout.0,
            max_connections: config.limits.max_connections,
        },
        metrics,
        shutdown.clone(),
    )
    .map_err(|e| SentryError::Bind {
        addr,
        reason: e.to_string(),
    })?;
    let app = server::router(shared).into_make_service_with_connect_info::<listener::Peer>();
    let server = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "sentry listener failed");
        }
    });
    if shared_open_mode {
        tracing::warn!(
            listen = %bound,
            "sentry: no projects configured: open mode, any key is accepted for any project id; configure agent.sentry.projects to restrict"
        );
    }
    tracing::info!(listen = %bound, "sentry endpoint listening");
    Ok(SentryHandle {
        addr: bound,
        server,
        batcher: batcher_task,
    })
}

/// What the handlers share, and the batching task feeding `output`.
fn shared(
    config: &SentryConfig,
    ingest: Arc<ingest::IngestContext>,
    kube: Option<Arc<crate::enrich::KubeMeta>>,
    output: Output,
    metrics: Arc<AgentMetrics>,
) -> (Arc<server::Shared>, JoinHandle<()>) {
    let trusted = client_ip::TrustedProxies::new(
        config
            .trusted_proxies
            .iter()
            .filter_map(|p| mecha_config::parse_cidr(p))
            .collect(),
    );
    let (batcher, task) =
        batch::Batcher::start(output, config.queue_events, MAX_CHUNK_BYTES, SEND_WAIT);
    let shared = Arc::new(server::Shared {
        ingest,
        batcher,
        metrics,
        trusted,
        cors: server::Cors::new(&config.cors_origins),
        max_request_bytes: config.limits.max_request_bytes.as_usize(),
        ack_timeout: config.ack_timeout.0,
        large_bodies: tokio::sync::Semaphore::new(LARGE_BODIES_AT_ONCE),
        kube,
    });
    (shared, task)
}

/// The body-processing context of `config`: projects, rules, limits.
pub fn ingest_context(
    config: &SentryConfig,
    node_name: Option<&str>,
) -> Result<ingest::IngestContext, SentryError> {
    let bad = |key: String| {
        move |e: mecha_parsers::ParseError| SentryError::Config {
            key,
            reason: e.to_string(),
        }
    };
    let default_rules =
        projects::rules_from_config(&config.filters, &config.scrub, config.rate_limit.as_ref())
            .map_err(bad("filters".into()))?;
    let mut list = Vec::new();
    for (i, p) in config.projects.iter().enumerate() {
        let rules = projects::rules_from_config(
            p.filters.as_ref().unwrap_or(&config.filters),
            p.scrub.as_ref().unwrap_or(&config.scrub),
            p.rate_limit.as_ref().or(config.rate_limit.as_ref()),
        )
        .map_err(bad(format!("projects[{i}].filters")))?;
        list.push((p.id, p.keys.clone(), rules));
    }
    let mut resource = Resource::default();
    if let Some(node) = node_name.filter(|n| !n.is_empty()) {
        resource.set(keys::NODE, node);
    }
    Ok(ingest::IngestContext {
        projects: projects::Projects::new(list, default_rules),
        max_envelope_bytes: config.limits.max_envelope_bytes.as_usize(),
        max_event_bytes: config.limits.max_event_bytes.as_usize(),
        max_items: config.limits.max_envelope_items,
        // The rest of the limits keep their defaults: the parsers own them.
        #[allow(clippy::needless_update)]
        normalize: NormalizeLimits {
            max_tag_value_chars: config.limits.max_tag_value_chars,
            ..NormalizeLimits::default()
        },
        resource,
    })
}
