//! The aggregator: mecha's central service that receives, indexes and searches
//! logs, and groups Sentry events into issues.
//!
//! Agents (and any OTLP sender) export log records over OTLP/gRPC
//! ([`receive`]); `mecha standalone` pushes them in-process through an
//! [`Ingest`] handle. Records are deduplicated by source position and indexed
//! into one tantivy index per UTC day ([`store`]) with group commits; records
//! that carry a Sentry event are first grouped into issues ([`issues`]). The
//! HTTP API ([`query`]) searches logs and serves issues, alerts and
//! silences; alerts are routed, grouped and notified by [`alert`].
//! [`Aggregator`] wires these together.
//!
//! This crate must not depend on the agent, must not parse command lines or
//! configuration files (the binary does), and must not run CPU-heavy indexing on
//! the async reactor.

pub mod alert;
pub mod issues;
pub mod metrics;
pub mod query;
pub mod receive;
pub mod store;

mod error;
mod ingest;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

pub use error::Error;
pub use ingest::{Ingest, IngestOutcome};

use crate::alert::AlertSink;
use crate::alert::rules::{RuleBoard, RuleEngineHandle};
use crate::issues::route::EventRouter;
use crate::issues::{IssueEvent, IssueStore};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::writer::Writer;

/// How often day indexes past retention are looked for, besides at start.
const RETENTION_CHECK_EVERY: Duration = Duration::from_secs(3_600);

/// How to run an [`Aggregator`].
#[derive(Debug, Clone)]
pub struct AggregatorOptions {
    /// Data directory; log indexes live under `data_dir/logs/<YYYY-MM-DD>/`.
    pub data_dir: PathBuf,
    /// OTLP/gRPC listen address (logs service; gzip and zstd accepted). `None`: off.
    pub grpc_listen: Option<SocketAddr>,
    /// HTTP API listen address (search, `/health`, `/ready`, `/metrics`). `None`: off.
    pub http_listen: Option<SocketAddr>,
    /// Whole UTC days older than this many days are deleted (checked at start and
    /// hourly); records for such days are dropped on arrival. Default 7.
    pub retention_days: u32,
    /// Group-commit cadence: records are committed at most this often. Default 500 ms.
    pub commit_interval: Duration,
    /// Bound on the bytes of records waiting for a commit; over it, ingest waits.
    /// Default 64 MiB.
    pub max_pending_bytes: usize,
    /// Events kept per issue for the events API (the newest; counts go on
    /// regardless). Default 100.
    pub max_events_per_issue: u64,
    /// Routing, inhibition and receivers of alerts; silences and the
    /// notification log live under `data_dir/alerts/`. Default: no route
    /// (alerts are listed, not notified).
    pub alerting: mecha_config::AlertingConfig,
    /// Where a config reload (SIGHUP, `POST /-/reload`) reads `alerting`
    /// again. Default none: reloads fail.
    pub config_source: Option<alert::reload::ConfigSource>,
}

impl Default for AggregatorOptions {
    fn default() -> Self {
        AggregatorOptions {
            data_dir: PathBuf::from("./data"),
            grpc_listen: None,
            http_listen: None,
            retention_days: 7,
            commit_interval: Duration::from_millis(500),
            max_pending_bytes: 64 * 1024 * 1024,
            max_events_per_issue: 100,
            alerting: mecha_config::AlertingConfig::default(),
            config_source: None,
        }
    }
}

/// A running aggregator: store, writer, listeners and housekeeping.
#[derive(Debug)]
pub struct Aggregator {
    ingest: Ingest,
    store: Arc<Store>,
    issues: Arc<IssueStore>,
    hooks: broadcast::Sender<IssueEvent>,
    metrics: Arc<Metrics>,
    alerting: alert::Alerting,
    grpc_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    servers: Vec<(&'static str, JoinHandle<Result<(), Error>>)>,
    writer_task: JoinHandle<()>,
    retention_task: JoinHandle<()>,
    data_dir: PathBuf,
    rule_board: RuleBoard,
    rule_engine: Option<RuleEngineHandle>,
    reloader: alert::reload::Reloader,
}

impl Aggregator {
    /// Opens the indexes under `opts.data_dir/logs` and the issue store under
    /// `opts.data_dir/issues`, deletes days past retention, binds the
    /// listeners (port 0 allowed) and starts serving.
    pub async fn start(opts: AggregatorOptions) -> Result<Aggregator, Error> {
        let metrics = Arc::new(Metrics::new()?);
        let receivers = alert::notify::Receivers(Arc::new(alert::notify::build_with_metrics(
            &opts.alerting.receivers,
            &metrics,
        )?));
        let root = opts.data_dir.join("logs");
        let issues_dir = opts.data_dir.join("issues");
        let max_events = opts.max_events_per_issue;
        let opened = tokio::task::spawn_blocking(move || {
            let logs = Store::open(&root)?;
            let issues = IssueStore::open(&issues_dir, max_events)?;
            Ok::<_, Error>((logs, issues))
        })
        .await
        .map_err(|e| Error::Task {
            what: "open indexes",
            reason: e.to_string(),
        })??;
        let ((store, hwms), issues) = opened;
        let store = Arc::new(store);
        let issues = Arc::new(issues);
        let (hooks, _) = broadcast::channel(issues::HOOK_CAPACITY);
        let router = EventRouter::new(Arc::clone(&issues), Arc::clone(&metrics), hooks.clone());
        let writer = Writer::new(
            Arc::clone(&store),
            hwms,
            Arc::clone(&metrics),
            opts.retention_days,
        )
        .with_events(router);
        let (ingest, writer_task) = ingest::spawn(
            writer,
            Arc::clone(&metrics),
            opts.commit_interval,
            opts.max_pending_bytes,
        );
        ingest.apply_retention().await?;
        let ready = Arc::new(AtomicBool::new(false));
        let retention_task = tokio::spawn(retention_loop(ingest.clone()));

        let rule_board = RuleBoard::default();
        let (stop, stopped) = watch::channel(false);
        let mut servers = Vec::new();
        let mut grpc_addr = None;
        if let Some(addr) = opts.grpc_listen {
            let listener = bind("grpc", addr).await?;
            grpc_addr = Some(local_addr("grpc", addr, &listener)?);
            let service = receive::LogsReceiver::new(&ingest).into_service();
            let signal = wait_for_stop(stopped.clone());
            let task = tokio::spawn(async move {
                // One service only, so no router: serve it directly.
                tonic::transport::Server::builder()
                    .serve_with_incoming_shutdown(
                        service,
                        // Without nodelay, the small frames of an answer
                        // wait for the agent's delayed ACK.
                        tonic::transport::server::TcpIncoming::from(listener)
                            .with_nodelay(Some(true)),
                        signal,
                    )
                    .await
                    .map_err(|e| Error::Server {
                        what: "grpc",
                        reason: e.to_string(),
                    })
            });
            servers.push(("grpc", task));
        }
        let mut http_addr = None;
        let mut http_listener = None;
        if let Some(addr) = opts.http_listen {
            let listener = bind("http", addr).await?;
            http_addr = Some(local_addr("http", addr, &listener)?);
            http_listener = Some(listener);
        }
        let external_url = http_addr.map_or_else(String::new, |a| format!("http://{a}"));
        let alerting = alert::Alerting::start(
            &opts.alerting,
            &receivers,
            &opts.data_dir,
            Arc::clone(&metrics),
            external_url,
        )
        .await?;
        let reloader = alert::reload::Reloader::new(
            opts.config_source.clone(),
            opts.alerting.clone(),
            Arc::clone(&metrics),
        );
        if let Some(listener) = http_listener {
            let router = query::router(query::ApiState {
                store: Arc::clone(&store),
                issues: Arc::clone(&issues),
                metrics: Arc::clone(&metrics),
                ready: Arc::clone(&ready),
                alerting: alerting.clone(),
                rules: rule_board.clone(),
                receivers: receivers.clone(),
                reloader: reloader.clone(),
            });
            let signal = wait_for_stop(stopped.clone());
            let task = tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(signal)
                    .await
                    .map_err(|e| Error::Server {
                        what: "http",
                        reason: e.to_string(),
                    })
            });
            servers.push(("http", task));
        }
        ready.store(true, Ordering::Release);
        let rules = opts.alerting.rules.clone();
        let evaluation_interval = opts.alerting.evaluation_interval.0;
        let external_url = opts.alerting.external_url.clone();
        let mut aggregator = Aggregator {
            ingest,
            store,
            issues,
            hooks,
            metrics,
            alerting,
            grpc_addr,
            http_addr,
            stop,
            servers,
            writer_task,
            retention_task,
            data_dir: opts.data_dir,
            rule_board,
            rule_engine: None,
            reloader,
        };
        // Even without rules: a reload may add some.
        let sink = aggregator.alert_sink();
        aggregator
            .start_rules(rules, evaluation_interval, external_url, Some(sink))
            .await?;
        Ok(aggregator)
    }

    /// Starts (or restarts) evaluating alert rules, their
    /// state under `<data_dir>/alerts/`, handing alerts to `sink` (the
    /// dispatcher's). Without a sink nothing starts. Links in alerts start
    /// with `external_url`, by default `http://<http listener>`.
    pub async fn start_rules(
        &mut self,
        rules: Vec<mecha_config::RuleConfig>,
        evaluation_interval: Duration,
        external_url: Option<String>,
        sink: Option<Arc<dyn AlertSink>>,
    ) -> Result<(), Error> {
        let Some(sink) = sink else {
            if !rules.is_empty() {
                tracing::warn!(
                    rules = rules.len(),
                    "alert rules not started: no alert dispatcher"
                );
            }
            return Ok(());
        };
        let external_url = external_url.unwrap_or_else(|| match self.http_addr {
            Some(a) => format!("http://{a}"),
            None => "http://localhost:8080".to_string(),
        });
        let inputs = alert::rules::EngineInputs {
            store: Arc::clone(&self.store),
            issues: Arc::clone(&self.issues),
            sink,
            metrics: Arc::clone(&self.metrics),
            state_dir: alert::rules::state_dir(&self.data_dir),
            external_url,
            evaluation_interval,
            clock: alert::rules::system_clock(),
        };
        // The state file is locked by the engine that has it open.
        if let Some(old) = self.rule_engine.take() {
            old.shutdown().await;
        }
        let engine = alert::rules::spawn(
            rules,
            inputs,
            Some(self.hooks.subscribe()),
            self.rule_board.clone(),
        )
        .await?;
        self.reloader.set_rules(engine.reloader());
        self.rule_engine = Some(engine);
        Ok(())
    }

    /// The running rule engine, to reload its rules (SIGHUP).
    pub fn rule_engine(&self) -> Option<&RuleEngineHandle> {
        self.rule_engine.as_ref()
    }

    /// Reloads the config (SIGHUP; also `POST /-/reload`).
    pub fn reloader(&self) -> alert::reload::Reloader {
        self.reloader.clone()
    }

    /// The address the gRPC listener is bound to, if on.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    /// The address the HTTP listener is bound to, if on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// A handle for pushing records in-process (`mecha standalone`).
    pub fn ingest(&self) -> Ingest {
        self.ingest.clone()
    }

    /// The log store, for in-process searches.
    pub fn store(&self) -> Arc<Store> {
        Arc::clone(&self.store)
    }

    /// The issue store, for in-process reads.
    pub fn issues(&self) -> Arc<IssueStore> {
        Arc::clone(&self.issues)
    }

    /// Announcements of new issues, regressions and each counted event's
    /// issue, sent once the event is durable in the issue store and
    /// searchable (see [`IssueEvent`]). Replays announce nothing. A receiver
    /// that falls more than [`issues::HOOK_CAPACITY`] announcements behind
    /// gets `Lagged` and misses the oldest; alerting that must not miss one
    /// reads the issue store after a lag.
    pub fn subscribe_issues(&self) -> broadcast::Receiver<IssueEvent> {
        self.hooks.subscribe()
    }

    /// Where alerts go: the dispatcher (rules and tests put alerts here).
    pub fn alert_sink(&self) -> Arc<dyn alert::AlertSink> {
        self.alerting.sink()
    }

    /// The alerting pipeline, for in-process reads.
    pub fn alerting(&self) -> &alert::Alerting {
        &self.alerting
    }

    /// The aggregator's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Stops the listeners (letting in-flight requests finish), commits what is
    /// pending and stops the writer.
    pub async fn shutdown(self) -> Result<(), Error> {
        if let Some(engine) = self.rule_engine {
            engine.shutdown().await;
        }
        let _ = self.stop.send(true);
        let mut first_error = None;
        for (what, task) in self.servers {
            let result = task.await.unwrap_or_else(|e| {
                Err(Error::Task {
                    what,
                    reason: e.to_string(),
                })
            });
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        self.retention_task.abort();
        self.alerting.shutdown().await;
        self.ingest.shutdown().await;
        if let Err(e) = self.writer_task.await {
            first_error.get_or_insert(Error::Task {
                what: "index writer",
                reason: e.to_string(),
            });
        }
        first_error.map_or(Ok(()), Err)
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { what, addr, source })
}

fn local_addr(
    what: &'static str,
    addr: SocketAddr,
    listener: &TcpListener,
) -> Result<SocketAddr, Error> {
    listener
        .local_addr()
        .map_err(|source| Error::Bind { what, addr, source })
}

async fn wait_for_stop(mut stopped: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn retention_loop(ingest: Ingest) {
    let mut every = tokio::time::interval(RETENTION_CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await; // the first tick is immediate; start already ran it
    loop {
        every.tick().await;
        match ingest.apply_retention().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(days = n, "retention deleted day indexes"),
            Err(Error::WriterStopped) => return,
            Err(e) => tracing::warn!(error = %e, "retention check failed"),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support;
